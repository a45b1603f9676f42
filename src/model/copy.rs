//! The rows `copy` moves between two queues (any backend to any other), read in key order in
//! batches and written with their ids, so logs and attempt records stay attached to their task.
//! Only what both backends store is here: each backend derives its own columns (SQLite's race
//! key and lease key, lanes) when it writes.

use crate::model::claim::LaneKey;
use crate::model::error::{Error, Result};
use crate::model::new_task::requires_text;
use crate::model::task::TaskRow;
use serde::Serialize;

/// The tables `copy` walks, in the order it writes them (a log or attempt record after its task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyTable {
    Tasks,
    Logs,
    Attempts,
    Runs,
    RetryPolicies,
}

impl CopyTable {
    pub const ALL: [CopyTable; 5] = [
        CopyTable::Tasks,
        CopyTable::Logs,
        CopyTable::Attempts,
        CopyTable::Runs,
        CopyTable::RetryPolicies,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CopyTable::Tasks => "tasks",
            CopyTable::Logs => "logs",
            CopyTable::Attempts => "attempts",
            CopyTable::Runs => "runs",
            CopyTable::RetryPolicies => "retry_policies",
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
        }
    }
}

/// Where the previous batch of a table ended: the key of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyKey {
    /// A task's or log line's id.
    Id(i64),
    /// An attempt record's (task id, seq); a run's (created_at, place in insertion order).
    Pair(i64, i64),
    /// A retry policy's queue.
    Name(String),
}

impl CopyKey {
    /// The bounds an export reads after, as one parameter list for every table: `(a, b, name)`,
    /// the lowest values where `after` is `None` or names another kind of key.
    pub fn bounds(after: Option<&CopyKey>) -> (i64, i64, String) {
        match after {
            None => (i64::MIN, i64::MIN, String::new()),
            Some(CopyKey::Id(a)) => (*a, i64::MIN, String::new()),
            Some(CopyKey::Pair(a, b)) => (*a, *b, String::new()),
            Some(CopyKey::Name(n)) => (i64::MIN, i64::MIN, n.clone()),
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

/// One batch of one table.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyRows {
    Tasks(Vec<CopyTask>),
    Logs(Vec<CopyLog>),
    Attempts(Vec<CopyAttempt>),
    Runs(Vec<CopyRun>),
    /// (queue, retry policy JSON).
    RetryPolicies(Vec<(String, String)>),
}

impl CopyRows {
    pub fn len(&self) -> usize {
        match self {
            CopyRows::Tasks(r) => r.len(),
            CopyRows::Logs(r) => r.len(),
            CopyRows::Attempts(r) => r.len(),
            CopyRows::Runs(r) => r.len(),
            CopyRows::RetryPolicies(r) => r.len(),
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
