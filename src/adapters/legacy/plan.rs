//! Planning one row: the old row's values checked and converted into the task, log lines and
//! notes the import writes, or every problem that stops it from being imported.

use super::read::*;
use super::report::ImportProblem;
use crate::model::claim::LaneKey;
use crate::model::new_task::{
    requires_text, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY,
};
use crate::model::task::Status;
use rusqlite::types::Value as Sql;
use serde_json::{Map, Value};

/// A log line ready to insert.
pub(super) struct NewLog {
    pub(super) at: i64,
    pub(super) level: &'static str,
    pub(super) message: String,
    pub(super) details: Option<String>,
}

/// A task row converted and checked, ready to insert.
pub(super) struct Prepared {
    pub(super) legacy_status: String,
    pub(super) task_type: String,
    pub(super) payload: String,
    pub(super) priority: i64,
    pub(super) status: Status,
    pub(super) attempts: i64,
    pub(super) max_attempts: i64,
    pub(super) run_after: i64,
    pub(super) created_at: i64,
    pub(super) started_at: Option<i64>,
    pub(super) finished_at: Option<i64>,
    pub(super) updated_at: i64,
    pub(super) locked_by: Option<String>,
    pub(super) error: Option<String>,
    pub(super) result: Option<String>,
    pub(super) idempotency_key: Option<String>,
    pub(super) requires: Option<Map<String, Value>>,
    pub(super) lane_key: LaneKey,
    /// Lines the import adds to the task's log (after the old lines).
    pub(super) notes: Vec<NewLog>,
    pub(super) logs: Vec<NewLog>,
    pub(super) log_problems: Vec<ImportProblem>,
    pub(super) from_lease: bool,
    /// The old priority, when it was outside 1..=1000.
    pub(super) clamped_from: Option<i64>,
    /// Defaults used for values the row did not have, for the report's notes.
    pub(super) defaults: Vec<&'static str>,
}

