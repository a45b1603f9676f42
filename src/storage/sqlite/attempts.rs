//! Attempt records: every attempt of a task that ended without success (a failure its worker
//! reported, a lease that expired, a run interrupted) keeps its error and traceback in
//! `task_attempts`, written in the transaction that ends the attempt, so a task that failed three
//! times shows three errors. `tasks.error` still holds the last one. Completions and claims write
//! no record: those hot paths stay one row update each; a failure writes one more row.
//!
//! Sizes are bounded: an error keeps its first `MAX_ERROR_BYTES`, a traceback its last
//! `MAX_TRACEBACK_BYTES` (the end is where it failed), each saying what was cut; a task keeps its
//! `MAX_RECORDS_PER_TASK` latest records (`seq` tells how many came before).

use crate::model::attempt::bounded_error;
use crate::model::attempt::stored_traceback;
use crate::model::attempt::AttemptRow;
use crate::model::attempt::MAX_RECORDS_PER_TASK;
use crate::model::attempt::{Ended, Outcome, Running};
use crate::model::error::{Error, Result};
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params, OptionalExtension};

/// Store the record of an attempt that ended at `now`, and drop the task's records beyond the
/// latest `MAX_RECORDS_PER_TASK`. `error` and `traceback` are bounded here.
pub(crate) fn record_in(tx: &WriteTx, e: &Ended, now: i64) -> Result<()> {
    let seq: i64 = tx
        .prepare_cached(
            "INSERT INTO task_attempts (task_id, seq, number, max_attempts, worker, started_at, finished_at,
                                        outcome, error, traceback)
             VALUES (?1, coalesce((SELECT max(seq) FROM task_attempts WHERE task_id = ?1), 0) + 1,
                     ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             RETURNING seq",
        )?
        .query_row(
            params![
                e.attempt.task_id,
                e.attempt.attempts,
                e.attempt.max_attempts,
                e.attempt.worker,
                e.attempt.started_at,
                now,
                e.outcome.as_str(),
                bounded_error(e.error),
                stored_traceback(e.traceback),
            ],
            |r| r.get(0),
        )?;
    if seq > MAX_RECORDS_PER_TASK {
        tx.prepare_cached("DELETE FROM task_attempts WHERE task_id = ?1 AND seq <= ?2")?
            .execute(params![e.attempt.task_id, seq - MAX_RECORDS_PER_TASK])?;
    }
    Ok(())
}

/// Store the record of the attempt of task `task_id` if it is running (taken from its row):
/// for paths that end attempts of rows they did not read themselves.
pub(crate) fn record_if_running_in(
    tx: &WriteTx,
    task_id: i64,
    outcome: Outcome,
    error: &str,
    now: i64,
) -> Result<()> {
    let running: Option<Running> = tx
        .prepare_cached(
            "SELECT attempts, max_attempts, locked_by, started_at FROM tasks
             WHERE id = ?1 AND status = 'running'",
        )?
        .query_row([task_id], |r| {
            Ok(Running {
                task_id,
                attempts: r.get(0)?,
                max_attempts: r.get(1)?,
                worker: r.get(2).unwrap_or(None),
                started_at: r.get(3).unwrap_or(None),
            })
        })
        .optional()?;
    match running {
        Some(running) => record_in(tx, &running.ended(outcome, error, None), now),
        None => Ok(()),
    }
}

