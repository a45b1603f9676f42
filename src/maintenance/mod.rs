//! Maintenance: online backup, checkpoints, vacuum, analyze, integrity check, purge of old
//! finished tasks, and the rescuer of expired leases.

pub mod checkpointer;
pub mod rescuer;

use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::task::Status;
use crate::time::now_ms;
use rusqlite::params_from_iter;
use std::path::Path;

/// Rows deleted per transaction by `purge`, so other writers wait milliseconds, not seconds.
const PURGE_BATCH: i64 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointResult {
    /// 1 when a RESTART/TRUNCATE/FULL checkpoint could not finish because of readers or writers.
    pub busy: i64,
    pub wal_frames: i64,
    pub checkpointed_frames: i64,
}

impl Queue {
    /// Write a consistent copy of the database to `dest` while other processes keep working.
    /// `VACUUM INTO` reads one snapshot, so the copy is a single point in time, and compact.
    pub fn backup(&self, dest: &str) -> Result<()> {
        let p = Path::new(dest);
        if p.exists() {
            return Err(Error::invalid(format!(
                "backup destination {dest:?} already exists: choose a new file name (a backup never overwrites)"
            )));
        }
        if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(Error::invalid(format!(
                    "backup destination directory {parent:?} does not exist: create it first"
                )));
            }
        }
        self.db.read(|c| {
            c.execute("VACUUM INTO ?1", [dest])?;
            Ok(())
        })
    }

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
                        busy: r.get(0)?,
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

    pub fn analyze(&self) -> Result<()> {
        self.db
            .with_writer(|c| Ok(c.execute_batch("ANALYZE; PRAGMA optimize;")?))
    }

    /// Problems SQLite finds in the file; empty when it is healthy.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.db.read(|c| {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            let rows: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
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
        if older_than_ms < 0 {
            return Err(Error::invalid("older_than must be zero or positive"));
        }
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
        let cutoff = now_ms() - older_than_ms;
        let marks = vec!["?"; statuses.len()].join(", ");
        let sql = format!(
            "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks INDEXED BY tasks_finished
             WHERE finished_at < ? AND status IN ({marks}) LIMIT {PURGE_BATCH})"
        );
        let mut args: Vec<rusqlite::types::Value> = vec![cutoff.into()];
        args.extend(statuses.iter().map(|s| s.as_str().to_string().into()));
        let mut total = 0usize;
        loop {
            let n = self.db.write(|tx| {
                Ok(tx
                    .prepare_cached(&sql)?
                    .execute(params_from_iter(args.iter()))?)
            })?;
            total += n;
            if (n as i64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }
}
