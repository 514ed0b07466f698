//! Which small objects were freed by a thread that does not own their span and are not back
//! in it yet: one bit per 8-byte granule of the managed range (the first granule of each
//! object), in a table outside the range.
//!
//! Invariant: an object's bit is set exactly while it waits in a thread's buffer of remote
//! frees or in its span's remote bitmap ([`super::span`]). [`mark`] sets it when such a free
//! is checked, and finding it set there is a double free; the merge that moves the object into
//! its span's local bitmap clears it ([`clear_taken`], a table word at a time). The owner's own
//! free reads it ([`is_marked_at`]) to catch a free of an object that another thread freed
//! already. Bits at granules where no object of the current span starts are clear (a span is
//! released only with every object back in its local bitmap).
//!
//! The table costs 1/64 of the memory in spans (one 4 KiB page of bits per 256 KiB of small
//! objects), mapped `MAP_NORESERVE` so untouched parts cost nothing: only objects freed across
//! threads ever touch it. The bits are atomics because a word covers 512 bytes: objects freed
//! by different threads share it.

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
    // `p` lies in the arena: `mark` checks it first, and `clear_taken` is called for objects
    // of a live span;
    // AtomicU64 has the layout of u64 and zero is a valid value.
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

/// Whether the bit of the object at offset `off` of the managed range is set (a plain load:
/// the owner's free, which then finds a double free).
#[inline(always)]
pub fn is_marked_at(off: usize) -> bool {
    let g = off >> 3;
    // SAFETY: as in `bit`: the caller checked `off` is inside the arena.
    let w = unsafe { &*(TABLE.load(Ordering::Relaxed) as *const AtomicU64).add(g / 64) };
    w.load(Ordering::Relaxed) & (1 << (g % 64)) != 0
}

/// Clears the bits of `objs`, objects just merged into their span's local bitmap (in
/// ascending addresses, so neighbours share a word). One atomic operation per table word that
/// has any of their bits set.
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
