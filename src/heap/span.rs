//! Spans: 64 KiB runs of pages holding objects of one size class, and the per-class bins that
//! hand their objects to thread caches in batches.
//!
//! Each span's free objects are a bitmap (bit set = object free) kept outside the managed range,
//! so allocating and freeing never read or write the objects' own memory: a span's pages may sit
//! on a device while the heap carries on. Span descriptors live in a side table indexed by
//! `(addr - arena base) >> 16`; spans are 64 KiB-aligned, so the index is exact.
//!
//! Spans are segregated by tier (`crate::tiering::placement`): each tier has its own bins, a span's
//! pages hold objects of one tier only, and the spans of a device tier are created on that
//! device. The tier of each span slot is also kept in a lock-free side table ([`tier_of`]) so
//! `free` can find the right bin without touching the object.
//!
//! Spans have no owning thread. A bin (one per tier and class, behind a lock) holds the span currently
//! being carved and a list of partially free spans. Thread caches take objects out in batches
//! ([`refill`]) and give freed ones back in batches ([`flush`]), whichever thread allocated them:
//! a cross-thread free costs a push into the freeing thread's cache, and a share of one locked
//! batch. A span whose objects are all free is returned to the page heap.

use super::meta;
use super::pages::PAGES;
use super::size_class::{self, NCLASSES, SPAN_SHIFT, SPAN_SIZE};
use super::Hooks;
use crate::mem::arena;
use crate::mem::pagemap::Use;
use crate::mem::scope::{self, TierIndex, NTIERS};
use crate::pal::lock::Lock;
use crate::pal::sys;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

const NIL: u32 = u32::MAX;
const PAGES_PER_SPAN: usize = SPAN_SIZE / sys::PAGE_SIZE;

/// Where a span is in its bin's life cycle.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// The slot describes no span.
    Unused = 0,
    /// The bin carves objects from it.
    Current = 1,
    /// Some objects free; on the bin's partial list.
    Partial = 2,
    /// No free objects; on no list (a free moves it to Partial).
    Full = 3,
}

/// Descriptor of one span, in the side table.
#[repr(C)]
struct Span {
    /// Free bitmap outside the managed range: bit `i` set means object `i` is free.
    bitmap: *mut u64,
    /// Next span index on the bin's partial list.
    next: u32,
    /// Previous span index on the bin's partial list.
    prev: u32,
    /// Free objects.
    nfree: u32,
    /// First bitmap word that may have a set bit.
    hint: u16,
    /// Size class.
    class: u8,
    /// Life-cycle state.
    state: State,
}

/// Per-class state, behind the class's lock.
struct Bin {
    /// Span being carved, or NIL.
    current: u32,
    /// Head of the partial list.
    partial: u32,
    /// Recycled bitmaps of this class's size (linked through their first word).
    spare_bitmaps: *mut u64,
    /// Live spans of this class.
    spans: usize,
}

