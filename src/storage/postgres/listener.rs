//! Wake-ups of idle waiters by other processes' commits, through `LISTEN/NOTIFY`: transactions
//! that make a task claimable (enqueue, a retry, a hand-back, a rescue) name its lane
//! (`notify_in`), and `write` sends one notification on the schema's channel whose payload lists
//! those lanes (`send_in`), at most one per lane and process every `THROTTLE`. One connection per
//! handle listens, in a thread of its own that connects again (and listens again) after any
//! failure, and calls the engine's hook only for lanes this handle claims from (`Interest`);
//! waiters then look at `data_version` (see `engine::wakeup`). The engine's poll of
//! `data_version` (every 50 ms while listening) stays the safety net: a notification throttled
//! away or lost while reconnecting delays a waiter by at most one poll interval.

use crate::model::error::Result;
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::tls::Tls;
use crate::storage::postgres::PgDriver;
use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Config;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A process notifies a lane at most once per this window. The engine polls `data_version`
/// every 50 ms while it listens, so a commit whose notification was throttled away is seen as
/// soon as a lost one would be; a burst on a lane costs each listening process 20 wake-ups a
/// second instead of one per transaction.
pub const THROTTLE: Duration = Duration::from_millis(50);
/// A payload longer than this names no lane (every listener wakes): the server's limit is 8000.
const MAX_PAYLOAD: usize = 7000;

/// How often the listening thread looks whether its handle is gone.
const LOOK: Duration = Duration::from_millis(250);
/// The longest wait between two attempts to connect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The channel of a schema's queue (identifiers stop at 63 bytes; a schema name is ASCII).
pub fn channel(schema: &str) -> String {
    let mut c = format!("prismq_{schema}");
    c.truncate(63);
    c
}

/// Stops the listening thread when dropped (with the handle); counts what it heard.
pub(crate) struct Listening {
    stop: Arc<AtomicBool>,
    #[cfg_attr(not(test), allow(dead_code))]
    heard: Arc<AtomicU64>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// When this process last notified each lane, by channel: written only after the commit that
/// carried the notification, so one that rolled back (or whose COMMIT was lost) throttles
/// nothing and the next transaction on that lane notifies again.
fn last_sent() -> &'static Mutex<HashMap<String, HashMap<i64, Instant>>> {
    static LAST: OnceLock<Mutex<HashMap<String, HashMap<i64, Instant>>>> = OnceLock::new();
    LAST.get_or_init(Default::default)
}

/// The lanes of `lanes` not notified on `channel` by this process within `THROTTLE` of `now`.
pub(crate) fn due_lanes(channel: &str, lanes: &[i64], now: Instant) -> Vec<i64> {
    let last = last_sent().lock();
    let sent = last.get(channel);
    let mut due: Vec<i64> = lanes
        .iter()
        .copied()
        .filter(|l| {
            sent.and_then(|m| m.get(l))
                .is_none_or(|t| now.duration_since(*t) >= THROTTLE)
        })
        .collect();
    due.sort_unstable();
    due.dedup();
    due
}

/// Record that a committed transaction notified `lanes` on `channel` at `at`.
pub(crate) fn sent(channel: &str, lanes: &[i64], at: Instant) {
    if lanes.is_empty() {
        return;
    }
    let mut last = last_sent().lock();
    let m = last.entry(channel.to_owned()).or_default();
    if m.len() > 4096 {
        m.retain(|_, t| at.duration_since(*t) < THROTTLE);
    }
    for l in lanes {
        m.insert(*l, at);
    }
}

/// The payload naming `lanes`: their ids, comma-separated; empty (any lane) when too long.
fn payload(lanes: &[i64]) -> String {
    let text = lanes
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if text.len() > MAX_PAYLOAD {
        String::new()
    } else {
        text
    }
}

/// The lanes a payload names; `None` for any lane (empty, or not a list of ids).
fn lanes_of(payload: &str) -> Option<Vec<i64>> {
    if payload.is_empty() {
        return None;
    }
    payload.split(',').map(|p| p.parse().ok()).collect()
}

/// Which lanes this handle's waiters care about: those its claims could take (every filter it
/// ever claimed with, so a union), and every lane it knew of then. A handle that never claimed
/// (an app that watches events) wakes for every lane, and so does any handle for a lane it has
/// not seen yet (its next claim reads the lane and decides).
#[derive(Default)]
pub(crate) struct Interest {
    claimed: bool,
    wanted: HashSet<i64>,
    known: HashSet<i64>,
}

impl Interest {
    /// After a claim: `admitted` are the lanes its filter took, `known` every lane read so far.
    pub(crate) fn note(&mut self, admitted: &[i64], known: impl Iterator<Item = i64>) {
        self.claimed = true;
        self.wanted.extend(admitted);
        self.known.extend(known);
    }

    /// Whether a notification naming `lanes` (`None`: any) should wake this handle's waiters.
    pub(crate) fn wakes(&self, lanes: Option<&[i64]>) -> bool {
        match lanes {
            None => true,
            Some(_) if !self.claimed => true,
            Some(ls) => ls
                .iter()
                .any(|l| self.wanted.contains(l) || !self.known.contains(l)),
        }
    }
}

