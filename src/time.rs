//! Time is stored as integer milliseconds since the Unix epoch, UTC, everywhere in the database.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds (as given by users) to milliseconds, rounding to the nearest millisecond.
pub fn secs_to_ms(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}
