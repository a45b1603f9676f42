//! The database schema, owned by the core and versioned with `PRAGMA user_version`.
//!
//! Each entry of `MIGRATIONS` moves the file from version `i` to `i + 1` and runs inside one
//! `BEGIN IMMEDIATE` transaction, so concurrent openers serialise on the write lock and the
//! second one finds the work already done.

use crate::model::error::{DbErrorKind, Error, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V_LIMITS];

/// The newest schema version this build understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const V1: &str = r#"
-- A lane is one (queue, type, requires) combination. Claim indexes lead with lane_id, so a worker
-- restricted to some queues, types or capabilities probes only its lanes: O(lanes * log n), never a
-- scan past tasks it may not take.
CREATE TABLE lanes (
    id       INTEGER PRIMARY KEY,
    queue    TEXT NOT NULL,
    type     TEXT NOT NULL,
    requires TEXT NOT NULL DEFAULT '',   -- canonical JSON object, '' when the task requires nothing
    UNIQUE (queue, type, requires)
);

CREATE TABLE tasks (
    id              INTEGER PRIMARY KEY,
    lane_id         INTEGER NOT NULL,           -- lanes.id; lanes are never deleted (no FK: one less lookup per insert)
    type            TEXT NOT NULL,
    queue           TEXT NOT NULL,
    payload         TEXT NOT NULL,              -- JSON
    priority        INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 1000),
    status          TEXT NOT NULL CHECK (status = 'queued' OR status = 'running' OR status = 'completed' OR status = 'failed' OR status = 'cancelled'),
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_after       INTEGER NOT NULL,           -- ms since epoch, UTC: not claimable before
    wkey            REAL NOT NULL,              -- weighted-random race key (see claim::strategy)
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    updated_at      INTEGER NOT NULL,
    locked_by       TEXT,
    lease_until     INTEGER,
    lease_token     INTEGER,
    error           TEXT,
    result          TEXT,                       -- JSON
    progress        REAL,
    step            TEXT,
    message         TEXT,
    idempotency_key TEXT,
    requires        TEXT,                       -- JSON object or NULL
    timeout_ms      INTEGER,
    retry_policy    TEXT                        -- JSON object or NULL: per-task backoff overrides
);

-- Claim indexes: partial on queued rows so they stay as small as the backlog, and each matches the
-- ORDER BY of its strategy exactly (checked by EXPLAIN QUERY PLAN in the tests).
CREATE INDEX tasks_claim_priority ON tasks (lane_id, priority, run_after, id) WHERE status = 'queued';
CREATE INDEX tasks_claim_time     ON tasks (lane_id, run_after, id)           WHERE status = 'queued';
CREATE INDEX tasks_claim_weighted ON tasks (lane_id, wkey)                    WHERE status = 'queued';
-- Lease expiry (the rescuer) only ever looks at running rows.
CREATE INDEX tasks_lease          ON tasks (lease_until)                      WHERE status = 'running';
-- Dead letters and cancellations: rare, listed by operators. (There is deliberately no index on
-- status for every row: each index costs every insert and every state change, and the queued
-- and running rows are already covered by the partial indexes above.)
CREATE INDEX tasks_dead           ON tasks (status, id)                       WHERE status IN ('failed', 'cancelled');
-- Purge of finished tasks by age; also counts finished tasks for stats.
CREATE INDEX tasks_finished       ON tasks (finished_at, status)              WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)              WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_logs (
    id      INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    at      INTEGER NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT                               -- JSON or NULL
);
CREATE INDEX task_logs_task ON task_logs (task_id, id);

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    host           TEXT,
    pid            INTEGER,
    capabilities   TEXT,                       -- JSON object
    queues         TEXT,                       -- JSON array or NULL for all
    started_at     INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    tasks_done     INTEGER NOT NULL DEFAULT 0
);

-- Per-queue settings shared by every process on the file (retry policy for now).
CREATE TABLE queue_config (
    queue        TEXT PRIMARY KEY,
    retry_policy TEXT NOT NULL
);

-- Small shared state: the weighted-random clock.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
);
INSERT INTO meta (key, value) VALUES ('wclock', 0.0);

-- Rows already brought over by `import-legacy`, so a second run imports nothing twice.
CREATE TABLE legacy_imports (
    source    TEXT NOT NULL,
    legacy_id INTEGER NOT NULL,
    task_id   INTEGER NOT NULL,
    PRIMARY KEY (source, legacy_id)
);
"#;

