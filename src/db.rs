//! Connections, pragmas and the transaction helpers that keep "database is locked" away from users.
//!
//! Every write runs in `BEGIN IMMEDIATE`: the write lock is taken up front, so two processes can
//! never both read and then both try to upgrade (the case SQLite's busy handler cannot resolve).
//! While the lock is held elsewhere a short-sleeping busy handler waits; if a whole transaction
//! still reports busy it is retried from the start until `busy_timeout` has passed.

use crate::error::{Error, Result};
use crate::schema;
use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Process-wide lock-contention counters, reported by `metrics()`.
pub static BUSY_RETRIES: AtomicU64 = AtomicU64::new(0);
pub static BUSY_WAIT_US: AtomicU64 = AtomicU64::new(0);

/// Sleep a little, a little longer each time, while another connection holds the lock. Short
/// first sleeps matter: the typical write transaction here lasts tens of microseconds.
fn busy_handler(count: i32) -> bool {
    // After about 0.1 s hand control back to the transaction-level retry loop, which is the one
    // that knows `busy_timeout`: waiting longer here would overrun a short timeout (and keep a
    // checkpoint waiting for readers while it holds the write lock).
    if count > 80 {
        return false;
    }
    let base_us: u64 = match count {
        0..=9 => 20 << (count / 2),
        10..=29 => 500,
        _ => 2000,
    };
    let us = base_us / 2 + rand::random_range(0..=base_us);
    BUSY_RETRIES.fetch_add(1, Ordering::Relaxed);
    BUSY_WAIT_US.fetch_add(us, Ordering::Relaxed);
    std::thread::sleep(Duration::from_micros(us));
    true
}

pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

/// `sqlite3_file_control` on `conn`'s main database: true when SQLite answered `SQLITE_OK`.
///
/// # Safety
/// `arg` must be what SQLite documents for `op` (an out-pointer of the type it writes).
pub(crate) unsafe fn file_control<T>(conn: &Connection, op: std::ffi::c_int, arg: &mut T) -> bool {
    // SAFETY: a valid open connection; `arg` as the caller promised.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            op,
            (arg as *mut T).cast(),
        )
    };
    rc == rusqlite::ffi::SQLITE_OK
}

/// SQLite's data version of `conn`'s main database (`SQLITE_FCNTL_DATA_VERSION`). It changes
/// with every commit to the file: this connection's own when it commits, any other connection's
/// (of this process or another) when this one next begins a transaction. So inside a write
/// transaction it is equal to the value read right after this connection's previous commit
/// exactly when nothing else was committed in between. `None` if SQLite refuses the call.
pub fn data_version(conn: &Connection) -> Option<u32> {
    let mut v: std::ffi::c_uint = 0;
    // SAFETY: this opcode writes an unsigned int.
    unsafe { file_control(conn, rusqlite::ffi::SQLITE_FCNTL_DATA_VERSION, &mut v) }.then_some(v)
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub busy_timeout: Duration,
    /// "normal" (the default, durable at checkpoints, never corrupt) or "full" (fsync every commit).
    pub synchronous: String,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            busy_timeout: Duration::from_secs(60),
            synchronous: "normal".into(),
        }
    }
}

/// A write transaction on the writer connection: `BEGIN IMMEDIATE` on creation, `COMMIT` by
/// `commit`, `ROLLBACK` when dropped with the transaction still open (the connection is not in
/// autocommit mode: `commit` was not called or failed). It derefs to the connection. Unlike
/// rusqlite's `Transaction`, which runs BEGIN through `execute_batch` and so parses it on every
/// transaction (2-3% of a one-at-a-time enqueue), all three statements come from the cache.
pub struct WriteTx<'c> {
    conn: &'c Connection,
}

impl<'c> WriteTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<WriteTx<'c>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTx { conn })
    }

    fn commit(self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            let rolled_back = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut s| s.execute([]));
            if rolled_back.is_err() {
                // Last resort, as rusqlite's own Transaction does on drop.
                let _ = self.conn.execute_batch("ROLLBACK");
            }
        }
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

