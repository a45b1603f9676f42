//! Connections, pragmas and the transaction helpers that keep "database is locked" away from users.
//!
//! Every write runs in `BEGIN IMMEDIATE`: the write lock is taken up front, so two processes can
//! never both read and then both try to upgrade (the case SQLite's busy handler cannot resolve).
//! While the lock is held elsewhere a short-sleeping busy handler waits; if a whole transaction
//! still reports busy it is retried from the start until `busy_timeout` has passed.

use crate::model::error::{DbErrorKind, Error, Result};
use crate::model::options::DbOptions;
use crate::model::paths::shown;
use crate::storage::sqlite::schema;
use parking_lot::Mutex;
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

pub use super::errors::is_busy;

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

/// A write transaction on the writer connection: `BEGIN IMMEDIATE` on creation, `COMMIT` by
/// `commit`, `ROLLBACK` when dropped with the transaction still open (the connection is not in
/// autocommit mode: `commit` was not called or failed). It derefs to the connection. Unlike
/// rusqlite's `Transaction`, which runs BEGIN through `execute_batch` and so parses it on every
/// transaction (a visible share of a one-at-a-time enqueue), all three statements come from the
/// cache.
pub struct WriteTx<'c> {
    conn: &'c Connection,
    /// Which writer connection of the handle this is (see `Writer::epoch`).
    pub epoch: u64,
}

impl<'c> WriteTx<'c> {
    fn begin(conn: &'c Connection, epoch: u64) -> rusqlite::Result<WriteTx<'c>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTx { conn, epoch })
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

/// The connection that writes, and what the write path keeps beside it.
struct Writer {
    conn: Connection,
    /// Bumped when the connection is replaced by a new one (a handle opened while the file was
    /// read-only, reopened once it is writable): a data version read on another connection
    /// means nothing on this one (`claim::heads` keeps both).
    epoch: u64,
    /// When the file was last checked for having been deleted or replaced (`check_moved`).
    moved_checked: Instant,
    /// The file was deleted or replaced under this handle: every further write is refused.
    moved: bool,
}

/// How often the write path asks whether the file was deleted or replaced under the handle
/// (`SQLITE_FCNTL_HAS_MOVED`, a `stat` of the path). Not at every transaction: a stat costs
/// about as much as a percent of a one-row transaction, and a file replaced under running
/// processes is an operator's mistake, not a race to win; at most this long of writes after the
/// replacement can still land in the unlinked file.
const MOVED_CHECK_EVERY: Duration = Duration::from_millis(10);

pub struct Db {
    writer: Mutex<Writer>,
    /// Connections for reads, so `get`/`list`/`stats` never wait behind this process's writes,
    /// nor behind each other: a web app's threads read in parallel (WAL readers don't block).
    /// `None` for `:memory:`, where a second connection would see another database.
    readers: Option<ReaderPool>,
    /// The connection whose `PRAGMA data_version` tells of other connections' commits. It must be
    /// one connection for the life of the handle (the value is per connection), so it is not
    /// taken from the pool. `None` for `:memory:`.
    watch: Option<Mutex<Connection>>,
    busy_timeout: Duration,
    /// As opened, to open the writer again (`reopen_if_read_only`).
    opts: DbOptions,
    in_memory: bool,
    pub path: String,
    /// Called after every commit through this handle (the engine wakes its local waiters).
    on_commit: CommitHook,
}

use super::readers::ReaderPool;
pub use crate::storage::CommitHook;

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
            "path {path} is a directory: give a file path inside it, such as {}",
            shown(&p.join("prismq_queue.db")),
            path = shown(path)
        )));
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    if !parent.exists() {
        return Err(Error::invalid(format!(
            "cannot create the database {path}: directory {parent} does not exist; create it first or choose another path",
            path = shown(path), parent = shown(parent)
        )));
    }
    if !parent.is_dir() {
        return Err(Error::invalid(format!(
            "cannot create the database {path}: {parent} is a file, not a directory",
            path = shown(path),
            parent = shown(parent)
        )));
    }
    Ok(())
}

