//! Acknowledgements from the worker holding a lease: complete, fail, renew, progress, and their
//! batch forms. Each is fenced by the lease token handed out by `claim`: a worker whose lease
//! expired and was taken over (or whose task was cancelled) changes nothing and learns why.

use crate::claim::race::Race;
use crate::claim::ClaimRequest;
use crate::db::WriteTx;
use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::retry::{RetryOverrides, RetryPolicy};
use crate::time::now_ms;
use rusqlite::{params, OptionalExtension};

/// What identifies one claim of a task: its id and the lease token that claim received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub task_id: i64,
    pub token: i64,
}

/// The outcome of `settle`: per acknowledgement whether this claim still held the task, and the
/// newly claimed tasks.
#[derive(Debug)]
pub struct Settled {
    pub completed: Vec<bool>,
    pub failed: Vec<Option<FailOutcome>>,
    pub claimed: Vec<crate::task::TaskRow>,
}

/// What happened to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailOutcome {
    /// Back to queued, claimable again at `run_after` (ms).
    Retrying { run_after: i64 },
    /// Attempts spent, or retry refused: the dead letter.
    DeadLettered,
}

/// Explain why a fenced update matched no row.
fn lease_lost(tx: &WriteTx, lease: Lease) -> Error {
    let row: Option<(String, Option<i64>, Option<String>)> = tx
        .query_row(
            "SELECT status, lease_token, locked_by FROM tasks WHERE id = ?1",
            [lease.task_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .unwrap_or(None);
    let id = lease.task_id;
    match row {
        None => Error::TaskNotFound(id),
        Some((status, token, by)) => {
            let why = match status.as_str() {
                "running" if token.is_some() => format!(
                    "its lease expired and it was claimed again by {}",
                    by.unwrap_or_else(|| "another worker".into())
                ),
                "queued" => "its lease expired and it went back to the queue".to_string(),
                "completed" => "it is already completed".to_string(),
                "cancelled" => "it was cancelled".to_string(),
                "failed" => "it already failed (dead letter)".to_string(),
                other => format!("it is {other}"),
            };
            Error::LeaseLost(format!(
                "task {id} is no longer held by this claim: {why}; drop the result, the task's current holder owns it"
            ))
        }
    }
}

pub(crate) fn log_in(
    tx: &WriteTx,
    task_id: i64,
    at: i64,
    level: &str,
    message: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO task_logs (task_id, at, level, message) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![task_id, at, level, message])?;
    Ok(())
}

/// Logger (Python: `prismq_queue.core.ack`) of failed attempts: retries at info, dead letters at
/// warning. Emitted after the transaction commits, never inside it (see `log_failure`).
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

fn log_failures(items: &[(Lease, String, bool)], outcomes: &[Option<FailOutcome>]) {
    for ((lease, error, _), outcome) in items.iter().zip(outcomes) {
        if let Some(o) = outcome {
            log_failure(lease.task_id, error, *o);
        }
    }
}

impl Queue {
    fn complete_in(
        &self,
        tx: &WriteTx,
        lease: Lease,
        result: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let n = tx
            .prepare_cached(
                "UPDATE tasks SET status = 'completed', result = ?3, finished_at = ?4, updated_at = ?4,
                        lease_until = NULL, lease_token = NULL, progress = 100.0
                 WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
            )?
            .execute(params![lease.task_id, lease.token, result.unwrap_or("null"), now])?;
        Ok(n == 1)
    }

    /// Mark the task completed with `result` (JSON text). `LeaseLost` if this claim no longer holds it.
    pub fn complete(&self, lease: Lease, result: Option<&str>) -> Result<()> {
        self.write_keeping_heads(|tx| {
            // A completion queues nothing: the claim memory stays exact (see `claim::heads`).
            self.heads.carry(tx);
            if self.complete_in(tx, lease, result, now_ms())? {
                Ok(())
            } else {
                Err(lease_lost(tx, lease))
            }
        })
    }

    /// Complete many tasks in one transaction. Returns, per task, whether this claim still held
    /// it (false: lease lost, nothing changed for that task).
    pub fn complete_many(&self, items: &[(Lease, Option<String>)]) -> Result<Vec<bool>> {
        self.write_keeping_heads(|tx| {
            self.heads.carry(tx);
            let now = now_ms();
            items
                .iter()
                .map(|(l, r)| self.complete_in(tx, *l, r.as_deref(), now))
                .collect()
        })
    }

    fn policy_for(
        &self,
        tx: &WriteTx,
        queue: &str,
        task_policy: Option<&str>,
    ) -> Result<RetryPolicy> {
        let mut policy = RetryPolicy::default();
        let queue_policy: Option<String> = tx
            .prepare_cached("SELECT retry_policy FROM queue_config WHERE queue = ?1")?
            .query_row([queue], |r| r.get(0))
            .optional()?;
        for text in [queue_policy.as_deref(), task_policy].into_iter().flatten() {
            let o: RetryOverrides = serde_json::from_str(text)?;
            policy = o.apply(policy);
        }
        Ok(policy)
    }

    fn fail_in(
        &self,
        tx: &WriteTx,
        lease: Lease,
        error: &str,
        retry: bool,
        now: i64,
    ) -> Result<Option<FailOutcome>> {
        // A retry queues the task again, in this transaction: a claim later in it (`settle`)
        // must not trust the claim memory.
        self.heads.forget();
        let row: Option<(i64, i64, String, Option<String>, i64)> = tx
            .prepare_cached(
                "SELECT attempts, max_attempts, queue, retry_policy, priority FROM tasks
                 WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
            )?
            .query_row(params![lease.task_id, lease.token], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let Some((attempts, max_attempts, queue, task_policy, priority)) = row else {
            return Ok(None);
        };
        if retry && attempts < max_attempts {
            let policy = self.policy_for(tx, &queue, task_policy.as_deref())?;
            let run_after = now + policy.delay_ms(attempts, rand::random::<f64>());
            let key = Race::read(tx)?.key(priority);
            tx.prepare_cached(
                "UPDATE tasks SET status = 'queued', run_after = ?2, wkey = ?3, error = ?4, updated_at = ?5,
                        lease_until = NULL, lease_token = NULL
                 WHERE id = ?1",
            )?
            .execute(params![lease.task_id, run_after, key, error, now])?;
            log_in(
                tx,
                lease.task_id,
                now,
                "warning",
                &format!(
                    "attempt {attempts} of {max_attempts} failed, retrying in {:.3}s: {error}",
                    (run_after - now) as f64 / 1000.0
                ),
            )?;
            Ok(Some(FailOutcome::Retrying { run_after }))
        } else {
            tx.prepare_cached(
                "UPDATE tasks SET status = 'failed', error = ?2, finished_at = ?3, updated_at = ?3,
                        lease_until = NULL, lease_token = NULL
                 WHERE id = ?1",
            )?
            .execute(params![lease.task_id, error, now])?;
            let why = if retry {
                format!("attempt {attempts} of {max_attempts} failed, no attempts left: dead letter: {error}")
            } else {
                format!("failed without retry (attempt {attempts}): dead letter: {error}")
            };
            log_in(tx, lease.task_id, now, "error", &why)?;
            Ok(Some(FailOutcome::DeadLettered))
        }
    }

    /// Record a failed attempt: back to queued after the backoff, or the dead letter when
    /// attempts are spent or `retry` is false.
    pub fn fail(&self, lease: Lease, error: &str, retry: bool) -> Result<FailOutcome> {
        let outcome =
            self.db.write(
                |tx| match self.fail_in(tx, lease, error, retry, now_ms())? {
                    Some(o) => Ok(o),
                    None => Err(lease_lost(tx, lease)),
                },
            )?;
        log_failure(lease.task_id, error, outcome);
        Ok(outcome)
    }

    /// Fail many in one transaction; `None` for a task whose lease was lost.
    pub fn fail_many(&self, items: &[(Lease, String, bool)]) -> Result<Vec<Option<FailOutcome>>> {
        let outcomes = self.db.write(|tx| {
            let now = now_ms();
            items
                .iter()
                .map(|(l, e, r)| self.fail_in(tx, *l, e, *r, now))
                .collect::<Result<Vec<_>>>()
        })?;
        log_failures(items, &outcomes);
        Ok(outcomes)
    }

    /// One transaction for a worker's whole exchange with the queue: acknowledge finished tasks
    /// (completions and failures) and claim the next ones. A worker runtime calls this once per
    /// loop, so many handlers' results share one commit with the next claim.
    pub fn settle(
        &self,
        completes: &[(Lease, Option<String>)],
        fails: &[(Lease, String, bool)],
        claim: Option<&ClaimRequest>,
    ) -> Result<Settled> {
        if let Some(req) = claim {
            req.validate()?;
        }
        let settled = self.write_keeping_heads(|tx| {
            // Completions keep the claim memory exact (a claim below checks it itself; a
            // failure forgets it).
            if claim.is_none() {
                self.heads.carry(tx);
            }
            let now = now_ms();
            let completed = completes
                .iter()
                .map(|(l, r)| self.complete_in(tx, *l, r.as_deref(), now))
                .collect::<Result<Vec<_>>>()?;
            let failed = fails
                .iter()
                .map(|(l, e, r)| self.fail_in(tx, *l, e, *r, now))
                .collect::<Result<Vec<_>>>()?;
            let claimed = match claim {
                Some(req) => self.claim_in(tx, req, now)?,
                None => Vec::new(),
            };
            Ok(Settled {
                completed,
                failed,
                claimed,
            })
        })?;
        log_failures(fails, &settled.failed);
        Ok(settled)
    }

    /// Extend the lease to `lease_ms` from now; returns the new expiry.
    pub fn renew(&self, lease: Lease, lease_ms: i64) -> Result<i64> {
        if lease_ms <= 0 {
            return Err(Error::invalid(format!(
                "lease must be a positive number of seconds, got {}",
                lease_ms as f64 / 1000.0
            )));
        }
        self.db.write(|tx| {
            let now = now_ms();
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET lease_until = ?3, updated_at = ?4
                     WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                )?
                .execute(params![lease.task_id, lease.token, now + lease_ms, now])?;
            if n == 1 {
                Ok(now + lease_ms)
            } else {
                Err(lease_lost(tx, lease))
            }
        })
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
        self.db.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET progress = coalesce(?3, progress), step = coalesce(?4, step),
                            message = coalesce(?5, message), updated_at = ?6
                     WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                )?
                .execute(params![
                    lease.task_id,
                    lease.token,
                    percent,
                    step,
                    message,
                    now_ms()
                ])?;
            if n == 1 {
                Ok(())
            } else {
                Err(lease_lost(tx, lease))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::ClaimRequest;
    use crate::enqueue::NewTask;
    use crate::queue::testutil::file_queue;
    use crate::task::{Status, TaskRow};

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
    fn failures_back_off_then_dead_letter() {
        let (_d, q) = file_queue();
        let mut t = NewTask::new("x", "null");
        t.max_attempts = 2;
        t.retry = Some(crate::retry::RetryOverrides {
            base: Some(0.0),
            jitter: Some(0.0),
            ..Default::default()
        });
        let id = q.enqueue(&t).unwrap();
        let a = claim_one(&q, 60_000);
        assert!(matches!(
            q.fail(lease(&a), "boom", true).unwrap(),
            FailOutcome::Retrying { .. }
        ));
        let row = q.get(id).unwrap();
        assert_eq!(
            (row.status, row.error.as_deref()),
            (Status::Queued, Some("boom"))
        );
        let b = claim_one(&q, 60_000);
        assert_eq!(
            q.fail(lease(&b), "boom again", true).unwrap(),
            FailOutcome::DeadLettered
        );
        assert_eq!(q.get(id).unwrap().status, Status::Failed);
        assert!(q.retry(id).unwrap());
        let row = q.get(id).unwrap();
        assert_eq!((row.status, row.attempts), (Status::Queued, 0));
    }

    #[test]
    fn backoff_uses_the_queue_policy_under_the_task_policy() {
        let (_d, q) = file_queue();
        q.set_retry_policy(
            "default",
            crate::retry::RetryOverrides {
                base: Some(30.0),
                jitter: Some(0.0),
                ..Default::default()
            },
        )
        .unwrap();
        q.enqueue(&NewTask::new("x", "null")).unwrap();
        let a = claim_one(&q, 60_000);
        let before = crate::time::now_ms();
        let FailOutcome::Retrying { run_after } = q.fail(lease(&a), "e", true).unwrap() else {
            panic!("should retry")
        };
        let delay = run_after - before;
        assert!((29_900..=30_500).contains(&delay), "delay {delay}");
    }

    #[test]
    fn release_hands_back_without_counting() {
        let (_d, q) = file_queue();
        let id = q.enqueue(&NewTask::new("x", "null")).unwrap();
        let a = claim_one(&q, 60_000);
        assert!(q.release(lease(&a)).unwrap());
        let row = q.get(id).unwrap();
        assert_eq!((row.status, row.attempts), (Status::Queued, 0));
    }

    #[test]
    fn batch_acks_report_lost_leases_per_item() {
        let (_d, q) = file_queue();
        for _ in 0..3 {
            q.enqueue(&NewTask::new("x", "null")).unwrap();
        }
        let mut req = ClaimRequest::new("w");
        req.limit = 3;
        let ts = q.claim(&req).unwrap();
        q.cancel(ts[1].id).unwrap();
        let items: Vec<(Lease, Option<String>)> = ts.iter().map(|t| (lease(t), None)).collect();
        assert_eq!(q.complete_many(&items).unwrap(), vec![true, false, true]);
    }
}

#[cfg(test)]
mod settle_tests {
    use super::*;
    use crate::claim::ClaimRequest;
    use crate::enqueue::NewTask;
    use crate::queue::testutil::file_queue;
    use crate::task::Status;

    #[test]
    fn settle_acknowledges_and_claims_in_one_go() {
        let (_d, q) = file_queue();
        for _ in 0..4 {
            q.enqueue(&NewTask::new("x", "null")).unwrap();
        }
        let mut req = ClaimRequest::new("w");
        req.limit = 2;
        let first = q.settle(&[], &[], Some(&req)).unwrap().claimed;
        assert_eq!(first.len(), 2);
        let l = |t: &crate::task::TaskRow| Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        };
        let out = q
            .settle(
                &[(l(&first[0]), Some("1".into()))],
                &[(l(&first[1]), "boom".into(), false)],
                Some(&req),
            )
            .unwrap();
        assert_eq!(out.completed, vec![true]);
        assert_eq!(out.failed, vec![Some(FailOutcome::DeadLettered)]);
        assert_eq!(out.claimed.len(), 2);
        assert_eq!(q.get(first[0].id).unwrap().status, Status::Completed);
        assert_eq!(q.get(first[1].id).unwrap().status, Status::Failed);
    }
}
