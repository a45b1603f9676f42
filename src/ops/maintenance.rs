//! Maintenance: purge, and the capabilities some backends have (backup, checkpoint, vacuum).

use crate::engine::queue::Queue;
use crate::model::error::Result;
use crate::model::maintenance::check_purge;
use crate::model::maintenance::BackupReport;
use crate::model::maintenance::CheckpointResult;
use crate::model::maintenance::Progress;
use crate::model::maintenance::PURGE_BATCH;
use crate::model::task::Status;

impl Queue {
    /// `purge` in transactions of `batch_size` tasks, calling `progress(deleted, total)` after
    /// each (`total` is counted first; tasks that finish meanwhile are not deleted). An error
    /// from `progress` stops the purge: the batches already committed stay deleted.
    pub fn purge_with(
        &self,
        older_than_ms: i64,
        statuses: &[Status],
        batch_size: usize,
        progress: Progress,
    ) -> Result<usize> {
        check_purge(older_than_ms, statuses, batch_size)?;
        self.driver
            .task_purge_many(older_than_ms, statuses, batch_size, progress)
    }

    /// `mode`: passive (never waits), full, restart or truncate.
    pub fn checkpoint(&self, mode: &str) -> Result<CheckpointResult> {
        self.driver.checkpoint(mode)
    }

    /// `vacuum`, calling `tick()` soon after it starts and then about every 100 ms while it
    /// runs (VACUUM cannot say how far it is). An error from `tick` interrupts the VACUUM, which
    /// then changes nothing.
    pub fn vacuum_with(&self, tick: Box<dyn FnMut() -> Result<()> + Send>) -> Result<()> {
        self.driver.vacuum_with(tick)
    }

    pub fn analyze(&self) -> Result<()> {
        self.driver.analyze()
    }

    /// Problems SQLite finds in the file; empty when it is healthy.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.driver.integrity_check()
    }

    /// `backup`, replacing an existing `dest` file when `overwrite`, and calling
    /// `progress(pages_done, pages_total)` between steps (an error from it stops the backup and
    /// leaves `dest` as it was).
    pub fn backup_with(
        &self,
        dest: &str,
        overwrite: bool,
        progress: Progress,
    ) -> Result<BackupReport> {
        self.driver.backup(dest, overwrite, progress)
    }

    /// Delete finished tasks older than `older_than_ms` in batches (see `purge_with`).
    pub fn purge(&self, older_than_ms: i64, statuses: &[Status]) -> Result<usize> {
        self.purge_with(older_than_ms, statuses, PURGE_BATCH, &mut |_, _| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::each_backend;
    use crate::model::error::Error;
    use crate::model::task::Status;

    fn invalid(e: Error) -> String {
        match e {
            Error::InvalidArgument(m) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn purge_arguments_are_checked_in_order_before_anything_is_read() {
        for (_backend, q, _guard) in each_backend() {
            let done = [Status::Completed];
            let mut called = false;
            let e = q
                .purge_with(0, &done, 0, &mut |_, _| {
                    called = true;
                    Ok(())
                })
                .unwrap_err();
            assert_eq!(
                invalid(e),
                "batch_size must be between 1 and 1000000, got 0"
            );
            assert!(!called, "no progress before the checks pass");
            let e = q.purge_with(-1, &[], 0, &mut |_, _| Ok(())).unwrap_err();
            assert!(invalid(e).starts_with("batch_size"), "batch size first");
            assert!(invalid(q.purge(-1, &[]).unwrap_err())
                .starts_with("older_than must be zero or positive, got"));
            assert_eq!(
                invalid(q.purge(0, &[]).unwrap_err()),
                "statuses must name at least one of 'completed', 'failed', 'cancelled'"
            );
            assert_eq!(
                invalid(
                    q.purge(0, &[Status::Completed, Status::Running])
                        .unwrap_err()
                ),
                "purge removes finished tasks only; \"running\" is not a finished status \
             (use 'completed', 'failed' or 'cancelled')"
            );
            assert_eq!(q.purge(0, &done).unwrap(), 0);
        }
    }
}
