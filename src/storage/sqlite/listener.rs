//! The SQLite backend's listener: commits by other processes write the WAL file, and the
//! operating system reports that write (inotify on Linux, FSEvents on macOS,
//! ReadDirectoryChangesW on Windows, through the `notify` crate). Each event calls the engine's
//! hook, which wakes its waiters to look at `PRAGMA data_version` (see `engine::wakeup`).

use super::SqliteDriver;
use notify::{RecursiveMode, Watcher};
use std::ffi::OsString;
use std::path::Path;

/// A running watch of the database's directory; dropping it ends the watch.
pub struct FileWatch(#[allow(dead_code)] notify::RecommendedWatcher);

impl SqliteDriver {
    /// Watch the directory of the database for writes to the file or its WAL (once per handle),
    /// calling `on_event` for each. The directory, not the files: the WAL is deleted and
    /// recreated when the last connection of all processes closes, which would silently end a
    /// watch on the file itself. False when no watch runs (`:memory:`, or the platform refused).
    pub fn listen(&self, on_event: Box<dyn Fn() + Send + Sync>) -> bool {
        let path = self.db.path.as_str();
        if path == ":memory:" {
            return false;
        }
        self.watch
            .get_or_init(|| match start_watch(path, on_event) {
                Ok(w) => Some(FileWatch(w)),
                Err(e) => {
                    log::debug!(
                        "no file watch on {} ({e}); waiting workers poll instead",
                        crate::model::paths::shown(path)
                    );
                    None
                }
            })
            .is_some()
    }
}

fn start_watch(
    db_path: &str,
    on_event: Box<dyn Fn() + Send + Sync>,
) -> notify::Result<notify::RecommendedWatcher> {
    let path = std::path::absolute(db_path)?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    let mut wal = name.clone();
    wal.push("-wal");
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        let ours = ev.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|f| f == name.as_os_str() || f == wal.as_os_str())
        });
        if ours {
            on_event();
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{file_driver, open};
    use crate::model::new_task::NewTask;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn another_connections_commit_is_reported_by_the_file_watch() {
        let (_d, q) = file_driver();
        let hints = Arc::new(AtomicU64::new(0));
        let seen = hints.clone();
        assert!(
            q.listen(Box::new(move || {
                seen.fetch_add(1, Ordering::Relaxed);
            })),
            "the platform's file watch (inotify here) should be available"
        );
        let before = hints.load(Ordering::Relaxed);
        let other = open(q.path());
        other.enqueue(&NewTask::new("x", "null")).unwrap();
        // Events are delivered by the watcher's thread: give it time, without a timing claim.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hints.load(Ordering::Relaxed) == before {
            assert!(
                Instant::now() < deadline,
                "no file event for a commit of another connection"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
