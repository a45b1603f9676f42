//! Attempt records: how each unsuccessful attempt ended, and the bounds of what is kept of it.

use crate::model::lease::{ExpiredAttempt, FailedAttempt, Failure};
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

/// A running attempt as the transaction that ends it read the task's row (fenced by its lease,
/// or found expired): what the engine's rules are asked about and what the attempt's record
/// keeps, put together the same way by every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub task_id: i64,
    /// The attempt's number (counted from 1 at each claim).
    pub attempts: i64,
    pub max_attempts: i64,
    /// The worker holding the lease.
    pub worker: Option<String>,
    pub started_at: Option<i64>,
}

impl Running {
    /// The failure its worker reported, as `Rules::after_failure` is asked about it.
    pub fn failed<'a>(
        &self,
        f: &'a Failure,
        task_policy: Option<&'a str>,
        now: i64,
    ) -> FailedAttempt<'a> {
        FailedAttempt {
            task_id: self.task_id,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            retry: f.retry,
            error: &f.error,
            task_policy,
            now,
        }
    }

    /// Its lease ended, as `Rules::after_lease_expired` is asked about it.
    pub fn expired(&self, now: i64) -> ExpiredAttempt<'_> {
        ExpiredAttempt {
            task_id: self.task_id,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            worker: self.worker.as_deref(),
            now,
        }
    }

    /// Its record, ended with `outcome` and the error the verdict keeps.
    pub fn ended<'a>(
        &'a self,
        outcome: Outcome,
        error: &'a str,
        traceback: Option<&'a str>,
    ) -> Ended<'a> {
        Ended {
            attempt: self,
            outcome,
            error,
            traceback,
        }
    }
}

/// An attempt that just ended, as its record (`task_attempts`) is written; the backend bounds
/// `error` and `traceback` as it stores them (`bounded_error`, `stored_traceback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended<'a> {
    pub attempt: &'a Running,
    pub outcome: Outcome,
    pub error: &'a str,
    pub traceback: Option<&'a str>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lease::Lease;

    #[test]
    fn a_running_row_is_asked_about_and_recorded_with_what_it_read() {
        let running = Running {
            task_id: 7,
            attempts: 2,
            max_attempts: 5,
            worker: Some("w1".into()),
            started_at: Some(1_000),
        };
        let mut f = Failure::new(
            Lease {
                task_id: 7,
                token: 3,
            },
            "boom",
            false,
        );
        f.traceback = Some("tb".into());
        let a = running.failed(&f, Some("{}"), 2_000);
        assert_eq!(
            (a.task_id, a.attempts, a.max_attempts, a.retry, a.error),
            (7, 2, 5, false, "boom")
        );
        assert_eq!((a.task_policy, a.now), (Some("{}"), 2_000));
        let e = running.expired(3_000);
        assert_eq!(
            (e.task_id, e.attempts, e.max_attempts, e.worker, e.now),
            (7, 2, 5, Some("w1"), 3_000)
        );
        let ended = running.ended(Outcome::Failed, "kept", f.traceback.as_deref());
        assert_eq!(ended.attempt, &running);
        assert_eq!(
            (ended.outcome, ended.error, ended.traceback),
            (Outcome::Failed, "kept", Some("tb"))
        );
    }
}
