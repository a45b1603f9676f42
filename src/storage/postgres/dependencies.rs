//! Task dependencies on PostgreSQL (see `model::dependencies`), as on SQLite: the edges and
//! holds an enqueue writes, and what a task's end for good does to the tasks held on it, in the
//! transaction that ends it. An acknowledgement statement costs one probe of `task_dependents`
//! for all its tasks.
//!
//! Races (READ COMMITTED): an enqueue locks each dependency's row `FOR SHARE` before reading its
//! status, so a completion of that row either committed first (the enqueue sees it completed)
//! or waits for the enqueue's commit, and its probe (a later statement, a newer snapshot) then
//! sees the new edges. Two dependencies ending at once decrement the hold under its row lock.

use crate::model::dependencies::{self, Ending, HoldStore, Waits, HELD_UNTIL};
use crate::model::error::Result;
use crate::model::new_task::NewTask;
use crate::storage::postgres::logs::log_in;
use crate::storage::postgres::statements::Tx;

/// Write the dependencies of the tasks just inserted as `ids` (see `model::dependencies`).
pub(crate) fn hold_new(
    tx: &mut Tx,
    tasks: &[NewTask],
    ids: &[i64],
    fresh: &[bool],
    now: i64,
) -> Result<()> {
    dependencies::hold_new(&mut Holds { tx, now }, tasks, ids, fresh)
}

/// `hold_new`'s reads and writes on PostgreSQL.
struct Holds<'a, 'b> {
    tx: &'a mut Tx<'b>,
    now: i64,
}

impl HoldStore for Holds<'_, '_> {
    fn dependency(&mut self, dep: i64) -> Result<Option<(String, Option<String>)>> {
        // FOR SHARE: a completion of `dep` waits for this enqueue's commit (see above).
        let row = self.tx.query_opt(
            "SELECT status, error FROM tasks WHERE id = $1 FOR SHARE",
            &[&dep],
        )?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    fn add_edge(&mut self, id: i64, dep: i64) -> Result<()> {
        self.tx.execute(
            "INSERT INTO task_dependencies (task_id, after_id) VALUES ($1, $2)",
            &[&id, &dep],
        )?;
        Ok(())
    }

    fn cancel(&mut self, id: i64, reason: &str) -> Result<()> {
        cancel_held(self.tx, id, reason, self.now)?;
        Ok(())
    }

    fn hold(&mut self, id: i64, waiting: i64, run_anyway: bool) -> Result<()> {
        self.tx.execute(
            "INSERT INTO task_holds (task_id, waiting, run_anyway, due)
             SELECT id, $2, $3, run_after FROM tasks WHERE id = $1",
            &[&id, &waiting, &run_anyway],
        )?;
        self.tx.execute(
            "UPDATE tasks SET run_after = $2 WHERE id = $1",
            &[&id, &HELD_UNTIL],
        )?;
        Ok(())
    }
}

/// A held (or just enqueued) task cancelled because of a dependency; true when it was queued.
fn cancel_held(tx: &mut Tx, id: i64, reason: &str, now: i64) -> Result<bool> {
    let n = tx.execute(
        "UPDATE tasks SET status = 'cancelled', error = $2, finished_at = $3, updated_at = $3
         WHERE id = $1 AND status = 'queued'",
        &[&id, &reason, &now],
    )?;
    if n == 1 {
        log_in(tx, id, now, "warning", &format!("cancelled: {reason}"))?;
    }
    Ok(n == 1)
}

/// Tasks `ids` ended for good (`ending` of each): release the tasks held on them whose last
/// dependency this was (their lanes notified at commit), cancel those they doom, and theirs.
pub(crate) fn ended(tx: &mut Tx, ended: Vec<(i64, Ending)>, now: i64) -> Result<()> {
    if ended.is_empty() {
        return Ok(());
    }
    let mut work = ended;
    while !work.is_empty() {
        let ids: Vec<i64> = work.iter().map(|(id, _)| *id).collect();
        let edges: Vec<(i64, i64)> = tx
            .query(
                "SELECT after_id, task_id FROM task_dependencies WHERE after_id = ANY($1)
                 ORDER BY task_id",
                &[&ids],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut next = Vec::new();
        for (after, d) in edges {
            let ending = &work.iter().find(|(id, _)| *id == after).unwrap().1;
            let Some(hold) = tx.query_opt(
                "SELECT run_anyway FROM task_holds WHERE task_id = $1 FOR UPDATE",
                &[&d],
            )?
            else {
                continue; // released, cancelled, or never held
            };
            let run_anyway: bool = hold.get(0);
            if *ending == Ending::Completed || run_anyway {
                let left = tx.query_one(
                    "UPDATE task_holds SET waiting = waiting - 1 WHERE task_id = $1
                     RETURNING waiting, due",
                    &[&d],
                )?;
                if left.get::<_, i64>(0) <= 0 {
                    release(tx, d, left.get(1), now)?;
                }
            } else {
                tx.execute("DELETE FROM task_holds WHERE task_id = $1", &[&d])?;
                let reason = ending.reason(after);
                if cancel_held(tx, d, &reason, now)? {
                    next.push((d, Ending::Cancelled(Some(reason))));
                }
            }
        }
        work = next;
    }
    Ok(())
}

/// Every dependency of `id` is met: due at its own time again, its lane told at commit.
fn release(tx: &mut Tx, id: i64, due: i64, now: i64) -> Result<()> {
    tx.execute("DELETE FROM task_holds WHERE task_id = $1", &[&id])?;
    let row = tx.query_opt(
        "UPDATE tasks SET run_after = greatest($2::bigint, $3::bigint), updated_at = $3
         WHERE id = $1 AND status = 'queued' RETURNING lane_id",
        &[&id, &due, &now],
    )?;
    if let Some(row) = row {
        tx.claimable.push(row.get(0));
        log_in(tx, id, now, "info", "released: every dependency is met")?;
    }
    Ok(())
}

/// A task cancelled by hand: it waits on nothing any more, and what waited on it follows.
pub(crate) fn cancelled(tx: &mut Tx, id: i64, now: i64) -> Result<()> {
    tx.execute("DELETE FROM task_holds WHERE task_id = $1", &[&id])?;
    ended(tx, vec![(id, Ending::Cancelled(None))], now)
}

/// What task `id` waits on, for `get`.
pub(crate) fn waits(tx: &mut Tx, id: i64) -> Result<Waits> {
    let held = tx
        .query_opt("SELECT 1 FROM task_holds WHERE task_id = $1", &[&id])?
        .is_some();
    let rows: Vec<(i64, Option<String>)> = tx
        .query(
            "SELECT d.after_id, t.status FROM task_dependencies d
             LEFT JOIN tasks t ON t.id = d.after_id
             WHERE d.task_id = $1 ORDER BY d.after_id",
            &[&id],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let waiting_on = rows
        .iter()
        .filter(|(_, s)| held && matches!(s.as_deref(), Some("queued" | "running")))
        .map(|(a, _)| *a)
        .collect();
    Ok(Waits {
        after: rows.into_iter().map(|(a, _)| a).collect(),
        waiting_on,
    })
}
