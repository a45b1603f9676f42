//! Prompt wake-up without busy polling. An idle worker waits here until the database changes.
//!
//! Two sources: commits by this process signal a condition variable at once; commits by other
//! processes are seen through `PRAGMA data_version` on a dedicated connection, which changes
//! whenever another connection commits. Checking it reads SQLite's shared-memory WAL index (no
//! I/O), so polling it every couple of milliseconds keeps pick-up latency low at a tiny CPU cost.

use crate::error::Result;
use crate::queue::Queue;
use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Notifier {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Notifier {
    /// Called after every commit of this process.
    pub fn notify(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    pub fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Wait until the generation moves past `seen` or `deadline`; true when it moved.
    fn wait_past(&self, seen: u64, deadline: Instant) -> bool {
        let mut g = self.generation.lock();
        while *g == seen {
            if self.changed.wait_until(&mut g, deadline).timed_out() {
                return *g != seen;
            }
        }
        true
    }
}

/// How often other processes' commits are checked for while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(3);

impl Queue {
    /// Block (call it with the GIL released) until the database may have changed, or `timeout`
    /// passes. Returns true on a change. Spurious wake-ups are possible: callers re-check.
    pub fn wait_for_change(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let seen_local = self.db.notifier.generation();
        let seen_db = self.db.data_version()?;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let slice = (now + POLL_INTERVAL).min(deadline);
            if self.db.notifier.wait_past(seen_local, slice) {
                return Ok(true);
            }
            if self.db.data_version()? != seen_db {
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