pub struct Db {
    writer: Mutex<Connection>,
    /// Connections for reads, so `get`/`list`/`stats` never wait behind this process's writes,
    /// nor behind each other: a web app's threads read in parallel (WAL readers don't block).
    /// `None` for `:memory:`, where a second connection would see another database.
    readers: Option<ReaderPool>,
    /// The connection whose `PRAGMA data_version` tells of other connections' commits. It must be
    /// one connection for the life of the handle (the value is per connection), so it is not
    /// taken from the pool. `None` for `:memory:`.
    watch: Option<Mutex<Connection>>,
    busy_timeout: Duration,
    pub path: String,
    /// Signalled after every commit of this process (see `notify`).
    pub notifier: crate::notify::Notifier,
    /// Dropped (and joined) before the connections: declared last.
    _checkpointer: Option<crate::maintenance::checkpointer::Checkpointer>,
}

fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(Error::invalid(
            "path must not be empty: give a file name such as 'prismq_queue.db'",
        ));
    }
    if path == ":memory:" {
        return Ok(());
    }
    let p = Path::new(path);
    if p.is_dir() {
        return Err(Error::invalid(format!(
            "path {path:?} is a directory: give a file path inside it, such as {:?}",
            p.join("prismq_queue.db")
        )));
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    if !parent.exists() {
        return Err(Error::invalid(format!(
            "cannot create the database {path:?}: directory {parent:?} does not exist; create it first or choose another path"
        )));
    }
    if !parent.is_dir() {
        return Err(Error::invalid(format!(
            "cannot create the database {path:?}: {parent:?} is a file, not a directory"
        )));
    }
    Ok(())
}

fn open_one(path: &str) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let vfs = crate::vfs::name().map_err(Error::Database)?;
    let mut conn = Connection::open_with_flags_and_vfs(path, flags, vfs).map_err(|e| {
        Error::Database(format!(
            "cannot open the database {path:?}: {e} (check that the location is writable by this user)"
        ))
    })?;
    conn.busy_handler(Some(busy_handler))?;
    conn.set_prepared_statement_cache_capacity(128);
    // Query planner stability guarantee: without it SQLite (3.54, STAT4) marks `LIMIT ?` and,
    // after ANALYZE, any range/equality parameter as plan-sensitive, and then re-prepares the
    // cached claim statement on every bind: a full parse and plan per claim. Our hot
    // statements pin their plans with INDEXED BY, so binding can never improve them.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

/// The bundled SQLite's version and the options it was compiled with (`PRAGMA
/// compile_options`, without the `SQLITE_` prefix), for bug reports and for checking that the
/// build options in `.cargo/config.toml` reached the build.
pub fn sqlite_build() -> Result<(String, Vec<String>)> {
    let conn = Connection::open_in_memory()?;
    let mut stmt = conn.prepare("PRAGMA compile_options")?;
    let options = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rusqlite::version().to_string(), options))
}

/// The page size of a newly created database file (see `configure`).
pub const NEW_FILE_PAGE_SIZE: i64 = 2048;

fn configure(conn: &Connection, opts: &DbOptions, path: &str, cache_kib: u32) -> Result<()> {
    let sync = match opts.synchronous.to_ascii_lowercase().as_str() {
        "normal" => "NORMAL",
        "full" => "FULL",
        "off" => "OFF",
        other => {
            return Err(Error::invalid(format!(
                "synchronous must be 'normal', 'full' or 'off', not {other:?}"
            )))
        }
    };
    // Only a file that is still empty takes this (SQLite ignores it afterwards; a file made with
    // another page size keeps it). Why 2 KiB and not SQLite's 4 KiB: a queue's writes are small
    // and scattered (a claim touches the row and one entry in each of four indexes), and WAL
    // appends every touched page whole, so a claim + complete cycle wrote ~8 pages of 4 KiB for
    // a few hundred bytes of change. Measured alternately by benches/bench_page_size.py
    // (medians of three rounds, one machine): against 4 KiB, 2 KiB gives +17% enqueue and +12%
    // claim+complete per call, batched claims and the worker's throughput the same or better;
    // 1 KiB gains more per call (+23%) but costs the worker 8% (deeper trees, more pages).
    conn.execute_batch(&format!("PRAGMA page_size = {NEW_FILE_PAGE_SIZE}"))
        .map_err(|e| describe_open_error(e, path))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| describe_open_error(e, path))?;
    if path != ":memory:" && !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Database(format!(
            "could not switch {path:?} to WAL mode (SQLite reports journal_mode={mode}); \
             WAL needs a local file system that supports shared memory"
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{cache_kib};
         PRAGMA wal_autocheckpoint = 50000;"
    ))?;
    Ok(())
}

