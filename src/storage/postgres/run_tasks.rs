//! The task row that mirrors a run executed in-process, as on SQLite
//! (storage/sqlite/run_tasks.rs): started directly in `running` with a lease held by the
//! starting process, so no worker claims it, and recovered (re-queued or failed as interrupted)
//! once its process stopped renewing that lease. Leases end on the database's clock. Whether a
//! run may start, and what becomes of an interrupted one, are the engine's (`storage::Rules`).

use crate::model::attempt::Outcome;
use crate::model::claim::LaneKey;
use crate::model::error::Result;
use crate::model::new_task::DEFAULT_PRIORITY;
use crate::model::runs::{
    HeldRun, InterruptedRun, RecoverRuns, RecoveredRun, RunStartNote, RunVerdict, StartRun,
};
use crate::model::task::TaskRow;
use crate::storage::postgres::attempts::record_if_running_in;
use crate::storage::postgres::changes::record_created;
use crate::storage::postgres::logs::log_in;
use crate::storage::postgres::rows::{task_row, COLUMNS};
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::{db_now, PgDriver};

/// The lease a run's row gets when it starts, and where the row goes.
struct RunLease {
    now: i64,
    until: i64,
    lane_id: i64,
}

/// (id, type, run id, holder) of an interrupted run's row.
type Interrupted = (i64, String, Option<String>, Option<String>);

/// (id, status, holder, lease end, attempts) of a run's existing task row.
type Held = (i64, String, Option<String>, Option<i64>, i64);

impl PgDriver {
    /// Insert the task row of a run, or restart the row of an earlier run with the same id, in
    /// `running` with a fresh lease for `worker_id`, in one transaction. Refused
    /// (`InvalidArgument`, nothing written) while another holder runs the same run id with a
    /// live lease: the engine's rule (`Rules::may_start_run`), given what the row says. The
    /// arguments were checked above (`StartRun::validate`).
    pub fn start_run(&self, s: &StartRun) -> Result<TaskRow> {
        let key: LaneKey = (s.queue.clone(), s.task_type.clone(), String::new());
        let mut created = Vec::new();
        let row = self.write(|tx| {
            created.clear();
            let now = db_now(tx)?;
            let lease = RunLease {
                now,
                until: crate::model::time::later("lease", now, s.lease_ms)?,
                lane_id: self.lane_id_in(tx, &key, &mut created)?,
            };
            // A start that finds no row inserts one, unless a concurrent start of the same run
            // committed its row first: then that row (visible to the next statement) is judged.
            let (id, status, holder, until, attempts) = loop {
                if let Some(held) = held_run_in(tx, s)? {
                    break held;
                }
                let note = self.rules.may_start_run(s, None)?;
                if let Some(row) = insert_run_task(tx, s, &lease, &note)? {
                    return Ok(row);
                }
            };
            let note = self.rules.may_start_run(
                s,
                Some(&HeldRun {
                    task_id: id,
                    status: &status,
                    attempts,
                    holder: holder.as_deref(),
                    lease_live: until.is_some_and(|t| t >= now),
                }),
            )?;
            restart_run_task(tx, s, &lease, id, &note)
        })?;
        self.remember_lanes(created);
        Ok(row)
    }

    /// Interrupted runs of `r.queue`: rows still `running` whose lease ended or whose holder is
    /// known dead, and rows the rescuer already put back in the queue. Each is re-queued in
    /// `r.rerun_queue` or failed, as the engine says (`Rules::after_run_interrupted`).
    pub fn recover_runs(&self, r: &RecoverRuns) -> Result<Vec<RecoveredRun>> {
        let mut created = Vec::new();
        let out = self.write(|tx| {
            created.clear();
            let now = db_now(tx)?;
            let found = interrupted_in(tx, r, now)?;
            let mut out = Vec::with_capacity(found.len());
            for (id, task_type, run_id, holder) in found {
                let RunVerdict {
                    requeued,
                    error,
                    log_level,
                } = self.rules.after_run_interrupted(
                    &InterruptedRun {
                        task_id: id,
                        task_type: &task_type,
                        run_id: run_id.as_deref(),
                        holder: holder.as_deref(),
                    },
                    r,
                );
                // Rows still running end their attempt here (the rescuer recorded the others').
                record_if_running_in(tx, id, Outcome::Interrupted, &error, now)?;
                if requeued {
                    let key: LaneKey = (r.rerun_queue.clone(), task_type.clone(), String::new());
                    let lane_id = self.lane_id_in(tx, &key, &mut created)?;
                    tx.execute(
                        "UPDATE tasks SET status = 'queued', lane_id = $2, queue = $3, run_after = $4,
                                error = $5, updated_at = $4, lease_until = NULL, lease_token = NULL,
                                max_attempts = greatest(max_attempts, attempts + 1)
                         WHERE id = $1",
                        &[&id, &lane_id, &r.rerun_queue, &now, &error],
                    )?;
                    self.notify_in(tx, lane_id)?;
                } else {
                    tx.execute(
                        "UPDATE tasks SET status = 'failed', error = $2, finished_at = $3, updated_at = $3,
                                lease_until = NULL, lease_token = NULL
                         WHERE id = $1",
                        &[&id, &error, &now],
                    )?;
                }
                log_in(tx, id, now, log_level, &error)?;
                out.push(RecoveredRun {
                    task_id: id,
                    run_id,
                    task_type,
                    holder,
                    requeued,
                    error,
                });
            }
            Ok(out)
        })?;
        self.remember_lanes(created);
        Ok(out)
    }

