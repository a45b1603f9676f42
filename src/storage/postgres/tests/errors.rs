//! The server's errors as the core's (`errors::from_pg`, `errors::from_pool`), each produced for
//! real on the tests' server where it can be: a read-only session, a lock held past
//! `lock_timeout`, a statement cancelled by `pg_cancel_backend`, a role at its connection limit or
//! no longer allowed to log in, a deadlock between two writes. Each says what to fix and never
//! shows the password; a deadlock (and a serialization failure, raised by the statement since
//! two serializable transactions cannot be made to collide on cue) runs the transaction again.

use super::util::TestDb;
use crate::model::error::{DbErrorKind, Error};
use crate::model::new_task::NewTask;
use crate::storage::Driver;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// A password the server (trust) ignores, that no message may show.
const PASSWORD: &str = "Err5ecretPw";

use super::util::open_url as open;

/// A fresh schema on the tests' own throwaway cluster; `None` when the tests are skipped or run
/// on a server `PRISMQ_TEST_POSTGRES_URL` names (its roles are not ours to make).
fn own_cluster() -> Option<TestDb> {
    if std::env::var_os("PRISMQ_TEST_POSTGRES_URL").is_some() {
        return None;
    }
    TestDb::new()
}

/// The test's schema, as `user` with the password no message may show, with `params` added.
fn url_as(db: &TestDb, user: &str, params: &str) -> String {
    let url = db
        .url
        .replacen("postgres@", &format!("{user}:{PASSWORD}@"), 1);
    assert_ne!(url, db.url, "the throwaway cluster's URL names its user");
    if params.is_empty() {
        url
    } else {
        format!("{url}&{params}")
    }
}

fn db_error(e: &Error) -> (DbErrorKind, String) {
    let text = e.to_string();
    assert!(!text.contains(PASSWORD), "{text}");
    (e.db_kind().unwrap_or_else(|| panic!("{e:?}")), text)
}

/// A role of this test only (roles belong to the whole cluster), dropped at the end.
struct Role<'a> {
    db: &'a TestDb,
    name: String,
}

impl<'a> Role<'a> {
    fn new(db: &'a TestDb, attributes: &str) -> Role<'a> {
        let name = format!("r_{}", db.schema);
        db.client()
            .batch_execute(&format!("CREATE ROLE {name} {attributes}"))
            .unwrap();
        Role { db, name }
    }

    fn alter(&self, attributes: &str) {
        self.db
            .client()
            .batch_execute(&format!("ALTER ROLE {} {attributes}", self.name))
            .unwrap();
    }

    /// End every session of the role (its queue handle's pool connects again).
    fn terminate_sessions(&self) {
        self.db
            .client()
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&self.name],
            )
            .unwrap();
    }
}

impl Drop for Role<'_> {
    fn drop(&mut self) {
        let mut c = self.db.client();
        let _ = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&self.name],
        );
        let _ = c.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP ROLE IF EXISTS {}",
            self.db.schema, self.name
        ));
    }
}

#[test]
fn a_read_only_server_is_refused_at_opening_saying_so() {
    let Some(db) = TestDb::new() else { return };
    // What a standby, or a server with default_transaction_read_only on, does to every session:
    // opening creates or checks the schema, which a read-only session cannot.
    let url = format!("{}&options=-c%20default_transaction_read_only%3Don", db.url);
    let e = open(&url).err().expect("refused");
    let (kind, text) = db_error(&e);
    assert_eq!(kind, DbErrorKind::ReadOnly, "{text}");
    assert!(
        text.contains("25006") && text.contains("the server is read-only"),
        "{text}"
    );
}

#[test]
fn a_server_turned_read_only_under_an_open_handle_refuses_writes_and_still_reads() {
    let Some(db) = own_cluster() else { return };
    let role = Role::new(&db, "LOGIN SUPERUSER");
    let q = open(&url_as(&db, &role.name, "")).unwrap_or_else(|e| panic!("open: {e}"));
    q.task_insert_many(&[NewTask::new("x", "1")]).unwrap();
    // As after a failover to a standby: every new session of the handle is read-only.
    role.alter("SET default_transaction_read_only = on");
    role.terminate_sessions();
    let e = q.task_insert_many(&[NewTask::new("x", "2")]).unwrap_err();
    let (kind, text) = db_error(&e);
    assert_eq!(kind, DbErrorKind::ReadOnly, "{text}");
    assert!(
        text.contains("25006") && text.contains("the server is read-only"),
        "{text}"
    );
    assert_eq!(
        q.stats(None).unwrap().total,
        1,
        "reads work; nothing written"
    );
    role.alter("RESET default_transaction_read_only");
    role.terminate_sessions();
    q.task_insert_many(&[NewTask::new("x", "3")]).unwrap();
    assert_eq!(q.stats(None).unwrap().total, 2);
}

