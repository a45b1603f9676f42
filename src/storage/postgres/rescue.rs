//! The rescuer: tasks whose lease ended (their worker crashed, hung or lost its host) go back to
//! the queue, or to the dead letter when that attempt was their last; the attempt counts. It runs
//! inside claims (a probe of `tasks_lease`, usually empty) and on demand through `sweep()`, in
//! batches. Leases end on the database's clock. Rows are locked `SKIP LOCKED`: a row another
//! transaction holds (its worker completing it right now, or another rescuer) is left to it.
//! What becomes of each, the pass's log record and a hand-back are the engine's (`storage::Rules`).

use crate::model::attempt::{Outcome, Running};
use crate::model::error::Result;
use crate::model::lease::{ExpiredAttempt, FailOutcome, Lease, ReleasedAttempt};
use crate::storage::postgres::ack::apply_verdict;
use crate::storage::postgres::attempts::record_in;
use crate::storage::postgres::logs::log_in;
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::{db_now, PgDriver};

/// Tasks one transaction of `sweep` puts back at most.
const SWEEP_BATCH: i64 = 500;

impl PgDriver {
    /// Put back up to `limit` tasks whose lease ended before `now`; returns how many.
    pub(crate) fn rescue_expired_in(&self, tx: &mut Tx, now: i64, limit: i64) -> Result<usize> {
        let rows = tx.query(
            "SELECT id, attempts, max_attempts, locked_by, started_at, lane_id FROM tasks
             WHERE status = 'running' AND lease_until < $1
             ORDER BY lease_until
             LIMIT $2
             FOR UPDATE SKIP LOCKED",
            &[&now, &limit],
        )?;
        let expired: Vec<Running> = rows
            .iter()
            .map(|r| Running {
                task_id: r.get(0),
                attempts: r.get(1),
                max_attempts: r.get(2),
                worker: r.get(3),
                started_at: r.get(4),
            })
            .collect();
        let mut moved: Vec<(ExpiredAttempt<'_>, FailOutcome)> = Vec::with_capacity(expired.len());
        for (e, row) in expired.iter().zip(&rows) {
            let attempt = e.expired(now);
            let verdict = self.rules.after_lease_expired(&attempt);
            apply_verdict(tx, e.task_id, &verdict, now)?;
            record_in(
                tx,
                &e.ended(Outcome::LeaseExpired, &verdict.error, None),
                now,
            )?;
            if matches!(verdict.outcome, FailOutcome::Retrying { .. }) {
                self.notify_in(tx, row.get(5))?;
            }
            moved.push((attempt, verdict.outcome));
        }
        if !moved.is_empty() {
            // One record per rescue pass, in the engine's words, as on SQLite.
            log::warn!(
                target: "prismq_queue::core::rescuer",
                "{}",
                self.rules.rescue_summary(&moved)
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

    /// Hand a lease back without counting the attempt (graceful shutdown): what the row keeps
    /// is the engine's (`Rules::after_release`). False when this claim no longer held it.
    pub fn release(&self, lease: Lease) -> Result<bool> {
        self.write(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT attempts, now_ms(), lane_id FROM tasks
                 WHERE id = $1 AND lease_token = $2 AND status = 'running' FOR UPDATE",
                &[&lease.task_id, &lease.token],
            )?
            else {
                return Ok(false);
            };
            let now: i64 = row.get(1);
            let v = self.rules.after_release(&ReleasedAttempt {
                task_id: lease.task_id,
                attempts: row.get(0),
                now,
            });
            tx.execute(
                "UPDATE tasks SET status = 'queued', attempts = $2, run_after = $3, updated_at = $4,
                        lease_until = NULL, lease_token = NULL
                 WHERE id = $1",
                &[&lease.task_id, &v.attempts, &v.run_after, &now],
            )?;
            self.notify_in(tx, row.get(2))?;
            log_in(tx, lease.task_id, now, v.log_level, v.log_message)?;
            Ok(true)
        })
    }
}
