//! `copy`: every task (all columns, ids kept), log line, attempt record, run of the run
//! registry, dependency and hold of a held task, per-queue retry policy, limit, schedule and
//! default execution timeout of one queue into another, any backend to any other.
//!
//! Safe to run twice: each row is compared with the one the destination holds under its key;
//! equal rows are left alone, missing ones written. A destination that is not empty is checked
//! in full before anything is written: a row held differently, or rows the source lacks, mean
//! another queue, and the copy is refused rather than mixing two queues. Worker heartbeats are
//! not copied (workers register on the destination when they start there), nor what only
//! SQLite keeps for itself (boots of its lease clock, the race clock, `import-legacy`'s record).
//! A limit's rate bucket starts full on the destination (`model::copy` says why).

use crate::engine::queue::Queue;
use crate::model::copy::{CopyImport, CopyTable, COPY_BATCH};
use crate::model::error::{Error, Result};
use crate::model::maintenance::Progress;
use crate::model::options::QueueOptions;
use crate::storage::{is_postgres_url, Driver};
use serde::Serialize;
use std::collections::BTreeMap;

/// What `copy` does beyond the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Copy even while tasks of the source hold live leases (their workers still run): they are
    /// copied as running, and the destination's rescuer re-queues them once the lease ends.
    pub allow_live_leases: bool,
}

/// What a copy did, per table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    /// Rows written, per table.
    pub copied: BTreeMap<&'static str, u64>,
    /// Rows the destination already held, equal (an earlier copy).
    pub already_there: BTreeMap<&'static str, u64>,
    /// Running tasks copied with a lease that had not ended.
    pub live_leases: u64,
}

/// Copy the queue at `from` (a SQLite path or a PostgreSQL URL) into `to`, calling
/// `progress(rows_done, rows_total)` after each batch. Nothing is written when `from` is
/// missing or is `to` itself, when the source has live leases (unless allowed), when `to`
/// cannot be opened (unreachable, a newer schema), or when `to` holds another queue.
pub fn copy(from: &str, to: &str, opts: CopyOptions, progress: Progress) -> Result<CopyReport> {
    refuse_same_or_missing(from, to)?;
    let source = Queue::open(from, QueueOptions::default())?;
    let src = source.driver();
    let have = src.copy_summary()?;
    if have.live_leases > 0 && !opts.allow_live_leases {
        return Err(Error::invalid(format!(
            "{} tasks of the source are running under a live lease: their workers still run, and \
             what they do next would not reach the copy. Stop the workers first (and wait for \
             their leases to end, or run `prismq-queue sweep` after it), or pass \
             --allow-live-leases to copy them as running: the destination then re-queues them \
             once their leases end",
            have.live_leases
        )));
    }
    let destination = Queue::open(to, QueueOptions::default())?;
    let dst = destination.driver();
    if src.path() == dst.path() && is_postgres_url(from) {
        return Err(Error::invalid(format!(
            "the source and the destination are the same queue ({}): name another database or \
             ?schema= to copy to",
            dst.path()
        )));
    }
    let held = dst.copy_summary()?;
    let check = held.total() > 0;
    let total = have.total() * if check { 2 } else { 1 };
    let mut walk = Walk {
        src,
        dst,
        done: 0,
        total,
        progress,
    };
    progress_start(&mut walk)?;
    if check {
        // Every row compared before the first write: a refusal leaves the destination as it was.
        for table in CopyTable::ALL {
            let found = walk.table(table, false).map_err(|e| match e {
                Error::InvalidArgument(m) => Error::invalid(format!("{m} (nothing was written)")),
                other => other,
            })?;
            let extra = held.count(table).saturating_sub(found.same);
            if extra > 0 {
                return Err(foreign_rows(table, extra));
            }
        }
    }
    let mut report = CopyReport {
        source: src.path().to_string(),
        destination: dst.path().to_string(),
        live_leases: have.live_leases,
        ..CopyReport::default()
    };
    for table in CopyTable::ALL {
        let did = walk.table(table, true)?;
        report.copied.insert(table.as_str(), did.new);
        report.already_there.insert(table.as_str(), did.same);
    }
    dst.copy_reserve_ids(have.task_ids_used)?;
    Ok(report)
}

fn progress_start(w: &mut Walk) -> Result<()> {
    (w.progress)(0, w.total)
}

