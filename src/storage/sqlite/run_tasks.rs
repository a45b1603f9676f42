//! The task row that mirrors a run executed in-process (see `runs` for the registry): started
//! directly in `running` with a lease held by the starting process, so no worker claims it, and
//! recovered (re-queued or failed as interrupted) once its process stopped renewing that lease.

use crate::model::attempt::Outcome;
use crate::model::claim::LaneKey;
use crate::model::error::Result;
use crate::model::new_task::DEFAULT_PRIORITY;
use crate::model::runs::{
    HeldRun, InterruptedRun, RecoverRuns, RecoveredRun, RunStartNote, RunVerdict, StartRun,
};
use crate::model::task::TaskRow;
use crate::storage::sqlite::attempts::record_if_running_in;
use crate::storage::sqlite::claim::new_lease_token;
use crate::storage::sqlite::claim::race::Race;
use crate::storage::sqlite::clock::{LeaseClock, Now};
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::logs::log_in;
use crate::storage::sqlite::rows::COLUMNS;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params, OptionalExtension};

/// The lease a run's row gets when it starts, and where the row goes.
struct RunLease {
    now: i64,
    until: i64,
    key: i64,
    lane_id: i64,
    token: i64,
}

impl SqliteDriver {
    /// Insert the task row of a run, or restart the row of an earlier run with the same id, in
    /// `running` with a fresh lease for `worker_id`, in one transaction. The returned row carries
    /// the lease token for the fenced complete/fail/renew.
    ///
    /// Refused (`InvalidArgument`, nothing written) while another holder runs the same run id with
    /// a live lease: the engine's rule (`Rules::may_start_run`), given what the row says. The
    /// arguments were checked above (`StartRun::validate`).
    pub fn start_run(&self, s: &StartRun) -> Result<TaskRow> {
        let key: LaneKey = (s.queue.clone(), s.task_type.clone(), String::new());
        let mut created = Vec::new();
        let row = self.db.write(|tx| {
            created.clear();
            let clock = self.now(tx)?;
            let lease = RunLease {
                now: clock.wall,
                until: crate::model::time::later("lease", clock.wall, s.lease_ms)?,
                key: LeaseClock::after(clock, s.lease_ms),
                lane_id: self.lane_id_in(tx, &key, &mut created)?,
                token: new_lease_token(),
            };
            let existing: Option<Held> = tx
                .prepare_cached(
                    "SELECT id, status, locked_by, lease_key, lease_until, attempts FROM tasks WHERE idempotency_key = ?1",
                )?
                .query_row([&s.run_id], |r| {
                    // Attempts only word the log line: a damaged value must not refuse the start.
                    let attempts = r.get::<_, Option<i64>>(5).unwrap_or(None).unwrap_or(0);
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, attempts))
                })
                .optional()?;
            match existing {
                None => {
                    let note = self.rules.may_start_run(s, None)?;
                    insert_run_task(tx, s, &lease, &note)
                }
                Some((id, status, holder, held_key, held_until, attempts)) => {
                    let note = self.rules.may_start_run(
                        s,
                        Some(&HeldRun {
                            task_id: id,
                            status: &status,
                            attempts,
                            holder: holder.as_deref(),
                            lease_live: lease_live(held_key, held_until, clock),
                        }),
                    )?;
                    restart_run_task(tx, s, &lease, id, &note)
                }
            }
        })?;
        self.remember_lanes(created);
        Ok(row)
    }

    /// Interrupted runs of `r.queue`: rows still `running` whose lease expired or whose holder is
    /// known dead, and rows the rescuer already put back in the queue (a run row is never queued
    /// otherwise). Each is re-queued in `r.rerun_queue` when its type is in `r.rerun_types`,
    /// otherwise failed with an error that says it was interrupted. One transaction.
    pub fn recover_runs(&self, r: &RecoverRuns) -> Result<Vec<RecoveredRun>> {
        let mut created = Vec::new();
        let out = self.db.write(|tx| {
            created.clear();
            let clock = self.now(tx)?;
            let now = clock.wall;
            let found = interrupted_in(tx, r, clock)?;
            let mut out = Vec::with_capacity(found.len());
            let race = Race::read(tx)?;
            for (id, task_type, run_id, holder, priority) in found {
                let verdict = self.rules.after_run_interrupted(
                    &InterruptedRun {
                        task_id: id,
                        task_type: &task_type,
                        run_id: run_id.as_deref(),
                        holder: holder.as_deref(),
                    },
                    r,
                );
                let RunVerdict {
                    requeued,
                    error,
                    log_level,
                } = verdict;
                // Rows still running end their attempt here (the rescuer recorded the others').
                record_if_running_in(tx, id, Outcome::Interrupted, &error, now)?;
                if requeued {
                    let key: LaneKey = (r.rerun_queue.clone(), task_type.clone(), String::new());
                    let lane_id = self.lane_id_in(tx, &key, &mut created)?;
                    tx.prepare_cached(
                        "UPDATE tasks SET status = 'queued', lane_id = ?2, queue = ?3, run_after = ?4, wkey = ?5,
                                error = ?6, updated_at = ?4, lease_until = NULL, lease_token = NULL, lease_key = NULL,
                                max_attempts = max(max_attempts, attempts + 1)
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        lane_id,
                        r.rerun_queue,
                        now,
                        race.key(priority),
                        error
                    ])?;
                    log_in(tx, id, now, log_level, &error)?;
                } else {
                    tx.prepare_cached(
                        "UPDATE tasks SET status = 'failed', error = ?2, finished_at = ?3, updated_at = ?3,
                                lease_until = NULL, lease_token = NULL, lease_key = NULL
                         WHERE id = ?1",
                    )?
                    .execute(params![id, error, now])?;
                    log_in(tx, id, now, log_level, &error)?;
                }
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

/// A run seen for the first time: its task row, inserted in `running`.
fn insert_run_task(
    tx: &WriteTx,
    s: &StartRun,
    lease: &RunLease,
    note: &RunStartNote,
) -> Result<TaskRow> {
    let (race, mut floor): (Race, _) = crate::storage::sqlite::enqueue::read_insert_meta(tx)?;
    let mut row = tx
        .prepare_cached(&format!(
            "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, attempts, max_attempts,
                                run_after, wkey, created_at, started_at, updated_at, locked_by,
                                lease_until, lease_token, idempotency_key, lease_key)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', 1, ?6, ?7, ?8, ?7, ?7, ?7, ?9, ?10, ?11, ?12, ?13)
             RETURNING {COLUMNS}"
        ))?
        .query_row(
            params![
                lease.lane_id,
                s.task_type,
                s.queue,
                s.payload,
                DEFAULT_PRIORITY,
                1 + s.rerun_attempts,
                lease.now,
                race.key(DEFAULT_PRIORITY),
                s.worker_id,
                lease.until,
                lease.token,
                s.run_id,
                lease.key
            ],
            TaskRow::from_row,
        )?;
    row.id = floor.place(tx, row.id)?;
    log_in(tx, row.id, lease.now, "info", &note.log_message)?;
    Ok(row)
}

/// A run id seen before (task `id`): its row restarts in `running`, as the engine's `note`
/// allowed (taking over a running row ends that attempt, as interrupted).
fn restart_run_task(
    tx: &WriteTx,
    s: &StartRun,
    lease: &RunLease,
    id: i64,
    note: &RunStartNote,
) -> Result<TaskRow> {
    if let Some(error) = &note.interrupted {
        // The attempt taken over ends here: its record says so (see `attempts`).
        record_if_running_in(tx, id, Outcome::Interrupted, error, lease.now)?;
    }
    let row = tx
        .prepare_cached(&format!(
            "UPDATE tasks SET lane_id = ?2, type = ?3, queue = ?4, payload = ?5, status = 'running',
                    attempts = attempts + 1, max_attempts = attempts + 1 + ?6, run_after = ?7,
                    started_at = ?7, finished_at = NULL, updated_at = ?7, locked_by = ?8,
                    lease_until = ?9, lease_token = ?10, error = NULL, result = NULL,
                    progress = NULL, step = NULL, message = NULL, lease_key = ?11
             WHERE id = ?1 RETURNING {COLUMNS}"
        ))?
        .query_row(
            params![
                id,
                lease.lane_id,
                s.task_type,
                s.queue,
                s.payload,
                s.rerun_attempts,
                lease.now,
                s.worker_id,
                lease.until,
                lease.token,
                lease.key
            ],
            TaskRow::from_row,
        )?;
    log_in(tx, id, lease.now, "info", &note.log_message)?;
    Ok(row)
}

type Interrupted = (i64, String, Option<String>, Option<String>, i64);

/// (id, status, holder, lease key, lease end on the wall clock, attempts) of a run's existing
/// task row.
type Held = (i64, String, Option<String>, Option<i64>, Option<i64>, i64);

/// Whether a lease (its key, or for a lease without one its wall-clock end) has not ended.
fn lease_live(key: Option<i64>, until: Option<i64>, clock: Now) -> bool {
    match key {
        Some(k) => k >= clock.key,
        None => until.is_some_and(|t| t >= clock.wall),
    }
}

/// (id, type, run id, holder, priority) of the interrupted rows of `r.queue`.
fn interrupted_in(tx: &WriteTx, r: &RecoverRuns, clock: Now) -> Result<Vec<Interrupted>> {
    let mut out = Vec::new();
    // Running rows: only the running ones are in this index, so this never walks the backlog.
    let mut stmt = tx.prepare_cached(
        "SELECT id, type, idempotency_key, locked_by, priority, lease_key, lease_until FROM tasks
         INDEXED BY tasks_lease WHERE status = 'running' AND queue = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([&r.queue], |row| {
        Ok((
            (
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get(4)?,
            ),
            (
                row.get::<_, Option<i64>>(5).unwrap_or(None),
                row.get::<_, Option<i64>>(6).unwrap_or(None),
            ),
        ))
    })?;
    for row in rows {
        let (item, (key, until)) = row?;
        let expired = !lease_live(key, until, clock);
        let dead = item.3.as_ref().is_some_and(|h| r.dead_holders.contains(h));
        if expired || dead {
            out.push(item);
        }
    }
    // Queued rows of the runs queue: put back by the rescuer after their holder stopped renewing.
    let mut stmt = tx.prepare_cached(
        "SELECT id, type, idempotency_key, locked_by, priority FROM tasks INDEXED BY tasks_claim_priority
         WHERE status = 'queued' AND lane_id IN (SELECT id FROM lanes WHERE queue = ?1) ORDER BY id",
    )?;
    let rows = stmt.query_map([&r.queue], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ))
    })?;
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}
