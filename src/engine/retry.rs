//! The queue's rules for an attempt that ended without success, written once for every backend:
//! a failure is retried after the retry policy's backoff while attempts are left and the worker
//! allows it, else it is the dead letter; an expired lease counts as an attempt and is queued
//! again at once, or dead-lettered when it was the last. A backend reads the row and applies
//! the verdict in its own transaction (`storage::Rules`); everything here is pure. A hand-back
//! does not count as an attempt. The rules of runs (restart, interruption) are in `run_rules`.

use crate::model::attempt::bounded_error;
use crate::model::error::Result;
use crate::model::lease::{
    ExpiredAttempt, FailOutcome, FailedAttempt, Released, ReleasedAttempt, Verdict,
};
use crate::model::retry::{RetryOverrides, RetryPolicy};
use crate::model::runs::{
    HeldRun, InterruptedRun, RecoverRuns, RunStartNote, RunVerdict, StartRun,
};
use crate::model::time::MAX_TIME_MS;
use crate::storage::Rules;
use std::borrow::Cow;

/// The rules every queue handle opens its backend with.
pub struct QueueRules;

pub static QUEUE_RULES: QueueRules = QueueRules;

impl Rules for QueueRules {
    fn after_failure<'a>(
        &self,
        attempt: &FailedAttempt<'a>,
        queue_policy: &mut dyn FnMut() -> Result<Option<String>>,
    ) -> Result<Verdict<'a>> {
        let policy = || effective_policy(queue_policy()?.as_deref(), attempt.task_policy);
        failure_verdict(attempt, policy, rand::random::<f64>())
    }

    fn after_lease_expired(&self, attempt: &ExpiredAttempt<'_>) -> Verdict<'static> {
        expiry_verdict(attempt)
    }

    fn rescue_summary(&self, rescued: &[(ExpiredAttempt<'_>, FailOutcome)]) -> String {
        rescue_summary(rescued)
    }

    fn after_release(&self, attempt: &ReleasedAttempt) -> Released {
        release_verdict(attempt)
    }

    fn may_start_run(&self, start: &StartRun, held: Option<&HeldRun<'_>>) -> Result<RunStartNote> {
        super::run_rules::start_note(start, held)
    }

    fn after_run_interrupted(&self, run: &InterruptedRun<'_>, recover: &RecoverRuns) -> RunVerdict {
        super::run_rules::interrupted_verdict(run, recover)
    }
}

/// The task's policy over its queue's over the built-in default, key by key.
pub fn effective_policy(queue: Option<&str>, task: Option<&str>) -> Result<RetryPolicy> {
    let mut policy = RetryPolicy::default();
    for text in [queue, task].into_iter().flatten() {
        let overrides: RetryOverrides = serde_json::from_str(text)?;
        policy = overrides.apply(policy);
    }
    Ok(policy)
}

/// What becomes of a failed attempt; `policy` is asked only when the task retries, and
/// `unit_random` (in 0..1) spreads the backoff by the policy's jitter.
pub fn failure_verdict<'a>(
    a: &FailedAttempt<'a>,
    policy: impl FnOnce() -> Result<RetryPolicy>,
    unit_random: f64,
) -> Result<Verdict<'a>> {
    let (attempts, max_attempts, now) = (a.attempts, a.max_attempts, a.now);
    let error = bounded_error(a.error);
    if a.retry && attempts < max_attempts {
        // The delay is at most 100 years (`delay_ms`); the sum is kept in the range anyway.
        let run_after = now
            .saturating_add(policy()?.delay_ms(attempts, unit_random))
            .min(MAX_TIME_MS);
        let log_message = format!(
            "attempt {attempts} of {max_attempts} failed, retrying in {:.3}s: {error}",
            (run_after - now) as f64 / 1000.0
        );
        return Ok(Verdict {
            outcome: FailOutcome::Retrying { run_after },
            error,
            log_level: "warning",
            log_message,
        });
    }
    let log_message = if a.retry {
        format!(
            "attempt {attempts} of {max_attempts} failed, no attempts left: dead letter: {error}"
        )
    } else {
        format!("failed without retry (attempt {attempts}): dead letter: {error}")
    };
    Ok(Verdict {
        outcome: FailOutcome::DeadLettered,
        error,
        log_level: "error",
        log_message,
    })
}

