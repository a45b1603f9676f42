//! The background checkpointer: moves WAL pages back into the database file, and starts the WAL
//! over, off the hot path.
//!
//! With `synchronous=NORMAL` a commit never waits for the disk, but a checkpoint fsyncs the WAL
//! and the database; on the machines we measured an fsync takes milliseconds, so SQLite's
//! automatic checkpoint (run by whichever commit crosses the threshold) stalled that commit and
//! halved enqueue throughput. Each queue handle runs this thread on its own connection instead:
//! PASSIVE checkpoints never block writers, and when several processes try at once the others
//! simply skip. `wal_autocheckpoint` stays on at a high threshold as a safety net.
//!
//! Why it also restarts the WAL: SQLite starts writing the WAL from its beginning again only when
//! every frame in it has been copied back. A PASSIVE pass copies the frames that were there when
//! it began, and a busy writer appends more while the pass fsyncs, so under steady writes the
//! passes never catch up: the WAL grew to the safety net (about 100 MB), and the commit that
//! crossed it ran the whole checkpoint itself, stalling for 80-120 ms. So once the WAL is past
//! `Pacing::restart_bytes` the thread runs its passes back to back: each copies what was appended
//! during the one before, so they shrink as long as the disk outpaces the writers, and when one
//! has copied less than `tail_bytes` a FULL checkpoint copies the rest while holding the write
//! lock (a few milliseconds), after which the next commit starts the WAL over. The FULL waits at
//! most `full_wait` for the write lock or for a reader of an older snapshot, then gives up for
//! this round: a long read (a backup, a dashboard query) makes writers wait that long, never
//! longer.

use crate::model::error::Result;
use parking_lot::{Condvar, Mutex};
use rusqlite::{ffi, Connection};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When the checkpointer copies and when it starts the WAL over (see the module comment).
#[derive(Debug, Clone)]
struct Pacing {
    /// Checkpoint when the WAL file is larger than this...
    trigger_bytes: u64,
    /// ...or when it has been this long since the last checkpoint and the WAL is not empty.
    max_interval: Duration,
    /// Start the WAL over once it holds this much...
    restart_bytes: i64,
    /// ...as soon as a pass has had no more than this to copy...
    tail_bytes: i64,
    /// ...by a FULL checkpoint that waits no longer than this for the write lock or a reader.
    full_wait: Duration,
}

impl Default for Pacing {
    fn default() -> Pacing {
        // Sized with benches/bench_stalls.py: a pass over `restart_bytes` of frames is long, the
        // back-to-back passes that follow short, and the FULL that ends them holds the write lock
        // briefly (figures: benches/README.md, "Figures behind the code's comments").
        Pacing {
            trigger_bytes: 4 << 20,
            max_interval: Duration::from_secs(5),
            restart_bytes: 16 << 20,
            tail_bytes: 512 << 10,
            full_wait: Duration::from_millis(5),
        }
    }
}

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
            .spawn(move || run(conn, wal, &path, s, Pacing::default()))
            .map_err(|e| {
                crate::model::error::Error::Database(format!(
                    "cannot start the checkpointer thread: {e}"
                ))
            })?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }
}

