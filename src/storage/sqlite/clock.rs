//! The lease clock: when a lease ends, on a clock that steps of the wall clock never move.
//!
//! Why: a lease used to end at a wall-clock time, so a step of the system clock forward by more
//! than a lease's remaining time made the rescuer see every running task as expired (each ran
//! twice), and a step back stalled the rescue of dead workers for the length of the step. A lease
//! now ends at a *lease key*: `(boot_seq << 42) | ms`, where `ms` is the machine's monotonic clock
//! (milliseconds since boot, not counting suspend: Linux `CLOCK_MONOTONIC`, macOS
//! `CLOCK_UPTIME_RAW`, Windows `QueryUnbiasedInterruptTime`), shared by every process of the
//! machine, and `boot_seq` numbers the boots the file has seen (table `boots`: a boot id not seen
//! before gets the next number when a process of that boot opens the file). So "expired" stays
//! one comparison (`lease_key < now`) and one walk of `tasks_lease`, and a lease recorded before a
//! reboot compares below every key of a later boot: it counts as expired. 42 bits of
//! milliseconds are 139 years: a boot's uptime plus the longest lease (100 years) fits.
//!
//! What holds: across a suspend, the monotonic clock stands still with the processes, so a
//! lease has after the resume what it had before. Across a reboot, every lease of the earlier
//! boot is expired at the first claim. Delays and `run_after` stay wall-clock (UTC) times.
//!
//! Where no boot identity can be read (a system without `/proc`, a BSD, a Windows without the
//! `BootId` value, or no monotonic clock), the lease clock falls back to the wall clock (the
//! boot id `wall-clock`): leases behave as before this clock, steps of the system clock and all.
//! `Queue::lease_clock()` says which one a handle uses.

use crate::model::error::Result;
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

/// Bits of a lease key that hold milliseconds; the boot sequence number sits above them.
pub const KEY_MS_BITS: u32 = 42;
const KEY_MS_MASK: i64 = (1 << KEY_MS_BITS) - 1;

/// The boot id of the wall-clock fallback.
pub const WALL_CLOCK_BOOT: &str = "wall-clock";

/// A debug hook, read once: this process claims to run in the boot with this id (for tests of
/// leases left over from another boot). Never set it in production.
pub const BOOT_ID_ENV: &str = "PRISMQ_DEBUG_BOOT_ID";

/// What the lease clock of this process reads, the same for every file it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    /// `None`: the wall-clock fallback.
    boot_id: Option<String>,
}

fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let overridden = std::env::var(BOOT_ID_ENV)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let boot_id = overridden
            .or_else(platform::boot_id)
            .filter(|_| platform::monotonic_ms().is_some());
        Source { boot_id }
    })
}

/// The lease clock of one queue handle: the key base of this boot in its file.
#[derive(Debug)]
pub struct LeaseClock {
    /// `seq << 42`, or `UNKNOWN` until this boot is registered (a handle opened on a read-only
    /// file registers it with its first write).
    base: AtomicI64,
    monotonic: bool,
}

const UNKNOWN: i64 = i64::MIN;

/// Now on both clocks: `wall` (ms since the epoch, UTC) for what is stored and shown, `key` for
/// when leases end.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub wall: i64,
    pub key: i64,
}

impl LeaseClock {
    /// The clock of a handle whose boot has sequence number `seq` in the file, or `None` when the
    /// file was opened read-only before this boot was registered: the first write of the handle
    /// registers it then (see `now`). The driver looks the boot up at open (`seq_of`, `register`).
    pub(crate) fn for_boot(seq: Option<i64>) -> LeaseClock {
        LeaseClock {
            base: AtomicI64::new(seq.map_or(UNKNOWN, |s| s << KEY_MS_BITS)),
            monotonic: source().boot_id.is_some(),
        }
    }

    /// Now, as a lease key and on the wall clock, inside the write transaction `tx` (which
    /// registers this boot in the file if the handle could not at open).
    pub fn now(&self, tx: &Connection) -> Result<Now> {
        let mut base = self.base.load(Ordering::Relaxed);
        if base == UNKNOWN {
            base = register(tx, &boot_id())? << KEY_MS_BITS;
            self.base.store(base, Ordering::Relaxed);
        }
        Ok(self.read(base))
    }

    fn read(&self, base: i64) -> Now {
        let wall = crate::model::time::now_ms();
        let ms = if self.monotonic {
            platform::monotonic_ms().unwrap_or(0)
        } else {
            wall.max(0)
        };
        Now {
            wall,
            key: base | (ms & KEY_MS_MASK),
        }
    }

    /// The key `ms` after `now` (a lease of at most 100 years, so it stays in this boot).
    pub fn after(now: Now, ms: i64) -> i64 {
        now.key.saturating_add(ms)
    }

    /// (clock name, boot id, boot sequence number: None until registered) for
    /// `Queue::lease_clock`.
    pub fn describe(&self) -> (&'static str, String, Option<i64>) {
        let base = self.base.load(Ordering::Relaxed);
        (
            if self.monotonic { "monotonic" } else { "wall" },
            boot_id(),
            (base != UNKNOWN).then_some(base >> KEY_MS_BITS),
        )
    }
}

/// This process's boot id, or the wall-clock fallback's.
pub fn boot_id() -> String {
    source()
        .boot_id
        .clone()
        .unwrap_or_else(|| WALL_CLOCK_BOOT.to_string())
}

