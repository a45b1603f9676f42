//! Attempt records: how each unsuccessful attempt ended, and the bounds of what is kept of it.

use std::borrow::Cow;

/// The most bytes of an error message stored, its beginning kept.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// The most bytes of a traceback stored, its end kept.
pub const MAX_TRACEBACK_BYTES: usize = 64 * 1024;

/// The attempt records kept per task, the latest ones. `max_attempts` may be up to a million and
/// `retry()` starts a task over, so the history is bounded on its own.
pub const MAX_RECORDS_PER_TASK: i64 = 25;

/// How an attempt ended (`task_attempts.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its worker reported a failure (`fail`): an exception, a timeout, an unstorable result.
    Failed,
    /// Its worker stopped renewing the lease and the rescuer took the task back.
    LeaseExpired,
    /// The task manager found its run interrupted (its process stopped or its lease lapsed).
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Failed => "failed",
            Outcome::LeaseExpired => "lease_expired",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One stored attempt record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub task_id: i64,
    /// 1, 2, ... in the order the task's attempts ended; never restarted (`retry()` restarts
    /// `number`), so records dropped past `MAX_RECORDS_PER_TASK` show as a gap before the first.
    pub seq: i64,
    /// The task's attempt counter for this attempt ("attempt 2 of 5").
    pub number: i64,
    pub max_attempts: i64,
    pub worker: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: i64,
    pub outcome: String,
    pub error: String,
    pub traceback: Option<String>,
}

/// The largest index `<= i` on a character boundary of `s`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// An error message as stored: at most `MAX_ERROR_BYTES`, its beginning kept (what failed and
/// why comes first), ending with a line that says how much was cut.
pub fn bounded_error(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_ERROR_BYTES {
        return Cow::Borrowed(text);
    }
    // Room for the note (under 64 bytes whatever the numbers).
    let keep = floor_boundary(text, MAX_ERROR_BYTES - 64);
    Cow::Owned(format!(
        "{}\n[error cut: {} more bytes not kept]",
        &text[..keep],
        text.len() - keep
    ))
}

/// A traceback as stored: at most `MAX_TRACEBACK_BYTES`. A longer one keeps its end, where the
/// failing line and the exception are, from the start of a line, after a line saying how much of
/// the beginning was dropped.
pub fn bounded_traceback(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_TRACEBACK_BYTES {
        return Cow::Borrowed(text);
    }
    // Room for the note (under 128 bytes whatever the numbers).
    let mut start = text.len() - (MAX_TRACEBACK_BYTES - 128);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    // Whole lines, unless the next line break is far away (one huge line).
    if text.as_bytes()[start - 1] != b'\n' {
        if let Some(nl) = text[start..].find('\n').filter(|&n| n < 4096) {
            start += nl + 1;
        }
    }
    Cow::Owned(format!(
        "[traceback cut: its first {start} bytes were dropped; the last {} are kept]\n{}",
        text.len() - start,
        &text[start..]
    ))
}

/// A traceback worth storing: None for a missing or blank one.
pub fn stored_traceback(text: Option<&str>) -> Option<Cow<'_, str>> {
    text.filter(|t| !t.trim().is_empty()).map(bounded_traceback)
}
