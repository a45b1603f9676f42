//! The queues' default execution timeouts as a handle last read them (`engine::timeouts`): a
//! field of `Queue`, kept apart from the methods that fill it so `queue` need not import them.

use crate::model::timeouts::QueueTimeouts;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The settings as last read, and when.
#[derive(Default)]
pub(crate) struct TimeoutCache {
    pub(crate) slot: Mutex<Option<(Instant, Arc<QueueTimeouts>)>>,
}

impl TimeoutCache {
    pub(crate) fn forget(&self) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
