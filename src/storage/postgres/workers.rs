//! Worker heartbeats (one row per worker, so operators can tell live workers from dead ones),
//! queue depths, and the purge of old finished tasks in batches, as on SQLite
//! (storage/sqlite/workers.rs, changes.rs, maintenance/mod.rs).

use crate::model::error::Result;
use crate::model::maintenance::Progress;
use crate::model::observe::{Heartbeat, WorkerRow};
use crate::model::task::Status;
use crate::storage::postgres::{db_now, PgDriver};
use std::collections::BTreeMap;

impl PgDriver {
    /// `hb` was checked above (`Heartbeat::validate`).
    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO workers AS w (id, host, pid, capabilities, queues, started_at, last_heartbeat, tasks_done, concurrency)
                 VALUES ($1, $2, $3, $4, $5, now_ms(), now_ms(), coalesce($6::bigint, 0), $7)
                 ON CONFLICT (id) DO UPDATE SET
                    host = coalesce(excluded.host, w.host), pid = coalesce(excluded.pid, w.pid),
                    capabilities = coalesce(excluded.capabilities, w.capabilities),
                    queues = coalesce(excluded.queues, w.queues),
                    last_heartbeat = excluded.last_heartbeat,
                    tasks_done = coalesce($6, w.tasks_done),
                    concurrency = coalesce(excluded.concurrency, w.concurrency)",
                &[&hb.worker_id, &hb.host, &hb.pid, &hb.capabilities, &hb.queues, &hb.tasks_done, &hb.concurrency],
            )?;
            Ok(())
        })
    }

    /// Every known worker, most recently seen first; `stale` when its last heartbeat is older
    /// than the queue's `stale_worker_after` (on the database's clock).
    pub fn workers(&self) -> Result<Vec<WorkerRow>> {
        self.read(|tx| {
            let now = db_now(tx)?;
            let rows = tx.query(
                "SELECT id, host, pid, capabilities, queues, started_at, last_heartbeat, tasks_done,
                        concurrency
                 FROM workers ORDER BY last_heartbeat DESC",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    let last: i64 = r.try_get(6)?;
                    Ok(WorkerRow {
                        id: r.try_get(0)?,
                        host: r.try_get(1)?,
                        pid: r.try_get(2)?,
                        capabilities: r.try_get(3)?,
                        queues: r.try_get(4)?,
                        started_at: r.try_get(5)?,
                        last_heartbeat: last,
                        tasks_done: r.try_get(7)?,
                        stale: now.saturating_sub(last) > self.stale_worker_after_ms,
                        concurrency: r.try_get(8)?,
                    })
                })
                .collect()
        })
    }

    /// Forget a worker (a clean shutdown). True when it was known.
    pub fn remove_worker(&self, worker_id: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM workers WHERE id = $1", &[&worker_id])? == 1))
    }

    /// Queued and running counts of each of `queues`, from one snapshot.
    pub fn queue_depths(&self, queues: &[String]) -> Result<BTreeMap<String, (i64, i64)>> {
        self.read(|tx| {
            let rows = tx.query(
                "SELECT q,
                        (SELECT count(*) FROM tasks
                         WHERE status = 'queued' AND lane_id IN (SELECT id FROM lanes WHERE queue = q)),
                        (SELECT count(*) FROM tasks WHERE status = 'running' AND queue = q)
                 FROM unnest($1::text[]) AS q",
                &[&queues],
            )?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
                .collect()
        })
    }

    /// Delete finished tasks (of `statuses`) that finished more than `older_than_ms` ago, in
    /// transactions of `batch_size`, calling `progress(deleted, total)` after each (`total` is
    /// counted first, so it is an upper bound). An error from `progress` stops the purge; the
    /// batches committed stay deleted. Their logs and attempt records go with them (cascade). The
    /// arguments were checked above (`maintenance::check_purge`).
    pub fn purge_with(
        &self,
        older_than_ms: i64,
        statuses: &[Status],
        batch_size: usize,
        progress: Progress,
    ) -> Result<usize> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        // One cutoff for the count and every batch.
        let (cutoff, total) = self.read(|tx| {
            let cutoff = db_now(tx)?.saturating_sub(older_than_ms);
            let n: i64 = tx
                .query_one(
                    "SELECT count(*) FROM tasks WHERE finished_at < $1 AND status = ANY($2)",
                    &[&cutoff, &statuses],
                )?
                .get(0);
            Ok((cutoff, n as u64))
        })?;
        progress(0, total)?;
        let mut done = 0usize;
        loop {
            let n = self.write(|tx| {
                Ok(tx.execute(
                    "DELETE FROM tasks WHERE id IN (
                         SELECT id FROM tasks WHERE finished_at < $1 AND status = ANY($2)
                         LIMIT $3 FOR UPDATE SKIP LOCKED)",
                    &[&cutoff, &statuses, &(batch_size as i64)],
                )? as usize)
            })?;
            done += n;
            progress(done as u64, total.max(done as u64))?;
            if n < batch_size {
                return Ok(done);
            }
        }
    }
}
