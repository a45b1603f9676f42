//! The run registry of the task manager adapter (`QueuedTaskManager`): a run is a task of the
//! runs queue with a record of its own.

use crate::engine::queue::Queue;
use crate::model::error::Result;
use crate::model::runs::RecoverRuns;
use crate::model::runs::RecoveredRun;
use crate::model::runs::RunQuery;
use crate::model::runs::RunRecord;
use crate::model::runs::StartRun;
use crate::model::task::TaskRow;
use crate::model::time::check_time;

impl Queue {
    /// Insert or replace a run.
    pub fn save_run(&self, run: &RunRecord) -> Result<()> {
        run.validate()?;
        self.driver.run_save(run)
    }

    /// The JSON of a run, or `None`.
    pub fn load_run(&self, run_id: &str) -> Result<Option<String>> {
        self.driver.run_load(run_id)
    }

    /// The JSON of the runs `q` selects, ordered by creation time.
    pub fn list_runs(&self, q: &RunQuery) -> Result<Vec<String>> {
        q.validate()?;
        self.driver.run_list(q)
    }

    /// Delete one run; false when there was none.
    pub fn delete_run(&self, run_id: &str) -> Result<bool> {
        self.driver.run_delete(run_id)
    }

    /// Delete runs that finished before `completed_before` (ms). Returns how many.
    pub fn purge_runs(&self, completed_before: i64) -> Result<usize> {
        check_time("completed_before", completed_before)?;
        self.driver.run_purge(completed_before)
    }

    /// Insert the task row of a run, or restart the row of an earlier run with the same id, in
    /// `running` with a fresh lease for `worker_id`, in one transaction. The returned row carries
    /// the lease token for the fenced complete/fail/renew.
    ///
    /// Refused (`InvalidArgument`, nothing written) while another holder runs the same run id with
    /// a live lease.
    pub fn start_run(&self, s: &StartRun) -> Result<TaskRow> {
        s.validate(self.opts.max_payload_bytes)?;
        self.driver.run_start(s)
    }

    /// Interrupted runs of `r.queue`: rows still `running` whose lease expired or whose holder is
    /// known dead, and rows the rescuer already put back in the queue (a run row is never queued
    /// otherwise). Each is re-queued in `r.rerun_queue` when its type is in `r.rerun_types`,
    /// otherwise failed with an error that says it was interrupted. One transaction.
    pub fn recover_runs(&self, r: &RecoverRuns) -> Result<Vec<RecoveredRun>> {
        r.validate()?;
        self.driver.run_recover(r)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::each_backend;
    use crate::model::error::Error;
    use crate::model::runs::{RecoverRuns, RunFilter, RunQuery, RunRecord, StartRun};

    fn start(worker_id: &str, rerun_attempts: i64) -> StartRun {
        StartRun {
            run_id: "r1".into(),
            task_type: "m".into(),
            payload: "{}".into(),
            queue: "runs".into(),
            worker_id: worker_id.into(),
            lease_ms: 60_000,
            rerun_attempts,
            takeover_from: Vec::new(),
        }
    }

    #[test]
    fn bad_run_arguments_are_refused_before_anything_is_written() {
        for (_backend, q, _guard) in each_backend() {
            for (s, says) in [
                (start(" ", 0), "worker_id must be a non-empty string"),
                (start("w", -1), "rerun_attempts must be between 0 and"),
            ] {
                let e = q.start_run(&s).unwrap_err();
                assert!(
                    matches!(&e, Error::InvalidArgument(m) if m.contains(says)),
                    "{e:?}"
                );
            }
            let r = RecoverRuns {
                queue: "".into(),
                dead_holders: Vec::new(),
                rerun_types: Vec::new(),
                rerun_queue: "durable".into(),
            };
            assert!(matches!(q.recover_runs(&r), Err(Error::InvalidArgument(_))));
            assert_eq!(q.load_run("r1").unwrap(), None);
            assert!(q.get(1).is_err(), "no task row was written");
            q.start_run(&start("w", 0)).unwrap();
        }
    }

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

    fn query(filter: RunFilter, newest_first: bool, limit: Option<i64>) -> RunQuery {
        RunQuery {
            filter,
            newest_first,
            limit,
        }
    }

    /// Moved from the SQLite driver's tests with the checks (the driver no longer makes them).
    #[test]
    fn bad_runs_are_refused() {
        for (_backend, q, _guard) in each_backend() {
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
    }

    #[test]
    fn bad_run_records_queries_and_cutoffs_are_refused_with_their_messages() {
        for (_backend, q, _guard) in each_backend() {
            let says = |e: Error, text: &str| {
                assert!(
                    matches!(&e, Error::InvalidArgument(m) if m.contains(text)),
                    "{e:?}"
                )
            };
            let mut r = record("r", "m", " ", 1, None);
            says(
                q.save_run(&r).unwrap_err(),
                "run \"r\": status must be a non-empty string",
            );
            r.status = "queued".into();
            r.created_at = i64::MAX;
            says(q.save_run(&r).unwrap_err(), "created_at");
            r.created_at = 1;
            r.completed_at = Some(i64::MIN);
            says(q.save_run(&r).unwrap_err(), "completed_at");
            says(
                q.list_runs(&query(RunFilter::All, true, Some(-1)))
                    .unwrap_err(),
                "limit must be zero or positive, got -1",
            );
            says(q.purge_runs(i64::MAX).unwrap_err(), "completed_before");
            assert_eq!(q.load_run("r").unwrap(), None, "nothing was written");
            assert!(q
                .list_runs(&query(RunFilter::All, true, Some(0)))
                .unwrap()
                .is_empty());
        }
    }
}
