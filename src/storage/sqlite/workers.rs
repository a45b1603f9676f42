//! Worker heartbeats: one row per worker, so operators and the rescuer can tell live workers
//! from dead ones.

use crate::model::error::Result;
use crate::model::observe::Heartbeat;
use crate::model::observe::WorkerRow;
use crate::model::time::now_ms;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::params;

impl SqliteDriver {
    /// `hb` was checked above (`Heartbeat::validate`).
    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<()> {
        self.db.write(|tx| {
            let now = now_ms();
            tx.prepare_cached(
                "INSERT INTO workers (id, host, pid, capabilities, queues, started_at, last_heartbeat, tasks_done, concurrency)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, coalesce(?7, 0), ?8)
                 ON CONFLICT (id) DO UPDATE SET
                    host = coalesce(excluded.host, host), pid = coalesce(excluded.pid, pid),
                    capabilities = coalesce(excluded.capabilities, capabilities),
                    queues = coalesce(excluded.queues, queues),
                    last_heartbeat = excluded.last_heartbeat,
                    tasks_done = coalesce(?7, tasks_done),
                    concurrency = coalesce(excluded.concurrency, concurrency)",
            )?
            .execute(params![hb.worker_id, hb.host, hb.pid, hb.capabilities, hb.queues, now, hb.tasks_done, hb.concurrency])?;
            Ok(())
        })
    }

    /// Every known worker, most recently seen first; `stale` when its last heartbeat is older
    /// than the queue's `stale_worker_after`.
    pub fn workers(&self) -> Result<Vec<WorkerRow>> {
        let now = now_ms();
        let stale_after = self.opts.stale_worker_after_ms;
        self.db.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, host, pid, capabilities, queues, started_at, last_heartbeat, tasks_done,
                        concurrency
                 FROM workers ORDER BY last_heartbeat DESC",
            )?;
            // Leniently: a damaged row (a column of the wrong type) must not fail the listing.
            let rows = stmt.query_map([], |r| {
                let int = |i: usize| match r.get_ref(i) {
                    Ok(rusqlite::types::ValueRef::Integer(n)) => Some(n),
                    _ => None,
                };
                let text = |i: usize| r.get::<_, Option<String>>(i).unwrap_or(None);
                let last = int(6).unwrap_or(crate::model::time::MIN_TIME_MS);
                Ok(WorkerRow {
                    id: text(0).unwrap_or_default(),
                    host: text(1),
                    pid: int(2),
                    capabilities: text(3),
                    queues: text(4),
                    started_at: int(5).unwrap_or(crate::model::time::MIN_TIME_MS),
                    last_heartbeat: last,
                    tasks_done: int(7).unwrap_or(0),
                    stale: now.saturating_sub(last) > stale_after,
                    concurrency: int(8),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Forget a worker (a clean shutdown). True when it was known.
    pub fn remove_worker(&self, worker_id: &str) -> Result<bool> {
        self.db
            .write(|tx| Ok(tx.execute("DELETE FROM workers WHERE id = ?1", [worker_id])? == 1))
    }
}