// SAFETY: the raw pointers refer to process-wide metadata that is only touched under the lock.
unsafe impl Send for Bin {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_BIN: Lock<Bin> = Lock::new(Bin {
    current: NIL,
    partial: NIL,
    spare_bitmaps: core::ptr::null_mut(),
    spans: 0,
});
#[allow(clippy::declare_interior_mutable_const)]
const TIER_BINS: [Lock<Bin>; NCLASSES] = [EMPTY_BIN; NCLASSES];
/// Bins by tier index (0 = host, 1 + d = device d), then size class.
static BINS: [[Lock<Bin>; NCLASSES]; NTIERS] = [TIER_BINS; NTIERS];

static TABLE: AtomicUsize = AtomicUsize::new(0);
static TABLE_LEN: AtomicUsize = AtomicUsize::new(0);
/// Side table: the tier index of each span slot, one byte per slot. Written when a span is
/// created (before any of its objects is handed out), read without a lock by `free`.
static TIERS: AtomicUsize = AtomicUsize::new(0);
/// Side table: 1 + the size class of each live span slot, 0 for a slot with no span. Written by
/// the owning bin under its lock; read by [`flush`] under another bin's lock to refuse a
/// pointer of another bin before it forms a reference to that bin's descriptor.
static CLASSES: AtomicUsize = AtomicUsize::new(0);

/// Maps the span descriptor table for an arena of `pages` pages.
pub fn init(pages: usize) -> bool {
    let n = pages / PAGES_PER_SPAN;
    let bytes = (n * core::mem::size_of::<Span>()).next_multiple_of(sys::PAGE_SIZE);
    let p = sys::map_noreserve(bytes);
    let tiers = sys::map_noreserve(n.next_multiple_of(sys::PAGE_SIZE));
    let classes = sys::map_noreserve(n.next_multiple_of(sys::PAGE_SIZE));
    if p.is_null() || tiers.is_null() || classes.is_null() {
        return false;
    }
    CLASSES.store(classes as usize, Ordering::Release);
    TABLE_LEN.store(n, Ordering::Relaxed);
    TIERS.store(tiers as usize, Ordering::Release);
    TABLE.store(p as usize, Ordering::Release);
    true
}

/// The class side-table byte of span slot `si`.
#[inline]
fn class_slot(si: usize) -> &'static AtomicU8 {
    debug_assert!(si < TABLE_LEN.load(Ordering::Relaxed));
    // SAFETY: as for `tier_slot`, for the class table.
    unsafe { &*(CLASSES.load(Ordering::Acquire) as *const AtomicU8).add(si) }
}

/// The side-table byte of span slot `si`.
#[inline]
fn tier_slot(si: usize) -> &'static AtomicU8 {
    debug_assert!(si < TABLE_LEN.load(Ordering::Relaxed));
    // SAFETY: the table has one byte per span slot of the arena (init) and is never unmapped;
    // AtomicU8 has the layout of u8 and zero (the host) is valid.
    unsafe { &*(TIERS.load(Ordering::Acquire) as *const AtomicU8).add(si) }
}

