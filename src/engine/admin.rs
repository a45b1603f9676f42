//! Changes to one task by id (cancel, retry, priority), a queue's retry policy, log lines.

use crate::engine::queue::Queue;
use crate::model::error::Result;
use crate::model::new_task::check_priority;
use crate::model::retry::RetryOverrides;
use crate::model::task::TaskRow;

impl Queue {
    /// The task, with the traceback of its last failure.
    pub fn get(&self, id: i64) -> Result<TaskRow> {
        self.driver.task_get(id)
    }

    pub fn find_by_idempotency_key(&self, key: &str) -> Result<Option<TaskRow>> {
        self.driver.task_get_by_key(key)
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
        self.driver.queue_set_retry_policy(queue, policy)
    }

    pub fn log(
        &self,
        task_id: i64,
        level: &str,
        message: &str,
        details: Option<&str>,
    ) -> Result<i64> {
        self.driver.log_insert(task_id, level, message, details)
    }
}
