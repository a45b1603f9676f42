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
    /// Every limit, as `limits()` gives them; filled by the operations layer.
    pub limits: Vec<crate::model::limits::LimitInfo>,
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

/// Lane depths folded per queue, per type and per queue and type, with the retrying total: the
/// one fold every backend's `metrics` uses.
#[derive(Debug, Default)]
pub struct Depths {
    pub by_queue: BTreeMap<String, Depth>,
    pub by_type: BTreeMap<String, Depth>,
    pub by_queue_and_type: BTreeMap<String, BTreeMap<String, Depth>>,
    pub retrying: i64,
}

impl Depths {
    /// Fold `(queue, type, depth)` of every lane.
    pub fn of_lanes(lanes: &[(String, String, Depth)]) -> Depths {
        let mut d = Depths::default();
        for (q, t, lane) in lanes {
            d.by_queue.entry(q.clone()).or_default().add(lane);
            d.by_type.entry(t.clone()).or_default().add(lane);
            let types = d.by_queue_and_type.entry(q.clone()).or_default();
            types.entry(t.clone()).or_default().add(lane);
            d.retrying += lane.retrying;
        }
        d
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

// The figures of a window, computed alike by every backend from what it read.

/// At most this many finished tasks (the latest in the window) feed the processing-time
/// percentiles and the count of tasks that needed a retry.
pub const SAMPLE_LIMIT: i64 = 10_000;

/// Percentiles by nearest rank over durations in ms; seconds out.
pub fn summary(ms: &mut [i64]) -> Summary {
    if ms.is_empty() {
        return Summary {
            count: 0,
            p50: None,
            p95: None,
            p99: None,
            mean: None,
            max: None,
        };
    }
    ms.sort_unstable();
    let n = ms.len();
    let rank = |p: f64| ms[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
    let mean = ms.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 1000.0;
    Summary {
        count: n,
        p50: Some(rank(0.50)),
        p95: Some(rank(0.95)),
        p99: Some(rank(0.99)),
        mean: Some(mean),
        max: Some(ms[n - 1] as f64 / 1000.0),
    }
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole != 0).then(|| part as f64 / whole as f64)
}

/// A finished task of the window's sample.
pub struct Finished {
    pub task_type: String,
    pub status: String,
    pub started: Option<i64>,
    pub finished: i64,
    pub attempts: i64,
}

/// Outcomes, rates, and processing times and retries from the sample.
pub fn window_figures(
    window_ms: i64,
    since: i64,
    (completed, failed, cancelled): (i64, i64, i64),
    sample: &[Finished],
) -> Window {
    let window_s = window_ms as f64 / 1000.0;
    let mut all_ms: Vec<i64> = Vec::new();
    let mut by_type_ms: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let (mut retried_completed, mut retried_failed) = (0i64, 0i64);
    for f in sample {
        match f.status.as_str() {
            "completed" => {
                if let Some(s) = f.started {
                    let d = f.finished.saturating_sub(s).max(0);
                    all_ms.push(d);
                    by_type_ms.entry(&f.task_type).or_default().push(d);
                }
                if f.attempts > 1 {
                    retried_completed += 1;
                }
            }
            "failed" if f.attempts > 1 => retried_failed += 1,
            _ => {}
        }
    }
    Window {
        seconds: window_s,
        since,
        completed,
        failed,
        cancelled,
        success_ratio: ratio(completed, completed + failed),
        failure_ratio: ratio(failed, completed + failed),
        completed_per_second: completed as f64 / window_s,
        failed_per_second: failed as f64 / window_s,
        throughput_per_second: completed as f64 / window_s,
        retried: Retried {
            completed: retried_completed,
            failed: retried_failed,
        },
        processing_seconds: summary(&mut all_ms),
        processing_seconds_by_type: by_type_ms
            .iter_mut()
            .map(|(t, v)| (t.to_string(), summary(v)))
            .collect(),
        sample: Sample {
            size: sample.len(),
            limit: SAMPLE_LIMIT,
            complete: (sample.len() as i64) < SAMPLE_LIMIT,
        },
    }
}
