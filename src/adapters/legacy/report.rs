//! Reporting: what an import did and found (`ImportReport`, with its problems and notes), what
//! `inspect_legacy` finds, and the tally of the committed batches that becomes the report.

use super::MAX_LISTED_PROBLEMS;
use crate::model::new_task::{DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY};
use serde::Serialize;
use std::collections::BTreeMap;

/// One value of the old file that could not be imported as it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportProblem {
    /// `task_queue` or `task_logs`.
    pub table: String,
    /// The task's id in the old file (None when the id itself is unreadable).
    pub legacy_id: Option<i64>,
    /// For a log line, its `log_id`.
    pub log_id: Option<i64>,
    pub column: String,
    /// The value as found, cut to 200 characters.
    pub value: Option<String>,
    pub reason: String,
    /// "skipped" (nothing of the row was written) or what was imported instead.
    pub action: String,
}

/// A worker row of the old file (not imported: see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegacyWorker {
    pub worker_id: Option<String>,
    /// The JSON text as stored.
    pub capabilities: Option<String>,
    pub heartbeat_utc: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// The identity of the old file: its canonical absolute path.
    pub source: String,
    /// Rows in `task_queue` when the import started.
    pub total: u64,
    /// New tasks created by this run.
    pub imported: u64,
    /// Rows imported by an earlier run of the same source.
    pub skipped_already_imported: u64,
    /// Rows whose idempotency key already belonged to a task: mapped to it, not duplicated.
    pub mapped_to_existing: u64,
    /// Rows skipped because a value could not be read (each is in `problems`).
    pub skipped_invalid: u64,
    /// Statuses of the tasks created by this run, in the new queue's terms.
    pub by_status: BTreeMap<String, u64>,
    /// The old statuses of the tasks created by this run.
    pub by_legacy_status: BTreeMap<String, u64>,
    /// Leased or processing tasks that came back as queued.
    pub requeued_from_lease: u64,
    /// Tasks whose priority was outside 1..=1000 and was clamped.
    pub priority_clamped: u64,
    pub logs_imported: u64,
    /// Log lines whose task_id matches no row of task_queue.
    pub logs_orphaned: u64,
    /// Workers of the old file (listed, not imported), at most 1000.
    pub legacy_workers: Vec<LegacyWorker>,
    pub legacy_workers_total: u64,
    /// Every problem, up to 10,000; `problem_count` counts them all.
    pub problems: Vec<ImportProblem>,
    pub problem_count: u64,
    /// Human-readable remarks: clamped priorities, defaults used for missing values, columns
    /// absent from the old file, workers not imported.
    pub notes: Vec<String>,
}

/// What `inspect_legacy` finds in an old file, without importing anything.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LegacyInfo {
    pub source: String,
    pub tasks: u64,
    /// Row counts by the old status text.
    pub by_status: BTreeMap<String, u64>,
    pub logs: u64,
    pub workers: u64,
    /// Documented columns of task_queue that this file lacks (read as NULL).
    pub missing_columns: Vec<String>,
}

/// What one committed batch did.
#[derive(Default)]
pub(super) struct BatchOutcome {
    pub(super) imported: u64,
    pub(super) mapped: u64,
    pub(super) already: u64,
    pub(super) invalid: u64,
    pub(super) problems: Vec<ImportProblem>,
    pub(super) by_status: BTreeMap<String, u64>,
    pub(super) by_legacy_status: BTreeMap<String, u64>,
    pub(super) requeued: u64,
    pub(super) clamped: Vec<i64>,
    pub(super) defaults: BTreeMap<&'static str, u64>,
    pub(super) logs: u64,
}

/// Add one committed batch to the import's tally.
pub(super) fn merge(t: &mut BatchOutcome, o: BatchOutcome) {
    t.imported += o.imported;
    t.mapped += o.mapped;
    t.already += o.already;
    t.invalid += o.invalid;
    t.problems.extend(o.problems);
    for (k, v) in o.by_status {
        *t.by_status.entry(k).or_default() += v;
    }
    for (k, v) in o.by_legacy_status {
        *t.by_legacy_status.entry(k).or_default() += v;
    }
    t.requeued += o.requeued;
    t.clamped.extend(o.clamped);
    for (k, v) in o.defaults {
        *t.defaults.entry(k).or_default() += v;
    }
    t.logs += o.logs;
}

