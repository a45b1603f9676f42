//! Acknowledgements from the worker holding a lease: complete, fail, settle, renew, progress.
//! Each is fenced by the lease token the claim handed out (`lease_token = $2 AND status =
//! 'running'`): a worker whose lease expired and was taken over, or whose task was cancelled,
//! changes nothing and learns why. What becomes of a failed attempt is the engine's verdict
//! (`storage::Rules`), applied here in the same transaction, as the SQLite driver does.

use crate::model::attempt::{Outcome, Running};
use crate::model::claim::ClaimRequest;
use crate::model::dependencies::Ending;
use crate::model::error::{Error, Result};
use crate::model::lease::{FailOutcome, Failure, Lease, Settled, Verdict};
use crate::storage::postgres::attempts::record_in;
use crate::storage::postgres::dependencies;
use crate::storage::postgres::logs::log_in;
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::{db_now, PgDriver};

/// What the row says when a fenced update matched none (`Lease::lost`).
pub(crate) fn lease_lost(tx: &mut Tx, lease: Lease) -> Result<Error> {
    let row = tx.query_opt(
        "SELECT status, lease_token, locked_by FROM tasks WHERE id = $1",
        &[&lease.task_id],
    )?;
    Ok(lease.lost(row.map(|r| (r.get(0), r.get(1), r.get(2)))))
}

/// The row's side of a verdict (`storage::Rules`): queued again at its time, or the dead
/// letter; the lease cleared, the error kept, the task's log told.
pub(crate) fn apply_verdict(tx: &mut Tx, task_id: i64, verdict: &Verdict, now: i64) -> Result<()> {
    let error: &str = verdict.error.as_ref();
    match verdict.outcome {
        FailOutcome::Retrying { run_after } => tx.execute(
            "UPDATE tasks SET status = 'queued', run_after = $2, error = $3, updated_at = $4,
                    lease_until = NULL, lease_token = NULL
             WHERE id = $1",
            &[&task_id, &run_after, &error, &now],
        )?,
        FailOutcome::DeadLettered => tx.execute(
            "UPDATE tasks SET status = 'failed', error = $2, finished_at = $3, updated_at = $3,
                    lease_until = NULL, lease_token = NULL
             WHERE id = $1",
            &[&task_id, &error, &now],
        )?,
    };
    if verdict.outcome == FailOutcome::DeadLettered {
        let ending = Ending::Failed(error.to_string());
        dependencies::ended(tx, vec![(task_id, ending)], now)?;
    }
    log_in(tx, task_id, now, verdict.log_level, &verdict.log_message)
}

impl PgDriver {
    fn complete_in(tx: &mut Tx, lease: Lease, result: Option<&str>) -> Result<bool> {
        let row = tx.query_opt(
            "UPDATE tasks SET status = 'completed', result = $3, finished_at = now.ms, updated_at = now.ms,
                    lease_until = NULL, lease_token = NULL, progress = 100.0
             FROM (SELECT now_ms() AS ms) AS now
             WHERE id = $1 AND lease_token = $2 AND status = 'running'
             RETURNING now.ms",
            &[&lease.task_id, &lease.token, &result.unwrap_or("null")],
        )?;
        let Some(row) = row else { return Ok(false) };
        dependencies::ended(tx, vec![(lease.task_id, Ending::Completed)], row.get(0))?;
        Ok(true)
    }

    /// Mark the task completed with `result` (JSON text); `NotHeld` if this claim no longer holds it.
    pub fn complete(&self, lease: Lease, result: Option<&str>) -> Result<()> {
        self.write(|tx| {
            if Self::complete_in(tx, lease, result)? {
                Ok(())
            } else {
                Err(lease_lost(tx, lease)?)
            }
        })
    }

    /// Complete a batch with one statement (a statement per task cost a round trip each: 100
    /// completions took 60 ms on a local server); per item, whether its lease still held. An
    /// item repeated in the batch counts once, as if the items had been applied in turn.
    fn complete_all_in(tx: &mut Tx, items: &[(Lease, Option<String>)]) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = items.iter().map(|(l, _)| l.task_id).collect();
        let tokens: Vec<i64> = items.iter().map(|(l, _)| l.token).collect();
        let results: Vec<&str> = items
            .iter()
            .map(|(_, r)| r.as_deref().unwrap_or("null"))
            .collect();
        let rows = tx.query(
            "UPDATE tasks SET status = 'completed', result = a.result, finished_at = now.ms,
                    updated_at = now.ms, lease_until = NULL, lease_token = NULL, progress = 100.0
             FROM (SELECT DISTINCT ON (id, token) id, token, result
                   FROM unnest($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY AS i (id, token, result, n)
                   ORDER BY id, token, n) AS a,
                  (SELECT now_ms() AS ms) AS now
             WHERE tasks.id = a.id AND tasks.lease_token = a.token AND tasks.status = 'running'
             RETURNING tasks.id, a.token, now.ms",
            &[&ids, &tokens, &results],
        )?;
        if let Some(first) = rows.first() {
            let done = rows.iter().map(|r| (r.get(0), Ending::Completed)).collect();
            dependencies::ended(tx, done, first.get(2))?;
        }
        let mut held: std::collections::HashSet<(i64, i64)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        // The first occurrence of a held (task, token) takes it; a repeat finds it gone.
        Ok(items
            .iter()
            .map(|(l, _)| held.remove(&(l.task_id, l.token)))
            .collect())
    }

