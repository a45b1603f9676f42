//! `copy` on PostgreSQL (see `model::copy`, `ops::copy`): every table read in key order in
//! batches through its primary key or a registry index, and rows written with their ids. The
//! sequences (`task_ids`, `lease_tokens`, the log ids' identity) move past what was written, so
//! the next enqueue, claim or log line never reuses a copied id or token. What tasks wait on is
//! in `copy_waits`, limits, schedules and default timeouts in `copy_settings`.

use crate::model::claim::LaneKey;
use crate::model::copy::{
    conflict, key_taken, lane_key, task_difference, CopyAttempt, CopyImport, CopyKey, CopyLog,
    CopyRows, CopyRun, CopySummary, CopyTable, CopyTask,
};
use crate::model::error::Result;
use crate::storage::postgres::changes::record_created;

use crate::storage::postgres::rows::{task_row, COLUMNS, COLUMN_COUNT};
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::PgDriver;
use crate::storage::postgres::{copy_settings as settings, copy_waits as waits};
use postgres::{Row, Statement};
use std::collections::HashMap;

const ATTEMPT_COLUMNS: &str =
    "task_id, seq, number, max_attempts, worker, started_at, finished_at, outcome, error, traceback";
const INSERT_TASK: &str = "INSERT INTO tasks (id, lane_id, type, queue, payload, priority, status, attempts,
        max_attempts, run_after, created_at, started_at, finished_at, updated_at, locked_by, lease_until,
        lease_token, error, result, progress, step, message, idempotency_key, requires, timeout_ms,
        retry_policy)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
             $21, $22, $23, $24, $25, $26)";
const RUN_COLUMNS: &str =
    "seq, run_id, module_id, status, created_at, completed_at, updated_at, data";

fn task(r: &Row) -> Result<CopyTask> {
    Ok(CopyTask {
        row: task_row(r)?,
        retry_policy: r.try_get(COLUMN_COUNT)?,
    })
}

fn log(r: &Row) -> Result<CopyLog> {
    Ok(CopyLog {
        id: r.try_get(0)?,
        task_id: r.try_get(1)?,
        at: r.try_get(2)?,
        level: r.try_get(3)?,
        message: r.try_get(4)?,
        details: r.try_get(5)?,
    })
}

fn attempt(r: &Row) -> Result<CopyAttempt> {
    Ok(CopyAttempt {
        task_id: r.try_get(0)?,
        seq: r.try_get(1)?,
        number: r.try_get(2)?,
        max_attempts: r.try_get(3)?,
        worker: r.try_get(4)?,
        started_at: r.try_get(5)?,
        finished_at: r.try_get(6)?,
        outcome: r.try_get(7)?,
        error: r.try_get(8)?,
        traceback: r.try_get(9)?,
    })
}

fn run(r: &Row) -> Result<CopyRun> {
    Ok(CopyRun {
        ordinal: r.try_get(0)?,
        run_id: r.try_get(1)?,
        module_id: r.try_get(2)?,
        status: r.try_get(3)?,
        created_at: r.try_get(4)?,
        completed_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
        data: r.try_get(7)?,
    })
}

/// Move `sequence` (a regclass expression) past `value`, never back: the next value it gives
/// is above it.
fn advance(tx: &mut Tx, sequence: &str, value: Option<i64>) -> Result<()> {
    let Some(value) = value.filter(|v| *v > 0) else {
        return Ok(());
    };
    tx.execute(
        &format!(
            "SELECT setval(s, $1) FROM (SELECT {sequence} AS s) q
             WHERE $1 > coalesce(pg_sequence_last_value(s), 0)"
        ),
        &[&value],
    )?;
    Ok(())
}

const TASK_IDS: &str = "'task_ids'::regclass";
const LEASE_TOKENS: &str = "'lease_tokens'::regclass";
const LOG_IDS: &str = "pg_get_serial_sequence('task_logs', 'id')::regclass";

/// The highest task id this schema handed out (or was given).
fn ids_used(tx: &mut Tx) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT GREATEST(coalesce((SELECT max(id) FROM tasks), 0),
                             coalesce(pg_sequence_last_value('task_ids'::regclass), 0))",
            &[],
        )?
        .get(0))
}

