//! Acknowledgements through the engine's rules (complete, fail with backoff, the dead letter,
//! retry), renew and fencing, the rescue of expired leases, cancel, stats, list and get.

use super::util::pg_or_skip;
use super::{claim, ids, lease, task};
use crate::model::claim::ClaimRequest;
use crate::model::error::Error;
use crate::model::lease::{FailOutcome, Failure, Lease};
use crate::model::listing::ListFilter;
use crate::model::retry::RetryOverrides;
use crate::model::strategy::Strategy;
use crate::model::task::Status;

fn no_wait() -> Option<RetryOverrides> {
    Some(RetryOverrides {
        base: Some(0.0),
        jitter: Some(0.0),
        ..Default::default()
    })
}

#[test]
fn complete_then_fail_with_backoff_then_dead_letter_then_retry() {
    let (_db, q) = pg_or_skip!();
    let done = q.enqueue(&task("x", 1)).unwrap();
    let t = claim(&q, Strategy::Priority, 1, 60_000).remove(0);
    q.complete(lease(&t), Some(r#"{"ok": 1}"#)).unwrap();
    let row = q.get(done).unwrap();
    assert_eq!(
        (row.status, row.result.as_deref()),
        (Status::Completed, Some(r#"{"ok": 1}"#))
    );
    assert_eq!((row.lease_token, row.progress), (None, Some(100.0)));

    // The queue's policy (30 s, no jitter) under the engine's rules.
    q.set_retry_policy(
        "default",
        RetryOverrides {
            base: Some(30.0),
            jitter: Some(0.0),
            ..Default::default()
        },
    )
    .unwrap();
    let mut t = task("x", 1);
    t.max_attempts = 2;
    let id = q.enqueue(&t).unwrap();
    let a = claim(&q, Strategy::Priority, 1, 60_000).remove(0);
    let mut f = Failure::new(lease(&a), "boom", true);
    f.traceback = Some("Traceback: line 1\n".into());
    let FailOutcome::Retrying { run_after } = q.fail_attempt(&f).unwrap() else {
        panic!("should retry")
    };
    let row = q.get(id).unwrap();
    assert_eq!(
        (row.status, row.error.as_deref()),
        (Status::Queued, Some("boom"))
    );
    assert_eq!(row.traceback.as_deref(), Some("Traceback: line 1\n"));
    assert_eq!(run_after - row.updated_at, 30_000, "the queue's backoff");
    assert!(
        claim(&q, Strategy::Priority, 1, 60_000).is_empty(),
        "not before its backoff"
    );

    // Due now: the second attempt fails too, and it was the last.
    _db.client()
        .execute("UPDATE tasks SET run_after = 0 WHERE id = $1", &[&id])
        .unwrap();
    let b = claim(&q, Strategy::Priority, 1, 60_000).remove(0);
    assert_eq!(b.attempts, 2);
    assert_eq!(
        q.fail_attempt(&Failure::new(lease(&b), "again", true))
            .unwrap(),
        FailOutcome::DeadLettered
    );
    assert_eq!(q.get(id).unwrap().status, Status::Failed);
    let attempts = q.attempts(id).unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.seq, a.number, a.outcome.as_str(), a.error.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, 1, "failed", "boom"), (2, 2, "failed", "again")]
    );
    let logs: Vec<String> = q
        .logs(id, 10)
        .unwrap()
        .into_iter()
        .map(|l| l.level)
        .collect();
    assert_eq!(logs, ["warning", "error"]);

    // retry(): back to queued with fresh attempts; a failure without retry is a dead letter.
    assert!(q.retry(id).unwrap());
    assert!(!q.retry(id).unwrap(), "only a finished task goes back");
    let row = q.get(id).unwrap();
    assert_eq!((row.status, row.attempts), (Status::Queued, 0));
    let c = claim(&q, Strategy::Priority, 1, 60_000).remove(0);
    let out = q
        .fail_many(&[Failure::new(lease(&c), "fatal", false)])
        .unwrap();
    assert_eq!(out, vec![Some(FailOutcome::DeadLettered)]);
}

#[test]
fn renew_extends_and_a_stale_lease_changes_nothing() {
    let (_db, q) = pg_or_skip!();
    let mut t = task("x", 1);
    t.retry = no_wait();
    let id = q.enqueue(&t).unwrap();
    let first = claim(&q, Strategy::Fifo, 1, 60_000).remove(0);
    let until = q.renew(lease(&first), 120_000).unwrap();
    assert!(until >= first.lease_until.unwrap() + 59_000, "{until}");
    q.progress(lease(&first), Some(40.0), Some("half"), None)
        .unwrap();
    assert_eq!(q.get(id).unwrap().step.as_deref(), Some("half"));

    // The lease is lost (ended and taken over by another claim): the old holder's
    // acknowledgements are refused with what the row says, and change nothing.
    _db.client()
        .execute("UPDATE tasks SET lease_until = 0 WHERE id = $1", &[&id])
        .unwrap();
    let mut req = ClaimRequest::new("w2");
    req.strategy = Strategy::Fifo;
    let second = q.claim(&req).unwrap().remove(0);
    assert_eq!((second.id, second.attempts), (id, 2));
    assert_ne!(second.lease_token, first.lease_token);
    let stale = q.complete(lease(&first), None).unwrap_err();
    assert!(
        matches!(&stale, Error::NotHeld { status, holder: Some(h), .. } if status == "running" && h == "w2"),
        "{stale:?}"
    );
    assert!(matches!(
        q.renew(lease(&first), 1000),
        Err(Error::NotHeld { .. })
    ));
    assert!(matches!(
        q.fail_attempt(&Failure::new(lease(&first), "late", true)),
        Err(Error::NotHeld { .. })
    ));
    assert_eq!(
        q.complete_many(&[(lease(&first), None), (lease(&second), None)])
            .unwrap(),
        vec![false, true]
    );
    let done = q
        .progress(lease(&second), Some(1.0), None, None)
        .unwrap_err();
    assert!(
        matches!(&done, Error::NotHeld { status, holder: None, .. } if status == "completed"),
        "{done:?}"
    );
    let gone = Lease {
        task_id: id + 1000,
        token: 1,
    };
    assert!(matches!(
        q.complete(gone, None),
        Err(Error::TaskNotFound(_))
    ));
}

#[test]
fn expired_leases_are_rescued_by_sweep_and_by_claims() {
    let (_db, q) = pg_or_skip!();
    let mut t = task("x", 1);
    t.max_attempts = 2;
    let id = q.enqueue(&t).unwrap();
    let a = claim(&q, Strategy::Priority, 1, 1).remove(0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(q.sweep().unwrap(), 1);
    let row = q.get(id).unwrap();
    assert_eq!(
        (row.status, row.attempts, row.lease_token),
        (Status::Queued, 1, None)
    );
    let records = q.attempts(id).unwrap();
    assert_eq!(
        (records[0].outcome.as_str(), records[0].worker.as_deref()),
        ("lease_expired", Some("w1"))
    );
    assert!(matches!(
        q.complete(lease(&a), None),
        Err(Error::NotHeld { .. })
    ));

    // The last attempt expires inside a claim's own rescue: the dead letter.
    claim(&q, Strategy::Priority, 1, 1).remove(0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(claim(&q, Strategy::Priority, 1, 60_000).is_empty());
    assert_eq!(q.get(id).unwrap().status, Status::Failed);
    assert_eq!(q.sweep().unwrap(), 0);
}

#[test]
fn release_cancel_and_settle() {
    let (_db, q) = pg_or_skip!();
    let ids_all = q
        .enqueue_many(&(0..5).map(|_| task("x", 500)).collect::<Vec<_>>())
        .unwrap();
    let a = claim(&q, Strategy::Fifo, 1, 60_000).remove(0);
    assert!(q.release(lease(&a)).unwrap());
    assert!(!q.release(lease(&a)).unwrap());
    assert_eq!(
        q.get(a.id).unwrap().attempts,
        0,
        "a hand-back is not an attempt"
    );

    // Cancel a queued and a running task; a finished one stays as it is.
    assert!(q.cancel(ids_all[4]).unwrap());
    let running = claim(&q, Strategy::Fifo, 1, 60_000).remove(0);
    assert!(q.cancel(running.id).unwrap());
    assert!(!q.cancel(running.id).unwrap());
    assert!(matches!(
        q.complete(lease(&running), None),
        Err(Error::NotHeld { .. })
    ));
    assert!(matches!(
        q.cancel(ids_all[4] + 1000),
        Err(Error::TaskNotFound(_))
    ));
    assert!(q.set_priority(ids_all[3], 1).unwrap());
    assert!(!q.set_priority(running.id, 1).unwrap());

    let mut req = ClaimRequest::new("w");
    req.limit = 2;
    req.strategy = Strategy::Priority;
    let first = q.settle(&[], &[], Some(&req)).unwrap().claimed;
    assert_eq!(ids(&first)[0], ids_all[3], "the raised priority first");
    let out = q
        .settle(
            &[(lease(&first[0]), Some("1".into()))],
            &[Failure::new(lease(&first[1]), "x", false)],
            Some(&req),
        )
        .unwrap();
    assert_eq!(
        (out.completed, out.failed),
        (vec![true], vec![Some(FailOutcome::DeadLettered)])
    );
    assert_eq!(out.claimed.len(), 1);
    let stats = q.stats(None).unwrap();
    let counts: Vec<i64> = ["queued", "running", "completed", "failed", "cancelled"]
        .iter()
        .map(|s| stats.counts[s])
        .collect();
    assert_eq!(counts, vec![0, 1, 1, 1, 2]);
    assert_eq!(stats.total, 5);
}

#[test]
fn stats_list_and_get() {
    let (_db, q) = pg_or_skip!();
    let mut tasks: Vec<_> = (0..6)
        .map(|i| task(if i % 2 == 0 { "a" } else { "b" }, 1))
        .collect();
    tasks[5].queue = "mail".into();
    let all = q.enqueue_many(&tasks).unwrap();
    let running = claim(&q, Strategy::Fifo, 2, 60_000);
    assert_eq!(ids(&running), all[..2].to_vec());
    let mail = q.stats(Some("mail")).unwrap();
    assert_eq!((mail.counts["queued"], mail.total), (1, 1));
    let stats = q.stats(None).unwrap();
    assert_eq!(
        (
            stats.counts["queued"],
            stats.counts["running"],
            stats.scheduled
        ),
        (4, 2, 0)
    );
    assert!(stats.oldest_queued_age_s.is_some());

    let list = |f: ListFilter| ids(&q.list(&f).unwrap());
    let base = ListFilter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(list(base.clone()), all);
    assert_eq!(
        list(ListFilter {
            status: Some(Status::Running),
            ..base.clone()
        }),
        all[..2].to_vec()
    );
    assert_eq!(
        list(ListFilter {
            task_type: Some("a".into()),
            ..base.clone()
        }),
        vec![all[0], all[2], all[4]]
    );
    assert_eq!(
        list(ListFilter {
            queue: Some("mail".into()),
            ..base.clone()
        }),
        vec![all[5]]
    );
    let page = ListFilter {
        limit: 2,
        after_id: Some(all[3]),
        descending: true,
        ..base.clone()
    };
    assert_eq!(list(page), vec![all[2], all[1]]);

    let row = q.get(all[0]).unwrap();
    assert_eq!(
        (row.task_type.as_str(), row.status, row.traceback),
        ("a", Status::Running, None)
    );
    assert!(matches!(q.get(all[5] + 1000), Err(Error::TaskNotFound(_))));
    let log_id = q.log(all[0], "INFO", "hello", Some("{}")).unwrap();
    let logs = q.logs(all[0], 10).unwrap();
    assert_eq!((logs[0].id, logs[0].message.as_str()), (log_id, "hello"));
}

#[test]
fn complete_many_takes_each_lease_once_and_keeps_each_result() {
    let (_db, q) = pg_or_skip!();
    q.enqueue_many(&[task("a", 1), task("b", 2), task("c", 3)])
        .unwrap();
    let got = claim(&q, Strategy::Priority, 3, 60_000);
    let (a, b, c) = (lease(&got[0]), lease(&got[1]), lease(&got[2]));
    let done = q
        .complete_many(&[
            (a, Some("1".into())),
            (a, Some("2".into())),
            (b, None),
            (c, Some("[3]".into())),
        ])
        .unwrap();
    // The repeat of `a` finds its lease gone, as if the items had been applied in turn.
    assert_eq!(done, vec![true, false, true, true]);
    let results: Vec<Option<String>> = [a, b, c]
        .iter()
        .map(|l| q.get(l.task_id).unwrap().result)
        .collect();
    assert_eq!(
        results,
        vec![Some("1".into()), Some("null".into()), Some("[3]".into())]
    );
    assert_eq!(q.complete_many(&[]).unwrap(), Vec::<bool>::new());
}
