//! Runs of the task manager adapter: the run registry's storage (the task row that mirrors a run
//! executed in-process is `run_tasks`).
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

use crate::model::error::{Error, Result};
use crate::model::runs::{RunFilter, RunQuery, RunRecord};
use crate::model::time::now_ms;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension};

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

impl SqliteDriver {
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
        crate::model::time::check_time("completed_before", completed_before)?;
        self.db.write(|tx| {
            Ok(tx
                .prepare_cached(
                    "DELETE FROM runs INDEXED BY runs_completed
                     WHERE completed_at IS NOT NULL AND completed_at < ?1",
                )?
                .execute([completed_before])?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::claim::ClaimRequest;
    use crate::model::lease::Lease;
    use crate::model::options::QueueOptions;
    use crate::model::runs::DEFAULT_RUNS_QUEUE;
    use crate::model::runs::{RecoverRuns, StartRun};
    use crate::model::task::Status;
    use crate::model::task::TaskRow;
    use crate::storage::sqlite::testutil::file_driver;

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

    fn ids(q: &SqliteDriver, query: RunQuery) -> Vec<String> {
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
            c.execute_batch(crate::storage::sqlite::schema::MIGRATIONS[0])
                .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let q = SqliteDriver::open(
            p,
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .unwrap();
        let id = q
            .enqueue(&crate::model::new_task::NewTask::new("x", "1"))
            .unwrap();
        q.save_run(&record("r", "m", "queued", 1, None)).unwrap();
        assert!(q.load_run("r").unwrap().is_some());
        assert_eq!(q.get(id).unwrap().status, Status::Queued);
        let v: i64 =
            q.db.read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
                .unwrap();
        assert_eq!(v, crate::storage::sqlite::schema::SCHEMA_VERSION);
    }

    #[test]
    fn runs_are_saved_replaced_listed_and_purged() {
        let (_d, q) = file_driver();
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
        let (_d, q) = file_driver();
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
        let (_d, q) = file_driver();
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
        let (_d, q) = file_driver();
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
        let (_d, q) = file_driver();
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
        // The old claim is fenced out (the driver reports it; the engine words the LeaseLost).
        assert!(matches!(
            q.complete(lease(&first), None),
            Err(Error::NotHeld { .. })
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
        let (_d, q) = file_driver();
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
        let (_d, q) = file_driver();
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
