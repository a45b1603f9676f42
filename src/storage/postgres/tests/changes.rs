//! The change feed on PostgreSQL: the SQLite feed's events, transactions committing out of id
//! order, bursts paged over looks, concurrent writers, and pruning.

use super::util::pg_or_skip;
use super::{claim, lease, task};
use crate::model::changes::{ChangeCursor, ChangeToken, Changes};
use crate::model::claim::ClaimRequest;
use crate::model::error::Error;
use crate::model::lease::Failure;
use crate::model::new_task::NewTask;
use crate::model::strategy::Strategy;
use crate::storage::postgres::changes::RECORD_CREATED;
use crate::storage::postgres::PgDriver;
use std::collections::HashMap;

const TOKEN: ChangeToken = ChangeToken {
    generation: 0,
    data_version: 0,
};

fn cursor(q: &PgDriver, queues: Option<Vec<String>>) -> ChangeCursor {
    q.change_cursor(queues, TOKEN).unwrap()
}

fn look(q: &PgDriver, cur: &mut ChangeCursor) -> Changes {
    q.changes_since(cur, 100, TOKEN).unwrap()
}

fn kinds(ch: &Changes) -> Vec<(&'static str, i64, &'static str)> {
    ch.changes
        .iter()
        .map(|c| (c.kind.as_str(), c.id, c.status.as_str()))
        .collect()
}

fn rows(db: &super::util::TestDb) -> i64 {
    db.client()
        .query_one(
            "SELECT coalesce(sum(cardinality(task_ids)), 0)::bigint FROM task_changes",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_task_seen_through_its_life() {
    let (_db, q) = pg_or_skip!();
    let old = q.enqueue(&NewTask::new("x", "null")).unwrap();
    let mut cur = cursor(&q, None);
    assert!(look(&q, &mut cur).changes.is_empty());

    let id = q.enqueue(&NewTask::new("x", "null")).unwrap();
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        vec![("task.created", id, "queued")]
    );
    let t = claim(&q, Strategy::Fifo, 1, 60_000).pop().unwrap();
    assert_eq!(t.id, old);
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        vec![("task.status", old, "running")]
    );
    q.progress(lease(&t), Some(10.0), Some("a"), None).unwrap();
    q.progress(lease(&t), Some(20.0), Some("b"), None).unwrap();
    let ch = look(&q, &mut cur);
    assert_eq!(kinds(&ch), vec![("task.progress", old, "running")]);
    assert_eq!(
        (ch.changes[0].progress, ch.changes[0].step.as_deref()),
        (Some(20.0), Some("b"))
    );
    // A renew is not reported, and writes no row.
    let before = rows(&_db);
    q.renew(lease(&t), 60_000).unwrap();
    assert_eq!(rows(&_db), before);
    assert!(look(&q, &mut cur).changes.is_empty());
    // A priority change reorders the queue (issue 20): one row, reported as the task's status.
    q.set_priority(id, 7).unwrap();
    assert_eq!(rows(&_db), before + 1);
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        vec![("task.status", id, "queued")]
    );
    q.fail_attempt(&Failure::new(lease(&t), "boom", true))
        .unwrap();
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        vec![("task.status", old, "queued")]
    );
    // Claimed and completed between two looks: one event, the outcome.
    let t = claim(&q, Strategy::Priority, 1, 60_000).pop().unwrap();
    q.complete(lease(&t), None).unwrap();
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        vec![("task.status", t.id, "completed")]
    );
    // Cancelled while queued, then retried: each seen once.
    let other = if t.id == id { old } else { id };
    q.cancel(other).unwrap();
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        vec![("task.status", other, "cancelled")]
    );
    q.retry(other).unwrap();
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        vec![("task.status", other, "queued")]
    );
    assert!(look(&q, &mut cur).changes.is_empty());
    // A task created and claimed between two looks: created, then its status.
    let new = q.enqueue(&task("y", 1)).unwrap();
    let mut req = ClaimRequest::new("w1");
    req.filter.types = Some(vec!["y".into()]);
    let t = q.claim(&req).unwrap().pop().unwrap();
    assert_eq!(t.id, new);
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        vec![
            ("task.created", new, "running"),
            ("task.status", new, "running")
        ]
    );
}

