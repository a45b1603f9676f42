//! Acknowledgements, fenced by the lease token: complete, fail, settle, renew, progress,
//! release; and the rescuer of expired leases. A refused acknowledgement is explained here
//! (`fencing`), from what the backend found.

use crate::engine::fencing::explain;
use crate::engine::queue::Queue;
use crate::model::claim::ClaimRequest;
use crate::model::error::Error;
use crate::model::error::Result;
use crate::model::lease::FailOutcome;
use crate::model::lease::Failure;
use crate::model::lease::Lease;
use crate::model::lease::Settled;
use crate::model::time::{check_duration, now_ms, Least};

/// Logger (Python: `prismq_queue.core.ack`) of failed attempts: retries at info, dead letters at
/// warning. Emitted after the transaction commits, never inside it (see `log_failure`); the
/// target keeps the name Python's logging knows..
const LOG_ACK: &str = "prismq_queue::core::ack";

/// One log record for a failed attempt, once its transaction has committed: with the Python
/// bridge (pyo3-log) a record takes the GIL, and waiting for the GIL while holding the write lock
/// would stall every writer of the file for as long as another Python thread keeps the GIL.
fn log_failure(task_id: i64, error: &str, outcome: FailOutcome) {
    let error: String = if error.chars().count() > 500 {
        error.chars().take(500).chain("...".chars()).collect()
    } else {
        error.to_string()
    };
    match outcome {
        FailOutcome::Retrying { run_after } => log::info!(
            target: LOG_ACK,
            "task {task_id}: attempt failed, retrying in {:.3}s: {error}",
            (run_after - now_ms()).max(0) as f64 / 1000.0
        ),
        FailOutcome::DeadLettered => log::warn!(
            target: LOG_ACK,
            "task {task_id}: failed with no attempt left or no retry, moved to the dead letter: {error}"
        ),
    }
}

fn log_failures(items: &[Failure], outcomes: &[Option<FailOutcome>]) {
    for (f, outcome) in items.iter().zip(outcomes) {
        if let Some(o) = outcome {
            log_failure(f.lease.task_id, &f.error, *o);
        }
    }
}

impl Queue {
    /// Mark the task completed with `result` (JSON text). `LeaseLost` if this claim no longer holds it.
    pub fn complete(&self, lease: Lease, result: Option<&str>) -> Result<()> {
        self.driver.task_complete(lease, result).map_err(explain)
    }

    /// Complete many tasks in one transaction. Returns, per task, whether this claim still held
    /// it (false: lease lost, nothing changed for that task).
    pub fn complete_many(&self, items: &[(Lease, Option<String>)]) -> Result<Vec<bool>> {
        self.driver.task_complete_many(items)
    }

    /// `fail` with everything a worker knows of the failure (its traceback too). The attempt's
    /// record (see `attempts`) is written in the same transaction.
    pub fn fail_attempt(&self, f: &Failure) -> Result<FailOutcome> {
        let outcome = self.driver.task_fail(f).map_err(explain)?;
        log_failure(f.lease.task_id, &f.error, outcome);
        Ok(outcome)
    }

    /// Fail many in one transaction; `None` for a task whose lease was lost.
    pub fn fail_many(&self, items: &[Failure]) -> Result<Vec<Option<FailOutcome>>> {
        let outcomes = self.driver.task_fail_many(items)?;
        log_failures(items, &outcomes);
        Ok(outcomes)
    }

    /// One transaction for a worker's whole exchange with the queue: acknowledge finished tasks
    /// (completions and failures) and claim the next ones. A worker runtime calls this once per
    /// loop, so many handlers' results share one commit with the next claim.
    pub fn settle(
        &self,
        completes: &[(Lease, Option<String>)],
        fails: &[Failure],
        claim: Option<&ClaimRequest>,
    ) -> Result<Settled> {
        if let Some(req) = claim {
            req.validate()?;
        }
        let mut settled = self.driver.task_settle(completes, fails, claim)?;
        log_failures(fails, &settled.failed);
        settled.claimed = self.with_timeouts(std::mem::take(&mut settled.claimed));
        Ok(settled)
    }

    /// Extend the lease to `lease_ms` from now; returns the new expiry.
    pub fn renew(&self, lease: Lease, lease_ms: i64) -> Result<i64> {
        check_duration("lease", lease_ms, Least::Positive)?;
        self.driver.task_renew(lease, lease_ms).map_err(explain)
    }

