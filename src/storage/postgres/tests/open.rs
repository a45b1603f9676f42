//! Opening: `storage::backends::open` dispatch, schemas and their versions, errors that never show the
//! password, and what this backend refuses for now.

use super::util::{pg_or_skip, TestDb};
use crate::model::error::Error;
use crate::model::options::QueueOptions;
use crate::storage::postgres::schema::SCHEMA_VERSION;
use crate::storage::Driver;

use super::util::open_url as open;

#[test]
fn storage_open_dispatches_a_url_and_reopening_keeps_the_tasks() {
    let Some(db) = TestDb::new() else { return };
    let d = crate::storage::backends::open(
        &db.url,
        QueueOptions::default(),
        Box::new(|| {}),
        crate::testutil::RULES,
    )
    .unwrap();
    assert_eq!(d.name(), "postgresql");
    assert_eq!(d.path(), db.url, "no password in this URL: shown as given");
    let id = d
        .task_insert_many(&[crate::NewTask::new("x", "1")])
        .unwrap()[0];
    let again = db.open();
    assert_eq!(again.get(id).unwrap().payload, "1");
    let version: i64 = db
        .client()
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    // Another schema of the same database is another queue.
    let other_db = TestDb::new().unwrap();
    assert_eq!(other_db.open().stats(None).unwrap().total, 0);
}

#[test]
fn many_processes_opening_a_new_schema_at_once_all_succeed() {
    let Some(db) = TestDb::new() else { return };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| drop(db.open()));
        }
    });
    let tables: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&db.schema],
        )
        .unwrap()
        .get(0);
    assert!(tables >= 6, "{tables}");
}

#[test]
fn a_newer_schema_and_someone_elses_tables_are_refused() {
    let (db, q) = pg_or_skip!();
    drop(q);
    db.client()
        .execute(
            "UPDATE schema_version SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .unwrap();
    match open(&db.url) {
        Err(Error::SchemaVersion { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        other => panic!("expected SchemaVersion, got {:?}", other.err()),
    }
    let Some(foreign) = TestDb::new() else { return };
    let mut c = foreign.client();
    c.batch_execute(&format!(
        "CREATE SCHEMA {0}; CREATE TABLE {0}.orders (id int)",
        foreign.schema
    ))
    .unwrap();
    let e = open(&foreign.url).err().expect("refused").to_string();
    assert!(e.contains("orders") && e.contains("?schema="), "{e}");
}

#[test]
fn connection_errors_are_clear_and_never_show_the_password() {
    let Some(db) = TestDb::new() else { return };
    // Our throwaway server trusts every local user; a missing database still fails at once.
    if db.url.starts_with("postgresql://postgres@") && db.url.contains("/postgres?") {
        let missing = db
            .url
            .replace("postgres@", "postgres:Hunter2pw@")
            .replace("/postgres?", "/no_such_db?");
        let e = open(&missing).err().expect("refused");
        let text = e.to_string();
        assert!(
            text.contains("no_such_db") && text.contains("createdb"),
            "{text}"
        );
        assert!(!text.contains("Hunter2pw"), "{text}");
        assert!(
            text.contains("postgres@"),
            "the URL without its password: {text}"
        );
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("postgresql://app:Hunter2pw@127.0.0.1:{port}/app?connect_timeout=2");
    let e = open(&nobody).err().expect("refused");
    let text = e.to_string();
    assert_eq!(
        e.db_kind(),
        Some(crate::model::error::DbErrorKind::IoError),
        "{text}"
    );
    assert!(
        text.contains("cannot open postgresql://app@127.0.0.1") && !text.contains("Hunter2pw"),
        "{text}"
    );
    assert!(open("postgresql://h/db?sslmode=verify-full").is_err());
}

#[test]
fn operations_not_reached_yet_refuse_naming_postgresql() {
    let (_db, q) = pg_or_skip!();
    let caps = q.capabilities();
    assert!(
        !caps.backup
            && !caps.checkpoint
            && !caps.vacuum
            && !caps.integrity_check
            && !caps.legacy_import
    );
    q.analyze().unwrap();
    let refusals = [
        q.backup("/tmp/x", false, &mut |_, _| Ok(())).err(),
        q.vacuum().err(),
    ];
    for e in refusals {
        let e = e.expect("refused");
        assert!(
            matches!(
                e,
                Error::Unsupported {
                    backend: "postgresql",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