/// A task inserted by hand in `tx`, in the lane of the queue's `x` tasks, recorded in the feed
/// as every insert path records its tasks.
fn insert_in(tx: &mut postgres::Transaction, lane: i64) -> i64 {
    let id = tx
        .query_one(
            "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, max_attempts,
                                run_after, created_at, updated_at)
             VALUES ($1, 'x', 'default', 'null', 100, 'queued', 3, now_ms(), now_ms(), now_ms())
             RETURNING id",
            &[&lane],
        )
        .unwrap()
        .get(0);
    tx.execute(RECORD_CREATED, &[&vec![id]]).unwrap();
    id
}

/// The ids the feed says were created, sorted, and the ids of every task in the table: equal
/// when each insert recorded each of its tasks exactly once.
pub(super) fn created_and_held(db: &super::util::TestDb) -> (Vec<i64>, Vec<i64>) {
    let mut c = db.client();
    let ids = |c: &mut postgres::Client, sql: &str| -> Vec<i64> {
        c.query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    (
        ids(
            &mut c,
            "SELECT x FROM task_changes, unnest(task_ids) AS x WHERE created ORDER BY x",
        ),
        ids(&mut c, "SELECT id FROM tasks ORDER BY id"),
    )
}

/// No trigger writes the feed's rows of new tasks (`V_FEED_BY_WRITERS`): each insert path does,
/// by one statement, for exactly the tasks it inserted (a key held already inserts nothing).
#[test]
fn every_way_of_creating_a_task_records_it_once() {
    let (db, q) = pg_or_skip!();
    q.enqueue(&NewTask::new("x", "null")).unwrap();
    let keyed = |key: &str| {
        let mut t = NewTask::new("x", "null");
        t.idempotency_key = Some(key.into());
        t
    };
    q.enqueue(&keyed("a")).unwrap();
    // The INSERT path, with a key held and one repeated within the batch.
    let ids = q
        .enqueue_many(&[
            keyed("a"),
            keyed("b"),
            keyed("b"),
            NewTask::new("y", "null"),
        ])
        .unwrap();
    assert_eq!(ids[1], ids[2]);
    // The COPY path.
    q.enqueue_many(&vec![NewTask::new("x", "null"); 40])
        .unwrap();
    // A run's first start inserts its task; a second start of it inserts nothing.
    q.start_run(&super::runs::start("r1", "app-1")).unwrap();
    let (created, held) = created_and_held(&db);
    assert_eq!(held.len(), 1 + 1 + 2 + 40 + 1);
    assert_eq!(created, held);
    // A batch that fails writes no feed row: its transaction is rolled back whole.
    let mut bad = vec![NewTask::new("x", "null"); 40];
    bad[39].delay_ms = Some(i64::MAX);
    assert!(q.enqueue_many(&bad).is_err());
    assert_eq!(created_and_held(&db), (created, held));
}

/// Every statement of the PostgreSQL storage that inserts into `tasks` sits in a file that also
/// writes the change feed's row (`RECORD_CREATED`, `record_created` or its own CTE): without the
/// insert trigger, a new insert path that forgot it would leave watchers blind to its tasks.
#[test]
fn every_insert_into_tasks_records_its_ids() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/storage/postgres");
    let mut inserting = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let inserts = text.contains("INSERT INTO tasks ") || text.contains("COPY tasks ");
            if inserts {
                inserting.push(path.file_name().unwrap().to_string_lossy().into_owned());
                assert!(
                    text.contains("record_created") || text.contains("INSERT INTO task_changes"),
                    "{} inserts tasks but records no change feed row",
                    path.display()
                );
            }
        }
    }
    inserting.sort();
    assert_eq!(inserting, ["copy.rs", "enqueue.rs", "run_tasks.rs"]);
}

