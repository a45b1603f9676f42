//! Runs of the task manager adapter: the run registry's storage, and the task row that mirrors a
//! run executed in-process.
//!
//! A *run* is a unit of work an application starts itself (a coroutine in its own process). The
//! registry keeps each run as one row of `runs` (the whole run as JSON plus the columns its queries
//! use). The manager also mirrors every run as a task (type = module, payload = parameters,
//! idempotency key = run id) so other processes see it: `start_run` inserts that task, or restarts
//! the row of an earlier run with the same id, directly in `running` with a lease held by the
//! starting process, so no worker can claim it meanwhile. Completion, failure, renewal and
//! cancellation then go through the ordinary fenced operations.
//!
//! When the process running a run dies, its lease stops being renewed. `recover_runs` finds such
//! rows (lease expired, holder known to be dead, or already put back in the queue by the rescuer)
//! and either re-queues them for a durable handler of their type or fails them as interrupted.

use crate::ack::log_in;
use crate::claim::lanes::LaneKey;
use crate::claim::new_lease_token;
use crate::claim::race::Race;
use crate::db::WriteTx;
use crate::enqueue::{NewTask, DEFAULT_PRIORITY};
use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::task::{TaskRow, COLUMNS};
use crate::time::now_ms;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension};

/// The queue in which in-process runs are mirrored, unless the caller names another.
pub const DEFAULT_RUNS_QUEUE: &str = "runs";

/// Statuses a run registry counts as active.
pub const ACTIVE_RUN_STATUSES: [&str; 2] = ["queued", "running"];

/// One run as the registry stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub module_id: String,
    pub status: String,
    /// ms since epoch, UTC.
    pub created_at: i64,
    /// ms since epoch, UTC; `None` while the run has not finished.
    pub completed_at: Option<i64>,
    /// The whole run as a JSON object.
    pub data: String,
}

/// Which runs `list_runs` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFilter {
    All,
    /// Queued or running.
    Active,
    Status(String),
    Module(String),
}

#[derive(Debug, Clone)]
pub struct RunQuery {
    pub filter: RunFilter,
    /// Newest first (by `created_at`) instead of oldest first.
    pub newest_first: bool,
    /// At most this many; `None` for all.
    pub limit: Option<i64>,
}

/// What `start_run` needs: the run, and the lease the starting process takes on its task row.
#[derive(Debug, Clone)]
pub struct StartRun {
    pub run_id: String,
    /// The task type: the run's module id.
    pub task_type: String,
    /// The run's parameters, as JSON text.
    pub payload: String,
    pub queue: String,
    /// The holder of the lease (the manager's worker id).
    pub worker_id: String,
    pub lease_ms: i64,
    /// Attempts left for re-runs by a durable handler after an interruption: `max_attempts` becomes
    /// `attempts + rerun_attempts`, so the rescuer re-queues (rather than dead-letters) an
    /// interrupted run.
    pub rerun_attempts: i64,
    /// Holders known to be dead (e.g. a crashed process of this host): a running row they hold is
    /// taken over even though its lease has not expired yet.
    pub takeover_from: Vec<String>,
}

/// What `recover_runs` does with interrupted runs.
#[derive(Debug, Clone)]
pub struct RecoverRuns {
    /// The queue the runs are mirrored in.
    pub queue: String,
    /// Holders known to be dead, whose rows are interrupted even if their leases still run.
    pub dead_holders: Vec<String>,
    /// Task types a durable handler is registered for: their runs are re-queued, not failed.
    pub rerun_types: Vec<String>,
    /// Where re-queued runs go (the queue durable workers take from).
    pub rerun_queue: String,
}

/// One interrupted run and what `recover_runs` did with it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredRun {
    pub task_id: i64,
    pub run_id: Option<String>,
    pub task_type: String,
    /// The worker that held the run when it was interrupted.
    pub holder: Option<String>,
    /// True: re-queued for a durable handler; false: failed as interrupted.
    pub requeued: bool,
    /// The error recorded on the task (and meant for the run).
    pub error: String,
}

fn check_run_id(run_id: &str) -> Result<()> {
    if run_id.trim().is_empty() || run_id.len() > 1000 {
        return Err(Error::invalid(
            "run_id must be a non-empty string of at most 1000 characters",
        ));
    }
    Ok(())
}