#[test]
fn a_lock_held_past_lock_timeout_is_busy_naming_the_setting() {
    let Some(db) = TestDb::new() else { return };
    let q = open(&format!("{}&options=-c%20lock_timeout%3D100", db.url)).unwrap();
    q.task_insert_many(&[NewTask::new("x", "1")]).unwrap();
    let mut holder = db.client();
    let mut lock = holder.transaction().unwrap();
    lock.batch_execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let e = q.task_insert_many(&[NewTask::new("x", "2")]).unwrap_err();
    let (kind, text) = db_error(&e);
    assert_eq!(kind, DbErrorKind::Busy, "{text}");
    assert!(
        text.contains("55P03") && text.contains("lock_timeout") && text.contains("pg_locks"),
        "{text}"
    );
    lock.rollback().unwrap();
    assert_eq!(
        q.stats(None).unwrap().total,
        1,
        "the refused insert wrote nothing"
    );
    q.task_insert_many(&[NewTask::new("x", "3")]).unwrap();
}

#[test]
fn a_statement_cancelled_by_pg_cancel_backend_is_busy_saying_so() {
    let Some(db) = TestDb::new() else { return };
    let app = format!("cancel_{}", db.schema);
    let q = open(&format!("{}&application_name={app}", db.url)).unwrap();
    let calls = AtomicU32::new(0);
    std::thread::scope(|s| {
        let sleeper = s.spawn(|| {
            q.write(|tx| {
                calls.fetch_add(1, Ordering::Relaxed);
                tx.execute("SELECT pg_sleep(60)", &[])?;
                Ok(())
            })
        });
        // Not a timing: wait until the server runs the sleep, then cancel it.
        let mut admin = db.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let cancelled: i64 = admin
                .query_one(
                    "SELECT count(*) FROM (SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND query LIKE '%pg_sleep%' \
                     AND state = 'active') c",
                    &[&app],
                )
                .unwrap()
                .get(0);
            if cancelled > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the sleep never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = sleeper.join().unwrap().unwrap_err();
        let (kind, text) = db_error(&e);
        assert_eq!(kind, DbErrorKind::Busy, "{text}");
        assert!(
            text.contains("57014") && text.contains("cancel request"),
            "{text}"
        );
    });
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "a cancel is not run again"
    );
}

#[test]
fn a_role_at_its_connection_limit_is_busy_saying_no_slot_is_left() {
    let Some(db) = own_cluster() else { return };
    let role = Role::new(&db, "LOGIN CONNECTION LIMIT 0");
    let url = url_as(&db, &role.name, "");
    let e = open(&url).err().expect("refused");
    let (kind, text) = db_error(&e);
    assert_eq!(kind, DbErrorKind::Busy, "{text}");
    assert!(
        text.contains("53300")
            && text.contains("max_connections")
            && text.contains(&format!("cannot open postgresql://{}@", role.name)),
        "{text}"
    );
}

#[test]
fn a_role_that_does_not_exist_is_refused_saying_to_check_the_user() {
    let Some(db) = own_cluster() else { return };
    let url = url_as(&db, &format!("nobody_{}", db.schema), "");
    let e = open(&url).err().expect("refused");
    let (kind, text) = db_error(&e);
    assert_eq!(kind, DbErrorKind::Other, "{text}");
    assert!(
        text.contains("28000") && text.contains("check the user and password"),
        "{text}"
    );
}

#[test]
fn a_server_that_stops_accepting_the_role_mid_life_is_an_io_error_then_recovers() {
    let Some(db) = own_cluster() else { return };
    let role = Role::new(&db, "LOGIN SUPERUSER");
    let url = url_as(&db, &role.name, "pool_size=1&pool_timeout=0.5");
    let q = open(&url).unwrap_or_else(|e| panic!("open: {e}"));
    q.task_insert_many(&[NewTask::new("x", "1")]).unwrap();
    // The pool's connection dies and no new one is let in: every call fails, saying why.
    role.alter("NOLOGIN");
    role.terminate_sessions();
    let e = q.stats(None).unwrap_err();
    let (kind, text) = db_error(&e);
    assert_eq!(kind, DbErrorKind::IoError, "{text}");
    assert!(
        text.contains("cannot reach the PostgreSQL server (tried for 0.5s)")
            && text.contains("not permitted to log in"),
        "{text}"
    );
    // Let in again: the next call connects, nothing was lost.
    role.alter("LOGIN");
    assert_eq!(q.stats(None).unwrap().total, 1);
}