/// Page cache, in KiB, of every connection but the pooled readers: SQLite's default 2 MB, on
/// purpose, because a bigger cache makes commits slower. When a B-tree rebalance reorders its new
/// pages, SQLite renumbers them through the locking page's number (1 GiB / page size + 1) as a
/// temporary key; that marks the cache as holding a page past the end of the file, so the next
/// commit's truncation walks every cached page (pcache1TruncateUnsafe, SQLite 3.54). A queue's
/// indexes lose entries at one end and gain them at the other, so that is a few percent of
/// commits, and the walk grows with the cache: 11-16% of the CPU of one-at-a-time enqueues with
/// 16 MB. Measured alternately by bench_core (medians of three rounds), 2 MB against 16 MB:
/// claim+complete 0.72 vs 0.59 of raw sqlite3; claim p99 at 100,000 queued 0.37 / 0.46 / 0.39 /
/// 0.71 ms vs 0.96 / 0.46 / 0.93 / 1.13 ms (fifo / lifo / priority / weighted). The hot pages of
/// a queue (both ends of the claim indexes, the table's tail) fit in 2 MB.
const CACHE_KIB: u32 = 2000;
/// Page cache of the pooled read connections, in KiB. Only a commit pays for a big cache, and
/// these never commit a write; they serve stats counts and listings over the whole table.
const READ_CACHE_KIB: u32 = 16000;

/// A connection opened and configured, with a page cache of `cache_kib`.
fn open_configured(path: &str, opts: &DbOptions, cache_kib: u32) -> Result<Connection> {
    let c = open_one(path)?;
    configure(&c, opts, path, cache_kib)?;
    Ok(c)
}

fn describe_open_error(e: rusqlite::Error, path: &str) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Error::Database(format!(
            "{path:?} is not a SQLite database (or it is encrypted or damaged): point the queue at a new path \
             or at a prismq_queue database file"
        )),
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => {
            Error::Database(format!(
                "cannot write the database {path:?}: {e}; check that this user may write the file and its directory"
            ))
        }
        _ => Error::from(e),
    }
}

impl Db {
    pub fn open(path: &str, opts: &DbOptions) -> Result<Db> {
        check_path(path)?;
        let deadline = Instant::now() + opts.busy_timeout;
        // Opening a new file from many processes at once: the switch to WAL and the migration
        // both need the write lock, so they go through the same retry-until-deadline loop.
        let mut writer = retry_busy(deadline, || open_configured(path, opts, CACHE_KIB))?;
        retry_busy(deadline, || schema::migrate(&mut writer))?;
        let in_memory = path == ":memory:" || path.starts_with("file::memory:");
        let (readers, watch) = if in_memory {
            (None, None)
        } else {
            let first = retry_busy(deadline, || open_configured(path, opts, READ_CACHE_KIB))?;
            let pool = ReaderPool::new(first, path.to_string(), opts.clone());
            // The watch connection only reads `PRAGMA data_version`: the small cache will do.
            let watch = retry_busy(deadline, || open_configured(path, opts, CACHE_KIB))?;
            (Some(pool), Some(Mutex::new(watch)))
        };
        let checkpointer = if !in_memory {
            let c = retry_busy(deadline, || open_configured(path, opts, CACHE_KIB))?;
            Some(crate::maintenance::checkpointer::Checkpointer::start(
                c, path,
            )?)
        } else {
            None
        };
        Ok(Db {
            writer: Mutex::new(writer),
            readers,
            watch,
            busy_timeout: opts.busy_timeout,
            path: path.to_string(),
            notifier: Default::default(),
            _checkpointer: checkpointer,
        })
    }

