//! The rules of runs executed in-process (the task manager adapter's `start_run` and
//! `recover_runs`), written once for every backend: whether a run id may start again while its
//! row is held, and what becomes of a run whose process stopped. A backend reads the row (and
//! whether its lease is live on its own clock) and applies the answer in its transaction
//! (`storage::Rules`); everything here is pure.

use crate::model::error::{Error, Result};
use crate::model::runs::{
    HeldRun, InterruptedRun, RecoverRuns, RunStartNote, RunVerdict, StartRun,
};

/// A run's start. A row another holder runs under a live lease is refused; a running row that is
/// this starter's own, or whose holder is known dead or stopped renewing, is taken over (its
/// attempt ends as interrupted); a finished row simply starts again.
pub fn start_note(s: &StartRun, held: Option<&HeldRun<'_>>) -> Result<RunStartNote> {
    let Some(held) = held else {
        return Ok(RunStartNote {
            interrupted: None,
            log_message: format!("run {} started in-process by {}", s.run_id, s.worker_id),
        });
    };
    let holder_name = held.holder.unwrap_or("an unknown worker");
    let (interrupted, note) = if held.status == "running" {
        let mine = held.holder == Some(s.worker_id.as_str());
        let dead = held
            .holder
            .is_some_and(|h| s.takeover_from.iter().any(|d| d == h));
        if held.lease_live && !mine && !dead {
            return Err(Error::invalid(format!(
                "run {:?} is already running (task {}, held by {holder_name}): wait until it finishes, \
                 or cancel it, before starting it again",
                s.run_id, held.task_id
            )));
        }
        let note = format!(" (taken over from {holder_name}, which stopped renewing its lease)");
        let error = format!(
            "interrupted: run {:?} was started again by {}{note}",
            s.run_id, s.worker_id
        );
        (Some(error), note)
    } else {
        (None, String::new())
    };
    // The restart is the row's next attempt (the backend counts it in the same transaction).
    let log_message = format!(
        "run {} started again in-process by {} (attempt {}, was {}){note}",
        s.run_id,
        s.worker_id,
        held.attempts + 1,
        held.status
    );
    Ok(RunStartNote {
        interrupted,
        log_message,
    })
}