/// The destination holds rows the source has not: another queue's.
fn foreign_rows(table: CopyTable, extra: u64) -> Error {
    Error::invalid(format!(
        "the destination already holds {extra} {} that the source does not have: it is another \
         queue (or one that ran on since an earlier copy). Nothing was written; copy into an \
         empty database (or a new ?schema= on PostgreSQL), or remove the destination first",
        table.as_str().replace('_', " ")
    ))
}

/// A path the copy would read or write: a source that does not exist would be created empty,
/// and a destination that is the source would be copied onto itself.
fn refuse_same_or_missing(from: &str, to: &str) -> Result<()> {
    if is_postgres_url(from) {
        return Ok(());
    }
    if from == ":memory:" || !std::path::Path::new(from).exists() {
        return Err(Error::invalid(format!(
            "the source {from:?} does not exist: give the path of the queue's database file (or \
             its postgresql:// URL)"
        )));
    }
    if is_postgres_url(to) || to == ":memory:" {
        return Ok(());
    }
    let canonical = |p: &str| crate::model::paths::canonical(p).ok();
    if std::path::Path::new(to).exists() && canonical(from) == canonical(to) {
        return Err(Error::invalid(format!(
            "the destination {to:?} is the source itself: give another file (or a postgresql:// URL)"
        )));
    }
    Ok(())
}

/// One pass over the tables, with the progress of the whole copy.
struct Walk<'a, 'p> {
    src: &'a dyn Driver,
    dst: &'a dyn Driver,
    done: u64,
    total: u64,
    progress: Progress<'p>,
}

