//! The page map: one atomic 64-bit entry per page of the managed range.
//!
//! The map is a flat array indexed by page number, mapped with `MAP_NORESERVE` so that only the
//! entries of pages in use cost memory (8 bytes per 4 KiB page, 0.2%). Entries are atomics
//! because fault handlers read and lock them without taking any other lock.
//!
//! Entry layout (bits):
//! - `0..2`   [`Use`]: free, part of a small-object span, or part of a large run.
//! - `2`      [`DEVICE`]: the page lives in a device pool (else in host memory).
//! - `3`      [`LOCKED`]: a migration or fault-back owns the page; everyone else waits.
//! - `4`      [`FILLED`]: (device pages) the device frame holds data; clear means the page was
//!   never touched and reads as zero wherever it lands.
//! - `8..24`  device id (valid when `DEVICE` is set).
//!
//! Invariant: only the holder of `LOCKED` changes the residency bits of an entry, and it clears
//! `LOCKED` in the same store that publishes the new residency ([`unlock`]).

use crate::sys;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What the allocator uses a page for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Use {
    /// Not handed out: free run or never used.
    Free = 0,
    /// Part of a span of small objects (some of them may be free).
    Span = 1,
    /// Part of one large allocation.
    Large = 2,
}

const USE_MASK: u64 = 0b11;
/// The page lives in a device pool.
const DEVICE: u64 = 1 << 2;
/// A migration or fault-back owns the page.
const LOCKED: u64 = 1 << 3;
/// The device frame holds data (else it reads as zero).
const FILLED: u64 = 1 << 4;
const DEV_SHIFT: u32 = 8;
const DEV_MASK: u64 = 0xffff << DEV_SHIFT;

/// One decoded page map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry(u64);

impl Entry {
    /// The entry of a page the allocator uses as `u`, resident on the host.
    pub const fn host(u: Use) -> Entry {
        Entry(u as u64)
    }

    /// What the allocator uses the page for.
    pub fn use_(self) -> Use {
        match self.0 & USE_MASK {
            0 => Use::Free,
            1 => Use::Span,
            _ => Use::Large,
        }
    }

    /// The device the page lives on, or `None` for host memory.
    #[inline]
    pub fn device(self) -> Option<u16> {
        (self.0 & DEVICE != 0).then_some(((self.0 & DEV_MASK) >> DEV_SHIFT) as u16)
    }

    /// True while a migration or fault-back owns the page.
    #[inline]
    pub fn locked(self) -> bool {
        self.0 & LOCKED != 0
    }

    /// True if the page's device frame holds data (meaningful for device pages only).
    #[inline]
    pub fn filled(self) -> bool {
        self.0 & FILLED != 0
    }

    /// This entry moved to host memory (same use, unlocked).
    #[inline]
    pub fn on_host(self) -> Entry {
        Entry(self.0 & USE_MASK)
    }

    /// This entry moved to device `d`, with or without data in its frame (same use, unlocked).
    #[inline]
    pub fn on_device(self, d: u16, filled: bool) -> Entry {
        Entry(
            (self.0 & USE_MASK)
                | DEVICE
                | ((d as u64) << DEV_SHIFT)
                | if filled { FILLED } else { 0 },
        )
    }

    /// This entry without the lock bit.
    #[inline]
    pub fn unlocked(self) -> Entry {
        Entry(self.0 & !LOCKED)
    }
}

static MAP: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);

/// Maps the entry array for `pages` pages. Called once by the heap's initialisation, after
/// [`arena::init`]. Returns false if the kernel refused the mapping.
pub fn init(pages: usize) -> bool {
    let bytes = (pages * 8).next_multiple_of(sys::PAGE_SIZE);
    let p = sys::map_noreserve(bytes);
    if p.is_null() {
        return false;
    }
    LEN.store(pages, Ordering::Relaxed);
    MAP.store(p as usize, Ordering::Release);
    true
}

#[inline]
fn slot(page: usize) -> &'static AtomicU64 {
    debug_assert!(page < LEN.load(Ordering::Relaxed));
    // SAFETY: the map covers every page of the arena (init), is never unmapped, and `page` is a
    // page number of the arena; AtomicU64 has the layout of u64 and zero is a valid entry.
    unsafe { &*(MAP.load(Ordering::Acquire) as *const AtomicU64).add(page) }
}

/// The entry of page `page`.
#[inline]
pub fn get(page: usize) -> Entry {
    Entry(slot(page).load(Ordering::Acquire))
}

/// Sets the entries of pages `[page, page+n)` to `e`. Only for pages no one else can lock:
/// pages the heap is handing out or taking back (device pages were released first).
pub fn set_range(page: usize, n: usize, e: Entry) {
    for p in page..page + n {
        slot(p).store(e.0, Ordering::Release);
    }
}

/// Locks page `page` if its entry is unlocked; returns the entry it had. Async-signal-safe.
#[inline]
pub fn try_lock(page: usize) -> Option<Entry> {
    let s = slot(page);
    let cur = s.load(Ordering::Acquire);
    if cur & LOCKED != 0 {
        return None;
    }
    s.compare_exchange(cur, cur | LOCKED, Ordering::Acquire, Ordering::Relaxed)
        .ok()
        .map(Entry)
}

/// Locks page `page`, waiting (spin, then yield) while someone else holds it. Returns the entry
/// it had. Async-signal-safe; holders never wait for anything a waiter could hold.
pub fn lock(page: usize) -> Entry {
    let mut spins = 0u32;
    loop {
        if let Some(e) = try_lock(page) {
            return e;
        }
        backoff(&mut spins);
    }
}

/// Waits until page `page` is unlocked and returns its entry then. Async-signal-safe.
pub fn wait_unlocked(page: usize) -> Entry {
    let mut spins = 0u32;
    loop {
        let e = get(page);
        if !e.locked() {
            return e;
        }
        backoff(&mut spins);
    }
}

/// Publishes `e` (unlocked) for a page this thread locked.
#[inline]
pub fn unlock(page: usize, e: Entry) {
    slot(page).store(e.unlocked().0, Ordering::Release);
}

/// Spins briefly, then yields the CPU: lock holders may be descheduled on small machines.
#[inline]
pub fn backoff(spins: &mut u32) {
    if *spins < 64 {
        *spins += 1;
        core::hint::spin_loop();
    } else {
        // SAFETY: sched_yield has no preconditions and is async-signal-safe.
        unsafe { libc::sched_yield() };
    }
}

/// Resident bytes of the entry array itself (how much memory the map costs right now).
pub fn resident_bytes() -> usize {
    let len = LEN.load(Ordering::Relaxed) * 8;
    sys::resident_bytes(MAP.load(Ordering::Acquire), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_residency_and_keep_their_use() {
        let e = Entry::host(Use::Large);
        assert_eq!(e.device(), None);
        let d = e.on_device(513, true);
        assert_eq!(d.device(), Some(513));
        assert!(d.filled() && !d.locked());
        assert_eq!(d.use_(), Use::Large);
        let h = d.on_host();
        assert_eq!(h, Entry::host(Use::Large));
        let z = Entry::host(Use::Span).on_device(0, false);
        assert_eq!(
            (z.device(), z.filled(), z.use_()),
            (Some(0), false, Use::Span)
        );
        assert!(!Entry(z.0 | LOCKED).unlocked().locked());
    }
}
