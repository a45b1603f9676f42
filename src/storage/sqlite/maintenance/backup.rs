//! Online backup: a consistent copy of the database while other processes keep working.
//!
//! SQLite's online backup API copies the file page by page, which gives a real progress figure
//! (pages copied of pages in the file). The source connection holds one read transaction for
//! the whole copy, so every step reads the same snapshot: the copy is a single point in time and
//! writes of other processes never make the backup start over. The copy is written to a
//! temporary file next to the destination, switched out of WAL (a backup is one self-contained
//! file) and renamed into place only when complete, so a failed or interrupted backup leaves no
//! half-written file under the destination's name. The temporary file is `DEST.partial-PID-RAND`
//! (with its `-journal` while it is written): a backup that is killed outright (`kill -9`, a power
//! cut) cannot remove it, so the next backup into the same destination removes the partials whose
//! process is gone, and reports them.

use crate::model::error::{Error, Result};
use crate::model::maintenance::BackupReport;
use crate::model::maintenance::Progress;
use crate::model::paths::{canonical, shown};
use crate::storage::sqlite::SqliteDriver;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Pages copied per backup step: 1024 pages (4 MiB at the default page size) between two
/// progress reports.
pub(crate) const PAGES_PER_STEP: i32 = 1024;

/// The temporary files of backups into `dest`: `NAME.partial-PID-RAND`, and that name with
/// SQLite's `-journal`, `-wal` or `-shm` appended.
const PARTIAL: &str = ".partial-";

/// Remove the partial files of earlier backups into `dest` whose process is no longer running
/// (a partial of a backup still running, in this process or another, is left alone). Returns the
/// names of the partials removed. Best effort: a file that cannot be removed is left as it is.
fn remove_stale_partials(dest: &Path) -> Vec<String> {
    let Some(name) = dest.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{name}{PARTIAL}");
    let mut removed: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        // The partial itself, or one of its SQLite files (left alone if the partial went first).
        let id = ["-journal", "-wal", "-shm"]
            .iter()
            .find_map(|s| rest.strip_suffix(s))
            .unwrap_or(rest);
        let Some((pid, tag)) = id.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), tag.parse::<u32>()) else {
            continue;
        };
        let partial = format!("{prefix}{id}");
        if removed.contains(&partial) || process_is_running(pid) {
            continue;
        }
        remove_quietly(&dir.join(&partial));
        log::info!(
            "removed {partial}, left in {} by a backup (process {pid}) that did not finish",
            dir.display()
        );
        removed.push(partial);
    }
    removed.sort();
    removed
}

/// Whether a process with this id runs on this machine. When it cannot tell, it says yes: a
/// partial is then kept rather than taken from a backup that may still be writing it.
#[cfg(unix)]
fn process_is_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // Signal 0 checks only that the process exists; EPERM: it does, as another user's.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(windows)]
fn process_is_running(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{
        CloseHandle, GetLastError, ERROR_INVALID_PARAMETER, STILL_ACTIVE,
    };
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    unsafe {
        let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if handle.is_null() {
            // No such process; any other refusal (access denied) means it exists.
            return GetLastError() != ERROR_INVALID_PARAMETER;
        }
        let mut code = 0u32;
        let known = GetExitCodeProcess(handle, &mut code) != 0;
        CloseHandle(handle);
        !known || code == STILL_ACTIVE as u32
    }
}

#[cfg(not(any(unix, windows)))]
fn process_is_running(_pid: u32) -> bool {
    true
}

/// `path` with `suffix` appended to its file name (`q.db` -> `q.db-wal`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    matches!((canonical(a), canonical(b)), (Ok(x), Ok(y)) if x == y)
}

pub(crate) fn check_parent(path: &Path, what: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::invalid(format!(
                "{what} directory {parent} does not exist: create it first",
                parent = shown(parent)
            )));
        }
    }
    Ok(())
}