impl Walk<'_, '_> {
    /// Every row of `table` in batches, compared with (and, when `write`, written to) the
    /// destination.
    fn table(&mut self, table: CopyTable, write: bool) -> Result<CopyImport> {
        let mut sum = CopyImport::default();
        let mut after = None;
        loop {
            let rows = self.src.copy_export(table, after.as_ref(), COPY_BATCH)?;
            if rows.is_empty() {
                return Ok(sum);
            }
            let got = self.dst.copy_import(&rows, write)?;
            sum.new += got.new;
            sum.same += got.same;
            // Rows enqueued on the source meanwhile may push past the count read first.
            self.done = (self.done + rows.len() as u64).min(self.total);
            (self.progress)(self.done, self.total)?;
            after = rows.last_key();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::claim::ClaimRequest;
    use crate::model::copy::CopyRows;
    use crate::model::lease::{Failure, Lease};
    use crate::model::new_task::NewTask;
    use crate::model::retry::RetryOverrides;
    use crate::model::runs::RunRecord;
    use crate::model::schedule::{Missed, ScheduleOptions, ScheduleSpec};

    fn open(path: &str) -> Queue {
        Queue::open(path, QueueOptions::default()).unwrap()
    }

    fn claim_one(q: &Queue) -> Lease {
        let t = q.claim(&ClaimRequest::new("w1")).unwrap().remove(0);
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    /// A queue with a task in each state, logs, attempt records, a run and a retry policy.
    pub(crate) fn fill(q: &Queue) {
        let id = q
            .enqueue(&NewTask::new("done", r#"{"b": 1.50, "a": [1e3, "é"]}"#))
            .unwrap();
        q.complete(claim_one(q), Some(r#"{"ok":true,  "n": 0.1}"#))
            .unwrap();
        q.log(id, "info", "sent", Some(r#"{"to": "x"}"#)).unwrap();
        q.enqueue(&NewTask::new("dead", "null")).unwrap();
        let mut f = Failure::new(claim_one(q), "boom", false);
        f.traceback = Some("Traceback (most recent call last):\n  ...".into());
        q.fail_attempt(&f).unwrap();
        let mut retried = NewTask::new("again", "[]");
        retried.max_attempts = 5;
        q.enqueue(&retried).unwrap();
        q.fail_attempt(&Failure::new(claim_one(q), "flaky", true))
            .unwrap();
        let gone = q.enqueue(&NewTask::new("gone", "1")).unwrap();
        q.cancel(gone).unwrap();
        let mut later = NewTask::new("later", r#"{"x":1}"#);
        later.queue = "mail".into();
        later.priority = 7;
        later.delay_ms = Some(3_600_000);
        later.idempotency_key = Some("key-1".into());
        later.requires = serde_json::from_str(r#"{"gpu": 1, "a": "x"}"#).unwrap();
        later.timeout_ms = Some(5_000);
        later.retry = Some(RetryOverrides {
            base: Some(2.0),
            ..RetryOverrides::default()
        });
        q.enqueue(&later).unwrap();
        let ready = q.enqueue(&NewTask::new("ready", "null")).unwrap();
        // Held until "ready" completes: its hold must come along, or it stays held for good.
        let mut held = NewTask::new("held", r#"{"after": "ready"}"#);
        held.after = vec![ready];
        q.enqueue(&held).unwrap();
        settings(q);
        let policy = RetryOverrides {
            base: Some(1.5),
            cap: Some(60.0),
            ..RetryOverrides::default()
        };
        q.set_retry_policy("mail", policy).unwrap();
        q.driver()
            .run_save(&RunRecord {
                run_id: "run-1".into(),
                module_id: "m".into(),
                status: "completed".into(),
                created_at: 1_000,
                completed_at: Some(2_000),
                data: r#"{"run_id": "run-1"}"#.into(),
            })
            .unwrap();
    }

    /// Limits (a whole queue's, with a rate, and one type's), schedules (one paused) and
    /// default timeouts (one of them "no timeout").
    pub(crate) fn settings(q: &Queue) {
        q.set_limit("mail", None, Some(2), None, Some("10/s"))
            .unwrap();
        q.set_limit("default", Some("ready"), Some(3), None, None)
            .unwrap();
        for name in ["hourly", "paused"] {
            q.schedule(&ScheduleSpec {
                name: name.into(),
                task_type: "tick".into(),
                queue: "mail".into(),
                payload: r#"{"n": 1}"#.into(),
                cron: None,
                every_ms: Some(3_600_000),
                tz: "UTC".into(),
                missed: Missed::CatchUp,
                options: ScheduleOptions::default(),
            })
            .unwrap();
        }
        q.pause_schedule("paused").unwrap();
        q.set_default_timeout("mail", Some(9_000)).unwrap();
        q.set_default_timeout("default", None).unwrap();
    }

    /// Every table as `copy` reads it, without what each backend keeps for itself.
    pub(crate) fn dump(q: &Queue) -> Vec<CopyRows> {
        CopyTable::ALL
            .iter()
            .map(|t| {
                let mut rows = q.driver().copy_export(*t, None, 1_000_000).unwrap();
                if let CopyRows::Runs(rs) = &mut rows {
                    rs.iter_mut().for_each(|r| r.ordinal = 0);
                }
                rows
            })
            .collect()
    }

    fn copied(from: &str, to: &str) -> Result<(CopyReport, Vec<(u64, u64)>)> {
        let mut calls = Vec::new();
        let r = copy(from, to, CopyOptions::default(), &mut |d, t| {
            calls.push((d, t));
            Ok(())
        })?;
        Ok((r, calls))
    }

    #[test]
    fn every_table_is_copied_as_it_is_and_a_second_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let src = open(a);
        fill(&src);
        let (report, calls) = copied(a, b).unwrap();
        let dst = open(b);
        assert_eq!(dump(&src), dump(&dst));
        assert_eq!(report.copied["tasks"], 7);
        assert_eq!(report.copied["attempts"], 2);
        assert_eq!(report.copied["runs"], 1);
        assert_eq!(report.copied["retry_policies"], 1);
        assert_eq!(report.copied["dependencies"], 1);
        assert_eq!(report.copied["holds"], 1);
        assert_eq!(report.copied["limits"], 2);
        assert_eq!(report.copied["schedules"], 2);
        assert_eq!(report.copied["queue_timeouts"], 2);
        assert_eq!(dst.default_timeout("mail").unwrap(), Some(9_000));
        let total = summary_total(&src);
        assert_eq!(calls.first(), Some(&(0, total)));
        assert_eq!(calls.last(), Some(&(total, total)));

        let before = dump(&dst);
        let (again, calls) = copied(a, b).unwrap();
        assert!(again.copied.values().all(|n| *n == 0), "{again:?}");
        assert_eq!(again.already_there, report.copied);
        assert_eq!(dump(&dst), before);
        // A destination that holds rows is compared in full first: two passes.
        assert_eq!(calls.last(), Some(&(2 * total, 2 * total)));
        // The copy is a working queue: a worker there takes what was queued, and the held
        // task is released there when its dependency completes.
        let of_type = |t: &str| {
            let mut req = ClaimRequest::new("w2");
            req.filter.types = Some(vec![t.into()]);
            req
        };
        let task = dst.claim(&of_type("ready")).unwrap();
        assert_eq!(task.len(), 1);
        let held = of_type("held");
        assert!(dst.claim(&held).unwrap().is_empty());
        let lease = Lease {
            task_id: task[0].id,
            token: task[0].lease_token.unwrap(),
        };
        dst.complete(lease, None).unwrap();
        assert_eq!(dst.claim(&held).unwrap().len(), 1);
    }

    #[test]
    fn settings_held_differently_or_only_by_the_destination_are_refused_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let a = a.to_str().unwrap();
        fill(&open(a));
        type Change = fn(&Queue);
        let changes: [(Change, &str); 4] = [
            (
                |q| q.set_default_timeout("mail", Some(1_000)).unwrap(),
                "default timeout of queue mail",
            ),
            (
                |q| {
                    q.set_limit("mail", None, Some(5), None, Some("10/s"))
                        .unwrap()
                },
                r#"limit of queue "mail" (every type)"#,
            ),
            (
                |q| {
                    q.resume_schedule("paused").unwrap();
                },
                r#"schedule "paused""#,
            ),
            (
                |q| q.set_limit("other", None, Some(1), None, None).unwrap(),
                "1 limits that the source does not have",
            ),
        ];
        for (i, (change, want)) in changes.into_iter().enumerate() {
            let b = dir.path().join(format!("b{i}.db"));
            let b = b.to_str().unwrap();
            copied(a, b).unwrap();
            let dst = open(b);
            change(&dst);
            let before = dump(&dst);
            let e = copied(a, b).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("othing was written"), "{e}");
            assert_eq!(dump(&dst), before);
        }
    }

    fn summary_total(q: &Queue) -> u64 {
        q.driver().copy_summary().unwrap().total()
    }

    #[test]
    fn ids_of_purged_tasks_are_not_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let src = open(a);
        fill(&src);
        let top = src.enqueue(&NewTask::new("newest", "null")).unwrap();
        src.cancel(top).unwrap();
        src.purge(0, &[crate::model::task::Status::Cancelled])
            .unwrap();
        copied(a, b).unwrap();
        let next = open(b).enqueue(&NewTask::new("new", "null")).unwrap();
        assert!(next > top, "{next} reuses an id up to {top}");
    }

    #[test]
    fn another_queue_at_the_destination_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        fill(&open(a));
        // Same id 1, another task.
        let other = open(b);
        other.enqueue(&NewTask::new("other", "null")).unwrap();
        let before = dump(&other);
        let e = copied(a, b).unwrap_err().to_string();
        assert!(
            e.contains("task 1") && e.contains("nothing was written"),
            "{e}"
        );
        assert_eq!(dump(&other), before);
        // Ids above the source's: rows the source lacks.
        let (c, d) = (dir.path().join("c.db"), dir.path().join("d.db"));
        let (c, d) = (c.to_str().unwrap(), d.to_str().unwrap());
        open(c).enqueue(&NewTask::new("one", "null")).unwrap();
        copied(c, d).unwrap();
        open(d).enqueue(&NewTask::new("two", "null")).unwrap();
        let e = copied(c, d).unwrap_err().to_string();
        assert!(e.contains("1 tasks that the source does not have"), "{e}");
    }

    #[test]
    fn bad_input_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let e = copied(a, b).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!std::path::Path::new(a).exists() && !std::path::Path::new(b).exists());
        let src = open(a);
        fill(&src);
        let e = copied(a, a).unwrap_err().to_string();
        assert!(e.contains("is the source itself"), "{e}");
        // A live lease: refused unless allowed, then copied as running.
        src.enqueue(&NewTask::new("busy", "null")).unwrap();
        let busy = claim_one(&src);
        let e = copied(a, b).unwrap_err().to_string();
        assert!(
            e.contains("live lease") && e.contains("--allow-live-leases"),
            "{e}"
        );
        assert!(!std::path::Path::new(b).exists());
        let opts = CopyOptions {
            allow_live_leases: true,
        };
        let r = copy(a, b, opts, &mut |_, _| Ok(())).unwrap();
        assert_eq!(r.live_leases, 1);
        let dst = open(b);
        let held = dst.get(busy.task_id).unwrap();
        assert_eq!(held, src.get(busy.task_id).unwrap());
        // Its lease still runs on the destination: not claimable, not rescued.
        assert_eq!(dst.sweep().unwrap(), 0);
    }
}
