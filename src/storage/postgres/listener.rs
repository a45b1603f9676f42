//! Wake-ups of idle waiters by other processes' commits, through `LISTEN/NOTIFY`: transactions
//! that make a task claimable (enqueue, a retry, a hand-back, a rescue) send a notification on
//! the schema's channel at commit, and one connection per handle listens on it, in a thread of
//! its own that connects again (and listens again) after any failure. Each notification calls
//! the engine's hook, whose waiters then look at `data_version` (see `engine::wakeup`); the
//! engine's slow poll stays as the safety net for a notification lost while reconnecting.

use crate::model::error::Result;
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::tls::Tls;
use crate::storage::postgres::PgDriver;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Config;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// Stops the listening thread when dropped (with the handle).
pub(crate) struct Listening(Arc<AtomicBool>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl PgDriver {
    /// Tell listeners, at this transaction's commit, that a task may have become claimable.
    /// Notifications of one transaction on one channel are delivered once.
    pub(crate) fn notify_in(&self, tx: &mut Tx) -> Result<()> {
        tx.execute("SELECT pg_notify($1, '')", &[&self.channel])?;
        Ok(())
    }

    /// Start the listening thread (once per handle). False when no thread could be started.
    pub fn listen(&self, on_event: Box<dyn Fn() + Send + Sync>) -> bool {
        self.listening
            .get_or_init(|| {
                let stop = Arc::new(AtomicBool::new(false));
                let mut config = self.config.clone();
                let tls = self.listen_tls.clone();
                config.application_name("prismq_queue listener");
                let listen = format!("LISTEN \"{}\"", self.channel);
                let flag = stop.clone();
                let started = std::thread::Builder::new()
                    .name("prismq-pg-listen".into())
                    .spawn(move || run(config, tls, &listen, &flag, on_event));
                match started {
                    Ok(_) => Some(Listening(stop)),
                    Err(e) => {
                        log::debug!("no PostgreSQL listener ({e}); waiting workers poll instead");
                        None
                    }
                }
            })
            .is_some()
    }
}

/// The listening thread: connect, LISTEN, pass each burst of notifications on as one event;
/// on any failure start over after a growing pause.
fn run(
    config: Config,
    tls: Tls,
    listen: &str,
    stop: &AtomicBool,
    on_event: Box<dyn Fn() + Send + Sync>,
) {
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
        // Commits made while no connection listened were not heard: let waiters look.
        on_event();
        while !stop.load(Ordering::Relaxed) {
            let got = client.notifications().timeout_iter(LOOK).next();
            match got {
                Ok(Some(_)) => {
                    // The burst already here is one event.
                    let mut rest = client.notifications();
                    while let Ok(Some(_)) = rest.iter().next() {}
                    on_event();
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
