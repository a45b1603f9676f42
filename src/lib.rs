//! prismq_queue core: a persistent task queue on SQLite.
//!
//! The core knows nothing of Python; `python` (behind the `python` feature) is the thin binding.

pub mod ack;
pub mod admin;
pub mod changes;
pub mod claim;
pub mod db;
pub mod enqueue;
pub mod error;
pub mod legacy;
pub mod logs;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod position;
pub mod queue;
pub mod retry;
pub mod runs;
pub mod schema;
pub mod task;
pub mod time;
pub mod vfs;
pub mod workers;

#[cfg(feature = "python")]
mod python;

pub use ack::{FailOutcome, Lease};
pub use admin::{ListFilter, Stats};
pub use claim::lanes::LaneFilter;
pub use claim::strategy::Strategy;
pub use claim::ClaimRequest;
pub use enqueue::NewTask;
pub use error::{Error, Result};
pub use legacy::{ImportProblem, ImportReport, LegacyInfo};
pub use queue::{Queue, QueueOptions};
pub use retry::{RetryOverrides, RetryPolicy};
pub use runs::{RecoverRuns, RecoveredRun, RunFilter, RunQuery, RunRecord, StartRun};
pub use task::{Status, TaskRow};
