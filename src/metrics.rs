//! A snapshot of the queue's health for operators: depths, ages, workers and lock contention.

use crate::db::{BUSY_RETRIES, BUSY_WAIT_US};
use crate::error::Result;
use crate::queue::Queue;
use crate::time::now_ms;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;

impl Queue {
    pub fn metrics(&self) -> Result<Value> {
        let stats = self.stats(None)?;
        let workers = self.workers()?;
        let now = now_ms();
        let (by_queue, by_type, wal_bytes, page_count, page_size) = self.db.read(|c| {
            let group = |col: &str| -> Result<Value> {
                let mut out = Map::new();
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {col}, status, count(*) FROM tasks WHERE status IN ('queued', 'running') GROUP BY {col}, status"
                ))?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let k: String = r.get(0)?;
                    let s: String = r.get(1)?;
                    let n: i64 = r.get(2)?;
                    let e = out.entry(k).or_insert_with(|| json!({"queued": 0, "running": 0}));
                    e[s] = json!(n);
                }
                Ok(Value::Object(out))
            };
            let page_count: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let wal = std::fs::metadata(format!("{}-wal", self.db.path)).map(|m| m.len()).unwrap_or(0);
            Ok((group("queue")?, group("type")?, wal, page_count, page_size))
        })?;
        let retries_pending: i64 = self.db.read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM tasks WHERE status = 'queued' AND attempts > 0",
                [],
                |r| r.get(0),
            )?)
        })?;
        Ok(json!({
            "at": now,
            "depth": stats.counts,
            "total": stats.total,
            "scheduled": stats.scheduled,
            "oldest_queued_age_seconds": stats.oldest_queued_age_s,
            "by_queue": by_queue,
            "by_type": by_type,
            "retrying": retries_pending,
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
                "wal_bytes": wal_bytes,
            },
        }))
    }
}