impl PgDriver {
    pub fn copy_summary(&self) -> Result<CopySummary> {
        self.read(|tx| {
            let mut n = |sql: &str| -> Result<u64> {
                Ok(tx.query_one(sql, &[])?.get::<_, i64>(0) as u64)
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
                live_leases: n(
                    "SELECT count(*) FROM tasks WHERE status = 'running' AND lease_until > now_ms()",
                )?,
                task_ids_used: ids_used(tx)?,
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
        self.read(|tx| {
            Ok(match table {
                CopyTable::Tasks => {
                    let sql = format!(
                        "SELECT {COLUMNS}, retry_policy FROM tasks WHERE id > $1 ORDER BY id LIMIT $2"
                    );
                    let rows = tx.query(&sql, &[&a, &limit])?;
                    CopyRows::Tasks(rows.iter().map(task).collect::<Result<_>>()?)
                }
                CopyTable::Logs => {
                    let rows = tx.query(
                        "SELECT id, task_id, at, level, message, details FROM task_logs
                         WHERE id > $1 ORDER BY id LIMIT $2",
                        &[&a, &limit],
                    )?;
                    CopyRows::Logs(rows.iter().map(log).collect::<Result<_>>()?)
                }
                CopyTable::Attempts => {
                    let rows = tx.query(
                        &format!(
                            "SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE (task_id, seq) > ($1, $2)
                             ORDER BY task_id, seq LIMIT $3"
                        ),
                        &[&a, &b, &limit],
                    )?;
                    CopyRows::Attempts(rows.iter().map(attempt).collect::<Result<_>>()?)
                }
                // runs_created orders by (created_at, seq).
                CopyTable::Runs => {
                    let rows = tx.query(
                        &format!(
                            "SELECT {RUN_COLUMNS} FROM runs WHERE (created_at, seq) > ($1, $2)
                             ORDER BY created_at, seq LIMIT $3"
                        ),
                        &[&a, &b, &limit],
                    )?;
                    CopyRows::Runs(rows.iter().map(run).collect::<Result<_>>()?)
                }
                CopyTable::RetryPolicies => {
                    let rows = tx.query(
                        "SELECT queue, retry_policy FROM queue_config WHERE queue > $1
                         ORDER BY queue LIMIT $2",
                        &[&name, &limit],
                    )?;
                    CopyRows::RetryPolicies(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                }
                CopyTable::Dependencies => waits::export_dependencies(tx, a, b, limit)?,
                CopyTable::Holds => waits::export_holds(tx, a, limit)?,
                CopyTable::Limits => settings::export_limits(tx, &name, &name2, limit)?,
                CopyTable::Schedules => settings::export_schedules(tx, &name, limit)?,
                CopyTable::QueueTimeouts => settings::export_timeouts(tx, &name, limit)?,
            })
        })
    }

    pub fn copy_import(&self, rows: &CopyRows, write: bool) -> Result<CopyImport> {
        if !write {
            return self.read(|tx| self.import_in(tx, None, rows));
        }
        let mut lanes = Vec::new();
        let out = self.write(|tx| {
            lanes.clear();
            self.import_in(tx, Some(&mut lanes), rows)
        })?;
        // Only lanes whose creating transaction committed enter the cache.
        let mut cache = self.lanes.lock();
        for (key, id) in lanes {
            cache.remember(key, id);
        }
        Ok(out)
    }

    pub fn copy_reserve_ids(&self, used: i64) -> Result<()> {
        if used <= self.read(ids_used)? {
            return Ok(());
        }
        self.write(|tx| advance(tx, TASK_IDS, Some(used)))
    }

    /// Compare each row with the one held under its key; write the missing ones when `lanes`.
    fn import_in(
        &self,
        tx: &mut Tx,
        mut lanes: Option<&mut Vec<(LaneKey, i64)>>,
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
        let writing = lanes.is_some();
        match rows {
            CopyRows::Tasks(tasks) => {
                self.copy_tasks_in(tx, lanes.as_deref_mut(), tasks, &mut count)?
            }
            CopyRows::Logs(logs) => self.copy_logs_in(tx, writing, logs, &mut count)?,
            CopyRows::Attempts(attempts) => {
                self.copy_attempts_in(tx, lanes, attempts, &mut count)?
            }
            CopyRows::Runs(runs) => {
                let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1");
                for r in runs {
                    let held = tx
                        .query_opt(&sql, &[&r.run_id])?
                        .map(|x| run(&x))
                        .transpose()?;
                    match &held {
                        Some(h) if !h.same(r) => {
                            return Err(conflict(CopyTable::Runs, &r.run_id, "its status or data"))
                        }
                        Some(_) => {}
                        None if writing => {
                            tx.execute(
                                "INSERT INTO runs (run_id, module_id, status, created_at, completed_at, updated_at, data)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                                &[
                                    &r.run_id, &r.module_id, &r.status, &r.created_at,
                                    &r.completed_at, &r.updated_at, &r.data,
                                ],
                            )?;
                        }
                        None => {}
                    }
                    count(held.is_some());
                }
            }
            CopyRows::RetryPolicies(policies) => {
                for (queue, policy) in policies {
                    let held: Option<String> = tx
                        .query_opt(
                            "SELECT retry_policy FROM queue_config WHERE queue = $1",
                            &[queue],
                        )?
                        .map(|r| r.get(0));
                    match &held {
                        Some(h) if h != policy => {
                            return Err(conflict(CopyTable::RetryPolicies, queue, "its settings"))
                        }
                        Some(_) => {}
                        None if writing => {
                            tx.execute(
                                "INSERT INTO queue_config (queue, retry_policy) VALUES ($1, $2)",
                                &[queue, policy],
                            )?;
                        }
                        None => {}
                    }
                    count(held.is_some());
                }
            }
            CopyRows::Dependencies(edges) => {
                waits::import_dependencies(tx, writing, edges, &mut count)?
            }
            CopyRows::Holds(holds) => waits::import_holds(tx, writing, holds, &mut count)?,
            CopyRows::Limits(limits) => settings::import_limits(tx, writing, limits, &mut count)?,
            CopyRows::Schedules(schedules) => {
                settings::import_schedules(tx, writing, schedules, &mut count)?
            }
            CopyRows::QueueTimeouts(timeouts) => {
                settings::import_timeouts(tx, writing, timeouts, &mut count)?
            }
        }
        Ok(out)
    }

    fn copy_tasks_in(
        &self,
        tx: &mut Tx,
        mut lanes: Option<&mut Vec<(LaneKey, i64)>>,
        tasks: &[CopyTask],
        count: &mut dyn FnMut(bool),
    ) -> Result<()> {
        let writing = lanes.is_some();
        // One look-up per batch for the rows held under its ids and keys, one parse of the
        // insert: a statement per row costs a round trip and a parse each.
        let ids: Vec<i64> = tasks.iter().map(|t| t.row.id).collect();
        let sql = format!("SELECT {COLUMNS}, retry_policy FROM tasks WHERE id = ANY($1)");
        let held: HashMap<i64, CopyTask> = tx
            .query(&sql, &[&ids])?
            .iter()
            .map(|r| task(r).map(|t| (t.row.id, t)))
            .collect::<Result<_>>()?;
        let keys: Vec<&str> = tasks
            .iter()
            .filter_map(|t| t.row.idempotency_key.as_deref())
            .collect();
        let keyed: HashMap<String, i64> = tx
            .query(
                "SELECT idempotency_key, id FROM tasks WHERE idempotency_key = ANY($1)",
                &[&keys],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let insert = if writing {
            Some(tx.prepare(INSERT_TASK)?)
        } else {
            None
        };
        let mut inserted = Vec::new();
        for t in tasks {
            let id = t.row.id;
            match held.get(&id) {
                Some(h) if !h.same(t) => {
                    return Err(conflict(CopyTable::Tasks, id, &task_difference(h, t)))
                }
                Some(_) => {}
                None => {
                    let key = t.row.idempotency_key.as_deref();
                    if let Some((key, other)) = key.and_then(|k| keyed.get_key_value(k)) {
                        return Err(key_taken(id, key, *other));
                    }
                    if let (Some(lanes), Some(insert)) = (lanes.as_deref_mut(), &insert) {
                        self.copy_insert_task(tx, insert, lanes, t)?;
                        inserted.push(id);
                    }
                }
            }
            count(held.contains_key(&id));
        }
        if writing {
            // Watchers of the destination see the copied tasks as created, as enqueued ones.
            record_created(tx, &inserted)?;
            advance(tx, TASK_IDS, ids.iter().copied().max())?;
            let tokens = tasks.iter().filter_map(|t| t.row.lease_token).max();
            advance(tx, LEASE_TOKENS, tokens)?;
        }
        Ok(())
    }

    fn copy_logs_in(
        &self,
        tx: &mut Tx,
        writing: bool,
        logs: &[CopyLog],
        count: &mut dyn FnMut(bool),
    ) -> Result<()> {
        let ids: Vec<i64> = logs.iter().map(|l| l.id).collect();
        let held: HashMap<i64, CopyLog> = tx
            .query(
                "SELECT id, task_id, at, level, message, details FROM task_logs WHERE id = ANY($1)",
                &[&ids],
            )?
            .iter()
            .map(|r| log(r).map(|l| (l.id, l)))
            .collect::<Result<_>>()?;
        let insert = if writing {
            Some(tx.prepare(
                "INSERT INTO task_logs (id, task_id, at, level, message, details)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )?)
        } else {
            None
        };
        for l in logs {
            match held.get(&l.id) {
                Some(h) if h != l => {
                    return Err(conflict(CopyTable::Logs, l.id, "its text or task"))
                }
                Some(_) => {}
                None => {
                    if let Some(insert) = &insert {
                        (**tx).execute(
                            insert,
                            &[&l.id, &l.task_id, &l.at, &l.level, &l.message, &l.details],
                        )?;
                    }
                }
            }
            count(held.contains_key(&l.id));
        }
        if writing {
            advance(tx, LOG_IDS, ids.iter().copied().max())?;
        }
        Ok(())
    }

    fn copy_attempts_in(
        &self,
        tx: &mut Tx,
        lanes: Option<&mut Vec<(LaneKey, i64)>>,
        attempts: &[CopyAttempt],
        count: &mut dyn FnMut(bool),
    ) -> Result<()> {
        let (tasks, seqs): (Vec<i64>, Vec<i64>) =
            attempts.iter().map(|a| (a.task_id, a.seq)).unzip();
        let held: HashMap<(i64, i64), CopyAttempt> = tx
            .query(
                &format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM task_attempts
                     WHERE (task_id, seq) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))"
                ),
                &[&tasks, &seqs],
            )?
            .iter()
            .map(|r| attempt(r).map(|a| ((a.task_id, a.seq), a)))
            .collect::<Result<_>>()?;
        let insert = match lanes {
            Some(_) => Some(tx.prepare(&format!(
                "INSERT INTO task_attempts ({ATTEMPT_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))?),
            None => None,
        };
        for a in attempts {
            let held = held.get(&(a.task_id, a.seq));
            match (held, &insert) {
                (Some(h), _) if h != a => {
                    let key = format!("{} of task {}", a.seq, a.task_id);
                    return Err(conflict(CopyTable::Attempts, key, "its error or times"));
                }
                (None, Some(insert)) => {
                    (**tx).execute(
                        insert,
                        &[
                            &a.task_id,
                            &a.seq,
                            &a.number,
                            &a.max_attempts,
                            &a.worker,
                            &a.started_at,
                            &a.finished_at,
                            &a.outcome,
                            &a.error,
                            &a.traceback,
                        ],
                    )?;
                }
                _ => {}
            }
            count(held.is_some());
        }
        Ok(())
    }

    fn copy_insert_task(
        &self,
        tx: &mut Tx,
        insert: &Statement,
        lanes: &mut Vec<(LaneKey, i64)>,
        t: &CopyTask,
    ) -> Result<()> {
        let r = &t.row;
        let lane_id = self.lane_id_in(tx, &lane_key(&t.row)?, lanes)?;
        (**tx).execute(
            insert,
            &[
                &r.id,
                &lane_id,
                &r.task_type,
                &r.queue,
                &r.payload,
                &r.priority,
                &r.status.as_str(),
                &r.attempts,
                &r.max_attempts,
                &r.run_after,
                &r.created_at,
                &r.started_at,
                &r.finished_at,
                &r.updated_at,
                &r.locked_by,
                &r.lease_until,
                &r.lease_token,
                &r.error,
                &r.result,
                &r.progress,
                &r.step,
                &r.message,
                &r.idempotency_key,
                &r.requires,
                &r.timeout_ms,
                &t.retry_policy,
            ],
        )?;
        Ok(())
    }
}
