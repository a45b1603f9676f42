//! Prompt wake-up without busy polling. An idle worker waits here until the database changes.
//!
//! Three sources, cheapest first:
//! - commits by this process signal a condition variable at once;
//! - commits by other processes write the WAL file, and the operating system reports that write
//!   (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows, through the `notify`
//!   crate): a waiter wakes and checks `PRAGMA data_version`, which moves once the commit is
//!   visible. The write lands a few microseconds before the commit is published in the
//!   shared-memory WAL index, so after an event the waiter polls every millisecond for a short
//!   while ("hot") instead of trusting a single look;
//! - a slow poll of `data_version` as the fallback, for file systems or platforms where events
//!   are late or missing; without a file watch (it could not be set up) the poll is fast.
//!
//! An idle waiter thus sleeps in the kernel instead of waking every few milliseconds: timed
//! wake-ups cost tens of microseconds of CPU each on small VMs, which at a 3 ms poll was over 1%
//! of a core per idle worker.

use crate::error::Result;
use crate::queue::Queue;
use notify::{RecursiveMode, Watcher};
use parking_lot::{Condvar, Mutex};
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Poll interval when no file watch could be set up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(3);
/// Poll interval with a file watch: only a safety net for a missed event.
const WATCHED_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After a file event, poll this often for `HOT_WINDOW`, until the commit becomes visible.
const HOT_POLL_INTERVAL: Duration = Duration::from_millis(1);
const HOT_WINDOW: Duration = Duration::from_millis(25);

#[derive(Default)]
struct Counters {
    /// Commits of this process.
    generation: u64,
    /// File events on the database or its WAL (any process).
    hints: u64,
}

#[derive(Default)]
struct Shared {
    counters: Mutex<Counters>,
    changed: Condvar,
}

#[derive(Default)]
pub struct Notifier {
    shared: Arc<Shared>,
    /// Set up on the first wait, so handles that never wait (an app that only enqueues) don't
    /// pay for a watch. `None` inside when the platform refused one: then waits poll fast.
    watch: OnceLock<Option<notify::RecommendedWatcher>>,
}

impl Notifier {
    /// Called after every commit of this process.
    pub fn notify(&self) {
        self.shared.counters.lock().generation += 1;
        self.shared.changed.notify_all();
    }

    pub fn generation(&self) -> u64 {
        self.shared.counters.lock().generation
    }

    /// Watch the directory of `db_path` for writes to the database file or its WAL (once).
    /// The directory, not the files: the WAL is deleted and recreated when the last connection
    /// of all processes closes, which would silently end a watch on the file itself.
    fn ensure_watch(&self, db_path: &str) -> bool {
        self.watch
            .get_or_init(|| match start_watch(db_path, self.shared.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::debug!(
                        "no file watch on {db_path:?} ({e}); waiting workers poll every {POLL_INTERVAL:?}"
                    );
                    None
                }
            })
            .is_some()
    }

    /// A waiter for one wait: remembers what it has seen and whether it is "hot".
    pub(crate) fn waiter(&self, db_path: &str) -> Waiter {
        let watching = db_path != ":memory:" && self.ensure_watch(db_path);
        let c = self.shared.counters.lock();
        Waiter {
            shared: self.shared.clone(),
            watching,
            seen_generation: c.generation,
            seen_hints: c.hints,
            hot_until: None,
        }
    }
}

fn start_watch(db_path: &str, shared: Arc<Shared>) -> notify::Result<notify::RecommendedWatcher> {
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
            shared.counters.lock().hints += 1;
            shared.changed.notify_all();
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

pub(crate) struct Waiter {
    shared: Arc<Shared>,
    watching: bool,
    seen_generation: u64,
    seen_hints: u64,
    hot_until: Option<Instant>,
}

impl Waiter {
    /// Sleep until this process commits, a file event arrives, the poll interval passes or
    /// `deadline`, whichever is first. The caller then looks at what it waits for.
    pub(crate) fn nap(&mut self, deadline: Instant) {
        let now = Instant::now();
        let interval = match self.hot_until {
            Some(h) if now < h => HOT_POLL_INTERVAL,
            _ if self.watching => WATCHED_POLL_INTERVAL,
            _ => POLL_INTERVAL,
        };
        let until = (now + interval).min(deadline);
        let mut c = self.shared.counters.lock();
        while c.generation == self.seen_generation && c.hints == self.seen_hints {
            if self.shared.changed.wait_until(&mut c, until).timed_out() {
                break;
            }
        }
        if c.hints != self.seen_hints {
            self.seen_hints = c.hints;
            self.hot_until = Some(Instant::now() + HOT_WINDOW);
        }
        self.seen_generation = c.generation;
    }
}

impl Queue {
    /// Block (call it with the GIL released) until the database may have changed, or `timeout`
    /// passes. Returns true on a change. Spurious wake-ups are possible: callers re-check.
    pub fn wait_for_change(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let seen_local = self.db.notifier.generation();
        let seen_db = self.db.data_version()?;
        let mut waiter = self.db.notifier.waiter(&self.db.path);
        loop {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            waiter.nap(deadline);
            if self.db.notifier.generation() != seen_local || self.db.data_version()? != seen_db {
                return Ok(true);
            }
        }
    }

    /// Wake every local waiter (used after commits and on shutdown).
    pub fn notify_local(&self) {
        self.db.notifier.notify();
    }
}

#[cfg(test)]
mod tests {
    use crate::enqueue::NewTask;
    use crate::queue::{Queue, QueueOptions};
    use std::time::{Duration, Instant};

    #[test]
    fn wakes_on_another_connections_commit_and_times_out_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let p = path.to_str().unwrap().to_string();
        let watcher = Queue::open(&p, QueueOptions::default()).unwrap();
        let t0 = Instant::now();
        assert!(!watcher.wait_for_change(Duration::from_millis(30)).unwrap());
        assert!(t0.elapsed() >= Duration::from_millis(30));

        // A second handle has its own connections: only data_version can tell the watcher.
        let producer = Queue::open(&p, QueueOptions::default()).unwrap();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            producer.enqueue(&NewTask::new("x", "null")).unwrap();
        });
        let t0 = Instant::now();
        assert!(watcher.wait_for_change(Duration::from_secs(5)).unwrap());
        assert!(t0.elapsed() < Duration::from_secs(1));
        h.join().unwrap();
    }

    #[test]
    fn another_connections_commit_is_reported_by_the_file_watch() {
        let (_d, q) = crate::queue::testutil::file_queue();
        let waiter = q.db.notifier.waiter(&q.db.path);
        assert!(
            waiter.watching,
            "the platform's file watch (inotify here) should be available"
        );
        let before = waiter.shared.counters.lock().hints;
        let other = Queue::open(q.path(), QueueOptions::default()).unwrap();
        other.enqueue(&NewTask::new("x", "null")).unwrap();
        // Events are delivered by the watcher's thread: give it time, without a timing claim.
        let deadline = Instant::now() + Duration::from_secs(10);
        while waiter.shared.counters.lock().hints == before {
            assert!(
                Instant::now() < deadline,
                "no file event for a commit of another connection"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn local_commits_wake_at_once() {
        let (_d, q) = crate::queue::testutil::file_queue();
        let q = std::sync::Arc::new(q);
        let q2 = q.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q2.enqueue(&NewTask::new("x", "null")).unwrap();
        });
        assert!(q.wait_for_change(Duration::from_secs(5)).unwrap());
        h.join().unwrap();
    }
}
