//! Each queue's default execution timeout, in table `queue_timeouts` (see `model::timeouts`).

use crate::model::error::Result;
use crate::model::timeouts::QueueTimeouts;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::params;

impl SqliteDriver {
    /// Set `queue`'s default (`None`: no timeout); checked by the engine.
    pub fn set_queue_timeout(&self, queue: &str, timeout_ms: Option<i64>) -> Result<()> {
        self.db.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO queue_timeouts (queue, timeout_ms) VALUES (?1, ?2)
                 ON CONFLICT (queue) DO UPDATE SET timeout_ms = excluded.timeout_ms",
            )?
            .execute(params![queue, timeout_ms])?;
            Ok(())
        })
    }

    /// Every queue's setting (a handful of rows: one per queue that set one).
    pub fn queue_timeouts(&self) -> Result<QueueTimeouts> {
        self.db.read(|c| {
            let mut stmt = c.prepare_cached("SELECT queue, timeout_ms FROM queue_timeouts")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(QueueTimeouts {
                by_queue: rows.collect::<rusqlite::Result<_>>()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::sqlite::testutil::file_driver;

    #[test]
    fn a_setting_is_kept_replaced_and_none_means_no_timeout() {
        let (_d, q) = file_driver();
        assert!(q.queue_timeouts().unwrap().by_queue.is_empty());
        q.set_queue_timeout("a", Some(5_000)).unwrap();
        q.set_queue_timeout("b", None).unwrap();
        q.set_queue_timeout("a", Some(7_000)).unwrap();
        let t = q.queue_timeouts().unwrap();
        assert_eq!(t.default_for("a"), Some(7_000));
        assert_eq!(t.default_for("b"), None);
        assert_eq!(t.by_queue.len(), 2);
    }
}