    /// Run `f` in an IMMEDIATE transaction and commit it, retrying the whole transaction while
    /// the database stays busy. `f` may run more than once, so it must only touch `tx`.
    pub fn write<T>(&self, f: impl FnMut(&WriteTx) -> Result<T>) -> Result<T> {
        self.write_then(f, |_| {})
    }

    /// `write`, then `after_commit` on the writer connection once the commit succeeded, before
    /// any other thread of this process can write: what it reads of the connection (its
    /// `data_version`) is the state this transaction left.
    pub fn write_then<T>(
        &self,
        mut f: impl FnMut(&WriteTx) -> Result<T>,
        after_commit: impl FnOnce(&Connection),
    ) -> Result<T> {
        let conn = self.writer.lock();
        let deadline = Instant::now() + self.busy_timeout;
        let out = retry_busy(deadline, || {
            let tx = WriteTx::begin(&conn)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })?;
        after_commit(&conn);
        drop(conn);
        self.notifier.notify();
        Ok(out)
    }

    /// `PRAGMA data_version` of the read connection: it changes whenever another connection
    /// (this process's writer included) has committed since the last call.
    pub fn data_version(&self) -> Result<i64> {
        let q = |c: &Connection| -> Result<i64> {
            Ok(c.prepare_cached("PRAGMA data_version")?
                .query_row([], |r| r.get(0))?)
        };
        match &self.watch {
            Some(w) => q(&w.lock()),
            None => self.read(q),
        }
    }

    /// Run `f` on the read connection (a consistent snapshot for the duration of `f` when it
    /// opens a transaction; single statements are consistent on their own).
    pub fn read<T>(&self, mut f: impl FnMut(&Connection) -> Result<T>) -> Result<T> {
        let deadline = Instant::now() + self.busy_timeout;
        match &self.readers {
            Some(pool) => {
                let conn = pool.take()?;
                let out = retry_busy(deadline, || f(conn.get()));
                drop(conn);
                out
            }
            None => {
                let conn = self.writer.lock();
                retry_busy(deadline, || f(&conn))
            }
        }
    }

    /// Run `f` on the writer connection outside any transaction (VACUUM, checkpoints, backups).
    pub fn with_writer<T>(&self, mut f: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock();
        let deadline = Instant::now() + self.busy_timeout;
        retry_busy(deadline, || f(&mut conn))
    }
}

fn retry_busy<T>(deadline: Instant, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut sleep_us = 100u64;
    loop {
        match f() {
            Err(Error::Busy(msg)) => {
                if Instant::now() >= deadline {
                    return Err(Error::Database(format!(
                        "the database stayed locked by another process for longer than busy_timeout ({msg}); \
                         look for a process holding a long write transaction, or raise busy_timeout"
                    )));
                }
                BUSY_RETRIES.fetch_add(1, Ordering::Relaxed);
                BUSY_WAIT_US.fetch_add(sleep_us, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(sleep_us));
                sleep_us = (sleep_us * 2).min(20_000);
            }
            other => return other,
        }
    }
}

/// Most read connections one handle opens: enough for a web app's read threads to run side by
/// side; more would only compete for the same cores and hold more page cache.
const MAX_READERS: usize = 4;

/// Read connections, opened on demand up to `MAX_READERS`; a reader waits only when all of them
/// are busy. One connection is opened up front, so a bad path fails at `open`, not at a read.
struct ReaderPool {
    idle: Mutex<PoolState>,
    returned: Condvar,
    path: String,
    opts: DbOptions,
}

