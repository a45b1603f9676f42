//! Tests of the WAL-batching VFS: one write call per commit, commits visible to other connections
//! at once, transactions bigger than the buffer, and rolled-back frames that never overwrite a
//! later commit.

use super::*;
use rusqlite::{Connection, OpenFlags};

fn open(path: &std::path::Path, ours: bool) -> Connection {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let c = if ours {
        Connection::open_with_flags_and_vfs(path, flags, name().unwrap()).unwrap()
    } else {
        Connection::open_with_flags(path, flags).unwrap()
    };
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c.execute_batch(
        "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
         CREATE INDEX IF NOT EXISTS t_k ON t (k);",
    )
    .unwrap();
    c
}

fn rows(c: &Connection) -> (i64, i64) {
    c.query_row("SELECT count(*), coalesce(sum(k), 0) FROM t", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_commit_of_several_pages_is_one_write_call() {
    let d = tempfile::tempdir().unwrap();
    let c = open(&d.path().join("a.db"), true);
    // Warm up: the first commit after opening writes the WAL header on its own.
    c.execute("INSERT INTO t (k, v) VALUES (1, 'x')", [])
        .unwrap();
    for i in 0..20i64 {
        let before = wal_write_calls();
        // Random keys put the index entries on other pages than the table rows.
        c.execute(
            "INSERT INTO t (k, v) VALUES (abs(random()) % 100000, ?1)",
            [format!("{i:0>300}")],
        )
        .unwrap();
        assert_eq!(wal_write_calls() - before, 1, "commit {i}");
    }
    // The counter is this VFS's: commits through the default VFS do not move it.
    let plain = open(&d.path().join("b.db"), false);
    plain
        .execute("INSERT INTO t (k, v) VALUES (1, 'x')", [])
        .unwrap();
    let before = wal_write_calls();
    plain
        .execute("INSERT INTO t (k, v) VALUES (2, 'y')", [])
        .unwrap();
    assert_eq!(wal_write_calls(), before, "the default VFS is not counted");
}

#[test]
fn commits_are_visible_to_other_connections_at_once() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("v.db");
    let w = open(&path, true);
    let ours = open(&path, true);
    let plain = open(&path, false);
    let mut sum = 0;
    for i in 1..=200i64 {
        w.execute("INSERT INTO t (k, v) VALUES (?1, hex(randomblob(64)))", [i])
            .unwrap();
        sum += i;
        assert_eq!(rows(&ours), (i, sum));
        assert_eq!(rows(&plain), (i, sum));
    }
    assert_eq!(integrity(&plain), "ok");
}

#[test]
fn a_transaction_larger_than_the_buffer_commits_whole() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("big.db");
    let w = open(&path, true);
    w.execute_batch("BEGIN").unwrap();
    for i in 0..3000i64 {
        w.execute(
            "INSERT INTO t (k, v) VALUES (?1, hex(randomblob(100)))",
            [i],
        )
        .unwrap();
    }
    w.execute_batch("COMMIT").unwrap();
    let plain = open(&path, false);
    assert_eq!(rows(&plain), (3000, 3000 * 2999 / 2));
    assert_eq!(integrity(&plain), "ok");
}

#[test]
fn frames_of_a_rolled_back_transaction_never_overwrite_later_commits() {
    // A transaction bigger than the page cache spills frames into the WAL before it ends;
    // rolled back, those frames are garbage past the committed end. They must reach the file
    // before the write lock is released, not later over frames another connection wrote.
    // (Here SQLite reads the WAL while it rolls back, which writes them out at once; the
    // flush in xShmLock covers a rollback that reads nothing.)
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("rb.db");
    let a = open(&path, true);
    a.execute_batch("PRAGMA cache_size = 10").unwrap();
    let b = open(&path, true);
    let plain = open(&path, false);
    for round in 0..5i64 {
        a.execute_batch("BEGIN IMMEDIATE").unwrap();
        for i in 0..400i64 {
            a.execute(
                "INSERT INTO t (k, v) VALUES (?1, hex(randomblob(80)))",
                [-i],
            )
            .unwrap();
        }
        a.execute_batch("ROLLBACK").unwrap();
        // Let the WAL restart from its start, where the garbage lies.
        plain
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
        // Enough frames to reach past where the garbage lies.
        b.execute_batch("BEGIN").unwrap();
        for i in 0..50i64 {
            b.execute(
                "INSERT INTO t (k, v) VALUES (?1, hex(randomblob(1000)))",
                [i],
            )
            .unwrap();
        }
        b.execute_batch("COMMIT").unwrap();
        a.execute("INSERT INTO t (k, v) VALUES (1000, 'a')", [])
            .unwrap();
        let (n, _) = rows(&plain);
        assert_eq!(n, (round + 1) * 51);
        assert_eq!(integrity(&plain), "ok");
    }
    let (n, sum) = rows(&open(&path, false));
    assert_eq!((n, sum), (255, 5 * (49 * 50 / 2 + 1000)));
}