fn open_one(path: &str) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let vfs = crate::storage::sqlite::vfs::name().map_err(Error::Database)?;
    let mut conn = Connection::open_with_flags_and_vfs(path, flags, vfs).map_err(|e| {
        Error::Database(format!(
            "cannot open the database {path}: {e} (check that the location is writable by this user)",
            path = shown(path)
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
    // a few hundred bytes of change. 2 KiB makes single calls faster and batches no slower; 1 KiB
    // is faster still per call but slows the worker (deeper trees, more pages). Figures:
    // benches/README.md, "Page size".
    conn.execute_batch(&format!("PRAGMA page_size = {NEW_FILE_PAGE_SIZE}"))
        .map_err(|e| describe_open_error(e, path))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| describe_open_error(e, path))?;
    if path != ":memory:" && !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Database(format!(
            "could not switch {path} to WAL mode (SQLite reports journal_mode={mode}); \
             WAL needs a local file system that supports shared memory",
            path = shown(path)
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
/// commits, and the walk grows with the cache (figures: benches/README.md, "Page cache size").
/// The hot pages of a queue (both ends of the claim indexes, the table's tail) fit in 2 MB.
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
            "{path} is not a SQLite database (or it is encrypted or damaged): point the queue at a new path \
             or at a prismq_queue database file",
            path = shown(path)
        )),
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => {
            Error::Database(format!(
                "cannot write the database {path}: {e}; check that this user may write the file and its directory",
                path = shown(path)
            ))
        }
        _ => Error::from(e),
    }
}

impl Db {
    pub fn open(path: &str, opts: &DbOptions, on_commit: CommitHook) -> Result<Db> {
        check_path(path)?;
        let deadline = Instant::now() + opts.busy_timeout;
        // Opening a new file from many processes at once: the switch to WAL and the migration
        // both need the write lock, so they go through the same retry-until-deadline loop.
        let mut writer = retry_busy(deadline, || open_configured(path, opts, CACHE_KIB))?;
        retry_busy(deadline, || schema::migrate(&mut writer))?;
        let writer = Writer {
            conn: writer,
            epoch: 0,
            moved_checked: Instant::now(),
            moved: false,
        };
        let in_memory = path == ":memory:" || path.starts_with("file::memory:");
        let (readers, watch) = if in_memory {
            (None, None)
        } else {
            let first = retry_busy(deadline, || open_configured(path, opts, READ_CACHE_KIB))?;
            let (reader_path, reader_opts) = (path.to_string(), opts.clone());
            let pool = ReaderPool::new(
                first,
                Box::new(move || open_configured(&reader_path, &reader_opts, READ_CACHE_KIB)),
            );
            // The watch connection only reads `PRAGMA data_version`: the small cache will do.
            let watch = retry_busy(deadline, || open_configured(path, opts, CACHE_KIB))?;
            (Some(pool), Some(Mutex::new(watch)))
        };
        Ok(Db {
            writer: Mutex::new(writer),
            readers,
            watch,
            busy_timeout: opts.busy_timeout,
            opts: opts.clone(),
            in_memory,
            path: path.to_string(),
            on_commit,
        })
    }

    /// One more connection configured as the writer is, for a background task of the handle
    /// (the checkpointer); `None` for `:memory:`, where it would see another database.
    pub fn open_side_connection(&self) -> Result<Option<Connection>> {
        if self.in_memory {
            return Ok(None);
        }
        let deadline = Instant::now() + self.busy_timeout;
        retry_busy(deadline, || {
            open_configured(&self.path, &self.opts, CACHE_KIB)
        })
        .map(Some)
    }

    /// Run `f` in an IMMEDIATE transaction and commit it, retrying the whole transaction while
    /// the database stays busy. `f` may run more than once, so it must only touch `tx`.
    pub fn write<T>(&self, f: impl FnMut(&WriteTx) -> Result<T>) -> Result<T> {
        self.write_then(f, |_, _| {})
    }

    /// `write`, then `after_commit` on the writer connection once the commit succeeded, before
    /// any other thread of this process can write: what it reads of the connection (its
    /// `data_version`) is the state this transaction left.
    pub fn write_then<T>(
        &self,
        mut f: impl FnMut(&WriteTx) -> Result<T>,
        after_commit: impl FnOnce(&Connection, u64),
    ) -> Result<T> {
        let mut w = self.writer.lock();
        self.check_moved(&mut w, false)?;
        let deadline = Instant::now() + self.busy_timeout;
        let mut run = |w: &Writer| {
            retry_busy(deadline, || {
                let tx = WriteTx::begin(&w.conn, w.epoch)?;
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            })
            .map_err(|e| refine(&w.conn, e))
        };
        let out = match run(&w) {
            Err(e)
                if e.db_kind() == Some(DbErrorKind::ReadOnly)
                    && self.reopen_if_read_only(&mut w) =>
            {
                run(&w)
            }
            other => other,
        }?;
        after_commit(&w.conn, w.epoch);
        drop(w);
        (self.on_commit)();
        Ok(out)
    }

    /// Refuse to write to a file that was deleted or replaced after this handle opened it:
    /// the writes would go to the unlinked file and be lost. Asked of SQLite at most every
    /// `MOVED_CHECK_EVERY` unless `always` (see there); once moved, always refused.
    fn check_moved(&self, w: &mut Writer, always: bool) -> Result<()> {
        if !w.moved && !self.in_memory && (always || w.moved_checked.elapsed() >= MOVED_CHECK_EVERY)
        {
            w.moved_checked = Instant::now();
            let mut moved: std::ffi::c_int = 0;
            // SAFETY: this opcode writes an int. Where the VFS does not implement it (Windows,
            // which does not let an open database file be deleted) the call fails: not moved.
            let answered =
                unsafe { file_control(&w.conn, rusqlite::ffi::SQLITE_FCNTL_HAS_MOVED, &mut moved) };
            w.moved = answered && moved != 0;
        }
        if w.moved {
            return Err(Error::db(
                DbErrorKind::FileMoved,
                format!(
                    "the database file {} was deleted or replaced after this process opened it: writes \
                     through this handle would be lost, so they are refused; open a new Queue (restart the \
                     process) against the file that is there now, or put the original file back",
                    shown(&self.path)
                ),
            ));
        }
        Ok(())
    }

    /// The writer connection was opened while the file (or its directory) was read-only, and
    /// SQLite then opens the file read-only for good: open it again, and keep the new
    /// connection if it can write now. True when the writer was replaced.
    fn reopen_if_read_only(&self, w: &mut Writer) -> bool {
        if self.in_memory || !w.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return false;
        }
        // SQLite gives the -wal and -shm files the database file's mode when it creates them, so
        // a handle that opened a read-only file made them read-only too: bring them up to the
        // file's mode now that it is writable (this process made them; another user's files
        // cannot be changed and are left as they are).
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if !meta.permissions().readonly() {
                for suffix in ["-wal", "-shm"] {
                    let side = format!("{}{suffix}", self.path);
                    if std::fs::metadata(&side).is_ok_and(|m| m.permissions().readonly()) {
                        let _ = std::fs::set_permissions(&side, meta.permissions());
                    }
                }
            }
        }
        match open_configured(&self.path, &self.opts, CACHE_KIB) {
            Ok(c) if !c.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) => {
                w.conn = c;
                w.epoch += 1;
                true
            }
            _ => false,
        }
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
                let w = self.writer.lock();
                retry_busy(deadline, || f(&w.conn))
            }
        }
    }

    /// Run `f` on the writer connection outside any transaction (VACUUM, checkpoints, backups).
    pub fn with_writer<T>(&self, mut f: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        let mut w = self.writer.lock();
        self.check_moved(&mut w, true)?;
        let deadline = Instant::now() + self.busy_timeout;
        let conn = &mut w.conn;
        retry_busy(deadline, || f(conn)).map_err(|e| refine(conn, e))
    }
}