struct PoolState {
    idle: Vec<Connection>,
    opened: usize,
}

/// A connection taken from the pool; it goes back when dropped.
struct PooledReader<'a> {
    pool: &'a ReaderPool,
    conn: Option<Connection>,
}

impl PooledReader<'_> {
    fn get(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a pooled reader holds its connection until dropped")
    }
}

impl Drop for PooledReader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.idle.lock().idle.push(c);
            self.pool.returned.notify_one();
        }
    }
}

impl ReaderPool {
    fn new(first: Connection, path: String, opts: DbOptions) -> ReaderPool {
        ReaderPool {
            idle: Mutex::new(PoolState {
                idle: vec![first],
                opened: 1,
            }),
            returned: Condvar::new(),
            path,
            opts,
        }
    }

    fn take(&self) -> Result<PooledReader<'_>> {
        let mut st = self.idle.lock();
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(PooledReader {
                    pool: self,
                    conn: Some(c),
                });
            }
            if st.opened < MAX_READERS {
                // Open outside the lock: it touches the file and may wait for a busy database.
                st.opened += 1;
                drop(st);
                let opened = open_configured(&self.path, &self.opts, READ_CACHE_KIB);
                return match opened {
                    Ok(c) => Ok(PooledReader {
                        pool: self,
                        conn: Some(c),
                    }),
                    Err(e) => {
                        self.idle.lock().opened -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            self.returned.wait(&mut st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_size(c: &Connection) -> i64 {
        c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn bundled_sqlite_has_the_build_options() {
        let (version, options) = sqlite_build().unwrap();
        assert!(version.starts_with("3."), "{version}");
        for want in [
            "DEFAULT_MEMSTATUS=0",
            "OMIT_SHARED_CACHE",
            "OMIT_DEPRECATED",
            "USE_ALLOCA",
        ] {
            assert!(
                options.iter().any(|o| o == want),
                "SQLite was built without {want} (is LIBSQLITE3_FLAGS from .cargo/config.toml \
                 set?); it has {options:?}"
            );
        }
    }

    #[test]
    fn only_the_read_pool_gets_the_big_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let db = Db::open(path.to_str().unwrap(), &DbOptions::default()).unwrap();
        // Commits get slower with the cache (see `CACHE_KIB`): the writer keeps the small one.
        assert_eq!(cache_size(&db.writer.lock()), -(CACHE_KIB as i64));
        assert_eq!(
            cache_size(&db.watch.as_ref().unwrap().lock()),
            -(CACHE_KIB as i64)
        );
        let read = db.read(|c| Ok(cache_size(c))).unwrap();
        assert_eq!(read, -(READ_CACHE_KIB as i64));
    }

    #[test]
    fn write_transactions_go_through_the_wal_batching_vfs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let db = Db::open(path.to_str().unwrap(), &DbOptions::default()).unwrap();
        let insert = |db: &Db, n: i64| {
            db.write(|tx| {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, randomblob(1500))",
                    [format!("k{n}")],
                )?;
                Ok(())
            })
            .unwrap()
        };
        insert(&db, 0); // the first commit also writes the WAL header
        for n in 1..10 {
            let before = crate::vfs::wal_write_calls();
            insert(&db, n);
            // A row of 1.5 KB on 2 KiB pages: several pages per commit, one write call.
            assert_eq!(crate::vfs::wal_write_calls() - before, 1);
        }
        // And a failed transaction leaves nothing behind (rolled back from the cached ROLLBACK).
        let e = db.write(|tx| {
            tx.execute("INSERT INTO meta (key, value) VALUES ('k1', 0)", [])?;
            Ok(())
        });
        assert!(e.is_err());
        let n: i64 = db
            .read(|c| {
                Ok(
                    c.query_row("SELECT count(*) FROM meta WHERE key LIKE 'k%'", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .unwrap();
        assert_eq!(n, 10);
        assert!(db.writer.lock().is_autocommit());
    }
}