thread_local! {
    /// Until when the FULL checkpoint running on this thread may wait (see `full_busy`).
    static FULL_DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The checkpoint connection's busy handler. Only a FULL checkpoint calls it (PASSIVE never
/// waits), and only until `FULL_DEADLINE`: SQLite holds the write lock while a FULL waits for a
/// reader, so a longer wait would stall every writer of the file.
fn full_busy(_count: i32) -> bool {
    match FULL_DEADLINE.with(|d| d.get()) {
        Some(deadline) if Instant::now() < deadline => {
            std::thread::sleep(Duration::from_micros(50));
            true
        }
        _ => false,
    }
}

/// `PRAGMA wal_checkpoint(mode)`, recorded for `metrics()`.
fn checkpoint(conn: &Connection, db_path: &str, mode: &str) -> Option<LastCheckpoint> {
    // Busy (another process is checkpointing) or any error: try again next tick. (Nothing here
    // logs: this thread is joined when a queue is dropped, possibly by a thread holding the GIL,
    // so it must never wait for the GIL itself.)
    let (busy, wal_frames, checkpointed_frames) = conn
        .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .ok()?;
    let c = LastCheckpoint {
        at_ms: crate::model::time::now_ms(),
        busy: busy != 0,
        wal_frames,
        checkpointed_frames,
    };
    record(db_path, c);
    Some(c)
}

/// Sync the WAL and the database file before a FULL checkpoint, without holding any lock: the
/// passes before it sync the database only when they copied the whole WAL, which a pass under
/// steady writes never does, so the FULL's own sync found up to `restart_bytes` of copied pages
/// to flush while it held the write lock (tens of milliseconds under `enqueue_many`; figures:
/// benches/README.md, "Figures behind the code's comments"). Through SQLite's own
/// handles of the files: opening and closing another descriptor of the database would drop this
/// process's POSIX locks on it.
fn presync(conn: &Connection) {
    for op in [
        ffi::SQLITE_FCNTL_JOURNAL_POINTER,
        ffi::SQLITE_FCNTL_FILE_POINTER,
    ] {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: these opcodes write a `sqlite3_file*`: SQLite's open file object (or nothing),
        // valid until the connection closes. The connection is this thread's and runs no
        // statement, and `xSync` is the call SQLite itself makes on the object.
        unsafe {
            if crate::storage::sqlite::db::file_control(conn, op, &mut file)
                && !file.is_null()
                && !(*file).pMethods.is_null()
            {
                if let Some(sync) = (*(*file).pMethods).xSync {
                    sync(file, ffi::SQLITE_SYNC_NORMAL);
                }
            }
        }
    }
}

/// Bytes of one WAL frame: a page and its 24-byte header.
fn frame_bytes(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .unwrap_or(4096)
        + 24
}

/// What the loop does after a pass.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Wait for the next tick.
    Wait,
    /// Pass again at once: the WAL is due to start over and the last pass was not short yet.
    CatchUp,
}

/// One round: a PASSIVE pass, and the FULL checkpoint that lets the WAL start over when it is
/// due and the pass found little left to copy. `copied_until` carries the frame the previous pass
/// copied up to, so a pass knows how much was appended since.
fn pass(
    conn: &Connection,
    db_path: &str,
    pacing: &Pacing,
    frame_bytes: i64,
    copied_until: &mut i64,
) -> Next {
    let Some(c) = checkpoint(conn, db_path, "PASSIVE") else {
        return Next::Wait;
    };
    if c.busy {
        return Next::Wait;
    }
    // A WAL that started over since the previous pass holds only new frames.
    let appended = if c.wal_frames >= *copied_until {
        c.wal_frames - *copied_until
    } else {
        c.wal_frames
    };
    *copied_until = c.checkpointed_frames;
    if c.wal_frames * frame_bytes < pacing.restart_bytes {
        return Next::Wait;
    }
    if appended * frame_bytes > pacing.tail_bytes {
        return Next::CatchUp;
    }
    presync(conn);
    FULL_DEADLINE.with(|d| d.set(Some(Instant::now() + pacing.full_wait)));
    checkpoint(conn, db_path, "FULL");
    FULL_DEADLINE.with(|d| d.set(None));
    Next::Wait
}

