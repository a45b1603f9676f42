//! The core's error type. Every variant carries a message written for the person who has to fix it;
//! the Python layer maps each variant onto one exception class of `prismq_queue.errors`.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of storage problem a database error is: callers (the web layer, the worker) decide
/// from it whether retrying can help, without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbErrorKind {
    /// Another connection held the write lock for longer than `busy_timeout`.
    Busy,
    /// No space left (or a file size or quota limit): writes work again once space is freed.
    DiskFull,
    /// The file, its directory or the file system refuses writes.
    ReadOnly,
    /// The operating system reported an input/output error.
    IoError,
    /// The file was deleted or replaced after this handle opened it: its writes would be lost.
    FileMoved,
    /// A damaged file or row.
    Corrupt,
    /// The file is not a SQLite database (or is encrypted).
    NotADatabase,
    Other,
}

impl DbErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DbErrorKind::Busy => "busy",
            DbErrorKind::DiskFull => "disk_full",
            DbErrorKind::ReadOnly => "read_only",
            DbErrorKind::IoError => "io_error",
            DbErrorKind::FileMoved => "file_moved",
            DbErrorKind::Corrupt => "corrupt",
            DbErrorKind::NotADatabase => "not_a_database",
            DbErrorKind::Other => "other",
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    /// The caller passed a value the queue cannot accept. Nothing was written.
    #[error("{0}")]
    InvalidArgument(String),

    #[error("task {0} does not exist (it may have been purged)")]
    TaskNotFound(i64),

    /// A schedule name no schedule has (pause, resume); `unschedule` answers false instead.
    #[error("no schedule is named '{0}': see schedules() for the names")]
    ScheduleNotFound(String),

    /// A fenced operation (complete, fail, renew, progress) whose lease token is no longer the task's.
    #[error("{0}")]
    LeaseLost(String),

    /// What a backend reports when a fenced update matched no row: the task's status, and who
    /// holds it when another claim does. The engine turns it into `LeaseLost`, saying why.
    #[error("task {task_id} is no longer held by this claim: it is {status}")]
    NotHeld {
        task_id: i64,
        status: String,
        /// The worker of the claim that holds the task now (`Some("")` when the row names none).
        holder: Option<String>,
    },

    #[error(
        "the database file has schema version {found}, but this prismq_queue understands only up to {supported}; \
         upgrade prismq_queue before opening this file"
    )]
    SchemaVersion { found: i64, supported: i64 },

    /// A database error of no particular kind (`DbErrorKind::Other`).
    #[error("{0}")]
    Database(String),

    /// A database error whose kind is known.
    #[error("{message}")]
    Db { kind: DbErrorKind, message: String },

    /// An operation the backend in use does not have (a file backup on a database server, say).
    #[error("{operation} is not available on the {backend} backend: use {instead}")]
    Unsupported {
        backend: &'static str,
        operation: &'static str,
        instead: &'static str,
    },

    /// The database reported busy/locked; retried by the backend (`storage::sqlite::db`) and never
    /// shown to a user as is.
    #[error("database is busy: {0}")]
    Busy(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub fn db(kind: DbErrorKind, msg: impl Into<String>) -> Self {
        Error::Db {
            kind,
            message: msg.into(),
        }
    }

    /// The kind of a database error; `None` for the other variants.
    pub fn db_kind(&self) -> Option<DbErrorKind> {
        match self {
            Error::Database(_) => Some(DbErrorKind::Other),
            Error::Db { kind, .. } => Some(*kind),
            Error::Busy(_) => Some(DbErrorKind::Busy),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::db(
            DbErrorKind::Corrupt,
            format!("stored JSON could not be read: {e}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_names_the_backend_the_operation_and_what_to_use_instead() {
        let e = Error::Unsupported {
            backend: "postgres",
            operation: "backup",
            instead: "pg_dump",
        };
        assert_eq!(
            e.to_string(),
            "backup is not available on the postgres backend: use pg_dump"
        );
        assert_eq!(e.db_kind(), None);
    }
}
