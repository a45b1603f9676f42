//! Each queue's default execution timeout, in table `queue_timeouts` (see `model::timeouts`).

use crate::model::error::Result;
use crate::model::timeouts::QueueTimeouts;
use crate::storage::postgres::PgDriver;

impl PgDriver {
    /// Set `queue`'s default (`None`: no timeout); checked by the engine.
    pub fn set_queue_timeout(&self, queue: &str, timeout_ms: Option<i64>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO queue_timeouts (queue, timeout_ms) VALUES ($1, $2)
                 ON CONFLICT (queue) DO UPDATE SET timeout_ms = excluded.timeout_ms",
                &[&queue, &timeout_ms],
            )?;
            Ok(())
        })
    }

    /// Every queue's setting (a handful of rows: one per queue that set one).
    pub fn queue_timeouts(&self) -> Result<QueueTimeouts> {
        self.read(|tx| {
            let rows = tx.query("SELECT queue, timeout_ms FROM queue_timeouts", &[])?;
            Ok(QueueTimeouts {
                by_queue: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            })
        })
    }
}
