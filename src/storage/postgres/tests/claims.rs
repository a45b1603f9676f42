//! Enqueue and claim: ids, delays, idempotency keys, each strategy's order across lanes,
//! routing, and concurrent claimers on separate connections.

use super::util::pg_or_skip;
use super::{claim, ids, lease, task};
use crate::model::claim::ClaimRequest;
use crate::model::new_task::NewTask;
use crate::model::strategy::{Candidate, Strategy};
use crate::model::task::{Status, TaskRow};
use serde_json::json;
use std::collections::HashSet;

#[test]
fn enqueue_one_many_delayed_and_keyed() {
    let (_db, q) = pg_or_skip!();
    let a = q.enqueue(&task("a", 100)).unwrap();
    let many: Vec<NewTask> = (0..50).map(|i| task(&format!("t{}", i % 3), 5)).collect();
    let ids_many = q.enqueue_many(&many).unwrap();
    assert_eq!(ids_many.len(), 50);
    assert!(ids_many.iter().all(|id| *id > a));
    assert_eq!(
        ids_many.iter().collect::<HashSet<_>>().len(),
        50,
        "distinct ids"
    );
    for (id, t) in ids_many.iter().zip(&many) {
        let row = q.get(*id).unwrap();
        assert_eq!(
            (row.task_type.as_str(), row.priority),
            (t.task_type.as_str(), 5)
        );
        assert_eq!(row.status, Status::Queued);
    }

    let mut delayed = task("d", 100);
    delayed.delay_ms = Some(60_000);
    let d = q.enqueue(&delayed).unwrap();
    let row = q.get(d).unwrap();
    assert!(
        (59_000..=61_000).contains(&(row.run_after - row.created_at)),
        "{row:?}"
    );
    let stats = q.stats(None).unwrap();
    assert_eq!((stats.counts["queued"], stats.scheduled), (52, 1));

    // A key yields the task that has it, in the table or earlier in the same batch.
    let mut keyed = task("k", 100);
    keyed.idempotency_key = Some("order-1".into());
    let k = q.enqueue(&keyed).unwrap();
    let mut other = keyed.clone();
    other.idempotency_key = Some("order-2".into());
    let again = q
        .enqueue_many(&[keyed.clone(), task("k", 100), other.clone(), other])
        .unwrap();
    assert_eq!(again[0], k);
    assert!(
        again[1] != k && again[2] != k && again[2] == again[3],
        "{again:?}"
    );
    assert_eq!(
        q.find_by_idempotency_key("order-2").unwrap().unwrap().id,
        again[2]
    );
    assert_eq!(q.stats(None).unwrap().total, 52 + 1 + 2);
}

