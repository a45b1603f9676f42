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

/// A client or server error as the core's error.
pub fn from_pg(e: postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        let kind = if e.is_closed() || text.contains("error connecting") {
            DbErrorKind::IoError
        } else {
            DbErrorKind::Other
        };
        return Error::db(kind, format!("PostgreSQL: {text}"));
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
        c if *c == SqlState::QUERY_CANCELED => (
            DbErrorKind::Other,
            " (cancelled: statement_timeout or a cancel request stopped it)",
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
        c if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN => (
            DbErrorKind::IoError,
            " (the server is shutting down or restarting)",
        ),
        _ => (DbErrorKind::Other, ""),
    };
    Error::db(kind, format!("{text}{hint}"))
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        from_pg(e)
    }
}

/// No connection came from the pool in time: every one is in use, or none can be made (the
/// pool's last connection error says which).
pub fn from_pool(e: r2d2_postgres::r2d2::Error, waited: std::time::Duration) -> Error {
    Error::db(
        DbErrorKind::Busy,
        format!(
            "no PostgreSQL connection within {:.1}s: every connection of the pool is in use, or the \
             server cannot be reached ({e})",
            waited.as_secs_f64()
        ),
    )
}
