//! A `postgresql://` URL as the queue takes it: `?schema=NAME` picks the schema, `pool_size` and
//! `pool_timeout` size the pool, `sslmode` and `sslrootcert` set TLS (ours to strip, the client
//! would refuse them or knows only some modes), and the password never leaves this module except
//! inside the client's configuration.

use crate::model::error::{Error, Result};
use crate::storage::is_postgres_url;
use std::time::Duration;

/// The schema a queue lives in when the URL names none.
pub const DEFAULT_SCHEMA: &str = "prismq";

/// libpq's `sslmode` values that we support (`allow` is not one: see `ssl_mode_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// How a connection uses TLS (see `storage::postgres::tls`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert=PATH`: the PEM file of trusted CAs (`system`: the system's roots).
    pub root_cert: Option<String>,
}

/// A parsed queue URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// What the client connects with: the URL without `schema`.
    pub client_url: String,
    /// The schema the queue's tables live in (created if missing).
    pub schema: String,
    /// The URL as shown to people: without its password.
    pub display: String,
    /// `?pool_size=N`: connections a handle keeps at most (default `POOL_SIZE`).
    pub pool_size: Option<u32>,
    /// `?pool_timeout=SECONDS`: how long a call waits for a free connection before failing.
    pub pool_timeout: Option<Duration>,
    /// `?listen_url=URL` (percent-encoded): what the LISTEN connection connects with instead,
    /// for a transaction-pooling PgBouncer in front of the server (LISTEN needs a session).
    /// Not shown in `display`.
    pub listen_url: Option<String>,
    /// `?sslmode=` and `?sslrootcert=`: the pool's TLS, and the listener's unless `listen_url`
    /// gives its own.
    pub tls: TlsSettings,
    /// The TLS settings `listen_url` gives, when it gives any.
    pub listen_tls: Option<TlsSettings>,
    /// Whether this URL named `sslmode` or `sslrootcert`.
    tls_given: bool,
    /// The password as written in the URL (and decoded), to blot out of any error message.
    secrets: Vec<String>,
}

impl PgUrl {
    pub fn parse(url: &str) -> Result<PgUrl> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|_| is_postgres_url(url))
            .ok_or_else(|| Error::invalid("a PostgreSQL URL starts with postgresql://"))?;
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let mut secrets = Vec::new();
        let display_base = strip_password(base, &mut secrets);
        let mut schema = DEFAULT_SCHEMA.to_string();
        let (mut pool_size, mut pool_timeout, mut listen_url) = (None, None, None);
        let (mut tls, mut listen_tls, mut tls_given) = (TlsSettings::default(), None, false);
        let (mut kept, mut shown) = (Vec::new(), Vec::new());
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => {
                    // Ours: shown (it names the queue), not given to the client.
                    schema = value.to_string();
                    shown.push(pair);
                    continue;
                }
                "pool_size" => {
                    pool_size = Some(pool_size_of(value)?);
                    shown.push(pair);
                    continue;
                }
                "pool_timeout" => {
                    pool_timeout = Some(pool_timeout_of(value)?);
                    shown.push(pair);
                    continue;
                }
                "listen_url" => {
                    let inner = PgUrl::parse(&percent_decode(value)).map_err(|e| {
                        Error::invalid(format!(
                            "listen_url in the URL: {e} (percent-encode it: postgresql%3A%2F%2F...)"
                        ))
                    })?;
                    secrets.extend(inner.secrets);
                    listen_url = Some(inner.client_url);
                    listen_tls = inner.tls_given.then_some(inner.tls);
                    continue;
                }
                "sslmode" => {
                    // Ours: the client knows only disable, prefer and require.
                    tls.mode = ssl_mode_of(value)?;
                    tls_given = true;
                    shown.push(pair);
                    continue;
                }
                "sslrootcert" => {
                    // Ours to read (the client would refuse the parameter); a path, not secret.
                    let path = percent_decode(value);
                    if path.is_empty() {
                        return Err(Error::invalid(
                            "sslrootcert= in the URL is empty: give the path of the CA's PEM file",
                        ));
                    }
                    tls.root_cert = Some(path);
                    tls_given = true;
                    shown.push(pair);
                    continue;
                }
                "password" => {
                    secrets.push(value.to_string());
                    kept.push(pair);
                    continue;
                }
                _ => {}
            }
            kept.push(pair);
            shown.push(pair);
        }
        check_schema(&schema)?;
        for s in secrets.clone() {
            secrets.push(percent_decode(&s));
        }
        secrets.retain(|s| !s.is_empty());
        let join = |base: &str, params: &[&str]| {
            if params.is_empty() {
                format!("{scheme}://{base}")
            } else {
                format!("{scheme}://{base}?{}", params.join("&"))
            }
        };
        Ok(PgUrl {
            client_url: join(base, &kept),
            display: join(&display_base, &shown),
            schema,
            pool_size,
            pool_timeout,
            listen_url,
            tls,
            listen_tls,
            tls_given,
            secrets,
        })
    }

    /// `text` with every form of the password replaced by `***`: for messages of errors that
    /// may quote what they were given.
    pub fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
    }
}

