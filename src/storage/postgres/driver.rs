//! `PgDriver` as the engine sees it: each operation of `storage::Driver` is the PostgreSQL
//! backend's method of the same meaning; what it lacks refuses (`Unsupported`), in the trait's
//! defaults or in the operation itself. docs/postgres.md lists both.

use super::PgDriver;
use crate::model::attempt::AttemptRow;
use crate::model::changes::{ChangeCursor, ChangeToken, Changes};
use crate::model::claim::ClaimRequest;
use crate::model::copy::{CopyImport, CopyKey, CopyRows, CopySummary, CopyTable};
use crate::model::error::Result;
use crate::model::lease::{FailOutcome, Failure, Lease, Settled};
use crate::model::limits::{LimitInfo, LimitSpec};
use crate::model::listing::{ListFilter, Stats};
use crate::model::maintenance::Progress;
use crate::model::metrics::Metrics;
use crate::model::new_task::NewTask;
use crate::model::observe::{Heartbeat, LogRow, WorkerRow};
use crate::model::retry::RetryOverrides;
use crate::model::runs::{RecoverRuns, RecoveredRun, RunQuery, RunRecord, StartRun};
use crate::model::schedule::{ScheduleFire, ScheduleRow, ScheduleSpec};
use crate::model::strategy::Strategy;
use crate::model::task::{Status, TaskRow};
use crate::model::timeouts::QueueTimeouts;
use crate::storage::{Capabilities, Driver};
use std::collections::BTreeMap;

