//! Attempt records, as on SQLite (see storage/sqlite/attempts.rs): every attempt that ended
//! without success keeps its error and traceback, written in the transaction that ends it; a
//! task keeps its latest `MAX_RECORDS_PER_TASK`.

use crate::model::attempt::MAX_RECORDS_PER_TASK;
use crate::model::attempt::{bounded_error, stored_traceback, AttemptRow, Ended, Outcome, Running};
use crate::model::error::{Error, Result};
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::PgDriver;

/// Store the record of an attempt that ended at `now`, and drop the task's records beyond the
/// latest `MAX_RECORDS_PER_TASK`. The caller holds the task's row lock, so `seq` cannot race.
pub(crate) fn record_in(tx: &mut Tx, e: &Ended, now: i64) -> Result<()> {
    let seq: i64 = tx
        .query_one(
            "INSERT INTO task_attempts (task_id, seq, number, max_attempts, worker, started_at, finished_at,
                                        outcome, error, traceback)
             VALUES ($1, coalesce((SELECT max(seq) FROM task_attempts WHERE task_id = $1), 0) + 1,
                     $2, $3, $4, $5, $6, $7, $8, $9)
             RETURNING seq",
            &[
                &e.attempt.task_id,
                &e.attempt.attempts,
                &e.attempt.max_attempts,
                &e.attempt.worker,
                &e.attempt.started_at,
                &now,
                &e.outcome.as_str(),
                &bounded_error(e.error).as_ref(),
                &stored_traceback(e.traceback).as_deref(),
            ],
        )?
        .get(0);
    if seq > MAX_RECORDS_PER_TASK {
        tx.execute(
            "DELETE FROM task_attempts WHERE task_id = $1 AND seq <= $2",
            &[&e.attempt.task_id, &(seq - MAX_RECORDS_PER_TASK)],
        )?;
    }
    Ok(())
}

/// Store the record of the attempt of task `task_id` if it is running (taken from its row):
/// for paths that end attempts of rows they did not read themselves.
pub(crate) fn record_if_running_in(
    tx: &mut Tx,
    task_id: i64,
    outcome: Outcome,
    error: &str,
    now: i64,
) -> Result<()> {
    let Some(row) = tx.query_opt(
        "SELECT attempts, max_attempts, locked_by, started_at FROM tasks WHERE id = $1 AND status = 'running'",
        &[&task_id],
    )?
    else {
        return Ok(());
    };
    let running = Running {
        task_id,
        attempts: row.get(0),
        max_attempts: row.get(1),
        worker: row.get(2),
        started_at: row.get(3),
    };
    record_in(tx, &running.ended(outcome, error, None), now)
}

impl PgDriver {
    /// The task's attempts that ended without success, oldest first.
    pub fn attempts(&self, task_id: i64) -> Result<Vec<AttemptRow>> {
        self.read(|tx| {
            if tx
                .query_opt("SELECT 1 FROM tasks WHERE id = $1", &[&task_id])?
                .is_none()
            {
                return Err(Error::TaskNotFound(task_id));
            }
            let rows = tx.query(
                "SELECT seq, number, max_attempts, worker, started_at, finished_at, outcome, error, traceback
                 FROM task_attempts WHERE task_id = $1 ORDER BY seq",
                &[&task_id],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(AttemptRow {
                        task_id,
                        seq: r.try_get(0)?,
                        number: r.try_get(1)?,
                        max_attempts: r.try_get(2)?,
                        worker: r.try_get(3)?,
                        started_at: r.try_get(4)?,
                        finished_at: r.try_get(5)?,
                        outcome: r.try_get(6)?,
                        error: r.try_get(7)?,
                        traceback: r.try_get(8)?,
                    })
                })
                .collect()
        })
    }
}
