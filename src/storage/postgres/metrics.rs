//! A snapshot of the queue's health for operators, as on SQLite (storage/sqlite/metrics.rs):
//! depths by queue and type, outcomes and processing times over a window (from the same
//! bounded sample of the latest finished tasks), retries, workers and the size of the schema's
//! tables. One read snapshot; the WAL and checkpoint figures are SQLite's
//! (`Capabilities::wal_figures` is false here).

use crate::model::error::Result;
use crate::model::metrics::{
    window_figures, DatabaseFigures, Depth, Depths, Finished, LockContention, Metrics,
    WorkerCounts, SAMPLE_LIMIT,
};
use crate::storage::postgres::{db_now, PgDriver, RETRIES, RETRY_WAIT_US};
use std::sync::atomic::Ordering;

impl PgDriver {
    /// Everything an operator watches, with rates and percentiles over the last `window_ms`.
    pub fn metrics_over(&self, window_ms: i64) -> Result<Metrics> {
        crate::model::time::check_duration(
            "window",
            window_ms,
            crate::model::time::Least::Positive,
        )?;
        let stats = self.stats(None)?;
        let workers = self.workers()?;
        let (now, lanes, outcomes, sample, sizes) = self.read(|tx| {
            let now = db_now(tx)?;
            let since = now - window_ms;
            // Queued and running rows only: the finished history is never read here.
            let lanes = tx
                .query(
                    "SELECT l.queue, l.type,
                            count(*) FILTER (WHERE t.status = 'queued'),
                            count(*) FILTER (WHERE t.status = 'running'),
                            count(*) FILTER (WHERE t.status = 'queued' AND t.attempts > 0)
                     FROM tasks t JOIN lanes l ON l.id = t.lane_id
                     WHERE t.status IN ('queued', 'running')
                     GROUP BY l.queue, l.type",
                    &[],
                )?
                .iter()
                .map(|r| {
                    let depth = Depth {
                        queued: r.get(2),
                        running: r.get(3),
                        retrying: r.get(4),
                    };
                    (r.get::<_, String>(0), r.get::<_, String>(1), depth)
                })
                .collect::<Vec<_>>();
            let o = tx.query_one(
                "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
                        count(*) FILTER (WHERE status = 'cancelled')
                 FROM tasks WHERE finished_at >= $1",
                &[&since],
            )?;
            let sample = tx
                .query(
                    "SELECT type, status, started_at, finished_at, attempts FROM tasks
                     WHERE finished_at >= $1 ORDER BY finished_at DESC LIMIT $2",
                    &[&since, &SAMPLE_LIMIT],
                )?
                .iter()
                .map(|r| Finished {
                    task_type: r.get(0),
                    status: r.get(1),
                    started: r.get(2),
                    finished: r.get(3),
                    attempts: r.get(4),
                })
                .collect::<Vec<_>>();
            // The schema's tables with their indexes and TOAST, and the server's page size.
            let sizes = tx.query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint,
                        current_setting('block_size')::bigint
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                &[],
            )?;
            Ok((
                now,
                lanes,
                (o.get(0), o.get(1), o.get(2)),
                sample,
                (sizes.get::<_, i64>(0), sizes.get::<_, i64>(1)),
            ))
        })?;
        let depths = Depths::of_lanes(&lanes);
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
            window: window_figures(window_ms, now - window_ms, outcomes, &sample),
            workers: WorkerCounts {
                active: workers.iter().filter(|w| !w.stale).count(),
                stale: workers.iter().filter(|w| w.stale).count(),
            },
            // Here: transactions run again after a deadlock or a serialization failure.
            lock_contention: LockContention {
                busy_retries: RETRIES.load(Ordering::Relaxed),
                busy_wait_seconds: RETRY_WAIT_US.load(Ordering::Relaxed) as f64 / 1e6,
            },
            database: DatabaseFigures {
                size_bytes: sizes.0,
                page_size: sizes.1,
                wal_bytes: 0,
                wal_frames: None,
                wal_frames_pending: None,
            },
            checkpoint: None,
            limits: Vec::new(),
        })
    }
}
