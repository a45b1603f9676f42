//! `SqliteDriver` as the engine sees it: each operation of `storage::Driver` is the SQLite
//! backend's method of the same meaning (in the module named for it).

use super::SqliteDriver;
use crate::model::attempt::AttemptRow;
use crate::model::changes::{ChangeCursor, ChangeToken, Changes};
use crate::model::claim::ClaimRequest;
use crate::model::copy::{CopyImport, CopyKey, CopyRows, CopySummary, CopyTable};
use crate::model::error::Result;
use crate::model::lease::{FailOutcome, Failure, Lease, Settled};
use crate::model::limits::{LimitInfo, LimitSpec};
use crate::model::listing::{ListFilter, Stats};
use crate::model::maintenance::{BackupReport, CheckpointResult, Progress};
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

impl Driver for SqliteDriver {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backup: true,
            checkpoint: true,
            vacuum: true,
            analyze: true,
            integrity_check: true,
            wal_figures: true,
            legacy_import: true,
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn path(&self) -> &str {
        SqliteDriver::path(self)
    }

    fn lease_clock(&self) -> (&'static str, String, Option<i64>) {
        SqliteDriver::lease_clock(self)
    }

    fn data_version(&self) -> Result<i64> {
        self.db.data_version()
    }

    fn listen(&self, on_event: Box<dyn Fn() + Send + Sync>) -> bool {
        SqliteDriver::listen(self, on_event)
    }

    fn task_insert_many(&self, tasks: &[NewTask]) -> Result<Vec<i64>> {
        SqliteDriver::enqueue_many(self, tasks)
    }

    fn task_get_available(&self, req: &ClaimRequest) -> Result<Vec<TaskRow>> {
        SqliteDriver::claim(self, req)
    }

    fn task_explain_get_available(&self, strategy: Strategy) -> Result<Vec<String>> {
        SqliteDriver::explain_claim(self, strategy)
    }

    fn task_complete(&self, lease: Lease, result: Option<&str>) -> Result<()> {
        SqliteDriver::complete(self, lease, result)
    }

    fn task_complete_many(&self, items: &[(Lease, Option<String>)]) -> Result<Vec<bool>> {
        SqliteDriver::complete_many(self, items)
    }

    fn task_fail(&self, f: &Failure) -> Result<FailOutcome> {
        SqliteDriver::fail_attempt(self, f)
    }

    fn task_fail_many(&self, items: &[Failure]) -> Result<Vec<Option<FailOutcome>>> {
        SqliteDriver::fail_many(self, items)
    }

    fn task_settle(
        &self,
        completes: &[(Lease, Option<String>)],
        fails: &[Failure],
        claim: Option<&ClaimRequest>,
    ) -> Result<Settled> {
        SqliteDriver::settle(self, completes, fails, claim)
    }

    fn task_renew(&self, lease: Lease, lease_ms: i64) -> Result<i64> {
        SqliteDriver::renew(self, lease, lease_ms)
    }

    fn task_progress(
        &self,
        lease: Lease,
        percent: Option<f64>,
        step: Option<&str>,
        message: Option<&str>,
    ) -> Result<()> {
        SqliteDriver::progress(self, lease, percent, step, message)
    }

    fn task_release(&self, lease: Lease) -> Result<bool> {
        SqliteDriver::release(self, lease)
    }

    fn task_rescue_many(&self) -> Result<usize> {
        SqliteDriver::sweep(self)
    }

    fn task_get(&self, id: i64) -> Result<TaskRow> {
        SqliteDriver::get(self, id)
    }

    fn task_get_by_key(&self, key: &str) -> Result<Option<TaskRow>> {
        SqliteDriver::find_by_idempotency_key(self, key)
    }

    fn task_cancel(&self, id: i64) -> Result<bool> {
        SqliteDriver::cancel(self, id)
    }

    fn task_set_priority(&self, id: i64, priority: i64) -> Result<bool> {
        SqliteDriver::set_priority(self, id, priority)
    }

    fn task_retry(&self, id: i64) -> Result<bool> {
        SqliteDriver::retry(self, id)
    }

    fn queue_set_retry_policy(&self, queue: &str, policy: RetryOverrides) -> Result<()> {
        SqliteDriver::set_retry_policy(self, queue, policy)
    }

    fn queue_set_timeout(&self, queue: &str, timeout_ms: Option<i64>) -> Result<()> {
        SqliteDriver::set_queue_timeout(self, queue, timeout_ms)
    }

    fn queue_timeouts(&self) -> Result<QueueTimeouts> {
        SqliteDriver::queue_timeouts(self)
    }

    fn log_insert(
        &self,
        task_id: i64,
        level: &str,
        message: &str,
        details: Option<&str>,
    ) -> Result<i64> {
        SqliteDriver::log(self, task_id, level, message, details)
    }

    fn task_list(&self, f: &ListFilter) -> Result<Vec<TaskRow>> {
        SqliteDriver::list(self, f)
    }

    fn stats(&self, queue: Option<&str>) -> Result<Stats> {
        SqliteDriver::stats(self, queue)
    }

    fn task_position(&self, id: i64, strategy: Strategy) -> Result<Option<i64>> {
        SqliteDriver::position(self, id, strategy)
    }

    fn attempt_list(&self, task_id: i64) -> Result<Vec<AttemptRow>> {
        SqliteDriver::attempts(self, task_id)
    }