/// V2: runs of the task manager adapter (`RunRegistry`, `QueuedTaskManager`).
const V2: &str = r#"
-- One row per run id. `data` holds the whole run as JSON (the registry's model); the other
-- columns copy what the registry's queries filter and sort on. A run started by the manager is
-- also a task (idempotency_key = run_id); this table is the run's own record.
CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    module_id    TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,             -- ms since epoch, UTC
    completed_at INTEGER,                      -- ms since epoch, UTC; NULL until the run finished
    updated_at   INTEGER NOT NULL,
    data         TEXT NOT NULL                 -- JSON object
);
-- Each registry query walks one index in its ORDER BY order (rowid breaks ties: insertion order).
CREATE INDEX runs_created   ON runs (created_at);                                              -- recent runs
CREATE INDEX runs_active    ON runs (created_at) WHERE status IN ('queued', 'running');        -- active runs
CREATE INDEX runs_status    ON runs (status, created_at);                                      -- runs by status
CREATE INDEX runs_module    ON runs (module_id, created_at);                                   -- runs by module
CREATE INDEX runs_completed ON runs (completed_at) WHERE completed_at IS NOT NULL;             -- cleanup by age
"#;

/// V3: queued tasks waiting to retry, for `metrics()`.
const V3: &str = r#"
-- Queued tasks that already spent an attempt (a failure with a backoff, or an expired lease):
-- metrics() counts them per lane from this index alone, instead of visiting every queued row. A
-- first attempt never enters it, so enqueue and the usual claim only evaluate its condition.
CREATE INDEX tasks_retrying ON tasks (lane_id) WHERE status = 'queued' AND attempts > 0;
"#;

/// V4: `run_after` in the weighted-random claim index.
const V4: &str = r#"
-- The weighted claim walks (lane_id, wkey) and steps over tasks that are not due yet. A delayed
-- task (or a retry waiting out its backoff) keeps the key it drew when it was queued, so as the
-- race clock moves on it stays at the head of its lane and every weighted claim steps over it.
-- With run_after in the index that step is an index comparison instead of a visit to the table
-- row: weighted claims 1.6-1.8x faster (CPU p50) with 5% of 100,000 tasks delayed. Same name, same order.
DROP INDEX tasks_claim_weighted;
CREATE INDEX tasks_claim_weighted ON tasks (lane_id, wkey, run_after) WHERE status = 'queued';
"#;

/// V5: `lane_id` in the indexes of finished tasks, for counts per queue.
const V5: &str = r#"
-- stats(queue=...) counts the finished tasks of one queue. Without lane_id in these indexes
-- every finished task of every queue was read from the table to test its queue: the per-queue
-- count cost more than the global one, and grew with the whole retained history. With it the
-- count stays inside the index (the lanes of the queue are a handful of integers). Same names,
-- same leading columns, so every other use (purge and metrics by finished_at, dead letters by
-- id) walks them as before; an entry grows by one small integer.
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (finished_at, status, lane_id) WHERE finished_at IS NOT NULL;
DROP INDEX tasks_dead;
CREATE INDEX tasks_dead     ON tasks (status, id, lane_id)         WHERE status IN ('failed', 'cancelled');
"#;

/// V6: the weighted claim index only on files that claim weighted random (see `claim::indexes`).
const V6: &str = r#"
-- Its keys are random, so every enqueue and every claim in another order wrote it at a random
-- page. The first weighted-random claim on a file creates it again, from the keys in the rows.
DROP INDEX tasks_claim_weighted;
"#;

/// V7: the FIFO/LIFO claim index only on files that claim FIFO or LIFO (see `claim::indexes`).
const V7: &str = r#"
-- Stats, metrics and change counts walk tasks_claim_priority instead, which holds every queued
-- task too. The first FIFO or LIFO claim on a file creates this index again, from the rows.
DROP INDEX tasks_claim_time;
"#;

/// V8: leases end on the lease clock (see `clock`), not on the wall clock.
const V8: &str = r#"
-- The boots of the machine that have opened this file, numbered in the order they first did.
CREATE TABLE boots (
    seq        INTEGER PRIMARY KEY,
    boot_id    TEXT NOT NULL UNIQUE,
    first_seen INTEGER NOT NULL                -- ms since epoch, UTC
);
-- When the lease of a running task ends: (boots.seq << 42) | the machine's monotonic clock in
-- ms. lease_until stays, on the wall clock, for people to read.
ALTER TABLE tasks ADD COLUMN lease_key INTEGER;
-- The rescuer walks running tasks in lease_key order. Same name, same partial condition: every
-- count and listing of running tasks that names it keeps working.
DROP INDEX tasks_lease;
CREATE INDEX tasks_lease ON tasks (lease_key) WHERE status = 'running';
"#;

