//! Periodic tasks: a schedule's definition, its checks, and when it is due. No I/O: the cron
//! arithmetic runs on `croner` (a maintained parser, with its documented DST rules) over
//! `chrono-tz`'s time zone database, so a due time is the same on every host and backend.

use crate::model::error::{Error, Result};
use crate::model::new_task::NewTask;
use crate::model::retry::RetryOverrides;
use crate::model::time::{check_time, iso, MAX_DURATION_MS};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;

/// The shortest interval of an `every` schedule: the scheduler looks about once a second, so a
/// shorter one would always be catching up.
pub const MIN_EVERY_MS: i64 = 1_000;

/// The most due times one pass enqueues for a `catch_up` schedule after a gap (the latest ones;
/// older ones are dropped), so a schedule paused or unserved for a year does not flood the queue.
pub const MAX_CATCH_UP: usize = 100;

/// The most schedules one pass of the scheduler handles; the rest wait for the next pass.
pub const MAX_DUE_PER_PASS: i64 = 100;

const MAX_NAME_LEN: usize = 200;

/// What becomes of due times that passed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Only the latest missed time is enqueued (once); older ones are dropped.
    #[default]
    Skip,
    /// Every missed time is enqueued, the latest `MAX_CATCH_UP` at most.
    CatchUp,
}

impl Missed {
    pub fn parse(s: &str) -> Result<Missed> {
        match s {
            "skip" => Ok(Missed::Skip),
            "catch_up" => Ok(Missed::CatchUp),
            other => Err(Error::invalid(format!(
                "missed must be \"skip\" (enqueue only the latest missed time) or \"catch_up\" \
                 (enqueue each missed time, the latest {MAX_CATCH_UP} at most), got {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::CatchUp => "catch_up",
        }
    }
}

/// Enqueue options a schedule's tasks get; only those given are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleOptions {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_attempts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub requires: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeout_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry: Option<RetryOverrides>,
}

/// A schedule as given to `Queue::schedule`; stored as its JSON (`definition`), which is also
/// what tells a call with the same arguments (nothing changes) from a new definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub name: String,
    pub task_type: String,
    pub queue: String,
    /// JSON text.
    pub payload: String,
    pub cron: Option<String>,
    pub every_ms: Option<i64>,
    pub tz: String,
    pub missed: Missed,
    pub options: ScheduleOptions,
}

/// A stored schedule and its state.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub spec: ScheduleSpec,
    pub paused: bool,
    /// The next due time (ms since the epoch, UTC).
    pub next_run: i64,
    /// The latest due time enqueued, if any.
    pub last_run: Option<i64>,
    /// Bumped by every change of the definition or pause state: a pass that read an older one
    /// enqueues nothing.
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One firing, applied in one transaction by `Driver::schedule_fire` only when the row still
/// has `revision` and `expected_next_run` and is not paused.
#[derive(Debug, Clone)]
pub struct ScheduleFire {
    pub name: String,
    pub revision: i64,
    pub expected_next_run: i64,
    pub next_run: i64,
    pub last_run: i64,
    pub tasks: Vec<NewTask>,
}

/// What a pass does for one due schedule: the due times to enqueue (ascending) and the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub due: Vec<i64>,
    pub next_run: i64,
}

