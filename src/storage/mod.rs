//! Storage: the seam between the engine and a database.
//!
//! The engine reaches a database only through `Driver`, shaped by operations as River's driver
//! interface is: one method per operation (`task_insert_many`, `task_get_available` (the claim),
//! `task_complete_many`, `task_fail_many`, `task_rescue_many`, ...), each taking the request as
//! a params struct of `model` and running as one transaction of the backend's (with its own
//! busy handling), so an implementation keeps its SQL and its optimisations to itself. A
//! backend's commits reach the engine through the commit hook it is opened with, and other
//! processes' commits through `listen`. What only some backends can do (backup, checkpoint,
//! vacuum, ...) is declared in `Capabilities`; the default methods refuse with
//! `Error::Unsupported`, naming the backend and what to use instead.
//!
//! `sqlite` is the default backend; `postgres` (cargo feature `postgres`, off by default for now)
//! opens `postgresql://` URLs. A backend implements `Driver` in a folder of its own and must pass
//! the same black-box suite (`tests/`, through the Python API).

pub mod backends;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

use crate::model::attempt::AttemptRow;
use crate::model::changes::{ChangeCursor, ChangeToken, Changes};
use crate::model::claim::ClaimRequest;
use crate::model::copy::{CopyImport, CopyKey, CopyRows, CopySummary, CopyTable};
use crate::model::error::{Error, Result};
use crate::model::lease::{
    ExpiredAttempt, FailOutcome, FailedAttempt, Failure, Lease, Released, ReleasedAttempt, Settled,
    Verdict,
};
use crate::model::limits::{LimitInfo, LimitSpec};
use crate::model::listing::{ListFilter, Stats};
use crate::model::maintenance::{BackupReport, CheckpointResult, Progress};
use crate::model::metrics::Metrics;
use crate::model::new_task::NewTask;
use crate::model::observe::{Heartbeat, LogRow, WorkerRow};
use crate::model::retry::RetryOverrides;
use crate::model::runs::{
    HeldRun, InterruptedRun, RecoverRuns, RecoveredRun, RunQuery, RunRecord, RunStartNote,
    RunVerdict, StartRun,
};
use crate::model::schedule::{ScheduleFire, ScheduleRow, ScheduleSpec};
use crate::model::strategy::Strategy;
use crate::model::task::{Status, TaskRow};
use crate::model::timeouts::QueueTimeouts;
use std::collections::BTreeMap;

/// What runs after each commit of a handle; given by the layer above (the engine wakes its
/// waiters with it), so storage knows nothing of who waits.
pub type CommitHook = Box<dyn Fn() + Send + Sync>;

