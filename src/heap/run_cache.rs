//! Large runs without the page-run lock on the common path: freed runs of up to 4 MiB wait in
//! per-size slots and are handed out again as they are, warm, with a few atomic operations
//! (as jemalloc's and mimalloc's per-size caches of large blocks do). Before it, every 64 KiB
//! allocate-free pair took the page-run lock twice, searched the free runs, coalesced and read
//! the clock: 3.4× mimalloc in the allocator report.
//!
//! - Each page that heads a live large run has its length in a lock-free side table
//!   ([`set_live`]); a free takes it with one swap ([`take_live`]): zero means the pointer does
//!   not head a live run (a double free, or a pointer tieralloc did not hand out), and two
//!   racing frees of one run cannot both get it.
//! - A cached run stays a large run for the page heap (its tag and page-map entries unchanged):
//!   the heap's invariants hold with no change, and nothing but this cache can hand it out.
//! - Once devices run (`pagemap::claims_enabled`), a run enters and leaves the cache only if
//!   every page reads as the heap hands a page out (on the host, unlocked, no duplicate, no
//!   advice); one that a migration holds, or whose pages moved to a device while it waited,
//!   goes through the heap's take-back of freed pages (`heap::give_back`) instead. Before
//!   this check, nothing was cached once devices ran: a 64 KiB allocate-free pair on the host
//!   took 2.7 us instead of 14 ns in any program that had started its devices.
//! - Bounded: 4 slots per size, at most 32 MiB in all. A size unused for a whole purger period
//!   drains back to the page runs, decommitted at once, so a program that frees and sleeps
//!   gets its memory back within about one purge delay.
//!
//! Slots are atomics holding `page + 1` (0: empty): a push claims an empty slot with one CAS,
//! a pop takes a full one with one swap. No lock, so nothing to do at `fork`.

use crate::pal::sys;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// Largest cached run, in pages (4 MiB).
pub const MAX_PAGES: usize = 1024;
/// Runs kept per size.
const SLOTS: usize = 4;
/// Pages all slots may hold together (32 MiB).
const MAX_CACHED_PAGES: usize = 8192;

#[allow(clippy::declare_interior_mutable_const)] // used only to build the static arrays below
const EMPTY: AtomicU32 = AtomicU32::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const NO_SLOTS: [AtomicU32; SLOTS] = [EMPTY; SLOTS];
#[allow(clippy::declare_interior_mutable_const)]
const UNUSED: AtomicBool = AtomicBool::new(false);

/// `CACHE[n]`: freed runs of `n` pages, as `page + 1`.
static CACHE: [[AtomicU32; SLOTS]; MAX_PAGES + 1] = [NO_SLOTS; MAX_PAGES + 1];
/// `USED[n]`: size `n` was pushed or popped since the purger last looked.
static USED: [AtomicBool; MAX_PAGES + 1] = [UNUSED; MAX_PAGES + 1];
/// Pages in all slots.
static CACHED: AtomicUsize = AtomicUsize::new(0);
/// The live-length table: one `u32` per arena page (mapped at init, `MAP_NORESERVE`: only the
/// table pages of run heads are ever touched).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Maps the live-length table for `pages` arena pages. Called once by the heap's start-up.
pub fn init(pages: usize) -> bool {
    let p = sys::map_noreserve((pages * 4).next_multiple_of(sys::PAGE_SIZE));
    LIVE.store(p as usize, Ordering::Release);
    !p.is_null()
}

fn live(page: usize) -> &'static AtomicU32 {
    // SAFETY: the table covers every arena page (init), is never unmapped, and callers pass
    // page numbers of the arena; AtomicU32 has the layout of u32 and zero is a valid value.
    unsafe { &*(LIVE.load(Ordering::Relaxed) as *const AtomicU32).add(page) }
}

/// Records that page `h` heads a live large run of `n` pages (the page heap, when it hands one
/// out or resizes it).
#[inline]
pub fn set_live(h: usize, n: usize) {
    live(h).store(n as u32, Ordering::Release);
}

/// Ends the live run headed at `h` and returns its length, or 0 if `h` heads none.
#[inline]
pub fn take_live(h: usize) -> usize {
    live(h).swap(0, Ordering::AcqRel) as usize
}

/// Length of the live run headed at `h` (0: none), for the heap's walkers.
#[inline]
pub fn live_len(h: usize) -> usize {
    live(h).load(Ordering::Acquire) as usize
}

/// Keeps the freed run `[h, h+n)` (its live length already taken) for a later allocation of
/// `n` pages. False if it does not fit: the caller frees it to the page runs.
#[inline]
pub fn push(h: usize, n: usize) -> bool {
    if n > MAX_PAGES || CACHED.load(Ordering::Relaxed) + n > MAX_CACHED_PAGES {
        return false;
    }
    for s in &CACHE[n] {
        if s.load(Ordering::Relaxed) == 0
            && s.compare_exchange(0, h as u32 + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            CACHED.fetch_add(n, Ordering::Relaxed);
            if !USED[n].load(Ordering::Relaxed) {
                USED[n].store(true, Ordering::Relaxed);
            }
            return true;
        }
    }
    false
}

/// A cached run of exactly `n` pages (its first page), if there is one. The caller records it
/// live again ([`set_live`]).
#[inline]
pub fn pop(n: usize) -> Option<usize> {
    if n > MAX_PAGES || CACHED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    for s in &CACHE[n] {
        if s.load(Ordering::Relaxed) != 0 {
            let v = s.swap(0, Ordering::AcqRel);
            if v != 0 {
                CACHED.fetch_sub(n, Ordering::Relaxed);
                if !USED[n].load(Ordering::Relaxed) {
                    USED[n].store(true, Ordering::Relaxed);
                }
                return Some(v as usize - 1);
            }
        }
    }
    None
}

/// Takes the cached run of `n` pages at `h` out of its slot (for the page heap, which wants
/// its pages: a neighbour growing in place). False if it is not cached (any more).
pub fn steal(h: usize, n: usize) -> bool {
    if n > MAX_PAGES {
        return false;
    }
    for s in &CACHE[n] {
        if s.load(Ordering::Relaxed) == h as u32 + 1
            && s.compare_exchange(h as u32 + 1, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            CACHED.fetch_sub(n, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Takes the cached runs out of their slots and passes each (`page`, `n`) to `free`: every
/// run if `all`, else those of sizes nobody used since the previous call (the purger's
/// period), which are then marked unused for the next one.
pub fn drain(all: bool, mut free: impl FnMut(usize, usize)) {
    if CACHED.load(Ordering::Relaxed) == 0 {
        return;
    }
    for n in 1..=MAX_PAGES {
        if USED[n].swap(false, Ordering::Relaxed) && !all {
            continue;
        }
        for s in &CACHE[n] {
            let v = s.swap(0, Ordering::AcqRel);
            if v != 0 {
                CACHED.fetch_sub(n, Ordering::Relaxed);
                free(v as usize - 1, n);
            }
        }
    }
}

/// Pages the slots hold now.
pub fn cached_pages() -> usize {
    CACHED.load(Ordering::Relaxed)
}
