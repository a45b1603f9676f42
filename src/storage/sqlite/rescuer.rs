//! The rescuer: tasks whose lease expired (their worker crashed, hung or lost the machine) go
//! back to the queue, or to the dead letter when that attempt was their last. The attempt that
//! expired counts. It runs inside claims (one probe of a partial index, usually empty; skipped
//! while the claiming handle knows no lease can have ended yet, see `claim::heads`) and on demand
//! through `sweep()`. Leases end on the lease clock (`clock`): steps of the wall clock move none.
//! Which rows expired is this module's; what becomes of each, and the words of the pass's log
//! record, are the engine's (`storage::Rules`), as is what a hand-back (`release`) makes of a row.

use crate::model::attempt::{Outcome, Running};
use crate::model::error::Result;
use crate::model::lease::{ExpiredAttempt, FailOutcome, ReleasedAttempt};
use crate::model::time::now_ms;
use crate::storage::sqlite::claim::race::Race;
use crate::storage::sqlite::clock::Now;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::logs::log_in;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::params;

#[cfg(test)]
thread_local! {
    /// Rescue probes (walks of `tasks_lease`) this thread's transactions made.
    pub(crate) static RESCUE_PROBES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Running tasks in the order their leases end (those without a lease key first).
const RESCUE_SQL: &str = "SELECT id, attempts, max_attempts, priority, locked_by, lease_key, lease_until, started_at
                          FROM tasks INDEXED BY tasks_lease WHERE status = 'running' ORDER BY lease_key";

/// A running task whose lease has ended, as the rescue walk read it (and its priority, for
/// the race key of a retry).
struct Expired {
    attempt: Running,
    priority: i64,
}

impl SqliteDriver {
    /// Put back every task whose lease ended before `clock`. Returns how many it moved, and the
    /// lease key of the earliest lease still running (`i64::MAX` when none is running): until
    /// then no rescue can find anything (see `claim::heads`).
    pub(crate) fn rescue_expired_in(&self, tx: &WriteTx, clock: Now) -> Result<(usize, i64)> {
        #[cfg(test)]
        RESCUE_PROBES.with(|n| n.set(n.get() + 1));
        let now = clock.wall;
        let mut expired: Vec<Expired> = Vec::new();
        let mut next_end = i64::MAX;
        {
            // In lease order: the expired ones, then the first still running tells when the
            // next lease ends. One walk of the index, as far as the first live lease. A lease
            // without a key (taken by a build from before the lease clock, during an upgrade;
            // they come first) ends by its wall-clock time, as it did for that build.
            let mut stmt = tx.prepare_cached(RESCUE_SQL)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let key: Option<i64> = r.get(5).unwrap_or(None);
                match key {
                    Some(key) if key >= clock.key => {
                        next_end = next_end.min(key);
                        break;
                    }
                    Some(_) => {}
                    None => match r.get::<_, Option<i64>>(6).unwrap_or(None) {
                        Some(until) if until < now => {}
                        Some(until) => {
                            let left = until.saturating_sub(now);
                            next_end = next_end.min(clock.key.saturating_add(left));
                            continue;
                        }
                        None => continue,
                    },
                }
                expired.push(Expired {
                    attempt: Running {
                        task_id: r.get(0)?,
                        attempts: r.get(1)?,
                        max_attempts: r.get(2)?,
                        worker: r.get(4)?,
                        started_at: r.get(7).unwrap_or(None),
                    },
                    priority: r.get(3)?,
                });
            }
        }
        if expired.is_empty() {
            return Ok((0, next_end));
        }
        let mut race = None;
        let mut moved: Vec<(ExpiredAttempt<'_>, FailOutcome)> = Vec::with_capacity(expired.len());
        for e in &expired {
            let attempt = e.attempt.expired(now);
            let verdict = self.rules.after_lease_expired(&attempt);
            let id = attempt.task_id;
            Self::apply_verdict(tx, &mut race, (id, e.priority), &verdict, now)?;
            // The lost attempt's record, beside the row's update (see `attempts`).
            let ended = e.attempt.ended(Outcome::LeaseExpired, &verdict.error, None);
            crate::storage::sqlite::attempts::record_in(tx, &ended, now)?;
            moved.push((attempt, verdict.outcome));
        }
        // One record per rescue pass, however many tasks it moved. It is logged inside the
        // claim's transaction (the claim owns the commit), and with the Python bridge a record
        // takes the GIL; that cannot deadlock: no thread ever holds the GIL while it waits for
        // the write lock or a connection (the binding releases the GIL around every core call),
        // so the GIL holder always lets go. It only delays this rare transaction by a GIL switch.
        // The words are the engine's (`Rules::rescue_summary`).
        log::warn!(
            target: "prismq_queue::core::rescuer",
            "{}",
            self.rules.rescue_summary(&moved)
        );
        Ok((expired.len(), next_end))
    }

    /// Put every task whose lease has expired back in the queue (or in the dead letter when its
    /// attempts are spent). Returns how many tasks it moved.
    pub fn sweep(&self) -> Result<usize> {
        self.db
            .write(|tx| Ok(self.rescue_expired_in(tx, self.now(tx)?)?.0))
    }

    /// Hand a lease back without counting the attempt (graceful shutdown): the task is queued
    /// again at once. Returns false when this claim no longer held it.
    pub fn release(&self, lease: crate::model::lease::Lease) -> Result<bool> {
        self.db.write(|tx| {
            let now = now_ms();
            let held: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT priority, attempts FROM tasks WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                    params![lease.task_id, lease.token],
                    // Leniently: a damaged count must not keep the task from going back.
                    |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1).unwrap_or(None).unwrap_or(0))),
                )
                .ok();
            let Some((priority, attempts)) = held else { return Ok(false) };
            // Whether the attempt counts, and what the log says, are the engine's.
            let v = self.rules.after_release(&ReleasedAttempt {
                task_id: lease.task_id,
                attempts,
                now,
            });
            tx.prepare_cached(
                "UPDATE tasks SET status = 'queued', attempts = ?4, run_after = ?2, wkey = ?3,
                        updated_at = ?5, lease_until = NULL, lease_token = NULL, lease_key = NULL WHERE id = ?1",
            )?
            .execute(params![lease.task_id, v.run_after, Race::read(tx)?.key(priority), v.attempts, now])?;
            log_in(tx, lease.task_id, now, v.log_level, v.log_message)?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::sqlite::testutil::file_driver;

    #[test]
    fn the_rescue_probe_walks_tasks_lease_in_lease_key_order() {
        let (_d, q) = file_driver();
        let plan: Vec<String> =
            q.db.read(|c| {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {}", super::RESCUE_SQL))?;
                let rows = st.query_map([], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .unwrap();
        let joined = plan.join("\n");
        assert!(joined.contains("USING INDEX tasks_lease"), "{joined}");
        assert!(!joined.contains("TEMP B-TREE"), "{joined}");
    }
}