#[test]
fn payload_and_requires_keep_exactly_what_was_written() {
    // text, not jsonb: key order, spacing and number forms survive the round trip.
    let (_db, q) = pg_or_skip!();
    let payload =
        r#"{"b": 1, "a": [1.0, 1e3, 0.1000000000000000055511151231257827], "é": "\u00e9"}"#;
    let mut t = NewTask::new("x", payload);
    t.requires = json!({"zone": "eu", "gpu": true}).as_object().cloned();
    let id = q.enqueue(&t).unwrap();
    let row = q.get(id).unwrap();
    assert_eq!(row.payload, payload);
    assert_eq!(row.requires.as_deref(), Some(r#"{"zone":"eu","gpu":true}"#));
}

#[test]
fn each_strategy_takes_its_order_across_lanes() {
    let (_db, q) = pg_or_skip!();
    let mut tasks = Vec::new();
    for i in 0..12i64 {
        let mut t = task(&format!("t{}", i % 3), 1 + (i * 7) % 5);
        // Due times apart from id order, so FIFO and LIFO differ from ids.
        t.run_after = Some(1_000 + (i * 5) % 11);
        tasks.push(t);
    }
    let all = q.enqueue_many(&tasks).unwrap();
    let cands: Vec<Candidate> = all
        .iter()
        .zip(&tasks)
        .map(|(id, t)| Candidate {
            id: *id,
            priority: t.priority,
            run_after: t.run_after.unwrap(),
            wkey: 0.0,
        })
        .collect();
    for s in [
        Strategy::Priority,
        Strategy::Fifo,
        Strategy::Lifo,
        Strategy::WeightedRandom,
    ] {
        let mut want = cands.clone();
        for c in want.iter_mut() {
            c.wkey = wkey(&_db, c.id);
        }
        want.sort_by(|a, b| s.compare(a, b));
        let want: Vec<i64> = want.iter().map(|c| c.id).collect();
        // One at a time and in batches: the same order.
        let mut got = ids(&claim(&q, s, 1, 60_000));
        got.extend(ids(&claim(&q, s, 4, 60_000)));
        got.extend(ids(&claim(&q, s, 100, 60_000)));
        assert_eq!(got, want, "{s:?}");
        assert!(claim(&q, s, 5, 60_000).is_empty());
        // Back to queued for the next strategy.
        for id in &all {
            q.cancel(*id).unwrap();
            q.retry(*id).unwrap();
        }
        let mut c = _db.client();
        for (id, t) in all.iter().zip(&tasks) {
            c.execute(
                "UPDATE tasks SET run_after = $2 WHERE id = $1",
                &[id, &t.run_after.unwrap()],
            )
            .unwrap();
        }
    }
}

/// A task's race key as its row holds it.
fn wkey(db: &super::util::TestDb, id: i64) -> f64 {
    db.client()
        .query_one("SELECT wkey FROM tasks WHERE id = $1", &[&id])
        .unwrap()
        .get(0)
}

#[test]
fn delayed_tasks_wait_and_claims_set_the_lease() {
    let (_db, q) = pg_or_skip!();
    let mut t = task("x", 1);
    t.delay_ms = Some(60_000);
    q.enqueue(&t).unwrap();
    let due = q.enqueue(&task("x", 1000)).unwrap();
    let got = claim(&q, Strategy::Priority, 10, 30_000);
    assert_eq!(ids(&got), vec![due], "the delayed head is stepped over");
    let row = &got[0];
    assert_eq!((row.status, row.attempts), (Status::Running, 1));
    assert_eq!(row.locked_by.as_deref(), Some("w1"));
    let started = row.started_at.unwrap();
    assert_eq!(row.lease_until, Some(started + 30_000));
    assert!(claim(&q, Strategy::Fifo, 1, 1000).is_empty());
}

#[test]
fn routing_by_queue_type_and_capabilities() {
    let (_db, q) = pg_or_skip!();
    let a = q.enqueue(&task("a", 100)).unwrap();
    let mut t = task("b", 100);
    t.queue = "other".into();
    let b = q.enqueue(&t).unwrap();
    let mut t = task("render", 100);
    t.requires = json!({"gpu": true}).as_object().cloned();
    let gpu = q.enqueue(&t).unwrap();
    let mut req = ClaimRequest::new("w");
    req.limit = 10;
    req.filter.types = Some(vec!["zzz".into()]);
    assert!(q.claim(&req).unwrap().is_empty());
    req.filter.types = None;
    req.filter.queues = Some(vec!["other".into()]);
    assert_eq!(ids(&q.claim(&req).unwrap()), vec![b]);
    req.filter.queues = None;
    assert_eq!(
        ids(&q.claim(&req).unwrap()),
        vec![a],
        "no capabilities, no gpu task"
    );
    req.filter.capabilities = json!({"gpu": true, "mem": 64}).as_object().cloned();
    assert_eq!(ids(&q.claim(&req).unwrap()), vec![gpu]);
}

#[test]
fn concurrent_claimers_on_separate_connections_never_share_a_task() {
    let (db, q) = pg_or_skip!();
    let n = 3000;
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| task(&format!("t{}", i % 4), 1 + i % 7))
        .collect();
    q.enqueue_many(&tasks).unwrap();
    // Two handles, each with its own pool, two threads on each.
    let handles = [db.open(), db.open()];
    let taken: Vec<Vec<i64>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let h = &handles[i % 2];
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut req = ClaimRequest::new(format!("w{i}"));
                    req.limit = 1 + i * 3;
                    req.strategy = [Strategy::Priority, Strategy::Fifo][i % 2];
                    loop {
                        let got = h.claim(&req).unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        let acks: Vec<_> = got.iter().map(|t| (lease(t), None)).collect();
                        assert!(h.complete_many(&acks).unwrap().iter().all(|ok| *ok));
                        mine.extend(ids(&got));
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all: Vec<i64> = taken.iter().flatten().copied().collect();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        n as usize,
        "every task once: {:?}",
        taken.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(distinct.len(), n as usize);
    assert!(
        taken.iter().filter(|t| !t.is_empty()).count() >= 2,
        "both sides claimed"
    );
    assert_eq!(q.stats(None).unwrap().counts["completed"], n);
}

/// A batch of COPY_FROM tasks or more without keys goes in by binary COPY, one with a key by the
/// INSERT: both must write the same rows, so each task is enqueued both ways and compared.
#[test]
fn a_large_batch_goes_in_by_copy_writing_what_the_insert_writes() {
    use crate::model::retry::RetryOverrides;
    let (db, q) = pg_or_skip!();
    let batch: Vec<NewTask> = (0..40)
        .map(|i| {
            let mut t = NewTask::new(
                format!("t{}", i % 3),
                format!(r#"{{"i": {i}, "s": "žluť 1.0"}}"#),
            );
            t.queue = ["a", "b"][i % 2].into();
            t.priority = 1 + (i as i64 * 37) % 1000;
            t.max_attempts = 1 + i as i64 % 4;
            match i % 3 {
                0 => t.delay_ms = Some(60_000),
                1 => t.run_after = Some(1_000 + i as i64),
                _ => {}
            }
            if i % 4 == 0 {
                t.requires = json!({"gpu": true, "n": i}).as_object().cloned();
                t.timeout_ms = Some(1_000 * (i as i64 + 1));
                t.retry = Some(RetryOverrides {
                    base: Some(0.5),
                    ..RetryOverrides::default()
                });
            }
            t
        })
        .collect();
    let copied = q.enqueue_many(&batch).unwrap();
    let mut inserted = Vec::new();
    for t in &batch {
        let mut keyed = t.clone();
        keyed.idempotency_key = Some(format!("k{}", inserted.len()));
        // A key sends it through the INSERT (COPY cannot skip a key that exists).
        inserted.push(q.enqueue_many(&[keyed]).unwrap()[0]);
    }
    let shape = |r: TaskRow| {
        (
            r.task_type,
            r.queue,
            r.payload,
            r.priority,
            r.status,
            r.max_attempts,
            r.requires,
            r.timeout_ms,
            r.run_after
                - if r.run_after > 1_000_000 {
                    r.created_at
                } else {
                    0
                },
        )
    };
    for (c, i) in copied.iter().zip(&inserted) {
        let (c, i) = (q.get(*c).unwrap(), q.get(*i).unwrap());
        assert_eq!(c.idempotency_key, None);
        assert_eq!(shape(c), shape(i));
    }
    // Retry overrides and race keys are not on TaskRow: read them from the table.
    let mut client = db.client();
    let rows = client
        .query(
            &format!(
                "SELECT retry_policy, wkey, (SELECT race_clock()) FROM {}.tasks WHERE id = ANY($1) ORDER BY id",
                db.schema
            ),
            &[&copied],
        )
        .unwrap();
    let policies: Vec<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(policies.iter().filter(|p| p.is_some()).count(), 10);
    assert!(rows
        .iter()
        .all(|r| r.get::<_, f64>(1) >= r.get::<_, f64>(2)));
    // The copied tasks are claimable as the inserted ones are: due, and requiring nothing of a
    // worker without capabilities.
    let got: HashSet<i64> = ids(&claim(&q, Strategy::WeightedRandom, 200, 60_000))
        .into_iter()
        .collect();
    let claimed = |batch: &[i64]| -> Vec<usize> {
        (0..batch.len())
            .filter(|&i| got.contains(&batch[i]))
            .collect()
    };
    let expected: Vec<usize> = (0..40).filter(|i| i % 3 != 0 && i % 4 != 0).collect();
    assert_eq!(claimed(&copied), expected);
    assert_eq!(claimed(&inserted), expected);
}