    /// Record progress on a running task (percent in 0..=100, a step name, a message). Only the
    /// fields given change.
    pub fn progress(
        &self,
        lease: Lease,
        percent: Option<f64>,
        step: Option<&str>,
        message: Option<&str>,
    ) -> Result<()> {
        if let Some(p) = percent {
            if !(0.0..=100.0).contains(&p) {
                return Err(Error::invalid(format!(
                    "percent must be between 0 and 100, got {p}"
                )));
            }
        }
        self.driver
            .task_progress(lease, percent, step, message)
            .map_err(explain)
    }

    /// Hand a lease back without counting the attempt (graceful shutdown): the task is queued
    /// again at once. Returns false when this claim no longer held it.
    pub fn release(&self, lease: crate::model::lease::Lease) -> Result<bool> {
        self.driver.task_release(lease)
    }

    /// Put every task whose lease has expired back in the queue (or in the dead letter when its
    /// attempts are spent). Returns how many tasks it moved.
    pub fn sweep(&self) -> Result<usize> {
        self.driver.task_rescue_many()
    }

    /// Record a failed attempt. With `retry` and attempts left, the task goes back to the queue
    /// after the retry policy's backoff; otherwise it becomes `failed` (the dead letter).
    pub fn fail(&self, lease: Lease, error: &str, retry: bool) -> Result<FailOutcome> {
        self.fail_attempt(&Failure::new(lease, error, retry))
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::file_queue;
    use crate::engine::queue::Queue;
    use crate::model::claim::ClaimRequest;
    use crate::model::error::Error;
    use crate::model::lease::Lease;
    use crate::model::new_task::NewTask;
    use crate::model::task::{Status, TaskRow};

    fn claim_one(q: &Queue, lease_ms: i64) -> TaskRow {
        let mut req = ClaimRequest::new("w1");
        req.lease_ms = lease_ms;
        q.claim(&req).unwrap().pop().expect("a task")
    }

    fn lease(t: &TaskRow) -> Lease {
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    #[test]
    fn complete_is_fenced_by_the_lease_token() {
        let (_d, q) = file_queue();
        let id = q.enqueue(&NewTask::new("x", "1")).unwrap();
        let t = claim_one(&q, 60_000);
        let forged = Lease {
            task_id: id,
            token: t.lease_token.unwrap() ^ 1,
        };
        assert!(matches!(q.complete(forged, None), Err(Error::LeaseLost(_))));
        q.complete(lease(&t), Some("{\"ok\":true}")).unwrap();
        assert_eq!(q.get(id).unwrap().status, Status::Completed);
        // A second completion is refused and changes nothing.
        assert!(matches!(
            q.complete(lease(&t), Some("2")),
            Err(Error::LeaseLost(_))
        ));
        assert_eq!(q.get(id).unwrap().result.as_deref(), Some("{\"ok\":true}"));
    }

    #[test]
    fn expired_lease_is_taken_over_and_old_holder_is_fenced() {
        let (_d, q) = file_queue();
        let id = q.enqueue(&NewTask::new("x", "null")).unwrap();
        let first = claim_one(&q, 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = claim_one(&q, 60_000);
        assert_eq!(second.id, id);
        assert_eq!(second.attempts, 2, "the expired attempt counts");
        let err = q.complete(lease(&first), None).unwrap_err().to_string();
        assert!(err.contains("claimed again by w1"), "{err}");
        assert!(matches!(
            q.renew(lease(&first), 1000),
            Err(Error::LeaseLost(_))
        ));
        q.complete(lease(&second), None).unwrap();
    }

    #[test]
    fn a_bad_lease_or_percent_is_refused_before_the_backend_sees_it() {
        let (_d, q) = file_queue();
        q.enqueue(&NewTask::new("x", "null")).unwrap();
        let t = claim_one(&q, 60_000);
        for lease_ms in [0, -1] {
            let e = q.renew(lease(&t), lease_ms).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        }
        for percent in [-0.5, 100.5, f64::NAN] {
            let e = q
                .progress(lease(&t), Some(percent), None, None)
                .unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.starts_with("percent must be between 0 and 100")),
                "{e:?}"
            );
        }
        let row = q.get(t.id).unwrap();
        assert_eq!((row.lease_until, row.progress), (t.lease_until, None));
    }
}
