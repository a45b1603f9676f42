//! Task rows as PostgreSQL returns them, read into the model's types. Column types are strict
//! here (bigint, text, double precision), so nothing is read leniently as on SQLite.

use crate::model::error::Result;
use crate::model::task::{Status, TaskRow};
use postgres::Row;

/// The column list every task SELECT/RETURNING uses, in `task_row` order.
pub const COLUMNS: &str = "id, type, queue, payload, priority, status, attempts, max_attempts, run_after, \
     created_at, started_at, finished_at, updated_at, locked_by, lease_until, lease_token, error, result, \
     progress, step, message, idempotency_key, requires, timeout_ms";

/// How many columns `COLUMNS` names: a query may add its own after them.
pub const COLUMN_COUNT: usize = 24;

pub fn task_row(r: &Row) -> Result<TaskRow> {
    let status: String = r.try_get(5)?;
    Ok(TaskRow {
        id: r.try_get(0)?,
        task_type: r.try_get(1)?,
        queue: r.try_get(2)?,
        payload: r.try_get(3)?,
        priority: r.try_get(4)?,
        status: Status::parse(&status)?,
        attempts: r.try_get(6)?,
        max_attempts: r.try_get(7)?,
        run_after: r.try_get(8)?,
        created_at: r.try_get(9)?,
        started_at: r.try_get(10)?,
        finished_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
        locked_by: r.try_get(13)?,
        lease_until: r.try_get(14)?,
        lease_token: r.try_get(15)?,
        error: r.try_get(16)?,
        result: r.try_get(17)?,
        progress: r.try_get(18)?,
        step: r.try_get(19)?,
        message: r.try_get(20)?,
        idempotency_key: r.try_get(21)?,
        requires: r.try_get(22)?,
        timeout_ms: r.try_get(23)?,
        traceback: None,
        damaged: Vec::new(),
        after: Vec::new(),
        waiting_on: Vec::new(),
    })
}

pub fn task_rows(rows: &[Row]) -> Result<Vec<TaskRow>> {
    rows.iter().map(task_row).collect()
}
