//! A snapshot of the queue's health for operators: depths, ages, outcomes and processing times
//! over a window, retries, workers, lock contention and the WAL.
//!
//! Nothing here costs the hot paths (enqueue, claim, complete): every number is read from an
//! index the queue keeps anyway, mostly without visiting a row.
//!
//! - depth by queue and type: one covering pass over `tasks_claim_priority` (queued rows only),
//!   grouped by lane, plus the running rows through `tasks_lease`;
//! - waiting retries: `tasks_retrying` (queued rows that already spent an attempt);
//! - outcomes in the window: one covering range of `tasks_finished` (`finished_at >= since`);
//! - processing times and tasks that needed a retry: the latest `SAMPLE_LIMIT` tasks finished in
//!   the window, read backwards along `tasks_finished` (bounded work however busy the queue is);
//! - the WAL: the file's size, the WAL index header in the `-shm` file (frames written and frames
//!   already copied back), and what this process's background checkpointer last did.
//!
//! The queries run on a connection of their own, opened for the call, so a large backlog never
//! holds up this process's other reads (`get`, `list`, `stats`) behind the shared read connection.

use crate::model::error::{Error, Result};
use crate::model::metrics::{
    window_figures, CheckpointFigures, DatabaseFigures, Depth, Depths, Finished, LockContention,
    Metrics, WorkerCounts, SAMPLE_LIMIT,
};
use crate::model::observe::DEFAULT_WINDOW_MS;
use crate::model::time::{now_ms, MAX_TIME_MS};
use crate::storage::sqlite::checkpointer::last_checkpoint;
use crate::storage::sqlite::db::{BUSY_RETRIES, BUSY_WAIT_US};
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What one read snapshot of the file gives `metrics_over`.
struct Snapshot {
    /// (queue, type, depth) of each lane with tasks.
    lanes: Vec<(String, String, Depth)>,
    /// Completed, failed and cancelled in the window.
    outcomes: (i64, i64, i64),
    sample: Vec<Finished>,
    size_bytes: i64,
    page_size: i64,
}

/// The first `N` bytes of the `-shm` file. On Unix a descriptor of it, once opened, stays open
/// while the file exists: closing any descriptor of a file drops every POSIX lock the process
/// holds on it, SQLite's WAL locks on the `-shm` included (a reader's, the checkpointer's), and
/// another process could then overwrite frames still being read or copied: a corrupt database.
/// A descriptor is closed only once its file was deleted (with its last connection: no lock of
/// SQLite's is left on it).
#[cfg(unix)]
fn shm_head<const N: usize>(path: &str) -> Option<[u8; N]> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    static OPEN: parking_lot::Mutex<BTreeMap<String, Vec<std::fs::File>>> =
        parking_lot::Mutex::new(BTreeMap::new());
    let now = std::fs::metadata(path).ok()?;
    let mut open = OPEN.lock();
    let files = open.entry(path.to_string()).or_default();
    files.retain(|f| f.metadata().is_ok_and(|m| m.nlink() > 0));
    let is_now = |f: &std::fs::File| {
        f.metadata()
            .is_ok_and(|m| (m.dev(), m.ino()) == (now.dev(), now.ino()))
    };
    if !files.iter().any(is_now) {
        files.push(std::fs::File::open(path).ok()?);
    }
    let mut b = [0u8; N];
    files
        .iter()
        .find(|f| is_now(f))?
        .read_exact_at(&mut b, 0)
        .ok()?;
    Some(b)
}

/// Windows locks belong to a handle, not to the process: a short-lived handle is harmless, and
/// one held open would keep SQLite from deleting the file when its last connection closes.
#[cfg(not(unix))]
fn shm_head<const N: usize>(path: &str) -> Option<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open(path).ok()?.read_exact(&mut b).ok()?;
    Some(b)
}