#[test]
fn transactions_committing_out_of_id_order_are_each_seen_exactly_once() {
    let (db, q) = pg_or_skip!();
    let first = q.enqueue(&NewTask::new("x", "null")).unwrap();
    let lane: i64 = db
        .client()
        .query_one("SELECT lane_id FROM tasks WHERE id = $1", &[&first])
        .unwrap()
        .get(0);
    let mut cur = cursor(&q, None);
    // A takes the lower task id and transaction id and commits last; B and C commit in between.
    let mut ca = db.client();
    let mut a = ca.transaction().unwrap();
    let a_task = insert_in(&mut a, lane);
    a.execute(
        "UPDATE tasks SET status = 'cancelled', finished_at = now_ms(), updated_at = now_ms()
         WHERE id = $1",
        &[&first],
    )
    .unwrap();
    let mut cb = db.client();
    let mut b = cb.transaction().unwrap();
    let b_task = insert_in(&mut b, lane);
    assert!(b_task > a_task);
    let c_task = q.enqueue(&NewTask::new("x", "null")).unwrap();
    b.commit().unwrap();
    let mut seen: Vec<(&'static str, i64, &'static str)> = Vec::new();
    let ch = kinds(&look(&q, &mut cur));
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert!(ch.contains(&("task.created", b_task, "queued")));
    assert!(ch.contains(&("task.created", c_task, "queued")));
    seen.extend(ch);
    // Still in flight: nothing of A yet, and nothing seen twice.
    assert!(look(&q, &mut cur).changes.is_empty());
    a.commit().unwrap();
    // One transaction's rows come in task id order.
    let ch = kinds(&look(&q, &mut cur));
    assert_eq!(
        ch,
        vec![
            ("task.status", first, "cancelled"),
            ("task.created", a_task, "queued")
        ]
    );
    seen.extend(ch);
    assert!(look(&q, &mut cur).changes.is_empty());
    // A rolled-back transaction reports nothing.
    let mut d = ca.transaction().unwrap();
    insert_in(&mut d, lane);
    d.rollback().unwrap();
    assert!(look(&q, &mut cur).changes.is_empty());
    assert_eq!(seen.len(), 4);
}

#[test]
fn bursts_are_paged_and_queues_filtered() {
    let (_db, q) = pg_or_skip!();
    let mut all = cursor(&q, None);
    let mut mail = cursor(&q, Some(vec!["mail".into()]));
    let tasks: Vec<NewTask> = (0..25)
        .map(|i| {
            let mut t = NewTask::new("x", "null");
            t.queue = if i % 5 == 0 { "mail" } else { "default" }.into();
            t
        })
        .collect();
    let ids = q.enqueue_many(&tasks).unwrap();
    let mut seen = Vec::new();
    let mut looks = 0;
    loop {
        let ch = q.changes_since(&mut all, 10, TOKEN).unwrap();
        looks += 1;
        seen.extend(ch.changes.iter().map(|c| c.id));
        if !ch.more {
            break;
        }
    }
    assert_eq!((seen, looks), (ids, 3));
    let ch = look(&q, &mut mail);
    assert_eq!(ch.changes.len(), 5);
    assert!(ch.changes.iter().all(|c| c.queue == "mail"));
}

#[test]
fn concurrent_writers_each_change_reported_once() {
    let (_db, q) = pg_or_skip!();
    let q = std::sync::Arc::new(q);
    let mut cur = cursor(&q, None);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut done = Vec::new();
                for _ in 0..25 {
                    q.enqueue_many(&[NewTask::new("x", "null"), NewTask::new("x", "null")])
                        .unwrap();
                    let mut req = ClaimRequest::new(format!("w{w}"));
                    req.limit = 2;
                    for t in q.claim(&req).unwrap() {
                        q.complete(lease(&t), None).unwrap();
                        done.push(t.id);
                    }
                }
                done
            })
        })
        .collect();
    let mut created: HashMap<i64, usize> = HashMap::new();
    let mut last: HashMap<i64, &'static str> = HashMap::new();
    let mut take = |ch: Changes| {
        for c in ch.changes {
            if c.kind.as_str() == "task.created" {
                *created.entry(c.id).or_default() += 1;
            }
            last.insert(c.id, c.status.as_str());
        }
    };
    while !writers.iter().all(|w| w.is_finished()) {
        take(q.changes_since(&mut cur, 7, TOKEN).unwrap());
    }
    let done: Vec<i64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    loop {
        let ch = q.changes_since(&mut cur, 7, TOKEN).unwrap();
        let more = ch.more;
        take(ch);
        if !more {
            break;
        }
    }
    assert_eq!(created.len(), 200);
    assert!(created.values().all(|n| *n == 1), "{created:?}");
    for id in done {
        assert_eq!(last.get(&id), Some(&"completed"), "task {id}");
    }
}