/// What becomes of a task whose lease expired: the attempt counts; queued again at once while
/// attempts are left, else the dead letter. The row keeps the same words as the log.
pub fn expiry_verdict(a: &ExpiredAttempt<'_>) -> Verdict<'static> {
    let (attempts, max_attempts) = (a.attempts, a.max_attempts);
    let who = a.worker.unwrap_or("unknown worker");
    let (outcome, what, log_level) = if attempts >= max_attempts {
        (FailOutcome::DeadLettered, "dead letter", "error")
    } else {
        let run_after = a.now;
        (FailOutcome::Retrying { run_after }, "re-queued", "warning")
    };
    let log_message = format!(
        "lease expired on attempt {attempts} of {max_attempts} (worker {who} stopped renewing it): {what}"
    );
    Verdict {
        outcome,
        error: Cow::Owned(log_message.clone()),
        log_level,
        log_message,
    }
}

/// The tasks one rescue pass moved listed in a log record: the first `RESCUES_LISTED`, then
/// "...", so a pass over thousands of dead leases stays one readable line.
pub fn rescue_summary(rescued: &[(ExpiredAttempt<'_>, FailOutcome)]) -> String {
    let listed: Vec<String> = rescued
        .iter()
        .take(RESCUES_LISTED)
        .map(|(a, outcome)| {
            let who = a.worker.unwrap_or("unknown worker");
            let what = match outcome {
                FailOutcome::Retrying { .. } => "re-queued",
                FailOutcome::DeadLettered => "dead letter",
            };
            let (id, attempts, max_attempts) = (a.task_id, a.attempts, a.max_attempts);
            format!("task {id} of {who}: {what} (attempt {attempts} of {max_attempts})")
        })
        .collect();
    format!(
        "{} expired lease(s) rescued (their workers stopped renewing them): {}{}",
        rescued.len(),
        listed.join("; "),
        if rescued.len() > listed.len() {
            "; ..."
        } else {
            ""
        }
    )
}

const RESCUES_LISTED: usize = 10;

/// A hand-back (graceful shutdown) does not count as an attempt: the claim's attempt is given
/// back and the task is queued again at once.
pub fn release_verdict(a: &ReleasedAttempt) -> Released {
    Released {
        attempts: a.attempts.saturating_sub(1).max(0),
        run_after: a.now,
        log_level: "info",
        log_message: "lease handed back by its worker (shutdown); attempt not counted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(attempts: i64, max_attempts: i64, retry: bool) -> FailedAttempt<'static> {
        FailedAttempt {
            task_id: 7,
            attempts,
            max_attempts,
            retry,
            error: "boom",
            task_policy: None,
            now: 1_000_000,
        }
    }

    fn no_jitter(base: f64) -> Result<RetryPolicy> {
        Ok(RetryPolicy {
            base,
            jitter: 0.0,
            ..RetryPolicy::default()
        })
    }

    #[test]
    fn a_failure_with_attempts_left_retries_after_the_backoff() {
        let v = failure_verdict(&failed(2, 3, true), || no_jitter(1.0), 0.5).unwrap();
        // Second failure: base * factor^1 = 2 s.
        assert_eq!(
            v.outcome,
            FailOutcome::Retrying {
                run_after: 1_002_000
            }
        );
        assert_eq!(v.error, "boom");
        assert_eq!(v.log_level, "warning");
        assert_eq!(
            v.log_message,
            "attempt 2 of 3 failed, retrying in 2.000s: boom"
        );
    }

    #[test]
    fn the_last_attempt_or_a_refused_retry_is_the_dead_letter_without_reading_a_policy() {
        let unread = || -> Result<RetryPolicy> { panic!("a dead letter needs no policy") };
        let spent = failure_verdict(&failed(3, 3, true), unread, 0.5).unwrap();
        assert_eq!(spent.outcome, FailOutcome::DeadLettered);
        assert_eq!(
            spent.log_message,
            "attempt 3 of 3 failed, no attempts left: dead letter: boom"
        );
        let refused = failure_verdict(&failed(1, 3, false), unread, 0.5).unwrap();
        assert_eq!(refused.outcome, FailOutcome::DeadLettered);
        assert_eq!(refused.log_level, "error");
        assert_eq!(
            refused.log_message,
            "failed without retry (attempt 1): dead letter: boom"
        );
    }

    #[test]
    fn a_retry_is_never_scheduled_past_the_last_representable_time() {
        let mut a = failed(1, 3, true);
        a.now = MAX_TIME_MS - 10;
        let v = failure_verdict(&a, || no_jitter(60.0), 0.5).unwrap();
        assert_eq!(
            v.outcome,
            FailOutcome::Retrying {
                run_after: MAX_TIME_MS
            }
        );
    }

    #[test]
    fn a_long_error_is_cut_before_it_is_stored() {
        let long = "x".repeat(1_000_000);
        let mut a = failed(1, 1, true);
        a.error = &long;
        let v = failure_verdict(&a, || no_jitter(1.0), 0.5).unwrap();
        assert!(v.error.len() < long.len(), "{}", v.error.len());
        assert!(v.error.contains("[error cut:"));
    }

    #[test]
    fn the_task_policy_overrides_its_queue_policy_key_by_key() {
        let p =
            effective_policy(Some(r#"{"base": 30, "cap": 60}"#), Some(r#"{"base": 5}"#)).unwrap();
        assert_eq!((p.base, p.cap, p.factor), (5.0, 60.0, 2.0));
        assert_eq!(
            effective_policy(None, None).unwrap(),
            RetryPolicy::default()
        );
        assert!(effective_policy(Some("{\"bogus\": 1}"), None).is_err());
    }

    #[test]
    fn an_expired_lease_counts_and_is_queued_again_at_once_until_the_last_attempt() {
        let mut a = ExpiredAttempt {
            task_id: 7,
            attempts: 1,
            max_attempts: 2,
            worker: Some("w1"),
            now: 5_000,
        };
        let v = expiry_verdict(&a);
        assert_eq!(v.outcome, FailOutcome::Retrying { run_after: 5_000 });
        assert_eq!(
            v.log_message,
            "lease expired on attempt 1 of 2 (worker w1 stopped renewing it): re-queued"
        );
        assert_eq!(v.error, v.log_message);
        (a.attempts, a.worker) = (2, None);
        let v = expiry_verdict(&a);
        assert_eq!(
            (v.outcome, v.log_level),
            (FailOutcome::DeadLettered, "error")
        );
        assert!(
            v.log_message.contains("worker unknown worker"),
            "{}",
            v.log_message
        );
        assert!(v.log_message.ends_with(": dead letter"));
    }

    fn expired(task_id: i64, worker: Option<&'static str>) -> ExpiredAttempt<'static> {
        ExpiredAttempt {
            task_id,
            attempts: 1,
            max_attempts: 2,
            worker,
            now: 5_000,
        }
    }

    #[test]
    fn a_rescue_pass_is_summed_up_in_one_line_listing_the_first_ten() {
        let back = FailOutcome::Retrying { run_after: 5_000 };
        let two = [
            (expired(1, Some("w1")), back),
            (expired(2, None), FailOutcome::DeadLettered),
        ];
        assert_eq!(
            rescue_summary(&two),
            "2 expired lease(s) rescued (their workers stopped renewing them): \
             task 1 of w1: re-queued (attempt 1 of 2); \
             task 2 of unknown worker: dead letter (attempt 1 of 2)"
        );
        let many: Vec<_> = (1..=12).map(|id| (expired(id, Some("w")), back)).collect();
        let line = rescue_summary(&many);
        assert!(line.starts_with("12 expired lease(s) rescued"), "{line}");
        assert!(
            line.contains("task 10 of w") && !line.contains("task 11"),
            "{line}"
        );
        assert!(line.ends_with("(attempt 1 of 2); ..."), "{line}");
    }

    #[test]
    fn a_hand_back_does_not_count_as_an_attempt_and_queues_at_once() {
        let v = release_verdict(&ReleasedAttempt {
            task_id: 7,
            attempts: 3,
            now: 9_000,
        });
        assert_eq!(
            v,
            Released {
                attempts: 2,
                run_after: 9_000,
                log_level: "info",
                log_message: "lease handed back by its worker (shutdown); attempt not counted",
            }
        );
        let none = release_verdict(&ReleasedAttempt {
            task_id: 7,
            attempts: 0,
            now: 9_000,
        });
        assert_eq!(none.attempts, 0, "never below zero");
    }
}
