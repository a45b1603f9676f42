//! Waiting on a queue handle: `Queue::wait_for_change`, over the engine's `Wakeup` (this
//! process's commits) and the driver's listener and `data_version` (other processes').

use super::queue::Queue;
use super::wakeup::Waiter;
use crate::model::error::Result;
use std::time::{Duration, Instant};

impl Queue {
    /// Block (call it with the GIL released) until the database may have changed, or `timeout`
    /// passes. Returns true on a change. Spurious wake-ups are possible: callers re-check.
    pub fn wait_for_change(&self, timeout: Duration) -> Result<bool> {
        let deadline =
            crate::model::time::deadline(crate::model::time::check_wait("timeout", timeout)?);
        let seen_local = self.wakeup.generation();
        let seen_db = self.driver.data_version()?;
        let mut waiter = self.waiter();
        loop {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            waiter.nap(deadline);
            if self.wakeup.generation() != seen_local || self.driver.data_version()? != seen_db {
                return Ok(true);
            }
        }
    }

    /// Wake every local waiter (used after commits and on shutdown).
    pub fn notify_local(&self) {
        self.wakeup.notify();
    }

    /// A waiter on this handle's commits and on the driver's listener.
    pub(crate) fn waiter(&self) -> Waiter {
        self.wakeup.waiter(|hook| self.driver.listen(hook))
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::Queue;
    use crate::model::new_task::NewTask;
    use crate::model::options::QueueOptions;
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
        let (_d, q) = crate::engine::queue::testutil::file_queue();
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
