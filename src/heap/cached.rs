//! Which small objects sit freed in a thread cache: one bit per 8-byte granule of the managed
//! range (the first granule of each object), in a table outside the range.
//!
//! Invariant: an object's bit is set exactly while it is on some thread cache's stack because
//! it was freed there ([`super::tcache::free`] sets it, popping it for an allocation or flushing
//! it to its span clears it). A second free of an object whose bit is set is a double free: it
//! is refused before the cache could hand the same block out twice. Objects in span bitmaps
//! have the bit clear; the span's bitmap catches a double free of those ([`super::span::flush`]).
//!
//! The table costs 1/64 of the memory in spans (one 4 KiB page of bits per 256 KiB of small
//! objects), mapped `MAP_NORESERVE` so untouched parts cost nothing. The bits are atomics
//! because a word covers 512 bytes: objects of different threads share it.

use crate::mem::arena;

use crate::pal::sys;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static TABLE: AtomicUsize = AtomicUsize::new(0);

/// Maps the table for an arena of `pages` pages. Called once by the heap's initialisation.
pub fn init(pages: usize) -> bool {
    let granules = pages * (sys::PAGE_SIZE / 8);
    let p = sys::map_noreserve((granules / 8).next_multiple_of(sys::PAGE_SIZE));
    if p.is_null() {
        return false;
    }
    TABLE.store(p as usize, Ordering::Release);
    true
}

/// The word and bit of the object at `p` (an address of the managed range).
#[inline(always)]
fn bit(p: *mut u8) -> (&'static AtomicU64, u64) {
    let g = (p as usize - arena::base()) >> 3;
    // SAFETY: the table has a bit for every granule of the arena (init) and is never unmapped;
    // `p` lies in the arena: `mark` checks it before an object enters a cache, and `clear` is
    // called only for objects that were in a cache or that `span::flush` checked; AtomicU64
    // has the layout of u64 and zero is a valid value.
    let w = unsafe { &*(TABLE.load(Ordering::Relaxed) as *const AtomicU64).add(g / 64) };
    (w, 1 << (g % 64))
}

/// Marks `p` as freed into a thread cache; false if it already was (a double free). Aborts on
/// a pointer outside the managed range.
#[inline(always)]
pub fn mark(p: *mut u8) -> bool {
    if !arena::contains(p as usize) {
        sys::fatal("free of a pointer that tieralloc did not allocate");
    }
    let (w, b) = bit(p);
    w.fetch_or(b, Ordering::Relaxed) & b == 0
}

/// Clears `p`'s mark: it leaves the thread cache (handed out, or flushed to its span).
#[inline(always)]
pub fn clear(p: *mut u8) {
    let (w, b) = bit(p);
    w.fetch_and(!b, Ordering::Relaxed);
}

/// [`clear`] for an object that may not be marked (flushed from the clean part of a stack, or
/// straight to its span): the plain load spares the atomic operation when the bit is clear.
/// Only this thread sets or clears `p`'s own bit while it holds `p`, so the load is exact.
#[inline(always)]
pub fn clear_if_set(p: *mut u8) {
    let (w, b) = bit(p);
    if w.load(Ordering::Relaxed) & b != 0 {
        w.fetch_and(!b, Ordering::Relaxed);
    }
}