fn run(mut conn: Connection, wal: PathBuf, db_path: &str, shared: Arc<Shared>, pacing: Pacing) {
    let frame_bytes = frame_bytes(&conn);
    // Should this fail, a FULL does not wait at all and falls back to a PASSIVE pass.
    let _ = conn.busy_handler(Some(full_busy));
    let mut last = Instant::now();
    let mut copied_until = 0;
    let mut next = Next::Wait;
    loop {
        {
            let mut stop = shared.stop.lock();
            if !*stop && next == Next::Wait {
                shared.wake.wait_for(&mut stop, TICK);
            }
            if *stop {
                return;
            }
        }
        next = Next::Wait;
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size > pacing.trigger_bytes || (size > 0 && last.elapsed() >= pacing.max_interval) {
            next = pass(&conn, db_path, &pacing, frame_bytes, &mut copied_until);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL-mode file with a table, on plain connections (no queue handle, so no background
    /// checkpointer of its own): `writer` writes, `ckpt` is set up as the thread's connection.
    fn wal_file() -> (tempfile::TempDir, String, Connection, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db").to_str().unwrap().to_string();
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
            )
            .unwrap();
        let mut ckpt = Connection::open(&path).unwrap();
        ckpt.busy_handler(Some(full_busy)).unwrap();
        (dir, path, writer, ckpt)
    }

    /// Commit `n` one-row transactions (a frame or two each).
    fn write(c: &Connection, n: usize) {
        for _ in 0..n {
            c.execute("INSERT INTO t (v) VALUES (hex(randomblob(100)))", [])
                .unwrap();
        }
    }

    /// Frames in the WAL and frames copied back, without copying anything: the WAL-index header
    /// as a new read sees it (a PASSIVE with nothing left to copy).
    fn wal_state(c: &Connection) -> (i64, i64) {
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
        .unwrap()
    }

    #[test]
    fn a_pass_that_copied_much_goes_again_and_a_short_one_lets_the_wal_start_over() {
        let (_d, path, writer, ckpt) = wal_file();
        write(&writer, 300);
        let fb = frame_bytes(&ckpt);
        let pacing = Pacing {
            restart_bytes: 100 * fb,
            tail_bytes: 20 * fb,
            ..Pacing::default()
        };
        let mut copied = 0;
        // 300 commits to copy: more than the tail, so the loop goes again at once...
        assert_eq!(pass(&ckpt, &path, &pacing, fb, &mut copied), Next::CatchUp);
        let (frames, _) = wal_state(&writer);
        assert!(frames >= 300, "{frames}");
        // ...a few commits later the pass is short, and the FULL after it copies the rest.
        write(&writer, 5);
        assert_eq!(pass(&ckpt, &path, &pacing, fb, &mut copied), Next::Wait);
        let last = last_checkpoint(&path).unwrap();
        assert!(!last.busy);
        assert_eq!(last.wal_frames, last.checkpointed_frames);
        // The next commit starts the WAL over from its first frame.
        write(&writer, 1);
        let (frames, copied_back) = wal_state(&writer);
        assert!(frames <= 2, "the WAL did not start over: {frames} frames");
        assert_eq!(copied_back, frames);
        let rows: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 306);
    }

    #[test]
    fn a_small_wal_is_copied_back_but_not_restarted_early() {
        let (_d, path, writer, ckpt) = wal_file();
        write(&writer, 50);
        let fb = frame_bytes(&ckpt);
        let mut copied = 0;
        assert_eq!(
            pass(&ckpt, &path, &Pacing::default(), fb, &mut copied),
            Next::Wait
        );
        let last = last_checkpoint(&path).unwrap();
        assert_eq!(last.wal_frames, last.checkpointed_frames);
        assert_eq!(copied, last.checkpointed_frames);
    }

    #[test]
    fn the_full_checkpoint_gives_up_on_a_reader_of_an_older_snapshot() {
        let (_d, path, writer, ckpt) = wal_file();
        write(&writer, 100);
        // A reader holds the snapshot of these 100 rows while the writer goes on.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let seen = |r: &Connection| -> i64 {
            r.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
                .unwrap()
        };
        assert_eq!(seen(&reader), 100);
        write(&writer, 100);
        let fb = frame_bytes(&ckpt);
        let pacing = Pacing {
            restart_bytes: fb,
            tail_bytes: i64::MAX,
            full_wait: Duration::from_millis(20),
            ..Pacing::default()
        };
        let mut copied = 0;
        // The FULL cannot copy past the reader's snapshot: it stops waiting and leaves the rest.
        assert_eq!(pass(&ckpt, &path, &pacing, fb, &mut copied), Next::Wait);
        let last = last_checkpoint(&path).unwrap();
        assert!(last.checkpointed_frames < last.wal_frames, "{last:?}");
        // The writer was not held up for good, and the reader still sees its snapshot.
        write(&writer, 1);
        assert_eq!(seen(&reader), 100);
        reader.execute_batch("COMMIT").unwrap();
        // Once the reader is gone the next round copies everything.
        copied = 0;
        assert_eq!(pass(&ckpt, &path, &pacing, fb, &mut copied), Next::Wait);
        let last = last_checkpoint(&path).unwrap();
        assert_eq!(last.checkpointed_frames, last.wal_frames);
        assert_eq!(seen(&reader), 201);
    }

    #[test]
    fn the_busy_handler_waits_only_inside_a_full_checkpoint() {
        assert!(!full_busy(0));
        FULL_DEADLINE.with(|d| d.set(Some(Instant::now() + Duration::from_secs(60))));
        assert!(full_busy(0));
        FULL_DEADLINE.with(|d| d.set(Some(Instant::now())));
        assert!(!full_busy(1));
        FULL_DEADLINE.with(|d| d.set(None));
    }
}
