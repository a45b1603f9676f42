//! Limits: concurrency per queue, per task type and per payload key, and rates, enforced by
//! every backend inside the claim (storage/*/limits.rs). The engine checks the arguments.

use crate::engine::queue::Queue;
use crate::model::error::{Error, Result};
use crate::model::limits::{LimitInfo, LimitSpec};

impl Queue {
    /// Create or replace the limit of (`queue`, `task_type`); `None` limits the whole queue.
    pub fn set_limit(
        &self,
        queue: &str,
        task_type: Option<&str>,
        concurrency: Option<i64>,
        per: Option<&str>,
        rate: Option<&str>,
    ) -> Result<()> {
        let spec = LimitSpec::new(queue, task_type, concurrency, per, rate)?;
        self.driver.limit_set(&spec)
    }

    /// Every limit with its figures, sorted by queue then type (the whole queue's first).
    pub fn limits(&self) -> Result<Vec<LimitInfo>> {
        self.driver.limit_list(None)
    }

    /// Remove the limit of (`queue`, `task_type`); false when there was none.
    pub fn remove_limit(&self, queue: &str, task_type: Option<&str>) -> Result<bool> {
        if queue.trim().is_empty() {
            return Err(Error::invalid("a limit's queue must be a non-empty string"));
        }
        if task_type.is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::invalid(
                "a limit's type must be a non-empty string, or None for the whole queue",
            ));
        }
        self.driver.limit_remove(queue, task_type.unwrap_or(""))
    }
}
