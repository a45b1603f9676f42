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

/// The kind of a SQLite error, from its result code. (The unix VFS reports a write refused for a
/// file size limit, EFBIG, or a quota, EDQUOT, as a plain I/O error, which is a full disk to the
/// user: `db::refine` turns it into one, with the connection's `sqlite3_system_errno`.)
pub fn kind_of(e: &rusqlite::Error) -> DbErrorKind {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => DbErrorKind::Busy,
        Some(ErrorCode::DiskFull) => DbErrorKind::DiskFull,
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => DbErrorKind::ReadOnly,
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

/// A rusqlite error as the core's error, with its kind and a hint.
pub fn from_sqlite(e: rusqlite::Error) -> Error {
    if is_busy(&e) {
        return Error::Busy(e.to_string());
    }
    let kind = kind_of(&e);
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
        from_sqlite(e)
    }
}

#[cfg(test)]
mod tests {
    //! Real SQLite failures, each mapped to the kind Python's `DatabaseError.kind` carries and to
    //! a message that says what to do. (The Python suite reaches the corrupt and EFBIG cases;
    //! these are the ones it cannot make happen as root or without a real full disk.)
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn db_error(e: rusqlite::Error) -> (DbErrorKind, String) {
        let e = Error::from(e);
        (e.db_kind().expect("a database error"), e.to_string())
    }

    #[test]
    fn a_database_at_its_size_limit_is_a_full_disk_that_says_to_free_space() {
        // SQLITE_FULL: what the unix VFS returns for ENOSPC, and what a page limit returns.
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (x BLOB); PRAGMA max_page_count = 8;")
            .unwrap();
        let err = (0..100)
            .find_map(|_| c.execute("INSERT INTO t VALUES (zeroblob(4000))", []).err())
            .expect("the page limit was never reached");
        let (kind, msg) = db_error(err);
        assert_eq!(kind, DbErrorKind::DiskFull);
        assert!(
            msg.contains("disk is full") && msg.ends_with("free space, then retry)"),
            "{msg}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_says_so_and_where_to_point_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, "meeting notes, not a database ".repeat(40)).unwrap();
        let c = Connection::open(&p).unwrap();
        let err = c
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_err();
        let (kind, msg) = db_error(err);
        assert_eq!(kind, DbErrorKind::NotADatabase);
        assert!(
            msg.contains("(the file is not a SQLite database: point the queue at a new path"),
            "{msg}"
        );
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .starts_with("meeting notes"));
    }

    #[test]
    fn a_write_through_a_read_only_handle_is_read_only_and_names_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.db");
        Connection::open(&p)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let ro = Connection::open_with_flags(&p, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let err = ro.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        let (kind, msg) = db_error(err);
        assert_eq!(kind, DbErrorKind::ReadOnly);
        assert!(
            msg.contains("(the database or its directory is read-only: check file permissions)"),
            "{msg}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_io_error_that_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = Connection::open(dir.path().join("missing").join("q.db")).unwrap_err();
        let (kind, msg) = db_error(err);
        assert_eq!(kind, DbErrorKind::IoError);
        assert!(
            msg.contains(
                "(check that the directory exists and that this user may create files in it)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn busy_is_its_own_error_without_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.db");
        let a = Connection::open(&p).unwrap();
        a.execute_batch("CREATE TABLE t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let b = Connection::open(&p).unwrap();
        b.busy_timeout(std::time::Duration::ZERO).unwrap();
        let err = b.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
        assert!(is_busy(&err));
        let e = Error::from(err);
        assert!(matches!(e, Error::Busy(_)), "{e:?}");
        assert_eq!(e.db_kind(), Some(DbErrorKind::Busy));
    }
}
