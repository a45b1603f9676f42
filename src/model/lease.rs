//! Leases and their acknowledgements: what a claim hands out and what a worker reports back.

use crate::model::error::Error;

/// What identifies one claim of a task: its id and the lease token that claim received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub task_id: i64,
    pub token: i64,
}

impl Lease {
    /// What a fenced update of this lease that matched no row means, from what the task's row
    /// says now (its status, lease token and holder; `None`: no such task). The engine words
    /// the `LeaseLost` the caller sees.
    pub fn lost(self, row: Option<(String, Option<i64>, Option<String>)>) -> Error {
        match row {
            None => Error::TaskNotFound(self.task_id),
            Some((status, token, by)) => {
                let taken_over = status == "running" && token.is_some();
                Error::NotHeld {
                    task_id: self.task_id,
                    status,
                    holder: taken_over.then(|| by.unwrap_or_default()),
                }
            }
        }
    }
}

/// A failed attempt as its worker reports it: the error (its first line says what failed), the
/// traceback when there is one, and whether the task may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub lease: Lease,
    pub error: String,
    pub retry: bool,
    pub traceback: Option<String>,
}

impl Failure {
    pub fn new(lease: Lease, error: impl Into<String>, retry: bool) -> Failure {
        Failure {
            lease,
            error: error.into(),
            retry,
            traceback: None,
        }
    }
}

/// The outcome of `settle`: per acknowledgement whether this claim still held the task, and the
/// newly claimed tasks.
#[derive(Debug)]
pub struct Settled {
    pub completed: Vec<bool>,
    pub failed: Vec<Option<FailOutcome>>,
    pub claimed: Vec<crate::model::task::TaskRow>,
}

/// What happened to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailOutcome {
    /// Back to queued, claimable again at `run_after` (ms).
    Retrying { run_after: i64 },
    /// Attempts spent, or retry refused: the dead letter.
    DeadLettered,
}

/// A running task whose attempt just failed, as the backend read its row (inside the
/// transaction that will apply the engine's verdict).
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    pub task_id: i64,
    /// The attempt that failed (attempts are counted from 1 at each claim).
    pub attempts: i64,
    pub max_attempts: i64,
    /// Whether the worker allows a retry.
    pub retry: bool,
    pub error: &'a str,
    /// The task's own retry policy (JSON of `RetryOverrides`), when it has one.
    pub task_policy: Option<&'a str>,
    pub now: i64,
}

/// A running task whose lease ended before its worker acknowledged it, as the rescue read it.
#[derive(Debug, Clone, Copy)]
pub struct ExpiredAttempt<'a> {
    pub task_id: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    /// The worker that held the lease.
    pub worker: Option<&'a str>,
    pub now: i64,
}

/// A running task whose worker hands its lease back (a graceful shutdown), as the backend read
/// it inside the transaction that applies `Released`.
#[derive(Debug, Clone, Copy)]
pub struct ReleasedAttempt {
    pub task_id: i64,
    pub attempts: i64,
    pub now: i64,
}

/// What a hand-back makes of the row: queued again at `run_after` with `attempts`, and the
/// task's log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub attempts: i64,
    pub run_after: i64,
    pub log_level: &'static str,
    pub log_message: &'static str,
}

/// The engine's verdict on an attempt that ended without success, which the backend applies
/// to the row in the same transaction: queued again at `run_after` or the dead letter, the
/// error the row and the attempt's record keep, and the line the task's log gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    pub outcome: FailOutcome,
    pub error: std::borrow::Cow<'a, str>,
    /// "warning" or "error", as the task's log stores levels.
    pub log_level: &'static str,
    pub log_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_lease_says_what_the_row_says() {
        let lease = Lease {
            task_id: 4,
            token: 9,
        };
        assert!(matches!(lease.lost(None), Error::TaskNotFound(4)));
        let row = |status: &str, token: Option<i64>, by: Option<&str>| {
            Some((status.to_string(), token, by.map(String::from)))
        };
        let holder = |e: Error| match e {
            Error::NotHeld {
                task_id: 4, holder, ..
            } => holder,
            other => panic!("{other:?}"),
        };
        // Claimed again by another worker: named (an empty name when the row has none).
        assert_eq!(
            holder(lease.lost(row("running", Some(10), Some("w2")))),
            Some("w2".into())
        );
        assert_eq!(
            holder(lease.lost(row("running", Some(10), None))),
            Some(String::new())
        );
        // Finished, queued again or cancelled: nobody holds it.
        assert_eq!(holder(lease.lost(row("completed", None, Some("w1")))), None);
        assert_eq!(holder(lease.lost(row("queued", None, None))), None);
    }
}
