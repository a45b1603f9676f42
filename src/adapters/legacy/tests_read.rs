//! Reading the old file (`read.rs`) as a user's file may be: values of any SQLite type in any
//! column (the old table's columns were not strict), log tables without `log_id` and log lines of
//! tasks that are not there, and paths that are not an old database at all.

use super::*;
use crate::model::error::Error;
use crate::storage::sqlite::testutil::file_driver;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::Path;

/// An old file at `dir/name` made by `sql` (its tables are declared without types, so each value
/// keeps the type it was written with, as an old file written by hand or by another tool may).
fn old_file(dir: &Path, name: &str, sql: &str) -> String {
    let path = dir.join(name);
    Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    path.to_str().unwrap().to_string()
}

fn task_of(q: &SqliteDriver, legacy_id: i64) -> crate::model::task::TaskRow {
    let id = super::tests::task_id_of(q, legacy_id)
        .unwrap_or_else(|| panic!("legacy task {legacy_id} was not imported"));
    q.get(id).unwrap()
}

const UNTYPED: &str = "CREATE TABLE task_queue (id, type, payload, status, priority, attempts, \
     max_attempts, created_at_utc, error_message, idempotency_key);";

#[test]
fn integers_json_and_text_of_other_sqlite_types_are_read_as_what_they_mean() {
    let dir = tempfile::tempdir().unwrap();
    let old = old_file(
        dir.path(),
        "old.db",
        &format!(
            "{UNTYPED}
            INSERT INTO task_queue VALUES
              (1, 'a', 42, 'queued', 5.0, ' 2 ', '4.0', '2024-01-02 03:04:05Z', 7, 3.5),
              ('2', 'b', 1.5, 'completed', '', NULL, NULL, '2024-01-02 03:04Z', NULL, NULL),
              (3, 'c', X'7B2261223A317D', 'failed', NULL, 1, 1, NULL, X'6F6F7073', NULL);"
        ),
    );
    let (_d, q) = file_driver();
    let r = q.import_legacy(&old).unwrap();
    assert_eq!((r.imported, r.skipped_invalid), (3, 0), "{:?}", r.problems);
    let t1 = task_of(&q, 1);
    assert_eq!(t1.payload, "42", "an integer payload is the JSON number");
    assert_eq!((t1.priority, t1.attempts, t1.max_attempts), (5, 2, 4));
    assert_eq!(
        t1.created_at,
        parse_legacy_time("2024-01-02 03:04:05").unwrap()
    );
    assert_eq!(t1.error.as_deref(), Some("7"));
    assert_eq!(t1.idempotency_key.as_deref(), Some("3.5"));
    let t2 = task_of(&q, 2);
    assert_eq!(t2.payload, "1.5", "the text id '2' is the task 2");
    assert_eq!(
        t2.created_at,
        parse_legacy_time("2024-01-02 03:04").unwrap()
    );
    let t3 = task_of(&q, 3);
    assert_eq!(t3.payload, r#"{"a":1}"#, "UTF-8 JSON stored as a blob");
    assert_eq!(t3.error.as_deref(), Some("oops"));
}

#[test]
fn values_that_cannot_be_read_skip_their_row_quoting_the_value_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("{{{}", "x".repeat(300));
    let old = old_file(
        dir.path(),
        "old.db",
        &format!(
            "{UNTYPED}
            INSERT INTO task_queue VALUES
              (10, 'a', '{{}}', 'queued', 2.5, 0, 3, NULL, NULL, NULL),
              (11, 'a', '{{}}', 'queued', 1, 'many', 3, NULL, NULL, NULL),
              (12, 'a', '{{}}', 'queued', 1, 0, X'01', NULL, NULL, NULL),
              (13, 'a', X'FF', 'queued', 1, 0, 3, NULL, NULL, NULL),
              (14, 'a', 9e999, 'queued', 1, 0, 3, NULL, NULL, NULL),
              (15, 'a', '{{}}', 'queued', 1, 0, 3, 1704164645, NULL, NULL),
              (16, 'a', '{long}', 'queued', 1, 0, 3, NULL, NULL, NULL),
              ('x7', 'a', '{{}}', 'queued', 1, 0, 3, NULL, NULL, NULL),
              (17, 'a', '{{}}', 'queued', 1, 0, 3, NULL, NULL, NULL);"
        ),
    );
    let (_d, q) = file_driver();
    let r = q.import_legacy(&old).unwrap();
    assert_eq!((r.imported, r.skipped_invalid), (1, 8));
    let said: Vec<(Option<i64>, &str, Option<&str>, &str)> = r
        .problems
        .iter()
        .map(|p| {
            (
                p.legacy_id,
                p.column.as_str(),
                p.value.as_deref(),
                p.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        said[..6],
        [
            (Some(10), "priority", Some("2.5"), "not an integer"),
            (Some(11), "attempts", Some("many"), "not an integer"),
            (
                Some(12),
                "max_attempts",
                Some("<1 bytes of binary data>"),
                "binary data, not an integer"
            ),
            (
                Some(13),
                "payload",
                Some("<1 bytes of binary data>"),
                "the payload is binary data, not JSON text"
            ),
            (
                Some(14),
                "payload",
                Some("inf"),
                "the payload is not a finite number"
            ),
            (
                Some(15),
                "created_at_utc",
                Some("1704164645"),
                "not a time: expected text such as 2024-01-31 12:00:00"
            ),
        ]
    );
    // A long value is quoted cut to 200 characters.
    let cut = format!("{}...", &long[..200]);
    let (id, column, value, reason) = said[6];
    assert_eq!(
        (id, column, value),
        (Some(16), "payload", Some(cut.as_str()))
    );
    assert!(
        reason.starts_with("the payload is not valid JSON"),
        "{reason}"
    );
    assert_eq!(
        said[7],
        (
            None,
            "id",
            Some("x7"),
            "the id is not an integer, so the row cannot be tracked as imported"
        )
    );
    assert_eq!(said.len(), 8);
    assert!(r.problems.iter().all(|p| p.action == "skipped"));
    assert_eq!(task_of(&q, 17).payload, "{}", "the good row is imported");
    assert_eq!(
        q.stats(None).unwrap().total,
        1,
        "nothing of the bad rows was written"
    );
}

#[test]
fn log_lines_without_log_id_are_attached_and_lines_of_absent_tasks_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // No log_id column (its lines go by rowid), no workers table; the lines of tasks 0, 99 and
    // 'abc' belong to no task of task_queue.
    let old = old_file(
        dir.path(),
        "old.db",
        "CREATE TABLE task_queue (id, type, payload, status);
         INSERT INTO task_queue VALUES (1, 'a', '{}', 'queued'), (2, 'a', '{}', 'queued');
         CREATE TABLE task_logs (task_id, at_utc, level, message, details);
         INSERT INTO task_logs VALUES
           (0, NULL, 'info', 'of no task', NULL),
           (1, '2024-01-02 03:04:05', 30, 'one', 1.5),
           (1, '2024-01-02 03:04:06', 40.0, 'two', X'7B7D'),
           (1, 1704164645, X'00', 'three', X'FF'),
           (99, NULL, 'info', 'after the last task', NULL),
           ('abc', NULL, 'info', 'of a task that is not a number', NULL);",
    );
    let info = inspect_legacy(&old).unwrap();
    assert_eq!((info.tasks, info.logs, info.workers), (2, 6, 0));
    assert!(
        info.missing_columns.contains(&"priority".to_string()),
        "{:?}",
        info.missing_columns
    );
    let (_d, q) = file_driver();
    let r = q.import_legacy(&old).unwrap();
    assert_eq!((r.imported, r.logs_imported, r.logs_orphaned), (2, 3, 3));
    assert_eq!(r.legacy_workers_total, 0);
    let t1 = task_of(&q, 1);
    let logs: BTreeSet<(String, String, Option<String>)> = q
        .logs(t1.id, 100)
        .unwrap()
        .into_iter()
        .filter(|l| ["one", "two"].contains(&l.message.as_str()) || l.message.ends_with("three"))
        .map(|l| (l.level, l.message, l.details))
        .collect();
    let expected: BTreeSet<(String, String, Option<String>)> = [
        ("warning", "one", Some("1.5")),
        ("error", "two", Some("{}")),
        // A level that is binary data is info, named at the head; details that are not JSON
        // are kept as a JSON string.
        ("info", "[<blob>] three", Some("\"\u{fffd}\"")),
    ]
    .into_iter()
    .map(|(l, m, d)| (l.to_string(), m.to_string(), d.map(str::to_string)))
    .collect();
    assert_eq!(logs, expected);
    // The line whose time is a number is imported with the task's created time, and said.
    let p = r
        .problems
        .iter()
        .find(|p| p.column == "at_utc")
        .expect("the unreadable log time is listed");
    assert_eq!(
        (p.legacy_id, p.log_id, p.value.as_deref()),
        (Some(1), Some(4), Some("1704164645"))
    );
    assert_eq!(p.action, "imported with the task's created time");
}

#[test]
fn paths_that_are_not_an_old_database_are_refused_saying_what_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, q) = file_driver();
    let refusal = |path: &str| match q.import_legacy(path) {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("{path}: {:?}", other.map(|r| r.imported)),
    };
    let m = refusal("");
    assert!(m.starts_with("give the path of the old database"), "{m}");
    let m = refusal(dir.path().to_str().unwrap());
    assert!(
        m.contains("is a directory") && m.contains("task_queue"),
        "{m}"
    );
    // Another queue's file (the new format), not the old one.
    let (_other_dir, other) = file_driver();
    let m = refusal(other.path());
    assert!(m.contains("it is a prismq_queue database already"), "{m}");
    // A log table whose lines cannot be attached to tasks.
    let old = old_file(
        dir.path(),
        "nolink.db",
        "CREATE TABLE task_queue (id, type, payload, status);
         CREATE TABLE task_logs (log_id, at_utc, text);",
    );
    let m = refusal(&old);
    assert!(
        m.contains("table task_logs lacks the columns task_id, message"),
        "{m}"
    );
    let old = old_file(
        dir.path(),
        "nomessage.db",
        "CREATE TABLE task_queue (id, type, payload, status);
         CREATE TABLE task_logs (task_id, at_utc);",
    );
    let m = refusal(&old);
    assert!(
        m.contains("table task_logs lacks the column message,"),
        "{m}"
    );
    assert!(matches!(
        inspect_legacy(&old),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(q.stats(None).unwrap().total, 0);
}