fn retry_busy<T>(deadline: Instant, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut sleep_us = 100u64;
    loop {
        match f() {
            Err(Error::Busy(msg)) => {
                if Instant::now() >= deadline {
                    return Err(Error::db(
                        DbErrorKind::Busy,
                        format!(
                            "the database stayed locked by another process for longer than busy_timeout ({msg}); \
                             look for a process holding a long write transaction, or raise busy_timeout"
                        ),
                    ));
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

/// An I/O error of `conn` that was a write refused for lack of space (the unix VFS reports a
/// file size limit, EFBIG, or a quota, EDQUOT, as a plain I/O error) becomes a full disk.
fn refine(conn: &Connection, e: Error) -> Error {
    if e.db_kind() != Some(DbErrorKind::IoError) {
        return e;
    }
    // SAFETY: a valid open connection; the call only reads the error number it keeps.
    let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
    if !super::errors::is_no_space_errno(errno) {
        return e;
    }
    Error::db(
        DbErrorKind::DiskFull,
        format!(
            "the database could not be written: the disk is full or a file size limit was reached \
             (OS error {errno}); nothing of this operation was written: free space, then retry ({e})"
        ),
    )
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
    fn open_errors_show_the_path_as_written() {
        // A backslash is a separator on Windows and a plain character elsewhere: either way the
        // message must carry the path exactly as given, not with its backslashes doubled.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(r"no\such dir").join("q.db");
        let path = path.to_str().unwrap();
        let msg = match Db::open(path, &DbOptions::default(), Box::new(|| {})) {
            Err(Error::InvalidArgument(msg)) => msg,
            other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
        };
        assert!(msg.contains(&format!("database \"{path}\":")), "{msg}");
        assert!(!msg.contains(r"\\"), "{msg}");
    }

    #[test]
    fn only_the_read_pool_gets_the_big_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let db = Db::open(
            path.to_str().unwrap(),
            &DbOptions::default(),
            Box::new(|| {}),
        )
        .unwrap();
        // Commits get slower with the cache (see `CACHE_KIB`): the writer keeps the small one.
        assert_eq!(cache_size(&db.writer.lock().conn), -(CACHE_KIB as i64));
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
        let db = Db::open(
            path.to_str().unwrap(),
            &DbOptions::default(),
            Box::new(|| {}),
        )
        .unwrap();
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
            let before = crate::storage::sqlite::vfs::wal_write_calls();
            insert(&db, n);
            // A row of 1.5 KB on 2 KiB pages: several pages per commit, one write call.
            assert_eq!(crate::storage::sqlite::vfs::wal_write_calls() - before, 1);
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
        assert!(db.writer.lock().conn.is_autocommit());
    }
}