/// A value of `task_queue` that stops its row from being imported.
pub(super) fn problem(
    legacy_id: Option<i64>,
    column: &str,
    value: &Sql,
    reason: String,
) -> ImportProblem {
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

/// The values of a row once each could be read (before defaults fill the missing ones).
struct Checked {
    task_type: String,
    legacy_status: String,
    status: Status,
    from_lease: bool,
    payload: String,
    requires: Option<Map<String, Value>>,
    result: Option<String>,
    priority: Option<i64>,
    attempts: Option<i64>,
    max_attempts: Option<i64>,
    run_after: Option<i64>,
    reserved_at: Option<i64>,
    processing_started: Option<i64>,
    finished: Option<i64>,
    created: Option<i64>,
    updated: Option<i64>,
}

/// Convert one row, or list every value that stops it from being imported.
pub(super) fn prepare(
    raw: &RawTask,
    legacy_id: i64,
    now: i64,
) -> std::result::Result<Prepared, Vec<ImportProblem>> {
    let v = &raw.vals;
    let c = check(v, legacy_id)?;
    let mut defaults = Vec::new();
    let priority = match c.priority {
        None => {
            defaults.push("priority");
            DEFAULT_PRIORITY
        }
        Some(p) => p.clamp(MIN_PRIORITY, MAX_PRIORITY),
    };
    let clamped_from = c.priority.filter(|p| *p != priority);
    let max_attempts = match c.max_attempts {
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
    let created_at = match (c.created, c.updated) {
        (Some(created), _) => created,
        (None, Some(updated)) => {
            defaults.push("created_at_utc");
            updated
        }
        (None, None) => {
            defaults.push("created_at_utc");
            now
        }
    };
    let updated_at = c.updated.unwrap_or(created_at);
    let mut run_after = c.run_after.unwrap_or(created_at);
    if c.from_lease {
        run_after = run_after.min(now);
    }
    let locked_by = as_text(&v[C_LOCKED_BY]).filter(|s| !s.is_empty());
    let mut notes = Vec::new();
    if c.from_lease {
        notes.push(lease_note(v, &c.legacy_status, locked_by.as_deref(), now));
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
    let (logs, log_problems) = convert_logs(&raw.logs, legacy_id, created_at);
    Ok(Prepared {
        lane_key: (
            "default".into(),
            c.task_type.clone(),
            requires_text(&c.requires),
        ),
        legacy_status: c.legacy_status,
        task_type: c.task_type,
        payload: c.payload,
        priority,
        status: c.status,
        attempts: c.attempts.unwrap_or(0).max(0),
        max_attempts,
        run_after,
        created_at,
        started_at: c.processing_started.or(c.reserved_at),
        finished_at: c
            .status
            .is_terminal()
            .then(|| c.finished.unwrap_or(updated_at)),
        updated_at,
        locked_by: locked_by.filter(|_| c.status.is_terminal()),
        error: as_text(&v[C_ERROR]),
        result: c.result,
        idempotency_key: as_text(&v[C_IDEMPOTENCY]).filter(|s| !s.is_empty()),
        requires: c.requires,
        notes,
        logs,
        log_problems,
        from_lease: c.from_lease,
        clamped_from,
        defaults,
    })
}

/// Read every value of the row, listing each one that cannot be read.
fn check(v: &[Sql], legacy_id: i64) -> std::result::Result<Checked, Vec<ImportProblem>> {
    let mut problems = Vec::new();
    let mut bad = |col: usize, reason: String| {
        problems.push(problem(Some(legacy_id), TASK_COLUMNS[col], &v[col], reason));
    };
    let task_type = as_text(&v[C_TYPE]).unwrap_or_default();
    if task_type.trim().is_empty() {
        bad(C_TYPE, "the task type is empty".into());
    }
    let legacy_status = as_text(&v[C_STATUS])
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (status, from_lease) = status_of(&legacy_status).unwrap_or_else(|| {
        bad(
            C_STATUS,
            "unknown status: the older queue's statuses are queued, leased, processing, completed, failed, dead_letter"
                .into(),
        );
        (Status::Queued, false)
    });
    let payload = match as_json(&v[C_PAYLOAD]) {
        Ok(p) => p.unwrap_or_else(|| "null".into()),
        Err(e) => {
            bad(C_PAYLOAD, format!("the payload is {e}"));
            String::new()
        }
    };
    let requires = requires_of(&v[C_COMPAT]).unwrap_or_else(|e| {
        bad(C_COMPAT, e);
        None
    });
    let result = as_json(&v[C_RESULT]).unwrap_or_else(|e| {
        bad(C_RESULT, format!("the result is {e}"));
        None
    });
    let mut int_of = |col: usize| {
        as_int(&v[col]).unwrap_or_else(|e| {
            bad(col, e);
            None
        })
    };
    let (priority, attempts, max_attempts) = (
        int_of(C_PRIORITY),
        int_of(C_ATTEMPTS),
        int_of(C_MAX_ATTEMPTS),
    );
    let mut time_of = |col: usize| {
        as_time(&v[col]).unwrap_or_else(|e| {
            bad(col, e);
            None
        })
    };
    let run_after = time_of(C_RUN_AFTER);
    time_of(C_LEASE_UNTIL); // checked so a broken lease time is reported, not carried into a log
    let checked = Checked {
        reserved_at: time_of(C_RESERVED_AT),
        processing_started: time_of(C_STARTED),
        finished: time_of(C_FINISHED),
        created: time_of(C_CREATED),
        updated: time_of(C_UPDATED),
        task_type,
        legacy_status,
        status,
        from_lease,
        payload,
        requires,
        result,
        priority,
        attempts,
        max_attempts,
        run_after,
    };
    match problems.is_empty() {
        true => Ok(checked),
        false => Err(problems),
    }
}

/// The new status of an old one, and whether the task was under a lease; None when unknown.
fn status_of(legacy_status: &str) -> Option<(Status, bool)> {
    Some(match legacy_status {
        "queued" => (Status::Queued, false),
        "leased" | "processing" => (Status::Queued, true),
        "completed" => (Status::Completed, false),
        "failed" | "dead_letter" => (Status::Failed, false),
        "cancelled" | "canceled" => (Status::Cancelled, false),
        _ => return None,
    })
}

/// The `compatibility` column as `requires`: `{}`, `null` or an empty value mean none.
fn requires_of(value: &Sql) -> std::result::Result<Option<Map<String, Value>>, String> {
    if matches!(value, Sql::Text(t) if t.trim().is_empty()) {
        return Ok(None);
    }
    let text = match as_json(value) {
        Ok(None) => return Ok(None),
        Ok(Some(text)) => text,
        Err(e) => return Err(format!("compatibility is {e}")),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::Object(m)) if m.is_empty() => Ok(None),
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(
            "compatibility must be a JSON object of required capabilities, such as {\"gpu\": true}"
                .into(),
        ),
        Err(e) => Err(format!("not valid JSON ({e})")),
    }
}

/// The log line saying who held the lease of a task that comes back as queued.
fn lease_note(v: &[Sql], legacy_status: &str, locked_by: Option<&str>, now: i64) -> NewLog {
    let mut details = Map::new();
    details.insert("legacy_status".into(), Value::String(legacy_status.into()));
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
    NewLog {
        at: now,
        level: "info",
        message: format!(
            "imported from a lease: the task was {legacy_status} by {} in the older queue{}; \
             back to queued, claimable at once",
            locked_by.unwrap_or("an unknown worker"),
            as_text(&v[C_LEASE_UNTIL])
                .map(|t| format!(" (lease until {t})"))
                .unwrap_or_default()
        ),
        details: Some(Value::Object(details).to_string()),
    }
}

/// The task's old log lines as new ones: an unreadable time becomes the task's created time
/// (listed as a problem), an unknown level `info` with the original at the message's head.
fn convert_logs(
    raw: &[RawLog],
    legacy_id: i64,
    created_at: i64,
) -> (Vec<NewLog>, Vec<ImportProblem>) {
    let mut logs = Vec::with_capacity(raw.len());
    let mut problems = Vec::new();
    for l in raw {
        let at = match as_time(&l.at) {
            Ok(Some(t)) => t,
            Ok(None) => created_at,
            Err(reason) => {
                problems.push(ImportProblem {
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
    (logs, problems)
}
