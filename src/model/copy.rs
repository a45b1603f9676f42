//! The rows `copy` moves between two queues (any backend to any other), read in key order in
//! batches and written with their ids, so logs and attempt records stay attached to their task.
//! Only what both backends store is here: each backend derives its own columns (SQLite's race
//! key and lease key, lanes) when it writes. A limit's rate bucket is not carried either: it
//! starts full on the destination, as a limit set anew does (its tokens refill with time on the
//! source, so a copied bucket would differ on every later run and could not be compared).

use crate::model::claim::LaneKey;
use crate::model::error::{Error, Result};
use crate::model::limits::LimitSpec;
use crate::model::new_task::requires_text;
use crate::model::task::TaskRow;
use serde::Serialize;

/// The tables `copy` walks, in the order it writes them (a log, attempt record, dependency or
/// hold after its task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyTable {
    Tasks,
    Logs,
    Attempts,
    Runs,
    RetryPolicies,
    /// `task_dependencies`: (task, what it was enqueued after), kept after release.
    Dependencies,
    /// `task_holds`: a held task's count of dependencies still awaited and its own due time,
    /// without which a copied held task would stay held for good.
    Holds,
    Limits,
    Schedules,
    /// Each queue's default execution timeout.
    QueueTimeouts,
}

impl CopyTable {
    pub const ALL: [CopyTable; 10] = [
        CopyTable::Tasks,
        CopyTable::Logs,
        CopyTable::Attempts,
        CopyTable::Runs,
        CopyTable::RetryPolicies,
        CopyTable::Dependencies,
        CopyTable::Holds,
        CopyTable::Limits,
        CopyTable::Schedules,
        CopyTable::QueueTimeouts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CopyTable::Tasks => "tasks",
            CopyTable::Logs => "logs",
            CopyTable::Attempts => "attempts",
            CopyTable::Runs => "runs",
            CopyTable::RetryPolicies => "retry_policies",
            CopyTable::Dependencies => "dependencies",
            CopyTable::Holds => "holds",
            CopyTable::Limits => "limits",
            CopyTable::Schedules => "schedules",
            CopyTable::QueueTimeouts => "queue_timeouts",
        }
    }

    /// What one row is, for messages ("task 17", "log line 4").
    pub fn row_name(self) -> &'static str {
        match self {
            CopyTable::Tasks => "task",
            CopyTable::Logs => "log line",
            CopyTable::Attempts => "attempt record",
            CopyTable::Runs => "run",
            CopyTable::RetryPolicies => "retry policy of queue",
            CopyTable::Dependencies => "dependency",
            CopyTable::Holds => "hold of task",
            CopyTable::Limits => "limit",
            CopyTable::Schedules => "schedule",
            CopyTable::QueueTimeouts => "default timeout of queue",
        }
    }
}

/// Where the previous batch of a table ended: the key of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyKey {
    /// A task's or log line's id.
    Id(i64),
    /// An attempt record's (task id, seq); a run's (created_at, place in insertion order); a
    /// dependency's (task id, after id).
    Pair(i64, i64),
    /// A retry policy's or default timeout's queue; a schedule's name.
    Name(String),
    /// A limit's (queue, type).
    Names(String, String),
}

impl CopyKey {
    /// The bounds an export reads after, as one parameter list for every table: `(a, b, name,
    /// name2)`, the lowest values where `after` is `None` or names another kind of key (names are
    /// never empty, so "" is below every one).
    pub fn bounds(after: Option<&CopyKey>) -> (i64, i64, String, String) {
        let none = String::new;
        match after {
            None => (i64::MIN, i64::MIN, none(), none()),
            Some(CopyKey::Id(a)) => (*a, i64::MIN, none(), none()),
            Some(CopyKey::Pair(a, b)) => (*a, *b, none(), none()),
            Some(CopyKey::Name(n)) => (i64::MIN, i64::MIN, n.clone(), none()),
            Some(CopyKey::Names(n, m)) => (i64::MIN, i64::MIN, n.clone(), m.clone()),
        }
    }
}

/// A task with every column both backends keep.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyTask {
    pub row: TaskRow,
    /// Per-task backoff overrides (JSON) or `None`.
    pub retry_policy: Option<String>,
}

