//! Task logs and worker heartbeats as stored and shown, and the checks of their arguments.

use crate::model::error::{Error, Result};

pub const LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

/// The most log lines one `logs` call returns.
pub const MAX_LOG_LIMIT: i64 = 1_000_000;

/// A log level as the task's log stores it (lower case), or the refusal of an unknown one.
pub fn log_level(level: &str) -> Result<String> {
    let level = level.to_ascii_lowercase();
    if !LEVELS.contains(&level.as_str()) {
        return Err(Error::invalid(format!(
            "unknown log level {level:?}: use one of {}",
            LEVELS.join(", ")
        )));
    }
    Ok(level)
}

/// The check of `logs`' `limit`.
pub fn check_log_limit(limit: i64) -> Result<()> {
    if !(1..=MAX_LOG_LIMIT).contains(&limit) {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_LOG_LIMIT}, got {limit}"
        )));
    }
    Ok(())
}

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

/// The most tasks a worker may say it runs at once.
pub const MAX_CONCURRENCY: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub worker_id: String,
    pub host: Option<String>,
    pub pid: Option<i64>,
    /// JSON object text.
    pub capabilities: Option<String>,
    /// JSON array text, None for every queue.
    pub queues: Option<String>,
    /// Tasks this worker has finished so far (as counted by the worker).
    pub tasks_done: Option<i64>,
    /// How many tasks it runs at once (`GET /queue/status`'s capacity adds them up).
    pub concurrency: Option<i64>,
}

impl Heartbeat {
    pub fn validate(&self) -> Result<()> {
        if self.worker_id.trim().is_empty() {
            return Err(Error::invalid("worker_id must be a non-empty string"));
        }
        if let Some(n) = self.concurrency {
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(Error::invalid(format!(
                    "concurrency must be between 1 and {MAX_CONCURRENCY}, got {n}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: String,
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub capabilities: Option<String>,
    pub queues: Option<String>,
    pub started_at: i64,
    pub last_heartbeat: i64,
    pub tasks_done: i64,
    pub stale: bool,
    /// How many tasks it runs at once, as its last heartbeat said (`None`: not said).
    pub concurrency: Option<i64>,
}

/// The default window of `metrics()`: five minutes.
pub const DEFAULT_WINDOW_MS: i64 = 300_000;