/// Frames in the WAL and frames already copied into the database, from the WAL index header at
/// the start of the `-shm` file (SQLite's documented wal-index layout, native byte order: two
/// copies of a 48-byte header, `mxFrame` at offset 16, then `nBackfill` at 96). Read without
/// locks, so the two copies are compared to rule out a torn read; None when the file is absent
/// or does not look like a version-3007000 wal-index.
pub(crate) fn wal_index_frames(db_path: &str) -> Option<(i64, i64)> {
    let path = format!("{db_path}-shm");
    for _ in 0..3 {
        let b: [u8; 100] = shm_head(&path)?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if u32_at(0) != 3_007_000 || b[12] != 1 {
            return None;
        }
        if b[..48] == b[48..96] {
            let max_frame = u32_at(16) as i64;
            let backfilled = (u32_at(96) as i64).min(max_frame);
            return Some((max_frame, backfilled));
        }
    }
    None
}

impl SqliteDriver {
    /// Run `f` on a read connection of its own (see the module doc), inside one read
    /// transaction so every number comes from the same snapshot. An in-memory queue has only its
    /// one connection.
    fn observe<T>(&self, f: impl Fn(&Connection) -> Result<T>) -> Result<T> {
        let path = self.db.path.as_str();
        if path == ":memory:" || path.starts_with("file::memory:") {
            return self.db.read(|c| f(c));
        }
        let c = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| {
            Error::Database(format!(
                "cannot open {} to read metrics: {e}",
                crate::model::paths::shown(path)
            ))
        })?;
        // A WAL reader is only ever busy while another connection recovers the WAL index.
        c.busy_timeout(self.opts.db.busy_timeout.max(Duration::from_secs(1)))?;
        c.execute_batch("PRAGMA query_only = 1")?;
        let tx = c.unchecked_transaction()?;
        let out = f(&tx)?;
        tx.finish()?;
        Ok(out)
    }

    /// `metrics_over(DEFAULT_WINDOW_MS)`.
    pub fn metrics(&self) -> Result<Metrics> {
        self.metrics_over(DEFAULT_WINDOW_MS)
    }

    /// Everything an operator watches, with rates and percentiles over the last `window_ms`.
    /// The keys are listed in docs/architecture.md ("Observability").
    /// `window_ms` was checked above (by `Queue::metrics_over`).
    pub fn metrics_over(&self, window_ms: i64) -> Result<Metrics> {
        let stats = self.stats(None)?;
        let workers = self.workers()?;
        let now = now_ms();
        let since = now - window_ms;
        let snap = self.observe(|c| {
            Ok(Snapshot {
                lanes: lane_depths(c)?,
                outcomes: window_outcomes(c, since)?,
                sample: finished_sample(c, since)?,
                size_bytes: c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))?,
                page_size: c.query_row("PRAGMA page_size", [], |r| r.get(0))?,
            })
        })?;
        let depths = Depths::of_lanes(&snap.lanes);
        Ok(Metrics {
            at: now,
            depth: stats.counts,
            total: stats.total,
            scheduled: stats.scheduled,
            oldest_queued_age_seconds: stats.oldest_queued_age_s,
            by_queue: depths.by_queue,
            by_type: depths.by_type,
            by_queue_and_type: depths.by_queue_and_type,
            retrying: depths.retrying,
            window: window_figures(window_ms, since, snap.outcomes, &snap.sample),
            workers: WorkerCounts {
                active: workers.iter().filter(|w| !w.stale).count(),
                stale: workers.iter().filter(|w| w.stale).count(),
            },
            lock_contention: LockContention {
                busy_retries: BUSY_RETRIES.load(Ordering::Relaxed),
                busy_wait_seconds: BUSY_WAIT_US.load(Ordering::Relaxed) as f64 / 1e6,
            },
            database: self.database_figures(snap.size_bytes * snap.page_size, snap.page_size),
            checkpoint: last_checkpoint(&self.db.path).map(|c| CheckpointFigures {
                at: c.at_ms,
                seconds_ago: (now - c.at_ms).max(0) as f64 / 1000.0,
                busy: c.busy,
                wal_frames: c.wal_frames,
                checkpointed_frames: c.checkpointed_frames,
            }),
            limits: Vec::new(),
        })
    }

    /// The file's size and its write-ahead log's.
    fn database_figures(&self, size_bytes: i64, page_size: i64) -> DatabaseFigures {
        let wal_bytes = std::fs::metadata(format!("{}-wal", self.db.path))
            .map(|m| m.len())
            .unwrap_or(0);
        let frames = wal_index_frames(&self.db.path);
        DatabaseFigures {
            size_bytes,
            page_size,
            wal_bytes,
            wal_frames: frames.map(|f| f.0),
            wal_frames_pending: frames.map(|f| f.0 - f.1),
        }
    }
}

