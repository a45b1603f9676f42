//! The background checkpointer: moves WAL pages back into the database file off the hot path.
//!
//! With `synchronous=NORMAL` a commit never waits for the disk, but a checkpoint fsyncs the WAL
//! and the database; on the machines we measured an fsync takes milliseconds, so SQLite's
//! automatic checkpoint (run by whichever commit crosses the threshold) stalled that commit and
//! halved enqueue throughput. Each queue handle runs this thread on its own connection instead:
//! PASSIVE checkpoints never block writers, and when several processes try at once the others
//! simply skip. `wal_autocheckpoint` stays on at a high threshold as a safety net.

use crate::error::Result;
use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Checkpoint when the WAL file is larger than this...
const WAL_BYTES_TRIGGER: u64 = 4 << 20;
/// ...or when it has been this long since the last checkpoint and the WAL is not empty.
const MAX_INTERVAL: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(100);

/// What a background checkpointer of this process last did on a database file, as
/// `PRAGMA wal_checkpoint(PASSIVE)` returned it; read by `metrics()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastCheckpoint {
    /// When it ran, ms since the epoch (UTC).
    pub at_ms: i64,
    /// True when it could not run (another connection was checkpointing).
    pub busy: bool,
    /// Frames in the WAL at that moment, and how many of them were in the database afterwards.
    pub wal_frames: i64,
    pub checkpointed_frames: i64,
}

/// Per database path; a handful of entries at most (one per file this process opened).
static LAST: Mutex<Vec<(String, LastCheckpoint)>> = Mutex::new(Vec::new());

/// The last checkpoint a checkpointer of this process ran on `db_path`, if any.
pub fn last_checkpoint(db_path: &str) -> Option<LastCheckpoint> {
    LAST.lock()
        .iter()
        .find(|(p, _)| p == db_path)
        .map(|(_, c)| *c)
}

fn record(db_path: &str, c: LastCheckpoint) {
    let mut last = LAST.lock();
    match last.iter_mut().find(|(p, _)| p == db_path) {
        Some(entry) => entry.1 = c,
        None => last.push((db_path.to_string(), c)),
    }
}

#[derive(Default)]
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
}

pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(conn: Connection, db_path: &str) -> Result<Checkpointer> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let wal = PathBuf::from(format!("{db_path}-wal"));
        let path = db_path.to_string();
        let thread = std::thread::Builder::new()
            .name("prismq-checkpointer".into())
            .spawn(move || run(conn, wal, &path, s))
            .map_err(|e| {
                crate::error::Error::Database(format!("cannot start the checkpointer thread: {e}"))
            })?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }
}

fn run(conn: Connection, wal: PathBuf, db_path: &str, shared: Arc<Shared>) {
    let mut last = Instant::now();
    loop {
        {
            let mut stop = shared.stop.lock();
            if !*stop {
                shared.wake.wait_for(&mut stop, TICK);
            }
            if *stop {
                return;
            }
        }
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size > WAL_BYTES_TRIGGER || (size > 0 && last.elapsed() >= MAX_INTERVAL) {
            // Busy (another process is checkpointing) or any error: try again next tick.
            // (Nothing here logs: this thread is joined when a queue is dropped, possibly by a
            // thread holding the GIL, so it must never wait for the GIL itself.)
            let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
            if let Ok((busy, wal_frames, checkpointed_frames)) = r {
                record(
                    db_path,
                    LastCheckpoint {
                        at_ms: crate::time::now_ms(),
                        busy: busy != 0,
                        wal_frames,
                        checkpointed_frames,
                    },
                );
            }
            last = Instant::now();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
