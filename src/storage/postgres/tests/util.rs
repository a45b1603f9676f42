//! The tests' PostgreSQL: the server `PRISMQ_TEST_POSTGRES_URL` names, or else a throwaway
//! cluster of our own (`initdb` into a temporary directory, as the `postgres` user when we run as
//! root since initdb refuses root; `pg_ctl start` on a free port, its socket in that directory),
//! stopped and removed by a watchdog once the test process is gone. Each test gets a schema of
//! its own, dropped at the end. Without a server or initdb the tests fail saying how to install
//! PostgreSQL, unless `PRISMQ_ALLOW_NO_POSTGRES=1`, which skips them.

use crate::model::options::QueueOptions;
use crate::storage::postgres::PgDriver;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The server every test of this process uses: its URL (no schema), `None` when skipped.
fn server() -> Option<&'static str> {
    static SERVER: OnceLock<Option<String>> = OnceLock::new();
    SERVER.get_or_init(find_server).as_deref()
}

fn find_server() -> Option<String> {
    if let Ok(url) = std::env::var("PRISMQ_TEST_POSTGRES_URL") {
        if !url.trim().is_empty() {
            return Some(url);
        }
    }
    match initdb_dir() {
        Some(bin) => Some(start_cluster(&bin)),
        None if std::env::var("PRISMQ_ALLOW_NO_POSTGRES").as_deref() == Ok("1") => {
            eprintln!("PostgreSQL tests skipped: no server (PRISMQ_ALLOW_NO_POSTGRES=1)");
            None
        }
        None => panic!(
            "the PostgreSQL tests need PostgreSQL: install it (Debian/Ubuntu: apt-get install postgresql; \
             the tests start a throwaway cluster with its initdb, no server setup needed), or point \
             PRISMQ_TEST_POSTGRES_URL at a server (postgresql://user@host:port/db). \
             PRISMQ_ALLOW_NO_POSTGRES=1 skips these tests instead"
        ),
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`, or one on the PATH.
fn initdb_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    dirs.sort();
    if let Some((_, bin)) = dirs.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program args...`, as the `postgres` user when we are root.
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// initdb, pg_ctl start, and the watchdog; returns the server's URL.
fn start_cluster(bin: &Path) -> String {
    start_cluster_with(bin, |_| String::new()).0
}

/// As `start_cluster`, with server options `extra` returns given the cluster's directory (run
/// before the server starts, e.g. to write its certificates there); the URL and that directory.
fn start_cluster_with(bin: &Path, extra: impl FnOnce(&Path) -> String) -> (String, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("prismq-pg-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    let data = dir.join("data");
    let d = |p: &Path| p.to_str().expect("a UTF-8 temporary path").to_string();
    if is_root() {
        let mut c = Command::new("chown");
        c.args(["postgres", &d(&dir)]);
        run(c, "chown of the cluster's directory to postgres");
    }
    run(
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &d(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        ),
        "initdb",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 {}",
        d(&dir),
        extra(&dir)
    );
    let log = d(&dir.join("log"));
    run(
        as_postgres(
            &bin.join("pg_ctl"),
            &[
                "start",
                "-D",
                &d(&data),
                "-w",
                "-t",
                "60",
                "-l",
                &log,
                "-o",
                &options,
            ],
        ),
        "pg_ctl start",
    );
    // Stop the cluster and remove its files once this process is gone, however it ended.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {runas}'{pg_ctl}' stop -D '{data}' -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        runas = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        },
        pg_ctl = d(&bin.join("pg_ctl")),
        data = d(&data),
        dir = d(&dir),
    );
    // Never waited for: it must outlive this process (init reaps it).
    #[allow(clippy::zombie_processes)]
    let _watchdog = Command::new("sh")
        .args(["-c", &stop])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the cluster's watchdog");
    (
        format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
        dir,
    )
}

/// A throwaway cluster of the TLS tests' own, with `ssl=on` and a server certificate for
/// `localhost` only, signed by a CA made for it (`ca.crt`); `other-ca.crt` is a CA that signed
/// nothing. Made with the openssl command line; the client side is rustls.
pub struct TlsServer {
    /// The cluster listens on 127.0.0.1 (`localhost` resolves to it) at this port.
    pub port: u16,
    /// Its directory, which holds its Unix socket.
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
}

/// The TLS tests' cluster (started once per process); `None` when they are skipped: with
/// `PRISMQ_ALLOW_NO_POSTGRES=1` or `PRISMQ_TEST_POSTGRES_URL` and no initdb here.
pub fn tls_server() -> Option<&'static TlsServer> {
    static SERVER: OnceLock<Option<TlsServer>> = OnceLock::new();
    SERVER.get_or_init(|| start_tls_server("")).as_ref()
}

/// As `tls_server`, a cluster that speaks TLS 1.2 at most (an older server's, or a pooler's in
/// front of it): the handshake's signatures are checked the TLS 1.2 way.
pub fn tls12_server() -> Option<&'static TlsServer> {
    static SERVER: OnceLock<Option<TlsServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| start_tls_server(" -c ssl_max_protocol_version=TLSv1.2"))
        .as_ref()
}

