//! Prompt wake-up without busy polling. An idle worker waits here until the database changes.
//!
//! Three sources, cheapest first:
//! - commits by this process signal a condition variable at once;
//! - commits by other processes write the WAL file, and the operating system reports that write
//!   (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows, through the `notify`
//!   crate): a waiter wakes and checks `PRAGMA data_version`, which moves once the commit is
//!   visible. The write lands a few microseconds before the commit is published in the
//!   shared-memory WAL index, so after an event the waiter polls every millisecond for a short
//!   while ("hot") instead of trusting a single look;
//! - a slow poll of `data_version` as the fallback, for file systems or platforms where events
//!   are late or missing; without a file watch (it could not be set up) the poll is fast.
//!
//! An idle waiter thus sleeps in the kernel instead of waking every few milliseconds: timed
//! wake-ups cost CPU on small VMs, a visible share of a core per idle worker (figures:
//! benches/README.md, "Figures behind the code's comments").

use parking_lot::{Condvar, Mutex};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Poll interval when no file watch could be set up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(3);
/// Poll interval with a file watch: only a safety net for a missed event.
const WATCHED_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After a file event, poll this often for `HOT_WINDOW`, until the commit becomes visible.
const HOT_POLL_INTERVAL: Duration = Duration::from_millis(1);
const HOT_WINDOW: Duration = Duration::from_millis(25);

#[derive(Default)]
struct Counters {
    /// Commits of this process.
    generation: u64,
    /// File events on the database or its WAL (any process).
    hints: u64,
}

#[derive(Default)]
struct Shared {
    counters: Mutex<Counters>,
    changed: Condvar,
}

/// Wakes this handle's waiters: after each of its commits (the driver's commit hook) and on
/// each event of the driver's listener (another process's commit).
#[derive(Default, Clone)]
pub struct Wakeup {
    shared: Arc<Shared>,
    /// Whether the driver's listener runs: asked at the first wait, so handles that never wait
    /// (an app that only enqueues) don't pay for one; without it waits poll fast.
    listening: Arc<OnceLock<bool>>,
}

impl Wakeup {
    /// Called after every commit of this process.
    pub fn notify(&self) {
        self.shared.counters.lock().generation += 1;
        self.shared.changed.notify_all();
    }

    pub fn generation(&self) -> u64 {
        self.shared.counters.lock().generation
    }

    /// The callback a driver's listener calls on each event.
    pub fn hint_hook(&self) -> Box<dyn Fn() + Send + Sync> {
        let shared = self.shared.clone();
        Box::new(move || {
            shared.counters.lock().hints += 1;
            shared.changed.notify_all();
        })
    }

    /// A waiter for one wait: remembers what it has seen and whether it is "hot". `listen`
    /// starts the driver's listener (once per handle) and says whether it runs.
    pub(crate) fn waiter(
        &self,
        listen: impl FnOnce(Box<dyn Fn() + Send + Sync>) -> bool,
    ) -> Waiter {
        let watching = *self.listening.get_or_init(|| listen(self.hint_hook()));
        let c = self.shared.counters.lock();
        Waiter {
            shared: self.shared.clone(),
            watching,
            seen_generation: c.generation,
            seen_hints: c.hints,
            hot_until: None,
        }
    }
}

pub(crate) struct Waiter {
    shared: Arc<Shared>,
    watching: bool,
    seen_generation: u64,
    seen_hints: u64,
    hot_until: Option<Instant>,
}

impl Waiter {
    /// Sleep until this process commits, a file event arrives, the poll interval passes or
    /// `deadline`, whichever is first. The caller then looks at what it waits for.
    pub(crate) fn nap(&mut self, deadline: Instant) {
        let now = Instant::now();
        let interval = match self.hot_until {
            Some(h) if now < h => HOT_POLL_INTERVAL,
            _ if self.watching => WATCHED_POLL_INTERVAL,
            _ => POLL_INTERVAL,
        };
        let until = (now + interval).min(deadline);
        let mut c = self.shared.counters.lock();
        while c.generation == self.seen_generation && c.hints == self.seen_hints {
            if self.shared.changed.wait_until(&mut c, until).timed_out() {
                break;
            }
        }
        if c.hints != self.seen_hints {
            self.seen_hints = c.hints;
            self.hot_until = Some(Instant::now() + HOT_WINDOW);
        }
        self.seen_generation = c.generation;
    }
}
