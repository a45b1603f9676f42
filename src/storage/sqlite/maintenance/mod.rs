//! Maintenance: online backup, checkpoints, vacuum, analyze, integrity check, purge of old
//! finished tasks, and the rescuer of expired leases.

pub mod backup;
pub mod restore;

use crate::model::error::{Error, Result};
use crate::model::maintenance::PURGE_BATCH;
use crate::model::task::Status;
use crate::model::time::now_ms;
use crate::storage::sqlite::SqliteDriver;
use parking_lot::Mutex;
use rusqlite::params_from_iter;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::model::maintenance::{BackupReport, CheckpointResult, Progress, RestoreReport};
pub use restore::restore;

/// SQLite virtual-machine steps between two looks of the vacuum's progress handler, and the
/// least time between two calls of the caller's `tick`.
const VACUUM_PROGRESS_OPS: i32 = 10_000;
const VACUUM_TICK: Duration = Duration::from_millis(100);

/// The rows of an integrity check (`sql`: `PRAGMA integrity_check` with its limit, if any). A
/// check that SQLite stops on damage it cannot walk past (SQLITE_CORRUPT) has found a problem:
/// that error is its one row, rather than an error telling the caller to run the check.
pub(crate) fn integrity_problems(
    c: &rusqlite::Connection,
    sql: &str,
) -> rusqlite::Result<Vec<String>> {
    let rows = c
        .prepare(sql)
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect());
    match rows {
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            Ok(vec![e.to_string()])
        }
        other => other,
    }
}

impl SqliteDriver {
    /// `mode`: passive (never waits), full, restart or truncate.
    pub fn checkpoint(&self, mode: &str) -> Result<CheckpointResult> {
        let m = match mode.to_ascii_lowercase().as_str() {
            "passive" => "PASSIVE",
            "full" => "FULL",
            "restart" => "RESTART",
            "truncate" => "TRUNCATE",
            other => {
                return Err(Error::invalid(format!(
                "unknown checkpoint mode {other:?}: use 'passive', 'full', 'restart' or 'truncate'"
            )))
            }
        };
        self.db.with_writer(|c| {
            Ok(
                c.query_row(&format!("PRAGMA wal_checkpoint({m})"), [], |r| {
                    Ok(CheckpointResult {
                        busy: r.get::<_, i64>(0)? != 0,
                        wal_frames: r.get(1)?,
                        checkpointed_frames: r.get(2)?,
                    })
                })?,
            )
        })
    }

    pub fn vacuum(&self) -> Result<()> {
        self.db.with_writer(|c| Ok(c.execute_batch("VACUUM")?))
    }

    /// `vacuum`, calling `tick()` soon after it starts and then about every 100 ms while it
    /// runs (VACUUM cannot say how far it is). An error from `tick` interrupts the VACUUM, which
    /// then changes nothing.
    pub fn vacuum_with(&self, tick: Box<dyn FnMut() -> Result<()> + Send>) -> Result<()> {
        let stopped: Arc<Mutex<Option<Error>>> = Arc::default();
        let tick = Arc::new(Mutex::new(tick));
        self.db.with_writer(|c| {
            let (flag, tick) = (stopped.clone(), tick.clone());
            // The first look ticks at once, later ones at most every VACUUM_TICK.
            let mut last: Option<Instant> = None;
            c.progress_handler(
                VACUUM_PROGRESS_OPS,
                Some(move || {
                    if last.is_some_and(|t| t.elapsed() < VACUUM_TICK) {
                        return false;
                    }
                    last = Some(Instant::now());
                    match (tick.lock())() {
                        Ok(()) => false,
                        Err(e) => {
                            *flag.lock() = Some(e);
                            true // interrupts the statement; VACUUM rolls back
                        }
                    }
                }),
            )?;
            let r = c.execute_batch("VACUUM");
            c.progress_handler(0, None::<fn() -> bool>)?;
            match (r, stopped.lock().take()) {
                (_, Some(e)) => Err(e),
                (r, None) => Ok(r?),
            }
        })
    }

    pub fn analyze(&self) -> Result<()> {
        self.db
            .with_writer(|c| Ok(c.execute_batch("ANALYZE; PRAGMA optimize;")?))
    }

