//! A thin VFS over the platform's default one that writes each transaction's WAL frames with one
//! system call instead of two per page.
//!
//! Why: SQLite appends every page a commit dirtied to the WAL as a 24-byte frame header and the
//! page, each with its own `pwrite`. An enqueue dirties about four pages, a claim five, so a
//! one-at-a-time enqueue made eight write calls, and those calls (with the kernel's per-call page
//! cache work) were a large share of its CPU time (figures: benches/README.md, "Figures behind the
//! code's comments"). Here the frames of a transaction are gathered
//! in memory while they arrive in order and written at once when the commit frame is complete.
//!
//! Why it is safe: a WAL transaction becomes visible to other connections only when the writer
//! updates the wal-index header in shared memory, after `walFrames` has written every frame and
//! the commit frame last (`nTruncate`, bytes 4..8 of its header, is non-zero only there). The
//! gathered frames are written as soon as the commit frame's page arrives, inside the `xWrite`
//! that SQLite checks, so an I/O error still fails the commit and nothing is published that is not
//! in the file. As backstops every operation that could read the WAL or publish through it writes
//! the buffer out first: a read, sync, truncate, size query or file-control on the WAL, and a
//! shared-memory lock, barrier or unmap on its database file (the WAL write lock is released
//! through `xShmLock`, so nothing buffered outlives the transaction that wrote it: frames of a
//! rolled-back transaction reach the file, beyond the committed end, where SQLite ignores them, as
//! without this layer). A crash with frames still buffered loses only a transaction that had not
//! committed. Writes that are not in-order appends (the WAL header, a frame rewritten in place,
//! checksum rewrites) go straight through, after anything buffered. Locking, shared memory and
//! every other file are the default VFS's own, so other processes and other SQLite builds on the
//! same file see no difference.

use parking_lot::Mutex;
use rusqlite::ffi;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::{LazyLock, OnceLock};

/// The name connections open with (`Connection::open_with_flags_and_vfs`).
pub const NAME: &CStr = c"prismq-wal-batch";

/// Gathered frames are written out before they pass this size, even without the commit frame (a
/// transaction that dirties more pages writes in steps of this size). It must stay well under
/// 128 KiB: the unix VFS writes at most 0x1ffff bytes per call and reports a longer write as a
/// full disk.
const MAX_BUFFER: usize = 64 * 1024;

#[cfg(test)]
thread_local! {
    /// Write calls this thread made to WAL files through this VFS (a commit should cost one).
    static WAL_WRITE_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many write calls this thread has made to WAL files so far.
#[cfg(test)]
pub fn wal_write_calls() -> u64 {
    WAL_WRITE_CALLS.with(|c| c.get())
}

/// Register the VFS once per process (not as the default) and return its name.
pub fn name() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| unsafe { register() })
        .clone()
        .map(|()| NAME)
}

unsafe fn register() -> Result<(), String> {
    let rc = ffi::sqlite3_initialize();
    if rc != ffi::SQLITE_OK {
        return Err(format!("sqlite3_initialize failed ({rc})"));
    }
    let real = ffi::sqlite3_vfs_find(ptr::null());
    if real.is_null() {
        return Err("SQLite has no default VFS".into());
    }
    let r = &*real;
    let (v2, v3) = (r.iVersion >= 2, r.iVersion >= 3);
    let vfs = Box::new(ffi::sqlite3_vfs {
        iVersion: r.iVersion.min(3),
        szOsFile: (file_header_size() + r.szOsFile as usize) as c_int,
        mxPathname: r.mxPathname,
        pNext: ptr::null_mut(),
        zName: NAME.as_ptr(),
        pAppData: real.cast(),
        xOpen: Some(x_open),
        xDelete: r.xDelete.map(|_| x_delete as _),
        xAccess: r.xAccess.map(|_| x_access as _),
        xFullPathname: r.xFullPathname.map(|_| x_full_pathname as _),
        xDlOpen: r.xDlOpen.map(|_| x_dl_open as _),
        xDlError: r.xDlError.map(|_| x_dl_error as _),
        xDlSym: r.xDlSym.map(|_| x_dl_sym as _),
        xDlClose: r.xDlClose.map(|_| x_dl_close as _),
        xRandomness: r.xRandomness.map(|_| x_randomness as _),
        xSleep: r.xSleep.map(|_| x_sleep as _),
        xCurrentTime: r.xCurrentTime.map(|_| x_current_time as _),
        xGetLastError: r.xGetLastError.map(|_| x_get_last_error as _),
        // Entries of later struct versions only where the default VFS has that version.
        xCurrentTimeInt64: r
            .xCurrentTimeInt64
            .filter(|_| v2)
            .map(|_| x_current_time_i64 as _),
        xSetSystemCall: r
            .xSetSystemCall
            .filter(|_| v3)
            .map(|_| x_set_system_call as _),
        xGetSystemCall: r
            .xGetSystemCall
            .filter(|_| v3)
            .map(|_| x_get_system_call as _),
        xNextSystemCall: r
            .xNextSystemCall
            .filter(|_| v3)
            .map(|_| x_next_system_call as _),
    });
    // Leaked on purpose: SQLite keeps the pointer for the life of the process.
    let rc = ffi::sqlite3_vfs_register(Box::into_raw(vfs), 0);
    if rc != ffi::SQLITE_OK {
        return Err(format!("sqlite3_vfs_register failed ({rc})"));
    }
    Ok(())
}

