//! Worker heartbeats: one row per worker, so operators and the rescuer can tell live workers
//! from dead ones.

use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::time::now_ms;
use rusqlite::params;

#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub worker_id: String,
    pub host: Option<String>,
    pub pid: Option<i64>,
    /// JSON object text.
    pub capabilities: Option<String>,
    /// JSON array text, None for every queue.
    pub queues: Option<String>,
    /// Tasks this worker has finished so far (as counted by the worker).
    pub tasks_done: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: String,
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub capabilities: Option<String>,
    pub queues: Option<String>,
    pub started_at: i64,
    pub last_heartbeat: i64,
    pub tasks_done: i64,
    pub stale: bool,
}

impl Queue {
    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<()> {
        if hb.worker_id.trim().is_empty() {
            return Err(Error::invalid("worker_id must be a non-empty string"));
        }
        self.db.write(|tx| {
            let now = now_ms();
            tx.prepare_cached(
                "INSERT INTO workers (id, host, pid, capabilities, queues, started_at, last_heartbeat, tasks_done)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, coalesce(?7, 0))
                 ON CONFLICT (id) DO UPDATE SET
                    host = coalesce(excluded.host, host), pid = coalesce(excluded.pid, pid),
                    capabilities = coalesce(excluded.capabilities, capabilities),
                    queues = coalesce(excluded.queues, queues),
                    last_heartbeat = excluded.last_heartbeat,
                    tasks_done = coalesce(?7, tasks_done)",
            )?
            .execute(params![hb.worker_id, hb.host, hb.pid, hb.capabilities, hb.queues, now, hb.tasks_done])?;
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
                "SELECT id, host, pid, capabilities, queues, started_at, last_heartbeat, tasks_done
                 FROM workers ORDER BY last_heartbeat DESC",
            )?;
            let rows = stmt.query_map([], |r| {
                let last: i64 = r.get(6)?;
                Ok(WorkerRow {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    capabilities: r.get(3)?,
                    queues: r.get(4)?,
                    started_at: r.get(5)?,
                    last_heartbeat: last,
                    tasks_done: r.get(7)?,
                    stale: now - last > stale_after,
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
