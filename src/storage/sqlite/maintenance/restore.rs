//! Restore: put a backup in the place of a queue database, safely.
//!
//! Copying a backup over the database file is unsafe in two ways: a process that has the
//! database open keeps working on a file that changes under it, and a `-wal` file left next to
//! the database would be replayed onto the copy the next time it is opened (SQLite opens any
//! `-wal` it finds). So the restore goes through SQLite itself:
//!
//! 1. The backup is checked first, opened read-only: a SQLite file, `PRAGMA integrity_check`
//!    clean, a prismq_queue database of a schema version this build can open.
//! 2. The target is opened in `locking_mode=EXCLUSIVE` and switched out of WAL
//!    (`journal_mode=DELETE`). SQLite allows that only to the one connection that has the file
//!    open (every other connection to a WAL database holds a shared lock on it as long as it is
//!    open), so it is also the test that no other process uses the file. The switch checkpoints
//!    the old WAL into the old file and deletes the `-wal` and `-shm` files, so nothing stale is
//!    left to replay. The exclusive lock is then kept until the end: a process that opens the
//!    file meanwhile waits and sees either the old database or the restored one.
//! 3. The backup's pages are copied in with the online backup API inside one write transaction
//!    with a rollback journal: a failure or an interruption (an error from `progress`) rolls the
//!    target back to what it was; a crash leaves a hot journal that the next opener rolls back.
//! 4. The target goes back to WAL (no shared-memory file in exclusive mode) and is closed, which
//!    checkpoints and removes the WAL: the file stands alone.
//!
//! Portable: only SQLite's own locking, no flock.

use super::backup::{check_parent, copy_pages, same_file, sibling};
use crate::model::error::{Error, Result};
use crate::model::maintenance::Progress;
use crate::model::maintenance::RestoreReport;
use crate::model::paths::shown;
use crate::storage::sqlite::schema::SCHEMA_VERSION;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use std::path::Path;
use std::time::Duration;

/// What kind of database a connection sees: `None` for an empty file.
fn schema_of(conn: &Connection) -> rusqlite::Result<Option<(i64, bool)>> {
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables == 0 {
        return Ok(None);
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_tasks = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    Ok(Some((version, has_tasks)))
}

fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase))
}

/// Open `backup` read-only and check that it can be restored. Returns the connection (kept
/// open as the copy's source, so what was checked is what is copied) and its schema version.
fn open_backup(backup: &str) -> Result<(Connection, i64)> {
    let p = Path::new(backup);
    if !p.is_file() {
        return Err(Error::invalid(format!(
            "backup file {backup} does not exist (or is not a file): give the path of a file written by \
             `prismq-queue backup`",
            backup = shown(backup)
        )));
    }
    let conn = Connection::open_with_flags(
        p,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        Error::Database(format!(
            "cannot open the backup {backup}: {e}",
            backup = shown(backup)
        ))
    })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let not_ours = |why: &str| {
        Error::invalid(format!(
            "{backup} is not a prismq_queue backup ({why}): give a file written by `prismq-queue backup`",
            backup = shown(backup)
        ))
    };
    let (version, has_tasks) = match schema_of(&conn) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(not_ours("it is empty")),
        Err(e) if is_not_a_database(&e) => {
            return Err(not_ours(
                "it is not a SQLite database, or it is damaged or encrypted",
            ))
        }
        // A truncated or damaged file: what integrity_check reports below, said the same way.
        Err(e) if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt)) => {
            return Err(Error::invalid(format!(
                "the backup {backup} is damaged ({e}): restore another backup",
                backup = shown(backup)
            )))
        }
        Err(e) => {
            return Err(Error::Database(format!(
                "cannot read the backup {backup}: {e}",
                backup = shown(backup)
            )))
        }
    };
    if version > SCHEMA_VERSION {
        return Err(Error::Database(format!(
            "the backup {backup} has schema version {version}, but this prismq_queue understands only up to \
             {SCHEMA_VERSION}: restore it with the newer prismq_queue that wrote it",
            backup = shown(backup)
        )));
    }
    if version < 1 || !has_tasks {
        return Err(not_ours(
            "it is a SQLite database without the queue's tables",
        ));
    }
    let problems = super::integrity_problems(&conn, "PRAGMA integrity_check(20)").map_err(|e| {
        Error::Database(format!(
            "cannot check the backup {backup}: {e}",
            backup = shown(backup)
        ))
    })?;
    if problems != ["ok"] {
        return Err(Error::invalid(format!(
            "the backup {backup} is damaged (integrity_check: {}): restore another backup",
            problems.join("; "),
            backup = shown(backup)
        )));
    }
    Ok((conn, version))
}