/// Per lane with tasks: (queue, type) and its queued / running / retrying counts, each counted
/// from an index alone.
fn lane_depths(c: &Connection) -> Result<Vec<(String, String, Depth)>> {
    let mut lanes: BTreeMap<i64, (String, String)> = BTreeMap::new();
    let mut stmt = c.prepare_cached("SELECT id, queue, type FROM lanes")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        lanes.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
    }
    let mut depth: BTreeMap<i64, Depth> = BTreeMap::new();
    for (sql, which) in [
        (
            "SELECT lane_id, count(*) FROM tasks INDEXED BY tasks_claim_priority
          WHERE status = 'queued' GROUP BY lane_id",
            0,
        ),
        (
            "SELECT lane_id, count(*) FROM tasks INDEXED BY tasks_lease
          WHERE status = 'running' GROUP BY lane_id",
            1,
        ),
        (
            "SELECT lane_id, count(*) FROM tasks INDEXED BY tasks_retrying
          WHERE status = 'queued' AND attempts > 0 GROUP BY lane_id",
            2,
        ),
    ] {
        let mut stmt = c.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let d = depth.entry(r.get(0)?).or_default();
            let n: i64 = r.get(1)?;
            match which {
                0 => d.queued = n,
                1 => d.running = n,
                _ => d.retrying = n,
            }
        }
    }
    Ok(depth
        .into_iter()
        .map(|(id, d)| {
            let (q, t) = lanes
                .get(&id)
                .cloned()
                .unwrap_or_else(|| (String::new(), String::new()));
            (q, t, d)
        })
        .collect())
}