impl RunRecord {
    fn validate(&self) -> Result<()> {
        check_run_id(&self.run_id)?;
        if self.status.trim().is_empty() {
            return Err(Error::invalid(format!(
                "run {:?}: status must be a non-empty string",
                self.run_id
            )));
        }
        match serde_json::from_str::<serde_json::Value>(&self.data) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            _ => Err(Error::invalid(format!(
                "run {:?}: data must be a JSON object",
                self.run_id
            ))),
        }
    }
}

impl RunQuery {
    fn sql(&self) -> String {
        // Each variant pins the index that serves both its filter and its order. Active runs use
        // literal statuses, so the partial index `runs_active` applies.
        let from = match &self.filter {
            RunFilter::All => "runs INDEXED BY runs_created",
            RunFilter::Active => {
                "runs INDEXED BY runs_active WHERE status IN ('queued', 'running')"
            }
            RunFilter::Status(_) => "runs INDEXED BY runs_status WHERE status = ?2",
            RunFilter::Module(_) => "runs INDEXED BY runs_module WHERE module_id = ?2",
        };
        let order = if self.newest_first {
            "created_at DESC, rowid DESC"
        } else {
            "created_at, rowid"
        };
        format!("SELECT data FROM {from} ORDER BY {order} LIMIT ?1")
    }

    fn args(&self, limit: i64) -> Vec<Value> {
        let mut args = vec![Value::Integer(limit)];
        if let RunFilter::Status(s) | RunFilter::Module(s) = &self.filter {
            args.push(Value::Text(s.clone()));
        }
        args
    }
}

impl Queue {
    // ------------------------------------------------------------------ the run registry

