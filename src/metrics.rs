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

use crate::db::{BUSY_RETRIES, BUSY_WAIT_US};
use crate::error::{Error, Result};
use crate::maintenance::checkpointer::last_checkpoint;
use crate::queue::Queue;
use crate::time::now_ms;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The default window of `metrics()`: five minutes.
pub const DEFAULT_WINDOW_MS: i64 = 300_000;
/// At most this many finished tasks (the latest in the window) feed the processing-time
/// percentiles and the count of tasks that needed a retry.
pub const SAMPLE_LIMIT: i64 = 10_000;

/// Queued, running and waiting-to-retry counts of one group (a queue, a type, or both).
#[derive(Default, Clone, Copy)]
struct Depth {
    queued: i64,
    running: i64,
    retrying: i64,
}

impl Depth {
    fn json(&self) -> Value {
        json!({"queued": self.queued, "running": self.running, "retrying": self.retrying})
    }
}

/// Percentiles by nearest rank over durations in ms; seconds out.
fn summary(ms: &mut [i64]) -> Value {
    if ms.is_empty() {
        return json!({"count": 0, "p50": null, "p95": null, "p99": null, "mean": null, "max": null});
    }
    ms.sort_unstable();
    let n = ms.len();
    let rank = |p: f64| ms[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
    let mean = ms.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 1000.0;
    json!({
        "count": n,
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "mean": mean,
        "max": ms[n - 1] as f64 / 1000.0,
    })
}

fn ratio(part: i64, whole: i64) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(part as f64 / whole as f64)
    }
}

/// Frames in the WAL and frames already copied into the database, from the WAL index header at
/// the start of the `-shm` file (SQLite's documented wal-index layout, native byte order: two
/// copies of a 48-byte header, `mxFrame` at offset 16, then `nBackfill` at 96). Read without
/// locks, so the two copies are compared to rule out a torn read; None when the file is absent
/// or does not look like a version-3007000 wal-index.
pub(crate) fn wal_index_frames(db_path: &str) -> Option<(i64, i64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("{db_path}-shm")).ok()?;
    for _ in 0..3 {
        let mut b = [0u8; 100];
        f.read_exact(&mut b).ok()?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if u32_at(0) != 3_007_000 || b[12] != 1 {
            return None;
        }
        if b[..48] == b[48..96] {
            let max_frame = u32_at(16) as i64;
            let backfilled = (u32_at(96) as i64).min(max_frame);
            return Some((max_frame, backfilled));
        }
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).ok()?;
    }
    None
}

