//! Enqueue one task or many in one transaction, with idempotency keys and delays.

use crate::engine::queue::Queue;
use crate::model::error::{Error, Result};
use crate::model::new_task::NewTask;

impl Queue {
    /// Insert all tasks in one transaction: either every task is queued or none is. An existing
    /// idempotency key yields the existing task's id (also within the batch itself).
    pub fn enqueue_many(&self, tasks: &[NewTask]) -> Result<Vec<i64>> {
        for (i, t) in tasks.iter().enumerate() {
            t.validate(self.opts.max_payload_bytes)
                .map_err(|e| match e {
                    Error::InvalidArgument(m) if tasks.len() > 1 => {
                        Error::InvalidArgument(format!("item {i}: {m}"))
                    }
                    other => other,
                })?;
        }
        self.driver.task_insert_many(tasks)
    }

    pub fn enqueue(&self, task: &NewTask) -> Result<i64> {
        Ok(self.enqueue_many(std::slice::from_ref(task))?[0])
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::file_queue;
    use crate::model::new_task::NewTask;

    #[test]
    fn a_bad_item_writes_nothing() {
        let (_d, q) = file_queue();
        let good = NewTask::new("x", "1");
        let mut bad = NewTask::new("x", "1");
        bad.priority = 0;
        let e = q.enqueue_many(&[good, bad]).unwrap_err().to_string();
        assert!(e.starts_with("item 1: priority must be between 1"), "{e}");
        assert_eq!(q.stats(None).unwrap().total, 0);
    }
}
