//! The SQLite backend: connections, the WAL-batching VFS, the schema, the checkpointer, the lease
//! clock's boots, the claim path and the SQL of every operation.

pub mod ack;
pub mod admin;
pub mod attempts;
pub mod changes;
pub mod checkpointer;
pub mod claim;
pub mod clock;
pub mod copy;
mod copy_batch;
mod copy_settings;
mod copy_waits;
pub mod db;
pub mod dependencies;
pub mod driver;
pub mod enqueue;
pub mod errors;
pub mod limits;
pub mod listener;
pub mod logs;
pub mod maintenance;
pub mod metrics;
pub mod position;
pub mod readers;
pub mod rescuer;
pub mod rows;
pub mod run_tasks;
pub mod runs;
pub mod schedules;
pub mod schema;
pub mod timeouts;
pub mod vfs;
pub mod workers;

use crate::model::error::{DbErrorKind, Result};
use crate::model::options::QueueOptions;
use checkpointer::Checkpointer;
use claim::heads::Heads;
use claim::indexes;
use claim::lanes::LaneCache;
use clock::{LeaseClock, Now};
use db::{CommitHook, Db};
use parking_lot::Mutex;
use std::sync::OnceLock;

/// The SQLite backend of one queue handle: its connections and what its claims remember.
pub struct SqliteDriver {
    pub(crate) db: Db,
    pub(crate) opts: QueueOptions,
    pub(crate) lanes: Mutex<LaneCache>,
    /// The lazy claim indexes this handle has found on the file (see `claim::indexes`).
    pub(crate) claim_indexes: indexes::Seen,
    /// Lane heads known from this handle's previous claim (see `claim::heads`).
    pub(crate) heads: Heads,
    /// When leases end (see `clock`).
    pub(crate) lease_clock: LeaseClock,
    /// The file watch that wakes idle waiters on other processes' commits (see `listener`), set
    /// up at the first wait: `None` inside when the platform refused one.
    pub(crate) watch: OnceLock<Option<listener::FileWatch>>,
    /// The engine's rules for failed attempts and expired leases: this driver applies them.
    pub(crate) rules: &'static dyn crate::storage::Rules,
    /// Dropped (and joined) after the connections: declared after `db`.
    _checkpointer: Option<Checkpointer>,
}

impl SqliteDriver {
    /// Open (creating or migrating) the queue database at `path`; `on_commit` runs after every
    /// commit of this handle, `rules` decide what becomes of failed and expired attempts.
    /// `":memory:"` gives a private in-memory queue.
    pub fn open(
        path: &str,
        opts: QueueOptions,
        on_commit: CommitHook,
        rules: &'static dyn crate::storage::Rules,
    ) -> Result<SqliteDriver> {
        opts.validate()?;
        let db = Db::open(path, &opts.db, on_commit)?;
        let lease_clock = open_lease_clock(&db)?;
        let checkpointer = match db.open_side_connection()? {
            Some(conn) => Some(Checkpointer::start(conn, path)?),
            None => None,
        };
        Ok(SqliteDriver {
            db,
            opts,
            lanes: Mutex::new(LaneCache::default()),
            claim_indexes: indexes::Seen::default(),
            heads: Heads::default(),
            lease_clock,
            watch: OnceLock::new(),
            rules,
            _checkpointer: checkpointer,
        })
    }

    /// Now, on the wall clock and as a lease key (see `clock`), inside the write transaction `tx`.
    pub(crate) fn now(&self, tx: &rusqlite::Connection) -> Result<Now> {
        self.lease_clock.now(tx)
    }

    /// Which clock this handle's leases end on: ("monotonic" or "wall", the boot id, the boot's
    /// sequence number in this file, None until a handle opened read-only first writes).
    pub fn lease_clock(&self) -> (&'static str, String, Option<i64>) {
        self.lease_clock.describe()
    }

    pub fn path(&self) -> &str {
        &self.db.path
    }
}

/// Find this boot in the file's `boots` table, registering it (the next sequence number) when
/// the file has not seen it yet. A file opened read-only (by a reader that may not write)
/// cannot register: the handle's first write does, once the file is writable.
fn open_lease_clock(db: &Db) -> Result<LeaseClock> {
    let id = clock::boot_id();
    let seq = match db.read(|c| clock::seq_of(c, &id))? {
        Some(seq) => Some(seq),
        None => match db.write(|tx| clock::register(tx, &id)) {
            Ok(seq) => Some(seq),
            Err(e) if e.db_kind() == Some(DbErrorKind::ReadOnly) => None,
            Err(e) => return Err(e),
        },
    };
    Ok(LeaseClock::for_boot(seq))
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A driver on a fresh file in a temporary directory (kept alive by the returned guard).
    pub fn file_driver() -> (tempfile::TempDir, SqliteDriver) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let d = open(path.to_str().unwrap());
        (dir, d)
    }

    /// A driver on `path` with the default options and no commit hook.
    pub fn open(path: &str) -> SqliteDriver {
        SqliteDriver::open(
            path,
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .unwrap()
    }
}