impl SqliteDriver {
    /// The task's attempts that ended without success, oldest first (its latest
    /// `MAX_RECORDS_PER_TASK`). Empty for a task that never failed, and for failures recorded by
    /// builds before schema version 9 (their last error is still `Task.error`).
    pub fn attempts(&self, task_id: i64) -> Result<Vec<AttemptRow>> {
        self.db.read(|c| {
            if !c
                .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?
                .exists([task_id])?
            {
                return Err(Error::TaskNotFound(task_id));
            }
            let mut stmt = c.prepare_cached(
                "SELECT seq, number, max_attempts, worker, started_at, finished_at, outcome, error, traceback
                 FROM task_attempts WHERE task_id = ?1 ORDER BY seq",
            )?;
            // Leniently: a damaged record (a column of the wrong type) must not hide the others.
            let rows = stmt.query_map([task_id], |r| {
                let text = |i: usize| r.get::<_, Option<String>>(i).unwrap_or(None);
                let int = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(None);
                Ok(AttemptRow {
                    task_id,
                    seq: r.get(0)?,
                    number: int(1).unwrap_or(0),
                    max_attempts: int(2).unwrap_or(0),
                    worker: text(3),
                    started_at: int(4).map(|t| crate::model::time::clamp_stored(t).0),
                    finished_at: crate::model::time::clamp_stored(
                        int(5).unwrap_or(crate::model::time::MIN_TIME_MS),
                    )
                    .0,
                    outcome: text(6).unwrap_or_default(),
                    error: text(7).unwrap_or_default(),
                    traceback: text(8),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attempt::bounded_traceback;
    use crate::model::attempt::MAX_ERROR_BYTES;
    use crate::model::attempt::MAX_TRACEBACK_BYTES;
    use std::borrow::Cow;

    #[test]
    fn a_short_error_and_traceback_are_stored_as_given() {
        assert!(matches!(bounded_error("boom"), Cow::Borrowed("boom")));
        assert!(matches!(bounded_traceback("tb\n"), Cow::Borrowed("tb\n")));
        assert_eq!(stored_traceback(Some("  \n")), None);
        assert_eq!(stored_traceback(None), None);
    }

    #[test]
    fn a_long_error_keeps_its_beginning_within_the_bound() {
        let text = format!("ValueError: {}", "é".repeat(MAX_ERROR_BYTES));
        let out = bounded_error(&text);
        assert!(out.len() <= MAX_ERROR_BYTES, "{}", out.len());
        assert!(out.starts_with("ValueError: éé"));
        assert!(
            out.ends_with("more bytes not kept]"),
            "{}",
            &out[out.len() - 80..]
        );
    }

    #[test]
    fn a_long_traceback_keeps_its_end_from_a_line_start() {
        let mut text = String::from("Traceback (most recent call last):\n");
        for i in 0..5000 {
            text.push_str(&format!("  File \"app.py\", line {i}, in f{i}\n    g()\n"));
        }
        text.push_str("ValueError: the real cause\n");
        let out = bounded_traceback(&text);
        assert!(out.len() <= MAX_TRACEBACK_BYTES, "{}", out.len());
        assert!(out.ends_with("ValueError: the real cause\n"));
        let (note, rest) = out.split_once('\n').unwrap();
        assert!(note.starts_with("[traceback cut: its first "), "{note}");
        assert!(
            rest.starts_with("  File") || rest.starts_with("    g()"),
            "{}",
            &rest[..40]
        );
        let dropped: usize = note
            .trim_start_matches("[traceback cut: its first ")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(&text[dropped..], rest);
    }

    #[test]
    fn one_huge_line_is_cut_on_a_character_boundary() {
        let text = "ü".repeat(MAX_TRACEBACK_BYTES);
        let out = bounded_traceback(&text);
        assert!(out.len() <= MAX_TRACEBACK_BYTES);
        assert!(out.ends_with("üü"));
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;
    use crate::model::claim::ClaimRequest;
    use crate::model::lease::{Failure, Lease};
    use crate::model::new_task::NewTask;
    use crate::model::task::TaskRow;
    use crate::storage::sqlite::testutil::file_driver;

    fn claim(q: &SqliteDriver, lease_ms: i64) -> TaskRow {
        let mut req = ClaimRequest::new("w1");
        req.lease_ms = lease_ms;
        q.claim(&req).unwrap().pop().expect("a task")
    }

    fn lease(t: &TaskRow) -> Lease {
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    fn records(q: &SqliteDriver) -> i64 {
        q.db.read(|c| Ok(c.query_row("SELECT count(*) FROM task_attempts", [], |r| r.get(0))?))
            .unwrap()
    }

    #[test]
    fn claims_and_completions_write_no_record_a_failure_writes_one() {
        let (_d, q) = file_driver();
        let ok = q.enqueue(&NewTask::new("x", "null")).unwrap();
        let bad = q.enqueue(&NewTask::new("x", "null")).unwrap();
        let t = claim(&q, 60_000);
        assert_eq!(t.id, ok);
        q.complete(lease(&t), None).unwrap();
        assert_eq!(records(&q), 0);
        let t = claim(&q, 60_000);
        let mut f = Failure::new(lease(&t), "ValueError: bad", true);
        f.traceback = Some("Traceback (most recent call last):\n  ...\nValueError: bad\n".into());
        q.fail_attempt(&f).unwrap();
        let [a] = q.attempts(bad).unwrap().try_into().unwrap();
        assert_eq!(
            (a.seq, a.number, a.outcome.as_str(), a.worker.as_deref()),
            (1, 1, "failed", Some("w1"))
        );
        assert_eq!(a.traceback, f.traceback);
        assert_eq!(q.get(bad).unwrap().traceback, f.traceback);
        assert_eq!(q.get(ok).unwrap().traceback, None);
        assert!(q.attempts(ok).unwrap().is_empty());
    }

    #[test]
    fn a_rescued_lease_and_an_interrupted_run_are_recorded() {
        let (_d, q) = file_driver();
        let id = q.enqueue(&NewTask::new("x", "null")).unwrap();
        claim(&q, 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(q.sweep().unwrap(), 1);
        let [a] = q.attempts(id).unwrap().try_into().unwrap();
        assert_eq!(a.outcome, "lease_expired");
        assert!(a
            .error
            .starts_with("lease expired on attempt 1 of 5 (worker w1"));

        let run = q
            .start_run(&crate::model::runs::StartRun {
                run_id: "run-1".into(),
                task_type: "m.x".into(),
                payload: "null".into(),
                queue: "runs".into(),
                worker_id: "app-1".into(),
                lease_ms: 60_000,
                rerun_attempts: 0,
                takeover_from: Vec::new(),
            })
            .unwrap();
        let r = crate::model::runs::RecoverRuns {
            queue: "runs".into(),
            dead_holders: vec!["app-1".into()],
            rerun_types: Vec::new(),
            rerun_queue: "default".into(),
        };
        let [item] = q.recover_runs(&r).unwrap().try_into().unwrap();
        let [a] = q.attempts(run.id).unwrap().try_into().unwrap();
        assert_eq!(
            (a.outcome.as_str(), a.worker.as_deref(), a.error.as_str()),
            ("interrupted", Some("app-1"), item.error.as_str())
        );
    }

    #[test]
    fn a_task_keeps_its_latest_records() {
        let (_d, q) = file_driver();
        let mut t = NewTask::new("x", "null");
        t.max_attempts = 100;
        t.retry = Some(crate::model::retry::RetryOverrides {
            base: Some(0.0),
            jitter: Some(0.0),
            ..Default::default()
        });
        let id = q.enqueue(&t).unwrap();
        for n in 1..=MAX_RECORDS_PER_TASK + 3 {
            let t = claim(&q, 60_000);
            q.fail(lease(&t), &format!("e{n}"), true).unwrap();
        }
        let kept = q.attempts(id).unwrap();
        assert_eq!(kept.len() as i64, MAX_RECORDS_PER_TASK);
        assert_eq!((kept[0].seq, kept[0].error.as_str()), (4, "e4"));
        assert_eq!(kept.last().unwrap().seq, MAX_RECORDS_PER_TASK + 3);
    }

    #[test]
    fn column_count_matches_the_column_list() {
        assert_eq!(
            crate::storage::sqlite::rows::COLUMNS.split(',').count(),
            crate::storage::sqlite::rows::COLUMN_COUNT
        );
    }
}
