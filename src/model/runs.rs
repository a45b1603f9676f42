//! The run registry of the task manager adapter: a run's record, queries and start requests.

use crate::model::error::{Error, Result};
use crate::model::new_task::{NewTask, MAX_ATTEMPTS};
use crate::model::time::{check_duration, Least};

/// The queue in which in-process runs are mirrored, unless the caller names another.
pub const DEFAULT_RUNS_QUEUE: &str = "runs";

/// Statuses a run registry counts as active.
pub const ACTIVE_RUN_STATUSES: [&str; 2] = ["queued", "running"];

/// One run as the registry stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub module_id: String,
    pub status: String,
    /// ms since epoch, UTC.
    pub created_at: i64,
    /// ms since epoch, UTC; `None` while the run has not finished.
    pub completed_at: Option<i64>,
    /// The whole run as a JSON object.
    pub data: String,
}

impl RunRecord {
    /// The checks of `save_run` on every backend, before anything is written.
    pub fn validate(&self) -> Result<()> {
        check_run_id(&self.run_id)?;
        crate::model::time::check_time("created_at", self.created_at)?;
        if let Some(at) = self.completed_at {
            crate::model::time::check_time("completed_at", at)?;
        }
        if self.status.trim().is_empty() {
            return Err(Error::invalid(format!(
                "run {:?}: status must be a non-empty string",
                self.run_id
            )));
        }
        match serde_json::from_str::<serde_json::Value>(&self.data) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            _ => Err(Error::invalid(format!(
                "run {:?}: data must be a JSON object",
                self.run_id
            ))),
        }
    }
}

/// Which runs `list_runs` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFilter {
    All,
    /// Queued or running.
    Active,
    Status(String),
    Module(String),
}

#[derive(Debug, Clone)]
pub struct RunQuery {
    pub filter: RunFilter,
    /// Newest first (by `created_at`) instead of oldest first.
    pub newest_first: bool,
    /// At most this many; `None` for all.
    pub limit: Option<i64>,
}

/// What `start_run` needs: the run, and the lease the starting process takes on its task row.
#[derive(Debug, Clone)]
pub struct StartRun {
    pub run_id: String,
    /// The task type: the run's module id.
    pub task_type: String,
    /// The run's parameters, as JSON text.
    pub payload: String,
    pub queue: String,
    /// The holder of the lease (the manager's worker id).
    pub worker_id: String,
    pub lease_ms: i64,
    /// Attempts left for re-runs by a durable handler after an interruption: `max_attempts` becomes
    /// `attempts + rerun_attempts`, so the rescuer re-queues (rather than dead-letters) an
    /// interrupted run.
    pub rerun_attempts: i64,
    /// Holders known to be dead (e.g. a crashed process of this host): a running row they hold is
    /// taken over even though its lease has not expired yet.
    pub takeover_from: Vec<String>,
}

impl StartRun {
    /// The checks of `start_run`, before anything is written: the task row's (as an enqueue of
    /// it would check them), the run id, the holder, the lease and the re-runs left.
    pub fn validate(&self, max_payload_bytes: usize) -> Result<()> {
        let mut check = NewTask::new(self.task_type.clone(), self.payload.clone());
        check.queue = self.queue.clone();
        check.idempotency_key = Some(self.run_id.clone());
        check.validate(max_payload_bytes)?;
        check_run_id(&self.run_id)?;
        if self.worker_id.trim().is_empty() {
            return Err(Error::invalid("worker_id must be a non-empty string"));
        }
        check_duration("lease", self.lease_ms, Least::Positive)?;
        if !(0..MAX_ATTEMPTS).contains(&self.rerun_attempts) {
            return Err(Error::invalid(format!(
                "rerun_attempts must be between 0 and {}, got {}",
                MAX_ATTEMPTS - 1,
                self.rerun_attempts
            )));
        }
        Ok(())
    }
}

/// What `recover_runs` does with interrupted runs.
#[derive(Debug, Clone)]
pub struct RecoverRuns {
    /// The queue the runs are mirrored in.
    pub queue: String,
    /// Holders known to be dead, whose rows are interrupted even if their leases still run.
    pub dead_holders: Vec<String>,
    /// Task types a durable handler is registered for: their runs are re-queued, not failed.
    pub rerun_types: Vec<String>,
    /// Where re-queued runs go (the queue durable workers take from).
    pub rerun_queue: String,
}

impl RecoverRuns {
    pub fn validate(&self) -> Result<()> {
        if self.queue.trim().is_empty() || self.rerun_queue.trim().is_empty() {
            return Err(Error::invalid(
                "queue and rerun_queue must be non-empty strings",
            ));
        }
        Ok(())
    }
}

/// One interrupted run and what `recover_runs` did with it (a dict in Python, keys in this order).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecoveredRun {
    pub task_id: i64,
    pub run_id: Option<String>,
    #[serde(rename = "type")]
    pub task_type: String,
    /// The worker that held the run when it was interrupted.
    pub holder: Option<String>,
    /// True: re-queued for a durable handler; false: failed as interrupted.
    pub requeued: bool,
    /// The error recorded on the task (and meant for the run).
    pub error: String,
}

pub(crate) fn check_run_id(run_id: &str) -> Result<()> {
    if run_id.trim().is_empty() || run_id.len() > 1000 {
        return Err(Error::invalid(
            "run_id must be a non-empty string of at most 1000 characters",
        ));
    }
    Ok(())
}
