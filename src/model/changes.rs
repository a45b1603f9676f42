//! The change feed's data: a cursor over what one event stream has seen, and what a look reports.

use crate::model::error::{Error, Result};
use crate::model::task::Status;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How far back of the last look the finished index is read again.
pub const FINISHED_MARGIN_MS: i64 = 2_000;

/// The most new tasks one look reports.
pub const MAX_CHANGES_LIMIT: usize = 100_000;

/// The check of a look's `limit`.
pub fn check_changes_limit(limit: usize) -> Result<()> {
    if !(1..=MAX_CHANGES_LIMIT).contains(&limit) {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_CHANGES_LIMIT}, got {limit}"
        )));
    }
    Ok(())
}

/// How often a waiting stream checks for commits (this process's and others').
pub const WAIT_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A task that did not exist at the previous look.
    Created,
    /// The task's status as of this look (or a new attempt of a running task).
    Status,
    /// New progress, step or message of a running task.
    Progress,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "task.created",
            ChangeKind::Status => "task.status",
            ChangeKind::Progress => "task.progress",
        }
    }
}

/// One change, with the task's state at the look that saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskChange {
    pub kind: ChangeKind,
    pub id: i64,
    pub task_type: String,
    pub queue: String,
    pub status: Status,
    pub progress: Option<f64>,
    pub step: Option<String>,
    pub message: Option<String>,
    /// When it happened as far as the row tells (created_at for `Created`, else updated_at), ms.
    pub at: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    pub worker: Option<String>,
    pub error: Option<String>,
}

/// A change as it leaves for Python: the tuple `(kind, id, type, queue, status, progress, step,
/// message, at_ms, attempts, max_attempts, worker, error)` that `prismq_queue.events` unpacks.
#[derive(Debug, Serialize)]
pub struct ChangeEvent<'a>(
    &'static str,
    i64,
    &'a str,
    &'a str,
    &'static str,
    Option<f64>,
    Option<&'a str>,
    Option<&'a str>,
    i64,
    i64,
    i64,
    Option<&'a str>,
    Option<&'a str>,
);

impl TaskChange {
    /// This change in the feed's tuple form, its time clamped to the range Python accepts.
    pub fn event(&self) -> ChangeEvent<'_> {
        ChangeEvent(
            self.kind.as_str(),
            self.id,
            &self.task_type,
            &self.queue,
            self.status.as_str(),
            self.progress,
            self.step.as_deref(),
            self.message.as_deref(),
            crate::model::time::clamp_stored(self.at).0,
            self.attempts,
            self.max_attempts,
            self.worker.as_deref(),
            self.error.as_deref(),
        )
    }
}

/// A task's row as a look of the change feed reads it, on either backend: what a `TaskChange`
/// and a stream's memory of a running task are made of.
pub(crate) struct FeedRow {
    pub(crate) id: i64,
    pub(crate) task_type: String,
    pub(crate) queue: String,
    pub(crate) status: Status,
    pub(crate) progress: Option<f64>,
    pub(crate) step: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) attempts: i64,
    pub(crate) max_attempts: i64,
    pub(crate) worker: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) started_at: Option<i64>,
    /// Read by SQLite's diff (a task finished since the last look); PostgreSQL's feed has no use for it.
    pub(crate) finished_at: Option<i64>,
}

impl FeedRow {
    /// The event of `kind` this row makes: a creation is stamped with its creation time.
    pub(crate) fn change(&self, kind: ChangeKind) -> TaskChange {
        TaskChange {
            kind,
            id: self.id,
            task_type: self.task_type.clone(),
            queue: self.queue.clone(),
            status: self.status,
            progress: self.progress,
            step: self.step.clone(),
            message: self.message.clone(),
            at: if kind == ChangeKind::Created {
                self.created_at
            } else {
                self.updated_at
            },
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            worker: self.worker.clone(),
            error: self.error.clone(),
        }
    }

    /// What a stream remembers of it while it runs.
    pub(crate) fn snap(&self) -> Running {
        Running {
            started_at: self.started_at,
            attempts: self.attempts,
            progress: self.progress,
            step: self.step.clone(),
            message: self.message.clone(),
        }
    }
}

/// A running task as a stream last saw it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Running {
    pub(crate) started_at: Option<i64>,
    pub(crate) attempts: i64,
    pub(crate) progress: Option<f64>,
    pub(crate) step: Option<String>,
    pub(crate) message: Option<String>,
}

/// Where the database stands: this process's commit counter and the read connection's
/// `PRAGMA data_version` (which moves when any other connection commits). Two tokens differ when
/// some process committed between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeToken {
    pub generation: u64,
    pub data_version: i64,
}

/// What one event stream has seen. Create it with `Queue::change_cursor`.
pub struct ChangeCursor {
    pub(crate) queues: Option<HashSet<String>>,
    pub(crate) max_id: i64,
    pub(crate) max_log_id: i64,
    pub(crate) finished_floor: i64,
    /// Finished tasks already reported (or finished before the cursor), id -> finished_at, for
    /// those that finished after `finished_floor`.
    pub(crate) seen_finished: HashMap<i64, i64>,
    pub(crate) running: HashMap<i64, Running>,
    pub(crate) token: ChangeToken,
    pub(crate) last_look: Option<Instant>,
    /// Where a cursor stands on a backend whose ids commit out of order (PostgreSQL).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) snapshot: SnapshotMark,
}

/// A PostgreSQL cursor's position: the snapshot of its last look (transaction ids as i64:
/// everything below `xmin` had ended, `xip` were in flight, `xmax` and above had not begun),
/// and the tasks it saw change but has not reported yet (a burst larger than one look), in the
/// order seen, each with whether it was created since.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct SnapshotMark {
    pub(crate) xmin: i64,
    pub(crate) xmax: i64,
    pub(crate) xip: Vec<i64>,
    pub(crate) backlog: VecDeque<i64>,
    pub(crate) pending: HashMap<i64, bool>,
}

/// The outcome of one look.
#[derive(Debug, Default)]
pub struct Changes {
    pub changes: Vec<TaskChange>,
    /// True when a look left work for the next one (a burst larger than one look takes).
    pub more: bool,
}

impl ChangeCursor {
    pub(crate) fn wants(&self, queue: &str) -> bool {
        self.queues.as_ref().is_none_or(|qs| qs.contains(queue))
    }
}
