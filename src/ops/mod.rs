//! Operations on top of the engine: listing and counting, metrics, the change feed, workers,
//! maintenance, copy between queues.

pub mod changes;
pub mod copy;
pub mod list;
pub mod maintenance;
pub mod metrics;
pub mod workers;
