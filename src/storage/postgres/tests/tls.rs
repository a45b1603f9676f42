//! TLS to the server (`sslmode`, `sslrootcert`), against a cluster of these tests' own with
//! `ssl=on` and a certificate for `localhost` only (see `util::tls_server`). Every other test's
//! cluster has ssl off, so they all check `prefer`'s plain fallback.

use super::util::{tls11_server, tls12_server, tls_server, TlsServer};
use crate::model::error::{DbErrorKind, Error};
use crate::model::options::QueueOptions;
use crate::storage::postgres::PgDriver;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A password the server (trust) ignores, that no message may show.
const PASSWORD: &str = "Tls5ecretPw";

/// The URL of a fresh schema on `host` with `params`.
fn url(s: &TlsServer, host: &str, params: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let schema = format!("tls_{}_{n}", std::process::id());
    format!(
        "postgresql://postgres:{PASSWORD}@{host}:{}/postgres?schema={schema}&connect_timeout=10&{params}",
        s.port
    )
}

fn open(url: &str) -> Result<PgDriver, Error> {
    PgDriver::open(
        url,
        QueueOptions::default(),
        Box::new(|| {}),
        crate::testutil::RULES,
    )
}

/// Whether the driver's connection is encrypted, as the server sees it.
fn encrypted(q: &PgDriver) -> bool {
    q.read(|tx| {
        let row = tx.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )?;
        Ok(row.get::<_, bool>(0))
    })
    .unwrap()
}

fn refused(url: &str) -> Error {
    let e = open(url).err().expect("refused");
    assert!(!e.to_string().contains(PASSWORD), "{e}");
    e
}

#[test]
fn require_and_prefer_encrypt_without_checking_the_certificate() {
    let Some(s) = tls_server() else { return };
    for params in ["sslmode=require", "sslmode=prefer", ""] {
        let q = open(&url(s, "127.0.0.1", params)).unwrap();
        assert!(encrypted(&q), "{params}");
        assert_eq!(q.stats(None).unwrap().total, 0);
    }
}

#[test]
fn disable_is_plain() {
    let Some(s) = tls_server() else { return };
    let q = open(&url(s, "127.0.0.1", "sslmode=disable")).unwrap();
    assert!(!encrypted(&q));
}

