//! Rows as SQLite returns them, read into the model's types: the column list every task query
//! uses, and a reader that never fails on what a damaged row holds.

use crate::model::strategy::Candidate;
use crate::model::task::{Status, TaskRow};
use rusqlite::types::ValueRef;
use rusqlite::Row;

/// The column list every task SELECT/RETURNING uses, in `from_row` order.
pub const COLUMNS: &str = "id, type, queue, payload, priority, status, attempts, max_attempts, run_after, \
     created_at, started_at, finished_at, updated_at, locked_by, lease_until, lease_token, error, result, \
     progress, step, message, idempotency_key, requires, timeout_ms";

/// How many columns `COLUMNS` names: a query may add its own after them.
pub const COLUMN_COUNT: usize = 24;

impl TaskRow {
    /// A row as stored. Never fails on what a damaged row holds: a column of the wrong type, a
    /// time outside the years 1..9999 or text that is not UTF-8 is read as well as it can be
    /// and described in `damaged`, so one bad row never takes a listing down. That holds for the
    /// status too: the table's CHECK constraint guards it, but a row written with the checks
    /// off (`PRAGMA ignore_check_constraints`, a stray tool) may hold any value.
    pub(crate) fn from_row(r: &Row) -> rusqlite::Result<TaskRow> {
        let mut d = Damage::default();
        let mut row = TaskRow {
            id: r.get(0)?,
            task_type: d.text(r, 1, "type")?,
            queue: d.text(r, 2, "queue")?,
            payload: d.text(r, 3, "payload")?,
            priority: d.int(r, 4, "priority")?,
            status: d.status(r, 5)?,
            attempts: d.int(r, 6, "attempts")?,
            max_attempts: d.int(r, 7, "max_attempts")?,
            run_after: d.time(r, 8, "run_after")?,
            created_at: d.time(r, 9, "created_at")?,
            started_at: d.opt_time(r, 10, "started_at")?,
            finished_at: d.opt_time(r, 11, "finished_at")?,
            updated_at: d.time(r, 12, "updated_at")?,
            locked_by: d.opt_text(r, 13, "locked_by")?,
            lease_until: d.opt_time(r, 14, "lease_until")?,
            lease_token: d.opt_int(r, 15, "lease_token")?,
            error: d.opt_text(r, 16, "error")?,
            result: d.opt_text(r, 17, "result")?,
            progress: d.opt_real(r, 18, "progress")?,
            step: d.opt_text(r, 19, "step")?,
            message: d.opt_text(r, 20, "message")?,
            idempotency_key: d.opt_text(r, 21, "idempotency_key")?,
            requires: d.opt_text(r, 22, "requires")?,
            timeout_ms: d.opt_int(r, 23, "timeout_ms")?,
            traceback: None,
            damaged: Vec::new(),
            after: Vec::new(),
            waiting_on: Vec::new(),
        };
        row.damaged = d.0;
        Ok(row)
    }
}

/// What a damaged row held that could not be read as stored: one line per column.
#[derive(Default)]
struct Damage(Vec<String>);

impl Damage {
    fn note(&mut self, field: &str, what: String) {
        self.0.push(format!("{field}: {what}"));
    }

    fn text(&mut self, r: &Row, i: usize, field: &str) -> rusqlite::Result<String> {
        Ok(self.opt_text(r, i, field)?.unwrap_or_else(|| {
            self.note(field, "missing (NULL)".into());
            String::new()
        }))
    }

    fn opt_text(&mut self, r: &Row, i: usize, field: &str) -> rusqlite::Result<Option<String>> {
        Ok(match r.get_ref(i)? {
            ValueRef::Null => None,
            ValueRef::Text(b) => Some(match std::str::from_utf8(b) {
                Ok(t) => t.to_string(),
                Err(_) => {
                    self.note(field, "stored text is not valid UTF-8".into());
                    String::from_utf8_lossy(b).into_owned()
                }
            }),
            ValueRef::Blob(b) => {
                self.note(
                    field,
                    format!("stored as a blob of {} bytes, not text", b.len()),
                );
                Some(String::from_utf8_lossy(b).into_owned())
            }
            ValueRef::Integer(n) => Some(n.to_string()),
            ValueRef::Real(f) => Some(f.to_string()),
        })
    }

    fn opt_int(&mut self, r: &Row, i: usize, field: &str) -> rusqlite::Result<Option<i64>> {
        Ok(match r.get_ref(i)? {
            ValueRef::Null => None,
            ValueRef::Integer(n) => Some(n),
            ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(f as i64),
            other => {
                self.note(
                    field,
                    format!("stored {} is not an integer", describe(other)),
                );
                None
            }
        })
    }

    /// The status; one that is not a status reads as `failed` (a task that needs a person's
    /// attention; no claim, cancel or retry matches it, since those select by status in SQL).
    fn status(&mut self, r: &Row, i: usize) -> rusqlite::Result<Status> {
        let shown = match r.get_ref(i)? {
            ValueRef::Text(t) => match std::str::from_utf8(t).map(Status::parse) {
                Ok(Ok(s)) => return Ok(s),
                _ => describe(ValueRef::Text(t)),
            },
            other => describe(other),
        };
        self.note(
            "status",
            format!("stored {shown} is not a status; shown as failed"),
        );
        Ok(Status::Failed)
    }

    fn int(&mut self, r: &Row, i: usize, field: &str) -> rusqlite::Result<i64> {
        Ok(self.opt_int(r, i, field)?.unwrap_or(0))
    }

    fn opt_time(&mut self, r: &Row, i: usize, field: &str) -> rusqlite::Result<Option<i64>> {
        let t = self.opt_int(r, i, field)?;
        if let Some(ms) = t {
            if crate::model::time::clamp_stored(ms).1 {
                self.note(
                    field,
                    format!("stored time {ms} ms is outside the years 1..9999 UTC; shown as the nearest one"),
                );
            }
        }
        Ok(t)
    }

    /// A time the row must have: a missing or unreadable one reads as the earliest time.
    fn time(&mut self, r: &Row, i: usize, field: &str) -> rusqlite::Result<i64> {
        match self.opt_time(r, i, field)? {
            Some(t) => Ok(t),
            None => {
                if matches!(r.get_ref(i)?, ValueRef::Null) {
                    self.note(field, "missing (NULL)".into());
                }
                Ok(crate::model::time::MIN_TIME_MS)
            }
        }
    }

    fn opt_real(&mut self, r: &Row, i: usize, field: &str) -> rusqlite::Result<Option<f64>> {
        Ok(match r.get_ref(i)? {
            ValueRef::Null => None,
            ValueRef::Real(f) => Some(f),
            ValueRef::Integer(n) => Some(n as f64),
            other => {
                self.note(field, format!("stored {} is not a number", describe(other)));
                None
            }
        })
    }
}

fn describe(v: ValueRef) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => format!("text {:?}", String::from_utf8_lossy(&t[..t.len().min(40)])),
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

impl Candidate {
    /// A row of `candidate_sql`.
    pub(crate) fn from_row(r: &Row) -> rusqlite::Result<Candidate> {
        Ok(Candidate {
            id: r.get(0)?,
            priority: r.get(1)?,
            run_after: r.get(2)?,
            wkey: r.get(3)?,
        })
    }
}
