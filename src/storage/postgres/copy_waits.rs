//! `copy` on PostgreSQL of what tasks wait on: `task_dependencies` and `task_holds`, walked after
//! the tasks (their rows reference them), as on SQLite (see `storage::sqlite::copy_waits`): a
//! held task keeps its hold, so the completion of its last dependency on the destination
//! releases it there. There can be as many rows as tasks, so a batch is one look-up and one
//! insert (arrays unnested), not a round trip per row.

use crate::model::copy::{conflict, CopyHold, CopyRows, CopyTable};
use crate::model::error::Result;
use crate::storage::postgres::statements::Tx;
use postgres::Row;
use std::collections::{HashMap, HashSet};

fn hold(r: &Row) -> Result<CopyHold> {
    Ok(CopyHold {
        task_id: r.try_get(0)?,
        waiting: r.try_get(1)?,
        run_anyway: r.try_get(2)?,
        due: r.try_get(3)?,
    })
}

/// Dependencies after (task_id, after_id) = (`a`, `b`), in key order.
pub(super) fn export_dependencies(tx: &mut Tx, a: i64, b: i64, limit: i64) -> Result<CopyRows> {
    let rows = tx.query(
        "SELECT task_id, after_id FROM task_dependencies WHERE (task_id, after_id) > ($1, $2)
         ORDER BY task_id, after_id LIMIT $3",
        &[&a, &b, &limit],
    )?;
    let edges = rows
        .iter()
        .map(|r| -> Result<(i64, i64)> { Ok((r.try_get(0)?, r.try_get(1)?)) });
    Ok(CopyRows::Dependencies(edges.collect::<Result<_>>()?))
}

/// Holds of tasks after `a`, in id order.
pub(super) fn export_holds(tx: &mut Tx, a: i64, limit: i64) -> Result<CopyRows> {
    let rows = tx.query(
        "SELECT task_id, waiting, run_anyway, due FROM task_holds WHERE task_id > $1
         ORDER BY task_id LIMIT $2",
        &[&a, &limit],
    )?;
    Ok(CopyRows::Holds(
        rows.iter().map(hold).collect::<Result<_>>()?,
    ))
}

/// An edge is its whole key: it is there or not, never held differently.
pub(super) fn import_dependencies(
    tx: &mut Tx,
    writing: bool,
    edges: &[(i64, i64)],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    let (tasks, afters): (Vec<i64>, Vec<i64>) = edges.iter().copied().unzip();
    let held: HashSet<(i64, i64)> = tx
        .query(
            "SELECT task_id, after_id FROM task_dependencies
             WHERE (task_id, after_id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))",
            &[&tasks, &afters],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (mut new_tasks, mut new_afters) = (Vec::new(), Vec::new());
    for edge in edges {
        let there = held.contains(edge);
        if !there {
            new_tasks.push(edge.0);
            new_afters.push(edge.1);
        }
        count(there);
    }
    if writing && !new_tasks.is_empty() {
        tx.execute(
            "INSERT INTO task_dependencies (task_id, after_id)
             SELECT * FROM unnest($1::bigint[], $2::bigint[])",
            &[&new_tasks, &new_afters],
        )?;
    }
    Ok(())
}

pub(super) fn import_holds(
    tx: &mut Tx,
    writing: bool,
    holds: &[CopyHold],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    let ids: Vec<i64> = holds.iter().map(|h| h.task_id).collect();
    let held: HashMap<i64, CopyHold> = tx
        .query(
            "SELECT task_id, waiting, run_anyway, due FROM task_holds WHERE task_id = ANY($1)",
            &[&ids],
        )?
        .iter()
        .map(|r| hold(r).map(|h| (h.task_id, h)))
        .collect::<Result<_>>()?;
    let mut new: Vec<&CopyHold> = Vec::new();
    for h in holds {
        match held.get(&h.task_id) {
            Some(x) if x != h => {
                let what = "how many dependencies it awaits, or its due time";
                return Err(conflict(CopyTable::Holds, h.task_id, what));
            }
            Some(_) => {}
            None => new.push(h),
        }
        count(held.contains_key(&h.task_id));
    }
    if writing && !new.is_empty() {
        let ids: Vec<i64> = new.iter().map(|h| h.task_id).collect();
        let waiting: Vec<i64> = new.iter().map(|h| h.waiting).collect();
        let run_anyway: Vec<bool> = new.iter().map(|h| h.run_anyway).collect();
        let due: Vec<i64> = new.iter().map(|h| h.due).collect();
        tx.execute(
            "INSERT INTO task_holds (task_id, waiting, run_anyway, due)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::boolean[], $4::bigint[])",
            &[&ids, &waiting, &run_anyway, &due],
        )?;
    }
    Ok(())
}
