//! Faults of the connection layer: a connection killed in the middle of a transaction (it runs
//! again on a new one), connections killed while idle in the pool, an exhausted pool and a
//! statement timeout (each a `Busy` error saying what to raise).

use super::util::TestDb;
use crate::model::error::{DbErrorKind, Error};
use crate::model::new_task::NewTask;
use crate::model::options::QueueOptions;
use crate::storage::postgres::PgDriver;
use crate::storage::Driver;

fn open_with(db: &TestDb, params: &str) -> PgDriver {
    let url = format!("{}&{params}", db.url);
    PgDriver::open(
        &url,
        QueueOptions::default(),
        Box::new(|| {}),
        crate::testutil::RULES,
    )
    .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

#[test]
fn a_transaction_whose_connection_is_killed_before_commit_runs_again_on_a_new_one() {
    let Some(db) = TestDb::new() else { return };
    let q = db.open();
    db.client()
        .batch_execute("CREATE TABLE marks (n int)")
        .unwrap();
    let mut calls = 0;
    q.write(|tx| {
        calls += 1;
        if calls == 1 {
            // What pg_terminate_backend from another session does, from inside.
            tx.execute("SELECT pg_terminate_backend(pg_backend_pid())", &[])?;
        }
        tx.execute("INSERT INTO marks VALUES ($1)", &[&calls])?;
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, 2);
    let marks = db.marks();
    assert_eq!(marks, [2], "the killed attempt wrote nothing");
}

#[test]
fn connections_killed_while_idle_are_replaced_and_calls_go_on() {
    let Some(db) = TestDb::new() else { return };
    let app = format!("kill_{}", db.schema);
    let q = open_with(&db, &format!("application_name={app}&pool_size=3"));
    for _ in 0..3 {
        q.task_insert_many(&[NewTask::new("x", "1")]).unwrap();
    }
    let killed: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) k",
            &[&app],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1, "{killed}");
    q.task_insert_many(&[NewTask::new("x", "2")]).unwrap();
    q.data_version().unwrap();
    assert_eq!(q.stats(None).unwrap().total, 4);
}

#[test]
fn an_exhausted_pool_and_a_statement_timeout_are_busy_errors_saying_what_to_raise() {
    let Some(db) = TestDb::new() else { return };
    let q = open_with(&db, "pool_size=1&pool_timeout=0.3");
    let held = q.conn().unwrap();
    let e = q.stats(None).unwrap_err();
    assert_eq!(e.db_kind(), Some(DbErrorKind::Busy), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("pool_size") && text.contains("0.3s"),
        "{text}"
    );
    drop(held);
    q.stats(None).unwrap();

    let q = open_with(&db, "options=-c%20statement_timeout%3D100");
    let e = q
        .write(|tx| {
            tx.execute("SELECT pg_sleep(2)", &[])?;
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Db {
                kind: DbErrorKind::Busy,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("statement_timeout"), "{e}");
}