/// `user:password@host` -> `user@host` (the authority is everything before the first `/`),
/// remembering the password.
fn strip_password(base: &str, secrets: &mut Vec<String>) -> String {
    let (authority, path) = match base.find('/') {
        Some(i) => base.split_at(i),
        None => (base, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return base.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, password)) => {
            secrets.push(password.to_string());
            format!("{user}@{host}{path}")
        }
        None => base.to_string(),
    }
}

/// A schema name we can put in a connection's `search_path` and in DDL without quoting
/// surprises: lower-case letters, digits and `_`, not starting with a digit or `pg_`.
fn check_schema(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with("pg_")
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "schema={name:?} in the URL: a schema name is 1 to 63 lower-case letters, digits and \
             underscores, not starting with a digit or pg_"
        )))
    }
}

fn pool_size_of(value: &str) -> Result<u32> {
    match value.parse::<u32>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(Error::invalid(format!(
            "pool_size={value:?} in the URL: the number of connections a queue handle keeps, \
             an integer from 1 to 1000"
        ))),
    }
}

fn pool_timeout_of(value: &str) -> Result<Duration> {
    match value.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(Error::invalid(format!(
            "pool_timeout={value:?} in the URL: how many seconds a call waits for a free \
             connection, a number above 0 and at most 3600"
        ))),
    }
}