    pub(crate) fn remember_lanes(&self, created: Vec<(LaneKey, i64)>) {
        if !created.is_empty() {
            let mut cache = self.lanes.lock();
            for (key, id) in created {
                cache.remember(key, id);
            }
        }
    }
}

/// The row of run `s.run_id`, locked, so a concurrent start of the same run waits for this one
/// and then sees it.
fn held_run_in(tx: &mut Tx, s: &StartRun) -> Result<Option<Held>> {
    Ok(tx
        .query_opt(
            "SELECT id, status, locked_by, lease_until, attempts FROM tasks
             WHERE idempotency_key = $1 FOR UPDATE",
            &[&s.run_id],
        )?
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))))
}

/// A run seen for the first time: its task row, inserted in `running`. `None` when a concurrent
/// start of the same new run id committed its row first (nothing written here).
fn insert_run_task(
    tx: &mut Tx,
    s: &StartRun,
    lease: &RunLease,
    note: &RunStartNote,
) -> Result<Option<TaskRow>> {
    let inserted = tx.query_opt(
        &format!(
            "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, attempts, max_attempts,
                                run_after, created_at, started_at, updated_at, locked_by,
                                lease_until, lease_token, idempotency_key)
             VALUES ($1, $2, $3, $4, $5, 'running', 1, $6, $7, $7, $7, $7, $8, $9, nextval('lease_tokens'), $10)
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING {COLUMNS}"
        ),
        &[
            &lease.lane_id,
            &s.task_type,
            &s.queue,
            &s.payload,
            &DEFAULT_PRIORITY,
            &(1 + s.rerun_attempts),
            &lease.now,
            &s.worker_id,
            &lease.until,
            &s.run_id,
        ],
    )?;
    let Some(row) = inserted else {
        return Ok(None);
    };
    let row = task_row(&row)?;
    record_created(tx, &[row.id])?;
    log_in(tx, row.id, lease.now, "info", &note.log_message)?;
    Ok(Some(row))
}

/// A run id seen before (task `id`): its row restarts in `running`, as the engine's `note`
/// allowed (taking over a running row ends that attempt, as interrupted).
fn restart_run_task(
    tx: &mut Tx,
    s: &StartRun,
    lease: &RunLease,
    id: i64,
    note: &RunStartNote,
) -> Result<TaskRow> {
    if let Some(error) = &note.interrupted {
        record_if_running_in(tx, id, Outcome::Interrupted, error, lease.now)?;
    }
    let row = tx.query_one(
        &format!(
            "UPDATE tasks SET lane_id = $2, type = $3, queue = $4, payload = $5, status = 'running',
                    attempts = attempts + 1, max_attempts = attempts + 1 + $6, run_after = $7,
                    started_at = $7, finished_at = NULL, updated_at = $7, locked_by = $8,
                    lease_until = $9, lease_token = nextval('lease_tokens'), error = NULL, result = NULL,
                    progress = NULL, step = NULL, message = NULL
             WHERE id = $1 RETURNING {COLUMNS}"
        ),
        &[
            &id,
            &lease.lane_id,
            &s.task_type,
            &s.queue,
            &s.payload,
            &s.rerun_attempts,
            &lease.now,
            &s.worker_id,
            &lease.until,
        ],
    )?;
    let row = task_row(&row)?;
    log_in(tx, id, lease.now, "info", &note.log_message)?;
    Ok(row)
}

/// The interrupted rows of `r.queue`: running ones first, then queued ones (put back by the
/// rescuer), each in id order. Rows another transaction holds right now are left for later.
fn interrupted_in(tx: &mut Tx, r: &RecoverRuns, now: i64) -> Result<Vec<Interrupted>> {
    let read = |rows: Vec<postgres::Row>| -> Vec<Interrupted> {
        rows.iter()
            .map(|x| (x.get(0), x.get(1), x.get(2), x.get(3)))
            .collect()
    };
    let mut out = read(tx.query(
        "SELECT id, type, idempotency_key, locked_by FROM tasks
         WHERE status = 'running' AND queue = $1 AND (lease_until < $2 OR locked_by = ANY($3))
         ORDER BY id FOR UPDATE SKIP LOCKED",
        &[&r.queue, &now, &r.dead_holders],
    )?);
    out.extend(read(tx.query(
        "SELECT id, type, idempotency_key, locked_by FROM tasks
         WHERE status = 'queued' AND lane_id IN (SELECT id FROM lanes WHERE queue = $1)
         ORDER BY id FOR UPDATE SKIP LOCKED",
        &[&r.queue],
    )?));
    Ok(out)
}