/// Copy every page of `src` (main database) into `dest`, reporting pages done of pages total.
/// `src` must already be inside the read transaction whose snapshot is wanted.
pub(crate) fn copy_pages(
    src: &Connection,
    dest: &mut Connection,
    progress: Progress,
) -> Result<u64> {
    let backup = Backup::new(src, dest)?;
    let mut busy_waits = 0u32;
    loop {
        match backup.step(PAGES_PER_STEP)? {
            StepResult::Done => break,
            StepResult::More => {
                let p = backup.progress();
                let total = p.pagecount.max(0) as u64;
                progress(total.saturating_sub(p.remaining.max(0) as u64), total)?;
            }
            // The destination is ours alone and the source is read in a held snapshot, so these
            // are transient; give up rather than spin forever if they are not.
            StepResult::Busy | StepResult::Locked => {
                busy_waits += 1;
                if busy_waits > 6000 {
                    return Err(Error::Database(
                        "the backup stayed blocked by a lock for a minute; retry when the database is quieter".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {}
        }
    }
    let total = backup.progress().pagecount.max(0) as u64;
    drop(backup);
    progress(total, total)?;
    Ok(total)
}

impl SqliteDriver {
    /// Write a consistent copy of the database to `dest` while other processes keep working.
    /// Refuses an existing `dest`.
    pub fn backup(&self, dest: &str) -> Result<BackupReport> {
        self.backup_with(dest, false, &mut |_, _| Ok(()))
    }

    /// `backup`, replacing an existing `dest` file when `overwrite`, and calling
    /// `progress(pages_done, pages_total)` between steps (an error from it stops the backup and
    /// leaves `dest` as it was).
    pub fn backup_with(
        &self,
        dest: &str,
        overwrite: bool,
        progress: Progress,
    ) -> Result<BackupReport> {
        let p = Path::new(dest);
        if dest.is_empty() {
            return Err(Error::invalid("backup destination must not be empty"));
        }
        if p.is_dir() {
            return Err(Error::invalid(format!(
                "backup destination {dest} is a directory: give a file path inside it",
                dest = shown(dest)
            )));
        }
        if p.exists() && !overwrite {
            return Err(Error::invalid(format!(
                "backup destination {dest} already exists: choose a new file name, or overwrite it with --force (overwrite=True)",
                dest = shown(dest)
            )));
        }
        check_parent(p, "backup destination")?;
        if p.exists() && same_file(p, Path::new(self.path())) {
            return Err(Error::invalid(format!(
                "backup destination {dest} is this queue's own database file: choose another path",
                dest = shown(dest)
            )));
        }
        for suffix in ["-wal", "-shm", "-journal"] {
            // Replacing a database that has these files would pair the new file with another
            // database's log: the old log could be replayed onto the copy.
            if sibling(p, suffix).exists() {
                return Err(Error::invalid(format!(
                    "backup destination {dest} has a {suffix} file next to it: it is a database in use or not closed \
                     cleanly; choose another file name (to put a backup into a live database's place use restore)",
                    dest = shown(dest)
                )));
            }
        }
        let removed_partials = remove_stale_partials(p);
        let tmp = sibling(
            p,
            &format!("{PARTIAL}{}-{}", std::process::id(), rand::random::<u32>()),
        );
        let outcome = self.backup_into(&tmp, progress);
        let pages = match outcome {
            Ok(pages) => pages,
            Err(e) => {
                remove_quietly(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&tmp, p) {
            remove_quietly(&tmp);
            return Err(Error::Database(format!(
                "could not move the finished backup to {dest}: {e}",
                dest = shown(dest)
            )));
        }
        Ok(BackupReport {
            path: dest.to_string(),
            bytes: std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            pages,
            removed_partials,
        })
    }

    fn backup_into(&self, tmp: &Path, progress: Progress) -> Result<u64> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut out = Connection::open_with_flags(tmp, flags).map_err(|e| {
            Error::Database(format!(
                "cannot create the backup file {tmp}: {e} (check that the directory is writable)",
                tmp = shown(tmp)
            ))
        })?;
        let pages = self.db.read(|src| {
            // One read transaction for the whole copy: every step sees the same snapshot.
            let tx = src.unchecked_transaction()?;
            tx.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
            let pages = copy_pages(&tx, &mut out, &mut *progress)?;
            tx.finish()?;
            Ok(pages)
        })?;
        // The copied header says WAL; a backup is one self-contained file.
        let _: String = out.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
        out.close().map_err(|(_, e)| Error::from(e))?;
        Ok(pages)
    }
}

pub(crate) fn remove_quietly(path: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(path, suffix));
    }
}

#[cfg(test)]
mod tests {
    use crate::model::options::QueueOptions;
    use crate::storage::sqlite::testutil::file_driver;
    use crate::storage::sqlite::SqliteDriver;
    use crate::NewTask;

    fn count(path: &std::path::Path) -> i64 {
        let q = SqliteDriver::open(
            path.to_str().unwrap(),
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .unwrap();
        q.stats(None).unwrap().total
    }

    #[test]
    fn backup_is_one_snapshot_even_when_writes_land_between_steps() {
        let (dir, q) = file_driver();
        let other = SqliteDriver::open(
            q.path(),
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .unwrap();
        let big = "x".repeat(3000);
        let tasks: Vec<NewTask> = (0..3000)
            .map(|_| NewTask::new("t", format!("\"{big}\"")))
            .collect();
        q.enqueue_many(&tasks).unwrap();
        let dest = dir.path().join("copy.db");
        let mut calls = 0;
        let report = q
            .backup_with(dest.to_str().unwrap(), false, &mut |done, total| {
                assert!(done <= total);
                calls += 1;
                // Another connection commits while the copy is under way.
                other.enqueue(&NewTask::new("later", "null")).map(drop)
            })
            .unwrap();
        assert!(calls > 2, "{calls} progress calls");
        assert!(report.bytes > 0 && report.pages > 0);
        assert_eq!(count(&dest), 3000);
        assert!(!super::sibling(&dest, "-wal").exists());
    }

    #[test]
    fn an_error_from_progress_leaves_nothing_behind() {
        let (dir, q) = file_driver();
        q.enqueue(&NewTask::new("t", "null")).unwrap();
        let dest = dir.path().join("copy.db");
        let err = q
            .backup_with(dest.to_str().unwrap(), false, &mut |_, _| {
                Err(crate::Error::Database("stop".into()))
            })
            .unwrap_err();
        assert!(err.to_string().contains("stop"));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("copy.db"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// The id of a process that ran and is gone (reaped), as a killed backup's would be.
    fn gone_pid() -> u32 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn stale_partials_of_gone_processes_are_removed_and_reported_live_ones_kept() {
        let (dir, q) = file_driver();
        q.enqueue(&NewTask::new("t", "null")).unwrap();
        let dest = dir.path().join("copy.db");
        let file = |name: &str| {
            std::fs::write(dir.path().join(name), b"partial").unwrap();
            name.to_string()
        };
        let gone = gone_pid();
        let stale = file(&format!("copy.db.partial-{gone}-17"));
        file(&format!("{stale}-journal"));
        let orphan_journal = file(&format!("copy.db.partial-{gone}-18-journal"));
        let live = file(&format!("copy.db.partial-{}-19", std::process::id()));
        let others = [
            file(&format!("other.db.partial-{gone}-20")),
            file(&format!("copy.db.partial-{gone}-notanumber")),
            file("copy.db.partial-x"),
        ];
        let report = q.backup(dest.to_str().unwrap()).unwrap();
        let orphan = orphan_journal.trim_end_matches("-journal").to_string();
        assert_eq!(report.removed_partials, vec![stale.clone(), orphan]);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with(&stale)), "{names:?}");
        assert!(!names.contains(&orphan_journal), "{names:?}");
        assert!(
            names.contains(&live),
            "a running backup's partial was removed: {names:?}"
        );
        for other in &others {
            assert!(names.contains(other), "{other} was removed: {names:?}");
        }
        assert_eq!(count(&dest), 1);
    }

    #[test]
    fn overwrite_only_when_asked() {
        let (dir, q) = file_driver();
        q.enqueue(&NewTask::new("t", "null")).unwrap();
        let dest = dir.path().join("copy.db");
        let d = dest.to_str().unwrap();
        q.backup(d).unwrap();
        q.enqueue(&NewTask::new("t", "null")).unwrap();
        assert!(q
            .backup(d)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        q.backup_with(d, true, &mut |_, _| Ok(())).unwrap();
        assert_eq!(count(&dest), 2);
    }
}
