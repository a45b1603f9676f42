//! Each queue's default execution timeout (issue 20; the older system's `EXECUTION_TIMEOUT`):
//! a task enqueued without `timeout` runs under its queue's default, 300 s unless the queue sets
//! another or none. Applied when a task is read or claimed, never written into the task, so tasks
//! enqueued before a default was set (or before this version) get it too.

use crate::model::error::{Error, Result};
use crate::model::time::{check_duration, Least};
use std::collections::HashMap;

/// The default of a queue that never set one: the older system's `EXECUTION_TIMEOUT`.
pub const DEFAULT_EXECUTION_TIMEOUT_MS: i64 = 300_000;

/// The check of `set_default_timeout(queue, timeout)`: a queue name, and a positive duration of
/// at most 100 years, or `None` (no timeout).
pub fn check_queue_timeout(queue: &str, timeout_ms: Option<i64>) -> Result<()> {
    if queue.trim().is_empty() {
        return Err(Error::invalid("queue must be a non-empty string"));
    }
    if let Some(ms) = timeout_ms {
        check_duration("default timeout", ms, Least::Positive)?;
    }
    Ok(())
}

/// The defaults the queues set (a queue absent here has `DEFAULT_EXECUTION_TIMEOUT_MS`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueTimeouts {
    /// Queue -> its default in ms, `None` for no timeout.
    pub by_queue: HashMap<String, Option<i64>>,
}

impl QueueTimeouts {
    /// The default of `queue`: its own setting, else `DEFAULT_EXECUTION_TIMEOUT_MS`.
    pub fn default_for(&self, queue: &str) -> Option<i64> {
        match self.by_queue.get(queue) {
            Some(set) => *set,
            None => Some(DEFAULT_EXECUTION_TIMEOUT_MS),
        }
    }

    /// The timeout an attempt of a task runs under: its own, else its queue's default.
    pub fn effective(&self, queue: &str, own: Option<i64>) -> Option<i64> {
        own.or_else(|| self.default_for(queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_s_own_timeout_wins_then_the_queue_s_then_300_s() {
        let mut t = QueueTimeouts::default();
        t.by_queue.insert("fast".into(), Some(5_000));
        t.by_queue.insert("forever".into(), None);
        assert_eq!(t.effective("fast", Some(60_000)), Some(60_000));
        assert_eq!(t.effective("fast", None), Some(5_000));
        assert_eq!(t.effective("forever", None), None);
        assert_eq!(t.effective("forever", Some(1)), Some(1));
        assert_eq!(
            t.effective("other", None),
            Some(DEFAULT_EXECUTION_TIMEOUT_MS)
        );
    }

    #[test]
    fn bad_defaults_are_refused() {
        assert!(check_queue_timeout(" ", Some(1_000)).is_err());
        assert!(check_queue_timeout("q", Some(0)).is_err());
        assert!(check_queue_timeout("q", Some(-5)).is_err());
        assert!(check_queue_timeout("q", Some(crate::model::time::MAX_DURATION_MS + 1)).is_err());
        assert!(check_queue_timeout("q", None).is_ok());
        assert!(check_queue_timeout("q", Some(1)).is_ok());
    }
}
