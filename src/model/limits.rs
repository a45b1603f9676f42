//! Limits: concurrency (per queue, per task type, per payload key) and rate (a token bucket),
//! enforced inside the claim by every backend. This module holds what is the same on every
//! backend: the checks of `set_limit`, the rate's text, the bucket's arithmetic and the
//! admission of candidates against what the database says is running. No I/O.

use crate::model::error::{Error, Result};
use crate::model::strategy::{Candidate, Strategy};
use serde::Serialize;
use std::collections::HashMap;

/// Rows a limited claim reads at most per lane while stepping over tasks of saturated keys: a
/// lane whose first `PER_KEY_SCAN` due tasks all belong to saturated keys gives nothing this
/// time (reading on would make one claim's cost grow with the backlog).
pub const PER_KEY_SCAN: usize = 256;

/// The longest `per` key accepted (a top-level payload key, not a path).
const MAX_KEY_CHARS: usize = 200;

/// A lane as a limited claim sees it: (id, queue, type).
pub type NamedLane = (i64, String, String);

/// A rate: `count` tasks per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: i64,
    pub period_ms: i64,
}

const UNITS: &[(&[&str], i64, &str)] = &[
    (&["s", "sec", "second"], 1_000, "s"),
    (&["m", "min", "minute"], 60_000, "min"),
    (&["h", "hour"], 3_600_000, "h"),
    (&["d", "day"], 86_400_000, "day"),
];

impl Rate {
    /// Parse "N/unit": N an integer >= 1, unit s|sec|second|m|min|minute|h|hour|d|day (or plural).
    pub fn parse(text: &str) -> Result<Rate> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "rate {text:?} is not valid ({why}): write \"N/unit\" with N an integer >= 1 and \
                 unit one of s, sec, second, m, min, minute, h, hour, d, day (e.g. \"100/min\")"
            ))
        };
        let (n, unit) = text.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let n = n.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the count is not a whole number"));
        }
        let count: i64 = n.parse().map_err(|_| bad("the count is too large"))?;
        if !(1..=1_000_000_000).contains(&count) {
            return Err(bad("the count must be between 1 and 1,000,000,000"));
        }
        let unit = unit.trim().to_ascii_lowercase();
        let single = unit.strip_suffix('s').filter(|u| u.len() > 1);
        let period_ms = UNITS
            .iter()
            .find(|(names, _, _)| {
                names.contains(&unit.as_str()) || single.is_some_and(|u| names.contains(&u))
            })
            .map(|(_, ms, _)| *ms)
            .ok_or_else(|| bad("unknown unit"))?;
        Ok(Rate { count, period_ms })
    }

    /// The normalized text: "100/min".
    pub fn text(&self) -> String {
        let unit = UNITS
            .iter()
            .find(|(_, ms, _)| *ms == self.period_ms)
            .map_or("ms", |(_, _, name)| name);
        format!("{}/{unit}", self.count)
    }

    /// The bucket's tokens at `now`, given `tokens` at `at`: refilled at `count / period`,
    /// up to `count` (the burst a bucket full after a quiet spell allows).
    pub fn refill(&self, tokens: f64, at: i64, now: i64) -> f64 {
        let elapsed = (now - at).max(0) as f64;
        let cap = self.count as f64;
        (tokens + elapsed * cap / self.period_ms as f64).min(cap)
    }
}

/// A limit as `set_limit` gives it, validated. `task_type` "" means the whole queue.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    pub queue: String,
    pub task_type: String,
    pub concurrency: Option<i64>,
    pub per: Option<String>,
    pub rate: Option<Rate>,
}

