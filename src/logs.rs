//! Per-task logs: state changes the core records (retries, dead letters, rescues, cancels) and
//! whatever handlers log.

use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::time::now_ms;
use rusqlite::params;

pub const LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub id: i64,
    pub task_id: i64,
    pub at: i64,
    pub level: String,
    pub message: String,
    /// JSON text.
    pub details: Option<String>,
}

impl Queue {
    pub fn log(
        &self,
        task_id: i64,
        level: &str,
        message: &str,
        details: Option<&str>,
    ) -> Result<i64> {
        let level = level.to_ascii_lowercase();
        if !LEVELS.contains(&level.as_str()) {
            return Err(Error::invalid(format!(
                "unknown log level {level:?}: use one of {}",
                LEVELS.join(", ")
            )));
        }
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

    /// The task's log lines, oldest first, at most `limit`.
    pub fn logs(&self, task_id: i64, limit: i64) -> Result<Vec<LogRow>> {
        if limit < 1 {
            return Err(Error::invalid(format!(
                "limit must be at least 1, got {limit}"
            )));
        }
        self.db.read(|c| {
            if !c.prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?.exists([task_id])? {
                return Err(Error::TaskNotFound(task_id));
            }
            let mut stmt = c.prepare_cached(
                "SELECT id, task_id, at, level, message, details FROM task_logs WHERE task_id = ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![task_id, limit], |r| {
                Ok(LogRow {
                    id: r.get(0)?,
                    task_id: r.get(1)?,
                    at: r.get(2)?,
                    level: r.get(3)?,
                    message: r.get(4)?,
                    details: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}