/// Set once a span of a device tier exists: until then every span is the host's and `free`
/// skips the side-table lookup.
static ANY_TIERED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The tier index of the span holding small object `p` (0 for pointers outside the range:
/// `flush` rejects those).
#[inline(always)]
pub fn tier_of(p: *mut u8) -> TierIndex {
    if !ANY_TIERED.load(Ordering::Relaxed) {
        return 0;
    }
    let addr = p as usize;
    if !arena::contains(addr) {
        return 0;
    }
    tier_slot((addr - arena::base()) >> SPAN_SHIFT).load(Ordering::Relaxed)
}

/// The size class of the live span holding address `addr` of the managed range, or `None` if
/// no span covers it (a page run, or free pages). Lock-free: read from the class side table.
#[inline]
pub fn class_at(addr: usize) -> Option<usize> {
    debug_assert!(arena::contains(addr));
    let class = class_slot((addr - arena::base()) >> SPAN_SHIFT).load(Ordering::Acquire);
    (class != 0).then(|| class as usize - 1)
}

/// The descriptor of span `si`.
///
/// # Safety
/// The caller holds the lock of the bin that owns the span (or the slot is unused and about to
/// be claimed under that lock), so no other reference to the descriptor exists.
#[allow(clippy::mut_from_ref)]
unsafe fn span(_bin: &mut Bin, si: u32) -> &mut Span {
    debug_assert!((si as usize) < TABLE_LEN.load(Ordering::Relaxed));
    // SAFETY: the table covers every span slot of the arena and is never unmapped; exclusivity
    // is the caller's contract.
    unsafe { &mut *(TABLE.load(Ordering::Acquire) as *mut Span).add(si as usize) }
}

fn words(c: usize) -> usize {
    size_class::objects_per_span(c).div_ceil(64)
}

fn span_addr(si: u32) -> usize {
    arena::base() + ((si as usize) << SPAN_SHIFT)
}

/// Fills `out` with free objects of class `c` on tier `t`; returns how many (fewer only when out
/// of memory).
pub fn refill<H: Hooks>(t: TierIndex, c: usize, out: &mut [*mut u8]) -> usize {
    let mut bin = BINS[t as usize][c].lock();
    let size = size_class::size_of(c);
    let mut got = 0;
    while got < out.len() {
        if bin.current == NIL {
            let si = if bin.partial != NIL {
                let si = bin.partial;
                unlink(&mut bin, si);
                si
            } else {
                // A fresh span's pages are handed out and placed with the bin unlocked:
                // placing them on a full device may evict, which waits for page locks.
                drop(bin);
                let page = fresh_pages::<H>(t);
                bin = BINS[t as usize][c].lock();
                let Some(page) = page else { break };
                let Some(si) = install(&mut bin, page, t, c) else {
                    drop(bin);
                    super::give_back::<H>(page, PAGES_PER_SPAN, |h| {
                        h.free_span(page, PAGES_PER_SPAN)
                    });
                    super::cached::clear_taken(&out[..got]);
                    return got;
                };
                if bin.current != NIL {
                    // Another thread gave the bin a span meanwhile: keep ours for later.
                    push_partial(&mut bin, si);
                    continue;
                }
                si
            };
            // SAFETY: we hold the bin lock and the span belongs to this bin.
            unsafe { span(&mut bin, si) }.state = State::Current;
            bin.current = si;
        }
        let si = bin.current;
        let base = span_addr(si);
        // SAFETY: as above.
        let sp = unsafe { span(&mut bin, si) };
        let nwords = words(c);
        let mut w = sp.hint as usize;
        while got < out.len() && w < nwords {
            // SAFETY: the bitmap has `nwords` words (new_span) and is only touched under the lock.
            let word = unsafe { &mut *sp.bitmap.add(w) };
            while *word != 0 && got < out.len() {
                let i = word.trailing_zeros() as usize;
                *word &= *word - 1;
                out[got] = (base + (w * 64 + i) * size) as *mut u8;
                got += 1;
                sp.nfree -= 1;
            }
            if *word == 0 {
                w += 1;
            }
        }
        sp.hint = w as u16;
        if sp.nfree == 0 {
            sp.state = State::Full;
            bin.current = NIL;
        }
    }
    drop(bin);
    // They are handed out: their freed bits go (the objects are ours alone now).
    super::cached::clear_taken(&out[..got]);
    got
}

/// Returns objects of class `c` to their spans. Aborts with a message on a pointer that is not
/// a live object of class `c` (double free, wrong layout, foreign pointer): carrying on would
/// hand the same memory out twice.
pub fn flush<H: Hooks>(t: TierIndex, c: usize, ptrs: &[*mut u8]) {
    // Spans that became free; their pages go back after the bin lock is released (taking
    // pages back may wait for page locks, never under a heap lock).
    let mut released = [0usize; 16];
    let mut nreleased = 0;
    for chunk in ptrs.chunks(released.len()) {
        {
            let mut bin = BINS[t as usize][c].lock();
            for &p in chunk {
                if let Some(page) = flush_one(&mut bin, t, c, p) {
                    released[nreleased] = page;
                    nreleased += 1;
                }
            }
        }
        for &page in &released[..nreleased] {
            super::give_back::<H>(page, PAGES_PER_SPAN, |h| h.free_span(page, PAGES_PER_SPAN));
        }
        nreleased = 0;
    }
}

/// Returns object `p` of class `c` to its span (bin lock held); the first page of the span if
/// that made it free and the bin let it go.
fn flush_one(bin: &mut Bin, t: TierIndex, c: usize, p: *mut u8) -> Option<usize> {
    let size = size_class::size_of(c);
    let addr = p as usize;
    if !arena::contains(addr) {
        sys::fatal("free of a pointer that tieralloc did not allocate");
    }
    let si = ((addr - arena::base()) >> SPAN_SHIFT) as u32;
    let off = addr & (SPAN_SIZE - 1);
    // The slot must belong to this bin (its class and tier, read from the atomic side
    // tables) before its descriptor is touched: another bin's descriptor is guarded by
    // that bin's lock, not ours.
    if class_slot(si as usize).load(Ordering::Acquire) as usize != c + 1
        || tier_slot(si as usize).load(Ordering::Relaxed) != t
    {
        sys::fatal("free of a pointer that is not a live object of this size (wrong layout or double free)");
    }
    // SAFETY: bin lock held, and the slot is a live span of this bin (checked above; its
    // class entry only changes under this bin's lock).
    let sp = unsafe { span(bin, si) };
    debug_assert!(sp.state != State::Unused && sp.class as usize == c);
    let i = size_class::index_of(c, off);
    if i * size != off || i >= size_class::objects_per_span(c) {
        sys::fatal("free of a pointer into the middle of an object");
    }
    // SAFETY: `i / 64 < words(c)`; the bitmap is ours under the lock.
    let word = unsafe { &mut *sp.bitmap.add(i / 64) };
    let bit = 1u64 << (i % 64);
    if *word & bit != 0 {
        sys::fatal("double free detected");
    }
    *word |= bit;
    super::cached::mark_returned(p);
    sp.hint = sp.hint.min((i / 64) as u16);
    sp.nfree += 1;
    let (state, nfree) = (sp.state, sp.nfree as usize);
    if state == State::Full {
        push_partial(bin, si);
    } else if state == State::Partial && nfree == size_class::objects_per_span(c) {
        unlink(bin, si);
        if bin.current == NIL {
            // SAFETY: bin lock held.
            unsafe { span(bin, si) }.state = State::Current;
            bin.current = si;
        } else {
            return Some(release_span(bin, si));
        }
    }
    None
}

fn push_partial(bin: &mut Bin, si: u32) {
    let head = bin.partial;
    {
        // SAFETY: bin lock held (the `&mut Bin` proves it).
        let sp = unsafe { span(bin, si) };
        sp.state = State::Partial;
        sp.next = head;
        sp.prev = NIL;
    }
    if head != NIL {
        // SAFETY: as above.
        unsafe { span(bin, head) }.prev = si;
    }
    bin.partial = si;
}

fn unlink(bin: &mut Bin, si: u32) {
    // SAFETY: bin lock held.
    let (next, prev) = {
        let sp = unsafe { span(bin, si) };
        (sp.next, sp.prev)
    };
    if prev != NIL {
        // SAFETY: bin lock held.
        unsafe { span(bin, prev) }.next = next;
    } else {
        bin.partial = next;
    }
    if next != NIL {
        // SAFETY: bin lock held.
        unsafe { span(bin, next) }.prev = prev;
    }
}

/// Hands out a fresh span's pages for tier `t` and, for a device tier, creates them on the
/// device (on failure they serve from host pages, still tier `t`'s). No bin lock is held.
fn fresh_pages<H: Hooks>(t: TierIndex) -> Option<usize> {
    let (page, _) = PAGES.lock().alloc(PAGES_PER_SPAN, SPAN_SIZE, Use::Span)?;
    if t != 0 {
        ANY_TIERED.store(true, Ordering::Relaxed);
    }
    if t != 0 && t != scope::INTERNAL {
        H::place_fresh(page, PAGES_PER_SPAN, t as u16 - 1);
    }
    Some(page)
}

/// Makes the fresh pages at `page` a span of class `c` in `bin` (tier `t`); `None` if no
/// bitmap could be had (the caller gives the pages back).
fn install(bin: &mut Bin, page: usize, t: TierIndex, c: usize) -> Option<u32> {
    let nwords = words(c);
    let bitmap = if bin.spare_bitmaps.is_null() {
        let b = meta::alloc(nwords * 8);
        if b.is_null() {
            return None;
        }
        b
    } else {
        let b = bin.spare_bitmaps;
        // SAFETY: spare bitmaps are linked through their first word (release_span).
        bin.spare_bitmaps = unsafe { *b } as *mut u64;
        b
    };
    let nobj = size_class::objects_per_span(c);
    for w in 0..nwords {
        let bits = (nobj - w * 64).min(64);
        let v = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        // SAFETY: `w < nwords`, the bitmap's length.
        unsafe { *bitmap.add(w) = v };
    }
    let si = (page / PAGES_PER_SPAN) as u32;
    tier_slot(si as usize).store(t, Ordering::Relaxed);
    // SAFETY: the slot was Unused (its pages were free) and we hold the bin lock that now owns it.
    let sp = unsafe { span(bin, si) };
    *sp = Span {
        bitmap,
        next: NIL,
        prev: NIL,
        nfree: nobj as u32,
        hint: 0,
        class: c as u8,
        state: State::Current,
    };
    class_slot(si as usize).store(c as u8 + 1, Ordering::Release);
    bin.spans += 1;
    Some(si)
}

/// Takes span `si` (free, on no list) out of its bin; returns its first page, which the
/// caller gives back to the page runs once the bin lock is released.
fn release_span(bin: &mut Bin, si: u32) -> usize {
    // SAFETY: bin lock held; the span is on no list.
    let sp = unsafe { span(bin, si) };
    let bitmap = sp.bitmap;
    sp.state = State::Unused;
    class_slot(si as usize).store(0, Ordering::Release);
    sp.bitmap = core::ptr::null_mut();
    // SAFETY: the bitmap is ours; link it into the spare list through its first word.
    unsafe { *bitmap = bin.spare_bitmaps as u64 };
    bin.spare_bitmaps = bitmap;
    bin.spans -= 1;
    si as usize * PAGES_PER_SPAN
}

/// Live spans over all classes.
pub fn live_spans() -> usize {
    BINS.iter().flatten().map(|b| b.lock().spans).sum()
}

/// Resident bytes of the span descriptor table.
pub fn table_resident_bytes() -> usize {
    sys::resident_bytes(
        TABLE.load(Ordering::Acquire),
        TABLE_LEN.load(Ordering::Relaxed) * core::mem::size_of::<Span>(),
    )
}

/// Takes every bin lock (fork preparation), in class order.
pub fn lock_for_fork() {
    for b in BINS.iter().flatten() {
        b.lock_for_fork();
    }
}

/// Releases the locks taken by [`lock_for_fork`].
///
/// # Safety
/// Only from the fork handlers, after [`lock_for_fork`].
pub unsafe fn unlock_after_fork() {
    for b in BINS.iter().flatten() {
        // SAFETY: forwarded contract.
        unsafe { b.unlock_after_fork() };
    }
}

/// The spans' invariants, for every span slot below page `top` and every bin:
/// - a slot whose class entry is 0 describes no span (`Unused`); otherwise its descriptor's
///   class is the entry minus one, its state is `Current`, `Partial` or `Full`, and its pages
///   read `Span` in the page map;
/// - `nfree` == the bits set in its bitmap; no bit is set past the last object or in a word
///   before `hint`; `Full` ⇒ `nfree == 0`; `Partial` ⇒ `nfree > 0`;
/// - each bin's `spans` == the live slots of its tier and class; its `current` is a `Current`
///   span of its own; its partial list holds `Partial` spans of its own, linked both ways.
///
/// # Safety
/// The caller holds every bin lock ([`lock_for_fork`]).
pub(super) unsafe fn check_locked(top: usize) -> Result<(), super::check::Invalid> {
    use super::check::ensure;
    let mut live = [[0usize; NCLASSES]; NTIERS];
    let table = TABLE.load(Ordering::Acquire) as *mut Span;
    let slots = (top / PAGES_PER_SPAN).min(TABLE_LEN.load(Ordering::Relaxed));
    for si in 0..slots {
        // SAFETY: the table covers every slot; every bin lock is held (caller's contract).
        let sp = unsafe { &*table.add(si) };
        let class = class_slot(si).load(Ordering::Acquire) as usize;
        if class == 0 {
            ensure(
                sp.state == State::Unused,
                "a slot with no class is Unused",
                si,
            )?;
            continue;
        }
        let c = class - 1;
        let t = tier_slot(si).load(Ordering::Relaxed) as usize;
        ensure(
            c < NCLASSES && t < NTIERS,
            "a live slot's class and tier exist",
            si,
        )?;
        ensure(
            sp.class as usize == c,
            "a live span's class matches its slot",
            si,
        )?;
        ensure(sp.state != State::Unused, "a live span is not Unused", si)?;
        let page = si * PAGES_PER_SPAN;
        super::check::all_read(
            page..page + PAGES_PER_SPAN,
            Use::Span,
            "a live span's pages read Span",
        )?;
        let nobj = size_class::objects_per_span(c);
        let mut set = 0;
        for w in 0..words(c) {
            // SAFETY: the bitmap has words(c) words (install).
            let word = unsafe { *sp.bitmap.add(w) };
            set += word.count_ones() as usize;
            let past = (w * 64 + 64).saturating_sub(nobj).min(64);
            ensure(
                past == 0 || word >> (64 - past) == 0,
                "no bit is set past the last object",
                si,
            )?;
            ensure(
                w >= sp.hint as usize || word == 0,
                "no bit is set before hint",
                si,
            )?;
        }
        ensure(
            sp.nfree as usize == set,
            "nfree == the bits set in the bitmap",
            si,
        )?;
        ensure(set <= nobj, "nfree <= objects per span", si)?;
        match sp.state {
            State::Full => ensure(set == 0, "a Full span has no free object", si)?,
            // All free is allowed: a fresh span another thread's refill did not need waits
            // on the partial list (`refill`), whole.
            State::Partial => ensure(set > 0, "a Partial span has a free object", si)?,
            _ => {}
        }
        live[t][c] += 1;
    }
    for (t, tier) in BINS.iter().enumerate() {
        for (c, lock) in tier.iter().enumerate() {
            // SAFETY: every bin lock is held by this thread (caller's contract).
            let bin = unsafe { lock.held_value() };
            ensure(
                bin.spans == live[t][c],
                "a bin's spans == its live slots",
                t * 256 + c,
            )?;
            let mine = |si: u32| {
                class_slot(si as usize).load(Ordering::Relaxed) as usize == c + 1
                    && tier_slot(si as usize).load(Ordering::Relaxed) as usize == t
            };
            if bin.current != NIL {
                // SAFETY: as above.
                let sp = unsafe { &*table.add(bin.current as usize) };
                ensure(
                    mine(bin.current) && sp.state == State::Current,
                    "a bin's current span is its own and Current",
                    bin.current as usize,
                )?;
            }
            let (mut si, mut prev, mut n) = (bin.partial, NIL, 0);
            while si != NIL {
                // SAFETY: as above.
                let sp = unsafe { &*table.add(si as usize) };
                ensure(
                    mine(si) && sp.state == State::Partial,
                    "a partial list holds Partial spans of its bin",
                    si as usize,
                )?;
                ensure(
                    sp.prev == prev,
                    "a partial span links back to its predecessor",
                    si as usize,
                )?;
                n += 1;
                ensure(n <= bin.spans, "a partial list has no cycle", si as usize)?;
                prev = si;
                si = sp.next;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walker_finds_a_bitmap_that_disagrees_with_its_count() {
        let c = size_class::class_of(48, 8).unwrap();
        // The live object's bit says "free" although nfree does not count it.
        let broken = crate::heap::check::testing::broken_by(48, |p| {
            let si = ((p as usize - arena::base()) >> SPAN_SHIFT) as u32;
            let i = size_class::index_of(c, p as usize & (SPAN_SIZE - 1));
            let mut bin = BINS[0][c].lock();
            // SAFETY: bin lock held; the span is this bin's (p was allocated from it).
            let sp = unsafe { span(&mut bin, si) };
            // SAFETY: i / 64 < words(c).
            unsafe { *sp.bitmap.add(i / 64) ^= 1 << (i % 64) };
        });
        assert_eq!(broken, Err("nfree == the bits set in the bitmap"));
    }
}
