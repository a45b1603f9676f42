//! The engine: the queue's semantics, written once over the storage seam (`storage::Driver`).

pub mod ack;
pub mod admin;
pub mod claim;
pub mod enqueue;
pub mod fencing;
pub mod limits;
pub mod queue;
pub mod retry;
pub mod run_rules;
pub mod schedules;
pub mod timeout_cache;
pub mod timeouts;
pub mod wait;
pub mod wakeup;