/// V9: each attempt's error and traceback (see `attempts`).
const V9: &str = r#"
-- One row per attempt that ended without success (a reported failure, an expired lease, an
-- interrupted run), written in the transaction that ends it; completions write none. A task keeps
-- its latest 25; its purge deletes them with it. Failures recorded before this version have no
-- row: their last error stays in tasks.error.
CREATE TABLE task_attempts (
    task_id      INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,           -- 1, 2, ... per task, in the order attempts ended; never restarted
    number       INTEGER NOT NULL,           -- tasks.attempts of that attempt (retry() restarts it)
    max_attempts INTEGER NOT NULL,
    worker       TEXT,
    started_at   INTEGER,                    -- ms since epoch, UTC
    finished_at  INTEGER NOT NULL,
    outcome      TEXT NOT NULL,              -- 'failed', 'lease_expired' or 'interrupted'
    error        TEXT NOT NULL,              -- at most 16 KiB, its beginning
    traceback    TEXT,                       -- at most 64 KiB, its end
    UNIQUE (task_id, seq)
);
"#;

/// Limits of queues and task types (see `limits`): one row per (queue, type), with the rate's
/// token bucket. Running tasks are counted from `tasks` at claim time, never kept here, so a
/// worker killed mid-task leaks no slot.
const V_LIMITS: &str = r#"
CREATE TABLE limits (
    queue       TEXT NOT NULL,
    type        TEXT NOT NULL,              -- '' = every type of the queue
    concurrency INTEGER,
    per         TEXT,                       -- a top-level payload key: concurrency per value
    rate_count  INTEGER,                    -- the rate: rate_count tasks per rate_period ms
    rate_period INTEGER,
    tokens      REAL NOT NULL,              -- the bucket as of refilled_at (ms, the claim's clock)
    refilled_at INTEGER NOT NULL,
    PRIMARY KEY (queue, type)
) WITHOUT ROWID;
"#;

/// Work a migration needs beyond its SQL, in the same transaction (`version`: the version the
/// file has after the step).
fn after_step(tx: &rusqlite::Transaction, version: i64) -> Result<()> {
    if version == 8 {
        crate::storage::sqlite::clock::migrate_leases(tx)?;
    }
    Ok(())
}

/// The CHECK on `tasks.status` as first written in V1, and the equivalent form V1 now has. SQLite
/// evaluates a constant `IN` list of more than two values by building a temporary B-tree, and a
/// CHECK runs on every statement that writes `status` (each enqueue, claim, complete, fail...):
/// a large share of the CPU of enqueue and claim+complete (figures: benches/README.md, "Figures
/// behind the code's comments"). The `OR` chain is five
/// comparisons. A CHECK does not change how rows are stored, so a file created with the old text
/// gets the new one in place (`upgrade_status_check`), without a version bump: older builds open
/// either file alike.
const STATUS_CHECK_OLD: &str =
    "CHECK (status IN ('queued','running','completed','failed','cancelled'))";
const STATUS_CHECK: &str =
    "CHECK (status = 'queued' OR status = 'running' OR status = 'completed' \
     OR status = 'failed' OR status = 'cancelled')";

/// Bring the file up to `SCHEMA_VERSION`, or refuse a file from a newer library.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_versions(conn)?;
    upgrade_status_check(conn)
}

fn tasks_sql(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Swap the old status CHECK for the equivalent cheap one in a file created before the change:
/// only the table's text in `sqlite_master` is rewritten (the procedure SQLite documents for
/// changing a constraint in place; every row already satisfies the equivalent constraint).
/// Idempotent, and done under the write lock, so concurrent openers do it once.
fn upgrade_status_check(conn: &mut Connection) -> Result<()> {
    if !tasks_sql(conn)?.is_some_and(|s| s.contains(STATUS_CHECK_OLD)) {
        return Ok(());
    }
    let rewrite = (|| -> Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(sql) = tasks_sql(&tx)?.filter(|s| s.contains(STATUS_CHECK_OLD)) {
            let cookie: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
            tx.execute_batch("PRAGMA writable_schema = ON")?;
            tx.execute(
                "UPDATE sqlite_master SET sql = ?1 WHERE type = 'table' AND name = 'tasks'",
                [sql.replace(STATUS_CHECK_OLD, STATUS_CHECK)],
            )?;
            // Other connections reload the schema when they see the new cookie.
            tx.pragma_update(None, "schema_version", cookie + 1)?;
        }
        tx.commit()?;
        Ok(())
    })();
    // Always leave writable_schema off, and reload this connection's schema: setting
    // schema_version above also moved the cookie it compares against.
    conn.execute_batch("PRAGMA writable_schema = RESET")?;
    rewrite
}

