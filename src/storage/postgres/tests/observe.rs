//! Workers and heartbeats, queue depths, and the purge of old finished tasks.

use super::util::pg_or_skip;
use super::{claim, lease, task};
use crate::model::error::Error;
use crate::model::observe::Heartbeat;
use crate::model::strategy::Strategy;
use crate::model::task::Status;

#[test]
fn heartbeats_keep_what_they_are_not_told_and_workers_can_be_removed() {
    let (_db, q) = pg_or_skip!();
    let mut hb = Heartbeat {
        worker_id: "w1".into(),
        host: Some("h1".into()),
        pid: Some(42),
        capabilities: Some(r#"{"gpu": true}"#.into()),
        queues: None,
        tasks_done: None,
        concurrency: None,
    };
    q.heartbeat(&hb).unwrap();
    hb.host = None;
    hb.tasks_done = Some(7);
    q.heartbeat(&hb).unwrap();
    let w = q.workers().unwrap().remove(0);
    assert_eq!(
        (w.id.as_str(), w.host.as_deref(), w.pid, w.tasks_done),
        ("w1", Some("h1"), Some(42), 7)
    );
    assert!(!w.stale && w.last_heartbeat >= w.started_at);
    _db.client()
        .execute("UPDATE workers SET last_heartbeat = 0", &[])
        .unwrap();
    assert!(q.workers().unwrap()[0].stale);
    assert!(q.remove_worker("w1").unwrap());
    assert!(!q.remove_worker("w1").unwrap());
}

#[test]
fn queue_depths_count_queued_and_running_per_queue() {
    let (_db, q) = pg_or_skip!();
    let mut tasks: Vec<_> = (0..5).map(|_| task("x", 1)).collect();
    tasks[4].queue = "mail".into();
    q.enqueue_many(&tasks).unwrap();
    claim(&q, Strategy::Fifo, 2, 60_000);
    let d = q
        .queue_depths(&["default".into(), "mail".into(), "none".into()])
        .unwrap();
    assert_eq!(d["default"], (2, 2));
    assert_eq!(d["mail"], (1, 0));
    assert_eq!(d["none"], (0, 0));
}

#[test]
fn purge_deletes_old_finished_tasks_in_batches() {
    let (db, q) = pg_or_skip!();
    let ids = q
        .enqueue_many(&(0..7).map(|_| task("x", 1)).collect::<Vec<_>>())
        .unwrap();
    for t in claim(&q, Strategy::Fifo, 5, 60_000) {
        q.complete(lease(&t), None).unwrap();
    }
    q.log(ids[0], "info", "kept until purged", None).unwrap();
    q.cancel(ids[5]).unwrap();
    // Four of the five completed tasks finished long ago.
    db.client()
        .execute(
            "UPDATE tasks SET finished_at = 1000 WHERE id = ANY($1)",
            &[&ids[..4].to_vec()],
        )
        .unwrap();
    let mut seen = Vec::new();
    let n = q
        .purge_with(
            60_000,
            &[Status::Completed, Status::Cancelled],
            3,
            &mut |done, total| {
                seen.push((done, total));
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(seen, vec![(0, 4), (3, 4), (4, 4)]);
    assert!(matches!(q.get(ids[0]), Err(Error::TaskNotFound(_))));
    assert_eq!(
        q.get(ids[4]).unwrap().status,
        Status::Completed,
        "finished just now: kept"
    );
    assert_eq!(q.get(ids[5]).unwrap().status, Status::Cancelled);
    // Ids are never handed out again, even after the newest task went.
    let next = q.enqueue(&task("x", 1)).unwrap();
    assert!(next > ids[6], "{next}");
}

/// Each strategy's position equals the number of claims, by a worker taking every type of the
/// queue, before the task comes out: types interleave, so positions count across them.
#[test]
fn position_matches_the_claim_order() {
    let (db, q) = pg_or_skip!();
    for strategy in [Strategy::Priority, Strategy::Fifo, Strategy::Lifo] {
        let mut ids = Vec::new();
        for i in 0..24 {
            let mut t = task(["x", "y", "z"][i % 3], [5, 1, 9, 3][i % 4]);
            if i % 4 == 0 {
                t.requires = Some(serde_json::from_str(r#"{"gpu": true}"#).unwrap());
            }
            ids.push(q.enqueue(&t).unwrap());
            let mut other = task("x", 1);
            other.queue = "other-queue".into(); // another queue's tasks are never ahead
            q.enqueue(&other).unwrap();
        }
        let expected: Vec<(i64, i64)> = ids
            .iter()
            .map(|&id| (id, q.position(id, strategy).unwrap().unwrap()))
            .collect();
        let mut req = crate::model::claim::ClaimRequest::new("w");
        req.strategy = strategy;
        req.filter.queues = Some(vec!["default".into()]);
        req.filter.capabilities = Some(serde_json::from_str(r#"{"gpu": true}"#).unwrap());
        for n in 0..24 {
            let t = q.claim(&req).unwrap().pop().unwrap();
            let (_, pos) = expected.iter().find(|(id, _)| *id == t.id).unwrap();
            assert_eq!(*pos, n, "{strategy:?}: task {} came out after {n}", t.id);
            assert_eq!(q.position(t.id, strategy).unwrap(), None);
        }
        db.client().batch_execute("DELETE FROM tasks").unwrap();
    }
    let mut later = task("x", 1);
    later.delay_ms = Some(3_600_000);
    let later = q.enqueue(&later).unwrap();
    let now = q.enqueue(&task("x", 50)).unwrap();
    assert_eq!(q.position(now, Strategy::Priority).unwrap(), Some(0));
    assert_eq!(q.position(later, Strategy::Priority).unwrap(), Some(0));
    assert_eq!(q.position(later, Strategy::Fifo).unwrap(), Some(1));
    assert!(matches!(
        q.position(now + 999, Strategy::Fifo),
        Err(Error::TaskNotFound(_))
    ));
}

#[test]
fn metrics_count_depths_outcomes_and_retries() {
    let (_db, q) = pg_or_skip!();
    let mut tasks: Vec<_> = (0..6).map(|_| task("a", 1)).collect();
    tasks[5].queue = "mail".into();
    tasks[4].task_type = "b".into();
    q.enqueue_many(&tasks).unwrap();
    let got = claim(&q, Strategy::Fifo, 3, 60_000);
    q.complete(lease(&got[0]), None).unwrap();
    let f = crate::model::lease::Failure::new(lease(&got[1]), "boom", true);
    q.fail_attempt(&f).unwrap();
    let m = q.metrics_over(60_000).unwrap();
    assert_eq!(
        (m.depth["queued"], m.depth["running"], m.depth["completed"]),
        (4, 1, 1)
    );
    assert_eq!(m.retrying, 1, "the failed attempt waits to retry");
    let default_a = &m.by_queue_and_type["default"]["a"];
    assert_eq!(
        (default_a.queued, default_a.running, default_a.retrying),
        (2, 1, 1)
    );
    assert_eq!(m.by_queue["mail"].queued, 1);
    assert_eq!(m.by_type["b"].queued, 1);
    assert_eq!((m.window.completed, m.window.failed), (1, 0));
    assert_eq!(m.window.processing_seconds.count, 1);
    assert!(m.database.size_bytes > 0 && m.database.page_size >= 1024);
    assert!(m.checkpoint.is_none() && m.database.wal_frames.is_none());
    assert!(matches!(q.metrics_over(0), Err(Error::InvalidArgument(_))));
}
