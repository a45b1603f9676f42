//! A task row as stored, and the states it moves through.
//!
//! queued -> running (claimed, with a lease) -> completed | failed | cancelled.
//! A failed attempt with attempts left goes back to queued after a backoff; `failed` is terminal:
//! the dead letter, which `retry()` can send back to queued.

use crate::error::{Error, Result};
use rusqlite::Row;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<Status> {
        Ok(match s {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            other => {
                return Err(Error::invalid(format!(
                    "unknown status {other:?}: use one of 'queued', 'running', 'completed', 'failed', 'cancelled'"
                )))
            }
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: i64,
    pub task_type: String,
    pub queue: String,
    /// JSON text.
    pub payload: String,
    pub priority: i64,
    pub status: Status,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_after: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub locked_by: Option<String>,
    pub lease_until: Option<i64>,
    pub lease_token: Option<i64>,
    pub error: Option<String>,
    /// JSON text, set when completed.
    pub result: Option<String>,
    pub progress: Option<f64>,
    pub step: Option<String>,
    pub message: Option<String>,
    pub idempotency_key: Option<String>,
    /// JSON object text.
    pub requires: Option<String>,
    pub timeout_ms: Option<i64>,
}

/// The column list every task SELECT/RETURNING uses, in `from_row` order.
pub const COLUMNS: &str = "id, type, queue, payload, priority, status, attempts, max_attempts, run_after, \
     created_at, started_at, finished_at, updated_at, locked_by, lease_until, lease_token, error, result, \
     progress, step, message, idempotency_key, requires, timeout_ms";

impl TaskRow {
    pub fn from_row(r: &Row) -> rusqlite::Result<TaskRow> {
        let status: String = r.get(5)?;
        Ok(TaskRow {
            id: r.get(0)?,
            task_type: r.get(1)?,
            queue: r.get(2)?,
            payload: r.get(3)?,
            priority: r.get(4)?,
            status: Status::parse(&status).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    5,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            attempts: r.get(6)?,
            max_attempts: r.get(7)?,
            run_after: r.get(8)?,
            created_at: r.get(9)?,
            started_at: r.get(10)?,
            finished_at: r.get(11)?,
            updated_at: r.get(12)?,
            locked_by: r.get(13)?,
            lease_until: r.get(14)?,
            lease_token: r.get(15)?,
            error: r.get(16)?,
            result: r.get(17)?,
            progress: r.get(18)?,
            step: r.get(19)?,
            message: r.get(20)?,
            idempotency_key: r.get(21)?,
            requires: r.get(22)?,
            timeout_ms: r.get(23)?,
        })
    }
}
