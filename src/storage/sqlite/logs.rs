//! Per-task logs: state changes the core records (retries, dead letters, rescues, cancels) and
//! whatever handlers log.

use crate::model::error::{Error, Result};
use crate::model::observe::LogRow;
use crate::model::time::now_ms;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::params;

/// One line of a task's log inside the caller's write transaction: the core's own record of a
/// state change (a retry, a dead letter, a rescue, a cancel).
pub(crate) fn log_in(
    tx: &WriteTx,
    task_id: i64,
    at: i64,
    level: &str,
    message: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO task_logs (task_id, at, level, message) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![task_id, at, level, message])?;
    Ok(())
}

impl SqliteDriver {
    /// `level` is one of `LEVELS` (lower case), checked above (`observe::log_level`).
    pub fn log(
        &self,
        task_id: i64,
        level: &str,
        message: &str,
        details: Option<&str>,
    ) -> Result<i64> {
        self.db.write(|tx| {
            let found = tx
                .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?
                .exists([task_id])?;
            if !found {
                return Err(Error::TaskNotFound(task_id));
            }
            tx.prepare_cached("INSERT INTO task_logs (task_id, at, level, message, details) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![task_id, now_ms(), level, message, details])?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// The task's log lines, oldest first, at most `limit` (checked above: `check_log_limit`).
    pub fn logs(&self, task_id: i64, limit: i64) -> Result<Vec<LogRow>> {
        self.db.read(|c| {
            if !c.prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?.exists([task_id])? {
                return Err(Error::TaskNotFound(task_id));
            }
            let mut stmt = c.prepare_cached(
                "SELECT id, task_id, at, level, message, details FROM task_logs WHERE task_id = ?1 ORDER BY id LIMIT ?2",
            )?;
            // Leniently: a damaged line (a column of the wrong type) must not hide the others.
            let rows = stmt.query_map(params![task_id, limit], |r| {
                let text = |i: usize| r.get::<_, Option<String>>(i).unwrap_or(None);
                Ok(LogRow {
                    id: r.get(0)?,
                    task_id,
                    at: r.get(2).unwrap_or(crate::model::time::MIN_TIME_MS),
                    level: text(3).unwrap_or_default(),
                    message: text(4).unwrap_or_default(),
                    details: text(5),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}
