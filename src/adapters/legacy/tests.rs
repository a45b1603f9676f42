//! The import, end to end on old-format files.

use super::read::normalise_level;
use super::*;
use crate::model::claim::ClaimRequest;
use crate::model::error::Error;
use crate::model::task::Status;
use crate::model::time::now_ms;
use crate::storage::sqlite::testutil::file_driver;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

const LEGACY_SCHEMA: &str = "
        CREATE TABLE task_queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, priority INTEGER DEFAULT 100,
            payload TEXT, compatibility TEXT, status TEXT, attempts INTEGER DEFAULT 0,
            max_attempts INTEGER DEFAULT 3, run_after_utc TEXT, lease_until_utc TEXT, reserved_at_utc TEXT,
            processing_started_utc TEXT, finished_at_utc TEXT, locked_by TEXT, error_message TEXT,
            idempotency_key TEXT UNIQUE, created_at_utc TEXT, updated_at_utc TEXT);
        CREATE TABLE workers (worker_id TEXT PRIMARY KEY, capabilities TEXT, heartbeat_utc TEXT);
        CREATE TABLE task_logs (log_id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER, at_utc TEXT,
            level TEXT, message TEXT, details TEXT);";

fn ms(s: &str) -> i64 {
    parse_legacy_time(s).unwrap()
}

