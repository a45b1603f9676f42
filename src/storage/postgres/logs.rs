//! The core's own lines in a task's log (a retry, a dead letter, a rescue, a cancel), written
//! inside the caller's transaction; apart from `ack` so every writer can use it.

use crate::model::error::Result;
use crate::storage::postgres::statements::Tx;

pub(crate) fn log_in(tx: &mut Tx, task_id: i64, at: i64, level: &str, message: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO task_logs (task_id, at, level, message) VALUES ($1, $2, $3, $4)",
        &[&task_id, &at, &level, &message],
    )?;
    Ok(())
}