/// Fill the report from the tally, with the notes a migration needs.
pub(super) fn finish_report(
    r: &mut ImportReport,
    t: BatchOutcome,
    orphans: &[Option<i64>],
    missing_columns: &[String],
) {
    r.imported = t.imported;
    r.mapped_to_existing = t.mapped;
    r.skipped_already_imported = t.already;
    r.skipped_invalid = t.invalid;
    r.by_status = t.by_status;
    r.by_legacy_status = t.by_legacy_status;
    r.requeued_from_lease = t.requeued;
    r.priority_clamped = t.clamped.len() as u64;
    r.logs_imported = t.logs;
    r.logs_orphaned = orphans.len() as u64;
    r.problem_count = t.problems.len() as u64;
    r.problems = t.problems;
    r.problems.truncate(MAX_LISTED_PROBLEMS);

    if !missing_columns.is_empty() {
        r.notes.push(format!(
            "task_queue has no column {}: read as empty (defaults used)",
            missing_columns.join(", ")
        ));
    }
    if let (Some(lo), Some(hi)) = (t.clamped.iter().min(), t.clamped.iter().max()) {
        r.notes.push(format!(
            "{} task{} had a priority outside {MIN_PRIORITY}..{MAX_PRIORITY} (from {lo} to {hi}) and {} clamped into it; \
             each has a warning in its log",
            t.clamped.len(),
            if t.clamped.len() == 1 { "" } else { "s" },
            if t.clamped.len() == 1 { "was" } else { "were" },
        ));
    }
    if t.requeued > 0 {
        r.notes.push(format!(
            "{} leased or processing task{} came back as queued, claimable at once",
            t.requeued,
            if t.requeued == 1 { "" } else { "s" }
        ));
    }
    for (what, n) in &t.defaults {
        let used = match *what {
            "priority" => format!("no priority: {DEFAULT_PRIORITY} used"),
            "max_attempts" => format!("no max_attempts: {DEFAULT_MAX_ATTEMPTS} used"),
            "max_attempts below 1" => "max_attempts below 1: 1 used".to_string(),
            _ => "no created_at_utc: updated_at_utc or the import time used".to_string(),
        };
        r.notes.push(format!(
            "{n} task{} had {used}",
            if *n == 1 { "" } else { "s" }
        ));
    }
    if r.problem_count > r.problems.len() as u64 {
        r.notes.push(format!(
            "{} problems are not listed (the first {MAX_LISTED_PROBLEMS} are)",
            r.problem_count - r.problems.len() as u64
        ));
    }
    if !orphans.is_empty() {
        let ids: Vec<String> = orphans
            .iter()
            .take(10)
            .map(|i| i.map(|i| i.to_string()).unwrap_or_else(|| "?".into()))
            .collect();
        r.notes.push(format!(
            "{} log line{} of task_logs {} to no task of task_queue and {} not imported (log_id {}{})",
            orphans.len(),
            if orphans.len() == 1 { "" } else { "s" },
            if orphans.len() == 1 { "belongs" } else { "belong" },
            if orphans.len() == 1 { "was" } else { "were" },
            ids.join(", "),
            if orphans.len() > 10 { ", ..." } else { "" }
        ));
    }
    if r.legacy_workers_total > 0 {
        r.notes.push(format!(
            "{} worker{} of the older queue {} not imported: start the new workers with the same capabilities (the report lists \
             them in legacy_workers); they register themselves with their first heartbeat",
            r.legacy_workers_total,
            if r.legacy_workers_total == 1 { "" } else { "s" },
            if r.legacy_workers_total == 1 { "was" } else { "were" },
        ));
    }
}