impl ScheduleSpec {
    /// Check everything, so a bad definition writes nothing: the name, exactly one of cron and
    /// every, the cron pattern, the time zone, and the task each due time enqueues.
    pub fn validate(&self, max_payload_bytes: usize) -> Result<()> {
        if self.name.trim().is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(Error::invalid(format!(
                "a schedule's name must be a non-empty string of at most {MAX_NAME_LEN} characters"
            )));
        }
        match (&self.cron, self.every_ms) {
            (Some(_), Some(_)) => return Err(Error::invalid(
                "give either cron or every, not both: cron=\"0 6 * * *\" or every=3600 (seconds)",
            )),
            (None, None) => {
                return Err(Error::invalid(
                    "give cron (e.g. cron=\"0 6 * * *\") or every (seconds, e.g. every=3600)",
                ))
            }
            (Some(c), None) => {
                parse_cron(c)?;
            }
            (None, Some(ms)) => check_every(ms)?,
        }
        parse_tz(&self.tz)?;
        self.task_at(0).validate(max_payload_bytes)
    }

    /// The task due time `at` enqueues: due at `at` (so `task.run_after` tells which time it
    /// stands for), keyed `schedule:{name}:{at}` so a due time is enqueued once.
    pub fn task_at(&self, at: i64) -> NewTask {
        let mut t = NewTask::new(self.task_type.clone(), self.payload.clone());
        t.queue = self.queue.clone();
        let o = &self.options;
        if let Some(p) = o.priority {
            t.priority = p;
        }
        if let Some(m) = o.max_attempts {
            t.max_attempts = m;
        }
        t.requires = o.requires.clone();
        t.timeout_ms = o.timeout_ms;
        t.retry = o.retry;
        t.run_after = Some(at);
        t.idempotency_key = Some(format!("schedule:{}:{at}", self.name));
        t
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: i64) -> Result<i64> {
        match (&self.cron, self.every_ms) {
            (_, Some(every)) => after
                .checked_add(every)
                .filter(|t| check_time("next run", *t).is_ok())
                .ok_or_else(|| Error::invalid("the schedule's next run is past year 9999")),
            (Some(cron), None) => {
                let (cron, tz) = (parse_cron(cron)?, parse_tz(&self.tz)?);
                let start = at_ms(after, tz)?;
                let next = cron.find_next_occurrence(&start, false).map_err(|e| {
                    Error::invalid(format!(
                        "cron {:?} has no time after {}: {e}",
                        cron.pattern.to_string(),
                        iso(after)
                    ))
                })?;
                check_time("next run", next.timestamp_millis())
            }
            (None, None) => Err(Error::invalid("a schedule needs cron or every")),
        }
    }

    /// The latest due times at or before `now`, from `next_run` on (at most `limit`, ascending).
    fn latest_due(&self, next_run: i64, now: i64, limit: usize) -> Result<Vec<i64>> {
        let mut due = Vec::new();
        if let Some(every) = self.every_ms {
            // Due times are next_run + k * every: computed, not walked, however long the gap.
            let last = next_run + (now - next_run) / every * every;
            let mut t = last;
            while t >= next_run && due.len() < limit {
                due.push(t);
                t -= every;
            }
        } else if let Some(cron) = &self.cron {
            let (cron, tz) = (parse_cron(cron)?, parse_tz(&self.tz)?);
            let mut t = at_ms(now, tz)?;
            let mut inclusive = true;
            while due.len() < limit {
                let Ok(prev) = cron.find_previous_occurrence(&t, inclusive) else {
                    break;
                };
                if prev.timestamp_millis() < next_run {
                    break;
                }
                due.push(prev.timestamp_millis());
                (t, inclusive) = (prev, false);
            }
        }
        due.reverse();
        Ok(due)
    }

    /// What a pass at `now` does for a schedule whose next due time is `next_run`: nothing when
    /// it is not due; otherwise the due times its missed-times policy enqueues, and the first due
    /// time after `now`.
    pub fn plan(&self, next_run: i64, now: i64) -> Result<Plan> {
        if next_run > now {
            return Ok(Plan {
                due: Vec::new(),
                next_run,
            });
        }
        let limit = match self.missed {
            Missed::Skip => 1,
            Missed::CatchUp => MAX_CATCH_UP,
        };
        let mut due = self.latest_due(next_run, now, limit)?;
        if due.is_empty() {
            // next_run is due by definition (a stored value the pattern no longer yields, say).
            due.push(next_run);
        }
        let last = *due.last().unwrap_or(&next_run);
        // An interval stays on its grid (last + every is after now); a cron pattern's next time
        // is the first after now.
        let from = if self.every_ms.is_some() {
            last
        } else {
            now.max(last)
        };
        let next_run = self.next_after(from)?;
        Ok(Plan { due, next_run })
    }
}

fn check_every(ms: i64) -> Result<()> {
    if !(MIN_EVERY_MS..=MAX_DURATION_MS).contains(&ms) {
        return Err(Error::invalid(format!(
            "every must be between {} and {} seconds (100 years), got {} seconds",
            MIN_EVERY_MS / 1000,
            MAX_DURATION_MS / 1000,
            crate::model::time::secs_text(ms)
        )));
    }
    Ok(())
}

/// A cron pattern: five fields (minute hour day-of-month month day-of-week), or six with seconds
/// first; names (`MON`, `JAN`) and `L`, `W`, `#` as croner reads them.
pub fn parse_cron(pattern: &str) -> Result<croner::Cron> {
    croner::Cron::from_str(pattern).map_err(|e| {
        Error::invalid(format!(
            "cron {pattern:?} is not a valid pattern ({e}); write five fields, minute hour \
             day-of-month month day-of-week, e.g. \"0 6 * * *\" for 06:00 every day"
        ))
    })
}

/// An IANA time zone name (`Europe/Prague`, `UTC`).
pub fn parse_tz(name: &str) -> Result<Tz> {
    Tz::from_str(name).map_err(|_| {
        Error::invalid(format!(
            "tz {name:?} is not a known time zone: give an IANA name such as \"UTC\" or \"Europe/Prague\""
        ))
    })
}

