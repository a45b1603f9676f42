//! What the maintenance operations report (backup, restore, checkpoint).

use crate::model::error::{Error, Result};
use crate::model::task::Status;
use crate::model::time::{check_duration, Least};
use serde::Serialize;

/// `progress(done, total)`: called between steps; an error stops the operation.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64) -> Result<()>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    pub path: String,
    pub bytes: u64,
    pub pages: u64,
    /// File names of partial backups into the same destination left by processes that are gone,
    /// removed before this one started.
    pub removed_partials: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub target: String,
    pub bytes: u64,
    pub pages: u64,
    pub schema_version: i64,
    /// The target did not exist and was created.
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckpointResult {
    /// A RESTART/TRUNCATE/FULL checkpoint could not finish because of readers or writers.
    pub busy: bool,
    pub wal_frames: i64,
    pub checkpointed_frames: i64,
}

/// Rows deleted per transaction by `purge`, so other writers wait milliseconds, not seconds.
pub const PURGE_BATCH: usize = 2000;

/// The largest batch `purge` and `import_legacy` accept (rows per transaction).
pub const MAX_BATCH: usize = 1_000_000;

/// The checks of `purge`, before anything is read: the batch size, the age, and statuses that
/// are all finished ones.
pub fn check_purge(older_than_ms: i64, statuses: &[Status], batch_size: usize) -> Result<()> {
    if !(1..=MAX_BATCH).contains(&batch_size) {
        return Err(Error::invalid(format!(
            "batch_size must be between 1 and {MAX_BATCH}, got {batch_size}"
        )));
    }
    check_duration("older_than", older_than_ms, Least::Zero)?;
    if statuses.is_empty() {
        return Err(Error::invalid(
            "statuses must name at least one of 'completed', 'failed', 'cancelled'",
        ));
    }
    if let Some(s) = statuses.iter().find(|s| !s.is_terminal()) {
        return Err(Error::invalid(format!(
            "purge removes finished tasks only; {:?} is not a finished status (use 'completed', 'failed' or 'cancelled')",
            s.as_str()
        )));
    }
    Ok(())
}
