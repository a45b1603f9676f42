//! What `metrics()` reports, as types: the keys an operator or a dashboard reads (listed in
//! docs/architecture.md, "Observability"), serialised field by field in this order.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// When the snapshot was taken, ms since the epoch (UTC).
    pub at: i64,
    /// Tasks by status (as `stats()`).
    pub depth: BTreeMap<&'static str, i64>,
    pub total: i64,
    pub scheduled: i64,
    pub oldest_queued_age_seconds: Option<f64>,
    pub by_queue: BTreeMap<String, Depth>,
    pub by_type: BTreeMap<String, Depth>,
    pub by_queue_and_type: BTreeMap<String, BTreeMap<String, Depth>>,
    /// Queued tasks that already spent an attempt (waiting for their retry).
    pub retrying: i64,
    pub window: Window,
    pub workers: WorkerCounts,
    pub lock_contention: LockContention,
    pub database: DatabaseFigures,
    /// What this process's background checkpointer last did; None before its first run.
    pub checkpoint: Option<CheckpointFigures>,
}

/// Queued, running and waiting-to-retry counts of one group (a queue, a type, or both).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Depth {
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
}

impl Depth {
    pub fn add(&mut self, other: &Depth) {
        self.queued += other.queued;
        self.running += other.running;
        self.retrying += other.retrying;
    }
}

/// Outcomes, rates and processing times over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub seconds: f64,
    /// Start of the window, ms since the epoch (UTC).
    pub since: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// None when nothing completed or failed in the window.
    pub success_ratio: Option<f64>,
    pub failure_ratio: Option<f64>,
    pub completed_per_second: f64,
    pub failed_per_second: f64,
    pub throughput_per_second: f64,
    pub retried: Retried,
    pub processing_seconds: Summary,
    pub processing_seconds_by_type: BTreeMap<String, Summary>,
    pub sample: Sample,
}

/// Finished tasks of the sample that needed more than one attempt.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Retried {
    pub completed: i64,
    pub failed: i64,
}

/// Percentiles by nearest rank, in seconds; None for an empty sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
    pub max: Option<f64>,
}

/// How many finished tasks the processing times were taken from.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub size: usize,
    pub limit: i64,
    /// Every task finished in the window is in the sample.
    pub complete: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct WorkerCounts {
    pub active: usize,
    pub stale: usize,
}

/// Waits for the write lock in this process since it started.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LockContention {
    pub busy_retries: u64,
    pub busy_wait_seconds: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct DatabaseFigures {
    pub size_bytes: i64,
    pub page_size: i64,
    /// The write-ahead log (a SQLite capability: `Capabilities::wal_figures`).
    pub wal_bytes: u64,
    pub wal_frames: Option<i64>,
    pub wal_frames_pending: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckpointFigures {
    pub at: i64,
    pub seconds_ago: f64,
    /// It could not run (another connection was checkpointing).
    pub busy: bool,
    pub wal_frames: i64,
    pub checkpointed_frames: i64,
}
