//! The run registry and the task rows of in-process runs, as the SQLite driver's tests check
//! them (storage/sqlite/runs.rs), plus the plans of its queries and the schema step that adds it.

use super::lease;
use super::util::{pg_or_skip, TestDb};
use crate::model::claim::ClaimRequest;
use crate::model::error::Error;
use crate::model::lease::Failure;
use crate::model::runs::{
    RecoverRuns, RunFilter, RunQuery, RunRecord, StartRun, DEFAULT_RUNS_QUEUE,
};
use crate::model::task::Status;
use crate::storage::postgres::PgDriver;

fn record(id: &str, module: &str, status: &str, created: i64, done: Option<i64>) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        module_id: module.into(),
        status: status.into(),
        created_at: created,
        completed_at: done,
        data: format!(r#"{{"run_id":"{id}","status":"{status}"}}"#),
    }
}

pub(super) fn start(run_id: &str, worker: &str) -> StartRun {
    StartRun {
        run_id: run_id.into(),
        task_type: "module.a".into(),
        payload: r#"{"n":1}"#.into(),
        queue: DEFAULT_RUNS_QUEUE.into(),
        worker_id: worker.into(),
        lease_ms: 60_000,
        rerun_attempts: 3,
        takeover_from: Vec::new(),
    }
}

fn query(filter: RunFilter, newest_first: bool, limit: Option<i64>) -> RunQuery {
    RunQuery {
        filter,
        newest_first,
        limit,
    }
}