impl LimitSpec {
    /// Check every argument of `set_limit`; the error says what was wrong.
    pub fn new(
        queue: &str,
        task_type: Option<&str>,
        concurrency: Option<i64>,
        per: Option<&str>,
        rate: Option<&str>,
    ) -> Result<LimitSpec> {
        if queue.trim().is_empty() {
            return Err(Error::invalid("a limit's queue must be a non-empty string"));
        }
        if task_type.is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::invalid(
                "a limit's type must be a non-empty string, or None for the whole queue",
            ));
        }
        if let Some(c) = concurrency {
            if c < 1 {
                return Err(Error::invalid(format!(
                    "concurrency must be an integer >= 1, not {c}"
                )));
            }
        }
        if let Some(p) = per {
            if concurrency.is_none() {
                return Err(Error::invalid(
                    "per needs concurrency: it says which tasks share each concurrency slot count",
                ));
            }
            if p.is_empty() || p.chars().count() > MAX_KEY_CHARS || p.chars().any(char::is_control)
            {
                return Err(Error::invalid(format!(
                    "per must be a top-level payload key: a non-empty string of at most \
                     {MAX_KEY_CHARS} characters without control characters"
                )));
            }
        }
        let rate = rate.map(Rate::parse).transpose()?;
        if concurrency.is_none() && rate.is_none() {
            return Err(Error::invalid(
                "a limit needs concurrency, rate or both (remove_limit takes a limit away)",
            ));
        }
        Ok(LimitSpec {
            queue: queue.to_string(),
            task_type: task_type.unwrap_or("").to_string(),
            concurrency,
            per: per.map(str::to_string),
            rate,
        })
    }

    /// Whether the limit applies to tasks of `queue` and `task_type`.
    pub fn covers(&self, queue: &str, task_type: &str) -> bool {
        self.queue == queue && (self.task_type.is_empty() || self.task_type == task_type)
    }

    /// The per-key value of a task's payload (JSON text): the key's value as compact JSON, or
    /// `None` for every task without it (those share one count).
    pub fn key_of(&self, payload: &str) -> Option<String> {
        let per = self.per.as_deref()?;
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        v.as_object()?.get(per).map(|v| v.to_string())
    }
}

/// A stored limit and its bucket: `tokens` as of `refilled_at` (the database's clock, ms).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitRow {
    pub spec: LimitSpec,
    pub tokens: f64,
    pub refilled_at: i64,
}

/// One limit as `limits()` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitInfo {
    pub queue: String,
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    pub concurrency: Option<i64>,
    pub per: Option<String>,
    pub rate: Option<String>,
    pub running: i64,
    pub waiting: i64,
    pub tokens: Option<f64>,
}

/// A task of a limited queue, as the figures and the claim see it.
pub struct Seen<'a> {
    pub queue: &'a str,
    pub task_type: &'a str,
    pub payload: &'a str,
}

/// Where a limit stands inside one claim (or one reading of the figures): what runs now, by
/// key for a `per` limit, and the tokens left.
#[derive(Debug, Clone)]
pub struct LimitState {
    pub row: LimitRow,
    pub running: i64,
    pub by_key: HashMap<Option<String>, i64>,
    /// Tokens at the claim's `now` (None without a rate).
    pub tokens: Option<f64>,
    /// Whether the claim took tokens (the row must be written back).
    pub spent: bool,
}

impl LimitState {
    pub fn new(row: LimitRow, now: i64) -> LimitState {
        let tokens = row
            .spec
            .rate
            .map(|r| r.refill(row.tokens, row.refilled_at, now));
        LimitState {
            row,
            running: 0,
            by_key: HashMap::new(),
            tokens,
            spent: false,
        }
    }

    /// Count a running task (the caller checked that the limit covers it).
    pub fn count_running(&mut self, payload: &str) {
        self.running += 1;
        if self.row.spec.per.is_some() {
            *self
                .by_key
                .entry(self.row.spec.key_of(payload))
                .or_default() += 1;
        }
    }

    /// Whether a task of this limit can start now, whatever its key: false once the whole
    /// limit is full (concurrency without `per`) or its bucket holds less than one token.
    pub fn open(&self) -> bool {
        let tokens_ok = self.tokens.is_none_or(|t| t >= 1.0);
        let slots_ok = match (self.row.spec.concurrency, &self.row.spec.per) {
            (Some(c), None) => self.running < c,
            _ => true,
        };
        tokens_ok && slots_ok
    }

    /// Whether a task with this key can start now.
    pub fn admits(&self, key: &Option<String>) -> bool {
        self.open()
            && match (self.row.spec.concurrency, &self.row.spec.per) {
                (Some(c), Some(_)) => self.by_key.get(key).copied().unwrap_or(0) < c,
                _ => true,
            }
    }