unsafe fn real_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    (*vfs).pAppData.cast()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Main,
    Wal,
    Other,
}

/// Our part of every file SQLite opens through this VFS; the default VFS's own file object
/// follows it in the same allocation (`real`).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file, // first: SQLite only ever sees this
    real: *mut ffi::sqlite3_file,
    role: Role,
    /// Main database file: its open WAL (buffer to write out before shared-memory calls).
    /// WAL file: its database file, null when it could not be found (then nothing is buffered).
    link: *mut File,
    /// Main database file: the key it is registered under in `MAINS`.
    key: usize,
    buf: Vec<u8>,
    buf_start: i64,
    /// End offset of the last write to this WAL, -1 when unknown: a write there is an in-order
    /// append and may be gathered.
    end: i64,
    /// The last write was a commit frame's header: write everything out after its page.
    commit_pending: bool,
}

fn file_header_size() -> usize {
    std::mem::size_of::<File>().next_multiple_of(16)
}

/// Open main database files, by the address of the name SQLite passed to `xOpen`. SQLite lays out
/// the WAL's name after the database's in one allocation, and `sqlite3_filename_database` on the
/// WAL's name returns that same address: this is how a WAL finds its database file.
static MAINS: LazyLock<Mutex<HashMap<usize, usize>>> = LazyLock::new(Default::default);

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(f_close),
    xRead: Some(f_read),
    xWrite: Some(f_write),
    xTruncate: Some(f_truncate),
    xSync: Some(f_sync),
    xFileSize: Some(f_file_size),
    xLock: Some(f_lock),
    xUnlock: Some(f_unlock),
    xCheckReservedLock: Some(f_check_reserved_lock),
    xFileControl: Some(f_file_control),
    xSectorSize: Some(f_sector_size),
    xDeviceCharacteristics: Some(f_device_characteristics),
    xShmMap: Some(f_shm_map),
    xShmLock: Some(f_shm_lock),
    xShmBarrier: Some(f_shm_barrier),
    xShmUnmap: Some(f_shm_unmap),
    xFetch: Some(f_fetch),
    xUnfetch: Some(f_unfetch),
};

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = real_vfs(vfs);
    let f = file.cast::<File>();
    let real = file
        .cast::<u8>()
        .add(file_header_size())
        .cast::<ffi::sqlite3_file>();
    (*real).pMethods = ptr::null();
    let rc = ((*real_vfs).xOpen.unwrap())(real_vfs, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK || (*real).pMethods.is_null() {
        // SQLite calls xClose only if pMethods is set; close the inner file ourselves.
        if !(*real).pMethods.is_null() {
            if let Some(close) = (*(*real).pMethods).xClose {
                close(real);
            }
        }
        (*file).pMethods = ptr::null();
        return if rc != ffi::SQLITE_OK {
            rc
        } else {
            ffi::SQLITE_CANTOPEN
        };
    }
    let role = if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        Role::Main
    } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
        Role::Wal
    } else {
        Role::Other
    };
    ptr::write(
        f,
        File {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            real,
            role,
            link: ptr::null_mut(),
            key: 0,
            buf: Vec::new(),
            buf_start: 0,
            end: -1,
            commit_pending: false,
        },
    );
    match role {
        Role::Main if !name.is_null() => {
            (*f).key = name as usize;
            MAINS.lock().insert(name as usize, f as usize);
        }
        Role::Wal if !name.is_null() => {
            let db_name = ffi::sqlite3_filename_database(name);
            let main = MAINS.lock().get(&(db_name as usize)).copied();
            if let Some(main) = main {
                let main = main as *mut File;
                (*f).link = main;
                (*main).link = f;
            }
        }
        _ => {}
    }
    ffi::SQLITE_OK
}

unsafe fn real_methods(f: *mut File) -> &'static ffi::sqlite3_io_methods {
    &*(*(*f).real).pMethods
}