/// An old-format file at `dir/old.db` with the given extra SQL run after the schema.
fn legacy_file(dir: &Path, sql: &str) -> String {
    let path = dir.join("old.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(LEGACY_SCHEMA).unwrap();
    c.execute_batch(sql).unwrap();
    path.to_str().unwrap().to_string()
}

pub(super) fn task_id_of(q: &SqliteDriver, legacy_id: i64) -> Option<i64> {
    q.db.read(|c| {
        Ok(c.query_row(
            "SELECT task_id FROM legacy_imports WHERE legacy_id = ?1",
            [legacy_id],
            |r| r.get(0),
        )
        .optional()?)
    })
    .unwrap()
}

#[test]
fn times_in_both_formats_become_utc_milliseconds() {
    let base = 1_704_164_645_000; // 2024-01-02 03:04:05 UTC
    for s in [
        "2024-01-02 03:04:05",
        "2024-01-02T03:04:05",
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05+00:00",
        "2024-01-02 03:04:05+00:00",
        "2024-01-02T05:04:05+02:00",
        "2024-01-02T00:04:05-0300",
        " 2024-01-02 03:04:05 ",
    ] {
        assert_eq!(parse_legacy_time(s), Some(base), "{s}");
    }
    for (s, extra) in [
        ("2024-01-02 03:04:05.25", 250),
        ("2024-01-02T03:04:05.123456+00:00", 123),
        ("2024-01-02T03:04:05.5Z", 500),
        ("2024-01-02 03:04", -5000),
        ("2024-01-02", -(3 * 3600 + 4 * 60 + 5) * 1000),
    ] {
        assert_eq!(parse_legacy_time(s), Some(base + extra), "{s}");
    }
    for bad in [
        "yesterday",
        "2024-13-01 00:00:00",
        "2024-01-02 25:00:00",
        "1704164645",
        "",
    ] {
        assert_eq!(parse_legacy_time(bad), None, "{bad}");
    }
}

#[test]
fn log_levels_are_normalised() {
    let t = |s: &str| normalise_level(&Sql::Text(s.into()));
    assert_eq!(t("INFO"), ("info", None));
    assert_eq!(t("Warn"), ("warning", None));
    assert_eq!(t("ERROR"), ("error", None));
    assert_eq!(t("fatal"), ("critical", None));
    assert_eq!(t("trace"), ("debug", None));
    assert_eq!(t("40"), ("error", None));
    assert_eq!(normalise_level(&Sql::Integer(10)), ("debug", None));
    assert_eq!(normalise_level(&Sql::Null), ("info", None));
    assert_eq!(t("loud"), ("info", Some("loud".into())));
}

#[test]
fn every_status_and_field_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let old = legacy_file(
        dir.path(),
        r#"
            INSERT INTO task_queue VALUES
              (1, 'email', 5, '{"to": "a@x"}', '{}', 'queued', 0, 3, '2030-01-01 00:00:00', NULL, NULL, NULL, NULL,
               NULL, NULL, 'k1', '2024-01-02 03:04:05', '2024-01-02T03:04:06+00:00'),
              (2, 'render', 2000, '[1, 2.50, "x"]', '{"gpu": true}', 'leased', 1, 3, '2024-01-02 03:00:00',
               '2024-01-02 03:10:00', '2024-01-02 03:05:00', NULL, NULL, 'w1', NULL, NULL,
               '2024-01-02T03:00:00Z', '2024-01-02T03:05:00Z'),
              (3, 'render', -4, 'null', NULL, 'processing', 2, 2, NULL, NULL, NULL, '2024-01-02 04:00:00', NULL,
               'w2', NULL, NULL, '2024-01-02 03:00:00', NULL),
              (4, 'email', 100, '{}', 'null', 'completed', 1, 3, NULL, NULL, NULL, '2024-01-02 03:04:05',
               '2024-01-02 03:04:09.5', 'w1', NULL, NULL, '2024-01-02 03:00:00', '2024-01-02 03:04:09'),
              (5, 'email', 100, '{}', NULL, 'failed', 3, 3, NULL, NULL, NULL, NULL, '2024-01-02 05:00:00',
               'w1', 'boom', NULL, '2024-01-02 03:00:00', '2024-01-02 05:00:00'),
              (6, 'email', 100, '{}', NULL, 'dead_letter', 3, 3, NULL, NULL, NULL, NULL, NULL, NULL, 'gave up',
               NULL, '2024-01-02 03:00:00', '2024-01-02 06:00:00');
            INSERT INTO task_logs (task_id, at_utc, level, message, details) VALUES
              (4, '2024-01-02 03:04:05', 'INFO', 'started', '{"n": 1}'),
              (4, '2024-01-02T03:04:09Z', 'Warn', 'slow', 'plain text'),
              (4, 'garbage', 'trace2', 'odd', NULL),
              (99, '2024-01-02 03:04:05', 'error', 'orphan', NULL);
            INSERT INTO workers VALUES ('w1', '{"gpu": true}', '2024-01-02 03:05:00');"#,
    );
    let before = std::fs::read(&old).unwrap();
    let (_d, q) = file_driver();
    let mut calls = Vec::new();
    let r = q
        .import_legacy_with(&old, 4, &mut |d, t| {
            calls.push((d, t));
            Ok(())
        })
        .unwrap();
    assert_eq!(calls, vec![(0, 6), (4, 6), (6, 6)]);
    assert_eq!((r.total, r.imported, r.skipped_invalid), (6, 6, 0));
    assert_eq!(
        r.by_status,
        BTreeMap::from([
            ("completed".into(), 1),
            ("failed".into(), 2),
            ("queued".into(), 3)
        ])
    );
    assert_eq!(r.by_legacy_status["dead_letter"], 1);
    assert_eq!((r.requeued_from_lease, r.priority_clamped), (2, 2));
    assert_eq!((r.logs_imported, r.logs_orphaned), (3, 1));
    assert!(
        r.notes.iter().any(|n| n.contains("from -4 to 2000")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.legacy_workers_total, 1);
    assert_eq!(
        r.legacy_workers[0].capabilities.as_deref(),
        Some(r#"{"gpu": true}"#)
    );
    assert_eq!(r.problem_count, 1, "{:?}", r.problems);
    assert_eq!(
        (r.problems[0].log_id, r.problems[0].column.as_str()),
        (Some(3), "at_utc")
    );

    let t1 = q.get(task_id_of(&q, 1).unwrap()).unwrap();
    assert_eq!(
        (
            t1.task_type.as_str(),
            t1.payload.as_str(),
            t1.priority,
            t1.status
        ),
        ("email", r#"{"to": "a@x"}"#, 5, Status::Queued)
    );
    assert_eq!(
        (t1.requires.as_deref(), t1.idempotency_key.as_deref()),
        (None, Some("k1"))
    );
    assert_eq!(t1.run_after, ms("2030-01-01 00:00:00"));
    assert_eq!(
        (t1.created_at, t1.updated_at),
        (ms("2024-01-02 03:04:05"), ms("2024-01-02 03:04:06"))
    );

    let t2 = q.get(task_id_of(&q, 2).unwrap()).unwrap();
    assert_eq!(
        t2.payload, "[1, 2.50, \"x\"]",
        "payload text kept byte for byte"
    );
    assert_eq!(
        (t2.status, t2.priority, t2.attempts),
        (Status::Queued, 1000, 1)
    );
    assert_eq!((t2.locked_by, t2.lease_until), (None, None));
    assert_eq!(t2.requires.as_deref(), Some(r#"{"gpu":true}"#));
    assert_eq!(t2.run_after, ms("2024-01-02 03:00:00"));
    let logs = q.logs(t2.id, 10).unwrap();
    assert!(logs
        .iter()
        .any(|l| l.message.starts_with("imported from a lease") && l.message.contains("w1")));
    assert!(logs
        .iter()
        .any(|l| l.level == "warning" && l.message.contains("priority 2000")));

    let t3 = q.get(task_id_of(&q, 3).unwrap()).unwrap();
    assert_eq!(
        (t3.status, t3.priority, t3.attempts, t3.max_attempts),
        (Status::Queued, 1, 2, 2)
    );
    assert!(t3.run_after <= now_ms());
    assert_eq!(t3.started_at, Some(ms("2024-01-02 04:00:00")));

    let t4 = q.get(task_id_of(&q, 4).unwrap()).unwrap();
    assert_eq!(
        (t4.status, t4.locked_by.as_deref()),
        (Status::Completed, Some("w1"))
    );
    assert_eq!(t4.finished_at, Some(ms("2024-01-02 03:04:09.5")));
    let logs = q.logs(t4.id, 10).unwrap();
    let summary: Vec<(&str, &str, Option<&str>)> = logs
        .iter()
        .map(|l| (l.level.as_str(), l.message.as_str(), l.details.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("info", "started", Some(r#"{"n": 1}"#)),
            ("warning", "slow", Some(r#""plain text""#)),
            ("info", "[trace2] odd", None),
        ]
    );
    assert_eq!(logs[0].at, ms("2024-01-02 03:04:05"));
    assert_eq!(
        logs[2].at, t4.created_at,
        "an unreadable log time falls back to the task's"
    );

    let t5 = q.get(task_id_of(&q, 5).unwrap()).unwrap();
    assert_eq!(
        (t5.status, t5.error.as_deref()),
        (Status::Failed, Some("boom"))
    );
    let t6 = q.get(task_id_of(&q, 6).unwrap()).unwrap();
    assert_eq!(
        (t6.status, t6.finished_at),
        (Status::Failed, Some(ms("2024-01-02 06:00:00")))
    );

    // Routing: the GPU task only goes to a worker that has a GPU.
    let mut cpu = ClaimRequest::new("cpu");
    cpu.limit = 10;
    let got: Vec<i64> = q.claim(&cpu).unwrap().iter().map(|t| t.id).collect();
    assert_eq!(got, vec![t3.id]);
    let mut gpu = ClaimRequest::new("gpu");
    gpu.filter.capabilities = json!({"gpu": true}).as_object().cloned();
    assert_eq!(q.claim(&gpu).unwrap()[0].id, t2.id);

    // Twice: nothing new, and the old file is byte for byte the same.
    let again = q.import_legacy(&old).unwrap();
    assert_eq!(
        (
            again.imported,
            again.skipped_already_imported,
            again.logs_imported
        ),
        (0, 6, 0)
    );
    assert_eq!(q.stats(None).unwrap().total, 6);
    assert_eq!(std::fs::read(&old).unwrap(), before);
}

#[test]
fn bad_rows_are_skipped_reported_and_imported_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let old = legacy_file(
        dir.path(),
        r#"
            INSERT INTO task_queue (id, type, payload, status, created_at_utc) VALUES
              (1, 'a', '{"ok": 1}', 'queued', '2024-01-02 03:04:05'),
              (2, 'a', '{broken', 'queued', '2024-01-02 03:04:05'),
              (3, 'a', '{}', 'queued', 'next tuesday'),
              (4, 'a', '{}', 'paused', '2024-01-02 03:04:05'),
              (5, 'a', '{}', 'queued', '2024-01-02 03:04:05');
            UPDATE task_queue SET compatibility = '["gpu"]' WHERE id = 5;
            INSERT INTO task_logs (task_id, at_utc, level, message) VALUES (2, '2024-01-02 03:04:05', 'info', 'two');"#,
    );
    let (_d, q) = file_driver();
    let r = q.import_legacy(&old).unwrap();
    assert_eq!((r.imported, r.skipped_invalid), (1, 4));
    let cols: Vec<(Option<i64>, &str)> = r
        .problems
        .iter()
        .map(|p| (p.legacy_id, p.column.as_str()))
        .collect();
    assert_eq!(
        cols,
        vec![
            (Some(2), "payload"),
            (Some(3), "created_at_utc"),
            (Some(4), "status"),
            (Some(5), "compatibility")
        ]
    );
    assert!(r.problems.iter().all(|p| p.action == "skipped"));
    assert_eq!(r.problems[0].value.as_deref(), Some("{broken"));
    assert_eq!(
        r.logs_orphaned, 0,
        "a skipped row's logs wait for it, they are not orphans"
    );

    let c = Connection::open(&old).unwrap();
    c.execute_batch(
        "UPDATE task_queue SET payload = '{\"fixed\": true}' WHERE id = 2;
             UPDATE task_queue SET status = 'queued' WHERE id = 4;",
    )
    .unwrap();
    drop(c);
    let r = q.import_legacy(&old).unwrap();
    assert_eq!(
        (
            r.imported,
            r.skipped_already_imported,
            r.skipped_invalid,
            r.logs_imported
        ),
        (2, 1, 2, 1)
    );
    let t2 = q.get(task_id_of(&q, 2).unwrap()).unwrap();
    assert_eq!(t2.payload, r#"{"fixed": true}"#);
    assert_eq!(q.logs(t2.id, 10).unwrap()[0].message, "two");
}

#[test]
fn an_idempotency_key_already_in_the_queue_maps_to_that_task() {
    let dir = tempfile::tempdir().unwrap();
    let old = legacy_file(
            dir.path(),
            "INSERT INTO task_queue (id, type, payload, status, idempotency_key) VALUES
               (1, 'a', '1', 'queued', 'same'), (2, 'a', '2', 'completed', 'fresh');
             INSERT INTO task_logs (task_id, at_utc, level, message) VALUES (1, '2024-01-02 03:04:05', 'info', 'old line');",
        );
    let (_d, q) = file_driver();
    let mut t = crate::model::new_task::NewTask::new("a", "0");
    t.idempotency_key = Some("same".into());
    let existing = q.enqueue(&t).unwrap();
    let r = q.import_legacy(&old).unwrap();
    assert_eq!((r.imported, r.mapped_to_existing), (1, 1));
    assert_eq!(task_id_of(&q, 1), Some(existing));
    assert_eq!(
        q.get(existing).unwrap().payload,
        "0",
        "the existing task is not overwritten"
    );
    let logs = q.logs(existing, 10).unwrap();
    assert_eq!(logs[0].message, "old line");
    assert!(
        logs[1].message.contains("idempotency key"),
        "{}",
        logs[1].message
    );
    assert_eq!(q.stats(None).unwrap().total, 2);
    let r = q.import_legacy(&old).unwrap();
    assert_eq!(
        (r.imported, r.mapped_to_existing, r.skipped_already_imported),
        (0, 0, 2)
    );
}

#[test]
fn an_interrupted_import_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let old = legacy_file(
            dir.path(),
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25)
             INSERT INTO task_queue (id, type, payload, status) SELECT i, 't', i, 'queued' FROM n;
             INSERT INTO task_logs (task_id, at_utc, level, message) SELECT id, NULL, 'info', 'x' FROM task_queue;",
        );
    let (_d, q) = file_driver();
    let e = q
        .import_legacy_with(&old, 10, &mut |done, _| {
            if done >= 10 {
                Err(Error::Database("stopped".into()))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "stopped");
    assert_eq!(
        q.stats(None).unwrap().total,
        10,
        "the first batch committed whole"
    );
    let r = q.import_legacy_with(&old, 10, &mut |_, _| Ok(())).unwrap();
    assert_eq!(
        (r.imported, r.skipped_already_imported, r.logs_imported),
        (15, 10, 15)
    );
    assert_eq!(q.stats(None).unwrap().total, 25);
    let log_count: i64 =
        q.db.read(|c| Ok(c.query_row("SELECT count(*) FROM task_logs", [], |r| r.get(0))?))
            .unwrap();
    assert_eq!(log_count, 25);
}

#[test]
fn what_is_not_a_legacy_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, q) = file_driver();
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "just some text, long enough to look like a file with a header",
    )
    .unwrap();
    let e = q.import_legacy(text.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(
        e.to_string().contains("is not a SQLite database") && e.to_string().contains("task_queue"),
        "{e}"
    );

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE jobs (id INTEGER)")
        .unwrap();
    let e = q
        .import_legacy(other.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has no table task_queue (it has the tables jobs)"),
        "{e}"
    );

    let partial = dir.path().join("partial.db");
    Connection::open(&partial)
        .unwrap()
        .execute_batch("CREATE TABLE task_queue (id INTEGER, type TEXT)")
        .unwrap();
    let e = q
        .import_legacy(partial.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("lacks the columns payload, status"), "{e}");

    let e = q.import_legacy(q.path()).unwrap_err().to_string();
    assert!(e.contains("own file"), "{e}");
    let e = q
        .import_legacy(dir.path().join("missing.db").to_str().unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!dir.path().join("missing.db").exists());
    assert_eq!(q.stats(None).unwrap().total, 0);
}

#[test]
fn inspect_counts_without_importing() {
    let dir = tempfile::tempdir().unwrap();
    let old = legacy_file(
            dir.path(),
            "INSERT INTO task_queue (id, type, payload, status) VALUES (1, 'a', '1', 'queued'), (2, 'a', '1', 'leased');",
        );
    let info = inspect_legacy(&old).unwrap();
    assert_eq!((info.tasks, info.logs, info.workers), (2, 0, 0));
    assert_eq!(info.by_status["leased"], 1);
    assert!(info.missing_columns.is_empty());
}
