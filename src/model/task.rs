//! A task row as stored, and the states it moves through.
//!
//! queued -> running (claimed, with a lease) -> completed | failed | cancelled.
//! A failed attempt with attempts left goes back to queued after a backoff; `failed` is terminal:
//! the dead letter, which `retry()` can send back to queued.

use crate::model::error::{Error, Result};

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

/// The log line of a priority change (`set_priority`), the same on every backend.
pub fn priority_changed(old: i64, new: i64) -> String {
    format!("priority changed from {old} to {new} by set_priority()")
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
    /// The traceback of the last failed attempt (see `attempts`), filled by `get` and
    /// `find_by_idempotency_key` only: listings and claims stay small.
    pub traceback: Option<String>,
    /// What could not be read as stored (a damaged row): one `"field: why"` line per column;
    /// empty for every row the queue wrote itself.
    pub damaged: Vec<String>,
    /// The tasks it was enqueued after, and those it still waits on (`model::dependencies`),
    /// filled by `get` only.
    pub after: Vec<i64>,
    pub waiting_on: Vec<i64>,
}
