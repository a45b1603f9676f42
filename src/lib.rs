//! prismq_queue core: a persistent task queue on SQLite.
//!
//! The core knows nothing of Python; `python` (behind the `python` feature) is the thin binding.

pub mod adapters;
pub mod engine;
pub mod model;
pub mod ops;
pub mod storage;

#[cfg(feature = "python")]
mod python;

pub use adapters::legacy::{ImportProblem, ImportReport, LegacyInfo};
pub use engine::queue::Queue;
pub use model::attempt::AttemptRow;
pub use model::claim::{ClaimRequest, LaneFilter};
pub use model::error::{Error, Result};
pub use model::lease::{FailOutcome, Failure, Lease};
pub use model::listing::{ListFilter, Stats};
pub use model::new_task::NewTask;
pub use model::options::QueueOptions;
pub use model::retry::{RetryOverrides, RetryPolicy};
pub use model::runs::{RecoverRuns, RecoveredRun, RunFilter, RunQuery, RunRecord, StartRun};
pub use model::strategy::Strategy;
pub use model::task::{Status, TaskRow};

/// Test wiring of the crate root, which sees every layer: the storage tests open the SQLite
/// driver with the engine's rules, as `Queue::open` does.
#[cfg(test)]
pub(crate) mod testutil {
    pub const RULES: &dyn crate::storage::Rules = &crate::engine::retry::QueueRules;
}
