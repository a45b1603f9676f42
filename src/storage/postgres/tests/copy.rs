//! `copy` on PostgreSQL: every table read in key order and written with its ids into another
//! schema, equal row for row; sequences moved past what was written; a second import writes
//! nothing; a row held differently is refused; a held task copied is released on the
//! destination when its dependency completes there. (SQLite <-> PostgreSQL through the public
//! API: tests/test_copy.py.)

use super::lease;
use super::util::{pg_or_skip, TestDb};
use crate::model::claim::ClaimRequest;
use crate::model::copy::{CopyRows, CopyTable};
use crate::model::lease::Failure;
use crate::model::limits::LimitSpec;
use crate::model::new_task::NewTask;
use crate::model::retry::RetryOverrides;
use crate::model::runs::RunRecord;
use crate::model::schedule::{Missed, ScheduleOptions, ScheduleSpec};
use crate::storage::postgres::PgDriver;

/// A held task (after `dep`), two limits, a paused schedule and two default timeouts.
fn fill_waits_and_settings(q: &PgDriver, dep: i64) {
    let mut held = NewTask::new("held", "null");
    held.after = vec![dep];
    q.enqueue(&held).unwrap();
    q.limit_set(&LimitSpec::new("default", None, Some(2), None, Some("5/s")).unwrap())
        .unwrap();
    let typed = LimitSpec::new("default", Some("held"), Some(1), Some("user"), None).unwrap();
    q.limit_set(&typed).unwrap();
    let spec = ScheduleSpec {
        name: "nightly".into(),
        task_type: "tick".into(),
        queue: "default".into(),
        payload: "null".into(),
        cron: Some("0 3 * * *".into()),
        every_ms: None,
        tz: "Europe/Paris".into(),
        missed: Missed::Skip,
        options: ScheduleOptions::default(),
    };
    q.schedule_put(&spec, 4_000_000_000_000).unwrap();
    q.schedule_set_paused("nightly", true, 0).unwrap();
    q.set_queue_timeout("default", Some(1_500)).unwrap();
    q.set_queue_timeout("slow", None).unwrap();
}