/// Write to the default VFS's file (counted, in tests, when it is a WAL).
unsafe fn write_real(f: *mut File, data: *const c_void, amt: c_int, off: i64) -> c_int {
    #[cfg(test)]
    if (*f).role == Role::Wal {
        WAL_WRITE_CALLS.with(|c| c.set(c.get() + 1));
    }
    (real_methods(f).xWrite.unwrap())((*f).real, data, amt, off)
}

/// Write the gathered frames out (no-op when there are none).
unsafe fn flush(f: *mut File) -> c_int {
    let file = &mut *f;
    if file.buf.is_empty() {
        return ffi::SQLITE_OK;
    }
    let rc = write_real(
        f,
        file.buf.as_ptr().cast(),
        file.buf.len() as c_int,
        file.buf_start,
    );
    file.buf.clear();
    rc
}

/// A database file's WAL, if it has frames gathered.
unsafe fn flush_wal_of(f: *mut File) -> c_int {
    let file = &*f;
    if file.role == Role::Main && !file.link.is_null() {
        flush(file.link)
    } else {
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn f_close(file: *mut ffi::sqlite3_file) -> c_int {
    let f = file.cast::<File>();
    let mut rc = ffi::SQLITE_OK;
    match (*f).role {
        Role::Wal => {
            rc = flush(f);
            if !(*f).link.is_null() {
                (*(*f).link).link = ptr::null_mut();
            }
        }
        Role::Main => {
            rc = flush_wal_of(f);
            if !(*f).link.is_null() {
                (*(*f).link).link = ptr::null_mut();
            }
            let mut mains = MAINS.lock();
            if mains.get(&(*f).key) == Some(&(f as usize)) {
                mains.remove(&(*f).key);
            }
        }
        Role::Other => {}
    }
    let real = (*f).real;
    let close = real_methods(f).xClose.unwrap();
    ptr::drop_in_place(f);
    let rc2 = close(real);
    (*file).pMethods = ptr::null();
    if rc != ffi::SQLITE_OK {
        rc
    } else {
        rc2
    }
}

unsafe extern "C" fn f_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    let f = file.cast::<File>();
    let file = &mut *f;
    if file.role != Role::Wal || file.link.is_null() || amt <= 0 {
        return write_real(f, data, amt, off);
    }
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amt as usize);
    // A 24-byte write is a frame header; a non-zero "database size" field marks the commit frame.
    let is_commit_header = amt == 24 && bytes[4..8] != [0, 0, 0, 0];
    if off != file.end {
        // Not an in-order append (`end` is -1 when unknown): everything before it first, then
        // it as it is.
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let rc = write_real(f, data, amt, off);
        file.end = if rc == ffi::SQLITE_OK {
            off + amt as i64
        } else {
            -1
        };
        file.commit_pending = is_commit_header;
        return rc;
    }
    if !file.buf.is_empty() && file.buf.len() + bytes.len() > MAX_BUFFER {
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            file.end = -1;
            return rc;
        }
    }
    if file.buf.is_empty() {
        file.buf_start = off;
    }
    file.buf.extend_from_slice(bytes);
    file.end = off + amt as i64;
    let commit_done = file.commit_pending;
    file.commit_pending = is_commit_header;
    if commit_done {
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            file.end = -1;
        }
        return rc;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn f_read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    let f = file.cast::<File>();
    let rc = flush(f);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    (real_methods(f).xRead.unwrap())((*f).real, data, amt, off)
}

/// Forward a call after writing out what is gathered (on a WAL) or what its WAL gathered (on a
/// database file).
macro_rules! flushed {
    ($f:expr, $call:expr) => {{
        let f = $f;
        let rc = if (*f).role == Role::Wal {
            flush(f)
        } else {
            flush_wal_of(f)
        };
        if rc != ffi::SQLITE_OK {
            rc
        } else {
            $call
        }
    }};
}

unsafe extern "C" fn f_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let f = file.cast::<File>();
    (*f).end = -1;
    flushed!(f, (real_methods(f).xTruncate.unwrap())((*f).real, size))
}

unsafe extern "C" fn f_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let f = file.cast::<File>();
    flushed!(f, (real_methods(f).xSync.unwrap())((*f).real, flags))
}

unsafe extern "C" fn f_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    let f = file.cast::<File>();
    flushed!(f, (real_methods(f).xFileSize.unwrap())((*f).real, size))
}

unsafe extern "C" fn f_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let f = file.cast::<File>();
    flushed!(f, (real_methods(f).xLock.unwrap())((*f).real, level))
}

unsafe extern "C" fn f_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let f = file.cast::<File>();
    flushed!(f, (real_methods(f).xUnlock.unwrap())((*f).real, level))
}

