//! Weighted random on PostgreSQL: the distribution of SQLite's race, no starvation, keys drawn
//! again from the clock on every way back to queued, `position` in race order, and a claim that
//! waits on no row another claim holds.

use super::util::pg_or_skip;
use super::{claim, ids, lease, task};
use crate::model::lease::Failure;
use crate::model::new_task::NewTask;
use crate::model::strategy::Strategy;
use crate::model::task::Status;
use std::collections::HashMap;

const W: Strategy = Strategy::WeightedRandom;

fn clock(db: &super::util::TestDb) -> f64 {
    db.client()
        .query_one("SELECT race_clock()", &[])
        .unwrap()
        .get(0)
}

fn wkey(db: &super::util::TestDb, id: i64) -> f64 {
    db.client()
        .query_one("SELECT wkey FROM tasks WHERE id = $1", &[&id])
        .unwrap()
        .get(0)
}

#[test]
fn claims_split_by_inverse_priority_with_the_levels_kept_topped_up() {
    // As tests/test_core_strategies.py on SQLite: 50 tasks at each of priorities 1, 2 and 4,
    // each claimed task replaced by one of its level, so the clock new keys start from matters.
    let (_db, q) = pg_or_skip!();
    let prios = [1i64, 2, 4];
    for p in prios {
        let batch: Vec<NewTask> = (0..50).map(|_| task("t", p)).collect();
        q.enqueue_many(&batch).unwrap();
    }
    let n = 2000;
    let mut counts: HashMap<i64, f64> = HashMap::new();
    for _ in 0..n {
        let [t] = <[_; 1]>::try_from(claim(&q, W, 1, 60_000)).unwrap();
        *counts.entry(t.priority).or_default() += 1.0;
        q.complete(lease(&t), None).unwrap();
        q.enqueue(&task("t", t.priority)).unwrap();
    }
    let total_w: f64 = prios.iter().map(|p| 1.0 / *p as f64).sum();
    let chi2: f64 = prios
        .iter()
        .map(|p| {
            let want = n as f64 * (1.0 / *p as f64) / total_w;
            let got = counts.get(p).copied().unwrap_or(0.0);
            (got - want).powi(2) / want
        })
        .sum();
    // 2 degrees of freedom: P(chi2 > 13.8) = 0.001.
    assert!(chi2 < 13.8, "{counts:?} chi2 {chi2}");
}

#[test]
fn a_low_priority_task_is_not_starved_by_a_stream_of_urgent_ones() {
    // Its key is ~100 x Exp(1) above the clock and each claim moves the clock ~1/10: picked
    // after ~1,000 claims on average, more than 15,000 with probability e^-15.
    let (_db, q) = pg_or_skip!();
    let low = q.enqueue(&task("t", 100)).unwrap();
    q.enqueue_many(&(0..10).map(|_| task("t", 1)).collect::<Vec<_>>())
        .unwrap();
    for _ in 0..15_000 {
        let t = claim(&q, W, 1, 60_000).pop().unwrap();
        q.complete(lease(&t), None).unwrap();
        if t.id == low {
            return;
        }
        q.enqueue(&task("t", 1)).unwrap();
    }
    panic!("the priority-100 task was never claimed in 15,000 claims");
}