fn in_use(target: &str) -> Error {
    Error::Database(format!(
        "the database {target} is in use: another connection has it open (a Queue, a worker, \
         `prismq-queue serve`, any SQLite connection, in this or another process); stop them, then run restore \
         again; nothing was changed",
        target = shown(target)
    ))
}

/// Replace the database at `target` (created if missing) with the backup at `backup`; see the
/// module documentation. `progress(pages_done, pages_total)` is called between steps; an error
/// from it stops the restore and leaves the target as it was.
pub fn restore(backup: &str, target: &str, progress: Progress) -> Result<RestoreReport> {
    let t = Path::new(target);
    if target.is_empty() || target == ":memory:" || target.starts_with("file:") {
        return Err(Error::invalid(format!(
            "restore needs a database file path as the target, not {target}",
            target = shown(target)
        )));
    }
    if t.is_dir() {
        return Err(Error::invalid(format!(
            "the restore target {target} is a directory: give the database file's path",
            target = shown(target)
        )));
    }
    check_parent(t, "the restore target's")?;
    if t.exists() && same_file(t, Path::new(backup)) {
        return Err(Error::invalid(format!(
            "the backup and the restore target are the same file ({target}): give the database file with --db",
            target = shown(target)
        )));
    }
    let (src, schema_version) = open_backup(backup)?;

    let created = !t.exists();
    let outcome = restore_into(&src, target, progress);
    drop(src);
    match outcome {
        Ok(pages) => {
            for suffix in ["-wal", "-shm", "-journal"] {
                if sibling(t, suffix).exists() {
                    return Err(Error::Database(format!(
                        "restored {target}, but a {suffix} file was left next to it; do not open the database \
                         before checking it (this should not happen: please report it)",
                        target = shown(target)
                    )));
                }
            }
            Ok(RestoreReport {
                backup: backup.to_string(),
                target: target.to_string(),
                bytes: std::fs::metadata(t).map(|m| m.len()).unwrap_or(0),
                pages,
                schema_version,
                created,
            })
        }
        Err(e) => {
            if created {
                super::backup::remove_quietly(t);
            }
            Err(e)
        }
    }
}

