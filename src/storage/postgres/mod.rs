//! The PostgreSQL backend (cargo feature `postgres`): a pool of connections to one database,
//! the queue's tables in one schema of it, and the SQL of each operation in the module named for
//! it. Every operation is one transaction at READ COMMITTED; claims lock their rows with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers on any host never take the same task and never
//! wait on each other's rows. Times come from the database's clock. See docs/postgres.md for what
//! is not there yet (each refuses with `Unsupported`).

pub mod ack;
pub mod admin;
pub mod attempts;
pub mod changes;
pub mod claim;
pub mod copy;
mod copy_settings;
mod copy_waits;
pub mod dependencies;
pub mod driver;
pub mod enqueue;
pub mod errors;
pub mod lanes;
pub mod limits;
pub mod listener;
pub mod logs;
pub mod metrics;
pub mod position;
pub mod rescue;
pub mod rows;
pub mod run_tasks;
pub mod runs;
pub mod schedules;
pub mod schema;
pub mod statements;
pub mod timeouts;
pub mod tls;
pub mod url;
pub mod workers;

#[cfg(test)]
pub(crate) mod tests;

use crate::model::error::{DbErrorKind, Error, Result};
use crate::model::options::QueueOptions;
use crate::storage::{CommitHook, Rules};
use lanes::LaneCache;
use parking_lot::Mutex;
use r2d2_postgres::r2d2;
use r2d2_postgres::PostgresConnectionManager;
use statements::{Manager, Tx};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tls::Tls;
use url::PgUrl;

type Pool = r2d2::Pool<Manager<Tls>>;

/// Connections a handle keeps at most: a worker process's threads share them.
const POOL_SIZE: u32 = 8;

/// How often a transaction that lost a deadlock or a serialization check runs again.
const MAX_RETRIES: u32 = 5;

/// How often a transaction whose connection died before its COMMIT runs again on another one
/// (after a restart every pooled connection is dead; the pool tests each on check-out).
const MAX_RECONNECTS: u32 = 3;

/// Transactions this process ran again, and the time it waited before them (`metrics()`).
pub(crate) static RETRIES: AtomicU64 = AtomicU64::new(0);
pub(crate) static RETRY_WAIT_US: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL backend of one queue handle.
pub struct PgDriver {
    pool: Pool,
    /// How long a caller waits for a free connection.
    pool_wait: Duration,
    pool_size: u32,
    pub(crate) url: PgUrl,
    /// A worker whose last heartbeat is older is reported stale (`QueueOptions`).
    pub(crate) stale_worker_after_ms: i64,
    pub(crate) lanes: Mutex<LaneCache>,
    on_commit: CommitHook,
    /// The settings of the listener's own connection: the pool's, or `?listen_url=`'s.
    config: postgres::Config,
    /// The listener's TLS: the pool's, or `?listen_url=`'s own.
    listen_tls: Tls,
    /// The `LISTEN/NOTIFY` channel of this schema's queue.
    channel: String,
    /// The listening thread, once a waiter asked for it (see `listener`).
    listening: OnceLock<Option<listener::Listening>>,
    /// The lanes this handle's claims take from: its listener wakes waiters for those only.
    interest: std::sync::Arc<Mutex<listener::Interest>>,
    /// The engine's rules for failed attempts and expired leases: this driver applies them.
    pub(crate) rules: &'static dyn Rules,
}