fn ids(q: &PgDriver, query: RunQuery) -> Vec<String> {
    q.list_runs(&query)
        .unwrap()
        .into_iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(&d).unwrap()["run_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn runs_are_saved_replaced_listed_and_purged() {
    let (_db, q) = pg_or_skip!();
    q.save_run(&record("a", "m1", "completed", 10, Some(100)))
        .unwrap();
    q.save_run(&record("b", "m2", "running", 20, None)).unwrap();
    q.save_run(&record("c", "m1", "queued", 30, None)).unwrap();
    q.save_run(&record("d", "m2", "failed", 30, Some(5_000)))
        .unwrap();
    // Replacing keeps one row (and its place among equal creation times).
    q.save_run(&record("b", "m2", "running", 20, None)).unwrap();
    assert_eq!(
        ids(&q, query(RunFilter::All, true, None)),
        ["d", "c", "b", "a"]
    );
    assert_eq!(ids(&q, query(RunFilter::All, true, Some(2))), ["d", "c"]);
    assert_eq!(ids(&q, query(RunFilter::Active, false, None)), ["b", "c"]);
    assert_eq!(
        ids(&q, query(RunFilter::Module("m1".into()), false, None)),
        ["a", "c"]
    );
    assert_eq!(
        ids(&q, query(RunFilter::Status("failed".into()), false, None)),
        ["d"]
    );
    assert!(q.load_run("a").unwrap().unwrap().contains("completed"));
    assert_eq!(q.load_run("zz").unwrap(), None);
    assert_eq!(q.purge_runs(1_000).unwrap(), 1);
    assert_eq!(q.load_run("a").unwrap(), None);
    assert!(q.delete_run("d").unwrap());
    assert!(!q.delete_run("d").unwrap());
    assert_eq!(ids(&q, query(RunFilter::All, false, None)), ["b", "c"]);
    // Bad records and queries are refused by the engine before the driver is called
    // (adapters/runs.rs, on every backend).
}

#[test]
fn every_run_query_walks_an_index_in_order() {
    let (db, q) = pg_or_skip!();
    db.client()
        .batch_execute(
            "INSERT INTO runs (run_id, module_id, status, created_at, updated_at, data)
             SELECT 'r' || g, 'm' || (g % 50), (ARRAY['queued','running','completed','failed'])[1 + g % 4],
                    g, g, '{}'
             FROM generate_series(1, 20000) g;
             ANALYZE runs;",
        )
        .unwrap();
    for filter in [
        RunFilter::All,
        RunFilter::Active,
        RunFilter::Status("failed".into()),
        RunFilter::Module("m7".into()),
    ] {
        for newest_first in [false, true] {
            let plan = q
                .explain_list_runs(&query(filter.clone(), newest_first, Some(5)))
                .unwrap()
                .join("\n");
            assert!(plan.contains("using runs_"), "{filter:?}: {plan}");
            assert!(
                !plan.contains("Sort") && !plan.contains("Seq Scan"),
                "{filter:?}: {plan}"
            );
        }
    }
}

#[test]
fn start_run_holds_the_row_and_a_live_one_is_refused_until_it_ends() {
    let (_db, q) = pg_or_skip!();
    let first = q.start_run(&start("r1", "app-1")).unwrap();
    assert_eq!(
        (first.status, first.attempts, first.max_attempts),
        (Status::Running, 1, 4)
    );
    assert_eq!(
        (first.locked_by.as_deref(), first.idempotency_key.as_deref()),
        (Some("app-1"), Some("r1"))
    );
    assert_eq!(
        (first.task_type.as_str(), first.queue.as_str()),
        ("module.a", "runs")
    );
    assert!(
        q.claim(&ClaimRequest::new("w")).unwrap().is_empty(),
        "no worker claims it"
    );
    q.renew(lease(&first), 1000).unwrap();
    let e = q.start_run(&start("r1", "app-2")).unwrap_err();
    // The engine's words (`Rules::may_start_run`), as on SQLite.
    let refused = format!(
        "run \"r1\" is already running (task {}, held by app-1): wait until it finishes, or \
         cancel it, before starting it again",
        first.id
    );
    assert!(
        matches!(&e, Error::InvalidArgument(m) if *m == refused),
        "{e}"
    );
    q.fail_attempt(&Failure::new(lease(&first), "boom", false))
        .unwrap();
    let again = q.start_run(&start("r1", "app-2")).unwrap();
    assert_eq!(
        (again.id, again.status, again.attempts),
        (first.id, Status::Running, 2)
    );
    assert_eq!(
        (again.error, again.finished_at, again.locked_by.as_deref()),
        (None, None, Some("app-2"))
    );
    assert!(matches!(
        q.complete(lease(&first), None),
        Err(Error::NotHeld { .. })
    ));
    // A dead holder's live lease is taken over when the caller knows it is dead.
    let mut s = start("r1", "app-3");
    s.takeover_from = vec!["app-2".into()];
    let third = q.start_run(&s).unwrap();
    assert_eq!(
        (third.attempts, third.locked_by.as_deref()),
        (3, Some("app-3"))
    );
    assert_eq!(
        q.attempts(first.id).unwrap().last().unwrap().outcome,
        "interrupted"
    );
    q.complete(lease(&third), Some("1")).unwrap();
    assert_eq!(q.stats(None).unwrap().total, 1);
}

#[test]
fn concurrent_starts_of_a_new_run_let_one_in_and_refuse_the_others_in_the_engines_words() {
    let Some(db) = TestDb::new() else { return };
    let barrier = std::sync::Barrier::new(4);
    let outcomes: Vec<Result<i64, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (db, barrier) = (&db, &barrier);
                scope.spawn(move || {
                    let q = db.open();
                    barrier.wait();
                    q.start_run(&start("r1", &format!("app-{i}"))).map(|t| t.id)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    for e in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert!(
            matches!(e, Error::InvalidArgument(m)
                if m.starts_with(&format!("run \"r1\" is already running (task {}, held by app-", won[0]))),
            "{e:?}"
        );
    }
    let q = db.open();
    assert_eq!(q.stats(None).unwrap().total, 1);
    let logs = q.logs(won[0], 10).unwrap();
    assert_eq!(logs.len(), 1, "one start logged");
    assert!(logs[0]
        .message
        .starts_with("run r1 started in-process by app-"));
}

#[test]
fn interrupted_runs_are_requeued_for_a_handler_or_failed() {
    let (_db, q) = pg_or_skip!();
    let mut a = start("ra", "dead-1");
    a.task_type = "with.handler".into();
    let ta = q.start_run(&a).unwrap();
    let mut b = start("rb", "dead-1");
    b.task_type = "no.handler".into();
    let tb = q.start_run(&b).unwrap();
    let mut c = start("rc", "alive");
    c.task_type = "no.handler".into();
    let tc = q.start_run(&c).unwrap();
    let mut d = start("rd", "expired");
    d.lease_ms = 1;
    let td = q.start_run(&d).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(10));
    let rec = RecoverRuns {
        queue: DEFAULT_RUNS_QUEUE.into(),
        dead_holders: vec!["dead-1".into()],
        rerun_types: vec!["with.handler".into()],
        rerun_queue: "default".into(),
    };
    let got: Vec<(i64, bool)> = q
        .recover_runs(&rec)
        .unwrap()
        .iter()
        .map(|r| (r.task_id, r.requeued))
        .collect();
    assert_eq!(got, [(ta.id, true), (tb.id, false), (td.id, false)]);
    let ra = q.get(ta.id).unwrap();
    assert_eq!((ra.status, ra.queue.as_str()), (Status::Queued, "default"));
    assert!(ra.error.unwrap().starts_with("interrupted:"));
    let rb = q.get(tb.id).unwrap();
    assert_eq!(rb.status, Status::Failed);
    assert!(rb.error.unwrap().contains("no durable handler"));
    assert_eq!(
        q.get(tc.id).unwrap().status,
        Status::Running,
        "a live holder is left alone"
    );
    let mut req = ClaimRequest::new("w");
    req.filter.types = Some(vec!["with.handler".into()]);
    assert_eq!(super::ids(&q.claim(&req).unwrap()), vec![ta.id]);
    assert!(q.recover_runs(&rec).unwrap().is_empty());

    // A run the rescuer already put back is recovered too.
    let mut s = start("r1", "gone");
    s.lease_ms = 1;
    let t = q.start_run(&s).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(10));
    assert_eq!(q.sweep().unwrap(), 1, "r1's lease ended");
    assert_eq!(q.get(t.id).unwrap().status, Status::Queued);
    let out = q
        .recover_runs(&RecoverRuns {
            dead_holders: Vec::new(),
            rerun_types: Vec::new(),
            ..rec
        })
        .unwrap();
    assert_eq!(
        out.iter()
            .map(|r| (r.run_id.as_deref(), r.holder.as_deref()))
            .collect::<Vec<_>>(),
        [(Some("r1"), Some("gone"))]
    );
    assert_eq!(q.get(t.id).unwrap().status, Status::Failed);
}

#[test]
fn a_schema_of_version_1_gains_the_runs_table_and_keeps_its_tasks() {
    let Some(db) = TestDb::new() else { return };
    let mut c = db.client();
    c.batch_execute(&format!(
        "CREATE SCHEMA {0}; SET search_path TO {0};
         CREATE TABLE schema_version (version bigint NOT NULL); INSERT INTO schema_version VALUES (1);",
        db.schema
    ))
    .unwrap();
    c.batch_execute(crate::storage::postgres::schema::MIGRATIONS[0])
        .unwrap();
    c.batch_execute(
        "INSERT INTO lanes (queue, type) VALUES ('default', 'x');
         INSERT INTO tasks (lane_id, type, queue, payload, priority, status, max_attempts, run_after, created_at, updated_at)
         VALUES (1, 'x', 'default', 'null', 100, 'queued', 5, 0, 0, 0)",
    )
    .unwrap();
    let q = db.open();
    q.save_run(&record("r", "m", "queued", 1, None)).unwrap();
    assert!(q.load_run("r").unwrap().is_some());
    assert_eq!(q.stats(None).unwrap().counts["queued"], 1);
    let version: i64 = c
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, crate::storage::postgres::schema::SCHEMA_VERSION);
}