/// The sequence number of boot `id` in this file, if it has seen it.
pub(crate) fn seq_of(c: &Connection, id: &str) -> Result<Option<i64>> {
    Ok(
        c.prepare_cached("SELECT seq FROM boots WHERE boot_id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?,
    )
}

/// The sequence number of boot `id` in this file, given the next one when new (in `tx`).
pub(crate) fn register(tx: &Connection, id: &str) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO boots (boot_id, first_seen) VALUES (?1, ?2) ON CONFLICT (boot_id) DO NOTHING",
    )?
    .execute(params![id, crate::model::time::now_ms()])?;
    Ok(seq_of(tx, id)?.expect("the boot was just registered"))
}

/// Schema V8: register this boot, and give every running lease a key: the time it had left on
/// the wall clock, from now on the lease clock (a lease that had ended stays ended).
pub(crate) fn migrate_leases(tx: &Connection) -> Result<()> {
    let seq = register(tx, &boot_id())?;
    let clock = LeaseClock::for_boot(Some(seq));
    let now = clock.now(tx)?;
    tx.execute(
        "UPDATE tasks SET lease_key = CASE
             WHEN typeof(lease_until) = 'integer' THEN ?1 + max(-1, min(lease_until - ?2, ?3))
             ELSE ?1 - 1 END
         WHERE status = 'running' AND lease_until IS NOT NULL",
        params![now.key, now.wall, crate::model::time::MAX_DURATION_MS],
    )?;
    Ok(())
}

/// For tests: the key of a lease in the boot `seq`.
#[cfg(test)]
pub(crate) fn key(seq: i64, ms: i64) -> i64 {
    (seq << KEY_MS_BITS) | (ms & KEY_MS_MASK)
}

#[cfg(target_os = "linux")]
mod platform {
    pub fn boot_id() -> Option<String> {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(id.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// `CLOCK_MONOTONIC`: since boot, machine-wide, not counting suspend, never stepped.
    pub fn monotonic_ms() -> Option<i64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer to a timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        // The casts are no-ops on 64-bit targets, not on 32-bit ones.
        #[allow(clippy::unnecessary_cast)]
        (rc == 0).then(|| ts.tv_sec as i64 * 1000 + ts.tv_nsec as i64 / 1_000_000)
    }
}

#[cfg(target_os = "macos")]
mod platform {
    pub fn boot_id() -> Option<String> {
        let mut buf = [0u8; 64];
        let mut len: libc::size_t = buf.len();
        // SAFETY: a NUL-terminated name, a buffer and its length; the value is a C string.
        let rc = unsafe {
            libc::sysctlbyname(
                c"kern.bootsessionuuid".as_ptr(),
                buf.as_mut_ptr().cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            return None;
        }
        let text = &buf[..len.min(buf.len())];
        let text = text.split(|b| *b == 0).next().unwrap_or_default();
        Some(String::from_utf8_lossy(text).trim().to_string()).filter(|s| !s.is_empty())
    }

    /// `CLOCK_UPTIME_RAW`: since boot, not counting sleep (macOS's `CLOCK_MONOTONIC` counts it).
    pub fn monotonic_ms() -> Option<i64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer to a timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_UPTIME_RAW, &mut ts) };
        #[allow(clippy::unnecessary_cast)]
        (rc == 0).then(|| ts.tv_sec as i64 * 1000 + ts.tv_nsec as i64 / 1_000_000)
    }
}

#[cfg(windows)]
mod platform {
    use windows_sys::Win32::System::Registry::{
        RegGetValueW, HKEY_LOCAL_MACHINE, RRF_RT_REG_DWORD,
    };

    fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().chain(std::iter::once(0)).collect()
    }

    /// The boot counter Windows keeps in the registry (Windows 8 and later).
    pub fn boot_id() -> Option<String> {
        let key = wide(
            r"SYSTEM\CurrentControlSet\Control\Session Manager\Memory Management\PrefetchParameters",
        );
        let value = wide("BootId");
        let mut data: u32 = 0;
        let mut size = std::mem::size_of::<u32>() as u32;
        // SAFETY: NUL-terminated wide strings, a DWORD out-buffer and its size.
        let rc = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_DWORD,
                std::ptr::null_mut(),
                (&mut data as *mut u32).cast(),
                &mut size,
            )
        };
        (rc == 0).then(|| format!("windows-boot-{data}"))
    }

    /// `QueryUnbiasedInterruptTime`: 100 ns units since boot, not counting sleep or hibernation.
    pub fn monotonic_ms() -> Option<i64> {
        let mut t: u64 = 0;
        // SAFETY: a valid out-pointer.
        let ok = unsafe {
            windows_sys::Win32::System::WindowsProgramming::QueryUnbiasedInterruptTime(&mut t)
        };
        (ok != 0).then_some((t / 10_000) as i64)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod platform {
    /// No boot identity known here: the wall-clock fallback.
    pub fn boot_id() -> Option<String> {
        None
    }

    pub fn monotonic_ms() -> Option<i64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_boot_compares_above_every_key_of_an_earlier_one() {
        let longest = crate::model::time::MAX_DURATION_MS;
        // A lease of the longest duration taken after 30 years of uptime, in boot 1...
        let old = key(1, 30 * 365 * 86_400_000) + longest;
        assert!(old < key(2, 0), "stays below the next boot's first key");
        // ...and keys of one boot follow its clock.
        assert!(key(1, 5) < key(1, 6));
    }

    #[test]
    fn this_machine_has_a_lease_clock_that_moves_forward() {
        let c = LeaseClock::for_boot(Some(3));
        let a = c.read(3 << KEY_MS_BITS);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = c.read(3 << KEY_MS_BITS);
        assert!(b.key >= a.key + 4, "{a:?} {b:?}");
        assert_eq!(a.key >> KEY_MS_BITS, 3);
        if cfg!(any(target_os = "linux", target_os = "macos")) {
            assert_eq!(c.describe().0, "monotonic");
        }
    }
}
