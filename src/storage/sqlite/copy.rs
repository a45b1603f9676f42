//! `copy` on SQLite (see `model::copy`, `ops::copy`): every table read in key order in batches,
//! and rows written with their ids. What only this backend keeps is derived here on the way in:
//! a task's lane, its race key (drawn fresh from this file's race clock) and, for a running
//! task, its lease key on this machine's lease clock, ending when `lease_until` says. What
//! tasks wait on is in `copy_waits`, limits, schedules and default timeouts in `copy_settings`.

use crate::model::copy::{
    conflict, key_taken, lane_key, refuse_damaged, task_difference, CopyAttempt, CopyImport,
    CopyKey, CopyLog, CopyRows, CopyRun, CopySummary, CopyTable, CopyTask,
};
use crate::model::error::Result;

use crate::model::task::{Status, TaskRow};
use crate::storage::sqlite::claim::race::Race;
use crate::storage::sqlite::clock::LeaseClock;
use crate::storage::sqlite::copy_batch::{all, Writing};
use crate::storage::sqlite::rows::{COLUMNS, COLUMN_COUNT};
use crate::storage::sqlite::SqliteDriver;
use crate::storage::sqlite::{copy_settings as settings, copy_waits as waits};
use rusqlite::{params, Connection, OptionalExtension, Row};

const ATTEMPT_COLUMNS: &str =
    "task_id, seq, number, max_attempts, worker, started_at, finished_at, outcome, error, traceback";
const RUN_COLUMNS: &str =
    "rowid, run_id, module_id, status, created_at, completed_at, updated_at, data";

fn task(r: &Row) -> rusqlite::Result<CopyTask> {
    Ok(CopyTask {
        row: TaskRow::from_row(r)?,
        retry_policy: r.get(COLUMN_COUNT)?,
    })
}

fn log(r: &Row) -> rusqlite::Result<CopyLog> {
    Ok(CopyLog {
        id: r.get(0)?,
        task_id: r.get(1)?,
        at: r.get(2)?,
        level: r.get(3)?,
        message: r.get(4)?,
        details: r.get(5)?,
    })
}

fn attempt(r: &Row) -> rusqlite::Result<CopyAttempt> {
    Ok(CopyAttempt {
        task_id: r.get(0)?,
        seq: r.get(1)?,
        number: r.get(2)?,
        max_attempts: r.get(3)?,
        worker: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        outcome: r.get(7)?,
        error: r.get(8)?,
        traceback: r.get(9)?,
    })
}

fn run(r: &Row) -> rusqlite::Result<CopyRun> {
    Ok(CopyRun {
        ordinal: r.get(0)?,
        run_id: r.get(1)?,
        module_id: r.get(2)?,
        status: r.get(3)?,
        created_at: r.get(4)?,
        completed_at: r.get(5)?,
        updated_at: r.get(6)?,
        data: r.get(7)?,
    })
}

