//! What the maintenance operations report (backup, restore, checkpoint).

use crate::model::error::Result;
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