    /// Complete many in one transaction; per task, whether this claim still held it.
    pub fn complete_many(&self, items: &[(Lease, Option<String>)]) -> Result<Vec<bool>> {
        self.write(|tx| Self::complete_all_in(tx, items))
    }

    /// Apply the engine's verdict on a failed attempt to the row this lease still holds (locked
    /// first, so a rescue cannot act on it meanwhile); `None` when it holds none.
    fn fail_in(&self, tx: &mut Tx, f: &Failure) -> Result<Option<FailOutcome>> {
        let lease = f.lease;
        let Some(row) = tx.query_opt(
            "SELECT attempts, max_attempts, queue, retry_policy, locked_by, started_at, now_ms(), lane_id
             FROM tasks
             WHERE id = $1 AND lease_token = $2 AND status = 'running'
             FOR UPDATE",
            &[&lease.task_id, &lease.token],
        )?
        else {
            return Ok(None);
        };
        let running = Running {
            task_id: lease.task_id,
            attempts: row.get(0),
            max_attempts: row.get(1),
            worker: row.get(4),
            started_at: row.get(5),
        };
        let (queue, task_policy): (String, Option<String>) = (row.get(2), row.get(3));
        let now: i64 = row.get(6);
        let verdict = self
            .rules
            .after_failure(&running.failed(f, task_policy.as_deref(), now), &mut || {
                Self::queue_policy(tx, &queue)
            })?;
        let ended = running.ended(Outcome::Failed, &verdict.error, f.traceback.as_deref());
        record_in(tx, &ended, now)?;
        apply_verdict(tx, lease.task_id, &verdict, now)?;
        if matches!(verdict.outcome, FailOutcome::Retrying { .. }) {
            self.notify_in(tx, row.get(7))?;
        }
        Ok(Some(verdict.outcome))
    }

    /// The retry policy of `queue` as stored (JSON of `RetryOverrides`), for the engine's rules.
    fn queue_policy(tx: &mut Tx, queue: &str) -> Result<Option<String>> {
        Ok(tx
            .query_opt(
                "SELECT retry_policy FROM queue_config WHERE queue = $1",
                &[&queue],
            )?
            .map(|r| r.get(0)))
    }

    /// Record a failed attempt: queued again after the backoff, or the dead letter.
    pub fn fail_attempt(&self, f: &Failure) -> Result<FailOutcome> {
        self.write(|tx| match self.fail_in(tx, f)? {
            Some(o) => Ok(o),
            None => Err(lease_lost(tx, f.lease)?),
        })
    }

    /// Fail many in one transaction; `None` for a task whose lease was lost.
    pub fn fail_many(&self, items: &[Failure]) -> Result<Vec<Option<FailOutcome>>> {
        self.write(|tx| items.iter().map(|f| self.fail_in(tx, f)).collect())
    }

    /// A worker's whole exchange with the queue in one transaction: acknowledge finished tasks
    /// and claim the next ones.
    pub fn settle(
        &self,
        completes: &[(Lease, Option<String>)],
        fails: &[Failure],
        claim: Option<&ClaimRequest>,
    ) -> Result<Settled> {
        self.write(|tx| {
            let completed = Self::complete_all_in(tx, completes)?;
            let failed = fails
                .iter()
                .map(|f| self.fail_in(tx, f))
                .collect::<Result<Vec<_>>>()?;
            let claimed = match claim {
                Some(req) => {
                    let now = db_now(tx)?;
                    self.claim_in(tx, req, now)?
                }
                None => Vec::new(),
            };
            Ok(Settled {
                completed,
                failed,
                claimed,
            })
        })
    }

    /// Extend the lease to `lease_ms` from now (the database's clock); returns the new expiry.
    pub fn renew(&self, lease: Lease, lease_ms: i64) -> Result<i64> {
        self.write(|tx| {
            let now = db_now(tx)?;
            let until = crate::model::time::later("lease", now, lease_ms)?;
            let n = tx.execute(
                "UPDATE tasks SET lease_until = $3, updated_at = $4
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                &[&lease.task_id, &lease.token, &until, &now],
            )?;
            if n == 1 {
                Ok(until)
            } else {
                Err(lease_lost(tx, lease)?)
            }
        })
    }

    /// Record progress on a running task; only the fields given change.
    pub fn progress(
        &self,
        lease: Lease,
        percent: Option<f64>,
        step: Option<&str>,
        message: Option<&str>,
    ) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE tasks SET progress = coalesce($3, progress), step = coalesce($4, step),
                        message = coalesce($5, message), updated_at = now_ms()
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                &[&lease.task_id, &lease.token, &percent, &step, &message],
            )?;
            if n == 1 {
                Ok(())
            } else {
                Err(lease_lost(tx, lease)?)
            }
        })
    }
}
