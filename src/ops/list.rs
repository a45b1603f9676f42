//! Reading tasks: one by id, lists, counts, a task's place in line, its attempts and logs.

use crate::engine::queue::Queue;
use crate::model::attempt::AttemptRow;
use crate::model::error::Result;
use crate::model::listing::ListFilter;
use crate::model::listing::Stats;
use crate::model::observe::LogRow;
use crate::model::strategy::Strategy;
use crate::model::task::TaskRow;

impl Queue {
    pub fn list(&self, f: &ListFilter) -> Result<Vec<TaskRow>> {
        self.driver.task_list(f)
    }

    pub fn stats(&self, queue: Option<&str>) -> Result<Stats> {
        self.driver.stats(queue)
    }

    /// How many queued, due tasks of its queue and type run before task `id` under `strategy`
    /// (0: it is next). `None` when the task is not queued; `TaskNotFound` when there is none.
    pub fn position(&self, id: i64, strategy: Strategy) -> Result<Option<i64>> {
        self.driver.task_position(id, strategy)
    }

    /// The task's attempts that ended without success, oldest first (its latest
    /// `MAX_RECORDS_PER_TASK`). Empty for a task that never failed, and for failures recorded by
    /// builds before schema version 9 (their last error is still `Task.error`).
    pub fn attempts(&self, task_id: i64) -> Result<Vec<AttemptRow>> {
        self.driver.attempt_list(task_id)
    }

    /// The task's log lines, oldest first, at most `limit`.
    pub fn logs(&self, task_id: i64, limit: i64) -> Result<Vec<LogRow>> {
        self.driver.log_list(task_id, limit)
    }
}
