//! Changes to one task by id (cancel, retry, priority), a queue's retry policy, log lines.

use crate::engine::queue::Queue;
use crate::model::error::{Error, Result};
use crate::model::new_task::check_priority;
use crate::model::observe::log_level;
use crate::model::retry::RetryOverrides;
use crate::model::task::TaskRow;

impl Queue {
    /// The task, with the traceback of its last failure.
    pub fn get(&self, id: i64) -> Result<TaskRow> {
        Ok(self.with_timeout(self.driver.task_get(id)?))
    }

    pub fn find_by_idempotency_key(&self, key: &str) -> Result<Option<TaskRow>> {
        Ok(self
            .driver
            .task_get_by_key(key)?
            .map(|t| self.with_timeout(t)))
    }

    /// Queued or running -> cancelled. False when the task had already finished.
    pub fn cancel(&self, id: i64) -> Result<bool> {
        self.driver.task_cancel(id)
    }

    /// Change the priority of a task that has not finished. False when it has.
    pub fn set_priority(&self, id: i64, priority: i64) -> Result<bool> {
        check_priority(priority)?;
        self.driver.task_set_priority(id, priority)
    }

    /// A failed (dead-lettered) or cancelled task back to queued with fresh attempts.
    pub fn retry(&self, id: i64) -> Result<bool> {
        self.driver.task_retry(id)
    }

    /// Set the retry policy of a queue for every process using this file. Keys not given keep
    /// the built-in defaults (base 1 s, factor 2, cap 3600 s, jitter 0.1).
    pub fn set_retry_policy(&self, queue: &str, policy: RetryOverrides) -> Result<()> {
        policy.validate()?;
        if queue.trim().is_empty() {
            return Err(Error::invalid("queue must be a non-empty string"));
        }
        self.driver.queue_set_retry_policy(queue, policy)
    }

    pub fn log(
        &self,
        task_id: i64,
        level: &str,
        message: &str,
        details: Option<&str>,
    ) -> Result<i64> {
        let level = log_level(level)?;
        self.driver.log_insert(task_id, &level, message, details)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::each_backend;
    use crate::model::error::Error;
    use crate::model::new_task::NewTask;
    use crate::model::retry::RetryOverrides;

    fn invalid(e: Error) -> String {
        match e {
            Error::InvalidArgument(m) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_log_level_is_checked_and_stored_in_lower_case() {
        for (_backend, q, _guard) in each_backend() {
            let id = q.enqueue(&NewTask::new("t", "null")).unwrap();
            assert_eq!(
                invalid(q.log(id, "loud", "m", None).unwrap_err()),
                "unknown log level \"loud\": use one of debug, info, warning, error, critical"
            );
            // The level is checked before the task is looked for.
            assert!(matches!(
                q.log(id + 1, "loud", "m", None),
                Err(Error::InvalidArgument(_))
            ));
            q.log(id, "WARNING", "m", None).unwrap();
            let lines = q.logs(id, 10).unwrap();
            assert_eq!(lines.last().unwrap().level, "warning");
        }
    }

    #[test]
    fn a_retry_policy_needs_a_queue_name_and_a_valid_policy() {
        for (_backend, q, _guard) in each_backend() {
            assert_eq!(
                invalid(
                    q.set_retry_policy(" ", RetryOverrides::default())
                        .unwrap_err()
                ),
                "queue must be a non-empty string"
            );
            let bad = RetryOverrides {
                base: Some(-1.0),
                ..RetryOverrides::default()
            };
            assert!(matches!(
                q.set_retry_policy("q", bad),
                Err(Error::InvalidArgument(_))
            ));
            q.set_retry_policy("q", RetryOverrides::default()).unwrap();
        }
    }
}
