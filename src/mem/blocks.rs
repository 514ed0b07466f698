//! Per-block statistics: one record of atomic counters per 64 KiB block of the managed range.
//!
//! Devices count the kernels that touch a block (the "access counters" a real GPU keeps, so the
//! policy knows better than CPU faults which data a device uses); the fault path counts the CPU
//! faults that brought pages of the block back, and the recent ones form the thrash window.
//! The array is mapped with `MAP_NORESERVE`: untouched blocks cost nothing. Everything is an
//! atomic, so the fault path updates it without allocating or locking.

use crate::pal::sys;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Pages per block (64 KiB).
pub const BLOCK_PAGES: usize = 16;

/// The counters of one block.
#[repr(C)]
pub struct Block {
    /// Kernel launches (any device) that touched the block, saturating.
    pub device_accesses: AtomicU32,
    /// CPU faults that brought pages of the block back from a device.
    pub cpu_faults: AtomicU32,
    /// Clock reference bit: set when a device uses the block, cleared by the eviction hand.
    pub referenced: AtomicU32,
    /// CPU fault-backs since `window_start` (the thrash guard's count).
    pub bounces: AtomicU32,
    /// Start of the current thrash window, in [`now_ms`] time.
    pub window_start: AtomicU32,
    /// Until when (in [`now_ms`] time) the thrash guard keeps the block where it is.
    pub guard_until: AtomicU32,
}

static MAP: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// Length of the thrash window in ms (set by the policy).
pub static THRASH_WINDOW_MS: AtomicU32 = AtomicU32::new(1000);

/// Maps the records for an arena of `pages` pages. Returns false if the kernel refused.
pub fn init(pages: usize) -> bool {
    let n = pages.div_ceil(BLOCK_PAGES);
    let p = sys::map_noreserve((n * size_of::<Block>()).next_multiple_of(sys::PAGE_SIZE));
    if p.is_null() {
        return false;
    }
    LEN.store(n, Ordering::Relaxed);
    MAP.store(p as usize, Ordering::Release);
    true
}

/// The record of the block holding page `page`.
#[inline]
pub fn of_page(page: usize) -> &'static Block {
    let b = page / BLOCK_PAGES;
    assert!(b < LEN.load(Ordering::Relaxed), "page outside the arena");
    // SAFETY: the array covers every block of the arena (init), is never unmapped, and an
    // all-zero Block is valid (atomics).
    unsafe { &*(MAP.load(Ordering::Acquire) as *const Block).add(b) }
}

/// Milliseconds since an arbitrary start, never 0 (0 means "never"). Async-signal-safe.
pub fn now_ms() -> u32 {
    ((crate::pal::thread::now_ns() / 1_000_000) as u32).max(1)
}

/// Distinct blocks of pages `[page, page+n)`.
pub fn blocks_of(page: usize, n: usize) -> impl Iterator<Item = &'static Block> {
    (page / BLOCK_PAGES..(page + n - 1) / BLOCK_PAGES + 1).map(|b| of_page(b * BLOCK_PAGES))
}

/// A device used pages `[page, page+n)` in a kernel.
pub fn device_used(page: usize, n: usize) {
    for b in blocks_of(page, n) {
        let _ = b
            .device_accesses
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(1));
        b.referenced.store(1, Ordering::Relaxed);
    }
}

/// A CPU fault brought pages `[page, page+n)` back. Async-signal-safe.
pub fn cpu_fault(page: usize, n: usize) {
    let now = now_ms();
    let window = THRASH_WINDOW_MS.load(Ordering::Relaxed);
    for b in blocks_of(page, n) {
        let _ = b
            .cpu_faults
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(1));
        let start = b.window_start.load(Ordering::Relaxed);
        if start == 0 || now.wrapping_sub(start) > window {
            b.window_start.store(now, Ordering::Relaxed);
            b.bounces.store(1, Ordering::Relaxed);
        } else {
            b.bounces.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// CPU fault-backs of `b` in the current thrash window (0 once the window has passed).
pub fn recent_bounces(b: &Block) -> u32 {
    let start = b.window_start.load(Ordering::Relaxed);
    let window = THRASH_WINDOW_MS.load(Ordering::Relaxed);
    if start == 0 || now_ms().wrapping_sub(start) > window {
        0
    } else {
        b.bounces.load(Ordering::Relaxed)
    }
}

/// True while the thrash guard holds `b` where it is.
pub fn guarded(b: &Block) -> bool {
    let until = b.guard_until.load(Ordering::Relaxed);
    until != 0 && (until.wrapping_sub(now_ms()) as i32) > 0
}

/// Resets the counters of blocks wholly inside `[page, page+n)` (memory handed out afresh).
pub fn reset(page: usize, n: usize) {
    let first = page.div_ceil(BLOCK_PAGES);
    let end = (page + n) / BLOCK_PAGES;
    for b in first..end {
        let r = of_page(b * BLOCK_PAGES);
        for f in [
            &r.device_accesses,
            &r.cpu_faults,
            &r.referenced,
            &r.bounces,
            &r.window_start,
            &r.guard_until,
        ] {
            if f.load(Ordering::Relaxed) != 0 {
                f.store(0, Ordering::Relaxed);
            }
        }
    }
}