#[test]
fn a_deadlock_between_two_writes_runs_the_loser_again_and_both_commit() {
    let Some(db) = TestDb::new() else { return };
    let q = open(&format!("{}&options=-c%20deadlock_timeout%3D50", db.url)).unwrap();
    db.client()
        .batch_execute("CREATE TABLE cells (n int PRIMARY KEY, by text); INSERT INTO cells VALUES (1, ''), (2, '')")
        .unwrap();
    let both_hold_one = Barrier::new(2);
    let calls = AtomicU32::new(0);
    let write = |first: i32, second: i32, by: &str| {
        let mut mine = 0;
        q.write(|tx| {
            mine += 1;
            calls.fetch_add(1, Ordering::Relaxed);
            tx.execute("UPDATE cells SET by = $2 WHERE n = $1", &[&first, &by])?;
            if mine == 1 {
                both_hold_one.wait();
            }
            tx.execute("UPDATE cells SET by = $2 WHERE n = $1", &[&second, &by])?;
            Ok(mine)
        })
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| write(1, 2, "a"));
        let b = s.spawn(|| write(2, 1, "b"));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    // The server chose one to abort (40P01); it ran again once the other had committed.
    let mut runs = [a, b];
    runs.sort();
    assert_eq!(runs, [1, 2]);
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let by: Vec<String> = db
        .client()
        .query("SELECT by FROM cells ORDER BY n", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let loser = if a == 2 { "a" } else { "b" };
    assert_eq!(by, [loser, loser], "the transaction run again wrote last");
}

#[test]
fn a_serialization_failure_runs_the_transaction_again_and_a_full_disk_is_disk_full() {
    let Some(db) = TestDb::new() else { return };
    let q = db.open();
    db.client()
        .batch_execute("CREATE TABLE marks (n int)")
        .unwrap();
    let raise = |code: &str| {
        format!(
            "DO $$ BEGIN RAISE EXCEPTION 'raised here' USING ERRCODE = '{code}', \
             DETAIL = 'the server says more'; END $$"
        )
    };
    let mut calls = 0;
    q.write(|tx| {
        calls += 1;
        tx.execute("INSERT INTO marks VALUES ($1)", &[&calls])?;
        if calls == 1 {
            tx.batch_execute(&raise("serialization_failure"))?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, 2);
    let marks = db.marks();
    assert_eq!(marks, [2], "the failed attempt wrote nothing");

    // Retried a few times only: a transaction that always fails so ends with a Busy error.
    let mut calls = 0;
    let e = q
        .write(|tx| {
            calls += 1;
            tx.batch_execute(&raise("serialization_failure"))?;
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(&e, Error::Busy(m) if m.contains("40001")), "{e:?}");
    assert_eq!(calls, 6, "once, then MAX_RETRIES times again");

    // A full disk on the server: not run again, and said so.
    let mut calls = 0;
    let e = q
        .write(|tx| {
            calls += 1;
            tx.batch_execute(&raise("disk_full"))?;
            Ok(())
        })
        .unwrap_err();
    let (kind, text) = db_error(&e);
    assert_eq!((kind, calls), (DbErrorKind::DiskFull, 1), "{text}");
    assert!(
        text.contains("53100")
            && text.contains("raised here (the server says more)")
            && text.contains("the server's disk is full"),
        "{text}"
    );
}

#[test]
fn a_queue_whose_schema_was_dropped_under_its_handle_says_what_the_server_said() {
    let Some(db) = TestDb::new() else { return };
    let q = db.open();
    q.task_insert_many(&[NewTask::new("x", "1")]).unwrap();
    db.client()
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", db.schema))
        .unwrap();
    // An error no hint is written for: its SQLSTATE and the server's words, nothing invented.
    let e = q.stats(None).unwrap_err();
    let (kind, text) = db_error(&e);
    assert_eq!(kind, DbErrorKind::Other, "{text}");
    assert!(
        text.starts_with("PostgreSQL error 42") && text.contains("does not exist"),
        "{text}"
    );
    // Opening again makes the schema afresh.
    assert_eq!(db.open().stats(None).unwrap().total, 0);
    assert_eq!(q.stats(None).unwrap().total, 0);
}
