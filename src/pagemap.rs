//! The page map: one atomic 64-bit entry per page of the managed range.
//!
//! The map is a flat array indexed by page number, mapped with `MAP_NORESERVE` so that only the
//! entries of pages in use cost memory (8 bytes per 4 KiB page, 0.2%). Entries are atomics
//! because, once migration exists, fault handlers read them without taking any lock.
//!
//! Entry layout (bits):
//! - `0..2`  [`Use`]: free, part of a small-object span, or part of a large run.
//! - `2..4`  residency: host (the only one until the migration layer lands).
//! - `8..24` reserved for the device id, `32..64` for access counters.

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

/// Sets the entries of pages `[page, page+n)` to `e`.
pub fn set_range(page: usize, n: usize, e: Entry) {
    for p in page..page + n {
        slot(p).store(e.0, Ordering::Release);
    }
}

/// Resident bytes of the entry array itself (how much memory the map costs right now).
pub fn resident_bytes() -> usize {
    let len = LEN.load(Ordering::Relaxed) * 8;
    sys::resident_bytes(MAP.load(Ordering::Acquire), len)
}