impl SqliteDriver {
    pub fn copy_summary(&self) -> Result<CopySummary> {
        let now = crate::model::time::now_ms();
        self.db.read(|c| {
            let n = |sql: &str| -> Result<u64> {
                Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
            };
            Ok(CopySummary {
                tasks: n("SELECT count(*) FROM tasks")?,
                logs: n("SELECT count(*) FROM task_logs")?,
                attempts: n("SELECT count(*) FROM task_attempts")?,
                runs: n("SELECT count(*) FROM runs")?,
                retry_policies: n("SELECT count(*) FROM queue_config")?,
                dependencies: n("SELECT count(*) FROM task_dependencies")?,
                holds: n("SELECT count(*) FROM task_holds")?,
                limits: n("SELECT count(*) FROM limits")?,
                schedules: n("SELECT count(*) FROM schedules")?,
                queue_timeouts: n("SELECT count(*) FROM queue_timeouts")?,
                // lease_until is the wall-clock end the lease key was made from.
                live_leases: c.query_row(
                    "SELECT count(*) FROM tasks WHERE status = 'running' AND lease_until > ?1",
                    [now],
                    |r| r.get::<_, i64>(0),
                )? as u64,
                task_ids_used: c.query_row(
                    "SELECT max(coalesce((SELECT max(id) FROM tasks), 0),
                                coalesce((SELECT value FROM meta WHERE key = 'id_floor'), 0))",
                    [],
                    |r| r.get(0),
                )?,
            })
        })
    }

    pub fn copy_export(
        &self,
        table: CopyTable,
        after: Option<&CopyKey>,
        limit: usize,
    ) -> Result<CopyRows> {
        let (a, b, name, name2) = CopyKey::bounds(after);
        let limit = limit as i64;
        self.db.read(|c| {
            Ok(match table {
                CopyTable::Tasks => {
                    let sql = format!(
                        "SELECT {COLUMNS}, retry_policy FROM tasks WHERE id > ?1 ORDER BY id LIMIT ?2"
                    );
                    let rows = all(c, &sql, params![a, limit], task)?;
                    for t in &rows {
                        refuse_damaged(&t.row)?;
                    }
                    CopyRows::Tasks(rows)
                }
                CopyTable::Logs => CopyRows::Logs(all(
                    c,
                    "SELECT id, task_id, at, level, message, details FROM task_logs
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                    params![a, limit],
                    log,
                )?),
                CopyTable::Attempts => CopyRows::Attempts(all(
                    c,
                    &format!(
                        "SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE (task_id, seq) > (?1, ?2)
                         ORDER BY task_id, seq LIMIT ?3"
                    ),
                    params![a, b, limit],
                    attempt,
                )?),
                // runs_created orders by (created_at, rowid).
                CopyTable::Runs => CopyRows::Runs(all(
                    c,
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE (created_at, rowid) > (?1, ?2)
                         ORDER BY created_at, rowid LIMIT ?3"
                    ),
                    params![a, b, limit],
                    run,
                )?),
                CopyTable::RetryPolicies => CopyRows::RetryPolicies(all(
                    c,
                    "SELECT queue, retry_policy FROM queue_config WHERE queue > ?1 ORDER BY queue LIMIT ?2",
                    params![name, limit],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?),
                CopyTable::Dependencies => waits::export_dependencies(c, a, b, limit)?,
                CopyTable::Holds => waits::export_holds(c, a, limit)?,
                CopyTable::Limits => settings::export_limits(c, &name, &name2, limit)?,
                CopyTable::Schedules => settings::export_schedules(c, &name, limit)?,
                CopyTable::QueueTimeouts => settings::export_timeouts(c, &name, limit)?,
            })
        })
    }

    pub fn copy_import(&self, rows: &CopyRows, write: bool) -> Result<CopyImport> {
        if !write {
            return self.db.read(|c| self.import_in(c, None, rows));
        }
        let mut lanes = Vec::new();
        let out = self.db.write(|tx| {
            let mut w = Writing {
                tx,
                now: self.now(tx)?,
                race: Race::read(tx)?,
                new_lanes: Vec::new(),
            };
            let out = self.import_in(tx, Some(&mut w), rows)?;
            lanes = w.new_lanes;
            Ok(out)
        })?;
        // Only lanes whose creating transaction committed enter the cache.
        let mut cache = self.lanes.lock();
        for (key, id) in lanes {
            cache.remember(key, id);
        }
        Ok(out)
    }

    pub fn copy_reserve_ids(&self, used: i64) -> Result<()> {
        let top: i64 = self.db.read(|c| {
            Ok(c.query_row(
                "SELECT max(coalesce((SELECT max(id) FROM tasks), 0),
                            coalesce((SELECT value FROM meta WHERE key = 'id_floor'), 0))",
                [],
                |r| r.get(0),
            )?)
        })?;
        if used > top {
            self.db
                .write(|tx| crate::storage::sqlite::enqueue::raise_id_floor(tx, used))?;
        }
        Ok(())
    }

    /// Compare each row with the one held under its key; write the missing ones when `w`.
    fn import_in(
        &self,
        c: &Connection,
        mut w: Option<&mut Writing>,
        rows: &CopyRows,
    ) -> Result<CopyImport> {
        let mut out = CopyImport::default();
        let mut count = |held: bool| {
            if held {
                out.same += 1
            } else {
                out.new += 1
            }
        };
        match rows {
            CopyRows::Tasks(tasks) => self.copy_tasks_in(c, w.as_deref_mut(), tasks, &mut count)?,
            CopyRows::Logs(logs) => {
                for l in logs {
                    let held = c
                        .prepare_cached(
                            "SELECT id, task_id, at, level, message, details FROM task_logs WHERE id = ?1",
                        )?
                        .query_row([l.id], log)
                        .optional()?;
                    match &held {
                        Some(h) if h != l => {
                            return Err(conflict(CopyTable::Logs, l.id, "its text or task"))
                        }
                        Some(_) => {}
                        None => {
                            if let Some(w) = w.as_deref_mut() {
                                w.tx.prepare_cached(
                                    "INSERT INTO task_logs (id, task_id, at, level, message, details)
                                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                )?
                                .execute(params![l.id, l.task_id, l.at, l.level, l.message, l.details])?;
                            }
                        }
                    }
                    count(held.is_some());
                }
            }
            CopyRows::Attempts(attempts) => {
                self.copy_attempts_in(c, w.as_deref_mut(), attempts, &mut count)?
            }
            CopyRows::Runs(runs) => {
                let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1");
                for r in runs {
                    let held = c
                        .prepare_cached(&sql)?
                        .query_row([&r.run_id], run)
                        .optional()?;
                    match &held {
                        Some(h) if !h.same(r) => {
                            return Err(conflict(CopyTable::Runs, &r.run_id, "its status or data"))
                        }
                        Some(_) => {}
                        None => {
                            if let Some(w) = w.as_deref_mut() {
                                w.tx.prepare_cached(
                                    "INSERT INTO runs (run_id, module_id, status, created_at, completed_at, updated_at, data)
                                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                )?
                                .execute(params![
                                    r.run_id, r.module_id, r.status, r.created_at, r.completed_at,
                                    r.updated_at, r.data
                                ])?;
                            }
                        }
                    }
                    count(held.is_some());
                }
            }
            CopyRows::RetryPolicies(policies) => {
                for (queue, policy) in policies {
                    let held: Option<String> = c
                        .prepare_cached("SELECT retry_policy FROM queue_config WHERE queue = ?1")?
                        .query_row([queue], |r| r.get(0))
                        .optional()?;
                    match &held {
                        Some(h) if h != policy => {
                            return Err(conflict(CopyTable::RetryPolicies, queue, "its settings"))
                        }
                        Some(_) => {}
                        None => {
                            if let Some(w) = w.as_deref_mut() {
                                w.tx.prepare_cached(
                                    "INSERT INTO queue_config (queue, retry_policy) VALUES (?1, ?2)",
                                )?
                                .execute(params![queue, policy])?;
                            }
                        }
                    }
                    count(held.is_some());
                }
            }
            CopyRows::Dependencies(edges) => {
                waits::import_dependencies(c, w.as_deref(), edges, &mut count)?
            }
            CopyRows::Holds(holds) => waits::import_holds(c, w.as_deref(), holds, &mut count)?,
            CopyRows::Limits(limits) => {
                settings::import_limits(c, w.as_deref(), limits, &mut count)?
            }
            CopyRows::Schedules(schedules) => {
                settings::import_schedules(c, w.as_deref(), schedules, &mut count)?
            }
            CopyRows::QueueTimeouts(timeouts) => {
                settings::import_timeouts(c, w.as_deref(), timeouts, &mut count)?
            }
        }
        Ok(out)
    }

    fn copy_tasks_in(
        &self,
        c: &Connection,
        mut w: Option<&mut Writing>,
        tasks: &[CopyTask],
        count: &mut dyn FnMut(bool),
    ) -> Result<()> {
        let sql = format!("SELECT {COLUMNS}, retry_policy FROM tasks WHERE id = ?1");
        for t in tasks {
            let held = c
                .prepare_cached(&sql)?
                .query_row([t.row.id], task)
                .optional()?;
            if let Some(h) = &held {
                if !h.same(t) {
                    return Err(conflict(CopyTable::Tasks, t.row.id, &task_difference(h, t)));
                }
            } else if let Some(key) = &t.row.idempotency_key {
                let other: Option<i64> = c
                    .prepare_cached("SELECT id FROM tasks WHERE idempotency_key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?;
                if let Some(other) = other {
                    return Err(key_taken(t.row.id, key, other));
                }
            }
            if let (None, Some(w)) = (&held, w.as_deref_mut()) {
                self.copy_insert_task(w, t)?;
            }
            count(held.is_some());
        }
        Ok(())
    }

    fn copy_attempts_in(
        &self,
        c: &Connection,
        mut w: Option<&mut Writing>,
        attempts: &[CopyAttempt],
        count: &mut dyn FnMut(bool),
    ) -> Result<()> {
        let sql =
            format!("SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE task_id = ?1 AND seq = ?2");
        for a in attempts {
            let held = c
                .prepare_cached(&sql)?
                .query_row([a.task_id, a.seq], attempt)
                .optional()?;
            match &held {
                Some(h) if h != a => {
                    let key = format!("{} of task {}", a.seq, a.task_id);
                    return Err(conflict(CopyTable::Attempts, key, "its error or times"));
                }
                Some(_) => {}
                None => {
                    if let Some(w) = w.as_deref_mut() {
                        w.tx.prepare_cached(&format!(
                            "INSERT INTO task_attempts ({ATTEMPT_COLUMNS})
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                        ))?
                        .execute(params![
                            a.task_id,
                            a.seq,
                            a.number,
                            a.max_attempts,
                            a.worker,
                            a.started_at,
                            a.finished_at,
                            a.outcome,
                            a.error,
                            a.traceback
                        ])?;
                    }
                }
            }
            count(held.is_some());
        }
        Ok(())
    }
    fn copy_insert_task(&self, w: &mut Writing, t: &CopyTask) -> Result<()> {
        let r = &t.row;
        let lane_id = self.lane_id_in(w.tx, &lane_key(r)?, &mut w.new_lanes)?;
        // A fresh race key from this file's race clock: the race is memoryless, so a task that
        // enters it again keeps its odds (a key of another file's clock would not).
        let wkey = w.race.key(r.priority);
        // A running task's lease ends when lease_until says, on this machine's lease clock.
        let lease_key = match (r.status, r.lease_until) {
            (Status::Running, Some(until)) => {
                Some(LeaseClock::after(w.now, until.saturating_sub(w.now.wall)))
            }
            _ => None,
        };
        w.tx.prepare_cached(
            "INSERT INTO tasks (id, lane_id, type, queue, payload, priority, status, attempts, max_attempts,
                                run_after, wkey, created_at, started_at, finished_at, updated_at, locked_by,
                                lease_until, lease_token, error, result, progress, step, message,
                                idempotency_key, requires, timeout_ms, retry_policy, lease_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
        )?
        .execute(params![
            r.id,
            lane_id,
            r.task_type,
            r.queue,
            r.payload,
            r.priority,
            r.status.as_str(),
            r.attempts,
            r.max_attempts,
            r.run_after,
            wkey,
            r.created_at,
            r.started_at,
            r.finished_at,
            r.updated_at,
            r.locked_by,
            r.lease_until,
            r.lease_token,
            r.error,
            r.result,
            r.progress,
            r.step,
            r.message,
            r.idempotency_key,
            r.requires,
            r.timeout_ms,
            t.retry_policy,
            lease_key,
        ])
        ?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::copy::{CopyRows, CopyTable};
    use crate::model::dependencies::OnFailure;
    use crate::model::error::Error;
    use crate::model::limits::LimitSpec;
    use crate::model::new_task::NewTask;
    use crate::model::task::Status;
    use crate::storage::sqlite::testutil::file_driver;
    use crate::storage::sqlite::SqliteDriver;

    #[test]
    fn a_damaged_row_is_refused_not_copied_as_read() {
        let (_d, q) = file_driver();
        let id = q.enqueue(&NewTask::new("x", "null")).unwrap();
        q.db.write(|tx| {
            tx.execute(
                "UPDATE tasks SET created_at = 'yesterday' WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
        .unwrap();
        match q.copy_export(CopyTable::Tasks, None, 10) {
            Err(e @ Error::Db { .. }) => assert!(e.to_string().contains("damaged"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    /// Every row of `table`, `batch` at a time, walking the keys as `copy` does.
    fn walk(q: &SqliteDriver, table: CopyTable, batch: usize) -> Vec<CopyRows> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let rows = q.copy_export(table, after.as_ref(), batch).unwrap();
            if rows.is_empty() {
                return out;
            }
            after = rows.last_key();
            out.push(rows);
        }
    }

    #[test]
    fn waits_and_settings_are_walked_in_key_order_and_written_once() {
        let (_s, src) = file_driver();
        let (_d, dst) = file_driver();
        let a = src.enqueue(&NewTask::new("a", "null")).unwrap();
        let b = src.enqueue(&NewTask::new("b", "null")).unwrap();
        let mut held = NewTask::new("held", "null");
        held.after = vec![a, b];
        held.on_dependency_failure = OnFailure::Run;
        let held = src.enqueue(&held).unwrap();
        for (queue, t) in [("q", None), ("q", Some("x")), ("q", Some("y")), ("r", None)] {
            src.limit_set(&LimitSpec::new(queue, t, Some(1), None, Some("2/m")).unwrap())
                .unwrap();
        }
        src.set_queue_timeout("q", Some(1_000)).unwrap();
        src.set_queue_timeout("r", None).unwrap();
        let tables = [
            CopyTable::Tasks,
            CopyTable::Dependencies,
            CopyTable::Holds,
            CopyTable::Limits,
            CopyTable::QueueTimeouts,
        ];
        let mut batches = Vec::new();
        for table in tables {
            let rows = walk(&src, table, 1);
            let want = src.copy_summary().unwrap().count(table) as usize;
            assert_eq!(rows.len(), want, "{table:?}: one row per batch, none twice");
            batches.extend(rows);
        }
        for batch in &batches {
            assert_eq!(dst.copy_import(batch, true).unwrap().new, 1);
        }
        for batch in &batches {
            let again = dst.copy_import(batch, true).unwrap();
            assert_eq!((again.new, again.same), (0, 1));
        }
        for table in tables {
            assert_eq!(walk(&dst, table, 100), walk(&src, table, 100), "{table:?}");
        }
        assert_eq!(dst.get(held).unwrap().waiting_on, vec![a, b]);
        assert_eq!(dst.queue_timeouts().unwrap().default_for("r"), None);
    }

    #[test]
    fn a_running_task_keeps_its_lease_end_on_this_files_lease_clock() {
        let (_s, src) = file_driver();
        let (_d, dst) = file_driver();
        let live = src.enqueue(&NewTask::new("live", "null")).unwrap();
        let ended = src.enqueue(&NewTask::new("ended", "null")).unwrap();
        let mut req = crate::ClaimRequest::new("w");
        req.limit = 2;
        src.claim(&req).unwrap();
        let CopyRows::Tasks(mut tasks) = src.copy_export(CopyTable::Tasks, None, 10).unwrap()
        else {
            panic!()
        };
        let now = crate::model::time::now_ms();
        for t in &mut tasks {
            t.row.lease_until = Some(if t.row.id == live {
                now + 600_000
            } else {
                now - 1
            });
        }
        dst.copy_import(&CopyRows::Tasks(tasks), true).unwrap();
        assert_eq!(dst.sweep().unwrap(), 1);
        assert_eq!(dst.get(ended).unwrap().status, Status::Queued);
        assert_eq!(dst.get(live).unwrap().status, Status::Running);
    }
}
