//! Plain data shared by every layer: tasks and their states, strategies and their order, retry
//! policies, the error type, time and duration ranges. No I/O.

pub mod after;
pub mod attempt;
pub mod changes;
pub mod claim;
pub mod copy;
pub mod dependencies;
pub mod error;
pub mod lease;
pub mod limits;
pub mod listing;
pub mod maintenance;
pub mod metrics;
pub mod new_task;
pub mod observe;
pub mod options;
pub mod paths;
pub mod retry;
pub mod runs;
pub mod schedule;
pub mod strategy;
pub mod task;
pub mod time;
pub mod timeouts;
