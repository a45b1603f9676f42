//! `import-legacy`: bring the SQLite file of the older pure-Python queue into this queue.
//!
//! The old file is opened read-only (`SQLITE_OPEN_READONLY` and `PRAGMA query_only`) and read
//! in one snapshot; it is never written. The import goes in batches (1000 rows by default), each
//! one `BEGIN IMMEDIATE` transaction on the queue that holds the batch's tasks, their logs and
//! their `legacy_imports` rows, so other processes wait at most one batch for the write lock and
//! an import stopped anywhere (crash, Ctrl-C, a full disk) resumes where it stopped when run
//! again: rows already in `legacy_imports` for the same source are never imported twice.
//!
//! Choices, in the order a migration guide needs them:
//! - Source identity: the old file's canonical absolute path (symlinks resolved). The same file
//!   imported twice, also through another relative path or a symlink, imports nothing twice; a
//!   copy or a moved file is a new source (tasks with idempotency keys still map to the tasks
//!   they already became).
//! - Statuses: `queued` stays queued; `leased` and `processing` come back as queued, claimable at
//!   once (`run_after` no later than the import), without lease or worker, and with a log line
//!   saying who held the lease; `completed` stays completed; `failed` and `dead_letter` become
//!   `failed` (the dead letter, which `retry()` re-queues); `cancelled` stays cancelled. Any other
//!   status skips the row with a problem.
//! - Fields: type, payload (the original JSON text, byte for byte), priority (clamped to
//!   1..=1000, with a note in the report and a warning in the task's log), attempts,
//!   max_attempts, error message, result (when the old table has a `result` column), idempotency
//!   key, times (converted to UTC milliseconds; `YYYY-MM-DD HH:MM:SS[.fff]`, ISO 8601 with `T`
//!   or a space, an offset or `Z`, or a bare date), and `compatibility` as `requires` (a JSON
//!   object; `{}`, `null` or an empty value mean "no requirements"). Tasks go to the queue
//!   `default`. Missing times fall back: created <- updated <- the import time; run_after <-
//!   created; finished (of finished tasks) <- updated; started <- processing_started <-
//!   reserved_at.
//! - Idempotency keys: a key that already exists in the queue (enqueued by the new application,
//!   or an earlier row with the same key) does not create a duplicate: the legacy row is mapped
//!   to that task, and its logs are added to it with a line saying so.
//! - Values that cannot be read: a task row with an unreadable value (a time that is not a time,
//!   a payload, compatibility or result that is not JSON, a non-integer id or priority, an empty
//!   type, an unknown status, an id seen twice) is skipped, nothing of it is written, and the
//!   report lists its id, column, value and reason. Fix the row in the old file and run the
//!   import again: only the rows not yet imported are imported. A log line with an unreadable
//!   time is imported with the task's created time and listed as a problem; log details that are
//!   not JSON are kept as a JSON string; unknown log levels become `info` with the original level
//!   at the head of the message (`[TRACE2] ...`). Logs whose task is not in `task_queue` cannot
//!   be attached to anything: they are counted (`logs_orphaned`) and named in a note.
//! - Workers: not imported. A worker row is a heartbeat of a process of the old system; the new
//!   workers register themselves when they start. The report lists the old workers and their
//!   capabilities so the new workers can be started with the same ones.
//!
//! The import goes by stage: `read` (the old file, checked, and its rows in batches), `plan`
//! (one row converted, or its problems), `write` (each batch in one transaction), `report`.

mod plan;
mod read;
mod report;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_read;
mod write;

pub use read::{inspect_legacy, parse_legacy_time};
pub use report::{ImportProblem, ImportReport, LegacyInfo, LegacyWorker};

use crate::model::error::Result;
use crate::storage::sqlite::SqliteDriver;

/// Tasks per transaction.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// A batch also ends once it holds this many log lines per task of `batch_size`, so a task
/// history of millions of lines cannot make one transaction long.
const LOGS_PER_TASK_BUDGET: usize = 10;
/// The report lists at most this many problems (all are counted in `problem_count`).
const MAX_LISTED_PROBLEMS: usize = 10_000;
const MAX_LISTED_WORKERS: usize = 1000;

impl crate::engine::queue::Queue {
    /// Import the older Python queue's file at `source_path` (see the module documentation).
    pub fn import_legacy(&self, source_path: &str) -> Result<ImportReport> {
        self.import_legacy_with(source_path, DEFAULT_BATCH_SIZE, &mut |_, _| Ok(()))
    }

    /// `import_legacy` with `batch_size` tasks per transaction and a progress callback (see
    /// `SqliteDriver::import_legacy_with`). The import writes SQLite rows: a queue on another
    /// backend imports into a SQLite file first, then copies.
    pub fn import_legacy_with(
        &self,
        source_path: &str,
        batch_size: usize,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<ImportReport> {
        let driver = self.driver();
        let sqlite = driver
            .as_any()
            .and_then(|d| d.downcast_ref::<SqliteDriver>());
        let Some(sqlite) = sqlite else {
            return Err(driver.unsupported(
                "import-legacy",
                "import-legacy into a SQLite queue file, then copy it to this database",
            ));
        };
        sqlite.import_legacy_with(source_path, batch_size, progress)
    }
}
