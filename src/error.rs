//! The core's error type. Every variant carries a message written for the person who has to fix it;
//! the Python layer maps each variant onto one exception class of `prismq_queue.errors`.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// The caller passed a value the queue cannot accept. Nothing was written.
    #[error("{0}")]
    InvalidArgument(String),

    #[error("task {0} does not exist (it may have been purged)")]
    TaskNotFound(i64),

    /// A fenced operation (complete, fail, renew, progress) whose lease token is no longer the task's.
    #[error("{0}")]
    LeaseLost(String),

    #[error(
        "the database file has schema version {found}, but this prismq_queue understands only up to {supported}; \
         upgrade prismq_queue before opening this file"
    )]
    SchemaVersion { found: i64, supported: i64 },

    #[error("{0}")]
    Database(String),

    /// SQLite reported busy/locked; retried by `db::retry_busy` and never shown to a user as is.
    #[error("database is busy: {0}")]
    Busy(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        if crate::db::is_busy(&e) {
            return Error::Busy(e.to_string());
        }
        let hint = match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => {
                " (the file is not a SQLite database: point the queue at a new path or at a prismq_queue file)"
            }
            Some(ErrorCode::ReadOnly) => " (the database or its directory is read-only: check file permissions)",
            Some(ErrorCode::CannotOpen) => {
                " (check that the directory exists and that this user may create files in it)"
            }
            Some(ErrorCode::DiskFull) => " (the disk is full: free space, then retry)",
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                " (another process held the write lock for longer than busy_timeout: raise busy_timeout or find the long transaction)"
            }
            _ => "",
        };
        Error::Database(format!("SQLite error: {e}{hint}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Database(format!("stored JSON could not be read: {e}"))
    }
}
