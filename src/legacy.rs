//! `import-legacy`: bring the SQLite file of the older pure-Python queue into this queue.
//!
//! The old file is opened read-only (`SQLITE_OPEN_READONLY` and `PRAGMA query_only`) and read
//! in one snapshot; it is never written. The import goes in batches (1000 rows by default), each
//! one `BEGIN IMMEDIATE` transaction on the queue that holds the batch's tasks, their logs and
//! their `legacy_imports` rows, so other processes wait at most one batch for the write lock and
//! an import stopped anywhere (crash, Ctrl-C, a full disk) resumes where it stopped when run
//! again: rows already in `legacy_imports` for the same source are never imported twice.
//!
//! Choices, in the order a migration guide needs them:
//! - Source identity: the old file's canonical absolute path (symlinks resolved). The same file
//!   imported twice, also through another relative path or a symlink, imports nothing twice; a
//!   copy or a moved file is a new source (tasks with idempotency keys still map to the tasks
//!   they already became).
//! - Statuses: `queued` stays queued; `leased` and `processing` come back as queued, claimable at
//!   once (`run_after` no later than the import), without lease or worker, and with a log line
//!   saying who held the lease; `completed` stays completed; `failed` and `dead_letter` become
//!   `failed` (the dead letter, which `retry()` re-queues); `cancelled` stays cancelled. Any other
//!   status skips the row with a problem.
//! - Fields: type, payload (the original JSON text, byte for byte), priority (clamped to
//!   1..=1000, with a note in the report and a warning in the task's log), attempts,
//!   max_attempts, error message, result (when the old table has a `result` column), idempotency
//!   key, times (converted to UTC milliseconds; `YYYY-MM-DD HH:MM:SS[.fff]`, ISO 8601 with `T`
//!   or a space, an offset or `Z`, or a bare date), and `compatibility` as `requires` (a JSON
//!   object; `{}`, `null` or an empty value mean "no requirements"). Tasks go to the queue
//!   `default`. Missing times fall back: created <- updated <- the import time; run_after <-
//!   created; finished (of finished tasks) <- updated; started <- processing_started <-
//!   reserved_at.
//! - Idempotency keys: a key that already exists in the queue (enqueued by the new application,
//!   or an earlier row with the same key) does not create a duplicate: the legacy row is mapped
//!   to that task, and its logs are added to it with a line saying so.
//! - Values that cannot be read: a task row with an unreadable value (a time that is not a time,
//!   a payload, compatibility or result that is not JSON, a non-integer id or priority, an empty
//!   type, an unknown status, an id seen twice) is skipped, nothing of it is written, and the
//!   report lists its id, column, value and reason. Fix the row in the old file and run the
//!   import again: only the rows not yet imported are imported. A log line with an unreadable
//!   time is imported with the task's created time and listed as a problem; log details that are
//!   not JSON are kept as a JSON string; unknown log levels become `info` with the original level
//!   at the head of the message (`[TRACE2] ...`). Logs whose task is not in `task_queue` cannot
//!   be attached to anything: they are counted (`logs_orphaned`) and named in a note.
//! - Workers: not imported. A worker row is a heartbeat of a process of the old system; the new
//!   workers register themselves when they start. The report lists the old workers and their
//!   capabilities so the new workers can be started with the same ones.

use crate::claim::lanes::LaneKey;
use crate::enqueue::{
    read_insert_meta, requires_text, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_PRIORITY,
    MIN_PRIORITY,
};
use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::task::Status;
use crate::time::now_ms;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// Tasks per transaction.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// A batch also ends once it holds this many log lines per task of `batch_size`, so a task
/// history of millions of lines cannot make one transaction long.
const LOGS_PER_TASK_BUDGET: usize = 10;
/// The report lists at most this many problems (all are counted in `problem_count`).
const MAX_LISTED_PROBLEMS: usize = 10_000;
const MAX_LISTED_WORKERS: usize = 1000;
/// Values quoted in problems are cut to this many characters.
const MAX_QUOTED: usize = 200;

/// What `task_queue` must have: without these a row is not a task.
const REQUIRED_TASK_COLUMNS: [&str; 4] = ["id", "type", "payload", "status"];
/// Every column read from `task_queue`, in the order of the SELECT. Absent optional columns are
/// read as NULL (and named in a note); `result` is not part of the documented format and is
/// imported only when present.
const TASK_COLUMNS: [&str; 19] = [
    "id",
    "type",
    "payload",
    "status",
    "priority",
    "compatibility",
    "attempts",
    "max_attempts",
    "run_after_utc",
    "lease_until_utc",
    "reserved_at_utc",
    "processing_started_utc",
    "finished_at_utc",
    "locked_by",
    "error_message",
    "idempotency_key",
    "created_at_utc",
    "updated_at_utc",
    "result",
];
const UNDOCUMENTED_COLUMNS: [&str; 1] = ["result"];
const EXPECTED: &str = "the SQLite file of the older Python queue, with a table task_queue(id, type, priority, payload, \
     compatibility, status, attempts, max_attempts, run_after_utc, lease_until_utc, reserved_at_utc, \
     processing_started_utc, finished_at_utc, locked_by, error_message, idempotency_key, created_at_utc, \
     updated_at_utc) and optionally task_logs(log_id, task_id, at_utc, level, message, details) and \
     workers(worker_id, capabilities, heartbeat_utc)";

// Indexes into TASK_COLUMNS.
const C_ID: usize = 0;
const C_TYPE: usize = 1;
const C_PAYLOAD: usize = 2;
const C_STATUS: usize = 3;
const C_PRIORITY: usize = 4;
const C_COMPAT: usize = 5;
const C_ATTEMPTS: usize = 6;
const C_MAX_ATTEMPTS: usize = 7;
const C_RUN_AFTER: usize = 8;
const C_LEASE_UNTIL: usize = 9;
const C_RESERVED_AT: usize = 10;
const C_STARTED: usize = 11;
const C_FINISHED: usize = 12;
const C_LOCKED_BY: usize = 13;
const C_ERROR: usize = 14;
const C_IDEMPOTENCY: usize = 15;
const C_CREATED: usize = 16;
const C_UPDATED: usize = 17;
const C_RESULT: usize = 18;

/// One value of the old file that could not be imported as it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportProblem {
    /// `task_queue` or `task_logs`.
    pub table: String,
    /// The task's id in the old file (None when the id itself is unreadable).
    pub legacy_id: Option<i64>,
    /// For a log line, its `log_id`.
    pub log_id: Option<i64>,
    pub column: String,
    /// The value as found, cut to 200 characters.
    pub value: Option<String>,
    pub reason: String,
    /// "skipped" (nothing of the row was written) or what was imported instead.
    pub action: String,
}

/// A worker row of the old file (not imported: see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacyWorker {
    pub worker_id: Option<String>,
    /// The JSON text as stored.
    pub capabilities: Option<String>,
    pub heartbeat_utc: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// The identity of the old file: its canonical absolute path.
    pub source: String,
    /// Rows in `task_queue` when the import started.
    pub total: u64,
    /// New tasks created by this run.
    pub imported: u64,
    /// Rows imported by an earlier run of the same source.
    pub skipped_already_imported: u64,
    /// Rows whose idempotency key already belonged to a task: mapped to it, not duplicated.
    pub mapped_to_existing: u64,
    /// Rows skipped because a value could not be read (each is in `problems`).
    pub skipped_invalid: u64,
    /// Statuses of the tasks created by this run, in the new queue's terms.
    pub by_status: BTreeMap<String, u64>,
    /// The old statuses of the tasks created by this run.
    pub by_legacy_status: BTreeMap<String, u64>,
    /// Leased or processing tasks that came back as queued.
    pub requeued_from_lease: u64,
    /// Tasks whose priority was outside 1..=1000 and was clamped.
    pub priority_clamped: u64,
    pub logs_imported: u64,
    /// Log lines whose task_id matches no row of task_queue.
    pub logs_orphaned: u64,
    /// Workers of the old file (listed, not imported), at most 1000.
    pub legacy_workers: Vec<LegacyWorker>,
    pub legacy_workers_total: u64,
    /// Every problem, up to 10,000; `problem_count` counts them all.
    pub problems: Vec<ImportProblem>,
    pub problem_count: u64,
    /// Human-readable remarks: clamped priorities, defaults used for missing values, columns
    /// absent from the old file, workers not imported.
    pub notes: Vec<String>,
}