/// Outcomes in the window: one covering pass over the range of the finished index.
fn window_outcomes(c: &Connection, since: i64) -> Result<(i64, i64, i64)> {
    Ok(c.prepare_cached(
        "SELECT coalesce(sum(status = 'completed'), 0), coalesce(sum(status = 'failed'), 0),
                coalesce(sum(status = 'cancelled'), 0)
         FROM tasks INDEXED BY tasks_finished WHERE finished_at BETWEEN ?1 AND ?2",
    )?
    .query_row([since, MAX_TIME_MS], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?)
}

/// The latest finished tasks of the window, newest first, at most `SAMPLE_LIMIT`.
fn finished_sample(c: &Connection, since: i64) -> Result<Vec<Finished>> {
    let mut sample = Vec::new();
    let mut stmt = c.prepare_cached(
        "SELECT type, status, started_at, finished_at, attempts FROM tasks INDEXED BY tasks_finished
         WHERE finished_at BETWEEN ?1 AND ?3 ORDER BY finished_at DESC LIMIT ?2",
    )?;
    // BETWEEN keeps out a damaged row's text or blob (SQLite sorts them after every
    // number); a start that is not an integer is left out of the durations.
    let mut rows = stmt.query(rusqlite::params![since, SAMPLE_LIMIT, MAX_TIME_MS])?;
    while let Some(r) = rows.next()? {
        let started = match r.get_ref(2)? {
            rusqlite::types::ValueRef::Integer(n) => Some(n),
            _ => None,
        };
        let text = |i| match r.get_ref(i) {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(_) => String::new(),
        };
        sample.push(Finished {
            task_type: text(0),
            status: text(1),
            started,
            finished: r.get(3)?,
            attempts: r.get::<_, i64>(4).unwrap_or(0),
        });
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::claim::ClaimRequest;
    use crate::model::lease::Lease;
    use crate::model::metrics::summary;
    use crate::model::new_task::NewTask;
    use crate::storage::sqlite::testutil::file_driver;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).map(|i| i * 10).collect();
        let s = serde_json::to_value(summary(&mut v)).unwrap();
        assert_eq!(s["count"], 100);
        assert_eq!(s["p50"], 0.5);
        assert_eq!(s["p95"], 0.95);
        assert_eq!(s["p99"], 0.99);
        assert_eq!(s["max"], 1.0);
        let s = serde_json::to_value(summary(&mut [])).unwrap();
        assert!(s["p50"].is_null());
        let s = serde_json::to_value(summary(&mut [7])).unwrap();
        assert_eq!(
            (s["p50"].as_f64(), s["p99"].as_f64()),
            (Some(0.007), Some(0.007))
        );
    }

    #[test]
    fn outcomes_depth_and_retries_from_the_indexes() {
        let (_d, q) = file_driver();
        for i in 0..6 {
            let mut t = NewTask::new(if i % 2 == 0 { "a" } else { "b" }, "null");
            t.queue = if i < 3 { "q1".into() } else { "q2".into() };
            q.enqueue(&t).unwrap();
        }
        let mut req = ClaimRequest::new("w");
        req.limit = 4;
        let claimed = q.claim(&req).unwrap();
        let l = |t: &crate::model::task::TaskRow| Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        };
        q.complete(l(&claimed[0]), None).unwrap();
        q.fail(l(&claimed[1]), "boom", false).unwrap();
        q.fail(l(&claimed[2]), "again", true).unwrap(); // back to queued, waiting to retry
        let m = serde_json::to_value(q.metrics_over(60_000).unwrap()).unwrap();
        assert_eq!(m["window"]["completed"], 1);
        assert_eq!(m["window"]["failed"], 1);
        assert_eq!(m["window"]["success_ratio"], 0.5);
        assert_eq!(m["retrying"], 1);
        assert_eq!(m["depth"]["queued"], 3);
        assert_eq!(m["depth"]["running"], 1);
        let queued: i64 = ["q1", "q2"]
            .iter()
            .map(|k| m["by_queue"][k]["queued"].as_i64().unwrap_or(0))
            .sum();
        assert_eq!(queued, 3);
        assert_eq!(m["window"]["processing_seconds"]["count"], 1);
        assert!(m["database"]["wal_frames"].as_i64().unwrap() > 0);
        // The window's check is the queue's now: see `ops::metrics`.
    }

    /// The table cursor of `sql` never reads a column: every value comes from the index (SQLite
    /// may still open the table and plan a deferred seek, which costs nothing when unused).
    fn reads_only_the_index(q: &SqliteDriver, sql: &str) -> bool {
        q.db.read(|c| {
            let root: i64 = c.query_row(
                "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = 'tasks'",
                [],
                |r| r.get(0),
            )?;
            let mut s = c.prepare(&format!("EXPLAIN {sql}"))?;
            let ops: Vec<(String, i64, i64)> = s
                .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let table_cursors: Vec<i64> = ops
                .iter()
                .filter(|(op, _, p2)| op == "OpenRead" && *p2 == root)
                .map(|(_, p1, _)| *p1)
                .collect();
            Ok(!ops
                .iter()
                .any(|(op, p1, _)| op == "Column" && table_cursors.contains(p1)))
        })
        .unwrap()
    }

    #[test]
    fn depth_and_waiting_retries_are_counted_from_indexes_alone() {
        let (_d, q) = file_driver();
        q.enqueue(&NewTask::new("x", "null")).unwrap();
        for sql in [
            "SELECT lane_id, count(*) FROM tasks INDEXED BY tasks_claim_priority
             WHERE status = 'queued' GROUP BY lane_id",
            "SELECT lane_id, count(*) FROM tasks INDEXED BY tasks_retrying
             WHERE status = 'queued' AND attempts > 0 GROUP BY lane_id",
            "SELECT coalesce(sum(status = 'completed'), 0) FROM tasks INDEXED BY tasks_finished
             WHERE finished_at >= 0",
        ] {
            assert!(reads_only_the_index(&q, sql), "{sql}");
        }
        // What the retry index saves: without it the same count reads every queued row.
        assert!(!reads_only_the_index(
            &q,
            "SELECT count(*) FROM tasks INDEXED BY tasks_claim_priority WHERE status = 'queued' AND attempts > 0"
        ));
    }
}