fn ssl_mode_of(value: &str) -> Result<SslMode> {
    Ok(match value {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        "allow" => {
            return Err(Error::invalid(
                "sslmode=allow in the URL is not supported (it tries plain first): use prefer \
                 (TLS when the server offers it) or disable",
            ))
        }
        _ => {
            return Err(Error::invalid(format!(
                "sslmode={value:?} in the URL: one of disable, prefer (the default), require, \
                 verify-ca and verify-full"
            )))
        }
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_taken_out_and_the_password_kept_from_display() {
        let u = PgUrl::parse(
            "postgresql://app:s%40cret@db.example:5433/app?schema=jobs&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(u.schema, "jobs");
        assert_eq!(
            u.client_url,
            "postgresql://app:s%40cret@db.example:5433/app?connect_timeout=5"
        );
        assert_eq!(
            u.display,
            "postgresql://app@db.example:5433/app?schema=jobs&connect_timeout=5"
        );
        assert_eq!(
            u.redact("bad password s@cret or s%40cret"),
            "bad password *** or ***"
        );
        let u = PgUrl::parse("postgres:///app?host=/run/pg&password=hunter2").unwrap();
        assert_eq!(u.schema, DEFAULT_SCHEMA);
        assert_eq!(u.display, "postgres:///app?host=/run/pg");
        assert!(u.client_url.contains("password=hunter2"));
        assert!(!u.redact("x hunter2 y").contains("hunter2"));
    }

    #[test]
    fn pool_settings_are_ours_and_checked() {
        let u = PgUrl::parse("postgresql://h/db?pool_size=2&pool_timeout=0.5&connect_timeout=3")
            .unwrap();
        assert_eq!(u.pool_size, Some(2));
        assert_eq!(u.pool_timeout, Some(Duration::from_millis(500)));
        assert_eq!(u.client_url, "postgresql://h/db?connect_timeout=3");
        assert!(u.display.contains("pool_size=2&pool_timeout=0.5"));
        let u = PgUrl::parse("postgresql://h/db").unwrap();
        assert_eq!((u.pool_size, u.pool_timeout), (None, None));
        for bad in [
            "pool_size=0",
            "pool_size=x",
            "pool_timeout=0",
            "pool_timeout=-1",
        ] {
            let e = PgUrl::parse(&format!("postgresql://u:pw123@h/db?{bad}")).unwrap_err();
            let text = e.to_string();
            let key = bad.split('=').next().unwrap();
            assert!(text.contains(key) && !text.contains("pw123"), "{text}");
        }
    }

    #[test]
    fn a_listen_url_is_taken_out_decoded_and_its_password_kept_secret() {
        let u = PgUrl::parse(
            "postgresql://app:pw1@bouncer:6432/app?schema=jobs&\
             listen_url=postgresql%3A%2F%2Fapp%3Alistenpw%40db%3A5432%2Fapp",
        )
        .unwrap();
        assert_eq!(
            u.listen_url.as_deref(),
            Some("postgresql://app:listenpw@db:5432/app")
        );
        assert_eq!(u.client_url, "postgresql://app:pw1@bouncer:6432/app");
        assert_eq!(u.display, "postgresql://app@bouncer:6432/app?schema=jobs");
        assert_eq!(u.redact("listenpw and pw1"), "*** and ***");
        let e = PgUrl::parse("postgresql://h/db?listen_url=mysql%3A%2F%2Fh").unwrap_err();
        assert!(e.to_string().contains("listen_url"), "{e}");
    }

    #[test]
    fn tls_settings_are_ours_and_odd_values_refused_without_the_password() {
        let u = PgUrl::parse(
            "postgresql://u:pw123@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(u.tls.mode, SslMode::VerifyFull);
        assert_eq!(u.tls.root_cert.as_deref(), Some("/etc/ca x.pem"));
        assert_eq!(u.client_url, "postgresql://u:pw123@h/db?connect_timeout=3");
        assert!(u.display.contains("sslmode=verify-full&sslrootcert="));
        for (mode, want) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
        ] {
            let u = PgUrl::parse(&format!("postgresql://h/db?sslmode={mode}")).unwrap();
            assert_eq!(
                (u.tls.mode, u.client_url.as_str()),
                (want, "postgresql://h/db")
            );
        }
        assert_eq!(
            PgUrl::parse("postgresql://h/db").unwrap().tls,
            TlsSettings::default()
        );
        for bad in ["sslmode=allow", "sslmode=verify", "sslrootcert="] {
            let e = PgUrl::parse(&format!("postgresql://u:pw123@h/db?{bad}"))
                .unwrap_err()
                .to_string();
            let key = bad.split('=').next().unwrap();
            assert!(e.contains(key) && !e.contains("pw123"), "{e}");
        }
        // The listener takes listen_url's own TLS settings when it gives any.
        let u = PgUrl::parse(
            "postgresql://h/db?sslmode=require&listen_url=postgresql%3A%2F%2Fl%2Fdb%3Fsslmode%3Ddisable",
        )
        .unwrap();
        assert_eq!(u.listen_url.as_deref(), Some("postgresql://l/db"));
        assert_eq!(u.listen_tls.map(|t| t.mode), Some(SslMode::Disable));
        let u = PgUrl::parse("postgresql://h/db?listen_url=postgresql%3A%2F%2Fl%2Fdb").unwrap();
        assert_eq!(u.listen_tls, None);
    }

    #[test]
    fn odd_schemas_are_refused() {
        for bad in ["Jobs", "1x", "pg_x", "a-b", "", "a;drop"] {
            let e = PgUrl::parse(&format!("postgresql://h/db?schema={bad}")).unwrap_err();
            assert!(e.to_string().contains("schema="), "{bad}: {e}");
        }
    }
}