impl Driver for PgDriver {
    fn name(&self) -> &'static str {
        "postgresql"
    }

    fn capabilities(&self) -> Capabilities {
        // The database's own tools do backups, checkpoints, vacuum and integrity checks.
        Capabilities {
            backup: false,
            checkpoint: false,
            vacuum: false,
            analyze: true,
            integrity_check: false,
            wal_figures: false,
            legacy_import: false,
        }
    }

    fn path(&self) -> &str {
        PgDriver::path(self)
    }

    fn lease_clock(&self) -> (&'static str, String, Option<i64>) {
        // One clock for every host: the server's.
        ("database", self.url.display.clone(), None)
    }

    fn data_version(&self) -> Result<i64> {
        // The snapshot's xmax moves whenever a transaction that wrote ends, anywhere on the
        // server: more often than needed (other databases too), never less.
        // One statement, outside any explicit transaction: waiters ask often. Again on another
        // connection when this one died (a restart, pg_terminate_backend).
        let look = || -> Result<i64> {
            let mut conn = self.conn()?;
            let row = conn
                .client
                .query_one(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
                    &[],
                )
                .map_err(|e| self.redact(e.into()))?;
            Ok(row.get(0))
        };
        match look() {
            Err(e) if super::errors::is_connection_lost(&e) => look(),
            done => done,
        }
    }

    fn listen(&self, on_event: Box<dyn Fn() + Send + Sync>) -> bool {
        PgDriver::listen(self, on_event)
    }

    fn task_insert_many(&self, tasks: &[NewTask]) -> Result<Vec<i64>> {
        PgDriver::enqueue_many(self, tasks)
    }

    fn task_get_available(&self, req: &ClaimRequest) -> Result<Vec<TaskRow>> {
        PgDriver::claim(self, req)
    }

    fn task_explain_get_available(&self, strategy: Strategy) -> Result<Vec<String>> {
        PgDriver::explain_claim(self, strategy)
    }

    fn task_complete(&self, lease: Lease, result: Option<&str>) -> Result<()> {
        PgDriver::complete(self, lease, result)
    }

    fn task_complete_many(&self, items: &[(Lease, Option<String>)]) -> Result<Vec<bool>> {
        PgDriver::complete_many(self, items)
    }

    fn task_fail(&self, f: &Failure) -> Result<FailOutcome> {
        PgDriver::fail_attempt(self, f)
    }

    fn task_fail_many(&self, items: &[Failure]) -> Result<Vec<Option<FailOutcome>>> {
        PgDriver::fail_many(self, items)
    }

    fn task_settle(
        &self,
        completes: &[(Lease, Option<String>)],
        fails: &[Failure],
        claim: Option<&ClaimRequest>,
    ) -> Result<Settled> {
        PgDriver::settle(self, completes, fails, claim)
    }

    fn task_renew(&self, lease: Lease, lease_ms: i64) -> Result<i64> {
        PgDriver::renew(self, lease, lease_ms)
    }

    fn task_progress(
        &self,
        lease: Lease,
        percent: Option<f64>,
        step: Option<&str>,
        message: Option<&str>,
    ) -> Result<()> {
        PgDriver::progress(self, lease, percent, step, message)
    }

    fn task_release(&self, lease: Lease) -> Result<bool> {
        PgDriver::release(self, lease)
    }

    fn task_rescue_many(&self) -> Result<usize> {
        let n = PgDriver::sweep(self)?;
        // serve's maintenance sweeps every 30 s: the change feed is pruned there too.
        if let Err(e) = self.prune_changes() {
            log::debug!("pruning the change feed failed ({e}); next sweep");
        }
        Ok(n)
    }

    fn task_get(&self, id: i64) -> Result<TaskRow> {
        PgDriver::get(self, id)
    }

    fn task_get_by_key(&self, key: &str) -> Result<Option<TaskRow>> {
        PgDriver::find_by_idempotency_key(self, key)
    }

    fn task_cancel(&self, id: i64) -> Result<bool> {
        PgDriver::cancel(self, id)
    }

    fn task_set_priority(&self, id: i64, priority: i64) -> Result<bool> {
        PgDriver::set_priority(self, id, priority)
    }

    fn task_retry(&self, id: i64) -> Result<bool> {
        PgDriver::retry(self, id)
    }

    fn queue_set_retry_policy(&self, queue: &str, policy: RetryOverrides) -> Result<()> {
        PgDriver::set_retry_policy(self, queue, policy)
    }

    fn queue_set_timeout(&self, queue: &str, timeout_ms: Option<i64>) -> Result<()> {
        PgDriver::set_queue_timeout(self, queue, timeout_ms)
    }

    fn queue_timeouts(&self) -> Result<QueueTimeouts> {
        PgDriver::queue_timeouts(self)
    }

    fn log_insert(
        &self,
        task_id: i64,
        level: &str,
        message: &str,
        details: Option<&str>,
    ) -> Result<i64> {
        PgDriver::log(self, task_id, level, message, details)
    }

    fn task_list(&self, f: &ListFilter) -> Result<Vec<TaskRow>> {
        PgDriver::list(self, f)
    }

    fn stats(&self, queue: Option<&str>) -> Result<Stats> {
        PgDriver::stats(self, queue)
    }

    fn task_position(&self, id: i64, strategy: Strategy) -> Result<Option<i64>> {
        PgDriver::position(self, id, strategy)
    }

    fn attempt_list(&self, task_id: i64) -> Result<Vec<AttemptRow>> {
        PgDriver::attempts(self, task_id)
    }

    fn log_list(&self, task_id: i64, limit: i64) -> Result<Vec<LogRow>> {
        PgDriver::logs(self, task_id, limit)
    }

    fn worker_heartbeat(&self, hb: &Heartbeat) -> Result<()> {
        PgDriver::heartbeat(self, hb)
    }

    fn worker_list(&self) -> Result<Vec<WorkerRow>> {
        PgDriver::workers(self)
    }

    fn worker_remove(&self, worker_id: &str) -> Result<bool> {
        PgDriver::remove_worker(self, worker_id)
    }

    fn limit_set(&self, spec: &LimitSpec) -> Result<()> {
        PgDriver::limit_set(self, spec)
    }

    fn limit_remove(&self, queue: &str, task_type: &str) -> Result<bool> {
        PgDriver::limit_remove(self, queue, task_type)
    }

    fn limit_list(&self, queue: Option<&str>) -> Result<Vec<LimitInfo>> {
        PgDriver::limit_list(self, queue)
    }

    fn metrics(&self, window_ms: i64) -> Result<Metrics> {
        PgDriver::metrics_over(self, window_ms)
    }

    fn change_cursor(
        &self,
        queues: Option<Vec<String>>,
        token: ChangeToken,
    ) -> Result<ChangeCursor> {
        PgDriver::change_cursor(self, queues, token)
    }

    fn changes_since(
        &self,
        cursor: &mut ChangeCursor,
        limit: usize,
        token: ChangeToken,
    ) -> Result<Changes> {
        PgDriver::changes_since(self, cursor, limit, token)
    }

    fn queue_depths(&self, queues: &[String]) -> Result<BTreeMap<String, (i64, i64)>> {
        PgDriver::queue_depths(self, queues)
    }

    fn task_purge_many(
        &self,
        older_than_ms: i64,
        statuses: &[Status],
        batch_size: usize,
        progress: Progress,
    ) -> Result<usize> {
        PgDriver::purge_with(self, older_than_ms, statuses, batch_size, progress)
    }

    fn analyze(&self) -> Result<()> {
        self.write(|tx| {
            tx.batch_execute("ANALYZE lanes, tasks, task_logs, task_attempts")?;
            Ok(())
        })
    }

    fn run_save(&self, run: &RunRecord) -> Result<()> {
        PgDriver::save_run(self, run)
    }

    fn run_load(&self, run_id: &str) -> Result<Option<String>> {
        PgDriver::load_run(self, run_id)
    }

    fn run_list(&self, q: &RunQuery) -> Result<Vec<String>> {
        PgDriver::list_runs(self, q)
    }

    fn run_delete(&self, run_id: &str) -> Result<bool> {
        PgDriver::delete_run(self, run_id)
    }

    fn run_purge(&self, completed_before: i64) -> Result<usize> {
        PgDriver::purge_runs(self, completed_before)
    }

    fn run_start(&self, s: &StartRun) -> Result<TaskRow> {
        PgDriver::start_run(self, s)
    }

    fn run_recover(&self, r: &RecoverRuns) -> Result<Vec<RecoveredRun>> {
        PgDriver::recover_runs(self, r)
    }

    fn schedule_put(&self, spec: &ScheduleSpec, next_run: i64) -> Result<ScheduleRow> {
        PgDriver::schedule_put(self, spec, next_run)
    }

    fn schedule_list(&self, name: Option<&str>) -> Result<Vec<ScheduleRow>> {
        PgDriver::schedule_list(self, name)
    }

    fn schedule_due(&self, now: i64, limit: i64) -> Result<Vec<ScheduleRow>> {
        PgDriver::schedule_due(self, now, limit)
    }

    fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        resume_at: i64,
    ) -> Result<Option<ScheduleRow>> {
        PgDriver::schedule_set_paused(self, name, paused, resume_at)
    }

    fn schedule_remove(&self, name: &str) -> Result<bool> {
        PgDriver::schedule_remove(self, name)
    }

    fn schedule_fire(&self, fire: &ScheduleFire) -> Result<bool> {
        PgDriver::schedule_fire(self, fire)
    }

    fn copy_summary(&self) -> Result<CopySummary> {
        PgDriver::copy_summary(self)
    }

    fn copy_export(
        &self,
        table: CopyTable,
        after: Option<&CopyKey>,
        limit: usize,
    ) -> Result<CopyRows> {
        PgDriver::copy_export(self, table, after, limit)
    }

    fn copy_import(&self, rows: &CopyRows, write: bool) -> Result<CopyImport> {
        PgDriver::copy_import(self, rows, write)
    }

    fn copy_reserve_ids(&self, used: i64) -> Result<()> {
        PgDriver::copy_reserve_ids(self, used)
    }
}
