//! Time is stored as integer milliseconds since the Unix epoch, UTC, everywhere in the database.
//!
//! The allowed ranges, checked before anything is written (so every stored time can be shown by
//! every reader, Python's `datetime` included, and no sum of a time and a duration can wrap):
//! - an instant (`run_after`, a run's times): `MIN_TIME_MS..=MAX_TIME_MS`, years 1 to 9999 UTC;
//! - a duration (delay, lease, timeout, retry base and cap, stale_worker_after, busy_timeout,
//!   waits, windows, ages): at most `MAX_DURATION_MS`, 100 years; its lower bound is 0 or 1 ms
//!   as each argument says.

use crate::model::error::{Error, Result};
use std::fmt::Display;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// 0001-01-01T00:00:00.000Z, the first instant Python's `datetime` can represent.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;
/// 9999-12-31T23:59:59.999Z, the last millisecond Python's `datetime` can represent.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// 100 years of 365.25 days: the longest delay, lease, timeout or other duration accepted.
pub const MAX_DURATION_MS: i64 = 36_525 * 86_400_000;
/// `MAX_DURATION_MS` in seconds, as messages give it.
pub const MAX_DURATION_S: i64 = MAX_DURATION_MS / 1000;

/// The environment variable that shifts this process's wall clock by a number of milliseconds:
/// a debug hook, read once, for tests that show what a clock step does (see `clock`). Never set
/// it in production.
pub const WALL_OFFSET_ENV: &str = "PRISMQ_DEBUG_WALL_CLOCK_OFFSET_MS";

fn wall_offset_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var(WALL_OFFSET_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// The wall clock, ms since the epoch (UTC).
pub fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    ms.saturating_add(wall_offset_ms())
}

/// Seconds (as given by users) to milliseconds, rounding to the nearest millisecond. The caller
/// range-checks first (`duration_ms`); out of range it saturates.
pub fn secs_to_ms(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

/// The least value a duration argument takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Least {
    /// Zero or more (a delay, a timeout of a wait).
    Zero,
    /// At least one millisecond (a lease, a task's timeout).
    Positive,
}

/// The message for a duration `what` outside its range; `given` as the caller wrote it.
pub fn duration_message(what: &str, least: Least, given: impl Display) -> String {
    let low = match least {
        Least::Zero => "0",
        Least::Positive => "0.001",
    };
    format!("{what} must be between {low} and {MAX_DURATION_S} seconds (100 years), got {given}")
}

/// Seconds for messages: `1.5`, `-3`, `60`.
pub fn secs_text(ms: i64) -> String {
    (ms as f64 / 1000.0).to_string()
}

/// Check a duration in milliseconds: `InvalidArgument` naming `what` when it is below `least`
/// (with the message each argument has always had) or above `MAX_DURATION_MS`.
pub fn check_duration(what: &str, ms: i64, least: Least) -> Result<i64> {
    let low = match least {
        Least::Zero => 0,
        Least::Positive => 1,
    };
    if ms < low {
        return Err(Error::invalid(match least {
            Least::Zero => format!(
                "{what} must be zero or positive, got {} seconds",
                secs_text(ms)
            ),
            Least::Positive => format!(
                "{what} must be a positive number of seconds, got {}",
                secs_text(ms)
            ),
        }));
    }
    if ms > MAX_DURATION_MS {
        return Err(Error::invalid(duration_message(
            what,
            least,
            format_args!("{} seconds", secs_text(ms)),
        )));
    }
    Ok(ms)
}

/// An instant for messages: ISO 8601 in UTC (`+10000-01-01T11:59:59Z` past year 9999).
pub fn iso(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{ms} ms since the epoch"),
    }
}

/// The message for an instant `what` outside the range, `given` as the caller wrote it.
pub fn time_message(what: &str, given: impl Display) -> String {
    format!(
        "{what} must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z (UTC), got {given}"
    )
}

/// Check an instant in milliseconds since the epoch.
pub fn check_time(what: &str, ms: i64) -> Result<i64> {
    if (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(Error::invalid(time_message(what, iso(ms))))
    }
}

/// The instant `wait` from now, for a wait of at most `MAX_DURATION_MS` (`check_wait`); never
/// panics (a later instant than the platform holds is the latest it holds, a century away).
pub fn deadline(wait: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(std::time::Duration::from_millis(MAX_DURATION_MS as u64)))
        .unwrap_or(now)
}

/// Check a wait given as a `Duration`: at most `MAX_DURATION_MS`.
pub fn check_wait(what: &str, wait: std::time::Duration) -> Result<std::time::Duration> {
    if wait > std::time::Duration::from_millis(MAX_DURATION_MS as u64) {
        return Err(Error::invalid(duration_message(
            what,
            Least::Zero,
            format_args!("{} seconds", wait.as_secs_f64()),
        )));
    }
    Ok(wait)
}

/// `at + ms` for a time that is stored: refused (naming `what`) when the sum leaves the range.
pub fn later(what: &str, at: i64, ms: i64) -> Result<i64> {
    match at.checked_add(ms) {
        Some(t) if (MIN_TIME_MS..=MAX_TIME_MS).contains(&t) => Ok(t),
        _ => Err(Error::invalid(format!(
            "{what} would fall after 9999-12-31T23:59:59.999Z (UTC): {} seconds from {} is too far",
            secs_text(ms),
            iso(at)
        ))),
    }
}

/// A stored time clamped into the range readers can show (a damaged row, or a value an earlier
/// version let through): `(value, true)` when it had to be moved.
pub fn clamp_stored(ms: i64) -> (i64, bool) {
    let c = ms.clamp(MIN_TIME_MS, MAX_TIME_MS);
    (c, c != ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_what_python_datetime_holds() {
        assert_eq!(iso(MIN_TIME_MS), "0001-01-01T00:00:00.000Z");
        assert_eq!(iso(MAX_TIME_MS), "9999-12-31T23:59:59.999Z");
        assert!(check_time("t", MAX_TIME_MS + 1).is_err());
        assert!(check_time("t", MIN_TIME_MS - 1).is_err());
        assert_eq!(MAX_DURATION_S, 3_155_760_000);
    }

    #[test]
    fn durations_name_their_bounds_and_sums_never_wrap() {
        let e = check_duration("lease", 10_i64.pow(18), Least::Positive)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("lease must be between 0.001 and 3155760000 seconds"),
            "{e}"
        );
        assert!(check_duration("delay", 0, Least::Zero).is_ok());
        assert!(check_duration("lease", 0, Least::Positive).is_err());
        assert!(later("run_after", MAX_TIME_MS, 1).is_err());
        assert!(later("run_after", i64::MAX, i64::MAX).is_err());
        assert_eq!(later("x", 1, 2).unwrap(), 3);
    }
}