    /// Problems SQLite finds in the file; empty when it is healthy.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.db.read(|c| {
            let rows = integrity_problems(c, "PRAGMA integrity_check")?;
            Ok(if rows.len() == 1 && rows[0] == "ok" {
                Vec::new()
            } else {
                rows
            })
        })
    }

    /// Delete tasks in `statuses` (terminal ones only) that finished more than `older_than_ms`
    /// ago, with their logs. Returns how many tasks were deleted.
    pub fn purge(&self, older_than_ms: i64, statuses: &[Status]) -> Result<usize> {
        self.purge_with(older_than_ms, statuses, PURGE_BATCH, &mut |_, _| Ok(()))
    }

    /// `purge` in transactions of `batch_size` tasks, calling `progress(deleted, total)` after
    /// each (`total` is counted first; tasks that finish meanwhile are not deleted). An error
    /// from `progress` stops the purge: the batches already committed stay deleted. The
    /// arguments were checked above (`maintenance::check_purge`).
    pub fn purge_with(
        &self,
        older_than_ms: i64,
        statuses: &[Status],
        batch_size: usize,
        progress: Progress,
    ) -> Result<usize> {
        // One cutoff for the count and every batch, so the total is an upper bound.
        let now = now_ms();
        let (count_sql, args) = purge_sql(older_than_ms, statuses, "count(*)", now);
        let total = self.db.read(|c| {
            Ok(c.prepare_cached(&count_sql)?
                .query_row(params_from_iter(args.iter()), |r| r.get::<_, i64>(0))?
                as u64)
        })?;
        let (ids_sql, _) = purge_sql(older_than_ms, statuses, "id", now);
        let sql = format!("DELETE FROM tasks WHERE id IN ({ids_sql} LIMIT {batch_size})");
        let mut done = 0usize;
        progress(0, total)?;
        loop {
            let n = self.db.write(|tx| {
                let top = || -> Result<i64> {
                    Ok(tx
                        .prepare_cached("SELECT coalesce(max(id), 0) FROM tasks")?
                        .query_row([], |r| r.get(0))?)
                };
                let before = top()?;
                let n = tx
                    .prepare_cached(&sql)?
                    .execute(params_from_iter(args.iter()))?;
                if n > 0 && top()? < before {
                    // The newest task went: keep its id from being handed out again.
                    crate::storage::sqlite::enqueue::raise_id_floor(tx, before)?;
                }
                Ok(n)
            })?;
            done += n;
            // Tasks deleted by another purge meanwhile, or retried, make the count an upper bound.
            progress(done as u64, total.max(done as u64))?;
            if n < batch_size {
                return Ok(done);
            }
        }
    }
}

/// `SELECT {what} FROM` the tasks `purge` deletes, and its arguments. `now` fixes the cutoff.
fn purge_sql(
    older_than_ms: i64,
    statuses: &[Status],
    what: &str,
    now: i64,
) -> (String, Vec<rusqlite::types::Value>) {
    let cutoff = now - older_than_ms;
    let marks = vec!["?"; statuses.len()].join(", ");
    let sql = format!(
        "SELECT {what} FROM tasks INDEXED BY tasks_finished WHERE finished_at < ? AND status IN ({marks})"
    );
    let mut args: Vec<rusqlite::types::Value> = vec![cutoff.into()];
    args.extend(statuses.iter().map(|s| s.as_str().to_string().into()));
    (sql, args)
}

#[cfg(test)]
mod tests {
    use crate::model::task::Status;
    use crate::storage::sqlite::testutil::file_driver;
    use crate::{ClaimRequest, Lease, NewTask};

    #[test]
    fn purge_in_batches_reports_progress_and_deletes_only_old_finished_tasks() {
        let (_dir, q) = file_driver();
        let tasks: Vec<NewTask> = (0..25).map(|_| NewTask::new("t", "null")).collect();
        q.enqueue_many(&tasks).unwrap();
        let mut req = ClaimRequest::new("w");
        req.limit = 20;
        for t in q.claim(&req).unwrap() {
            let lease = Lease {
                task_id: t.id,
                token: t.lease_token.unwrap(),
            };
            q.complete(lease, None).unwrap();
        }
        // finished_at < now: let the clock move past the completions.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut seen = Vec::new();
        let n = q
            .purge_with(0, &[Status::Completed], 7, &mut |done, total| {
                seen.push((done, total));
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 20);
        assert_eq!(seen, vec![(0, 20), (7, 20), (14, 20), (20, 20)]);
        assert_eq!(q.stats(None).unwrap().total, 5);
    }

    #[test]
    fn an_error_from_the_vacuum_tick_interrupts_it() {
        let (_dir, q) = file_driver();
        let big = format!("\"{}\"", "x".repeat(2000));
        let tasks: Vec<NewTask> = (0..20_000)
            .map(|_| NewTask::new("t", big.clone()))
            .collect();
        q.enqueue_many(&tasks).unwrap();
        let err = q
            .vacuum_with(Box::new(|| Err(crate::Error::Database("enough".into()))))
            .unwrap_err();
        assert!(err.to_string().contains("enough"), "{err}");
        assert_eq!(q.stats(None).unwrap().total, 20_000);
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = ticks.clone();
        q.vacuum_with(Box::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }))
        .unwrap();
        // Rebuilding tens of MB runs far more than VACUUM_PROGRESS_OPS steps: the first look ticks.
        assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    }
}
