//! Each queue's default execution timeout (`model::timeouts`), set by `set_default_timeout` and
//! filled into every task a handle hands out (claims, settles, get, find, list) whose own
//! `timeout` is unset, so `Task.timeout` is the timeout its attempt runs under and a worker
//! enforces it without knowing where it came from.
//!
//! The settings are read once a second at most per handle (a handful of rows), not in each
//! claim's transaction: a claim's cost does not change, and another process's new default takes
//! effect within a second; this handle's own `set_default_timeout` takes effect at once.

use crate::engine::queue::Queue;
use crate::model::error::Result;
use crate::model::task::TaskRow;
use crate::model::timeouts::{check_queue_timeout, QueueTimeouts};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a handle reuses the settings it read.
const FRESH_FOR: Duration = Duration::from_secs(1);

impl Queue {
    /// Set `queue`'s default execution timeout for every process using this database: tasks of
    /// the queue without a `timeout` of their own run at most `timeout_ms` (`None`: no timeout).
    pub fn set_default_timeout(&self, queue: &str, timeout_ms: Option<i64>) -> Result<()> {
        check_queue_timeout(queue, timeout_ms)?;
        self.driver.queue_set_timeout(queue, timeout_ms)?;
        self.timeouts.forget();
        Ok(())
    }

    /// `queue`'s default execution timeout in ms (`None`: no timeout), 300 s unless set.
    pub fn default_timeout(&self, queue: &str) -> Result<Option<i64>> {
        Ok(self.driver.queue_timeouts()?.default_for(queue))
    }

    /// The settings, read again when older than `FRESH_FOR`. A failed read keeps the previous
    /// settings (or the built-in default): the tasks of a committed claim are never lost to it.
    fn queue_timeouts(&self) -> Arc<QueueTimeouts> {
        let mut slot = self.timeouts.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, t)) = slot.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return t.clone();
            }
        }
        match self.driver.queue_timeouts() {
            Ok(t) => {
                let t = Arc::new(t);
                *slot = Some((Instant::now(), t.clone()));
                t
            }
            Err(e) => {
                log::warn!("default timeouts unreadable ({e}); using the previous ones");
                slot.as_ref().map(|(_, t)| t.clone()).unwrap_or_default()
            }
        }
    }

    /// Fill each task's unset timeout with its queue's default.
    pub(crate) fn with_timeouts(&self, mut rows: Vec<TaskRow>) -> Vec<TaskRow> {
        if rows.iter().any(|r| r.timeout_ms.is_none()) {
            let t = self.queue_timeouts();
            for r in rows.iter_mut().filter(|r| r.timeout_ms.is_none()) {
                r.timeout_ms = t.default_for(&r.queue);
            }
        }
        rows
    }

    pub(crate) fn with_timeout(&self, row: TaskRow) -> TaskRow {
        self.with_timeouts(vec![row])
            .pop()
            .expect("one row in, one out")
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::each_backend;
    use crate::model::claim::ClaimRequest;
    use crate::model::error::Error;
    use crate::model::new_task::NewTask;
    use crate::model::timeouts::DEFAULT_EXECUTION_TIMEOUT_MS;

    #[test]
    fn claimed_and_read_tasks_carry_their_effective_timeout() {
        for (name, q, _guard) in each_backend() {
            let mut own = NewTask::new("t", "null");
            own.timeout_ms = Some(9_000);
            let own = q.enqueue(&own).unwrap();
            let plain = q.enqueue(&NewTask::new("t", "null")).unwrap();
            let mut fast = NewTask::new("t", "null");
            fast.queue = "fast".into();
            let fast = q.enqueue(&fast).unwrap();
            let mut open = NewTask::new("t", "null");
            open.queue = "open".into();
            let open = q.enqueue(&open).unwrap();
            // Set after the enqueues: applied when the task is handed out, not stored in it.
            q.set_default_timeout("fast", Some(2_000)).unwrap();
            q.set_default_timeout("open", None).unwrap();
            assert_eq!(q.get(own).unwrap().timeout_ms, Some(9_000), "{name}");
            assert_eq!(
                q.get(plain).unwrap().timeout_ms,
                Some(DEFAULT_EXECUTION_TIMEOUT_MS)
            );
            assert_eq!(q.default_timeout("fast").unwrap(), Some(2_000));
            assert_eq!(q.default_timeout("open").unwrap(), None);
            let mut req = ClaimRequest::new("w");
            req.limit = 10;
            let got: Vec<_> = q
                .claim(&req)
                .unwrap()
                .into_iter()
                .map(|t| (t.id, t.timeout_ms))
                .collect();
            assert_eq!(got.len(), 4, "{name}");
            for (id, want) in [
                (own, Some(9_000)),
                (plain, Some(DEFAULT_EXECUTION_TIMEOUT_MS)),
                (fast, Some(2_000)),
                (open, None),
            ] {
                assert!(
                    got.contains(&(id, want)),
                    "{name}: {id} {want:?} in {got:?}"
                );
            }
            for bad in [
                Some(0),
                Some(-1),
                Some(crate::model::time::MAX_DURATION_MS + 1),
            ] {
                let e = q.set_default_timeout("fast", bad).unwrap_err();
                assert!(matches!(e, Error::InvalidArgument(_)), "{name}: {e}");
            }
            assert!(q.set_default_timeout(" ", Some(1)).is_err());
            assert_eq!(
                q.default_timeout("fast").unwrap(),
                Some(2_000),
                "nothing written"
            );
        }
    }
}
