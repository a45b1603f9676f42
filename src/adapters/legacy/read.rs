//! Reading the old file: opening it read-only and checking its shape, its values as the import
//! reads them, and its tasks in batches with their log lines.

use super::report::{LegacyInfo, LegacyWorker};
use super::MAX_LISTED_WORKERS;
use crate::model::error::{Error, Result};
use crate::model::paths::{canonical, shown};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, ErrorCode, OpenFlags, Rows};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// Values quoted in problems are cut to this many characters.
const MAX_QUOTED: usize = 200;

/// What `task_queue` must have: without these a row is not a task.
const REQUIRED_TASK_COLUMNS: [&str; 4] = ["id", "type", "payload", "status"];
/// Every column read from `task_queue`, in the order of the SELECT. Absent optional columns are
/// read as NULL (and named in a note); `result` is not part of the documented format and is
/// imported only when present.
pub(super) const TASK_COLUMNS: [&str; 19] = [
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
pub(super) const C_ID: usize = 0;
pub(super) const C_TYPE: usize = 1;
pub(super) const C_PAYLOAD: usize = 2;
pub(super) const C_STATUS: usize = 3;
pub(super) const C_PRIORITY: usize = 4;
pub(super) const C_COMPAT: usize = 5;
pub(super) const C_ATTEMPTS: usize = 6;
pub(super) const C_MAX_ATTEMPTS: usize = 7;
pub(super) const C_RUN_AFTER: usize = 8;
pub(super) const C_LEASE_UNTIL: usize = 9;
pub(super) const C_RESERVED_AT: usize = 10;
pub(super) const C_STARTED: usize = 11;
pub(super) const C_FINISHED: usize = 12;
pub(super) const C_LOCKED_BY: usize = 13;
pub(super) const C_ERROR: usize = 14;
pub(super) const C_IDEMPOTENCY: usize = 15;
pub(super) const C_CREATED: usize = 16;
pub(super) const C_UPDATED: usize = 17;
pub(super) const C_RESULT: usize = 18;

/// The old file, opened read-only and checked.
pub(super) struct Source {
    pub(super) conn: Connection,
    pub(super) identity: String,
    pub(super) task_sql: String,
    /// None when the file has no task_logs table.
    pub(super) log_sql: Option<String>,
    pub(super) worker_sql: Option<String>,
    pub(super) missing_columns: Vec<String>,
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

/// Open the old file at `path` read-only and check that it is one: every refusal says what
/// import-legacy expects.
pub(super) fn open_source(path: &str, busy_timeout: Duration) -> Result<Source> {
    let identity = identity_of(path)?;
    let (conn, tables) = open_read_only(path, busy_timeout)?;
    if !tables.iter().any(|t| t == "task_queue") {
        return Err(not_a_legacy_file(path, &tables));
    }
    let (task_sql, missing_columns) = task_select(&conn, path)?;
    let log_sql = match tables.iter().any(|t| t == "task_logs") {
        true => Some(log_select(&conn, path)?),
        false => None,
    };
    let worker_sql = match tables.iter().any(|t| t == "workers") {
        true => Some(format!(
            "SELECT {} FROM workers",
            select_list(
                &columns_of(&conn, "workers")?,
                &["worker_id", "capabilities", "heartbeat_utc"]
            )
        )),
        false => None,
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

/// The source's identity (its canonical absolute path), once it is known to be a file.
fn identity_of(path: &str) -> Result<String> {
    let p = Path::new(path);
    if path.is_empty() {
        return Err(Error::invalid(format!(
            "give the path of the old database: import-legacy expects {EXPECTED}"
        )));
    }
    if !p.exists() {
        return Err(Error::invalid(format!(
            "{path} does not exist: import-legacy expects {EXPECTED}",
            path = shown(path)
        )));
    }
    if p.is_dir() {
        return Err(Error::invalid(format!(
            "{path} is a directory: import-legacy expects {EXPECTED}",
            path = shown(path)
        )));
    }
    Ok(canonical(p)
        .map_err(|e| Error::invalid(format!("cannot resolve {path}: {e}", path = shown(path))))?
        .to_string_lossy()
        .into_owned())
}

/// A read-only, query-only connection on the file, and its tables' names (lower case).
fn open_read_only(path: &str, busy_timeout: Duration) -> Result<(Connection, Vec<String>)> {
    let conn = Connection::open_with_flags(
        Path::new(path),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        Error::invalid(format!(
            "cannot open {path} read-only: {e}",
            path = shown(path)
        ))
    })?;
    let not_sqlite = |e: rusqlite::Error| -> Error {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Error::invalid(format!(
                "{path} is not a SQLite database (or it is encrypted or damaged): import-legacy expects {EXPECTED}",
                path = shown(path)
            )),
            Some(ErrorCode::ReadOnly) => Error::invalid(format!(
                "{path} has an unfinished transaction of the old application (a hot journal), which a read-only \
                 import cannot roll back: open it once with the old application or the sqlite3 shell, then import",
                path = shown(path)
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
    Ok((conn, tables))
}

/// The refusal of a file without `task_queue`, saying what it holds instead.
fn not_a_legacy_file(path: &str, tables: &[String]) -> Error {
    let found = if tables.is_empty() {
        "it has no tables".to_string()
    } else if tables.iter().any(|t| t == "tasks") && tables.iter().any(|t| t == "lanes") {
        "it is a prismq_queue database already".to_string()
    } else {
        format!("it has the tables {}", tables.join(", "))
    };
    Error::invalid(format!(
        "{path} is not a database of the older Python queue: it has no table task_queue ({found}); \
         import-legacy expects {EXPECTED}",
        path = shown(path)
    ))
}

/// The SELECT of `task_queue` (absent optional columns read as NULL) and the documented columns
/// it lacks; refused when a required column is missing.
fn task_select(conn: &Connection, path: &str) -> Result<(String, Vec<String>)> {
    let task_cols = columns_of(conn, "task_queue")?;
    let missing: Vec<&str> = REQUIRED_TASK_COLUMNS
        .iter()
        .copied()
        .filter(|c| !task_cols.iter().any(|p| p == c))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "{path}: table task_queue lacks the column{} {}, without which its rows are not tasks; \
             import-legacy expects {EXPECTED}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "), path = shown(path)
        )));
    }
    let missing_columns: Vec<String> = TASK_COLUMNS
        .iter()
        .filter(|c| !UNDOCUMENTED_COLUMNS.contains(c) && !task_cols.iter().any(|p| p == *c))
        .map(|c| c.to_string())
        .collect();
    let sql = format!(
        "SELECT {} FROM task_queue ORDER BY id",
        select_list(&task_cols, &TASK_COLUMNS)
    );
    Ok((sql, missing_columns))
}

/// The SELECT of `task_logs` in task order (for the merge join), refused when its lines cannot be
/// attached to tasks.
fn log_select(conn: &Connection, path: &str) -> Result<String> {
    let cols = columns_of(conn, "task_logs")?;
    let lacking: Vec<&str> = ["task_id", "message"]
        .into_iter()
        .filter(|c| !cols.iter().any(|p| p == c))
        .collect();
    if !lacking.is_empty() {
        return Err(Error::invalid(format!(
            "{path}: table task_logs lacks the column{} {}, so its lines cannot be attached to their tasks; \
             import-legacy expects {EXPECTED}",
            if lacking.len() == 1 { "" } else { "s" },
            lacking.join(", "), path = shown(path)
        )));
    }
    let order = if cols.iter().any(|c| c == "log_id") {
        "\"log_id\""
    } else {
        "rowid"
    };
    Ok(format!(
        "SELECT {order}, {} FROM task_logs ORDER BY task_id, {order}",
        select_list(&cols, &["task_id", "at_utc", "level", "message", "details"])
    ))
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
/// without offset (UTC), with minutes only, or a bare date (midnight UTC). A time whose UTC
/// value falls outside the years 1..9999 is not one the queue can store: `None`, as unreadable.
pub fn parse_legacy_time(text: &str) -> Option<i64> {
    parse_any_time(text).filter(|ms| crate::model::time::check_time("time", *ms).is_ok())
}

fn parse_any_time(text: &str) -> Option<i64> {
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
pub(super) fn normalise_level(raw: &Sql) -> (&'static str, Option<String>) {
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

pub(super) fn quote(v: &Sql) -> Option<String> {
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

pub(super) fn as_text(v: &Sql) -> Option<String> {
    match v {
        Sql::Null => None,
        Sql::Integer(n) => Some(n.to_string()),
        Sql::Real(f) => Some(f.to_string()),
        Sql::Text(t) => Some(t.clone()),
        Sql::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    }
}

/// An integer value (integral reals and numeric text accepted), or why not.
pub(super) fn as_int(v: &Sql) -> std::result::Result<Option<i64>, String> {
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
pub(super) fn as_json(v: &Sql) -> std::result::Result<Option<String>, String> {
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

pub(super) fn as_time(v: &Sql) -> std::result::Result<Option<i64>, String> {
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
pub(super) struct RawTask {
    pub(super) vals: Vec<Sql>,
    pub(super) logs: Vec<RawLog>,
    /// Its id was already seen earlier in this run (the old table does not enforce unique ids).
    pub(super) duplicate: bool,
}

pub(super) struct RawLog {
    pub(super) log_id: Option<i64>,
    pub(super) at: Sql,
    pub(super) level: Sql,
    pub(super) message: Sql,
    pub(super) details: Sql,
}

/// The merge join of `task_logs` (in task order) onto `task_queue` (in id order): the line read
/// but not yet given to a task, the lines whose task does not exist, the ids seen so far.
#[derive(Default)]
pub(super) struct LogJoin {
    /// The next log line not yet given to a task: (task_id if numeric, line).
    pending: Option<(Option<i64>, RawLog)>,
    /// `log_id`s of lines that belong to no task of task_queue.
    pub(super) orphans: Vec<Option<i64>>,
    seen_ids: HashSet<i64>,
}

impl LogJoin {
    /// The next batch: up to `batch_size` tasks, fewer once their log lines reach `log_budget`.
    pub(super) fn next_batch(
        &mut self,
        tasks: &mut Rows,
        mut logs: Option<&mut Rows>,
        batch_size: usize,
        log_budget: usize,
    ) -> Result<Vec<RawTask>> {
        let mut batch: Vec<RawTask> = Vec::with_capacity(batch_size.min(10_000));
        let mut batch_logs = 0usize;
        while batch.len() < batch_size && batch_logs < log_budget {
            let Some(r) = tasks.next()? else { break };
            let vals = (0..TASK_COLUMNS.len())
                .map(|i| r.get::<_, Sql>(i))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let id = as_int(&vals[C_ID]).ok().flatten();
            let lines = match (id, logs.as_deref_mut()) {
                (Some(id), Some(rows)) => self.lines_of(id, rows)?,
                _ => Vec::new(),
            };
            batch_logs += lines.len();
            let duplicate = id.is_some_and(|id| !self.seen_ids.insert(id));
            batch.push(RawTask {
                vals,
                logs: lines,
                duplicate,
            });
        }
        Ok(batch)
    }

    /// The log lines of task `id`; lines of tasks before it (absent from task_queue) are orphans.
    fn lines_of(&mut self, id: i64, rows: &mut Rows) -> Result<Vec<RawLog>> {
        let mut lines = Vec::new();
        loop {
            if self.pending.is_none() {
                let Some(l) = rows.next()? else { break };
                let task_id = as_int(&l.get::<_, Sql>(1)?).ok().flatten();
                self.pending = Some((
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
            let (tid, _) = self.pending.as_ref().unwrap();
            match *tid {
                Some(t) if t > id => break,
                Some(t) if t == id => lines.push(self.pending.take().unwrap().1),
                _ => self.orphans.push(self.pending.take().unwrap().1.log_id),
            }
        }
        Ok(lines)
    }

    /// After the last task: every line left belongs to no task.
    pub(super) fn finish(&mut self, logs: Option<&mut Rows>) -> Result<()> {
        if let Some(rows) = logs {
            if let Some((_, l)) = self.pending.take() {
                self.orphans.push(l.log_id);
            }
            while let Some(l) = rows.next()? {
                self.orphans
                    .push(as_int(&l.get::<_, Sql>(0)?).ok().flatten());
            }
        }
        Ok(())
    }
}

/// The old file's workers (at most `MAX_LISTED_WORKERS` of them) and how many it has.
pub(super) fn read_workers(src: &Source) -> Result<(Vec<LegacyWorker>, u64)> {
    let (mut listed, mut total) = (Vec::new(), 0u64);
    if let Some(sql) = &src.worker_sql {
        let mut stmt = src.conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            total += 1;
            if listed.len() < MAX_LISTED_WORKERS {
                listed.push(LegacyWorker {
                    worker_id: as_text(&r.get::<_, Sql>(0)?),
                    capabilities: as_text(&r.get::<_, Sql>(1)?),
                    heartbeat_utc: as_text(&r.get::<_, Sql>(2)?),
                });
            }
        }
    }
    Ok((listed, total))
}
