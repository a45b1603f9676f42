//! Reading tasks: one by id, lists, counts, a task's place in line, its attempts and logs.

use crate::engine::queue::Queue;
use crate::model::attempt::AttemptRow;
use crate::model::error::Result;
use crate::model::listing::ListFilter;
use crate::model::listing::Stats;
use crate::model::observe::{check_log_limit, LogRow};
use crate::model::strategy::Strategy;
use crate::model::task::TaskRow;

impl Queue {
    pub fn list(&self, f: &ListFilter) -> Result<Vec<TaskRow>> {
        f.validate()?;
        self.driver.task_list(f)
    }

    pub fn stats(&self, queue: Option<&str>) -> Result<Stats> {
        let mut s = self.driver.stats(queue)?;
        s.limits = self.driver.limit_list(queue)?;
        Ok(s)
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
        check_log_limit(limit)?;
        self.driver.log_list(task_id, limit)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::each_backend;
    use crate::model::error::Error;
    use crate::model::listing::ListFilter;
    use crate::model::new_task::NewTask;

    fn invalid(e: Error) -> String {
        match e {
            Error::InvalidArgument(m) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn list_and_logs_limits_are_checked_before_any_read() {
        for (_backend, q, _guard) in each_backend() {
            let id = q.enqueue(&NewTask::new("t", "null")).unwrap();
            for limit in [0, 10_001] {
                let f = ListFilter {
                    limit,
                    ..ListFilter::default()
                };
                assert_eq!(
                    invalid(q.list(&f).unwrap_err()),
                    format!("limit must be between 1 and 10000, got {limit}")
                );
            }
            let f = ListFilter {
                limit: 10_000,
                ..ListFilter::default()
            };
            assert_eq!(q.list(&f).unwrap().len(), 1);
            assert_eq!(
                invalid(q.logs(id, 0).unwrap_err()),
                "limit must be between 1 and 1000000, got 0"
            );
            // Checked before the task is looked for.
            assert!(matches!(q.logs(id + 1, 0), Err(Error::InvalidArgument(_))));
            assert!(q.logs(id, 1_000_000).is_ok());
        }
    }
}
