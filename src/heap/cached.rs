//! Which small objects are freed: one bit per 8-byte granule of the managed range (the first
//! granule of each object), in a table outside the range.
//!
//! Invariant: the bit of an object that is handed out (live) is clear, or the object is owed
//! ([`super::owed`]: the one object each thread cache may hand out with its bit still set).
//! Freeing sets it ([`mark`]: a thread cache's `free`, or [`super::span::flush`] for an object
//! freed straight to its span); handing the object out again clears it: popping a freed object
//! from a thread cache ([`clear`], unless the cache owes it), or taking objects from their spans
//! ([`clear_taken`], a table word at a time). A free that finds the bit set is a double free
//! unless the object is owed, caught whether the first free left the object in a thread cache
//! or already back in its span. Bits at granules where no object
//! of the current span starts mean nothing (left over from a span of another class).
//!
//! Leaving the bit set while an object waits in its span is what keeps this cheap: returning
//! a thread cache's objects to their spans touches no bit, and a refill clears the bits of up
//! to 64 objects with one atomic operation (16-byte objects: 32 to a word). Before, both
//! took one atomic per object: a batch of 100k 16-byte objects spent about a quarter of its
//! time in the flush that cleared them.
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

/// Marks `p` as freed; false if it already was (a double free). Aborts on a pointer outside the
/// managed range.
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

/// Clears the bits of `objs`, objects just taken from their spans to be handed out (in the
/// order a refill takes them: ascending addresses, so neighbours share a word). One atomic
/// operation per table word that has any of their bits set; none for objects of a span that
/// never gave an object back.
pub fn clear_taken(objs: &[*mut u8]) {
    let mut i = 0;
    while i < objs.len() {
        let (w, mut mask) = bit(objs[i]);
        i += 1;
        while i < objs.len() {
            let (w2, b) = bit(objs[i]);
            if !core::ptr::eq(w, w2) {
                break;
            }
            mask |= b;
            i += 1;
        }
        if w.load(Ordering::Relaxed) & mask != 0 {
            w.fetch_and(!mask, Ordering::Relaxed);
        }
    }
}

/// Keeps the invariant for an object returned to its span (`span::flush`): one that went
/// through a thread cache is marked already (the plain load spares the atomic operation), one
/// freed straight to its span is marked now. The span's bitmap decides about double frees
/// there.
#[inline(always)]
pub fn mark_returned(p: *mut u8) {
    let (w, b) = bit(p);
    if w.load(Ordering::Relaxed) & b == 0 {
        w.fetch_or(b, Ordering::Relaxed);
    }
}