/// A schema version past ours is taken for a newer release's only within this distance: more
/// releases than that cannot be, so a larger number is a damaged version field.
const MAX_NEWER_VERSIONS: i64 = 100;

/// The version field (`PRAGMA user_version`) read as a schema version, or the reason it cannot be
/// one: a version no release wrote, or one the tables contradict, is a damaged file, never a
/// schema to upgrade to.
fn checked_version(conn: &Connection) -> Result<i64> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has = |table: &str| -> Result<bool> {
        Ok(conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    };
    let ours = has("tasks")? && has("lanes")?;
    let foreign: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        [],
        |r| r.get(0),
    )?;
    if foreign && !ours {
        // Someone else's database, which may use the version field as it likes: read as 0, so
        // `refuse_foreign_tables` says what it is.
        return Ok(0);
    }
    let why = if version < 0 {
        Some("a negative number".to_string())
    } else if version > SCHEMA_VERSION + MAX_NEWER_VERSIONS {
        Some(format!(
            "far beyond any release (this one writes {SCHEMA_VERSION})"
        ))
    } else if version > 0 && !ours {
        Some("but the file has no tables".to_string())
    } else if version == 0 && ours {
        Some("but the file has prismq_queue's tables".to_string())
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::db(
            DbErrorKind::Corrupt,
            format!(
                "the database file is damaged: its schema version field reads {version}, {why}; \
                 no release of prismq_queue wrote that. Check it with `PRAGMA integrity_check` (Queue.integrity_check) \
                 and restore it from a backup (`prismq-queue restore`); do not upgrade prismq_queue for it"
            ),
        )),
        None => Ok(version),
    }
}