fn at_ms(ms: i64, tz: Tz) -> Result<DateTime<Tz>> {
    let t: DateTime<Utc> = DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| Error::invalid(format!("time {ms} ms is out of range")))?;
    Ok(tz.from_utc_datetime(&t.naive_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: Option<&str>, every: Option<i64>, tz: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            task_type: "t".into(),
            queue: "default".into(),
            payload: "null".into(),
            cron: cron.map(str::to_string),
            every_ms: every,
            tz: tz.into(),
            missed: Missed::Skip,
            options: ScheduleOptions::default(),
        }
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn cron_in_a_time_zone_keeps_its_wall_clock_time_across_dst() {
        // 06:00 in Prague is 05:00 UTC in winter and 04:00 UTC in summer (DST from 2025-03-30).
        let s = spec(Some("0 6 * * *"), None, "Europe/Prague");
        let a = s.next_after(ms("2025-03-29T12:00:00Z")).unwrap();
        assert_eq!(iso(a), "2025-03-30T04:00:00.000Z");
        let b = s.next_after(ms("2025-03-28T12:00:00Z")).unwrap();
        assert_eq!(iso(b), "2025-03-29T05:00:00.000Z");
    }

    #[test]
    fn a_time_in_the_dst_gap_runs_right_after_it_and_an_overlap_once() {
        // 02:30 does not exist in Prague on 2025-03-30 (02:00 -> 03:00): croner runs it at 03:00
        // local (01:00 UTC). On 2025-10-26 02:30 happens twice: it runs once, the first time.
        let s = spec(Some("30 2 * * *"), None, "Europe/Prague");
        let gap = s.next_after(ms("2025-03-29T12:00:00Z")).unwrap();
        assert_eq!(iso(gap), "2025-03-30T01:00:00.000Z");
        let first = s.next_after(ms("2025-10-25T12:00:00Z")).unwrap();
        assert_eq!(iso(first), "2025-10-26T00:30:00.000Z");
        let after = s.next_after(first).unwrap();
        assert_eq!(iso(after), "2025-10-27T01:30:00.000Z");
    }

    #[test]
    fn skip_enqueues_the_latest_missed_time_and_catch_up_each_bounded() {
        let mut s = spec(None, Some(60_000), "UTC");
        let p = s.plan(0, 10 * 60_000 + 5).unwrap();
        assert_eq!(p.due, vec![600_000]);
        assert_eq!(p.next_run, 660_000);
        s.missed = Missed::CatchUp;
        let p = s.plan(0, 10 * 60_000 + 5).unwrap();
        assert_eq!(p.due, (0..=10).map(|k| k * 60_000).collect::<Vec<_>>());
        // A year of minutes: only the latest MAX_CATCH_UP.
        let year = 365 * 86_400_000;
        let p = s.plan(0, year).unwrap();
        assert_eq!(p.due.len(), MAX_CATCH_UP);
        assert_eq!(*p.due.last().unwrap(), year);
        assert_eq!(p.next_run, year + 60_000);
        // Not due yet: nothing.
        assert!(s.plan(100, 99).unwrap().due.is_empty());
    }

    #[test]
    fn cron_catch_up_walks_back_from_now() {
        let mut s = spec(Some("0 * * * *"), None, "UTC");
        s.missed = Missed::CatchUp;
        let p = s
            .plan(ms("2025-01-01T00:00:00Z"), ms("2025-01-01T03:30:00Z"))
            .unwrap();
        let shown: Vec<String> = p.due.iter().map(|t| iso(*t)).collect();
        assert_eq!(
            shown,
            [
                "2025-01-01T00:00:00.000Z",
                "2025-01-01T01:00:00.000Z",
                "2025-01-01T02:00:00.000Z",
                "2025-01-01T03:00:00.000Z"
            ]
        );
        assert_eq!(iso(p.next_run), "2025-01-01T04:00:00.000Z");
    }

    #[test]
    fn bad_definitions_are_refused() {
        let bad = [
            (spec(Some("61 * * * *"), None, "UTC"), "not a valid pattern"),
            (
                spec(Some("0 6 * * *"), None, "Mars/Olympus"),
                "not a known time zone",
            ),
            (spec(Some("0 6 * * *"), Some(1000), "UTC"), "not both"),
            (spec(None, None, "UTC"), "give cron"),
            (spec(None, Some(0), "UTC"), "every must be between"),
            (
                spec(None, Some(MAX_DURATION_MS + 1), "UTC"),
                "every must be between",
            ),
        ];
        for (s, want) in bad {
            let e = s.validate(1 << 20).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let mut s = spec(None, Some(1000), "UTC");
        s.options.priority = Some(0);
        assert!(s
            .validate(1 << 20)
            .unwrap_err()
            .to_string()
            .contains("priority"));
    }
}