#[test]
fn verify_full_with_the_ca_connects_to_the_certificates_host() {
    let Some(s) = tls_server() else { return };
    let ca = s.ca.to_str().unwrap();
    let q = open(&url(
        s,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap();
    assert!(encrypted(&q));
    // require with a root certificate checks the chain, as libpq does.
    let q = open(&url(
        s,
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={ca}"),
    ))
    .unwrap();
    assert!(encrypted(&q));
}

#[test]
fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    let Some(s) = tls_server() else { return };
    let ca = s.ca.to_str().unwrap();
    let e = refused(&url(
        s,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    let text = e.to_string();
    assert!(
        text.contains("does not name the URL's host") && text.contains("cannot open"),
        "{text}"
    );
    // verify-ca checks the chain only: the same host is fine.
    let q = open(&url(
        s,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .unwrap();
    assert!(encrypted(&q));
}

#[test]
fn verify_ca_refuses_a_server_signed_by_another_ca() {
    let Some(s) = tls_server() else { return };
    // Without sslrootcert: the system's roots, which do not hold the test CA.
    let text = refused(&url(s, "localhost", "sslmode=verify-ca")).to_string();
    assert!(text.contains("sslrootcert"), "{text}");
    let other = s.other_ca.to_str().unwrap();
    let e = refused(&url(
        s,
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={other}"),
    ));
    let text = e.to_string();
    assert!(
        text.contains("signed by the CA whose certificate sslrootcert names"),
        "{text}"
    );
    assert_eq!(e.db_kind(), Some(DbErrorKind::Other), "{text}");
}

#[test]
fn a_missing_root_certificate_file_is_an_invalid_argument_naming_it() {
    let Some(s) = tls_server() else { return };
    let e = refused(&url(
        s,
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ));
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(
        e.to_string().contains("sslrootcert=/nonexistent/ca.pem"),
        "{e}"
    );
}

#[test]
fn a_unix_socket_stays_plain_whatever_the_mode() {
    let Some(s) = tls_server() else { return };
    let (dir, ca) = (s.dir.to_str().unwrap(), s.ca.to_str().unwrap());
    let url = format!(
        "postgresql://postgres@/postgres?host={dir}&port={}&schema=tls_sock_{}&sslmode=verify-full&sslrootcert={ca}",
        s.port,
        std::process::id()
    );
    let q = open(&url).unwrap();
    assert!(!encrypted(&q));
}

#[test]
fn the_listener_connects_with_the_same_tls() {
    let Some(s) = tls_server() else { return };
    let ca = s.ca.to_str().unwrap();
    let q = open(&url(
        s,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap();
    assert!(q.listen(Box::new(|| {})));
    let sql = "SELECT coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a \
               JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'prismq_queue listener'";
    // Not a timing: the listening thread connects when it gets to it; wait for that.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listening = q
            .read(|tx| Ok(tx.query_one(sql, &[])?.get::<_, bool>(0)))
            .unwrap();
        if listening {
            break;
        }
        assert!(Instant::now() < deadline, "no listener connected over TLS");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn require_against_a_server_without_tls_says_to_turn_it_on() {
    // The other tests' cluster has ssl off (a given PRISMQ_TEST_POSTGRES_URL may not).
    if std::env::var_os("PRISMQ_TEST_POSTGRES_URL").is_some() {
        return;
    }
    let Some(db) = super::util::TestDb::new() else {
        return;
    };
    let e = open(&format!("{}&sslmode=require", db.url))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("turn ssl on"), "{e}");
    // prefer falls back to plain there, as every other test shows.
    assert!(!encrypted(
        &open(&format!("{}&sslmode=prefer", db.url)).unwrap()
    ));
}

/// The TLS version the server's side of the driver's connection speaks.
fn tls_version(q: &PgDriver) -> String {
    q.read(|tx| {
        let row = tx.query_one(
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )?;
        Ok(row.get::<_, String>(0))
    })
    .unwrap()
}

#[test]
fn a_server_speaking_tls_1_2_only_connects_in_every_mode_and_is_still_checked() {
    let Some(s) = tls12_server() else { return };
    let ca = s.ca.to_str().unwrap();
    // require without a root certificate (no chain check), verify-ca for an address the
    // certificate does not name (the chain only), verify-full for its host: the handshake's
    // TLS 1.2 signatures are checked in each.
    for (host, params) in [
        ("127.0.0.1", "sslmode=require".to_string()),
        ("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={ca}")),
        ("localhost", format!("sslmode=verify-full&sslrootcert={ca}")),
    ] {
        let q = open(&url(s, host, &params)).unwrap_or_else(|e| panic!("{params}: {e}"));
        assert_eq!(tls_version(&q), "TLSv1.2", "{params}");
        assert_eq!(q.stats(None).unwrap().total, 0);
    }
    let other = s.other_ca.to_str().unwrap();
    let text = refused(&url(
        s,
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={other}"),
    ))
    .to_string();
    assert!(
        text.contains("signed by the CA whose certificate sslrootcert names"),
        "{text}"
    );
}

/// `sslrootcert=` naming a file of `text`: refused before any connection is tried.
fn root_cert_refusal(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.pem");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap();
    // Nothing listens there: the file is read, and refused, before connecting.
    let e = refused(&format!(
        "postgresql://app:{PASSWORD}@localhost:1/app?sslmode=verify-full&sslrootcert={path}"
    ));
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("sslrootcert={path} in the URL")),
        "{text}"
    );
    text
}

#[test]
fn a_root_certificate_file_holding_no_certificate_is_refused_saying_what_it_must_hold() {
    // A private key given by mistake for the CA's certificate, and a file of something else.
    let key = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBzs2mGgWcpNHW/0QIGTJ6u9wRxMvvgCgYSBGQwlcKxC\n-----END PRIVATE KEY-----\n";
    for text in [key, "not a certificate\n"] {
        let said = root_cert_refusal(text);
        assert!(
            said.contains("holds no certificate") && said.contains("-----BEGIN CERTIFICATE-----"),
            "{said}"
        );
    }
}

#[test]
fn a_damaged_root_certificate_file_is_refused_as_not_pem() {
    let said = root_cert_refusal(
        "-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n",
    );
    assert!(said.contains("not PEM"), "{said}");
}

#[test]
fn a_server_offering_only_tls_older_than_1_2_is_refused_saying_to_check_its_ssl_settings() {
    let Some(s) = tls11_server() else { return };
    let e = refused(&url(s, "localhost", "sslmode=require"));
    let text = e.to_string();
    // A setting to fix, not a connection to try again.
    assert_eq!(e.db_kind(), Some(DbErrorKind::Other), "{text}");
    assert!(
        text.contains("ProtocolVersion")
            && text.contains("the TLS handshake with the server failed: check its ssl settings"),
        "{text}"
    );
}