impl Queue {
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
        .map_err(|e| Error::Database(format!("cannot open {path:?} to read metrics: {e}")))?;
        // A WAL reader is only ever busy while another connection recovers the WAL index.
        c.busy_timeout(self.opts.db.busy_timeout.max(Duration::from_secs(1)))?;
        c.execute_batch("PRAGMA query_only = 1")?;
        let tx = c.unchecked_transaction()?;
        let out = f(&tx)?;
        tx.finish()?;
        Ok(out)
    }

    /// `metrics_over(DEFAULT_WINDOW_MS)`.
    pub fn metrics(&self) -> Result<Value> {
        self.metrics_over(DEFAULT_WINDOW_MS)
    }

    /// Everything an operator watches, with rates and percentiles over the last `window_ms`.
    /// The keys are listed in docs/architecture.md ("Observability").
    pub fn metrics_over(&self, window_ms: i64) -> Result<Value> {
        if window_ms <= 0 {
            return Err(Error::invalid(format!(
                "window must be a positive number of seconds, got {}",
                window_ms as f64 / 1000.0
            )));
        }
        let stats = self.stats(None)?;
        let workers = self.workers()?;
        let now = now_ms();
        let since = now - window_ms;
        let (lanes, counts, sample, page_count, page_size) = self.observe(|c| {
            // Per lane: (queue, type) and its queued / running / retrying counts.
            let mut lanes: BTreeMap<i64, (String, String)> = BTreeMap::new();
            let mut stmt = c.prepare_cached("SELECT id, queue, type FROM lanes")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                lanes.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
            }
            let mut depth: BTreeMap<i64, Depth> = BTreeMap::new();
            for (sql, which) in [
                ("SELECT lane_id, count(*) FROM tasks INDEXED BY tasks_claim_priority
                  WHERE status = 'queued' GROUP BY lane_id", 0),
                ("SELECT lane_id, count(*) FROM tasks INDEXED BY tasks_lease
                  WHERE status = 'running' GROUP BY lane_id", 1),
                ("SELECT lane_id, count(*) FROM tasks INDEXED BY tasks_retrying
                  WHERE status = 'queued' AND attempts > 0 GROUP BY lane_id", 2),
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
            let by_lane: Vec<(String, String, Depth)> = depth
                .into_iter()
                .map(|(id, d)| {
                    let (q, t) = lanes
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| (String::new(), String::new()));
                    (q, t, d)
                })
                .collect();
            // Outcomes in the window: one covering pass over the range of the finished index.
            let counts: (i64, i64, i64) = c
                .prepare_cached(
                    "SELECT coalesce(sum(status = 'completed'), 0), coalesce(sum(status = 'failed'), 0),
                            coalesce(sum(status = 'cancelled'), 0)
                     FROM tasks INDEXED BY tasks_finished WHERE finished_at >= ?1",
                )?
                .query_row([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            // The latest finished tasks of the window, newest first.
            let mut sample: Vec<(String, String, Option<i64>, i64, i64)> = Vec::new();
            let mut stmt = c.prepare_cached(
                "SELECT type, status, started_at, finished_at, attempts FROM tasks INDEXED BY tasks_finished
                 WHERE finished_at >= ?1 ORDER BY finished_at DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(rusqlite::params![since, SAMPLE_LIMIT])?;
            while let Some(r) = rows.next()? {
                sample.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
            }
            let page_count: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok((by_lane, counts, sample, page_count, page_size))
        })?;

        // Depth grouped three ways.
        let mut by_queue: BTreeMap<&str, Depth> = BTreeMap::new();
        let mut by_type: BTreeMap<&str, Depth> = BTreeMap::new();
        let mut by_both: BTreeMap<&str, BTreeMap<&str, Depth>> = BTreeMap::new();
        let mut retrying = 0;
        for (q, t, d) in &lanes {
            for e in [
                by_queue.entry(q).or_default(),
                by_type.entry(t).or_default(),
                by_both.entry(q).or_default().entry(t).or_default(),
            ] {
                e.queued += d.queued;
                e.running += d.running;
                e.retrying += d.retrying;
            }
            retrying += d.retrying;
        }
        let depth_map = |m: &BTreeMap<&str, Depth>| -> Value {
            Value::Object(m.iter().map(|(k, d)| (k.to_string(), d.json())).collect())
        };
        let by_queue_and_type: Map<String, Value> = by_both
            .iter()
            .map(|(q, types)| (q.to_string(), depth_map(types)))
            .collect();

        // Outcomes, rates and the sample.
        let (completed, failed, cancelled) = counts;
        let window_s = window_ms as f64 / 1000.0;
        let complete_sample = (sample.len() as i64) < SAMPLE_LIMIT;
        let mut all_ms: Vec<i64> = Vec::new();
        let mut by_type_ms: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        let (mut retried_completed, mut retried_failed) = (0i64, 0i64);
        for (t, status, started, finished, attempts) in &sample {
            match status.as_str() {
                "completed" => {
                    if let Some(s) = started {
                        let d = (finished - s).max(0);
                        all_ms.push(d);
                        by_type_ms.entry(t).or_default().push(d);
                    }
                    if *attempts > 1 {
                        retried_completed += 1;
                    }
                }
                "failed" if *attempts > 1 => retried_failed += 1,
                _ => {}
            }
        }
        let processing_by_type: Map<String, Value> = by_type_ms
            .iter_mut()
            .map(|(t, v)| (t.to_string(), summary(v)))
            .collect();

        // The WAL.
        let wal_bytes = std::fs::metadata(format!("{}-wal", self.db.path))
            .map(|m| m.len())
            .unwrap_or(0);
        let frames = wal_index_frames(&self.db.path);
        let checkpoint = match last_checkpoint(&self.db.path) {
            None => Value::Null,
            Some(c) => json!({
                "at": c.at_ms,
                "seconds_ago": (now - c.at_ms).max(0) as f64 / 1000.0,
                "busy": c.busy,
                "wal_frames": c.wal_frames,
                "checkpointed_frames": c.checkpointed_frames,
            }),
        };

        Ok(json!({
            "at": now,
            "depth": stats.counts,
            "total": stats.total,
            "scheduled": stats.scheduled,
            "oldest_queued_age_seconds": stats.oldest_queued_age_s,
            "by_queue": depth_map(&by_queue),
            "by_type": depth_map(&by_type),
            "by_queue_and_type": by_queue_and_type,
            "retrying": retrying,
            "window": {
                "seconds": window_s,
                "since": since,
                "completed": completed,
                "failed": failed,
                "cancelled": cancelled,
                "success_ratio": ratio(completed, completed + failed),
                "failure_ratio": ratio(failed, completed + failed),
                "completed_per_second": completed as f64 / window_s,
                "failed_per_second": failed as f64 / window_s,
                "throughput_per_second": completed as f64 / window_s,
                "retried": {"completed": retried_completed, "failed": retried_failed},
                "processing_seconds": summary(&mut all_ms),
                "processing_seconds_by_type": processing_by_type,
                "sample": {"size": sample.len(), "limit": SAMPLE_LIMIT, "complete": complete_sample},
            },
            "workers": {
                "active": workers.iter().filter(|w| !w.stale).count(),
                "stale": workers.iter().filter(|w| w.stale).count(),
            },
            "lock_contention": {
                "busy_retries": BUSY_RETRIES.load(Ordering::Relaxed),
                "busy_wait_seconds": BUSY_WAIT_US.load(Ordering::Relaxed) as f64 / 1e6,
            },
            "database": {
                "size_bytes": page_count * page_size,
                "page_size": page_size,
                "wal_bytes": wal_bytes,
                "wal_frames": frames.map(|f| f.0),
                "wal_frames_pending": frames.map(|f| f.0 - f.1),
            },
            "checkpoint": checkpoint,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Lease;
    use crate::claim::ClaimRequest;
    use crate::enqueue::NewTask;
    use crate::queue::testutil::file_queue;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).map(|i| i * 10).collect();
        let s = summary(&mut v);
        assert_eq!(s["count"], 100);
        assert_eq!(s["p50"], 0.5);
        assert_eq!(s["p95"], 0.95);
        assert_eq!(s["p99"], 0.99);
        assert_eq!(s["max"], 1.0);
        let s = summary(&mut []);
        assert!(s["p50"].is_null());
        let s = summary(&mut [7]);
        assert_eq!(
            (s["p50"].as_f64(), s["p99"].as_f64()),
            (Some(0.007), Some(0.007))
        );
    }

    #[test]
    fn outcomes_depth_and_retries_from_the_indexes() {
        let (_d, q) = file_queue();
        for i in 0..6 {
            let mut t = NewTask::new(if i % 2 == 0 { "a" } else { "b" }, "null");
            t.queue = if i < 3 { "q1".into() } else { "q2".into() };
            q.enqueue(&t).unwrap();
        }
        let mut req = ClaimRequest::new("w");
        req.limit = 4;
        let claimed = q.claim(&req).unwrap();
        let l = |t: &crate::task::TaskRow| Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        };
        q.complete(l(&claimed[0]), None).unwrap();
        q.fail(l(&claimed[1]), "boom", false).unwrap();
        q.fail(l(&claimed[2]), "again", true).unwrap(); // back to queued, waiting to retry
        let m = q.metrics_over(60_000).unwrap();
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
        assert!(q.metrics_over(0).is_err());
    }

    /// The table cursor of `sql` never reads a column: every value comes from the index (SQLite
    /// may still open the table and plan a deferred seek, which costs nothing when unused).
    fn reads_only_the_index(q: &Queue, sql: &str) -> bool {
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
        let (_d, q) = file_queue();
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
