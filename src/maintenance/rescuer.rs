//! The rescuer: tasks whose lease expired (their worker crashed, hung or lost the machine) go
//! back to the queue, or to the dead letter when that attempt was their last. The attempt that
//! expired counts. It runs inside every claim (one probe of a partial index, usually empty) and
//! on demand through `sweep()`.

use crate::ack::log_in;
use crate::claim::race::Race;
use crate::db::WriteTx;
use crate::error::Result;
use crate::queue::Queue;
use crate::time::now_ms;
use rusqlite::params;

impl Queue {
    pub(crate) fn rescue_expired_in(&self, tx: &WriteTx, now: i64) -> Result<usize> {
        let expired: Vec<(i64, i64, i64, i64, Option<String>)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, attempts, max_attempts, priority, locked_by FROM tasks INDEXED BY tasks_lease
                 WHERE status = 'running' AND lease_until < ?1",
            )?;
            let rows = stmt.query_map([now], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if expired.is_empty() {
            return Ok(0);
        }
        let race = Race::read(tx)?;
        let mut moved: Vec<String> = Vec::new();
        for (id, attempts, max_attempts, priority, by) in &expired {
            let who = by.as_deref().unwrap_or("unknown worker");
            if attempts >= max_attempts {
                let msg = format!("lease expired on attempt {attempts} of {max_attempts} (worker {who} stopped renewing it): dead letter");
                tx.prepare_cached(
                    "UPDATE tasks SET status = 'failed', error = ?2, finished_at = ?3, updated_at = ?3,
                            lease_until = NULL, lease_token = NULL WHERE id = ?1",
                )?
                .execute(params![id, msg, now])?;
                log_in(tx, *id, now, "error", &msg)?;
                if moved.len() < 10 {
                    moved.push(format!(
                        "task {id} of {who}: dead letter (attempt {attempts} of {max_attempts})"
                    ));
                }
            } else {
                let msg = format!("lease expired on attempt {attempts} of {max_attempts} (worker {who} stopped renewing it): re-queued");
                tx.prepare_cached(
                    "UPDATE tasks SET status = 'queued', run_after = ?3, wkey = ?4, error = ?2, updated_at = ?3,
                            lease_until = NULL, lease_token = NULL WHERE id = ?1",
                )?
                .execute(params![id, msg, now, race.key(*priority)])?;
                log_in(tx, *id, now, "warning", &msg)?;
                if moved.len() < 10 {
                    moved.push(format!(
                        "task {id} of {who}: re-queued (attempt {attempts} of {max_attempts})"
                    ));
                }
            }
        }
        // One record per rescue pass, however many tasks it moved. It is logged inside the
        // claim's transaction (the claim owns the commit), and with the Python bridge a record
        // takes the GIL; that cannot deadlock: no thread ever holds the GIL while it waits for
        // the write lock or a connection (the binding releases the GIL around every core call),
        // so the GIL holder always lets go. It only delays this rare transaction by a GIL switch.
        log::warn!(
            target: "prismq_queue::core::rescuer",
            "{} expired lease(s) rescued (their workers stopped renewing them): {}{}",
            expired.len(),
            moved.join("; "),
            if expired.len() > moved.len() { "; ..." } else { "" }
        );
        Ok(expired.len())
    }

    /// Put every task whose lease has expired back in the queue (or in the dead letter when its
    /// attempts are spent). Returns how many tasks it moved.
    pub fn sweep(&self) -> Result<usize> {
        self.db.write(|tx| self.rescue_expired_in(tx, now_ms()))
    }

    /// Hand a lease back without counting the attempt (graceful shutdown): the task is queued
    /// again at once. Returns false when this claim no longer held it.
    pub fn release(&self, lease: crate::ack::Lease) -> Result<bool> {
        self.db.write(|tx| {
            let now = now_ms();
            let priority: Option<i64> = tx
                .query_row(
                    "SELECT priority FROM tasks WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                    params![lease.task_id, lease.token],
                    |r| r.get(0),
                )
                .ok();
            let Some(priority) = priority else { return Ok(false) };
            tx.prepare_cached(
                "UPDATE tasks SET status = 'queued', attempts = max(attempts - 1, 0), run_after = ?2, wkey = ?3,
                        updated_at = ?2, lease_until = NULL, lease_token = NULL WHERE id = ?1",
            )?
            .execute(params![lease.task_id, now, Race::read(tx)?.key(priority)])?;
            log_in(tx, lease.task_id, now, "info", "lease handed back by its worker (shutdown); attempt not counted")?;
            Ok(true)
        })
    }
}
