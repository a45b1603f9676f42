//! The rescuer: tasks whose lease ended (their worker crashed, hung or lost its host) go back to
//! the queue, or to the dead letter when that attempt was their last; the attempt counts. It runs
//! inside claims (a probe of `tasks_lease`, usually empty) and on demand through `sweep()`, in
//! batches. Leases end on the database's clock. Rows are locked `SKIP LOCKED`: a row another
//! transaction holds (its worker completing it right now, or another rescuer) is left to it.
//! What becomes of each is the engine's verdict (`storage::Rules`).

use crate::model::attempt::Outcome;
use crate::model::error::Result;
use crate::model::lease::{ExpiredAttempt, FailOutcome, Lease};
use crate::storage::postgres::ack::{apply_verdict, log_in};
use crate::storage::postgres::attempts::{record_in, Ended};
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::{db_now, PgDriver};

/// Tasks one transaction of `sweep` puts back at most.
const SWEEP_BATCH: i64 = 500;

impl PgDriver {
    /// Put back up to `limit` tasks whose lease ended before `now`; returns how many.
    pub(crate) fn rescue_expired_in(&self, tx: &mut Tx, now: i64, limit: i64) -> Result<usize> {
        let rows = tx.query(
            "SELECT id, attempts, max_attempts, locked_by, started_at FROM tasks
             WHERE status = 'running' AND lease_until < $1
             ORDER BY lease_until
             LIMIT $2
             FOR UPDATE SKIP LOCKED",
            &[&now, &limit],
        )?;
        let mut moved: Vec<String> = Vec::new();
        for r in &rows {
            let (id, attempts, max_attempts): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            let (by, started_at): (Option<String>, Option<i64>) = (r.get(3), r.get(4));
            let verdict = self.rules.after_lease_expired(&ExpiredAttempt {
                task_id: id,
                attempts,
                max_attempts,
                worker: by.as_deref(),
                now,
            });
            apply_verdict(tx, id, &verdict, now)?;
            record_in(
                tx,
                &Ended {
                    task_id: id,
                    number: attempts,
                    max_attempts,
                    worker: by.as_deref(),
                    started_at,
                    outcome: Outcome::LeaseExpired,
                    error: &verdict.error,
                    traceback: None,
                },
                now,
            )?;
            if moved.len() < 10 {
                let who = by.as_deref().unwrap_or("unknown worker");
                let what = match verdict.outcome {
                    FailOutcome::Retrying { .. } => "re-queued",
                    FailOutcome::DeadLettered => "dead letter",
                };
                moved.push(format!(
                    "task {id} of {who}: {what} (attempt {attempts} of {max_attempts})"
                ));
            }
        }
        if !rows.is_empty() {
            self.notify_in(tx)?;
            // One record per rescue pass, as on SQLite (same target, same words).
            log::warn!(
                target: "prismq_queue::core::rescuer",
                "{} expired lease(s) rescued (their workers stopped renewing them): {}{}",
                rows.len(),
                moved.join("; "),
                if rows.len() > moved.len() { "; ..." } else { "" }
            );
        }
        Ok(rows.len())
    }

    /// Put every task whose lease has ended back in the queue (or in the dead letter), in
    /// batches of one transaction each. Returns how many tasks it moved.
    pub fn sweep(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.write(|tx| {
                let now = db_now(tx)?;
                self.rescue_expired_in(tx, now, SWEEP_BATCH)
            })?;
            total += n;
            if (n as i64) < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    /// Hand a lease back without counting the attempt (graceful shutdown): queued again at
    /// once. False when this claim no longer held it.
    pub fn release(&self, lease: Lease) -> Result<bool> {
        self.write(|tx| {
            let now = db_now(tx)?;
            let n = tx.execute(
                "UPDATE tasks SET status = 'queued', attempts = greatest(attempts - 1, 0), run_after = $3,
                        updated_at = $3, lease_until = NULL, lease_token = NULL
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                &[&lease.task_id, &lease.token, &now],
            )?;
            if n == 0 {
                return Ok(false);
            }
            self.notify_in(tx)?;
            log_in(
                tx,
                lease.task_id,
                now,
                "info",
                "lease handed back by its worker (shutdown); attempt not counted",
            )?;
            Ok(true)
        })
    }
}
