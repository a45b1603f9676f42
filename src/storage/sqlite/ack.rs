//! Acknowledgements from the worker holding a lease: complete, fail, renew, progress, and their
//! batch forms. Each is fenced by the lease token handed out by `claim`: a worker whose lease
//! expired and was taken over (or whose task was cancelled) changes nothing and learns why. What
//! becomes of a failed attempt is the engine's verdict (`storage::Rules`), applied here.

use crate::model::attempt::{Outcome, Running};
use crate::model::claim::ClaimRequest;
use crate::model::dependencies::Ending;
use crate::model::error::{Error, Result};
use crate::model::lease::Failure;
use crate::model::lease::Lease;
use crate::model::lease::Settled;
use crate::model::lease::{FailOutcome, Verdict};
use crate::model::time::now_ms;
use crate::storage::sqlite::attempts::record_in;
use crate::storage::sqlite::claim::race::Race;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::dependencies;
use crate::storage::sqlite::logs::log_in;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params, OptionalExtension};

/// What the row says when a fenced update matched none (`Lease::lost`).
fn lease_lost(tx: &WriteTx, lease: Lease) -> Error {
    let row = tx
        .query_row(
            "SELECT status, lease_token, locked_by FROM tasks WHERE id = ?1",
            [lease.task_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .unwrap_or(None);
    lease.lost(row)
}

impl SqliteDriver {
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
                        lease_until = NULL, lease_token = NULL, lease_key = NULL, progress = 100.0
                 WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
            )?
            .execute(params![lease.task_id, lease.token, result.unwrap_or("null"), now])?;
        // Tasks held on this one move: the claim memory no longer follows the queue.
        if n == 1 && dependencies::ended(tx, lease.task_id, Ending::Completed, now)? {
            self.heads.forget();
        }
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

    /// The retry policy of `queue` as stored (JSON of `RetryOverrides`), for the engine's rules.
    fn queue_policy(tx: &WriteTx, queue: &str) -> Result<Option<String>> {
        Ok(tx
            .prepare_cached("SELECT retry_policy FROM queue_config WHERE queue = ?1")?
            .query_row([queue], |r| r.get(0))
            .optional()?)
    }

    /// Apply the engine's verdict on a failed attempt (`storage::Rules`) to the row this lease
    /// still holds; `None` when it holds none.
    fn fail_in(&self, tx: &WriteTx, f: &Failure, now: i64) -> Result<Option<FailOutcome>> {
        let lease = f.lease;
        // A retry queues the task again, in this transaction: a claim later in it (`settle`)
        // must not trust the claim memory.
        self.heads.forget();
        let row: Option<(Running, String, Option<String>, i64)> = tx
            .prepare_cached(
                "SELECT attempts, max_attempts, queue, retry_policy, priority, locked_by, started_at FROM tasks
                 WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
            )?
            .query_row(params![lease.task_id, lease.token], |r| {
                let running = Running {
                    task_id: lease.task_id,
                    attempts: r.get(0)?,
                    max_attempts: r.get(1)?,
                    worker: r.get(5).unwrap_or(None),
                    started_at: r.get(6).unwrap_or(None),
                };
                Ok((running, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let Some((running, queue, task_policy, priority)) = row else {
            return Ok(None);
        };
        let verdict = self
            .rules
            .after_failure(&running.failed(f, task_policy.as_deref(), now), &mut || {
                Self::queue_policy(tx, &queue)
            })?;
        let ended = running.ended(Outcome::Failed, &verdict.error, f.traceback.as_deref());
        record_in(tx, &ended, now)?;
        Self::apply_verdict(tx, &mut None, (lease.task_id, priority), &verdict, now)?;
        Ok(Some(verdict.outcome))
    }

    /// The row's side of a verdict (`storage::Rules`): queued again at its time with a fresh
    /// race key, or the dead letter; the lease cleared, the error kept, the task's log told.
    /// `race` is read at the first retry and kept for the next verdicts of the transaction.
    pub(crate) fn apply_verdict(
        tx: &WriteTx,
        race: &mut Option<Race>,
        (task_id, priority): (i64, i64),
        verdict: &Verdict,
        now: i64,
    ) -> Result<()> {
        let error = verdict.error.as_ref();
        match verdict.outcome {
            FailOutcome::Retrying { run_after } => {
                let race = match race {
                    Some(race) => *race,
                    None => *race.insert(Race::read(tx)?),
                };
                let key = race.key(priority);
                tx.prepare_cached(
                    "UPDATE tasks SET status = 'queued', run_after = ?2, wkey = ?3, error = ?4, updated_at = ?5,
                            lease_until = NULL, lease_token = NULL, lease_key = NULL
                     WHERE id = ?1",
                )?
                .execute(params![task_id, run_after, key, error, now])?;
            }
            FailOutcome::DeadLettered => {
                tx.prepare_cached(
                    "UPDATE tasks SET status = 'failed', error = ?2, finished_at = ?3, updated_at = ?3,
                            lease_until = NULL, lease_token = NULL, lease_key = NULL
                     WHERE id = ?1",
                )?
                .execute(params![task_id, error, now])?;
                // The claim memory: `fail_in` forgot it, a rescue clears the lanes it moved.
                dependencies::ended(tx, task_id, Ending::Failed(error.to_string()), now)?;
            }
        }
        log_in(tx, task_id, now, verdict.log_level, &verdict.log_message)
    }

    /// Record a failed attempt: back to queued after the backoff, or the dead letter when
    /// attempts are spent or `retry` is false.
    pub fn fail(&self, lease: Lease, error: &str, retry: bool) -> Result<FailOutcome> {
        self.fail_attempt(&Failure::new(lease, error, retry))
    }

    /// `fail` with everything a worker knows of the failure (its traceback too). The attempt's
    /// record (see `attempts`) is written in the same transaction.
    pub fn fail_attempt(&self, f: &Failure) -> Result<FailOutcome> {
        self.db.write(|tx| match self.fail_in(tx, f, now_ms())? {
            Some(o) => Ok(o),
            None => Err(lease_lost(tx, f.lease)),
        })
    }

    /// Fail many in one transaction; `None` for a task whose lease was lost.
    pub fn fail_many(&self, items: &[Failure]) -> Result<Vec<Option<FailOutcome>>> {
        self.db.write(|tx| {
            let now = now_ms();
            items
                .iter()
                .map(|f| self.fail_in(tx, f, now))
                .collect::<Result<Vec<_>>>()
        })
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
        self.write_keeping_heads(|tx| {
            // Completions keep the claim memory exact (a claim below checks it itself; a
            // failure forgets it).
            if claim.is_none() {
                self.heads.carry(tx);
            }
            let clock = self.now(tx)?;
            let now = clock.wall;
            let completed = completes
                .iter()
                .map(|(l, r)| self.complete_in(tx, *l, r.as_deref(), now))
                .collect::<Result<Vec<_>>>()?;
            let failed = fails
                .iter()
                .map(|f| self.fail_in(tx, f, now))
                .collect::<Result<Vec<_>>>()?;
            let claimed = match claim {
                Some(req) => self.claim_in(tx, req, clock)?,
                None => Vec::new(),
            };
            Ok(Settled {
                completed,
                failed,
                claimed,
            })
        })
    }

    /// Extend the lease to `lease_ms` (checked by the engine) from now; returns the new expiry.
    pub fn renew(&self, lease: Lease, lease_ms: i64) -> Result<i64> {
        self.db.write(|tx| {
            let clock = self.now(tx)?;
            let now = clock.wall;
            let until = crate::model::time::later("lease", now, lease_ms)?;
            let key = crate::storage::sqlite::clock::LeaseClock::after(clock, lease_ms);
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET lease_until = ?3, updated_at = ?4, lease_key = ?5
                     WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                )?
                .execute(params![lease.task_id, lease.token, until, now, key])?;
            if n == 1 {
                Ok(until)
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
    use crate::model::claim::ClaimRequest;
    use crate::model::new_task::NewTask;
    use crate::model::task::{Status, TaskRow};
    use crate::storage::sqlite::testutil::file_driver;

    fn claim_one(q: &SqliteDriver, lease_ms: i64) -> TaskRow {
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
    fn a_refused_acknowledgement_reports_what_the_row_says() {
        let (_d, q) = file_driver();
        let id = q.enqueue(&NewTask::new("x", "null")).unwrap();
        let first = claim_one(&q, 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = claim_one(&q, 60_000);
        let taken_over = q.complete(lease(&first), None).unwrap_err();
        assert!(
            matches!(&taken_over, Error::NotHeld { task_id, status, holder }
                if *task_id == id && status == "running" && holder.as_deref() == Some("w1")),
            "{taken_over:?}"
        );
        q.complete(lease(&second), None).unwrap();
        let done = q.renew(lease(&second), 1000).unwrap_err();
        assert!(
            matches!(&done, Error::NotHeld { status, holder: None, .. } if status == "completed"),
            "{done:?}"
        );
        let gone = Lease {
            task_id: id + 1,
            token: 1,
        };
        assert!(matches!(
            q.complete(gone, None),
            Err(Error::TaskNotFound(_))
        ));
    }

    #[test]
    fn failures_back_off_then_dead_letter() {
        let (_d, q) = file_driver();
        let mut t = NewTask::new("x", "null");
        t.max_attempts = 2;
        t.retry = Some(crate::model::retry::RetryOverrides {
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
        let (_d, q) = file_driver();
        q.set_retry_policy(
            "default",
            crate::model::retry::RetryOverrides {
                base: Some(30.0),
                jitter: Some(0.0),
                ..Default::default()
            },
        )
        .unwrap();
        q.enqueue(&NewTask::new("x", "null")).unwrap();
        let a = claim_one(&q, 60_000);
        let before = crate::model::time::now_ms();
        let FailOutcome::Retrying { run_after } = q.fail(lease(&a), "e", true).unwrap() else {
            panic!("should retry")
        };
        let delay = run_after - before;
        assert!((29_900..=30_500).contains(&delay), "delay {delay}");
    }

    #[test]
    fn release_hands_back_without_counting() {
        let (_d, q) = file_driver();
        let id = q.enqueue(&NewTask::new("x", "null")).unwrap();
        let a = claim_one(&q, 60_000);
        assert!(q.release(lease(&a)).unwrap());
        let row = q.get(id).unwrap();
        assert_eq!((row.status, row.attempts), (Status::Queued, 0));
    }

    #[test]
    fn batch_acks_report_lost_leases_per_item() {
        let (_d, q) = file_driver();
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
    use crate::model::claim::ClaimRequest;
    use crate::model::new_task::NewTask;
    use crate::model::task::Status;
    use crate::storage::sqlite::testutil::file_driver;

    #[test]
    fn settle_acknowledges_and_claims_in_one_go() {
        let (_d, q) = file_driver();
        for _ in 0..4 {
            q.enqueue(&NewTask::new("x", "null")).unwrap();
        }
        let mut req = ClaimRequest::new("w");
        req.limit = 2;
        let first = q.settle(&[], &[], Some(&req)).unwrap().claimed;
        assert_eq!(first.len(), 2);
        let l = |t: &crate::model::task::TaskRow| Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        };
        let out = q
            .settle(
                &[(l(&first[0]), Some("1".into()))],
                &[Failure::new(l(&first[1]), "boom", false)],
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