    fn log_list(&self, task_id: i64, limit: i64) -> Result<Vec<LogRow>> {
        SqliteDriver::logs(self, task_id, limit)
    }

    fn worker_heartbeat(&self, hb: &Heartbeat) -> Result<()> {
        SqliteDriver::heartbeat(self, hb)
    }

    fn worker_list(&self) -> Result<Vec<WorkerRow>> {
        SqliteDriver::workers(self)
    }

    fn worker_remove(&self, worker_id: &str) -> Result<bool> {
        SqliteDriver::remove_worker(self, worker_id)
    }

    fn limit_set(&self, spec: &LimitSpec) -> Result<()> {
        SqliteDriver::limit_set(self, spec)
    }

    fn limit_remove(&self, queue: &str, task_type: &str) -> Result<bool> {
        SqliteDriver::limit_remove(self, queue, task_type)
    }

    fn limit_list(&self, queue: Option<&str>) -> Result<Vec<LimitInfo>> {
        SqliteDriver::limit_list(self, queue)
    }

    fn metrics(&self, window_ms: i64) -> Result<Metrics> {
        SqliteDriver::metrics_over(self, window_ms)
    }

    fn change_cursor(
        &self,
        queues: Option<Vec<String>>,
        token: ChangeToken,
    ) -> Result<ChangeCursor> {
        SqliteDriver::change_cursor(self, queues, token)
    }

    fn changes_since(
        &self,
        cursor: &mut ChangeCursor,
        limit: usize,
        token: ChangeToken,
    ) -> Result<Changes> {
        SqliteDriver::changes_since(self, cursor, limit, token)
    }

    fn queue_depths(&self, queues: &[String]) -> Result<BTreeMap<String, (i64, i64)>> {
        SqliteDriver::queue_depths(self, queues)
    }

    fn task_purge_many(
        &self,
        older_than_ms: i64,
        statuses: &[Status],
        batch_size: usize,
        progress: Progress,
    ) -> Result<usize> {
        SqliteDriver::purge_with(self, older_than_ms, statuses, batch_size, progress)
    }

    fn checkpoint(&self, mode: &str) -> Result<CheckpointResult> {
        SqliteDriver::checkpoint(self, mode)
    }

    fn vacuum(&self) -> Result<()> {
        SqliteDriver::vacuum(self)
    }

    fn vacuum_with(&self, tick: Box<dyn FnMut() -> Result<()> + Send>) -> Result<()> {
        SqliteDriver::vacuum_with(self, tick)
    }

    fn analyze(&self) -> Result<()> {
        SqliteDriver::analyze(self)
    }

    fn integrity_check(&self) -> Result<Vec<String>> {
        SqliteDriver::integrity_check(self)
    }

    fn backup(&self, dest: &str, overwrite: bool, progress: Progress) -> Result<BackupReport> {
        SqliteDriver::backup_with(self, dest, overwrite, progress)
    }

    fn run_save(&self, run: &RunRecord) -> Result<()> {
        SqliteDriver::save_run(self, run)
    }

    fn run_load(&self, run_id: &str) -> Result<Option<String>> {
        SqliteDriver::load_run(self, run_id)
    }

    fn run_list(&self, q: &RunQuery) -> Result<Vec<String>> {
        SqliteDriver::list_runs(self, q)
    }

    fn run_delete(&self, run_id: &str) -> Result<bool> {
        SqliteDriver::delete_run(self, run_id)
    }

    fn run_purge(&self, completed_before: i64) -> Result<usize> {
        SqliteDriver::purge_runs(self, completed_before)
    }

    fn run_start(&self, s: &StartRun) -> Result<TaskRow> {
        SqliteDriver::start_run(self, s)
    }

    fn run_recover(&self, r: &RecoverRuns) -> Result<Vec<RecoveredRun>> {
        SqliteDriver::recover_runs(self, r)
    }

    fn schedule_put(&self, spec: &ScheduleSpec, next_run: i64) -> Result<ScheduleRow> {
        SqliteDriver::schedule_put(self, spec, next_run)
    }

    fn schedule_list(&self, name: Option<&str>) -> Result<Vec<ScheduleRow>> {
        SqliteDriver::schedule_list(self, name)
    }

    fn schedule_due(&self, now: i64, limit: i64) -> Result<Vec<ScheduleRow>> {
        SqliteDriver::schedule_due(self, now, limit)
    }

    fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        resume_at: i64,
    ) -> Result<Option<ScheduleRow>> {
        SqliteDriver::schedule_set_paused(self, name, paused, resume_at)
    }

    fn schedule_remove(&self, name: &str) -> Result<bool> {
        SqliteDriver::schedule_remove(self, name)
    }

    fn schedule_fire(&self, fire: &ScheduleFire) -> Result<bool> {
        SqliteDriver::schedule_fire(self, fire)
    }

    fn copy_summary(&self) -> Result<CopySummary> {
        SqliteDriver::copy_summary(self)
    }

    fn copy_export(
        &self,
        table: CopyTable,
        after: Option<&CopyKey>,
        limit: usize,
    ) -> Result<CopyRows> {
        SqliteDriver::copy_export(self, table, after, limit)
    }

    fn copy_import(&self, rows: &CopyRows, write: bool) -> Result<CopyImport> {
        SqliteDriver::copy_import(self, rows, write)
    }

    fn copy_reserve_ids(&self, used: i64) -> Result<()> {
        SqliteDriver::copy_reserve_ids(self, used)
    }
}
