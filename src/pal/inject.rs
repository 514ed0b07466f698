//! Fault injection (feature `fault-injection`, for tests only): make a chosen system call or
//! device operation fail, so the tests can check that every failure ends in a typed error or
//! a clean fallback, with all data intact and the counters consistent.
//!
//! A point is armed with a countdown: `arm(Point::UffdCopy, 2, libc::ENOMEM, 1)` lets two calls
//! through, fails the third with `ENOMEM`, and then lets calls through again (`times` says how
//! many calls fail). Checking a point is one relaxed load when nothing is armed, and compiles to
//! nothing without the feature. Async-signal-safe: atomics only.
//!
//! tieralloc's device pools are anonymous windows, not `memfd`s, so there is no `memfd_create`
//! or `fallocate` to fail; the window mappings themselves are covered by [`Point::Mmap`].

/// A place where a failure can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Point {
    /// `mmap` of tieralloc's own mappings (device windows, metadata, the managed range).
    Mmap = 0,
    /// `mprotect` (signal backend protections).
    Mprotect = 1,
    /// `UFFDIO_REGISTER`.
    UffdRegister = 2,
    /// `UFFDIO_MOVE` (the fast path; failure falls back to copying).
    UffdMove = 3,
    /// `UFFDIO_COPY`.
    UffdCopy = 4,
    /// `UFFDIO_WRITEPROTECT`.
    UffdWriteProtect = 5,
    /// Reading `/proc/self/pagemap`.
    Pagemap = 6,
    /// Taking device capacity: the device looks full.
    DeviceReserve = 7,
    /// Not a failure: a fault-back's read-ahead stalls for `errno` milliseconds before its
    /// next batch, as when its thread is descheduled (races with later migrations).
    ReadAheadStall = 8,
    /// `mremap` of pages between the managed range and a device window (signal backend; a
    /// failure falls back to copying).
    Mremap = 9,
    /// Not a failure: a kernel launch stalls for `errno` milliseconds before it pins each of
    /// its argument runs (the runs before it pinned, the rest untouched), as when its thread is
    /// descheduled (races with faults and migrations on the arguments' pages).
    PinStall = 10,
    /// `UFFDIO_ZEROPAGE` (`EAGAIN`: the kernel asks for a retry, as when a page table it
    /// allocated went away under it).
    UffdZeropage = 11,
    /// Not a failure: creating the devices stalls for `errno` milliseconds while it holds the
    /// device list (races with `fork`).
    DeviceInitStall = 12,
    /// Not a failure: a userfaultfd handler thread stalls for `errno` milliseconds between
    /// reading fault messages and serving them, as when it is descheduled (the messages' threads
    /// may be woken by other fault-backs meanwhile, and go on).
    QueuedFaultStall = 13,
}

#[cfg(feature = "fault-injection")]
const POINTS: usize = 14;

#[cfg(feature = "fault-injection")]
mod armed {
    use super::{Point, POINTS};
    use core::sync::atomic::{AtomicBool, AtomicI32, AtomicIsize, Ordering};

    pub static ANY: AtomicBool = AtomicBool::new(false);
    /// Calls to let through before failing (negative: disarmed).
    pub static SKIP: [AtomicIsize; POINTS] = [const { AtomicIsize::new(-1) }; POINTS];
    /// Calls that fail once the countdown ends.
    pub static TIMES: [AtomicIsize; POINTS] = [const { AtomicIsize::new(0) }; POINTS];
    pub static ERRNO: [AtomicI32; POINTS] = [const { AtomicI32::new(0) }; POINTS];

    pub fn fail(p: Point) -> Option<i32> {
        if !ANY.load(Ordering::Relaxed) {
            return None;
        }
        let i = p as usize;
        if SKIP[i].load(Ordering::Acquire) < 0 {
            return None;
        }
        if SKIP[i].fetch_sub(1, Ordering::AcqRel) > 0 {
            return None;
        }
        // Countdown over: this call fails if failures are left.
        SKIP[i].store(0, Ordering::Release);
        if TIMES[i].fetch_sub(1, Ordering::AcqRel) > 0 {
            Some(ERRNO[i].load(Ordering::Relaxed))
        } else {
            SKIP[i].store(-1, Ordering::Release);
            None
        }
    }
}

/// `Some(errno)` if the armed point `p` fails this call.
#[inline(always)]
pub(crate) fn fail(p: Point) -> Option<i32> {
    #[cfg(feature = "fault-injection")]
    {
        armed::fail(p)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = p;
        None
    }
}

/// Sleeps `errno` milliseconds if the armed point `p` fires this call: the stall points,
/// which stand for a thread descheduled at that moment. Nothing without the feature.
#[inline(always)]
pub(crate) fn stall(p: Point) {
    if let Some(ms) = fail(p) {
        crate::pal::thread::sleep_us(ms as u64 * 1000);
    }
}

/// Arms `p`: after `skip` calls go through, the next `times` calls fail with `errno`.
#[cfg(feature = "fault-injection")]
pub fn arm(p: Point, skip: usize, errno: i32, times: usize) {
    use core::sync::atomic::Ordering;
    let i = p as usize;
    armed::ERRNO[i].store(errno, Ordering::Relaxed);
    armed::TIMES[i].store(times as isize, Ordering::Relaxed);
    armed::SKIP[i].store(skip as isize, Ordering::Release);
    armed::ANY.store(true, Ordering::Release);
}

/// Disarms every point.
#[cfg(feature = "fault-injection")]
pub fn disarm_all() {
    use core::sync::atomic::Ordering;
    for i in 0..POINTS {
        armed::SKIP[i].store(-1, Ordering::Release);
    }
}