/// What `inspect_legacy` finds in an old file, without importing anything.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LegacyInfo {
    pub source: String,
    pub tasks: u64,
    /// Row counts by the old status text.
    pub by_status: BTreeMap<String, u64>,
    pub logs: u64,
    pub workers: u64,
    /// Documented columns of task_queue that this file lacks (read as NULL).
    pub missing_columns: Vec<String>,
}

/// The old file, opened read-only and checked.
struct Source {
    conn: Connection,
    identity: String,
    task_sql: String,
    /// None when the file has no task_logs table.
    log_sql: Option<String>,
    worker_sql: Option<String>,
    missing_columns: Vec<String>,
}

fn columns_of(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names.into_iter().map(|n| n.to_ascii_lowercase()).collect())
}

/// `"col"` when the table has it, else `NULL`.
fn select_list(present: &[String], wanted: &[&str]) -> String {
    wanted
        .iter()
        .map(|c| {
            if present.iter().any(|p| p == c) {
                format!("\"{c}\"")
            } else {
                "NULL".to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn open_source(path: &str, busy_timeout: Duration) -> Result<Source> {
    let p = Path::new(path);
    if path.is_empty() {
        return Err(Error::invalid(format!(
            "give the path of the old database: import-legacy expects {EXPECTED}"
        )));
    }
    if !p.exists() {
        return Err(Error::invalid(format!(
            "{path:?} does not exist: import-legacy expects {EXPECTED}"
        )));
    }
    if p.is_dir() {
        return Err(Error::invalid(format!(
            "{path:?} is a directory: import-legacy expects {EXPECTED}"
        )));
    }
    let identity = std::fs::canonicalize(p)
        .map_err(|e| Error::invalid(format!("cannot resolve {path:?}: {e}")))?
        .to_string_lossy()
        .into_owned();
    let conn = Connection::open_with_flags(
        p,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::invalid(format!("cannot open {path:?} read-only: {e}")))?;
    let not_sqlite = |e: rusqlite::Error| -> Error {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Error::invalid(format!(
                "{path:?} is not a SQLite database (or it is encrypted or damaged): import-legacy expects {EXPECTED}"
            )),
            Some(ErrorCode::ReadOnly) => Error::invalid(format!(
                "{path:?} has an unfinished transaction of the old application (a hot journal), which a read-only \
                 import cannot roll back: open it once with the old application or the sqlite3 shell, then import"
            )),
            _ => Error::from(e),
        }
    };
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(not_sqlite)?;
    let tables: Vec<String> = conn
        .prepare("SELECT lower(name) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(not_sqlite)?;
    if !tables.iter().any(|t| t == "task_queue") {
        let found = if tables.is_empty() {
            "it has no tables".to_string()
        } else if tables.iter().any(|t| t == "tasks") && tables.iter().any(|t| t == "lanes") {
            "it is a prismq_queue database already".to_string()
        } else {
            format!("it has the tables {}", tables.join(", "))
        };
        return Err(Error::invalid(format!(
            "{path:?} is not a database of the older Python queue: it has no table task_queue ({found}); \
             import-legacy expects {EXPECTED}"
        )));
    }
    let task_cols = columns_of(&conn, "task_queue")?;
    let missing: Vec<&str> = REQUIRED_TASK_COLUMNS
        .iter()
        .copied()
        .filter(|c| !task_cols.iter().any(|p| p == c))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "{path:?}: table task_queue lacks the column{} {}, without which its rows are not tasks; \
             import-legacy expects {EXPECTED}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        )));
    }
    let missing_columns: Vec<String> = TASK_COLUMNS
        .iter()
        .filter(|c| !UNDOCUMENTED_COLUMNS.contains(c) && !task_cols.iter().any(|p| p == *c))
        .map(|c| c.to_string())
        .collect();
    let task_sql = format!(
        "SELECT {} FROM task_queue ORDER BY id",
        select_list(&task_cols, &TASK_COLUMNS)
    );
    let log_sql = if tables.iter().any(|t| t == "task_logs") {
        let cols = columns_of(&conn, "task_logs")?;
        let lacking: Vec<&str> = ["task_id", "message"]
            .into_iter()
            .filter(|c| !cols.iter().any(|p| p == c))
            .collect();
        if !lacking.is_empty() {
            return Err(Error::invalid(format!(
                "{path:?}: table task_logs lacks the column{} {}, so its lines cannot be attached to their tasks; \
                 import-legacy expects {EXPECTED}",
                if lacking.len() == 1 { "" } else { "s" },
                lacking.join(", ")
            )));
        }
        let order = if cols.iter().any(|c| c == "log_id") {
            "\"log_id\""
        } else {
            "rowid"
        };
        Some(format!(
            "SELECT {order}, {} FROM task_logs ORDER BY task_id, {order}",
            select_list(&cols, &["task_id", "at_utc", "level", "message", "details"])
        ))
    } else {
        None
    };
    let worker_sql = if tables.iter().any(|t| t == "workers") {
        let cols = columns_of(&conn, "workers")?;
        Some(format!(
            "SELECT {} FROM workers",
            select_list(&cols, &["worker_id", "capabilities", "heartbeat_utc"])
        ))
    } else {
        None
    };
    Ok(Source {
        conn,
        identity,
        task_sql,
        log_sql,
        worker_sql,
        missing_columns,
    })
}

/// Check an old file and count what it holds, without importing (and without writing anything).
pub fn inspect_legacy(source_path: &str) -> Result<LegacyInfo> {
    let src = open_source(source_path, Duration::from_secs(60))?;
    src.conn.execute_batch("BEGIN")?;
    let mut info = LegacyInfo {
        source: src.identity.clone(),
        missing_columns: src.missing_columns.clone(),
        ..Default::default()
    };
    let mut stmt = src.conn.prepare(
        "SELECT coalesce(CAST(status AS TEXT), ''), count(*) FROM task_queue GROUP BY 1",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let n: i64 = r.get(1)?;
        info.by_status.insert(r.get(0)?, n as u64);
        info.tasks += n as u64;
    }
    if src.log_sql.is_some() {
        info.logs = src
            .conn
            .query_row("SELECT count(*) FROM task_logs", [], |r| r.get::<_, i64>(0))?
            as u64;
    }
    if src.worker_sql.is_some() {
        info.workers = src
            .conn
            .query_row("SELECT count(*) FROM workers", [], |r| r.get::<_, i64>(0))?
            as u64;
    }
    Ok(info)
}

/// A time of the old file in UTC milliseconds. Text only: `YYYY-MM-DD HH:MM:SS[.fff]` (UTC),
/// ISO 8601 / RFC 3339 with `T` or a space and an offset or `Z` (converted to UTC), the same
/// without offset (UTC), with minutes only, or a bare date (midnight UTC).
pub fn parse_legacy_time(text: &str) -> Option<i64> {
    let s = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    // `Z` is an offset too; chrono's %#z wants digits.
    let zulu;
    let s = match s.strip_suffix(['Z', 'z']) {
        Some(head) => {
            zulu = format!("{head}+00:00");
            zulu.as_str()
        }
        None => s,
    };
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M%#z",
        "%Y-%m-%d %H:%M%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_millis());
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// One of the five levels of the new log, and whether `raw` was recognised.
fn normalise_level(raw: &Sql) -> (&'static str, Option<String>) {
    let by_number = |n: f64| match n {
        n if n <= 10.0 => "debug",
        n if n <= 20.0 => "info",
        n if n <= 30.0 => "warning",
        n if n <= 40.0 => "error",
        _ => "critical",
    };
    match raw {
        Sql::Null => ("info", None),
        Sql::Integer(n) => (by_number(*n as f64), None),
        Sql::Real(n) => (by_number(*n), None),
        Sql::Text(t) => {
            let l = t.trim().to_ascii_lowercase();
            let level = match l.as_str() {
                "" | "info" | "information" | "notice" | "note" => "info",
                "debug" | "trace" | "verbose" | "fine" | "finer" | "finest" => "debug",
                "warn" | "warning" => "warning",
                "error" | "err" | "exception" | "severe" => "error",
                "critical" | "crit" | "fatal" | "alert" | "emerg" | "emergency" => "critical",
                other => match other.parse::<f64>() {
                    Ok(n) if n.is_finite() => by_number(n),
                    _ => return ("info", Some(t.trim().to_string())),
                },
            };
            (level, None)
        }
        Sql::Blob(_) => ("info", Some("<blob>".into())),
    }
}

fn quote(v: &Sql) -> Option<String> {
    let s = match v {
        Sql::Null => return None,
        Sql::Integer(n) => n.to_string(),
        Sql::Real(f) => f.to_string(),
        Sql::Text(t) => t.clone(),
        Sql::Blob(b) => format!("<{} bytes of binary data>", b.len()),
    };
    Some(if s.chars().count() > MAX_QUOTED {
        let cut: String = s.chars().take(MAX_QUOTED).collect();
        format!("{cut}...")
    } else {
        s
    })
}

fn as_text(v: &Sql) -> Option<String> {
    match v {
        Sql::Null => None,
        Sql::Integer(n) => Some(n.to_string()),
        Sql::Real(f) => Some(f.to_string()),
        Sql::Text(t) => Some(t.clone()),
        Sql::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    }
}

/// An integer value (integral reals and numeric text accepted), or why not.
fn as_int(v: &Sql) -> std::result::Result<Option<i64>, String> {
    let from_f64 = |f: f64| {
        if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
            Ok(Some(f as i64))
        } else {
            Err("not an integer".to_string())
        }
    };
    match v {
        Sql::Null => Ok(None),
        Sql::Integer(n) => Ok(Some(*n)),
        Sql::Real(f) => from_f64(*f),
        Sql::Text(t) if t.trim().is_empty() => Ok(None),
        Sql::Text(t) => match t.trim().parse::<i64>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => t
                .trim()
                .parse::<f64>()
                .map_err(|_| "not an integer".to_string())
                .and_then(from_f64),
        },
        Sql::Blob(_) => Err("binary data, not an integer".into()),
    }
}

/// Text of a JSON column, checked, or why not. NULL is `None`.
fn as_json(v: &Sql) -> std::result::Result<Option<String>, String> {
    let text = match v {
        Sql::Null => return Ok(None),
        Sql::Integer(n) => return Ok(Some(n.to_string())),
        Sql::Real(f) if f.is_finite() => return Ok(Some(f.to_string())),
        Sql::Real(_) => return Err("not a finite number".into()),
        Sql::Text(t) => t.clone(),
        Sql::Blob(b) => String::from_utf8(b.clone()).map_err(|_| "binary data, not JSON text")?,
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| format!("not valid JSON ({e})"))?;
    Ok(Some(text))
}

fn as_time(v: &Sql) -> std::result::Result<Option<i64>, String> {
    match v {
        Sql::Null => Ok(None),
        Sql::Text(t) if t.trim().is_empty() => Ok(None),
        Sql::Text(t) => parse_legacy_time(t).map(Some).ok_or_else(|| {
            "not a time: expected YYYY-MM-DD HH:MM:SS or ISO 8601 with an offset (UTC)".to_string()
        }),
        _ => Err("not a time: expected text such as 2024-01-31 12:00:00".into()),
    }
}

/// A row of task_queue and its log lines, as read.
struct RawTask {
    vals: Vec<Sql>,
    logs: Vec<RawLog>,
    /// Its id was already seen earlier in this run (the old table does not enforce unique ids).
    duplicate: bool,
}

struct RawLog {
    log_id: Option<i64>,
    at: Sql,
    level: Sql,
    message: Sql,
    details: Sql,
}

/// A log line ready to insert.
struct NewLog {
    at: i64,
    level: &'static str,
    message: String,
    details: Option<String>,
}

/// A task row converted and checked, ready to insert.
struct Prepared {
    legacy_status: String,
    task_type: String,
    payload: String,
    priority: i64,
    status: Status,
    attempts: i64,
    max_attempts: i64,
    run_after: i64,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    locked_by: Option<String>,
    error: Option<String>,
    result: Option<String>,
    idempotency_key: Option<String>,
    requires: Option<Map<String, Value>>,
    lane_key: LaneKey,
    /// Lines the import adds to the task's log (after the old lines).
    notes: Vec<NewLog>,
    logs: Vec<NewLog>,
    log_problems: Vec<ImportProblem>,
    from_lease: bool,
    /// The old priority, when it was outside 1..=1000.
    clamped_from: Option<i64>,
    /// Defaults used for values the row did not have, for the report's notes.
    defaults: Vec<&'static str>,
}

fn problem(legacy_id: Option<i64>, column: &str, value: &Sql, reason: String) -> ImportProblem {
    ImportProblem {
        table: "task_queue".into(),
        legacy_id,
        log_id: None,
        column: column.into(),
        value: quote(value),
        reason,
        action: "skipped".into(),
    }
}

/// Convert one row, or list every value that stops it from being imported.
fn prepare(
    raw: &RawTask,
    legacy_id: i64,
    now: i64,
) -> std::result::Result<Prepared, Vec<ImportProblem>> {
    let v = &raw.vals;
    let mut problems = Vec::new();
    let mut bad = |col: usize, reason: String| {
        problems.push(problem(Some(legacy_id), TASK_COLUMNS[col], &v[col], reason));
    };
    let mut defaults = Vec::new();

    let task_type = as_text(&v[C_TYPE]).unwrap_or_default();
    if task_type.trim().is_empty() {
        bad(C_TYPE, "the task type is empty".into());
    }
    let legacy_status = as_text(&v[C_STATUS])
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (status, from_lease) = match legacy_status.as_str() {
        "queued" => (Status::Queued, false),
        "leased" | "processing" => (Status::Queued, true),
        "completed" => (Status::Completed, false),
        "failed" | "dead_letter" => (Status::Failed, false),
        "cancelled" | "canceled" => (Status::Cancelled, false),
        _ => {
            bad(
                C_STATUS,
                "unknown status: the older queue's statuses are queued, leased, processing, completed, failed, dead_letter"
                    .into(),
            );
            (Status::Queued, false)
        }
    };
    let payload = match as_json(&v[C_PAYLOAD]) {
        Ok(p) => p.unwrap_or_else(|| "null".into()),
        Err(e) => {
            bad(C_PAYLOAD, format!("the payload is {e}"));
            String::new()
        }
    };
    let compat_empty = matches!(&v[C_COMPAT], Sql::Text(t) if t.trim().is_empty());
    let requires = match as_json(&v[C_COMPAT]) {
        _ if compat_empty => None,
        Ok(None) => None,
        Ok(Some(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Null) => None,
            Ok(Value::Object(m)) if m.is_empty() => None,
            Ok(Value::Object(m)) => Some(m),
            Ok(_) => {
                bad(
                    C_COMPAT,
                    "compatibility must be a JSON object of required capabilities, such as {\"gpu\": true}".into(),
                );
                None
            }
            Err(e) => {
                bad(C_COMPAT, format!("not valid JSON ({e})"));
                None
            }
        },
        Err(e) => {
            bad(C_COMPAT, format!("compatibility is {e}"));
            None
        }
    };
    let result = match as_json(&v[C_RESULT]) {
        Ok(r) => r,
        Err(e) => {
            bad(C_RESULT, format!("the result is {e}"));
            None
        }
    };
    let mut int_of = |col: usize| match as_int(&v[col]) {
        Ok(n) => n,
        Err(e) => {
            bad(col, e);
            None
        }
    };
    let priority_raw = int_of(C_PRIORITY);
    let attempts = int_of(C_ATTEMPTS);
    let max_attempts = int_of(C_MAX_ATTEMPTS);
    let mut time_of = |col: usize| match as_time(&v[col]) {
        Ok(t) => t,
        Err(e) => {
            bad(col, e);
            None
        }
    };
    let run_after = time_of(C_RUN_AFTER);
    time_of(C_LEASE_UNTIL); // checked so a broken lease time is reported, not carried into a log
    let reserved_at = time_of(C_RESERVED_AT);
    let processing_started = time_of(C_STARTED);
    let finished = time_of(C_FINISHED);
    let created = time_of(C_CREATED);
    let updated = time_of(C_UPDATED);
    if !problems.is_empty() {
        return Err(problems);
    }

    let priority = match priority_raw {
        None => {
            defaults.push("priority");
            DEFAULT_PRIORITY
        }
        Some(p) => p.clamp(MIN_PRIORITY, MAX_PRIORITY),
    };
    let clamped_from = priority_raw.filter(|p| *p != priority);
    let attempts = attempts.unwrap_or(0).max(0);
    let max_attempts = match max_attempts {
        None => {
            defaults.push("max_attempts");
            DEFAULT_MAX_ATTEMPTS
        }
        Some(m) if m < 1 => {
            defaults.push("max_attempts below 1");
            1
        }
        Some(m) => m,
    };
    let created_at = match (created, updated) {
        (Some(c), _) => c,
        (None, Some(u)) => {
            defaults.push("created_at_utc");
            u
        }
        (None, None) => {
            defaults.push("created_at_utc");
            now
        }
    };
    let updated_at = updated.unwrap_or(created_at);
    let mut run_after = run_after.unwrap_or(created_at);
    if from_lease {
        run_after = run_after.min(now);
    }
    let finished_at = if status.is_terminal() {
        Some(finished.unwrap_or(updated_at))
    } else {
        None
    };
    let started_at = processing_started.or(reserved_at);
    let locked_by = as_text(&v[C_LOCKED_BY]).filter(|s| !s.is_empty());
    let idempotency_key = as_text(&v[C_IDEMPOTENCY]).filter(|s| !s.is_empty());

    let mut notes = Vec::new();
    if from_lease {
        let mut details = Map::new();
        details.insert("legacy_status".into(), Value::String(legacy_status.clone()));
        for (key, col) in [
            ("locked_by", C_LOCKED_BY),
            ("lease_until_utc", C_LEASE_UNTIL),
            ("reserved_at_utc", C_RESERVED_AT),
            ("processing_started_utc", C_STARTED),
        ] {
            if let Some(t) = as_text(&v[col]) {
                details.insert(key.into(), Value::String(t));
            }
        }
        notes.push(NewLog {
            at: now,
            level: "info",
            message: format!(
                "imported from a lease: the task was {legacy_status} by {} in the older queue{}; \
                 back to queued, claimable at once",
                locked_by.as_deref().unwrap_or("an unknown worker"),
                as_text(&v[C_LEASE_UNTIL])
                    .map(|t| format!(" (lease until {t})"))
                    .unwrap_or_default()
            ),
            details: Some(Value::Object(details).to_string()),
        });
    }
    if let Some(p) = clamped_from {
        notes.push(NewLog {
            at: now,
            level: "warning",
            message: format!(
                "priority {p} of the older queue is outside {MIN_PRIORITY}..{MAX_PRIORITY}: imported as {priority}"
            ),
            details: Some(serde_json::json!({ "legacy_priority": p }).to_string()),
        });
    }

    let mut logs = Vec::with_capacity(raw.logs.len());
    let mut log_problems = Vec::new();
    for l in &raw.logs {
        let at = match as_time(&l.at) {
            Ok(Some(t)) => t,
            Ok(None) => created_at,
            Err(reason) => {
                log_problems.push(ImportProblem {
                    table: "task_logs".into(),
                    legacy_id: Some(legacy_id),
                    log_id: l.log_id,
                    column: "at_utc".into(),
                    value: quote(&l.at),
                    reason,
                    action: "imported with the task's created time".into(),
                });
                created_at
            }
        };
        let (level, unknown) = normalise_level(&l.level);
        let message = as_text(&l.message).unwrap_or_default();
        let message = match unknown {
            Some(orig) => format!("[{orig}] {message}"),
            None => message,
        };
        let details = match &l.details {
            Sql::Null => None,
            other => match as_json(other) {
                Ok(d) => d,
                Err(_) => Some(Value::String(as_text(other).unwrap_or_default()).to_string()),
            },
        };
        logs.push(NewLog {
            at,
            level,
            message,
            details,
        });
    }

    Ok(Prepared {
        lane_key: (
            "default".into(),
            task_type.clone(),
            requires_text(&requires),
        ),
        legacy_status,
        task_type,
        payload,
        priority,
        status,
        attempts,
        max_attempts,
        run_after,
        created_at,
        started_at,
        finished_at,
        updated_at,
        locked_by: if status.is_terminal() {
            locked_by
        } else {
            None
        },
        error: as_text(&v[C_ERROR]),
        result,
        idempotency_key,
        requires,
        notes,
        logs,
        log_problems,
        from_lease,
        clamped_from,
        defaults,
    })
}

/// What one committed batch did.
#[derive(Default)]
struct BatchOutcome {
    imported: u64,
    mapped: u64,
    already: u64,
    invalid: u64,
    problems: Vec<ImportProblem>,
    by_status: BTreeMap<String, u64>,
    by_legacy_status: BTreeMap<String, u64>,
    requeued: u64,
    clamped: Vec<i64>,
    defaults: BTreeMap<&'static str, u64>,
    logs: u64,
}

fn insert_log(tx: &Connection, task_id: i64, l: &NewLog) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO task_logs (task_id, at, level, message, details) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![task_id, l.at, l.level, l.message, l.details])?;
    Ok(())
}