fn restore_into(src: &Connection, target: &str, progress: Progress) -> Result<u64> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut dest = Connection::open_with_flags(target, flags).map_err(|e| {
        Error::Database(format!(
            "cannot open the restore target {target}: {e} (check that this user may write it and its directory)",
            target = shown(target)
        ))
    })?;
    // No waiting: a lock held by anyone else means the file is in use.
    dest.busy_timeout(Duration::ZERO)?;
    let busy_is_in_use = |e: rusqlite::Error| {
        if crate::storage::sqlite::db::is_busy(&e) {
            in_use(target)
        } else if is_not_a_database(&e) {
            Error::invalid(format!(
                "the restore target {target} exists and is not a SQLite database: refusing to overwrite it; \
                 move it away or choose another --db",
                target = shown(target)
            ))
        } else if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt)) {
            // Not known to be a queue: never overwritten, but the way out is said.
            Error::invalid(format!(
                "the restore target {target} is damaged ({e}): refusing to overwrite a file it cannot \
                 identify; move it aside (keep it to inspect), then restore to this path again",
                target = shown(target)
            ))
        } else {
            Error::Database(format!(
                "cannot restore into {target}: {e}",
                target = shown(target)
            ))
        }
    };
    // Exclusive before the first read: a read then takes (and keeps) the lock, and a WAL file is
    // opened with its index in heap memory, never through another process's shared memory.
    let _: String = dest
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))
        .map_err(busy_is_in_use)?;
    match schema_of(&dest).map_err(busy_is_in_use)? {
        Some((version, true)) if version >= 1 => {}
        None => {}
        Some(_) => {
            return Err(Error::invalid(format!(
                "the restore target {target} is a SQLite database of something else (no prismq_queue tables): \
                 refusing to overwrite it; choose another --db",
                target = shown(target)
            )))
        }
    }
    let mode: String = dest
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(busy_is_in_use)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(in_use(target));
    }
    // Take the exclusive lock now and keep it (exclusive locking mode keeps it after COMMIT).
    dest.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
        .map_err(busy_is_in_use)?;
    let t = Path::new(target);
    if sibling(t, "-wal").exists() {
        // Leaving WAL removes it; if it is still there it belongs to no live connection (we hold
        // the exclusive lock) and its content is already in the file: remove it so it can never
        // be replayed onto the restored copy.
        std::fs::remove_file(sibling(t, "-wal")).map_err(|e| {
            Error::Database(format!(
                "cannot remove the stale {}: {e}",
                shown(&sibling(t, "-wal"))
            ))
        })?;
    }
    let _ = std::fs::remove_file(sibling(t, "-shm"));

    dest.busy_timeout(Duration::from_secs(10))?;
    let pages = copy_pages(src, &mut dest, progress)?;
    // Back to WAL, as a queue keeps it. In exclusive locking mode the WAL index lives in heap
    // memory, so no -shm file is made; closing checkpoints and deletes the -wal.
    let _: String = dest.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    dest.close().map_err(|(_, e)| Error::from(e))?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::options::QueueOptions;
    use crate::storage::sqlite::testutil::file_driver;
    use crate::storage::sqlite::SqliteDriver;
    use crate::NewTask;

    fn open(p: &Path) -> SqliteDriver {
        SqliteDriver::open(
            p.to_str().unwrap(),
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .unwrap()
    }

    #[test]
    fn restore_replaces_the_content_and_leaves_no_log_files() {
        let (dir, q) = file_driver();
        q.enqueue(&NewTask::new("before", "null")).unwrap();
        let bak = dir.path().join("b.db");
        q.backup(bak.to_str().unwrap()).unwrap();
        q.enqueue(&NewTask::new("after", "null")).unwrap();
        let target = q.path().to_string();
        drop(q);
        let r = restore(bak.to_str().unwrap(), &target, &mut |_, _| Ok(())).unwrap();
        assert!(!r.created && r.pages > 0 && r.schema_version == SCHEMA_VERSION);
        for s in ["-wal", "-shm", "-journal"] {
            assert!(!sibling(Path::new(&target), s).exists(), "{s}");
        }
        let q = open(Path::new(&target));
        assert_eq!(q.stats(None).unwrap().total, 1);
    }

    #[test]
    fn restore_refuses_a_target_that_is_open() {
        let (dir, q) = file_driver();
        q.enqueue(&NewTask::new("x", "null")).unwrap();
        let bak = dir.path().join("b.db");
        q.backup(bak.to_str().unwrap()).unwrap();
        q.enqueue(&NewTask::new("y", "null")).unwrap();
        let err = restore(bak.to_str().unwrap(), q.path(), &mut |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        assert_eq!(q.stats(None).unwrap().total, 2);
    }

    #[test]
    fn restore_creates_a_missing_target_and_an_error_from_progress_removes_it() {
        let (dir, q) = file_driver();
        q.enqueue(&NewTask::new("x", "null")).unwrap();
        let bak = dir.path().join("b.db");
        q.backup(bak.to_str().unwrap()).unwrap();
        let new = dir.path().join("new.db");
        let err = restore(bak.to_str().unwrap(), new.to_str().unwrap(), &mut |_, _| {
            Err(Error::Database("stopped".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("stopped"));
        assert!(!new.exists());
        let r = restore(bak.to_str().unwrap(), new.to_str().unwrap(), &mut |_, _| {
            Ok(())
        })
        .unwrap();
        assert!(r.created);
        assert_eq!(open(&new).stats(None).unwrap().total, 1);
    }

    #[test]
    fn restore_refuses_files_that_are_not_queue_databases() {
        let (dir, q) = file_driver();
        let junk = dir.path().join("junk.db");
        std::fs::write(
            &junk,
            b"this is not a database at all, just some text ...........",
        )
        .unwrap();
        let err = restore(junk.to_str().unwrap(), q.path(), &mut |_, _| Ok(())).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let bak = dir.path().join("b.db");
        q.backup(bak.to_str().unwrap()).unwrap();
        drop(q);
        let err = restore(
            bak.to_str().unwrap(),
            junk.to_str().unwrap(),
            &mut |_, _| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a SQLite database"), "{err}");
        assert!(std::fs::read(&junk).unwrap().starts_with(b"this is not"));
    }
}
