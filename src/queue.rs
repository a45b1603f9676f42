//! `Queue`: one handle on a queue database file. Thread-safe; open one per process (or more).
//! The operations live in modules named for what they do (`enqueue`, `claim`, `ack`, `admin`,
//! `workers`, `logs`, `maintenance`, `metrics`), each an `impl Queue` block.

use crate::claim::heads::Heads;
use crate::claim::indexes;
use crate::claim::lanes::LaneCache;
use crate::db::{Db, DbOptions};
use crate::error::Result;
use parking_lot::Mutex;

/// Largest payload accepted by default, as serialised JSON: 1 MiB. Bigger blobs belong in a file
/// or object store, with their path in the payload.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub db: DbOptions,
    pub max_payload_bytes: usize,
    /// A worker whose last heartbeat is older than this is reported stale.
    pub stale_worker_after_ms: i64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            db: DbOptions::default(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            stale_worker_after_ms: 30_000,
        }
    }
}

pub struct Queue {
    pub(crate) db: Db,
    pub(crate) opts: QueueOptions,
    pub(crate) lanes: Mutex<LaneCache>,
    /// The lazy claim indexes this handle has found on the file (see `claim::indexes`).
    pub(crate) claim_indexes: indexes::Seen,
    /// Lane heads known from this handle's previous claim (see `claim::heads`).
    pub(crate) heads: Heads,
}

impl Queue {
    /// Open (creating or migrating) the queue database at `path`. `":memory:"` gives a private
    /// in-memory queue, useful in tests.
    pub fn open(path: &str, opts: QueueOptions) -> Result<Queue> {
        let db = Db::open(path, &opts.db)?;
        Ok(Queue {
            db,
            opts,
            lanes: Mutex::new(LaneCache::default()),
            claim_indexes: indexes::Seen::default(),
            heads: Heads::default(),
        })
    }

    pub fn path(&self) -> &str {
        &self.db.path
    }

    pub fn options(&self) -> &QueueOptions {
        &self.opts
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A queue on a fresh file in a temporary directory (kept alive by the returned guard).
    pub fn file_queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let q = Queue::open(path.to_str().unwrap(), QueueOptions::default()).unwrap();
        (dir, q)
    }
}