    /// Insert or replace a run.
    pub fn save_run(&self, run: &RunRecord) -> Result<()> {
        run.validate()?;
        self.db.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO runs (run_id, module_id, status, created_at, completed_at, updated_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id) DO UPDATE SET module_id = excluded.module_id, status = excluded.status,
                        created_at = excluded.created_at, completed_at = excluded.completed_at,
                        updated_at = excluded.updated_at, data = excluded.data",
            )?
            .execute(params![
                run.run_id,
                run.module_id,
                run.status,
                run.created_at,
                run.completed_at,
                now_ms(),
                run.data
            ])?;
            Ok(())
        })
    }

    /// The JSON of a run, or `None`.
    pub fn load_run(&self, run_id: &str) -> Result<Option<String>> {
        self.db.read(|c| {
            Ok(c.prepare_cached("SELECT data FROM runs WHERE run_id = ?1")?
                .query_row([run_id], |r| r.get(0))
                .optional()?)
        })
    }

    /// The JSON of the runs `q` selects, ordered by creation time.
    pub fn list_runs(&self, q: &RunQuery) -> Result<Vec<String>> {
        if let Some(l) = q.limit {
            if l < 0 {
                return Err(Error::invalid(format!(
                    "limit must be zero or positive, got {l}"
                )));
            }
        }
        let sql = q.sql();
        let args = q.args(q.limit.unwrap_or(-1));
        self.db.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// `EXPLAIN QUERY PLAN` of the statement `list_runs` runs for `q`.
    pub fn explain_list_runs(&self, q: &RunQuery) -> Result<Vec<String>> {
        let sql = format!("EXPLAIN QUERY PLAN {}", q.sql());
        let args = q.args(1);
        self.db.read(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Delete one run; false when there was none.
    pub fn delete_run(&self, run_id: &str) -> Result<bool> {
        self.db.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM runs WHERE run_id = ?1")?
                .execute([run_id])?
                == 1)
        })
    }

    /// Delete runs that finished before `completed_before` (ms). Returns how many.
    pub fn purge_runs(&self, completed_before: i64) -> Result<usize> {
        self.db.write(|tx| {
            Ok(tx
                .prepare_cached(
                    "DELETE FROM runs INDEXED BY runs_completed
                     WHERE completed_at IS NOT NULL AND completed_at < ?1",
                )?
                .execute([completed_before])?)
        })
    }

    // ------------------------------------------------------------------ in-process runs

    /// Insert the task row of a run, or restart the row of an earlier run with the same id, in
    /// `running` with a fresh lease for `worker_id`, in one transaction. The returned row carries
    /// the lease token for the fenced complete/fail/renew.
    ///
    /// Refused (`InvalidArgument`, nothing written) while another holder runs the same run id with
    /// a live lease.
    pub fn start_run(&self, s: &StartRun) -> Result<TaskRow> {
        let mut check = NewTask::new(s.task_type.clone(), s.payload.clone());
        check.queue = s.queue.clone();
        check.idempotency_key = Some(s.run_id.clone());
        check.validate(self.opts.max_payload_bytes)?;
        check_run_id(&s.run_id)?;
        if s.worker_id.trim().is_empty() {
            return Err(Error::invalid("worker_id must be a non-empty string"));
        }
        if s.lease_ms <= 0 {
            return Err(Error::invalid(format!(
                "lease must be a positive number of seconds, got {}",
                s.lease_ms as f64 / 1000.0
            )));
        }
        if s.rerun_attempts < 0 {
            return Err(Error::invalid(format!(
                "rerun_attempts must be zero or positive, got {}",
                s.rerun_attempts
            )));
        }
        let key: LaneKey = (s.queue.clone(), s.task_type.clone(), String::new());
        let mut created = Vec::new();
        let row = self.db.write(|tx| {
            created.clear();
            let now = now_ms();
            let lane_id = self.lane_id_in(tx, &key, &mut created)?;
            let token = new_lease_token();
            let existing: Option<(i64, String, Option<String>, Option<i64>)> = tx
                .prepare_cached(
                    "SELECT id, status, locked_by, lease_until FROM tasks WHERE idempotency_key = ?1",
                )?
                .query_row([&s.run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            let Some((id, status, holder, lease_until)) = existing else {
                let (race, mut floor) = crate::enqueue::read_insert_meta(tx)?;
                let mut row = tx
                    .prepare_cached(&format!(
                        "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, attempts, max_attempts,
                                            run_after, wkey, created_at, started_at, updated_at, locked_by,
                                            lease_until, lease_token, idempotency_key)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'running', 1, ?6, ?7, ?8, ?7, ?7, ?7, ?9, ?10, ?11, ?12)
                         RETURNING {COLUMNS}"
                    ))?
                    .query_row(
                        params![
                            lane_id,
                            s.task_type,
                            s.queue,
                            s.payload,
                            DEFAULT_PRIORITY,
                            1 + s.rerun_attempts,
                            now,
                            race.key(DEFAULT_PRIORITY),
                            s.worker_id,
                            now + s.lease_ms,
                            token,
                            s.run_id
                        ],
                        TaskRow::from_row,
                    )?;
                row.id = floor.place(tx, row.id)?;
                log_in(
                    tx,
                    row.id,
                    now,
                    "info",
                    &format!("run {} started in-process by {}", s.run_id, s.worker_id),
                )?;
                return Ok(row);
            };
            let holder_name = holder.clone().unwrap_or_else(|| "an unknown worker".into());
            let note = if status == "running" {
                let live = lease_until.is_some_and(|t| t >= now);
                let mine = holder.as_deref() == Some(s.worker_id.as_str());
                let dead = holder.as_ref().is_some_and(|h| s.takeover_from.contains(h));
                if live && !mine && !dead {
                    return Err(Error::invalid(format!(
                        "run {:?} is already running (task {id}, held by {holder_name}): wait until it finishes, \
                         or cancel it, before starting it again",
                        s.run_id
                    )));
                }
                format!(" (taken over from {holder_name}, which stopped renewing its lease)")
            } else {
                String::new()
            };
            let row = tx
                .prepare_cached(&format!(
                    "UPDATE tasks SET lane_id = ?2, type = ?3, queue = ?4, payload = ?5, status = 'running',
                            attempts = attempts + 1, max_attempts = attempts + 1 + ?6, run_after = ?7,
                            started_at = ?7, finished_at = NULL, updated_at = ?7, locked_by = ?8,
                            lease_until = ?9, lease_token = ?10, error = NULL, result = NULL,
                            progress = NULL, step = NULL, message = NULL
                     WHERE id = ?1 RETURNING {COLUMNS}"
                ))?
                .query_row(
                    params![
                        id,
                        lane_id,
                        s.task_type,
                        s.queue,
                        s.payload,
                        s.rerun_attempts,
                        now,
                        s.worker_id,
                        now + s.lease_ms,
                        token
                    ],
                    TaskRow::from_row,
                )?;
            log_in(
                tx,
                id,
                now,
                "info",
                &format!(
                    "run {} started again in-process by {} (attempt {}, was {status}){note}",
                    s.run_id, s.worker_id, row.attempts
                ),
            )?;
            Ok(row)
        })?;
        self.remember_lanes(created);
        Ok(row)
    }

    /// Interrupted runs of `r.queue`: rows still `running` whose lease expired or whose holder is
    /// known dead, and rows the rescuer already put back in the queue (a run row is never queued
    /// otherwise). Each is re-queued in `r.rerun_queue` when its type is in `r.rerun_types`,
    /// otherwise failed with an error that says it was interrupted. One transaction.
    pub fn recover_runs(&self, r: &RecoverRuns) -> Result<Vec<RecoveredRun>> {
        if r.queue.trim().is_empty() || r.rerun_queue.trim().is_empty() {
            return Err(Error::invalid(
                "queue and rerun_queue must be non-empty strings",
            ));
        }
        let mut created = Vec::new();
        let out = self.db.write(|tx| {
            created.clear();
            let now = now_ms();
            let found = interrupted_in(tx, r, now)?;
            let mut out = Vec::with_capacity(found.len());
            let race = Race::read(tx)?;
            for (id, task_type, run_id, holder, priority) in found {
                let who = holder.as_deref().unwrap_or("unknown worker");
                let what = match &run_id {
                    Some(run) => format!("run {run}"),
                    None => format!("task {id}"),
                };
                let requeued = r.rerun_types.contains(&task_type);
                let error = if requeued {
                    format!(
                        "interrupted: the process running {what} (worker {who}) stopped before it finished; \
                         re-queued in {:?} for a re-run by the durable handler of type {task_type:?}",
                        r.rerun_queue
                    )
                } else {
                    format!(
                        "interrupted: the process running {what} (worker {who}) stopped before it finished, \
                         and no durable handler is registered for type {task_type:?} to re-run it"
                    )
                };
                if requeued {
                    let key: LaneKey = (r.rerun_queue.clone(), task_type.clone(), String::new());
                    let lane_id = self.lane_id_in(tx, &key, &mut created)?;
                    tx.prepare_cached(
                        "UPDATE tasks SET status = 'queued', lane_id = ?2, queue = ?3, run_after = ?4, wkey = ?5,
                                error = ?6, updated_at = ?4, lease_until = NULL, lease_token = NULL,
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
                    log_in(tx, id, now, "warning", &error)?;
                } else {
                    tx.prepare_cached(
                        "UPDATE tasks SET status = 'failed', error = ?2, finished_at = ?3, updated_at = ?3,
                                lease_until = NULL, lease_token = NULL
                         WHERE id = ?1",
                    )?
                    .execute(params![id, error, now])?;
                    log_in(tx, id, now, "error", &error)?;
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

    fn remember_lanes(&self, created: Vec<(LaneKey, i64)>) {
        if !created.is_empty() {
            let mut cache = self.lanes.lock();
            for (key, id) in created {
                cache.remember(key, id);
            }
        }
    }
}

type Interrupted = (i64, String, Option<String>, Option<String>, i64);

/// (id, type, run id, holder, priority) of the interrupted rows of `r.queue`.
fn interrupted_in(tx: &WriteTx, r: &RecoverRuns, now: i64) -> Result<Vec<Interrupted>> {
    let mut out = Vec::new();
    // Running rows: only the running ones are in this index, so this never walks the backlog.
    let mut stmt = tx.prepare_cached(
        "SELECT id, type, idempotency_key, locked_by, priority, lease_until FROM tasks INDEXED BY tasks_lease
         WHERE status = 'running' AND queue = ?1 ORDER BY id",
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
            row.get::<_, Option<i64>>(5)?,
        ))
    })?;
    for row in rows {
        let (item, lease_until) = row?;
        let expired = lease_until.is_none_or(|t| t < now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Lease;
    use crate::claim::ClaimRequest;
    use crate::queue::testutil::file_queue;
    use crate::task::Status;

    fn record(id: &str, module: &str, status: &str, created: i64, done: Option<i64>) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            module_id: module.into(),
            status: status.into(),
            created_at: created,
            completed_at: done,
            data: format!(r#"{{"run_id":"{id}","status":"{status}"}}"#),
        }
    }

    fn start(run_id: &str, worker: &str) -> StartRun {
        StartRun {
            run_id: run_id.into(),
            task_type: "module.a".into(),
            payload: r#"{"n":1}"#.into(),
            queue: DEFAULT_RUNS_QUEUE.into(),
            worker_id: worker.into(),
            lease_ms: 60_000,
            rerun_attempts: 3,
            takeover_from: Vec::new(),
        }
    }

    fn lease(t: &TaskRow) -> Lease {
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    fn ids(q: &Queue, query: RunQuery) -> Vec<String> {
        q.list_runs(&query)
            .unwrap()
            .into_iter()
            .map(|d| {
                serde_json::from_str::<serde_json::Value>(&d).unwrap()["run_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    fn query(filter: RunFilter, newest_first: bool, limit: Option<i64>) -> RunQuery {
        RunQuery {
            filter,
            newest_first,
            limit,
        }
    }

    #[test]
    fn a_file_of_schema_v1_gains_the_runs_table_and_keeps_its_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let p = path.to_str().unwrap();
        {
            let c = rusqlite::Connection::open(p).unwrap();
            c.execute_batch(crate::schema::MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let q = Queue::open(p, crate::queue::QueueOptions::default()).unwrap();
        let id = q.enqueue(&crate::enqueue::NewTask::new("x", "1")).unwrap();
        q.save_run(&record("r", "m", "queued", 1, None)).unwrap();
        assert!(q.load_run("r").unwrap().is_some());
        assert_eq!(q.get(id).unwrap().status, Status::Queued);
        let v: i64 =
            q.db.read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
                .unwrap();
        assert_eq!(v, crate::schema::SCHEMA_VERSION);
    }

    #[test]
    fn runs_are_saved_replaced_listed_and_purged() {
        let (_d, q) = file_queue();
        q.save_run(&record("a", "m1", "completed", 10, Some(100)))
            .unwrap();
        q.save_run(&record("b", "m2", "running", 20, None)).unwrap();
        q.save_run(&record("c", "m1", "queued", 30, None)).unwrap();
        q.save_run(&record("d", "m2", "failed", 30, Some(5_000)))
            .unwrap();
        // Replacing keeps one row and takes the new values.
        q.save_run(&record("b", "m2", "running", 20, None)).unwrap();
        assert_eq!(
            ids(&q, query(RunFilter::All, true, None)),
            ["d", "c", "b", "a"]
        );
        assert_eq!(ids(&q, query(RunFilter::All, true, Some(2))), ["d", "c"]);
        assert_eq!(ids(&q, query(RunFilter::Active, false, None)), ["b", "c"]);
        assert_eq!(
            ids(&q, query(RunFilter::Module("m1".into()), false, None)),
            ["a", "c"]
        );
        assert_eq!(
            ids(&q, query(RunFilter::Status("failed".into()), false, None)),
            ["d"]
        );
        assert!(q.load_run("a").unwrap().unwrap().contains("completed"));
        assert_eq!(q.load_run("zz").unwrap(), None);
        // Only runs that finished before the cutoff go.
        assert_eq!(q.purge_runs(1_000).unwrap(), 1);
        assert_eq!(q.load_run("a").unwrap(), None);
        assert!(q.delete_run("d").unwrap());
        assert!(!q.delete_run("d").unwrap());
        assert_eq!(ids(&q, query(RunFilter::All, false, None)), ["b", "c"]);
    }

    #[test]
    fn bad_runs_are_refused() {
        let (_d, q) = file_queue();
        let mut r = record("", "m", "queued", 1, None);
        assert!(q.save_run(&r).unwrap_err().to_string().contains("run_id"));
        r.run_id = "x".into();
        r.data = "[1]".into();
        assert!(q
            .save_run(&r)
            .unwrap_err()
            .to_string()
            .contains("JSON object"));
        let bad = query(RunFilter::All, true, Some(-1));
        assert!(q.list_runs(&bad).is_err());
    }

    #[test]
    fn every_run_query_walks_an_index_in_order() {
        let (_d, q) = file_queue();
        for filter in [
            RunFilter::All,
            RunFilter::Active,
            RunFilter::Status("failed".into()),
            RunFilter::Module("m".into()),
        ] {
            for newest_first in [false, true] {
                let plan = q
                    .explain_list_runs(&query(filter.clone(), newest_first, Some(5)))
                    .unwrap()
                    .join(" ");
                assert!(plan.contains("USING INDEX runs_"), "{filter:?}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
            }
        }
    }

    #[test]
    fn start_run_holds_the_row_so_no_worker_claims_it() {
        let (_d, q) = file_queue();
        let t = q.start_run(&start("r1", "app-1")).unwrap();
        assert_eq!(t.status, Status::Running);
        assert_eq!((t.attempts, t.max_attempts), (1, 4));
        assert_eq!(t.locked_by.as_deref(), Some("app-1"));
        assert_eq!(t.idempotency_key.as_deref(), Some("r1"));
        assert_eq!(
            (t.task_type.as_str(), t.queue.as_str()),
            ("module.a", "runs")
        );
        assert!(t.started_at.is_some() && t.lease_until.is_some());
        assert!(q.claim(&ClaimRequest::new("w")).unwrap().is_empty());
        // Renewed and completed with the ordinary fenced operations.
        q.renew(lease(&t), 1000).unwrap();
        q.complete(lease(&t), Some("1")).unwrap();
        assert_eq!(q.get(t.id).unwrap().status, Status::Completed);
    }

    #[test]
    fn a_finished_run_id_restarts_its_row_and_a_live_one_is_refused() {
        let (_d, q) = file_queue();
        let first = q.start_run(&start("r1", "app-1")).unwrap();
        let e = q.start_run(&start("r1", "app-2")).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("already running"),
            "{e}"
        );
        q.fail(lease(&first), "boom", false).unwrap();
        let again = q.start_run(&start("r1", "app-2")).unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!((again.status, again.attempts), (Status::Running, 2));
        assert_eq!(again.error, None);
        assert_eq!(again.finished_at, None);
        assert_eq!(again.locked_by.as_deref(), Some("app-2"));
        // The old claim is fenced out.
        assert!(matches!(
            q.complete(lease(&first), None),
            Err(Error::LeaseLost(_))
        ));
        // A dead holder's live lease can be taken over when the caller knows it is dead.
        let mut s = start("r1", "app-3");
        s.takeover_from = vec!["app-2".into()];
        let third = q.start_run(&s).unwrap();
        assert_eq!(
            (third.attempts, third.locked_by.as_deref()),
            (3, Some("app-3"))
        );
        assert_eq!(q.stats(None).unwrap().total, 1);
    }

    #[test]
    fn interrupted_runs_are_requeued_for_a_handler_or_failed() {
        let (_d, q) = file_queue();
        let mut a = start("ra", "dead-1");
        a.task_type = "with.handler".into();
        let ta = q.start_run(&a).unwrap();
        let mut b = start("rb", "dead-1");
        b.task_type = "no.handler".into();
        let tb = q.start_run(&b).unwrap();
        let mut c = start("rc", "alive");
        c.task_type = "no.handler".into();
        let tc = q.start_run(&c).unwrap();
        let mut d = start("rd", "expired");
        d.lease_ms = 1;
        let td = q.start_run(&d).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let rec = RecoverRuns {
            queue: DEFAULT_RUNS_QUEUE.into(),
            dead_holders: vec!["dead-1".into()],
            rerun_types: vec!["with.handler".into()],
            rerun_queue: "default".into(),
        };
        let out = q.recover_runs(&rec).unwrap();
        let got: Vec<(i64, bool)> = out.iter().map(|r| (r.task_id, r.requeued)).collect();
        assert_eq!(got, [(ta.id, true), (tb.id, false), (td.id, false)]);
        let ra = q.get(ta.id).unwrap();
        assert_eq!((ra.status, ra.queue.as_str()), (Status::Queued, "default"));
        assert!(ra.error.unwrap().starts_with("interrupted:"));
        let rb = q.get(tb.id).unwrap();
        assert_eq!(rb.status, Status::Failed);
        assert!(rb.error.unwrap().contains("no durable handler"));
        assert_eq!(
            q.get(tc.id).unwrap().status,
            Status::Running,
            "a live holder is left alone"
        );
        // The re-queued run is claimable by a worker of its type, in its new queue.
        let mut req = ClaimRequest::new("w");
        req.filter.types = Some(vec!["with.handler".into()]);
        let claimed = q.claim(&req).unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, ta.id);
        // Nothing left to recover.
        assert!(q.recover_runs(&rec).unwrap().is_empty());
    }

    #[test]
    fn runs_the_rescuer_put_back_are_recovered_too() {
        let (_d, q) = file_queue();
        let mut s = start("r1", "gone");
        s.lease_ms = 1;
        let t = q.start_run(&s).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(q.sweep().unwrap(), 1);
        assert_eq!(q.get(t.id).unwrap().status, Status::Queued);
        let out = q
            .recover_runs(&RecoverRuns {
                queue: DEFAULT_RUNS_QUEUE.into(),
                dead_holders: Vec::new(),
                rerun_types: Vec::new(),
                rerun_queue: "default".into(),
            })
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].holder.as_deref(), Some("gone"));
        assert_eq!(out[0].run_id.as_deref(), Some("r1"));
        assert_eq!(q.get(t.id).unwrap().status, Status::Failed);
    }
}
