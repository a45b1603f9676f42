//! Options of a queue handle and of its database connections.

use crate::model::error::Result;
use std::time::Duration;

/// Largest payload accepted by default, as serialised JSON: 1 MiB. Bigger blobs belong in a file
/// or object store, with their path in the payload.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub db: DbOptions,
    pub max_payload_bytes: usize,
    /// A worker whose last heartbeat is older than this is reported stale.
    pub stale_worker_after_ms: i64,
}

impl QueueOptions {
    /// Every duration within its range (see `time`), a payload limit of at least one byte.
    pub fn validate(&self) -> Result<()> {
        use crate::model::time::{check_duration, Least, MAX_DURATION_MS};
        if self.db.busy_timeout > std::time::Duration::from_millis(MAX_DURATION_MS as u64) {
            return Err(crate::model::error::Error::invalid(
                crate::model::time::duration_message(
                    "busy_timeout",
                    Least::Zero,
                    format_args!("{} seconds", self.db.busy_timeout.as_secs_f64()),
                ),
            ));
        }
        check_duration(
            "stale_worker_after",
            self.stale_worker_after_ms,
            Least::Positive,
        )?;
        if self.max_payload_bytes == 0 {
            return Err(crate::model::error::Error::invalid(
                "max_payload_bytes must be a positive number of bytes, got 0",
            ));
        }
        Ok(())
    }
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            db: DbOptions::default(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            stale_worker_after_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub busy_timeout: Duration,
    /// "normal" (the default, durable at checkpoints, never corrupt) or "full" (fsync every commit).
    pub synchronous: String,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            busy_timeout: Duration::from_secs(60),
            synchronous: "normal".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::Error;

    fn refused(o: QueueOptions) -> String {
        match o.validate() {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    /// The core checks what a Rust caller sets, as the binding checks what Python passes.
    #[test]
    fn options_out_of_range_are_refused_saying_which() {
        assert!(QueueOptions::default().validate().is_ok());
        let mut o = QueueOptions::default();
        o.db.busy_timeout = Duration::from_secs(u64::MAX / 4);
        assert!(refused(o).starts_with("busy_timeout must be"));
        let o = QueueOptions {
            stale_worker_after_ms: 0,
            ..QueueOptions::default()
        };
        assert!(refused(o).starts_with("stale_worker_after must be a positive"));
        let o = QueueOptions {
            max_payload_bytes: 0,
            ..QueueOptions::default()
        };
        assert_eq!(
            refused(o),
            "max_payload_bytes must be a positive number of bytes, got 0"
        );
    }
}