/// As `tls_server`, a cluster that offers only TLS versions before 1.2, which the client does not
/// speak (an old server's settings): every handshake fails.
pub fn tls11_server() -> Option<&'static TlsServer> {
    static SERVER: OnceLock<Option<TlsServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            start_tls_server(
                " -c ssl_min_protocol_version=TLSv1 -c ssl_max_protocol_version=TLSv1.1",
            )
        })
        .as_ref()
}

fn start_tls_server(options: &str) -> Option<TlsServer> {
    let Some(bin) = initdb_dir() else {
        // The same rule as `find_server`, which says why when it panics.
        server()?;
        eprintln!("TLS tests skipped: they start a cluster of their own and need initdb");
        return None;
    };
    let (url, dir) = start_cluster_with(&bin, |dir| make_certificates(dir) + options);
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the cluster's port");
    Some(TlsServer {
        port,
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
        dir,
    })
}

/// Two CAs and a server certificate for DNS:localhost signed by the first, in `dir`; the
/// server options that use them.
fn make_certificates(dir: &Path) -> String {
    let openssl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.current_dir(dir).args(args);
        run(c, "openssl (making the TLS tests' certificates)");
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (keyfile, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=prismq {ca}"),
        );
        let mut args = vec![
            "req", "-x509", "-days", "3", "-subj", &subj, "-keyout", &keyfile,
        ];
        args.extend(key);
        args.extend(["-out", &crt, "-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&args);
    }
    let mut args = vec!["req", "-subj", "/CN=localhost", "-keyout", "server.key"];
    args.extend(key);
    args.extend(["-out", "server.csr"]);
    openssl(&args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    // The server refuses a key others can read, or one not its own.
    let server_key = dir.join("server.key");
    std::fs::set_permissions(
        &server_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod server.key");
    if is_root() {
        let mut c = Command::new("chown");
        c.arg("postgres")
            .arg(&server_key)
            .arg(dir.join("server.crt"));
        run(c, "chown of the server's key to postgres");
    }
    let p = |f: &str| dir.join(f).to_str().expect("a UTF-8 path").to_string();
    format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        p("server.crt"),
        p("server.key")
    )
}

/// A schema of one test, dropped when it ends.
pub struct TestDb {
    server: String,
    pub schema: String,
    /// The URL of the queue in this schema.
    pub url: String,
}

/// Open a driver on `url` with the default options and the tests' rules.
pub fn open_url(url: &str) -> crate::model::error::Result<PgDriver> {
    PgDriver::open(
        url,
        crate::model::options::QueueOptions::default(),
        Box::new(|| {}),
        crate::testutil::RULES,
    )
}

impl TestDb {
    /// A fresh schema on the tests' server; `None` when the tests are skipped.
    pub fn new() -> Option<TestDb> {
        static N: AtomicU64 = AtomicU64::new(0);
        let server = server()?.to_string();
        let schema = format!(
            "t_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}schema={schema}");
        Some(TestDb {
            server,
            schema,
            url,
        })
    }

    /// A driver (its own pool) on this schema, with the engine's rules.
    pub fn open(&self) -> PgDriver {
        PgDriver::open(
            &self.url,
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// A plain client on the server, with this schema first in its search path.
    /// The numbers in the table `marks` the fault tests write (one per attempt that committed).
    pub fn marks(&self) -> Vec<i32> {
        self.client()
            .query("SELECT n FROM marks ORDER BY n", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub fn client(&self) -> postgres::Client {
        let mut c = postgres::Client::connect(&self.server, postgres::NoTls).expect("connect");
        c.batch_execute(&format!("SET search_path TO {}", self.schema))
            .expect("search_path");
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}

/// A driver on a fresh schema, or return from the test when PostgreSQL tests are skipped.
macro_rules! pg_or_skip {
    () => {
        match super::util::TestDb::new() {
            Some(db) => {
                let q = db.open();
                (db, q)
            }
            None => return,
        }
    };
}
pub(crate) use pg_or_skip;
