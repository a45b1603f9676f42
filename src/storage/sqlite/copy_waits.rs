//! `copy` on SQLite of what tasks wait on: `task_dependencies` and `task_holds`, walked after
//! the tasks (their rows reference them). A held task is copied as it is (queued, due at
//! `HELD_UNTIL`); its hold carries how many dependencies it still awaits and its own due time,
//! so the completion of its last dependency on the destination releases it there, as it would
//! have on the source. Without the hold it would stay held for good.

use crate::model::copy::{conflict, CopyHold, CopyRows, CopyTable};
use crate::model::error::Result;
use crate::storage::sqlite::copy_batch::{all, Writing};
use rusqlite::{params, Connection, OptionalExtension, Row};

fn hold(r: &Row) -> rusqlite::Result<CopyHold> {
    Ok(CopyHold {
        task_id: r.get(0)?,
        waiting: r.get(1)?,
        run_anyway: r.get(2)?,
        due: r.get(3)?,
    })
}

/// Dependencies after (task_id, after_id) = (`a`, `b`), in key order.
pub(super) fn export_dependencies(c: &Connection, a: i64, b: i64, limit: i64) -> Result<CopyRows> {
    Ok(CopyRows::Dependencies(all(
        c,
        "SELECT task_id, after_id FROM task_dependencies WHERE (task_id, after_id) > (?1, ?2)
         ORDER BY task_id, after_id LIMIT ?3",
        params![a, b, limit],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?))
}

/// Holds of tasks after `a`, in id order.
pub(super) fn export_holds(c: &Connection, a: i64, limit: i64) -> Result<CopyRows> {
    Ok(CopyRows::Holds(all(
        c,
        "SELECT task_id, waiting, run_anyway, due FROM task_holds WHERE task_id > ?1
         ORDER BY task_id LIMIT ?2",
        params![a, limit],
        hold,
    )?))
}

/// An edge is its whole key: it is there or not, never held differently.
pub(super) fn import_dependencies(
    c: &Connection,
    w: Option<&Writing>,
    edges: &[(i64, i64)],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    for &(task_id, after_id) in edges {
        let held = c
            .prepare_cached("SELECT 1 FROM task_dependencies WHERE task_id = ?1 AND after_id = ?2")?
            .query_row([task_id, after_id], |_| Ok(()))
            .optional()?
            .is_some();
        if let (false, Some(w)) = (held, w) {
            w.tx.prepare_cached(
                "INSERT INTO task_dependencies (task_id, after_id) VALUES (?1, ?2)",
            )?
            .execute([task_id, after_id])?;
        }
        count(held);
    }
    Ok(())
}

pub(super) fn import_holds(
    c: &Connection,
    w: Option<&Writing>,
    holds: &[CopyHold],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    for h in holds {
        let held = c
            .prepare_cached(
                "SELECT task_id, waiting, run_anyway, due FROM task_holds WHERE task_id = ?1",
            )?
            .query_row([h.task_id], hold)
            .optional()?;
        match (&held, w) {
            (Some(x), _) if x != h => {
                let what = "how many dependencies it awaits, or its due time";
                return Err(conflict(CopyTable::Holds, h.task_id, what));
            }
            (None, Some(w)) => {
                w.tx.prepare_cached(
                    "INSERT INTO task_holds (task_id, waiting, run_anyway, due)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![h.task_id, h.waiting, h.run_anyway, h.due])?;
            }
            _ => {}
        }
        count(held.is_some());
    }
    Ok(())
}
