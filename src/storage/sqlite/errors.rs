//! SQLite's errors as the core's: each result code (and the OS error behind an I/O error) mapped
//! to a `DbErrorKind`, with a hint for the person who has to fix it.

use crate::model::error::{DbErrorKind, Error};
use rusqlite::ErrorCode;

/// True for SQLite's busy and locked codes: the transaction is retried (see `db::retry_busy`).
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

/// The kind of a SQLite error, from its result code (the primary code, and the extended one for
/// I/O errors). `sys_errno` is the operating system's error of the failed call when known
/// (`sqlite3_system_errno`): the unix VFS reports a write refused for a file size limit (EFBIG)
/// or a quota (EDQUOT) as a plain I/O error, which is a full disk to the user.
pub fn kind_of(e: &rusqlite::Error, sys_errno: Option<i32>) -> DbErrorKind {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => DbErrorKind::Busy,
        Some(ErrorCode::DiskFull) => DbErrorKind::DiskFull,
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => DbErrorKind::ReadOnly,
        Some(ErrorCode::SystemIoFailure) if sys_errno.is_some_and(is_no_space_errno) => {
            DbErrorKind::DiskFull
        }
        Some(ErrorCode::SystemIoFailure) | Some(ErrorCode::CannotOpen) => DbErrorKind::IoError,
        Some(ErrorCode::DatabaseCorrupt) => DbErrorKind::Corrupt,
        Some(ErrorCode::NotADatabase) => DbErrorKind::NotADatabase,
        _ => DbErrorKind::Other,
    }
}

/// ENOSPC, EDQUOT or EFBIG on unix; ERROR_DISK_FULL or ERROR_HANDLE_DISK_FULL on Windows.
pub fn is_no_space_errno(errno: i32) -> bool {
    #[cfg(unix)]
    {
        errno == libc::ENOSPC || errno == libc::EDQUOT || errno == libc::EFBIG
    }
    #[cfg(windows)]
    {
        errno == 112 || errno == 39
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = errno;
        false
    }
}

/// A rusqlite error as the core's error, with its kind, when the OS error number is known.
pub fn from_sqlite(e: rusqlite::Error, sys_errno: Option<i32>) -> Error {
    if is_busy(&e) {
        return Error::Busy(e.to_string());
    }
    let kind = kind_of(&e, sys_errno);
    let hint = match (kind, e.sqlite_error_code()) {
        (DbErrorKind::NotADatabase, _) => {
            " (the file is not a SQLite database: point the queue at a new path or at a prismq_queue file)"
        }
        (DbErrorKind::ReadOnly, _) => {
            " (the database or its directory is read-only: check file permissions)"
        }
        (_, Some(ErrorCode::CannotOpen)) => {
            " (check that the directory exists and that this user may create files in it)"
        }
        (DbErrorKind::DiskFull, _) => {
            " (the disk is full or a file size limit was reached: free space, then retry)"
        }
        (DbErrorKind::IoError, _) => {
            " (the operating system reported an I/O error: check the disk and the file system)"
        }
        (DbErrorKind::Corrupt, _) => {
            " (the database file is damaged: run integrity_check and restore from a backup)"
        }
        _ => "",
    };
    Error::db(kind, format!("SQLite error: {e}{hint}"))
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        from_sqlite(e, None)
    }
}