/// An interrupted run goes back to the queue for a durable handler of its type when one is
/// registered (`rerun_types`), else it fails; either way its error says it was interrupted.
pub fn interrupted_verdict(run: &InterruptedRun<'_>, r: &RecoverRuns) -> RunVerdict {
    let who = run.holder.unwrap_or("unknown worker");
    let what = match run.run_id {
        Some(id) => format!("run {id}"),
        None => format!("task {}", run.task_id),
    };
    let task_type = run.task_type;
    let requeued = r.rerun_types.iter().any(|t| t == task_type);
    let (error, log_level) = if requeued {
        let error = format!(
            "interrupted: the process running {what} (worker {who}) stopped before it finished; \
             re-queued in {:?} for a re-run by the durable handler of type {task_type:?}",
            r.rerun_queue
        );
        (error, "warning")
    } else {
        let error = format!(
            "interrupted: the process running {what} (worker {who}) stopped before it finished, \
             and no durable handler is registered for type {task_type:?} to re-run it"
        );
        (error, "error")
    };
    RunVerdict {
        requeued,
        error,
        log_level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(worker: &str, takeover_from: &[&str]) -> StartRun {
        StartRun {
            run_id: "r1".into(),
            task_type: "m".into(),
            payload: "{}".into(),
            queue: "runs".into(),
            worker_id: worker.into(),
            lease_ms: 60_000,
            rerun_attempts: 0,
            takeover_from: takeover_from.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn held<'a>(status: &'a str, holder: Option<&'a str>, lease_live: bool) -> HeldRun<'a> {
        HeldRun {
            task_id: 9,
            status,
            attempts: 2,
            holder,
            lease_live,
        }
    }

    #[test]
    fn a_first_start_is_logged_and_interrupts_nothing() {
        let n = start_note(&start("app-1", &[]), None).unwrap();
        assert_eq!(n.interrupted, None);
        assert_eq!(n.log_message, "run r1 started in-process by app-1");
    }

    #[test]
    fn another_holders_live_lease_is_refused() {
        let h = held("running", Some("app-1"), true);
        let e = start_note(&start("app-2", &[]), Some(&h)).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m == "run \"r1\" is already running (task 9, \
                held by app-1): wait until it finishes, or cancel it, before starting it again"),
            "{e:?}"
        );
        let nobody = held("running", None, true);
        let e = start_note(&start("app-2", &[]), Some(&nobody)).unwrap_err();
        assert!(e.to_string().contains("held by an unknown worker"), "{e}");
    }

    #[test]
    fn an_own_lease_a_dead_holder_or_an_ended_lease_is_taken_over() {
        let taken = "interrupted: run \"r1\" was started again by app-2 (taken over from app-1, \
                     which stopped renewing its lease)";
        let log = "run r1 started again in-process by app-2 (attempt 3, was running) \
                   (taken over from app-1, which stopped renewing its lease)";
        for (h, s) in [
            (held("running", Some("app-1"), false), start("app-2", &[])),
            (
                held("running", Some("app-1"), true),
                start("app-2", &["app-1"]),
            ),
        ] {
            let n = start_note(&s, Some(&h)).unwrap();
            assert_eq!(n.interrupted.as_deref(), Some(taken));
            assert_eq!(n.log_message, log);
        }
        let mine = held("running", Some("app-2"), true);
        let n = start_note(&start("app-2", &[]), Some(&mine)).unwrap();
        assert!(n.interrupted.unwrap().contains("taken over from app-2"));
    }

    #[test]
    fn a_finished_run_starts_again_without_interrupting_anything() {
        // Even under a lease that looks live: only a running row is held.
        let h = held("failed", Some("app-1"), true);
        let n = start_note(&start("app-2", &[]), Some(&h)).unwrap();
        assert_eq!(n.interrupted, None);
        assert_eq!(
            n.log_message,
            "run r1 started again in-process by app-2 (attempt 3, was failed)"
        );
    }

    fn recover(rerun_types: &[&str]) -> RecoverRuns {
        RecoverRuns {
            queue: "runs".into(),
            dead_holders: Vec::new(),
            rerun_types: rerun_types.iter().map(|s| s.to_string()).collect(),
            rerun_queue: "durable".into(),
        }
    }

    #[test]
    fn an_interrupted_run_with_a_durable_handler_is_requeued_else_failed() {
        let run = InterruptedRun {
            task_id: 4,
            task_type: "with.handler",
            run_id: Some("r1"),
            holder: Some("dead-1"),
        };
        let v = interrupted_verdict(&run, &recover(&["with.handler"]));
        assert_eq!(
            v,
            RunVerdict {
                requeued: true,
                error: "interrupted: the process running run r1 (worker dead-1) stopped before it \
                        finished; re-queued in \"durable\" for a re-run by the durable handler of \
                        type \"with.handler\""
                    .into(),
                log_level: "warning",
            }
        );
        let v = interrupted_verdict(&run, &recover(&["other"]));
        assert_eq!(
            v,
            RunVerdict {
                requeued: false,
                error: "interrupted: the process running run r1 (worker dead-1) stopped before it \
                        finished, and no durable handler is registered for type \"with.handler\" \
                        to re-run it"
                    .into(),
                log_level: "error",
            }
        );
    }

    #[test]
    fn an_interrupted_row_without_run_id_or_holder_is_named_by_its_task() {
        let run = InterruptedRun {
            task_id: 4,
            task_type: "t",
            run_id: None,
            holder: None,
        };
        let v = interrupted_verdict(&run, &recover(&[]));
        assert!(
            v.error
                .starts_with("interrupted: the process running task 4 (worker unknown worker)"),
            "{}",
            v.error
        );
    }
}