impl CopyTask {
    /// The same task in every column both backends keep.
    pub fn same(&self, other: &CopyTask) -> bool {
        self.row == other.row && self.retry_policy == other.retry_policy
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CopyLog {
    pub id: i64,
    pub task_id: i64,
    pub at: i64,
    pub level: String,
    pub message: String,
    pub details: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CopyAttempt {
    pub task_id: i64,
    pub seq: i64,
    pub number: i64,
    pub max_attempts: i64,
    pub worker: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: i64,
    pub outcome: String,
    pub error: String,
    pub traceback: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CopyRun {
    /// Its place in the source's insertion order (SQLite's rowid, PostgreSQL's `seq`): runs are
    /// read and written in (created_at, that) order, so the destination's own order breaks ties
    /// of `created_at` in the registry's listings as the source's did. Not compared.
    pub ordinal: i64,
    pub run_id: String,
    pub module_id: String,
    pub status: String,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
    pub data: String,
}

impl CopyRun {
    pub fn same(&self, other: &CopyRun) -> bool {
        let mut a = other.clone();
        a.ordinal = self.ordinal;
        *self == a
    }
}

/// A held task's row of `task_holds`.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyHold {
    pub task_id: i64,
    /// Dependencies it still waits on.
    pub waiting: i64,
    pub run_anyway: bool,
    /// Its own due time, restored when it is released.
    pub due: i64,
}

/// A schedule with its state; `definition` is carried as the text stored, so the destination's
/// `schedule()` with the same arguments finds it unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct CopySchedule {
    pub name: String,
    pub definition: String,
    pub paused: bool,
    pub next_run: i64,
    pub last_run: Option<i64>,
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One batch of one table.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyRows {
    Tasks(Vec<CopyTask>),
    Logs(Vec<CopyLog>),
    Attempts(Vec<CopyAttempt>),
    Runs(Vec<CopyRun>),
    /// (queue, retry policy JSON).
    RetryPolicies(Vec<(String, String)>),
    /// (task id, after id).
    Dependencies(Vec<(i64, i64)>),
    Holds(Vec<CopyHold>),
    /// The limits' settings only (see the module's note on the rate bucket).
    Limits(Vec<LimitSpec>),
    Schedules(Vec<CopySchedule>),
    /// (queue, default timeout in ms; `None`: no timeout).
    QueueTimeouts(Vec<(String, Option<i64>)>),
}

impl CopyRows {
    pub fn len(&self) -> usize {
        match self {
            CopyRows::Tasks(r) => r.len(),
            CopyRows::Logs(r) => r.len(),
            CopyRows::Attempts(r) => r.len(),
            CopyRows::Runs(r) => r.len(),
            CopyRows::RetryPolicies(r) => r.len(),
            CopyRows::Dependencies(r) => r.len(),
            CopyRows::Holds(r) => r.len(),
            CopyRows::Limits(r) => r.len(),
            CopyRows::Schedules(r) => r.len(),
            CopyRows::QueueTimeouts(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key the next batch starts after; `None` for an empty batch.
    pub fn last_key(&self) -> Option<CopyKey> {
        match self {
            CopyRows::Tasks(r) => r.last().map(|t| CopyKey::Id(t.row.id)),
            CopyRows::Logs(r) => r.last().map(|l| CopyKey::Id(l.id)),
            CopyRows::Attempts(r) => r.last().map(|a| CopyKey::Pair(a.task_id, a.seq)),
            CopyRows::Runs(r) => r.last().map(|r| CopyKey::Pair(r.created_at, r.ordinal)),
            CopyRows::RetryPolicies(r) => r.last().map(|(q, _)| CopyKey::Name(q.clone())),
            CopyRows::Dependencies(r) => r.last().map(|(t, a)| CopyKey::Pair(*t, *a)),
            CopyRows::Holds(r) => r.last().map(|h| CopyKey::Id(h.task_id)),
            CopyRows::Limits(r) => r
                .last()
                .map(|l| CopyKey::Names(l.queue.clone(), l.task_type.clone())),
            CopyRows::Schedules(r) => r.last().map(|s| CopyKey::Name(s.name.clone())),
            CopyRows::QueueTimeouts(r) => r.last().map(|(q, _)| CopyKey::Name(q.clone())),
        }
    }
}

/// What one queue holds, read before a copy: the rows of each table, and what the copy must
/// carry beyond the rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CopySummary {
    pub tasks: u64,
    pub logs: u64,
    pub attempts: u64,
    pub runs: u64,
    pub retry_policies: u64,
    pub dependencies: u64,
    pub holds: u64,
    pub limits: u64,
    pub schedules: u64,
    pub queue_timeouts: u64,
    /// Running tasks whose lease has not ended yet (on the backend's own clock).
    pub live_leases: u64,
    /// The highest task id ever handed out (purged ones included): the destination hands out
    /// only ids above it afterwards, so an id never names two tasks.
    pub task_ids_used: i64,
}

impl CopySummary {
    pub fn count(&self, table: CopyTable) -> u64 {
        match table {
            CopyTable::Tasks => self.tasks,
            CopyTable::Logs => self.logs,
            CopyTable::Attempts => self.attempts,
            CopyTable::Runs => self.runs,
            CopyTable::RetryPolicies => self.retry_policies,
            CopyTable::Dependencies => self.dependencies,
            CopyTable::Holds => self.holds,
            CopyTable::Limits => self.limits,
            CopyTable::Schedules => self.schedules,
            CopyTable::QueueTimeouts => self.queue_timeouts,
        }
    }

    pub fn total(&self) -> u64 {
        CopyTable::ALL.iter().map(|t| self.count(*t)).sum()
    }
}

/// What writing (or checking) one batch found on the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyImport {
    /// Rows the destination did not have (written, or to be written).
    pub new: u64,
    /// Rows the destination already had, equal in every column compared.
    pub same: u64,
}

/// The refusal of a row the destination holds differently under the same key: two different
/// queues would be mixed.
pub fn conflict(table: CopyTable, key: impl std::fmt::Display, what: &str) -> Error {
    Error::invalid(format!(
        "the destination already holds {} {key}, and it differs from the source's ({what}): it is \
         another queue, or one changed since an earlier copy. Copy into an empty database (or a \
         new ?schema= on PostgreSQL), or remove the destination first",
        table.row_name()
    ))
}

/// The refusal of a task whose idempotency key the destination gives to another task.
pub fn key_taken(id: i64, key: &str, other: i64) -> Error {
    Error::invalid(format!(
        "task {id} of the source has the idempotency key {key:?}, which the destination gives to \
         its task {other}: it is another queue. Copy into an empty database (or a new ?schema= on \
         PostgreSQL), or remove the destination first"
    ))
}

/// A limit's key in messages: `of queue "mail", type "send"` (`(every type)` for a whole queue's).
pub fn limit_key(spec: &LimitSpec) -> String {
    match spec.task_type.as_str() {
        "" => format!("of queue {:?} (every type)", spec.queue),
        t => format!("of queue {:?}, type {t:?}", spec.queue),
    }
}

/// The bucket a copied limit starts with on the destination: full, as `limit_set` starts one
/// (the source's bucket is not carried, see the module's note).
pub fn full_bucket(spec: &LimitSpec) -> f64 {
    spec.rate.map_or(0.0, |r| r.count as f64)
}

/// The first column in which two tasks differ, for `conflict`.
pub fn task_difference(a: &CopyTask, b: &CopyTask) -> String {
    let (x, y) = (&a.row, &b.row);
    let checks: [(&str, bool); 8] = [
        ("type", x.task_type == y.task_type),
        ("queue", x.queue == y.queue),
        ("payload", x.payload == y.payload),
        ("created_at", x.created_at == y.created_at),
        ("idempotency_key", x.idempotency_key == y.idempotency_key),
        ("status", x.status == y.status),
        ("attempts", x.attempts == y.attempts),
        ("updated_at", x.updated_at == y.updated_at),
    ];
    checks
        .iter()
        .find(|(_, same)| !same)
        .map_or("another column", |(name, _)| name)
        .to_string()
}

/// Rows a copy reads or writes in one transaction.
pub const COPY_BATCH: usize = 1000;

/// A task read from a damaged row cannot be copied as it is.
pub fn refuse_damaged(row: &TaskRow) -> Result<()> {
    if row.damaged.is_empty() {
        return Ok(());
    }
    Err(Error::db(
        crate::model::error::DbErrorKind::Corrupt,
        format!(
            "task {} of the source is damaged ({}): it cannot be copied as it is. Nothing was \
             written for it; fix or purge it in the source and copy again",
            row.id,
            row.damaged.join("; ")
        ),
    ))
}

/// The lane of a copied task, as enqueue derives it: its queue, type and canonical `requires`
/// text (the destination makes or finds that lane; lane ids are each database's own).
pub fn lane_key(row: &TaskRow) -> Result<LaneKey> {
    let requires = match &row.requires {
        Some(text) => {
            let map = serde_json::from_str(text).map_err(|e| {
                Error::invalid(format!(
                    "task {}: its requires is not a JSON object: {e}",
                    row.id
                ))
            })?;
            requires_text(&Some(map))
        }
        None => String::new(),
    };
    Ok((row.queue.clone(), row.task_type.clone(), requires))
}
