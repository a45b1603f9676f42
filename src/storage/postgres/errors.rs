//! PostgreSQL's errors as the core's: each SQLSTATE that means something to a caller mapped to a
//! `DbErrorKind`, with a hint for the person who has to fix it. Messages come from the server
//! and the client, which never quote the password; errors of opening, which might quote the URL,
//! are also passed through `PgUrl::redact` by the driver.

use crate::model::error::{DbErrorKind, Error};
use postgres::error::SqlState;

/// True for the errors after which the whole transaction is simply run again (`PgDriver::write`).
pub fn is_retryable(e: &Error) -> bool {
    matches!(e, Error::Busy(_))
}

/// True for the errors of a connection that died (the server restarted or stopped, or the
/// backend was terminated): a transaction that had not sent its COMMIT yet can run again on
/// another connection; one that had may have committed.
pub fn is_connection_lost(e: &Error) -> bool {
    e.db_kind() == Some(DbErrorKind::IoError)
}

/// Said of every lost connection: what happened and that nothing needs doing by hand.
const LOST: &str = " (the connection to the server was lost: it restarted or stopped, or the \
                    connection was terminated; the next call connects again)";

/// A client or server error as the core's error.
pub fn from_pg(e: postgres::Error) -> Error {
    from_pg_ref(&e)
}

/// What `from_pg` says of `e`: the client's own text is only the kind of error ("db error",
/// "error connecting to server"); this has the cause, the SQLSTATE and the hint.
pub fn describe(e: &postgres::Error) -> String {
    match from_pg_ref(e) {
        Error::Db { message, .. } => message,
        other => other.to_string(),
    }
}

fn from_pg_ref(e: &postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        if text.contains("error connecting") {
            return Error::db(
                DbErrorKind::IoError,
                format!(
                    "PostgreSQL: {text} (check that the server runs and accepts connections at \
                     the URL's host and port: listen_addresses, pg_hba.conf, a firewall)"
                ),
            );
        }
        if e.is_closed() || text.contains("error communicating") {
            return Error::db(DbErrorKind::IoError, format!("PostgreSQL: {text}{LOST}"));
        }
        return Error::db(DbErrorKind::Other, format!("PostgreSQL: {text}"));
    };
    let code = db.code();
    let mut text = format!("PostgreSQL error {}: {}", code.code(), db.message());
    if let Some(detail) = db.detail() {
        text = format!("{text} ({detail})");
    }
    // Two transactions that wait on each other, or a serialization failure: run it again.
    if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE {
        return Error::Busy(text);
    }
    let (kind, hint) = match code {
        c if *c == SqlState::DISK_FULL => (DbErrorKind::DiskFull, " (the server's disk is full)"),
        c if *c == SqlState::READ_ONLY_SQL_TRANSACTION => (
            DbErrorKind::ReadOnly,
            " (the server is read-only: a standby, or default_transaction_read_only is on)",
        ),
        // A statement that waited or ran too long: as SQLite's lock held past busy_timeout.
        c if *c == SqlState::QUERY_CANCELED && db.message().contains("timeout") => (
            DbErrorKind::Busy,
            " (the server's statement_timeout stopped it: raise it, e.g. \
             ?options=-c%20statement_timeout%3D30s in the URL or ALTER ROLE ... SET statement_timeout, \
             or find what held the queue's rows locked in pg_stat_activity)",
        ),
        c if *c == SqlState::QUERY_CANCELED => (
            DbErrorKind::Busy,
            " (cancelled by a cancel request, pg_cancel_backend for one)",
        ),
        c if *c == SqlState::LOCK_NOT_AVAILABLE => (
            DbErrorKind::Busy,
            " (the server's lock_timeout stopped it: raise it, or find what held the lock in pg_locks)",
        ),
        c if *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            (
                DbErrorKind::Other,
                " (check the user and password of the URL, and pg_hba.conf)",
            )
        }
        c if *c == SqlState::INVALID_CATALOG_NAME => (
            DbErrorKind::Other,
            " (create the database first, with createdb, or name another one in the URL)",
        ),
        c if *c == SqlState::TOO_MANY_CONNECTIONS => (
            DbErrorKind::Busy,
            " (the server has no connection slot left: raise max_connections or use fewer processes)",
        ),
        c if *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
            || *c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT =>
        {
            (DbErrorKind::IoError, LOST)
        }
        _ => (DbErrorKind::Other, ""),
    };
    Error::db(kind, format!("{text}{hint}"))
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        from_pg(e)
    }
}

/// No connection came from the pool in time. r2d2 says why when it knows: the last attempt to
/// connect failed (the server cannot be reached: `IoError`); otherwise every connection of the
/// pool stayed in use (`Busy`, as SQLite's lock held past busy_timeout).
pub fn from_pool(e: r2d2_postgres::r2d2::Error, waited: std::time::Duration, size: u32) -> Error {
    let text = e.to_string();
    let secs = waited.as_secs_f64();
    match text.split_once(": ") {
        Some((_, why)) => Error::db(
            DbErrorKind::IoError,
            format!("cannot reach the PostgreSQL server (tried for {secs:.1}s): {why}"),
        ),
        None => Error::db(
            DbErrorKind::Busy,
            format!(
                "no free PostgreSQL connection within {secs:.1}s: all {size} connections of this \
                 queue handle's pool stayed in use; raise pool_size or pool_timeout in the URL \
                 (?pool_size=16&pool_timeout=30), or run fewer threads on one handle"
            ),
        ),
    }
}

/// The pool's failed attempts to connect, at debug level: a restart would otherwise log an
/// error line per attempt (r2d2's default); what the callers see says it once.
#[derive(Debug)]
pub struct QuietPoolErrors;

impl<E: std::fmt::Display> r2d2_postgres::r2d2::HandleError<E> for QuietPoolErrors {
    fn handle_error(&self, error: E) {
        log::debug!("the PostgreSQL pool could not connect: {error}");
    }
}