/// The engine's rules, given to `open`: for an attempt that ended without success (failed,
/// expired, handed back, or a run interrupted) and for a run started again, a backend reads the
/// row, asks these what becomes of the task, and applies the answer in the same transaction. It
/// decides none of it itself, so every backend retries, backs off, dead-letters and words its
/// log lines alike.
pub trait Rules: Send + Sync {
    /// A worker reported a failure. `queue_policy` reads the retry policy of the task's queue
    /// (JSON of `RetryOverrides`, `None` when it has none); called only when the task retries,
    /// so a dead letter costs no read.
    fn after_failure<'a>(
        &self,
        attempt: &FailedAttempt<'a>,
        queue_policy: &mut dyn FnMut() -> Result<Option<String>>,
    ) -> Result<Verdict<'a>>;

    /// A lease ended before its worker acknowledged the task (the rescuer).
    fn after_lease_expired(&self, attempt: &ExpiredAttempt<'_>) -> Verdict<'static>;

    /// The log record of one rescue pass, given each task it moved and where it went.
    fn rescue_summary(&self, rescued: &[(ExpiredAttempt<'_>, FailOutcome)]) -> String;

    /// A worker hands its lease back (shutdown): what the row keeps.
    fn after_release(&self, attempt: &ReleasedAttempt) -> Released;

    /// A run starts: its id has no task row yet (`held` is `None`), or has `held`. Refused
    /// (`InvalidArgument`, nothing written) while another holder's lease on it is live.
    fn may_start_run(&self, start: &StartRun, held: Option<&HeldRun<'_>>) -> Result<RunStartNote>;

    /// A run's holder stopped before it finished (`recover_runs`): re-queued or failed.
    fn after_run_interrupted(&self, run: &InterruptedRun<'_>, recover: &RecoverRuns) -> RunVerdict;
}

/// Whether `path` names a PostgreSQL database (`postgresql://...` or `postgres://...`, in any
/// case) rather than a SQLite file.
pub fn is_postgres_url(path: &str) -> bool {
    let head = path.get(..13).unwrap_or(path).to_ascii_lowercase();
    head.starts_with("postgresql://") || head.starts_with("postgres://")
}

/// What a backend can do beyond the operations every backend has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// An online copy of the database to a file (`backup`), and `restore` from one.
    pub backup: bool,
    /// Moving the write-ahead log back into the database on demand (`checkpoint`).
    pub checkpoint: bool,
    /// Rebuilding the database file to give back free pages (`vacuum`).
    pub vacuum: bool,
    /// Refreshing the planner's statistics (`analyze`).
    pub analyze: bool,
    /// A full check of the file's structure (`integrity_check`).
    pub integrity_check: bool,
    /// Figures of the write-ahead log in `metrics()` (`database.wal_*`, `checkpoint`).
    pub wal_figures: bool,
    /// Import of the older Python queue's file (`import-legacy`).
    pub legacy_import: bool,
}

/// One backend of a queue handle. Every method is one operation; what it does to the stored
/// tasks is the same on every backend (the black-box suite says what), how is the backend's.
pub trait Driver: Send + Sync {
    /// The backend's name, as `Unsupported` errors give it ("sqlite").
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Where the data lives, as the handle was opened (a path, a URL without its password).
    fn path(&self) -> &str;
    /// Which clock leases end on: (kind, boot or server id, sequence), see `Queue::lease_clock`.
    fn lease_clock(&self) -> (&'static str, String, Option<i64>);
    /// A number that moves whenever another connection commits (`PRAGMA data_version` here).
    fn data_version(&self) -> Result<i64>;
    /// Start the backend's listener (once): `on_event` runs when another process may have
    /// committed. False when the backend has none, and waiters poll `data_version` instead.
    fn listen(&self, on_event: Box<dyn Fn() + Send + Sync>) -> bool;

    /// The backend itself, for an adapter that needs one backend's own methods (`import-legacy`
    /// downcasts it to the SQLite driver); `None` when a backend offers none.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// The refusal of an operation this backend lacks.
    fn unsupported(&self, operation: &'static str, instead: &'static str) -> Error {
        Error::Unsupported {
            backend: self.name(),
            operation,
            instead,
        }
    }

    // Tasks: enqueue, claim, acknowledgements, the rescuer, and changes by id.
    fn task_insert_many(&self, tasks: &[NewTask]) -> Result<Vec<i64>>;
    fn task_get_available(&self, req: &ClaimRequest) -> Result<Vec<TaskRow>>;
    fn task_explain_get_available(&self, strategy: Strategy) -> Result<Vec<String>>;
    fn task_complete(&self, lease: Lease, result: Option<&str>) -> Result<()>;
    fn task_complete_many(&self, items: &[(Lease, Option<String>)]) -> Result<Vec<bool>>;
    fn task_fail(&self, f: &Failure) -> Result<FailOutcome>;
    fn task_fail_many(&self, items: &[Failure]) -> Result<Vec<Option<FailOutcome>>>;
    fn task_settle(
        &self,
        completes: &[(Lease, Option<String>)],
        fails: &[Failure],
        claim: Option<&ClaimRequest>,
    ) -> Result<Settled>;
    fn task_renew(&self, lease: Lease, lease_ms: i64) -> Result<i64>;
    fn task_progress(
        &self,
        lease: Lease,
        percent: Option<f64>,
        step: Option<&str>,
        message: Option<&str>,
    ) -> Result<()>;
    fn task_release(&self, lease: Lease) -> Result<bool>;
    fn task_rescue_many(&self) -> Result<usize>;
    fn task_get(&self, id: i64) -> Result<TaskRow>;
    fn task_get_by_key(&self, key: &str) -> Result<Option<TaskRow>>;
    fn task_cancel(&self, id: i64) -> Result<bool>;
    fn task_set_priority(&self, id: i64, priority: i64) -> Result<bool>;
    fn task_retry(&self, id: i64) -> Result<bool>;
    fn queue_set_retry_policy(&self, queue: &str, policy: RetryOverrides) -> Result<()>;
    // Default execution timeouts per queue (issue 20, `model::timeouts`): set one (`None`: no
    // timeout), and read every queue's.
    fn queue_set_timeout(&self, queue: &str, timeout_ms: Option<i64>) -> Result<()>;
    fn queue_timeouts(&self) -> Result<QueueTimeouts>;
    fn log_insert(
        &self,
        task_id: i64,
        level: &str,
        message: &str,
        details: Option<&str>,
    ) -> Result<i64>;

    // Reads for the operations layer.
    fn task_list(&self, f: &ListFilter) -> Result<Vec<TaskRow>>;
    fn stats(&self, queue: Option<&str>) -> Result<Stats>;
    fn task_position(&self, id: i64, strategy: Strategy) -> Result<Option<i64>>;
    fn attempt_list(&self, task_id: i64) -> Result<Vec<AttemptRow>>;
    fn log_list(&self, task_id: i64, limit: i64) -> Result<Vec<LogRow>>;
    fn worker_heartbeat(&self, hb: &Heartbeat) -> Result<()>;
    fn worker_list(&self) -> Result<Vec<WorkerRow>>;
    fn worker_remove(&self, worker_id: &str) -> Result<bool>;
    fn metrics(&self, window_ms: i64) -> Result<Metrics>;
    fn change_cursor(
        &self,
        queues: Option<Vec<String>>,
        token: ChangeToken,
    ) -> Result<ChangeCursor>;
    fn changes_since(
        &self,
        cursor: &mut ChangeCursor,
        limit: usize,
        token: ChangeToken,
    ) -> Result<Changes>;
    fn queue_depths(&self, queues: &[String]) -> Result<BTreeMap<String, (i64, i64)>>;

    // Limits (concurrency and rate, enforced inside `task_get_available`): create or replace,
    // remove, and list with their figures (`queue`: that queue's only), sorted by queue, type.
    fn limit_set(&self, spec: &LimitSpec) -> Result<()>;
    fn limit_remove(&self, queue: &str, task_type: &str) -> Result<bool>;
    fn limit_list(&self, queue: Option<&str>) -> Result<Vec<LimitInfo>>;

    // Purge in batches.
    fn task_purge_many(
        &self,
        older_than_ms: i64,
        statuses: &[Status],
        batch_size: usize,
        progress: Progress,
    ) -> Result<usize>;

    // The run registry of the task manager adapter.
    fn run_save(&self, run: &RunRecord) -> Result<()>;
    fn run_load(&self, run_id: &str) -> Result<Option<String>>;
    fn run_list(&self, q: &RunQuery) -> Result<Vec<String>>;
    fn run_delete(&self, run_id: &str) -> Result<bool>;
    fn run_purge(&self, completed_before: i64) -> Result<usize>;
    fn run_start(&self, s: &StartRun) -> Result<TaskRow>;
    fn run_recover(&self, r: &RecoverRuns) -> Result<Vec<RecoveredRun>>;

    // Periodic tasks (schedules): stored definitions, and due times fired exactly once.
    /// Create or replace; the same definition changes nothing, a new one is next due at `next_run`.
    fn schedule_put(&self, spec: &ScheduleSpec, next_run: i64) -> Result<ScheduleRow>;
    /// Every schedule by name, or the one named.
    fn schedule_list(&self, name: Option<&str>) -> Result<Vec<ScheduleRow>>;
    /// Unpaused schedules whose next run is at or before `now`, at most `limit`.
    fn schedule_due(&self, now: i64, limit: i64) -> Result<Vec<ScheduleRow>>;
    /// Pause or resume (a paused schedule resumed is next due at `resume_at`); `None`: no such name.
    fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        resume_at: i64,
    ) -> Result<Option<ScheduleRow>>;
    fn schedule_remove(&self, name: &str) -> Result<bool>;
    /// Advance the schedule and insert its due tasks in one transaction, if it is unchanged.
    fn schedule_fire(&self, fire: &ScheduleFire) -> Result<bool>;

    // Capabilities: refused unless the backend declares them.
    fn checkpoint(&self, mode: &str) -> Result<CheckpointResult> {
        let _ = mode;
        Err(self.unsupported("checkpoint", "the database's own checkpointing"))
    }

    fn vacuum(&self) -> Result<()> {
        Err(self.unsupported("vacuum", "the database's own vacuum (autovacuum)"))
    }

    fn vacuum_with(&self, tick: Box<dyn FnMut() -> Result<()> + Send>) -> Result<()> {
        let _ = tick;
        Err(self.unsupported("vacuum", "the database's own vacuum (autovacuum)"))
    }

    fn analyze(&self) -> Result<()> {
        Err(self.unsupported("analyze", "the database's own statistics (ANALYZE)"))
    }

    fn integrity_check(&self) -> Result<Vec<String>> {
        Err(self.unsupported("integrity_check", "the database's own consistency checks"))
    }

    fn backup(&self, dest: &str, overwrite: bool, progress: Progress) -> Result<BackupReport> {
        let _ = (dest, overwrite, progress);
        Err(self.unsupported("backup", "the database's own backup tool (pg_dump, say)"))
    }

    // Copy between queues (`ops::copy`, any backend to any other): every table in key order,
    // in batches, with its ids. Operation-shaped like the rest: one transaction per call, rows
    // as `model::copy` types, so each backend keeps its own columns (lanes, race and lease keys)
    // to itself.
    /// What the queue holds, for a copy's checks and its progress.
    fn copy_summary(&self) -> Result<CopySummary>;
    /// Up to `limit` rows of `table` in key order, after `after` (from the first when `None`).
    fn copy_export(
        &self,
        table: CopyTable,
        after: Option<&CopyKey>,
        limit: usize,
    ) -> Result<CopyRows>;
    /// Compare `rows` with what the queue holds under their keys, refusing a row held
    /// differently (`model::copy::conflict`). With `write`, insert the rows it lacks with their
    /// ids in one transaction (and move its id sequences past them); without, write nothing.
    fn copy_import(&self, rows: &CopyRows, write: bool) -> Result<CopyImport>;
    /// Hand out only task ids above `used` from now on (the source's ids, purged ones too).
    fn copy_reserve_ids(&self, used: i64) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_told_from_paths() {
        assert!(is_postgres_url("postgresql://u@h/db") && is_postgres_url("postgres://h"));
        assert!(is_postgres_url("PostgreSQL://h/db"));
        for path in [
            "postgres.db",
            ":memory:",
            "/tmp/postgresql/q.db",
            "postgresql:/x",
            "é",
        ] {
            assert!(!is_postgres_url(path), "{path}");
        }
    }
}
