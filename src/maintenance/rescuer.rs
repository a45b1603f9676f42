//! The rescuer: tasks whose lease expired (their worker crashed, hung or lost the machine) go
//! back to the queue, or to the dead letter when that attempt was their last. The attempt that
//! expired counts. It runs inside claims (one probe of a partial index, usually empty; skipped
//! while the claiming handle knows no lease can have ended yet, see `claim::heads`) and on demand
//! through `sweep()`.

use crate::ack::log_in;
use crate::claim::race::Race;
use crate::db::WriteTx;
use crate::error::Result;
use crate::queue::Queue;
use crate::time::now_ms;
use rusqlite::params;

#[cfg(test)]
thread_local! {
    /// Rescue probes (walks of `tasks_lease`) this thread's transactions made.
    pub(crate) static RESCUE_PROBES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Queue {
    /// Put back every task whose lease ended before `now`. Returns how many it moved, and when
    /// the earliest lease still running ends (`i64::MAX` when none is running): until then no
    /// rescue can find anything (see `claim::heads`).
    pub(crate) fn rescue_expired_in(&self, tx: &WriteTx, now: i64) -> Result<(usize, i64)> {
        #[cfg(test)]
        RESCUE_PROBES.with(|n| n.set(n.get() + 1));
        let mut expired: Vec<(i64, i64, i64, i64, Option<String>)> = Vec::new();
        let mut next_end = i64::MAX;
        {
            // In lease order: the expired ones, then the first still running tells when the
            // next lease ends. One walk of the index, as far as the first live lease.
            let mut stmt = tx.prepare_cached(
                "SELECT id, attempts, max_attempts, priority, locked_by, lease_until
                 FROM tasks INDEXED BY tasks_lease
                 WHERE status = 'running' AND lease_until IS NOT NULL ORDER BY lease_until",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let until: i64 = r.get(5)?;
                if until >= now {
                    next_end = until;
                    break;
                }
                expired.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
            }
        }
        if expired.is_empty() {
            return Ok((0, next_end));
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
        Ok((expired.len(), next_end))
    }

    /// Put every task whose lease has expired back in the queue (or in the dead letter when its
    /// attempts are spent). Returns how many tasks it moved.
    pub fn sweep(&self) -> Result<usize> {
        self.db
            .write(|tx| Ok(self.rescue_expired_in(tx, now_ms())?.0))
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