impl PgDriver {
    /// Connect to the database `url` names, create or migrate the queue's schema in it, and keep
    /// a pool of connections whose `search_path` is that schema.
    pub fn open(
        url: &str,
        opts: QueueOptions,
        on_commit: CommitHook,
        rules: &'static dyn Rules,
    ) -> Result<PgDriver> {
        opts.validate()?;
        let url = PgUrl::parse(url)?;
        let redacted = |e: Error| match e {
            Error::Db { kind, message } => Error::db(kind, url.redact(&message)),
            Error::Database(m) => Error::Database(url.redact(&m)),
            other => other,
        };
        let mut config: postgres::Config = url.client_url.parse().map_err(|e| {
            redacted(Error::invalid(format!(
                "{}: {}",
                url.display,
                errors::from_pg(e)
            )))
        })?;
        // Every connection resolves the queue's tables (and now_ms()) in its schema only.
        let options = match config.get_options() {
            Some(given) => format!("{given} -c search_path={}", url.schema),
            None => format!("-c search_path={}", url.schema),
        };
        config.options(&options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("prismq_queue");
        }
        tls::set_mode(&mut config, &url.tls);
        let tls = tls::connector(&url.tls)?;
        // The first connection directly, so a wrong password or a missing database says so at
        // once (the pool would retry until its timeout), then the schema with it.
        let mut first = config.connect(tls.clone()).map_err(|e| {
            let hint = tls::hint(&e, &url.tls);
            redacted(match errors::from_pg(e) {
                Error::Db { kind, message } => Error::db(
                    kind,
                    format!("cannot open {}: {message}{hint}", url.display),
                ),
                other => other,
            })
        })?;
        schema::migrate(&mut first, &url.schema).map_err(redacted)?;
        drop(first);
        let pool_wait = url.pool_timeout.unwrap_or_else(|| {
            opts.db
                .busy_timeout
                .clamp(Duration::from_secs(1), Duration::from_secs(30))
        });
        let pool_size = url.pool_size.unwrap_or(POOL_SIZE);
        // test_on_check_out: a connection the server dropped while it sat idle (a restart,
        // pg_terminate_backend) fails its check and is replaced before any call uses it.
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(pool_wait)
            .test_on_check_out(true)
            .error_handler(Box::new(errors::QuietPoolErrors))
            .build_unchecked(Manager(PostgresConnectionManager::new(
                config.clone(),
                tls.clone(),
            )));
        let url_schema = url.schema.clone();
        let listen_settings = url.listen_tls.as_ref().unwrap_or(&url.tls);
        let listen_tls = match &url.listen_tls {
            Some(own) => tls::connector(own)?,
            None => tls,
        };
        let mut config = match &url.listen_url {
            Some(listen) => listen_config(listen, &config).map_err(redacted)?,
            None => config,
        };
        tls::set_mode(&mut config, listen_settings);
        Ok(PgDriver {
            pool,
            pool_wait,
            pool_size,
            url,
            stale_worker_after_ms: opts.stale_worker_after_ms,
            lanes: Mutex::new(LaneCache::default()),
            on_commit,
            config,
            listen_tls,
            channel: listener::channel(&url_schema),
            listening: OnceLock::new(),
            interest: Default::default(),
            rules,
        })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager<Tls>>> {
        self.pool
            .get()
            .map_err(|e| errors::from_pool(e, self.pool_wait, self.pool_size))
            .map_err(|e| self.redact(e))
    }

    fn redact(&self, e: Error) -> Error {
        match e {
            Error::Db { kind, message } => Error::db(kind, self.url.redact(&message)),
            Error::Database(m) => Error::Database(self.url.redact(&m)),
            other => other,
        }
    }

    /// Run `f` in one transaction and commit it, then tell the commit hook. A transaction that
    /// lost a deadlock or a serialization check runs again from the start, a few times; so does
    /// one whose connection died before its COMMIT was sent (nothing of it was committed). A
    /// connection lost during the COMMIT is an `IoError` saying the outcome is unknown: callers
    /// re-send what is fenced (acknowledgements carry lease tokens) or idempotent.
    pub(crate) fn write<T>(&self, mut f: impl FnMut(&mut Tx) -> Result<T>) -> Result<T> {
        let (mut tries, mut reconnects) = (0, 0);
        loop {
            let mut conn = self.conn()?;
            let mut at_commit = false;
            let done = (|| {
                let mut tx = conn.begin(|c| c.transaction())?;
                let value = f(&mut tx)?;
                let notified = self.send_in(&mut tx)?;
                at_commit = true;
                tx.commit()?;
                Ok((value, notified))
            })();
            match done {
                Ok((value, notified)) => {
                    listener::sent(&self.channel, &notified, std::time::Instant::now());
                    (self.on_commit)();
                    return Ok(value);
                }
                Err(e) if errors::is_retryable(&e) && tries < MAX_RETRIES => {
                    tries += 1;
                    let pause = Duration::from_millis(2 << tries);
                    RETRIES.fetch_add(1, Ordering::Relaxed);
                    RETRY_WAIT_US.fetch_add(pause.as_micros() as u64, Ordering::Relaxed);
                    std::thread::sleep(pause);
                }
                Err(e) if errors::is_connection_lost(&e) && at_commit => {
                    return Err(self.redact(Error::db(
                        DbErrorKind::IoError,
                        format!(
                            "the connection to the PostgreSQL server was lost during COMMIT, so \
                             whether the transaction committed is unknown: {e}"
                        ),
                    )))
                }
                Err(e) if errors::is_connection_lost(&e) && reconnects < MAX_RECONNECTS => {
                    reconnects += 1;
                    log::debug!("PostgreSQL connection lost before COMMIT, running again: {e}");
                }
                Err(e) => return Err(self.redact(e)),
            }
        }
    }

    /// Run reads in one transaction (one snapshot for all of them), read-only; again on another
    /// connection when this one died.
    pub(crate) fn read<T>(&self, mut f: impl FnMut(&mut Tx) -> Result<T>) -> Result<T> {
        let mut reconnects = 0;
        loop {
            let mut conn = self.conn()?;
            let done = (|| {
                let mut tx = conn.begin(|c| {
                    c.build_transaction()
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start()
                })?;
                let value = f(&mut tx)?;
                tx.commit()?;
                Ok(value)
            })();
            match done {
                Err(e) if errors::is_connection_lost(&e) && reconnects < MAX_RECONNECTS => {
                    reconnects += 1;
                }
                done => return done.map_err(|e| self.redact(e)),
            }
        }
    }

    /// The URL without its password.
    pub fn path(&self) -> &str {
        &self.url.display
    }
}

/// The listener's settings from `?listen_url=`: its own server, with the pool's options.
fn listen_config(listen: &str, pool: &postgres::Config) -> Result<postgres::Config> {
    let mut config: postgres::Config = listen
        .parse()
        .map_err(|e| Error::invalid(format!("listen_url in the URL: {}", errors::from_pg(e))))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(
            pool.get_connect_timeout()
                .copied()
                .unwrap_or(Duration::from_secs(10)),
        );
    }
    if let Some(options) = pool
        .get_options()
        .filter(|_| config.get_options().is_none())
    {
        config.options(options);
    }
    Ok(config)
}

/// The database's clock now, in ms since the Unix epoch (UTC).
pub(crate) fn db_now(tx: &mut Tx) -> Result<i64> {
    Ok(tx.query_one("SELECT now_ms()", &[])?.get(0))
}