impl PgDriver {
    /// Tell listeners, at this transaction's commit, that a task of `lane` may have become
    /// claimable (sent by `send_in` just before the commit, one notification per transaction).
    pub(crate) fn notify_in(&self, tx: &mut Tx, lane: i64) -> Result<()> {
        tx.claimable.push(lane);
        Ok(())
    }

    /// `notify_in` for every lane of a batch, each once.
    pub(crate) fn notify_all_in(&self, tx: &mut Tx, lanes: impl IntoIterator<Item = i64>) {
        tx.claimable.extend(lanes);
        tx.claimable.sort_unstable();
        tx.claimable.dedup();
    }

    /// Send the notification of the lanes `tx` made claimable that this process did not notify
    /// within `THROTTLE`; returns them, for `sent` once the transaction has committed.
    pub(crate) fn send_in(&self, tx: &mut Tx) -> Result<Vec<i64>> {
        if tx.claimable.is_empty() {
            return Ok(Vec::new());
        }
        let due = due_lanes(&self.channel, &tx.claimable, Instant::now());
        if !due.is_empty() {
            tx.execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload(&due)])?;
        }
        Ok(due)
    }

    /// Notifications the listening thread has heard (tests).
    #[cfg(test)]
    pub(crate) fn notifications_heard(&self) -> u64 {
        match self.listening.get() {
            Some(Some(l)) => l.heard.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Start the listening thread (once per handle). False when no thread could be started.
    pub fn listen(&self, on_event: Box<dyn Fn() + Send + Sync>) -> bool {
        self.listening
            .get_or_init(|| {
                let stop = Arc::new(AtomicBool::new(false));
                let heard = Arc::new(AtomicU64::new(0));
                let mut config = self.config.clone();
                let tls = self.listen_tls.clone();
                config.application_name("prismq_queue listener");
                let listen = format!("LISTEN \"{}\"", self.channel);
                let ears = Ears {
                    stop: stop.clone(),
                    heard: heard.clone(),
                    interest: self.interest.clone(),
                    on_event,
                };
                let started = std::thread::Builder::new()
                    .name("prismq-pg-listen".into())
                    .spawn(move || run(config, tls, &listen, &ears));
                match started {
                    Ok(_) => Some(Listening { stop, heard }),
                    Err(e) => {
                        log::debug!("no PostgreSQL listener ({e}); waiting workers poll instead");
                        None
                    }
                }
            })
            .is_some()
    }
}

/// What the listening thread shares with its handle.
struct Ears {
    stop: Arc<AtomicBool>,
    heard: Arc<AtomicU64>,
    interest: Arc<Mutex<Interest>>,
    on_event: Box<dyn Fn() + Send + Sync>,
}

impl Ears {
    /// Whether `n` matters to this handle's waiters.
    fn matters(&self, n: &postgres::Notification) -> bool {
        self.heard.fetch_add(1, Ordering::Relaxed);
        let lanes = lanes_of(n.payload());
        self.interest.lock().wakes(lanes.as_deref())
    }
}

/// The listening thread: connect, LISTEN, pass each burst of notifications on as one event
/// when one of them names a lane this handle claims from; on any failure start over after a
/// growing pause.
fn run(config: Config, tls: Tls, listen: &str, ears: &Ears) {
    let (stop, on_event) = (&*ears.stop, &ears.on_event);
    let mut backoff = Duration::from_millis(50);
    while !stop.load(Ordering::Relaxed) {
        let mut client = match config.connect(tls.clone()) {
            Ok(c) => c,
            Err(e) => {
                log::debug!("PostgreSQL listener cannot connect ({e}); trying again");
                pause(stop, backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if client.batch_execute(listen).is_err() {
            pause(stop, backoff);
            continue;
        }
        backoff = Duration::from_millis(50);
        // Commits made while no connection listened were not heard: let waiters look. Commits
        // a sender throttled because of a notification sent before that are announced by
        // nothing: waiters look again once two windows have passed (see `THROTTLE`).
        on_event();
        let mut again = Some(Instant::now() + 2 * THROTTLE);
        while !stop.load(Ordering::Relaxed) {
            let wait = again.map_or(LOOK, |t| t.saturating_duration_since(Instant::now()));
            let got = client.notifications().timeout_iter(wait.min(LOOK)).next();
            if again.is_some_and(|t| Instant::now() >= t) {
                again = None;
                on_event();
            }
            match got {
                Ok(Some(first)) => {
                    // The burst already here is one event, if any of it matters.
                    let mut wake = ears.matters(&first);
                    let mut rest = client.notifications();
                    while let Ok(Some(n)) = rest.iter().next() {
                        wake |= ears.matters(&n);
                    }
                    if wake {
                        on_event();
                    }
                }
                Ok(None) if !client.is_closed() => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Sleep `d`, or less when the handle is gone meanwhile.
fn pause(stop: &AtomicBool, d: Duration) {
    let until = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
        std::thread::sleep(LOOK.min(until - std::time::Instant::now()));
    }
}