    /// Record that the claim hands out a task with this key.
    pub fn take(&mut self, key: &Option<String>) {
        self.running += 1;
        if self.row.spec.per.is_some() {
            *self.by_key.entry(key.clone()).or_default() += 1;
        }
        if let Some(t) = self.tokens.as_mut() {
            *t -= 1.0;
            self.spent = true;
        }
    }

    /// Queued, due tasks that cannot start now because of this limit, given their keys'
    /// counts (`due`: key -> queued due tasks; a single `None` entry without `per`).
    pub fn waiting(&self, due: &HashMap<Option<String>, i64>) -> i64 {
        let total: i64 = due.values().sum();
        let by_slots = match (self.row.spec.concurrency, &self.row.spec.per) {
            (Some(c), None) => (total - (c - self.running).max(0)).max(0),
            (Some(c), Some(_)) => due
                .iter()
                .map(|(k, n)| {
                    let room = (c - self.by_key.get(k).copied().unwrap_or(0)).max(0);
                    (n - room).max(0)
                })
                .sum(),
            _ => 0,
        };
        let by_tokens = match self.tokens {
            Some(t) => (total - t.floor().max(0.0) as i64).max(0),
            None => 0,
        };
        by_slots.max(by_tokens)
    }

    pub fn info(&self, waiting: i64) -> LimitInfo {
        let s = &self.row.spec;
        LimitInfo {
            queue: s.queue.clone(),
            task_type: (!s.task_type.is_empty()).then(|| s.task_type.clone()),
            concurrency: s.concurrency,
            per: s.per.clone(),
            rate: s.rate.map(|r| r.text()),
            running: self.running,
            waiting,
            tokens: self.tokens,
        }
    }
}

/// The limits of one claim, and the admission of its candidates in the strategy's order.
pub struct ClaimLimits {
    pub states: Vec<LimitState>,
}

/// One lane's part in a limited claim (from `ClaimLimits::lane`): the limits covering it and
/// what the driver reads of it.
pub struct LaneScan {
    covering: Vec<usize>,
    /// Whether a covering limit counts per payload key: the driver passes payloads then.
    pub keyed: bool,
    /// The most rows to read: the batch's size, or `PER_KEY_SCAN` when stepping over full keys.
    pub reads: usize,
}

/// A row a lane offers a limited claim, with the limits covering it and its keys under them.
pub struct Offer {
    candidate: Candidate,
    covering: Vec<usize>,
    keys: Vec<Option<String>>,
}

impl ClaimLimits {
    /// The limits of a claim from their stored `rows`, refilled to `now`, each counting the
    /// `running` tasks (queue, type, payload) it covers.
    pub fn new(rows: Vec<LimitRow>, now: i64, running: &[(String, String, String)]) -> Self {
        let mut states: Vec<LimitState> =
            rows.into_iter().map(|r| LimitState::new(r, now)).collect();
        for (q, t, payload) in running {
            for s in states.iter_mut().filter(|s| s.row.spec.covers(q, t)) {
                s.count_running(payload);
            }
        }
        ClaimLimits { states }
    }

    /// How a claim of at most `limit` tasks reads a lane of `queue` and `task_type`; `None`
    /// when a covering limit is closed, so the lane can give nothing.
    pub fn lane(&self, queue: &str, task_type: &str, limit: usize) -> Option<LaneScan> {
        let covering = self.covering(queue, task_type);
        if !self.lane_open(&covering) {
            return None;
        }
        let keyed = self.needs_keys(&covering);
        let reads = if keyed {
            PER_KEY_SCAN.max(limit)
        } else {
            limit
        };
        Some(LaneScan {
            covering,
            keyed,
            reads,
        })
    }

