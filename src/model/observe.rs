//! Task logs and worker heartbeats as stored and shown.

pub const LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

/// The most log lines one `logs` call returns.
pub const MAX_LOG_LIMIT: i64 = 1_000_000;

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
}

/// The default window of `metrics()`: five minutes.
pub const DEFAULT_WINDOW_MS: i64 = 300_000;