#[test]
fn old_rows_are_pruned_and_a_cursor_behind_them_is_told() {
    let (db, q) = pg_or_skip!();
    let mut behind = cursor(&q, None);
    q.enqueue_many(&[NewTask::new("x", "null"), NewTask::new("x", "null")])
        .unwrap();
    assert_eq!(rows(&db), 2);
    // Nothing is old enough yet: a mark is left, nothing deleted. A mark covers only
    // transactions every snapshot of the cluster sees as ended, and other tests' transactions in
    // flight can hold it below the batch's: mark again until one covers it.
    let mut c = db.client();
    let covered = |c: &mut postgres::Client| -> bool {
        c.query_one(
            "SELECT (SELECT max(xid) FROM change_marks) > (SELECT max(xid) FROM task_changes)",
            &[],
        )
        .unwrap()
        .get::<_, Option<bool>>(0)
            == Some(true)
    };
    for _ in 0..500 {
        assert_eq!(q.prune_changes().unwrap(), 0);
        if covered(&mut c) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(covered(&mut c), "no mark covered the batch in 5 s");
    assert_eq!(rows(&db), 2);
    // Once the marks are older than the retention, the rows below them go.
    c.execute("UPDATE change_marks SET at = at - $1", &[&(20 * 60_000i64)])
        .unwrap();
    q.enqueue(&NewTask::new("x", "null")).unwrap();
    assert_eq!(q.prune_changes().unwrap(), 2);
    assert_eq!(rows(&db), 1);
    let e = q.changes_since(&mut behind, 100, TOKEN).unwrap_err();
    assert!(
        matches!(&e, Error::Database(m) if m.contains("fell behind")),
        "{e:?}"
    );
    let mut fresh = cursor(&q, None);
    q.enqueue(&NewTask::new("x", "null")).unwrap();
    assert_eq!(look(&q, &mut fresh).changes.len(), 1);
    let marks: i64 = c
        .query_one(
            "SELECT count(*) FROM change_marks WHERE xid < (SELECT pruned_below FROM change_feed)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(marks, 0);
}

/// A schema of version 4 kept one feed row per task; opening it turns each into a one-element
/// array, and from then on a statement writes one row for all its tasks.
#[test]
fn feed_rows_of_version_4_become_arrays_and_a_batch_writes_one_row() {
    use crate::storage::postgres::schema::MIGRATIONS;
    let Some(db) = super::util::TestDb::new() else {
        return;
    };
    let mut c = db.client();
    c.batch_execute(&format!(
        "CREATE SCHEMA {0}; SET search_path TO {0};
         CREATE TABLE schema_version (version bigint NOT NULL); INSERT INTO schema_version VALUES (4);",
        db.schema
    ))
    .unwrap();
    for sql in &MIGRATIONS[..4] {
        c.batch_execute(sql).unwrap();
    }
    c.batch_execute(
        "INSERT INTO lanes (queue, type) VALUES ('default', 'x');
         INSERT INTO tasks (lane_id, type, queue, payload, priority, status, max_attempts, run_after, created_at, updated_at)
         VALUES (1, 'x', 'default', 'null', 100, 'queued', 5, 0, 0, 0),
                (1, 'x', 'default', 'null', 100, 'queued', 5, 0, 0, 0)",
    )
    .unwrap();
    let old: i64 = c
        .query_one("SELECT count(*) FROM task_changes", &[])
        .unwrap()
        .get(0);
    assert_eq!(old, 2);
    let q = db.open();
    let arrays = |c: &mut postgres::Client| -> Vec<Vec<i64>> {
        c.query(
            "SELECT task_ids FROM task_changes ORDER BY xid, task_ids",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert_eq!(arrays(&mut c), [vec![1], vec![2]]);
    let ids = q
        .enqueue_many(
            &(0..40)
                .map(|_| NewTask::new("x", "null"))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(
        arrays(&mut c).len(),
        3,
        "the batch's forty tasks in one row"
    );
    assert_eq!(rows(&db), 42);
    // A cursor reads every task of an array row, and the row of a priority change.
    let mut cur = cursor(&q, None);
    q.set_priority(ids[0], 5).unwrap();
    q.cancel(ids[1]).unwrap();
    assert_eq!(
        kinds(&look(&q, &mut cur)),
        [
            ("task.status", ids[0], "queued"),
            ("task.status", ids[1], "cancelled")
        ]
    );
}