    /// Add to `pool` what one lane offers: of its `rows` (candidates in the strategy's order,
    /// each with its payload when `scan.keyed`), at most `limit` that its limits admit, counted
    /// on a copy of them so the lane does not offer more than they allow. `rows` is read lazily:
    /// reading stops once the lane has offered `limit` rows or its limits are full.
    pub fn offer<I>(
        &self,
        scan: &LaneScan,
        rows: I,
        limit: usize,
        pool: &mut Vec<Offer>,
    ) -> Result<()>
    where
        I: IntoIterator<Item = Result<(Candidate, Option<String>)>>,
    {
        let mut scratch = ClaimLimits {
            states: scan
                .covering
                .iter()
                .map(|&i| self.states[i].clone())
                .collect(),
        };
        let local: Vec<usize> = (0..scan.covering.len()).collect();
        let mut kept = 0;
        for row in rows {
            let (candidate, payload) = row?;
            let keys = scratch.keys(&local, payload.as_deref());
            if scratch.admits(&local, &keys) {
                scratch.take(&local, &keys);
                pool.push(Offer {
                    candidate,
                    covering: scan.covering.clone(),
                    keys,
                });
                kept += 1;
                if kept == limit || !scratch.lane_open(&local) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The candidates a limited claim takes from the lanes' offers: the best in `strategy`'s
    /// order, at most `limit`, each admitted by the limits it shares with the others (and
    /// counted against them).
    pub fn admit_best(
        &mut self,
        mut pool: Vec<Offer>,
        strategy: Strategy,
        limit: usize,
    ) -> Vec<Candidate> {
        pool.sort_by(|a, b| strategy.compare(&a.candidate, &b.candidate));
        let mut out = Vec::new();
        for o in pool {
            if out.len() == limit {
                break;
            }
            if self.admits(&o.covering, &o.keys) {
                self.take(&o.covering, &o.keys);
                out.push(o.candidate);
            }
        }
        out
    }

    /// The indexes of the limits covering a lane of `queue` and `task_type`.
    pub fn covering(&self, queue: &str, task_type: &str) -> Vec<usize> {
        (0..self.states.len())
            .filter(|&i| self.states[i].row.spec.covers(queue, task_type))
            .collect()
    }

    /// Whether any covering limit reads payload keys.
    pub fn needs_keys(&self, covering: &[usize]) -> bool {
        covering
            .iter()
            .any(|&i| self.states[i].row.spec.per.is_some())
    }

    /// The keys of a task for each covering limit, in `covering`'s order.
    pub fn keys(&self, covering: &[usize], payload: Option<&str>) -> Vec<Option<String>> {
        covering
            .iter()
            .map(|&i| payload.and_then(|p| self.states[i].row.spec.key_of(p)))
            .collect()
    }

    /// Whether every covering limit has room for the task now.
    pub fn admits(&self, covering: &[usize], keys: &[Option<String>]) -> bool {
        covering
            .iter()
            .zip(keys)
            .all(|(&i, k)| self.states[i].admits(k))
    }

    /// Hand the task out: count it against every covering limit.
    pub fn take(&mut self, covering: &[usize], keys: &[Option<String>]) {
        for (&i, k) in covering.iter().zip(keys) {
            self.states[i].take(k);
        }
    }

    /// Whether a lane can give anything at all (no covering limit is closed).
    pub fn lane_open(&self, covering: &[usize]) -> bool {
        covering.iter().all(|&i| self.states[i].open())
    }
}

/// What the figures of `limits()` are read from: running tasks and queued, due tasks of the
/// limited queues, as (queue, type, payload) with a count. A backend passes the payload only
/// for the queues of a `per` limit (`None` stands for `n` tasks whose keys are not needed).
pub struct Observed {
    pub running: Vec<(String, String, String)>,
    pub due: Vec<(String, String, Option<String>, i64)>,
}

/// `limits()` from the stored rows (sorted by queue, then type, "" first) and what runs and
/// waits, at the database's `now`.
pub fn figures(rows: Vec<LimitRow>, now: i64, seen: &Observed) -> Vec<LimitInfo> {
    rows.into_iter()
        .map(|row| {
            let mut st = LimitState::new(row, now);
            for (q, t, p) in &seen.running {
                if st.row.spec.covers(q, t) {
                    st.count_running(p);
                }
            }
            let mut due: HashMap<Option<String>, i64> = HashMap::new();
            for (q, t, p, n) in &seen.due {
                if st.row.spec.covers(q, t) {
                    let key = p.as_deref().and_then(|p| st.row.spec.key_of(p));
                    *due.entry(key).or_default() += n;
                }
            }
            let waiting = st.waiting(&due);
            st.info(waiting)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_normalize() {
        for (text, want) in [
            ("5/s", "5/s"),
            ("5/sec", "5/s"),
            ("5/seconds", "5/s"),
            ("100/min", "100/min"),
            ("100/m", "100/min"),
            ("100/minutes", "100/min"),
            ("7/h", "7/h"),
            ("7/hours", "7/h"),
            ("1/d", "1/day"),
            ("2/days", "2/day"),
            (" 3 / Min ", "3/min"),
        ] {
            assert_eq!(Rate::parse(text).unwrap().text(), want, "{text}");
        }
        for bad in [
            "5 per fortnight",
            "0/min",
            "-1/s",
            "1.5/s",
            "/s",
            "5/",
            "5/ss",
            "5/fortnight",
            "5",
            "99999999999999999999/s",
        ] {
            assert!(
                matches!(Rate::parse(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn specs_are_checked() {
        assert!(LimitSpec::new("q", None, Some(1), None, None).is_ok());
        assert!(LimitSpec::new("q", Some("t"), None, None, Some("1/s")).is_ok());
        for (q, t, c, p, r) in [
            ("", None, Some(1), None, None),
            ("q", Some(""), Some(1), None, None),
            ("q", None, Some(0), None, None),
            ("q", None, None, Some("project"), None),
            ("q", None, None, None, None),
            ("q", None, Some(1), Some(""), None),
            ("q", None, Some(1), None, Some("0/s")),
        ] {
            assert!(
                LimitSpec::new(q, t, c, p, r).is_err(),
                "{q} {t:?} {c:?} {p:?} {r:?}"
            );
        }
    }

    #[test]
    fn the_bucket_refills_up_to_its_capacity() {
        let r = Rate::parse("10/s").unwrap();
        assert_eq!(r.refill(0.0, 1_000, 1_500), 5.0);
        assert_eq!(r.refill(2.0, 1_000, 60_000), 10.0);
        // A clock that went back refills nothing.
        assert_eq!(r.refill(2.0, 1_000, 500), 2.0);
    }

    fn state(c: Option<i64>, per: Option<&str>, rate: Option<&str>) -> LimitState {
        let spec = LimitSpec::new("q", None, c, per, rate).unwrap();
        let tokens = spec.rate.map_or(0.0, |r| r.count as f64);
        LimitState::new(
            LimitRow {
                spec,
                tokens,
                refilled_at: 0,
            },
            0,
        )
    }

    #[test]
    fn admission_counts_slots_keys_and_tokens() {
        let mut s = state(Some(2), None, None);
        s.count_running("{}");
        assert!(s.admits(&None));
        s.take(&None);
        assert!(!s.open() && !s.admits(&None));

        let mut k = state(Some(1), Some("project"), None);
        k.count_running(r#"{"project": "a"}"#);
        let a = k.row.spec.key_of(r#"{"project":"a","x":1}"#);
        let b = k.row.spec.key_of(r#"{"project":"b"}"#);
        assert!(!k.admits(&a) && k.admits(&b) && k.admits(&None));
        // Tasks without the key share one count.
        assert_eq!(k.row.spec.key_of("[1]"), k.row.spec.key_of("{}"));

        let mut r = state(None, None, Some("2/min"));
        r.take(&None);
        r.take(&None);
        assert!(!r.open() && r.spent);
    }

    #[test]
    fn waiting_counts_what_cannot_start_now() {
        let mut s = state(Some(3), None, None);
        s.count_running("{}");
        assert_eq!(s.waiting(&HashMap::from([(None, 5)])), 3);
        let mut k = state(Some(1), Some("p"), None);
        k.count_running(r#"{"p": 1}"#);
        let due = HashMap::from([(Some("1".to_string()), 4), (Some("2".to_string()), 4)]);
        assert_eq!(k.waiting(&due), 4 + 3);
        let r = state(None, None, Some("2/s"));
        assert_eq!(r.waiting(&HashMap::from([(None, 5)])), 3);
    }
}