fn migrate_versions(conn: &mut Connection) -> Result<()> {
    let version = checked_version(conn)?;
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaVersion {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated while we waited for it.
    let version = checked_version(&tx)?;
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaVersion {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        refuse_foreign_tables(&tx)?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        after_step(&tx, (i + 1) as i64)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

/// A version-0 file that already has tables is someone else's database (or the legacy queue):
/// creating our schema inside it would mix the two, so say what to do instead.
fn refuse_foreign_tables(tx: &rusqlite::Transaction) -> Result<()> {
    let tables: Vec<String> = tx
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if tables.is_empty() {
        return Ok(());
    }
    let hint = if tables.iter().any(|t| t == "task_queue") {
        "it looks like a database of the older Python queue: import it with `prismq-queue import-legacy OLD.db --db NEW.db`"
    } else {
        "open a new path for the queue"
    };
    Err(Error::Database(format!(
        "the file is a SQLite database that is not a prismq_queue database (it has tables {}); {hint}",
        tables.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::options::QueueOptions;
    use crate::storage::sqlite::SqliteDriver;

    #[test]
    fn new_file_is_migrated_and_future_version_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let p = path.to_str().unwrap();
        drop(
            SqliteDriver::open(
                p,
                QueueOptions::default(),
                Box::new(|| {}),
                crate::testutil::RULES,
            )
            .unwrap(),
        );
        let c = Connection::open(p).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(c);
        match SqliteDriver::open(
            p,
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        ) {
            Err(Error::SchemaVersion { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
            }
            other => panic!("expected SchemaVersion, got {:?}", other.err()),
        }
    }

    #[test]
    fn old_status_check_is_rewritten_in_place_and_still_enforced() {
        assert!(V1.contains(STATUS_CHECK) && !V1.contains(STATUS_CHECK_OLD));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let p = path.to_str().unwrap();
        // A file as earlier builds created it, with a task in it.
        let mut c = Connection::open(p).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        c.execute_batch(&V1.replace(STATUS_CHECK, STATUS_CHECK_OLD))
            .unwrap();
        for sql in &MIGRATIONS[1..] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", SCHEMA_VERSION)
            .unwrap();
        c.execute_batch(
            "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, max_attempts, run_after, wkey,
                                created_at, updated_at) VALUES (1, 'x', 'default', 'null', 5, 'queued', 1, 0, 0.0, 0, 0)",
        )
        .unwrap();
        // Another connection holds the old schema in memory while the file changes under it.
        let other = Connection::open(p).unwrap();
        other.execute_batch("SELECT count(*) FROM tasks").unwrap();

        migrate(&mut c).unwrap();
        let sql = tasks_sql(&c).unwrap().unwrap();
        assert!(
            sql.contains(STATUS_CHECK) && !sql.contains(STATUS_CHECK_OLD),
            "{sql}"
        );
        migrate(&mut c).unwrap(); // idempotent
                                  // The other connection notices the new schema cookie at its next statement.
        other.execute_batch("SELECT count(*) FROM tasks").unwrap();
        for conn in [&c, &other] {
            // Both connections now compile the cheap form (no temporary B-tree for the IN list)...
            let ops: Vec<String> = conn
                .prepare("EXPLAIN UPDATE tasks SET status = 'running' WHERE id = 1")
                .unwrap()
                .query_map([], |r| r.get::<_, String>(1))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{ops:?}");
            // ...and still enforce it.
            let e = conn
                .execute("UPDATE tasks SET status = 'bogus' WHERE id = 1", [])
                .unwrap_err();
            assert!(e.to_string().contains("CHECK constraint failed"), "{e}");
        }
        assert_eq!(
            c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
                .unwrap(),
            "ok"
        );
        let status: String = c
            .query_row("SELECT status FROM tasks WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(status, "queued");
        // writable_schema is off again.
        let ws: i64 = c
            .query_row("PRAGMA writable_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ws, 0);
    }

    #[test]
    fn running_leases_of_a_v7_file_keep_the_time_they_had_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let p = path.to_str().unwrap();
        let c = Connection::open(p).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        for sql in &MIGRATIONS[..7] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 7).unwrap();
        let now = crate::model::time::now_ms();
        let insert = |status: &str, lease_until: Option<i64>| -> i64 {
            c.execute(
                "INSERT INTO lanes (queue, type, requires) VALUES ('default', 'x', '') ON CONFLICT DO NOTHING",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, attempts, max_attempts,
                                    run_after, wkey, created_at, updated_at, locked_by, lease_until, lease_token)
                 VALUES (1, 'x', 'default', 'null', 100, ?1, 1, 5, ?2, 0.0, ?2, ?2, 'old', ?3, 7)",
                rusqlite::params![status, now - 10_000, lease_until],
            )
            .unwrap();
            c.last_insert_rowid()
        };
        let live = insert("running", Some(now + 60_000));
        let ended = insert("running", Some(now - 1_000));
        drop(c);

        let q = SqliteDriver::open(
            p,
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .unwrap();
        let mut req = crate::ClaimRequest::new("new");
        req.limit = 10;
        let got: Vec<(i64, i64)> = q
            .claim(&req)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.attempts))
            .collect();
        assert_eq!(
            got,
            vec![(ended, 2)],
            "the ended lease is rescued, the live one kept"
        );
        let (key, clock_now) =
            q.db.write(|tx| {
                let key =
                    tx.query_row("SELECT lease_key FROM tasks WHERE id = ?1", [live], |r| {
                        r.get::<_, i64>(0)
                    })?;
                Ok((key, q.now(tx)?.key))
            })
            .unwrap();
        let left = key - clock_now;
        assert!((55_000..=60_000).contains(&left), "{left} ms left");
    }

    #[test]
    fn a_lease_of_an_earlier_boot_is_rescued_at_once() {
        let (_d, q) = crate::storage::sqlite::testutil::file_driver();
        let id = q.enqueue(&crate::NewTask::new("x", "null")).unwrap();
        let mut req = crate::ClaimRequest::new("w");
        req.lease_ms = crate::model::time::MAX_DURATION_MS;
        q.claim(&req).unwrap();
        // The same lease, as a process of an earlier boot (sequence number one less) recorded it.
        let seq = q.lease_clock().2.unwrap();
        q.db.write(|tx| {
            tx.execute(
                "INSERT INTO boots (seq, boot_id, first_seen) VALUES (?1, 'earlier', 0)",
                [seq - 1],
            )?;
            tx.execute(
                "UPDATE tasks SET lease_key = ?1 WHERE id = ?2",
                [
                    crate::storage::sqlite::clock::key(seq - 1, (1 << 41) + 5),
                    id,
                ],
            )?;
            Ok(())
        })
        .unwrap();
        assert_eq!(q.sweep().unwrap(), 1);
        assert_eq!(q.get(id).unwrap().status, crate::Status::Queued);
    }

    #[test]
    fn foreign_database_and_non_database_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE task_queue (id INTEGER)")
            .unwrap();
        let e = SqliteDriver::open(
            other.to_str().unwrap(),
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("import-legacy"), "{e}");
        let text = dir.path().join("notes.txt");
        std::fs::write(
            &text,
            "this is not a database, just some text that is long enough",
        )
        .unwrap();
        let e = SqliteDriver::open(
            text.to_str().unwrap(),
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .err()
        .unwrap();
        assert!(
            matches!(e, Error::Database(_)) && e.to_string().contains("not a SQLite database"),
            "{e}"
        );
    }
}