impl Queue {
    /// Import the older Python queue's file at `source_path` (see the module documentation).
    pub fn import_legacy(&self, source_path: &str) -> Result<ImportReport> {
        self.import_legacy_with(source_path, DEFAULT_BATCH_SIZE, &mut |_, _| Ok(()))
    }

    /// `import_legacy` with `batch_size` tasks per transaction, calling `progress(done, total)`
    /// once before the first batch and after every committed batch (`done` counts the rows of
    /// task_queue handled so far, whatever became of them). An error returned by `progress`
    /// stops the import there: the committed batches stay, and running it again resumes.
    pub fn import_legacy_with(
        &self,
        source_path: &str,
        batch_size: usize,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<ImportReport> {
        if batch_size == 0 {
            return Err(Error::invalid("batch_size must be at least 1"));
        }
        if let (Ok(own), Ok(given)) = (
            std::fs::canonicalize(self.path()),
            std::fs::canonicalize(source_path),
        ) {
            if own == given {
                return Err(Error::invalid(format!(
                    "{source_path:?} is this queue's own file: give the old database, and open the queue on a new path"
                )));
            }
        }
        let src = open_source(source_path, self.opts.db.busy_timeout)?;
        // One snapshot of the old file for the whole import.
        src.conn.execute_batch("BEGIN")?;
        let mut report = ImportReport {
            source: src.identity.clone(),
            ..Default::default()
        };
        report.total = src
            .conn
            .query_row("SELECT count(*) FROM task_queue", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
        if let Some(sql) = &src.worker_sql {
            let mut stmt = src.conn.prepare(sql)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                report.legacy_workers_total += 1;
                if report.legacy_workers.len() < MAX_LISTED_WORKERS {
                    report.legacy_workers.push(LegacyWorker {
                        worker_id: as_text(&r.get::<_, Sql>(0)?),
                        capabilities: as_text(&r.get::<_, Sql>(1)?),
                        heartbeat_utc: as_text(&r.get::<_, Sql>(2)?),
                    });
                }
            }
        }
        progress(0, report.total)?;

        let mut task_stmt = src.conn.prepare(&src.task_sql)?;
        let mut task_rows = task_stmt.query([])?;
        let mut log_stmt = match &src.log_sql {
            Some(sql) => Some(src.conn.prepare(sql)?),
            None => None,
        };
        let mut log_rows = match &mut log_stmt {
            Some(s) => Some(s.query([])?),
            None => None,
        };
        // The next log line not yet given to a task: (task_id if numeric, line).
        let mut pending: Option<(Option<i64>, RawLog)> = None;
        let mut orphans: Vec<Option<i64>> = Vec::new();
        let mut seen_ids: HashSet<i64> = HashSet::new();
        let mut done = 0u64;
        let mut totals = BatchOutcome::default();
        let mut new_lanes: Vec<(LaneKey, i64)> = Vec::new();
        let log_budget = batch_size.saturating_mul(LOGS_PER_TASK_BUDGET);

        loop {
            // Read a batch: tasks in id order, each with its log lines (merge join on task_id).
            let mut batch: Vec<RawTask> = Vec::with_capacity(batch_size.min(10_000));
            let mut batch_logs = 0usize;
            while batch.len() < batch_size && batch_logs < log_budget {
                let Some(r) = task_rows.next()? else { break };
                let vals = (0..TASK_COLUMNS.len())
                    .map(|i| r.get::<_, Sql>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let id = as_int(&vals[C_ID]).ok().flatten();
                let mut logs = Vec::new();
                if let (Some(id), Some(rows)) = (id, log_rows.as_mut()) {
                    loop {
                        if pending.is_none() {
                            let Some(l) = rows.next()? else { break };
                            let task_id = as_int(&l.get::<_, Sql>(1)?).ok().flatten();
                            pending = Some((
                                task_id,
                                RawLog {
                                    log_id: as_int(&l.get::<_, Sql>(0)?).ok().flatten(),
                                    at: l.get(2)?,
                                    level: l.get(3)?,
                                    message: l.get(4)?,
                                    details: l.get(5)?,
                                },
                            ));
                        }
                        let (tid, _) = pending.as_ref().unwrap();
                        match *tid {
                            Some(t) if t > id => break,
                            Some(t) if t == id => logs.push(pending.take().unwrap().1),
                            _ => orphans.push(pending.take().unwrap().1.log_id),
                        }
                    }
                }
                batch_logs += logs.len();
                let duplicate = id.is_some_and(|id| !seen_ids.insert(id));
                batch.push(RawTask {
                    vals,
                    logs,
                    duplicate,
                });
            }
            if batch.is_empty() {
                break;
            }
            let outcome = self.write_batch(&src.identity, &batch, &mut new_lanes)?;
            if !new_lanes.is_empty() {
                let mut cache = self.lanes.lock();
                for (key, id) in new_lanes.drain(..) {
                    cache.remember(key, id);
                }
            }
            merge(&mut totals, outcome);
            done += batch.len() as u64;
            progress(done, report.total)?;
        }
        if let Some(rows) = log_rows.as_mut() {
            if let Some((_, l)) = pending.take() {
                orphans.push(l.log_id);
            }
            while let Some(l) = rows.next()? {
                orphans.push(as_int(&l.get::<_, Sql>(0)?).ok().flatten());
            }
        }
        drop(task_rows);
        drop(log_rows);
        drop(task_stmt);
        drop(log_stmt);
        src.conn.execute_batch("COMMIT")?;

        finish_report(&mut report, totals, &orphans, &src.missing_columns);
        Ok(report)
    }

    /// Write one batch in one transaction. Runs again from the start if the database was busy,
    /// so it only touches `tx` and returns what it did.
    fn write_batch(
        &self,
        source: &str,
        batch: &[RawTask],
        new_lanes: &mut Vec<(LaneKey, i64)>,
    ) -> Result<BatchOutcome> {
        self.db.write(|tx| {
            new_lanes.clear();
            let now = now_ms();
            let (race, mut floor) = read_insert_meta(tx)?;
            let mut out = BatchOutcome::default();
            for raw in batch {
                let legacy_id = match as_int(&raw.vals[C_ID]) {
                    Ok(Some(id)) => id,
                    Ok(None) | Err(_) => {
                        out.invalid += 1;
                        out.problems.push(problem(
                            None,
                            "id",
                            &raw.vals[C_ID],
                            "the id is not an integer, so the row cannot be tracked as imported".into(),
                        ));
                        continue;
                    }
                };
                if raw.duplicate {
                    out.invalid += 1;
                    out.problems.push(problem(
                        Some(legacy_id),
                        "id",
                        &raw.vals[C_ID],
                        "this id appears more than once in task_queue: only its first row is imported".into(),
                    ));
                    continue;
                }
                let already = tx
                    .prepare_cached(
                        "SELECT 1 FROM legacy_imports WHERE source = ?1 AND legacy_id = ?2",
                    )?
                    .exists(params![source, legacy_id])?;
                if already {
                    out.already += 1;
                    continue;
                }
                let p = match prepare(raw, legacy_id, now) {
                    Ok(p) => p,
                    Err(problems) => {
                        out.invalid += 1;
                        out.problems.extend(problems);
                        continue;
                    }
                };
                let existing: Option<i64> = match &p.idempotency_key {
                    Some(key) => tx
                        .prepare_cached("SELECT id FROM tasks WHERE idempotency_key = ?1")?
                        .query_row([key], |r| r.get(0))
                        .optional()?,
                    None => None,
                };
                let task_id = match existing {
                    Some(task_id) => {
                        for l in &p.logs {
                            insert_log(tx, task_id, l)?;
                        }
                        insert_log(
                            tx,
                            task_id,
                            &NewLog {
                                at: now,
                                level: "info",
                                message: format!(
                                    "task {legacy_id} of the older queue ({}) has this task's idempotency key: \
                                     mapped to this task instead of importing a duplicate",
                                    p.legacy_status
                                ),
                                details: Some(
                                    serde_json::json!({ "legacy_source": source, "legacy_id": legacy_id })
                                        .to_string(),
                                ),
                            },
                        )?;
                        out.mapped += 1;
                        task_id
                    }
                    None => {
                        let lane_id = self.lane_id_in(tx, &p.lane_key, new_lanes)?;
                        tx.prepare_cached(
                            "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, attempts, max_attempts,
                                                run_after, wkey, created_at, started_at, finished_at, updated_at,
                                                locked_by, error, result, progress, idempotency_key, requires)
                             VALUES (?1, ?2, 'default', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                                     ?17, ?18, ?19)",
                        )?
                        .execute(params![
                            lane_id,
                            p.task_type,
                            p.payload,
                            p.priority,
                            p.status.as_str(),
                            p.attempts,
                            p.max_attempts,
                            p.run_after,
                            race.key(p.priority),
                            p.created_at,
                            p.started_at,
                            p.finished_at,
                            p.updated_at,
                            p.locked_by,
                            p.error,
                            p.result,
                            (p.status == Status::Completed).then_some(100.0),
                            p.idempotency_key,
                            p.requires.as_ref().map(|m| Value::Object(m.clone()).to_string()),
                        ])?;
                        let task_id = floor.place(tx, tx.last_insert_rowid())?;
                        for l in p.logs.iter().chain(&p.notes) {
                            insert_log(tx, task_id, l)?;
                        }
                        out.imported += 1;
                        *out.by_status.entry(p.status.as_str().into()).or_default() += 1;
                        *out.by_legacy_status.entry(p.legacy_status.clone()).or_default() += 1;
                        out.requeued += p.from_lease as u64;
                        out.clamped.extend(p.clamped_from);
                        for d in &p.defaults {
                            *out.defaults.entry(d).or_default() += 1;
                        }
                        task_id
                    }
                };
                out.logs += p.logs.len() as u64;
                out.problems.extend(p.log_problems.iter().cloned());
                tx.prepare_cached(
                    "INSERT INTO legacy_imports (source, legacy_id, task_id) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![source, legacy_id, task_id])?;
            }
            Ok(out)
        })
    }
}

fn merge(t: &mut BatchOutcome, o: BatchOutcome) {
    t.imported += o.imported;
    t.mapped += o.mapped;
    t.already += o.already;
    t.invalid += o.invalid;
    t.problems.extend(o.problems);
    for (k, v) in o.by_status {
        *t.by_status.entry(k).or_default() += v;
    }
    for (k, v) in o.by_legacy_status {
        *t.by_legacy_status.entry(k).or_default() += v;
    }
    t.requeued += o.requeued;
    t.clamped.extend(o.clamped);
    for (k, v) in o.defaults {
        *t.defaults.entry(k).or_default() += v;
    }
    t.logs += o.logs;
}

fn finish_report(
    r: &mut ImportReport,
    t: BatchOutcome,
    orphans: &[Option<i64>],
    missing_columns: &[String],
) {
    r.imported = t.imported;
    r.mapped_to_existing = t.mapped;
    r.skipped_already_imported = t.already;
    r.skipped_invalid = t.invalid;
    r.by_status = t.by_status;
    r.by_legacy_status = t.by_legacy_status;
    r.requeued_from_lease = t.requeued;
    r.priority_clamped = t.clamped.len() as u64;
    r.logs_imported = t.logs;
    r.logs_orphaned = orphans.len() as u64;
    r.problem_count = t.problems.len() as u64;
    r.problems = t.problems;
    r.problems.truncate(MAX_LISTED_PROBLEMS);

    if !missing_columns.is_empty() {
        r.notes.push(format!(
            "task_queue has no column {}: read as empty (defaults used)",
            missing_columns.join(", ")
        ));
    }
    if let (Some(lo), Some(hi)) = (t.clamped.iter().min(), t.clamped.iter().max()) {
        r.notes.push(format!(
            "{} task{} had a priority outside {MIN_PRIORITY}..{MAX_PRIORITY} (from {lo} to {hi}) and {} clamped into it; \
             each has a warning in its log",
            t.clamped.len(),
            if t.clamped.len() == 1 { "" } else { "s" },
            if t.clamped.len() == 1 { "was" } else { "were" },
        ));
    }
    if t.requeued > 0 {
        r.notes.push(format!(
            "{} leased or processing task{} came back as queued, claimable at once",
            t.requeued,
            if t.requeued == 1 { "" } else { "s" }
        ));
    }
    for (what, n) in &t.defaults {
        let used = match *what {
            "priority" => format!("no priority: {DEFAULT_PRIORITY} used"),
            "max_attempts" => format!("no max_attempts: {DEFAULT_MAX_ATTEMPTS} used"),
            "max_attempts below 1" => "max_attempts below 1: 1 used".to_string(),
            _ => "no created_at_utc: updated_at_utc or the import time used".to_string(),
        };
        r.notes.push(format!(
            "{n} task{} had {used}",
            if *n == 1 { "" } else { "s" }
        ));
    }
    if r.problem_count > r.problems.len() as u64 {
        r.notes.push(format!(
            "{} problems are not listed (the first {MAX_LISTED_PROBLEMS} are)",
            r.problem_count - r.problems.len() as u64
        ));
    }
    if !orphans.is_empty() {
        let ids: Vec<String> = orphans
            .iter()
            .take(10)
            .map(|i| i.map(|i| i.to_string()).unwrap_or_else(|| "?".into()))
            .collect();
        r.notes.push(format!(
            "{} log line{} of task_logs {} to no task of task_queue and {} not imported (log_id {}{})",
            orphans.len(),
            if orphans.len() == 1 { "" } else { "s" },
            if orphans.len() == 1 { "belongs" } else { "belong" },
            if orphans.len() == 1 { "was" } else { "were" },
            ids.join(", "),
            if orphans.len() > 10 { ", ..." } else { "" }
        ));
    }
    if r.legacy_workers_total > 0 {
        r.notes.push(format!(
            "{} worker{} of the older queue {} not imported: start the new workers with the same capabilities (the report lists \
             them in legacy_workers); they register themselves with their first heartbeat",
            r.legacy_workers_total,
            if r.legacy_workers_total == 1 { "" } else { "s" },
            if r.legacy_workers_total == 1 { "was" } else { "were" },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::ClaimRequest;
    use crate::queue::testutil::file_queue;
    use serde_json::json;

    const LEGACY_SCHEMA: &str = "
        CREATE TABLE task_queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, priority INTEGER DEFAULT 100,
            payload TEXT, compatibility TEXT, status TEXT, attempts INTEGER DEFAULT 0,
            max_attempts INTEGER DEFAULT 3, run_after_utc TEXT, lease_until_utc TEXT, reserved_at_utc TEXT,
            processing_started_utc TEXT, finished_at_utc TEXT, locked_by TEXT, error_message TEXT,
            idempotency_key TEXT UNIQUE, created_at_utc TEXT, updated_at_utc TEXT);
        CREATE TABLE workers (worker_id TEXT PRIMARY KEY, capabilities TEXT, heartbeat_utc TEXT);
        CREATE TABLE task_logs (log_id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER, at_utc TEXT,
            level TEXT, message TEXT, details TEXT);";

    fn ms(s: &str) -> i64 {
        parse_legacy_time(s).unwrap()
    }

    /// An old-format file at `dir/old.db` with the given extra SQL run after the schema.
    fn legacy_file(dir: &Path, sql: &str) -> String {
        let path = dir.join("old.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(LEGACY_SCHEMA).unwrap();
        c.execute_batch(sql).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn task_id_of(q: &Queue, legacy_id: i64) -> Option<i64> {
        q.db.read(|c| {
            Ok(c.query_row(
                "SELECT task_id FROM legacy_imports WHERE legacy_id = ?1",
                [legacy_id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .unwrap()
    }

    #[test]
    fn times_in_both_formats_become_utc_milliseconds() {
        let base = 1_704_164_645_000; // 2024-01-02 03:04:05 UTC
        for s in [
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05+00:00",
            "2024-01-02 03:04:05+00:00",
            "2024-01-02T05:04:05+02:00",
            "2024-01-02T00:04:05-0300",
            " 2024-01-02 03:04:05 ",
        ] {
            assert_eq!(parse_legacy_time(s), Some(base), "{s}");
        }
        for (s, extra) in [
            ("2024-01-02 03:04:05.25", 250),
            ("2024-01-02T03:04:05.123456+00:00", 123),
            ("2024-01-02T03:04:05.5Z", 500),
            ("2024-01-02 03:04", -5000),
            ("2024-01-02", -(3 * 3600 + 4 * 60 + 5) * 1000),
        ] {
            assert_eq!(parse_legacy_time(s), Some(base + extra), "{s}");
        }
        for bad in [
            "yesterday",
            "2024-13-01 00:00:00",
            "2024-01-02 25:00:00",
            "1704164645",
            "",
        ] {
            assert_eq!(parse_legacy_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_levels_are_normalised() {
        let t = |s: &str| normalise_level(&Sql::Text(s.into()));
        assert_eq!(t("INFO"), ("info", None));
        assert_eq!(t("Warn"), ("warning", None));
        assert_eq!(t("ERROR"), ("error", None));
        assert_eq!(t("fatal"), ("critical", None));
        assert_eq!(t("trace"), ("debug", None));
        assert_eq!(t("40"), ("error", None));
        assert_eq!(normalise_level(&Sql::Integer(10)), ("debug", None));
        assert_eq!(normalise_level(&Sql::Null), ("info", None));
        assert_eq!(t("loud"), ("info", Some("loud".into())));
    }

    #[test]
    fn every_status_and_field_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        let old = legacy_file(
            dir.path(),
            r#"
            INSERT INTO task_queue VALUES
              (1, 'email', 5, '{"to": "a@x"}', '{}', 'queued', 0, 3, '2030-01-01 00:00:00', NULL, NULL, NULL, NULL,
               NULL, NULL, 'k1', '2024-01-02 03:04:05', '2024-01-02T03:04:06+00:00'),
              (2, 'render', 2000, '[1, 2.50, "x"]', '{"gpu": true}', 'leased', 1, 3, '2024-01-02 03:00:00',
               '2024-01-02 03:10:00', '2024-01-02 03:05:00', NULL, NULL, 'w1', NULL, NULL,
               '2024-01-02T03:00:00Z', '2024-01-02T03:05:00Z'),
              (3, 'render', -4, 'null', NULL, 'processing', 2, 2, NULL, NULL, NULL, '2024-01-02 04:00:00', NULL,
               'w2', NULL, NULL, '2024-01-02 03:00:00', NULL),
              (4, 'email', 100, '{}', 'null', 'completed', 1, 3, NULL, NULL, NULL, '2024-01-02 03:04:05',
               '2024-01-02 03:04:09.5', 'w1', NULL, NULL, '2024-01-02 03:00:00', '2024-01-02 03:04:09'),
              (5, 'email', 100, '{}', NULL, 'failed', 3, 3, NULL, NULL, NULL, NULL, '2024-01-02 05:00:00',
               'w1', 'boom', NULL, '2024-01-02 03:00:00', '2024-01-02 05:00:00'),
              (6, 'email', 100, '{}', NULL, 'dead_letter', 3, 3, NULL, NULL, NULL, NULL, NULL, NULL, 'gave up',
               NULL, '2024-01-02 03:00:00', '2024-01-02 06:00:00');
            INSERT INTO task_logs (task_id, at_utc, level, message, details) VALUES
              (4, '2024-01-02 03:04:05', 'INFO', 'started', '{"n": 1}'),
              (4, '2024-01-02T03:04:09Z', 'Warn', 'slow', 'plain text'),
              (4, 'garbage', 'trace2', 'odd', NULL),
              (99, '2024-01-02 03:04:05', 'error', 'orphan', NULL);
            INSERT INTO workers VALUES ('w1', '{"gpu": true}', '2024-01-02 03:05:00');"#,
        );
        let before = std::fs::read(&old).unwrap();
        let (_d, q) = file_queue();
        let mut calls = Vec::new();
        let r = q
            .import_legacy_with(&old, 4, &mut |d, t| {
                calls.push((d, t));
                Ok(())
            })
            .unwrap();
        assert_eq!(calls, vec![(0, 6), (4, 6), (6, 6)]);
        assert_eq!((r.total, r.imported, r.skipped_invalid), (6, 6, 0));
        assert_eq!(
            r.by_status,
            BTreeMap::from([
                ("completed".into(), 1),
                ("failed".into(), 2),
                ("queued".into(), 3)
            ])
        );
        assert_eq!(r.by_legacy_status["dead_letter"], 1);
        assert_eq!((r.requeued_from_lease, r.priority_clamped), (2, 2));
        assert_eq!((r.logs_imported, r.logs_orphaned), (3, 1));
        assert!(
            r.notes.iter().any(|n| n.contains("from -4 to 2000")),
            "{:?}",
            r.notes
        );
        assert_eq!(r.legacy_workers_total, 1);
        assert_eq!(
            r.legacy_workers[0].capabilities.as_deref(),
            Some(r#"{"gpu": true}"#)
        );
        assert_eq!(r.problem_count, 1, "{:?}", r.problems);
        assert_eq!(
            (r.problems[0].log_id, r.problems[0].column.as_str()),
            (Some(3), "at_utc")
        );

        let t1 = q.get(task_id_of(&q, 1).unwrap()).unwrap();
        assert_eq!(
            (
                t1.task_type.as_str(),
                t1.payload.as_str(),
                t1.priority,
                t1.status
            ),
            ("email", r#"{"to": "a@x"}"#, 5, Status::Queued)
        );
        assert_eq!(
            (t1.requires.as_deref(), t1.idempotency_key.as_deref()),
            (None, Some("k1"))
        );
        assert_eq!(t1.run_after, ms("2030-01-01 00:00:00"));
        assert_eq!(
            (t1.created_at, t1.updated_at),
            (ms("2024-01-02 03:04:05"), ms("2024-01-02 03:04:06"))
        );

        let t2 = q.get(task_id_of(&q, 2).unwrap()).unwrap();
        assert_eq!(
            t2.payload, "[1, 2.50, \"x\"]",
            "payload text kept byte for byte"
        );
        assert_eq!(
            (t2.status, t2.priority, t2.attempts),
            (Status::Queued, 1000, 1)
        );
        assert_eq!((t2.locked_by, t2.lease_until), (None, None));
        assert_eq!(t2.requires.as_deref(), Some(r#"{"gpu":true}"#));
        assert_eq!(t2.run_after, ms("2024-01-02 03:00:00"));
        let logs = q.logs(t2.id, 10).unwrap();
        assert!(logs
            .iter()
            .any(|l| l.message.starts_with("imported from a lease") && l.message.contains("w1")));
        assert!(logs
            .iter()
            .any(|l| l.level == "warning" && l.message.contains("priority 2000")));

        let t3 = q.get(task_id_of(&q, 3).unwrap()).unwrap();
        assert_eq!(
            (t3.status, t3.priority, t3.attempts, t3.max_attempts),
            (Status::Queued, 1, 2, 2)
        );
        assert!(t3.run_after <= now_ms());
        assert_eq!(t3.started_at, Some(ms("2024-01-02 04:00:00")));

        let t4 = q.get(task_id_of(&q, 4).unwrap()).unwrap();
        assert_eq!(
            (t4.status, t4.locked_by.as_deref()),
            (Status::Completed, Some("w1"))
        );
        assert_eq!(t4.finished_at, Some(ms("2024-01-02 03:04:09.5")));
        let logs = q.logs(t4.id, 10).unwrap();
        let summary: Vec<(&str, &str, Option<&str>)> = logs
            .iter()
            .map(|l| (l.level.as_str(), l.message.as_str(), l.details.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("info", "started", Some(r#"{"n": 1}"#)),
                ("warning", "slow", Some(r#""plain text""#)),
                ("info", "[trace2] odd", None),
            ]
        );
        assert_eq!(logs[0].at, ms("2024-01-02 03:04:05"));
        assert_eq!(
            logs[2].at, t4.created_at,
            "an unreadable log time falls back to the task's"
        );

        let t5 = q.get(task_id_of(&q, 5).unwrap()).unwrap();
        assert_eq!(
            (t5.status, t5.error.as_deref()),
            (Status::Failed, Some("boom"))
        );
        let t6 = q.get(task_id_of(&q, 6).unwrap()).unwrap();
        assert_eq!(
            (t6.status, t6.finished_at),
            (Status::Failed, Some(ms("2024-01-02 06:00:00")))
        );

        // Routing: the GPU task only goes to a worker that has a GPU.
        let mut cpu = ClaimRequest::new("cpu");
        cpu.limit = 10;
        let got: Vec<i64> = q.claim(&cpu).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(got, vec![t3.id]);
        let mut gpu = ClaimRequest::new("gpu");
        gpu.filter.capabilities = json!({"gpu": true}).as_object().cloned();
        assert_eq!(q.claim(&gpu).unwrap()[0].id, t2.id);

        // Twice: nothing new, and the old file is byte for byte the same.
        let again = q.import_legacy(&old).unwrap();
        assert_eq!(
            (
                again.imported,
                again.skipped_already_imported,
                again.logs_imported
            ),
            (0, 6, 0)
        );
        assert_eq!(q.stats(None).unwrap().total, 6);
        assert_eq!(std::fs::read(&old).unwrap(), before);
    }

    #[test]
    fn bad_rows_are_skipped_reported_and_imported_once_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let old = legacy_file(
            dir.path(),
            r#"
            INSERT INTO task_queue (id, type, payload, status, created_at_utc) VALUES
              (1, 'a', '{"ok": 1}', 'queued', '2024-01-02 03:04:05'),
              (2, 'a', '{broken', 'queued', '2024-01-02 03:04:05'),
              (3, 'a', '{}', 'queued', 'next tuesday'),
              (4, 'a', '{}', 'paused', '2024-01-02 03:04:05'),
              (5, 'a', '{}', 'queued', '2024-01-02 03:04:05');
            UPDATE task_queue SET compatibility = '["gpu"]' WHERE id = 5;
            INSERT INTO task_logs (task_id, at_utc, level, message) VALUES (2, '2024-01-02 03:04:05', 'info', 'two');"#,
        );
        let (_d, q) = file_queue();
        let r = q.import_legacy(&old).unwrap();
        assert_eq!((r.imported, r.skipped_invalid), (1, 4));
        let cols: Vec<(Option<i64>, &str)> = r
            .problems
            .iter()
            .map(|p| (p.legacy_id, p.column.as_str()))
            .collect();
        assert_eq!(
            cols,
            vec![
                (Some(2), "payload"),
                (Some(3), "created_at_utc"),
                (Some(4), "status"),
                (Some(5), "compatibility")
            ]
        );
        assert!(r.problems.iter().all(|p| p.action == "skipped"));
        assert_eq!(r.problems[0].value.as_deref(), Some("{broken"));
        assert_eq!(
            r.logs_orphaned, 0,
            "a skipped row's logs wait for it, they are not orphans"
        );

        let c = Connection::open(&old).unwrap();
        c.execute_batch(
            "UPDATE task_queue SET payload = '{\"fixed\": true}' WHERE id = 2;
             UPDATE task_queue SET status = 'queued' WHERE id = 4;",
        )
        .unwrap();
        drop(c);
        let r = q.import_legacy(&old).unwrap();
        assert_eq!(
            (
                r.imported,
                r.skipped_already_imported,
                r.skipped_invalid,
                r.logs_imported
            ),
            (2, 1, 2, 1)
        );
        let t2 = q.get(task_id_of(&q, 2).unwrap()).unwrap();
        assert_eq!(t2.payload, r#"{"fixed": true}"#);
        assert_eq!(q.logs(t2.id, 10).unwrap()[0].message, "two");
    }

    #[test]
    fn an_idempotency_key_already_in_the_queue_maps_to_that_task() {
        let dir = tempfile::tempdir().unwrap();
        let old = legacy_file(
            dir.path(),
            "INSERT INTO task_queue (id, type, payload, status, idempotency_key) VALUES
               (1, 'a', '1', 'queued', 'same'), (2, 'a', '2', 'completed', 'fresh');
             INSERT INTO task_logs (task_id, at_utc, level, message) VALUES (1, '2024-01-02 03:04:05', 'info', 'old line');",
        );
        let (_d, q) = file_queue();
        let mut t = crate::enqueue::NewTask::new("a", "0");
        t.idempotency_key = Some("same".into());
        let existing = q.enqueue(&t).unwrap();
        let r = q.import_legacy(&old).unwrap();
        assert_eq!((r.imported, r.mapped_to_existing), (1, 1));
        assert_eq!(task_id_of(&q, 1), Some(existing));
        assert_eq!(
            q.get(existing).unwrap().payload,
            "0",
            "the existing task is not overwritten"
        );
        let logs = q.logs(existing, 10).unwrap();
        assert_eq!(logs[0].message, "old line");
        assert!(
            logs[1].message.contains("idempotency key"),
            "{}",
            logs[1].message
        );
        assert_eq!(q.stats(None).unwrap().total, 2);
        let r = q.import_legacy(&old).unwrap();
        assert_eq!(
            (r.imported, r.mapped_to_existing, r.skipped_already_imported),
            (0, 0, 2)
        );
    }

    #[test]
    fn an_interrupted_import_resumes_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let old = legacy_file(
            dir.path(),
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25)
             INSERT INTO task_queue (id, type, payload, status) SELECT i, 't', i, 'queued' FROM n;
             INSERT INTO task_logs (task_id, at_utc, level, message) SELECT id, NULL, 'info', 'x' FROM task_queue;",
        );
        let (_d, q) = file_queue();
        let e = q
            .import_legacy_with(&old, 10, &mut |done, _| {
                if done >= 10 {
                    Err(Error::Database("stopped".into()))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "stopped");
        assert_eq!(
            q.stats(None).unwrap().total,
            10,
            "the first batch committed whole"
        );
        let r = q.import_legacy_with(&old, 10, &mut |_, _| Ok(())).unwrap();
        assert_eq!(
            (r.imported, r.skipped_already_imported, r.logs_imported),
            (15, 10, 15)
        );
        assert_eq!(q.stats(None).unwrap().total, 25);
        let log_count: i64 =
            q.db.read(|c| Ok(c.query_row("SELECT count(*) FROM task_logs", [], |r| r.get(0))?))
                .unwrap();
        assert_eq!(log_count, 25);
    }

    #[test]
    fn what_is_not_a_legacy_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_d, q) = file_queue();
        let text = dir.path().join("notes.txt");
        std::fs::write(
            &text,
            "just some text, long enough to look like a file with a header",
        )
        .unwrap();
        let e = q.import_legacy(text.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(
            e.to_string().contains("is not a SQLite database")
                && e.to_string().contains("task_queue"),
            "{e}"
        );

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE jobs (id INTEGER)")
            .unwrap();
        let e = q
            .import_legacy(other.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no table task_queue (it has the tables jobs)"),
            "{e}"
        );

        let partial = dir.path().join("partial.db");
        Connection::open(&partial)
            .unwrap()
            .execute_batch("CREATE TABLE task_queue (id INTEGER, type TEXT)")
            .unwrap();
        let e = q
            .import_legacy(partial.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("lacks the columns payload, status"), "{e}");

        let e = q.import_legacy(q.path()).unwrap_err().to_string();
        assert!(e.contains("own file"), "{e}");
        let e = q
            .import_legacy(dir.path().join("missing.db").to_str().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!dir.path().join("missing.db").exists());
        assert_eq!(q.stats(None).unwrap().total, 0);
    }

    #[test]
    fn inspect_counts_without_importing() {
        let dir = tempfile::tempdir().unwrap();
        let old = legacy_file(
            dir.path(),
            "INSERT INTO task_queue (id, type, payload, status) VALUES (1, 'a', '1', 'queued'), (2, 'a', '1', 'leased');",
        );
        let info = inspect_legacy(&old).unwrap();
        assert_eq!((info.tasks, info.logs, info.workers), (2, 0, 0));
        assert_eq!(info.by_status["leased"], 1);
        assert!(info.missing_columns.is_empty());
    }
}