#[test]
fn the_clock_is_the_largest_key_won_and_requeued_tasks_draw_from_it() {
    let (db, q) = pg_or_skip!();
    assert_eq!(clock(&db), 0.0, "no claim yet");
    let all = q
        .enqueue_many(&(0..20).map(|i| task("t", 1 + i % 5)).collect::<Vec<_>>())
        .unwrap();
    let mut keys: Vec<(f64, i64)> = all.iter().map(|id| (wkey(&db, *id), *id)).collect();
    keys.sort_by(|a, b| a.0.total_cmp(&b.0));
    // A batch takes the smallest keys, in key order; the clock is the largest of them.
    let got = claim(&q, W, 5, 60_000);
    let want: Vec<i64> = keys[..5].iter().map(|k| k.1).collect();
    assert_eq!(ids(&got), want);
    assert_eq!(clock(&db), keys[4].0);
    // A FIFO claim does not move the race's clock.
    let fifo = claim(&q, Strategy::Fifo, 1, 60_000).pop().unwrap();
    assert_eq!(clock(&db), keys[4].0);
    // Each way back to queued draws a fresh key at or above the clock: a failure that
    // retries, retry() after a cancel, and a new priority.
    let c = clock(&db);
    q.fail_attempt(&Failure::new(lease(&got[0]), "boom", true))
        .unwrap();
    assert_eq!(q.get(got[0].id).unwrap().status, Status::Queued);
    assert!(wkey(&db, got[0].id) >= c);
    q.cancel(got[1].id).unwrap();
    q.retry(got[1].id).unwrap();
    assert!(wkey(&db, got[1].id) >= c);
    // A task still queued (the FIFO claim above took the oldest, which may sit anywhere in key
    // order; a running task draws no key on a new priority).
    let queued = keys[5..]
        .iter()
        .map(|k| k.1)
        .find(|id| *id != fifo.id)
        .unwrap();
    let before = wkey(&db, queued);
    q.set_priority(queued, 1000).unwrap();
    assert_ne!(wkey(&db, queued), before, "a new priority draws a new key");
    assert!(wkey(&db, queued) >= c);
    // Completing or renewing changes no key; the clock never goes back.
    q.complete(lease(&fifo), None).unwrap();
    assert_eq!(clock(&db), c);
    // A task queued without a key (not through enqueue) gets one from the clock.
    db.client()
        .execute(
            "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, max_attempts,
                                run_after, created_at, updated_at)
             SELECT lane_id, type, queue, payload, 3, 'queued', 1, 0, 0, 0 FROM tasks LIMIT 1",
            &[],
        )
        .unwrap();
    let n: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM tasks WHERE wkey < $1 AND priority = 3 AND created_at = 0",
            &[&c],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn position_counts_the_tasks_the_race_takes_first() {
    let (_db, q) = pg_or_skip!();
    let mut ids_x = Vec::new();
    for i in 0..30usize {
        let mut t = task(["x", "y", "z"][i % 3], [5, 1, 9, 3][i % 4]);
        if i % 4 == 0 {
            t.requires = serde_json::json!({"gpu": true}).as_object().cloned();
        }
        ids_x.push(q.enqueue(&t).unwrap());
        let mut other = task("x", 1);
        other.queue = "other-queue".into(); // another queue's race keys are never ahead
        q.enqueue(&other).unwrap();
    }
    let expected: HashMap<i64, i64> = ids_x
        .iter()
        .map(|&id| (id, q.position(id, W).unwrap().unwrap()))
        .collect();
    let mut req = crate::model::claim::ClaimRequest::new("w");
    req.strategy = W;
    req.filter.queues = Some(vec!["default".into()]);
    req.filter.capabilities = serde_json::json!({"gpu": true}).as_object().cloned();
    for n in 0..30 {
        let t = q.claim(&req).unwrap().pop().unwrap();
        assert_eq!(expected[&t.id], n, "task {} came out after {n}", t.id);
        assert_eq!(q.position(t.id, W).unwrap(), None);
    }
}

#[test]
fn a_weighted_claim_waits_on_no_row_an_open_claim_holds() {
    // One claim left open in its transaction; another claim and an enqueue (which reads the
    // clock) go through meanwhile. Were the clock a row every claim updates, the second claim
    // would wait for the first's commit: lock_timeout turns that wait into an error.
    let (db, q) = pg_or_skip!();
    q.enqueue_many(&(0..10).map(|i| task("t", 1 + i)).collect::<Vec<_>>())
        .unwrap();
    let lanes: Vec<i64> = db
        .client()
        .query_one("SELECT array_agg(id) FROM lanes", &[])
        .unwrap()
        .get(0);
    let (mut a, mut b) = (db.client(), db.client());
    let sql = crate::storage::postgres::claim::sql_of(W);
    let run = |c: &mut postgres::Transaction, worker: &str| -> Vec<i64> {
        c.batch_execute("SET LOCAL lock_timeout = '5s'").unwrap();
        let now: i64 = c.query_one("SELECT now_ms()", &[]).unwrap().get(0);
        c.query(sql, &[&lanes, &now, &2i64, &worker, &(now + 60_000)])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let mut ta = a.transaction().unwrap();
    let first = run(&mut ta, "a");
    let mut tb = b.transaction().unwrap();
    let second = run(&mut tb, "b");
    assert_eq!((first.len(), second.len()), (2, 2));
    assert!(first.iter().all(|id| !second.contains(id)));
    tb.commit().unwrap();
    q.enqueue(&task("t", 1)).unwrap();
    ta.commit().unwrap();
    assert_eq!(q.stats(None).unwrap().counts["running"], 4);
}

#[test]
fn the_weighted_index_comes_with_the_first_weighted_claim_of_any_process() {
    let (db, q) = pg_or_skip!();
    let has_index = || -> bool {
        db.client()
            .query_one(
                "SELECT to_regclass('tasks_claim_weighted') IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0)
    };
    q.enqueue_many(&(0..40).map(|i| task("t", 1 + i % 3)).collect::<Vec<_>>())
        .unwrap();
    claim(&q, Strategy::Priority, 1, 60_000);
    assert!(!has_index(), "no weighted claim yet: no index to keep");
    // Several handles' first weighted claims at once: one creates it, none fails.
    let handles: Vec<_> = (0..4).map(|_| db.open()).collect();
    let got: Vec<usize> = std::thread::scope(|s| {
        let runs: Vec<_> = handles
            .iter()
            .map(|h| s.spawn(move || claim(h, W, 3, 60_000).len()))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(got, vec![3; 4]);
    assert!(has_index());
    // A handle that saw no weighted claim keeps it up to date like any index.
    let late = q.enqueue(&task("t", 1)).unwrap();
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM tasks WHERE status = 'queued'", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 40 - 1 - 12 + 1);
    let all = ids(&claim(&handles[0], W, 100, 60_000));
    assert!(all.contains(&late) && all.len() == n as usize);
}