unsafe extern "C" fn f_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let f = file.cast::<File>();
    (real_methods(f).xCheckReservedLock.unwrap())((*f).real, out)
}

unsafe extern "C" fn f_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    let f = file.cast::<File>();
    flushed!(
        f,
        (real_methods(f).xFileControl.unwrap())((*f).real, op, arg)
    )
}

unsafe extern "C" fn f_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let f = file.cast::<File>();
    (real_methods(f).xSectorSize.unwrap())((*f).real)
}

unsafe extern "C" fn f_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let f = file.cast::<File>();
    (real_methods(f).xDeviceCharacteristics.unwrap())((*f).real)
}

unsafe extern "C" fn f_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let f = file.cast::<File>();
    match real_methods(f).xShmMap {
        Some(x) if real_methods(f).iVersion >= 2 => {
            flushed!(f, x((*f).real, page, size, extend, out))
        }
        _ => ffi::SQLITE_IOERR_SHMMAP,
    }
}

unsafe extern "C" fn f_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let f = file.cast::<File>();
    match real_methods(f).xShmLock {
        Some(x) if real_methods(f).iVersion >= 2 => {
            let rc = flush_wal_of(f);
            if rc != ffi::SQLITE_OK && flags & ffi::SQLITE_SHM_UNLOCK == 0 {
                return rc;
            }
            // An unlock goes through even if the write-out failed; the failure is still reported.
            let lock_rc = x((*f).real, offset, n, flags);
            if rc != ffi::SQLITE_OK {
                rc
            } else {
                lock_rc
            }
        }
        _ => ffi::SQLITE_IOERR_SHMLOCK,
    }
}

unsafe extern "C" fn f_shm_barrier(file: *mut ffi::sqlite3_file) {
    let f = file.cast::<File>();
    // Nothing should be gathered here (the commit frame wrote it out); a backstop, whose error
    // the barrier cannot report, only for a write pattern SQLite does not use today.
    let _ = flush_wal_of(f);
    if let Some(x) = real_methods(f).xShmBarrier {
        if real_methods(f).iVersion >= 2 {
            x((*f).real);
        }
    }
}

unsafe extern "C" fn f_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let f = file.cast::<File>();
    match real_methods(f).xShmUnmap {
        Some(x) if real_methods(f).iVersion >= 2 => flushed!(f, x((*f).real, delete)),
        _ => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn f_fetch(
    file: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let f = file.cast::<File>();
    match real_methods(f).xFetch {
        Some(x) if real_methods(f).iVersion >= 3 => x((*f).real, off, amt, out),
        _ => {
            *out = ptr::null_mut();
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn f_unfetch(
    file: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    let f = file.cast::<File>();
    match real_methods(f).xUnfetch {
        Some(x) if real_methods(f).iVersion >= 3 => x((*f).real, off, p),
        _ => ffi::SQLITE_OK,
    }
}

/// A VFS method that calls the default VFS's own, with the default VFS's object (some of its
/// methods use their app data).
macro_rules! forward_to_default_vfs {
    ($($name:ident => $field:ident ($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs, $($arg: $ty),*) -> $ret {
            let r = real_vfs(vfs);
            ((*r).$field.unwrap())(r, $($arg),*)
        }
    )*};
}

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

forward_to_default_vfs! {
    x_delete => xDelete(name: *const c_char, sync_dir: c_int) -> c_int;
    x_access => xAccess(name: *const c_char, flags: c_int, out: *mut c_int) -> c_int;
    x_full_pathname => xFullPathname(name: *const c_char, n: c_int, out: *mut c_char) -> c_int;
    x_dl_open => xDlOpen(name: *const c_char) -> *mut c_void;
    x_dl_error => xDlError(n: c_int, out: *mut c_char) -> ();
    x_dl_sym => xDlSym(h: *mut c_void, sym: *const c_char) -> Option<DlSym>;
    x_dl_close => xDlClose(h: *mut c_void) -> ();
    x_randomness => xRandomness(n: c_int, out: *mut c_char) -> c_int;
    x_sleep => xSleep(us: c_int) -> c_int;
    x_current_time => xCurrentTime(out: *mut f64) -> c_int;
    x_get_last_error => xGetLastError(n: c_int, out: *mut c_char) -> c_int;
    x_current_time_i64 => xCurrentTimeInt64(out: *mut ffi::sqlite3_int64) -> c_int;
    x_set_system_call => xSetSystemCall(name: *const c_char, p: ffi::sqlite3_syscall_ptr) -> c_int;
    x_get_system_call => xGetSystemCall(name: *const c_char) -> ffi::sqlite3_syscall_ptr;
    x_next_system_call => xNextSystemCall(name: *const c_char) -> *const c_char;
}

#[cfg(test)]
mod tests;