fn fill(q: &PgDriver) {
    let id = q
        .enqueue(&NewTask::new("done", r#"{"b": 1.50, "a": [1e3]}"#))
        .unwrap();
    let t = q.claim(&ClaimRequest::new("w")).unwrap().remove(0);
    q.complete(lease(&t), Some(r#"{"ok":  true}"#)).unwrap();
    q.log(id, "info", "sent", Some("{}")).unwrap();
    q.enqueue(&NewTask::new("dead", "null")).unwrap();
    let t = q.claim(&ClaimRequest::new("w")).unwrap().remove(0);
    let mut f = Failure::new(lease(&t), "boom", false);
    f.traceback = Some("Traceback ...".into());
    q.fail_attempt(&f).unwrap();
    let mut keyed = NewTask::new("keyed", "1");
    keyed.idempotency_key = Some("k".into());
    keyed.requires = serde_json::from_str(r#"{"gpu": 1}"#).unwrap();
    let keyed = q.enqueue(&keyed).unwrap();
    fill_waits_and_settings(q, keyed);
    // Running, with its lease token.
    q.enqueue(&NewTask::new("busy", "null")).unwrap();
    q.claim(&ClaimRequest::new("w")).unwrap();
    q.set_retry_policy(
        "default",
        RetryOverrides {
            base: Some(3.0),
            ..RetryOverrides::default()
        },
    )
    .unwrap();
    q.save_run(&RunRecord {
        run_id: "r".into(),
        module_id: "m".into(),
        status: "queued".into(),
        created_at: 5,
        completed_at: None,
        data: "{}".into(),
    })
    .unwrap();
}

fn dump(q: &PgDriver) -> Vec<CopyRows> {
    CopyTable::ALL
        .iter()
        .map(|t| {
            let mut rows = q.copy_export(*t, None, 2).unwrap();
            // In batches of 2, to walk the keys.
            while let Some(key) = rows.last_key() {
                let more = q.copy_export(*t, Some(&key), 2).unwrap();
                if more.is_empty() {
                    break;
                }
                match (&mut rows, more) {
                    (CopyRows::Tasks(a), CopyRows::Tasks(b)) => a.extend(b),
                    (CopyRows::Logs(a), CopyRows::Logs(b)) => a.extend(b),
                    (CopyRows::Attempts(a), CopyRows::Attempts(b)) => a.extend(b),
                    (CopyRows::Runs(a), CopyRows::Runs(b)) => a.extend(b),
                    (CopyRows::RetryPolicies(a), CopyRows::RetryPolicies(b)) => a.extend(b),
                    (CopyRows::Dependencies(a), CopyRows::Dependencies(b)) => a.extend(b),
                    (CopyRows::Holds(a), CopyRows::Holds(b)) => a.extend(b),
                    (CopyRows::Limits(a), CopyRows::Limits(b)) => a.extend(b),
                    (CopyRows::Schedules(a), CopyRows::Schedules(b)) => a.extend(b),
                    (CopyRows::QueueTimeouts(a), CopyRows::QueueTimeouts(b)) => a.extend(b),
                    _ => unreachable!(),
                }
            }
            if let CopyRows::Runs(rs) = &mut rows {
                rs.iter_mut().for_each(|r| r.ordinal = 0);
            }
            rows
        })
        .collect()
}

#[test]
fn tables_are_written_with_their_ids_once_and_sequences_move_past_them() {
    let (_a, src) = pg_or_skip!();
    let Some(b) = TestDb::new() else { return };
    let dst = b.open();
    fill(&src);
    let rows = dump(&src);
    for batch in &rows {
        let got = dst.copy_import(batch, true).unwrap();
        assert_eq!((got.new, got.same), (batch.len() as u64, 0));
    }
    assert_eq!(dump(&dst), rows);
    // Watchers of the destination are told of each copied task once, as of an enqueued one.
    let (created, held) = super::changes::created_and_held(&b);
    assert_eq!((created.len(), &created), (5, &held));
    for batch in &rows {
        let got = dst.copy_import(batch, true).unwrap();
        assert_eq!((got.new, got.same), (0, batch.len() as u64));
    }
    assert_eq!(super::changes::created_and_held(&b), (created, held));
    assert_eq!(dump(&dst), rows);
    let summary = dst.copy_summary().unwrap();
    assert_eq!(
        (summary.tasks, summary.logs, summary.live_leases),
        (5, rows[1].len() as u64, 1)
    );
    let settings = (summary.limits, summary.schedules, summary.queue_timeouts);
    assert_eq!(
        (summary.dependencies, summary.holds, settings),
        (1, 1, (2, 1, 2))
    );
    // New ids, log ids and lease tokens come after the copied ones.
    let next = dst.enqueue(&NewTask::new("next", "null")).unwrap();
    assert_eq!(next, 6);
    let log = dst.log(next, "info", "x", None).unwrap();
    let CopyRows::Logs(logs) = &rows[1] else {
        panic!()
    };
    assert!(logs.iter().all(|l| l.id < log), "{log}");
    let got = dst.claim(&ClaimRequest::new("w")).unwrap();
    assert_eq!(got.len(), 1);
    let t = &got[0];
    let CopyRows::Tasks(tasks) = &rows[0] else {
        panic!()
    };
    let top = tasks
        .iter()
        .filter_map(|t| t.row.lease_token)
        .max()
        .unwrap();
    assert!(t.lease_token.unwrap() > top);
}

#[test]
fn a_row_held_differently_is_refused_without_a_write() {
    let (_a, src) = pg_or_skip!();
    let Some(b) = TestDb::new() else { return };
    let dst = b.open();
    fill(&src);
    dst.enqueue(&NewTask::new("other", "null")).unwrap();
    let rows = dump(&src);
    let e = dst.copy_import(&rows[0], false).unwrap_err().to_string();
    assert!(e.contains("task 1") && e.contains("type"), "{e}");
    let e = dst.copy_import(&rows[0], true).unwrap_err().to_string();
    assert!(e.contains("task 1"), "{e}");
    assert_eq!(dst.copy_summary().unwrap().tasks, 1);
}

#[test]
fn a_held_task_copied_is_released_when_its_dependency_completes_there() {
    let (_a, src) = pg_or_skip!();
    let Some(b) = TestDb::new() else { return };
    let dst = b.open();
    let dep = src.enqueue(&NewTask::new("dep", "null")).unwrap();
    let mut held = NewTask::new("held", "null");
    held.after = vec![dep];
    let held = src.enqueue(&held).unwrap();
    for batch in dump(&src) {
        dst.copy_import(&batch, true).unwrap();
    }
    let copy = dst.get(held).unwrap();
    assert_eq!(
        (copy.after.clone(), copy.waiting_on.clone()),
        (vec![dep], vec![dep])
    );
    let mut req = ClaimRequest::new("w");
    req.limit = 10;
    let got = dst.claim(&req).unwrap();
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![dep]);
    dst.complete(lease(&got[0]), None).unwrap();
    let got = dst.claim(&req).unwrap();
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![held]);
}

#[test]
fn settings_held_differently_are_refused_and_the_bucket_starts_full() {
    let (_a, src) = pg_or_skip!();
    let Some(b) = TestDb::new() else { return };
    let dst = b.open();
    fill(&src);
    let rows = dump(&src);
    let index = |t: CopyTable| CopyTable::ALL.iter().position(|x| *x == t).unwrap();
    for batch in &rows {
        dst.copy_import(batch, true).unwrap();
    }
    // The bucket is not carried: it starts full on the destination.
    let all = dst.limit_list(Some("default")).unwrap();
    let whole = all.iter().find(|l| l.task_type.is_none()).unwrap();
    assert_eq!(whole.tokens, Some(5.0));
    dst.set_queue_timeout("slow", Some(60_000)).unwrap();
    let e = dst
        .copy_import(&rows[index(CopyTable::QueueTimeouts)], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("default timeout of queue slow"), "{e}");
    dst.schedule_set_paused("nightly", false, 5).unwrap();
    let e = dst
        .copy_import(&rows[index(CopyTable::Schedules)], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains(r#"schedule "nightly""#), "{e}");
    let typed = LimitSpec::new("default", Some("held"), Some(4), None, None).unwrap();
    dst.limit_set(&typed).unwrap();
    let e = dst
        .copy_import(&rows[index(CopyTable::Limits)], false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"limit of queue "default", type "held""#),
        "{e}"
    );
}
