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
        let thread = std::thread::Builder::new()
            .name("prismq-checkpointer".into())
            .spawn(move || run(conn, wal, s))
            .map_err(|e| {
                crate::error::Error::Database(format!("cannot start the checkpointer thread: {e}"))
            })?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }
}

fn run(conn: Connection, wal: PathBuf, shared: Arc<Shared>) {
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
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
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
