//! Spans: 64 or 128 KiB runs of pages holding objects of one size class, each owned by the
//! thread heap that allocates from it ([`super::owned`]), and the per-class bins that keep the
//! spans no heap owns.
//!
//! Each span has two free bitmaps outside the managed range, so allocating and freeing never
//! read or write the objects' own memory (a span's pages may sit on a device while the heap
//! carries on):
//! - the **local** bitmap (bit set = object free): its owner allocates from it and frees its own
//!   objects into it with plain loads and stores, no lock and no locked instruction;
//! - the **remote** bitmap: objects freed by other threads, written only under the bin lock
//!   ([`flush`], in batches from the freeing thread's buffer). The owner merges it into the
//!   local one ([`merge`]) when it runs out of objects: a span that receives a remote free is
//!   put on its owner's [`Pending`] list for that.
//!
//! A span no heap owns (its heap's thread exited, or switched tiers) waits in its bin: on the
//! partial list if it has free objects (local or remote), on no list if not. The next heap that
//! needs a span of that tier and class adopts it (merging its remote frees); a remote free that
//! completes an unowned span gives its pages back at once.
//!
//! Who writes which field of a descriptor (all fields are atomics, read and written with
//! relaxed loads and stores; the lock's acquire and release order them where ownership changes
//! hands):
//! - `owner`, `rfree`, `rnext`, `queued`, the remote bitmap: under the bin lock;
//! - `bits` and `class`: when the span is installed or released, under the bin lock;
//! - `nfree`, `hint`, `state`, `next`, `prev` and the local bitmap: the owner without a lock
//!   while the span is owned, else under the bin lock. Other threads only read the local bitmap,
//!   to catch a free of an object that is free already. The owner does not count `nfree` while
//!   the span is its current one (allocating from it then touches only the bitmap and
//!   `hint`): it counts the bitmap when the span stops being current ([`recount`]).
//!
//! Descriptors live in a side table indexed by slot, `(addr - arena base) >> 16`: a span is
//! one 64 KiB slot or two ([`size_class::span_slots`]), aligned to its size, and its descriptor
//! is its first slot's (`slot & !(slots - 1)`); the class and tier side tables have the
//! span's entry in each of its slots, so any address of it finds them. Spans are segregated by
//! tier (`crate::tiering::placement`): each tier has its own bins, a span's pages hold objects
//! of one tier only, and the spans of a device tier are created on that device. The tier of
//! each span slot is also kept in a lock-free side table ([`tier_of`]) so `free` can find the
//! right bin without touching the object.

use super::meta;
use super::pages::PAGES;
use super::size_class::{self, NCLASSES, SLOT_SHIFT, SLOT_SIZE};
use super::{cached, Hooks};
use crate::mem::arena;
use crate::mem::counters::COUNTERS;
use crate::mem::pagemap::Use;
use crate::mem::scope::{self, TierIndex, NTIERS};
use crate::pal::lock::Lock;
use crate::pal::sys;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

pub(super) const PAGES_PER_SLOT: usize = SLOT_SIZE / sys::PAGE_SIZE;

/// Pages of a span of class `c`.
#[inline(always)]
pub(super) fn span_pages(c: usize) -> usize {
    size_class::span_size(c) / sys::PAGE_SIZE
}

/// Gives the pages of a released span of class `c`, from page `page`, back to the page runs
/// (no bin lock held).
pub(super) fn give_back_span<H: Hooks>(page: usize, c: usize) {
    let n = span_pages(c);
    super::give_back::<H>(page, n, |h| h.free_span(page, n));
}

/// The first slot of the span of class `c` that covers slot `si`.
#[inline(always)]
pub(super) fn head_slot(si: u32, c: usize) -> u32 {
    si & !(size_class::span_slots(c) as u32 - 1)
}

/// A link to a span: its index plus one, 0 for none (so all-zero memory is an empty list).
pub(super) type Link = u32;

/// The link to span `si`.
#[inline(always)]
pub(super) fn link(si: u32) -> Link {
    si + 1
}

/// The span a link names, if any.
#[inline(always)]
pub(super) fn linked(l: Link) -> Option<u32> {
    l.checked_sub(1)
}

/// Where a span is in its life cycle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(super) enum State {
    /// The slot describes no span.
    Unused = 0,
    /// Owned: the span its heap allocates from now.
    Current = 1,
    /// Owned: has local free objects; on its heap's avail list.
    Avail = 2,
    /// Owned: no local free object; on its heap's full list.
    Full = 3,
    /// Unowned, with free objects (local or remote): on its bin's partial list.
    Partial = 4,
    /// Unowned, no free object: on no list.
    Idle = 5,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Current,
            2 => State::Avail,
            3 => State::Full,
            4 => State::Partial,
            5 => State::Idle,
            _ => State::Unused,
        }
    }
}

/// Descriptor of one span, in the side table. All zeroes is an unused slot.
///
/// One cache line each: neighbouring spans are often owned by different threads, whose
/// frees write their descriptors without a lock. At 40 bytes (two descriptors to some lines)
/// the two-thread churn workload took 17 ns a replacement instead of 12 (2026-12-02).
#[repr(C, align(64))]
pub(super) struct Span {
    /// The local bitmap, `words(class)` words outside the managed range. Bit `i` set: object
    /// `i` is free.
    pub bits: AtomicPtr<AtomicU64>,
    /// The remote bitmap, as many words; null until another thread first frees an object of
    /// the span (most spans never see one: a second bitmap for every span took metadata for
    /// 1M live 32-byte objects from 0.75% to 1.22%, over the 1% target).
    rbits: AtomicPtr<AtomicU64>,
    /// The heap that owns the span ([`register`]), 0 for none.
    pub owner: AtomicU32,
    /// Next span on the list the span is on (its heap's avail or full list, or its bin's
    /// partial list).
    pub next: AtomicU32,
    /// Previous span on that list.
    pub prev: AtomicU32,
    /// Objects free in the local bitmap (not kept while the span is `Current`).
    pub nfree: AtomicU32,
    /// Objects free in the remote bitmap.
    pub rfree: AtomicU32,
    /// Next span on its owner's pending list.
    pub rnext: AtomicU32,
    /// First local bitmap word that may have a set bit.
    pub hint: AtomicU16,
    /// Size class.
    pub class: AtomicU8,
    /// [`State`].
    pub state: AtomicU8,
    /// On its owner's pending list.
    pub queued: AtomicBool,
    /// Set by the first free of one of its objects by a thread that does not own it (reset
    /// when it is installed): until then its owner's frees need not look at the freed bits.
    pub remote_seen: AtomicBool,
}

impl Span {
    #[inline(always)]
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }
    /// Whether the span is its owner's current one: one compare (the `match` of
    /// [`Span::state`] took six instructions on the free's path).
    #[inline(always)]
    pub fn is_current(&self) -> bool {
        self.state.load(Ordering::Relaxed) == State::Current as u8
    }
    #[inline(always)]
    pub fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Relaxed)
    }
    /// Word `w` of the local bitmap (`w < words(class)`).
    #[inline(always)]
    pub fn local(&self, w: usize) -> &AtomicU64 {
        // SAFETY: `bits` has words(class) words for a live span (install) and metadata memory
        // is never unmapped; callers pass `w < words(class)`.
        unsafe { &*self.bits.load(Ordering::Relaxed).add(w) }
    }
    /// Word `w` of the remote bitmap (`w < words(class)`), once it exists ([`remote_bits`]).
    #[inline(always)]
    fn remote(&self, w: usize) -> &AtomicU64 {
        // SAFETY: as for `local`: callers read it only with `rfree > 0` or after
        // `remote_bits`, which made it (words(class) words, never unmapped).
        unsafe { &*self.rbits.load(Ordering::Relaxed).add(w) }
    }
}

/// Relaxed load.
#[inline(always)]
pub(super) fn ld(a: &AtomicU32) -> u32 {
    a.load(Ordering::Relaxed)
}

/// Relaxed store.
#[inline(always)]
pub(super) fn st(a: &AtomicU32, v: u32) {
    a.store(v, Ordering::Relaxed)
}

/// A heap's lists of spans with remote frees to merge, one per class: written by other
/// threads under the class's bin lock, read by the owner. All zeroes is empty.
pub struct Pending {
    heads: [AtomicU32; NCLASSES],
}

impl Pending {
    /// True if class `c` may have spans to merge (a hint: read without the lock).
    #[inline(always)]
    pub(super) fn any(&self, c: usize) -> bool {
        ld(&self.heads[c]) != 0
    }
}

/// Most heaps at once: two per thread that allocates (its host heap and its second one).
const MAX_HEAPS: usize = 1 << 16;
/// Every heap's pending lists, by heap id - 1.
static HEAPS: [AtomicPtr<Pending>; MAX_HEAPS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_HEAPS];
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Gives a new heap, whose pending lists are `p` (metadata memory that lives for the process),
/// its id (never 0); `None` once [`MAX_HEAPS`] heaps exist (heaps of exited threads are
/// reused, so that many would be running at once).
pub fn register(p: &'static Pending) -> Option<u32> {
    let i = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if i >= MAX_HEAPS {
        return None;
    }
    HEAPS[i].store(p as *const Pending as *mut Pending, Ordering::Release);
    Some(i as u32 + 1)
}

/// The pending lists of heap `id`.
fn pending_of(id: u32) -> &'static Pending {
    let p = HEAPS[id as usize - 1].load(Ordering::Acquire);
    // SAFETY: a span's owner is a registered heap (`register` stored its lists before the heap
    // could own anything), and pending lists live for the process.
    unsafe { &*p }
}

/// Per-class state of unowned spans, behind the class's lock.
pub(super) struct Bin {
    /// Head of the partial list (unowned spans with free objects).
    partial: Link,
    /// Recycled bitmaps of this class's size (linked through their first word).
    spare_bitmaps: *mut u64,
    /// Live spans of this tier and class, owned or not.
    spans: usize,
}

// SAFETY: the raw pointers refer to process-wide metadata that is only touched under the lock.
unsafe impl Send for Bin {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_BIN: Lock<Bin> = Lock::new(Bin {
    partial: 0,
    spare_bitmaps: core::ptr::null_mut(),
    spans: 0,
});
#[allow(clippy::declare_interior_mutable_const)]
const TIER_BINS: [Lock<Bin>; NCLASSES] = [EMPTY_BIN; NCLASSES];
/// Bins by tier index (0 = host, 1 + d = device d), then size class.
pub(super) static BINS: [[Lock<Bin>; NCLASSES]; NTIERS] = [TIER_BINS; NTIERS];

static TABLE: AtomicUsize = AtomicUsize::new(0);
static TABLE_LEN: AtomicUsize = AtomicUsize::new(0);
/// Side table: the tier index of each span slot, one byte per slot. Written when a span is
/// created (before any of its objects is handed out), read without a lock by `free`.
static TIERS: AtomicUsize = AtomicUsize::new(0);
/// Side table: 1 + the size class of each live span slot, 0 for a slot with no span. Written
/// under the bin lock when a span is installed or released; read by frees to refuse a pointer
/// of another size before they touch the span's bitmaps.
static CLASSES: AtomicUsize = AtomicUsize::new(0);

/// Maps the span descriptor table for an arena of `pages` pages.
pub fn init(pages: usize) -> bool {
    let n = pages / PAGES_PER_SLOT;
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
#[inline(always)]
fn class_slot(si: usize) -> &'static AtomicU8 {
    debug_assert!(si < TABLE_LEN.load(Ordering::Relaxed));
    // SAFETY: as for `tier_slot`, for the class table.
    unsafe { &*(CLASSES.load(Ordering::Acquire) as *const AtomicU8).add(si) }
}

/// The side-table byte of span slot `si`.
#[inline(always)]
fn tier_slot(si: usize) -> &'static AtomicU8 {
    debug_assert!(si < TABLE_LEN.load(Ordering::Relaxed));
    // SAFETY: the table has one byte per span slot of the arena (init) and is never unmapped;
    // AtomicU8 has the layout of u8 and zero (the host) is valid.
    unsafe { &*(TIERS.load(Ordering::Acquire) as *const AtomicU8).add(si) }
}

/// Set once a span of a device tier exists: until then every span is the host's and `free`
/// skips the side-table lookup.
static ANY_TIERED: AtomicBool = AtomicBool::new(false);

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
    tier_slot((addr - arena::base()) >> SLOT_SHIFT).load(Ordering::Relaxed)
}

/// The size class of the host span holding address `addr`, or `None` if `addr` is outside the
/// managed range, in no span, or in a span of another tier: [`arena::contains`],
/// [`class_at`] and [`tier_of`] in one, each of the range's bounds loaded once (the three
/// apart loaded the base three times and the size twice: atomic loads are not merged).
#[inline(always)]
pub fn host_class_at(addr: usize) -> Option<usize> {
    let off = addr.wrapping_sub(arena::base());
    if off >= arena::size() {
        return None;
    }
    let si = off >> SLOT_SHIFT;
    let class = class_slot(si).load(Ordering::Acquire);
    if class == 0
        || (ANY_TIERED.load(Ordering::Relaxed) && tier_slot(si).load(Ordering::Relaxed) != 0)
    {
        return None;
    }
    Some(class as usize - 1)
}

/// The first slot of the span that starts at `base` (an address of the managed range).
#[inline]
pub(super) fn slot_of(base: usize) -> u32 {
    ((base - arena::base()) >> SLOT_SHIFT) as u32
}

/// The size class of the live span holding address `addr` of the managed range, or `None` if
/// no span covers it (a page run, or free pages). Lock-free: read from the class side table.
#[inline]
pub fn class_at(addr: usize) -> Option<usize> {
    debug_assert!(arena::contains(addr));
    let class = class_slot((addr - arena::base()) >> SLOT_SHIFT).load(Ordering::Acquire);
    (class != 0).then(|| class as usize - 1)
}

/// The descriptor table (the heaps keep it at hand, [`super::owned`]).
pub(super) fn table() -> *const Span {
    TABLE.load(Ordering::Acquire) as *const Span
}

/// The descriptor of span slot `si`.
#[inline(always)]
pub(super) fn desc(si: u32) -> &'static Span {
    debug_assert!((si as usize) < TABLE_LEN.load(Ordering::Relaxed));
    // SAFETY: the table covers every span slot of the arena and is never unmapped; all-zero
    // bytes are a valid descriptor of atomics (an unused slot), and descriptors are only ever
    // reached through shared references.
    unsafe { &*(TABLE.load(Ordering::Acquire) as *const Span).add(si as usize) }
}

/// Local bitmap words of a span of class `c`.
#[inline(always)]
pub(super) fn words(c: usize) -> usize {
    size_class::words_per_span(c)
}

/// The first byte of span `si`.
#[inline(always)]
pub(super) fn span_addr(si: u32) -> usize {
    arena::base() + ((si as usize) << SLOT_SHIFT)
}

/// The span (its first slot) and object index of `p`, an object of class `c` of a live span:
/// aborts with
/// a message on a pointer outside the range, of a slot that is not a live span of class `c`,
/// or into the middle of an object.
#[inline(always)]
pub(super) fn locate(c: usize, p: *mut u8) -> (u32, usize) {
    let addr = p as usize;
    if !arena::contains(addr) {
        sys::fatal("free of a pointer that tieralloc did not allocate");
    }
    let si = ((addr - arena::base()) >> SLOT_SHIFT) as u32;
    if class_slot(si as usize).load(Ordering::Acquire) as usize != c + 1 {
        wrong_size();
    }
    (head_slot(si, c), index_in(c, addr))
}

/// The index of the object at `addr` (or at that offset in the range: the same bits below
/// the span's size, as spans are aligned to it) in its span of class `c`; aborts with a
/// message if it is not the start of an object.
#[inline(always)]
pub(super) fn index_in(c: usize, addr: usize) -> usize {
    index_at(c, addr & (size_class::span_size(c) - 1))
}

/// [`index_in`] for `offset`, a byte offset below the span's size (the caller checked it: the
/// mask [`index_in`] computes from the class cost the current span's free 5 instructions).
#[inline(always)]
pub(super) fn index_at(c: usize, offset: usize) -> usize {
    debug_assert!(offset < size_class::span_size(c));
    match size_class::start_index(c, offset) {
        Some(i) => i,
        None => sys::fatal("free of a pointer into the middle of an object"),
    }
}

/// Ends the process on a free of a pointer that is not a live object of the size it is freed
/// with.
#[cold]
pub(super) fn wrong_size() -> ! {
    sys::fatal(
        "free of a pointer that is not a live object of this size (wrong layout or double free)",
    )
}

/// Checks a free of object `p` (class `c`) by a thread that does not own its span, before it
/// waits in that thread's buffer: marks it freed ([`cached`]) and aborts if it was free
/// already (freed by another thread, or still in its owner's local bitmap).
#[inline(always)]
pub fn check_remote_free(c: usize, p: *mut u8) {
    let (si, i) = locate(c, p);
    let sp = desc(si);
    if !sp.remote_seen.load(Ordering::Relaxed) {
        sp.remote_seen.store(true, Ordering::Relaxed);
    }
    if !cached::mark(p) || sp.local(i / 64).load(Ordering::Relaxed) & (1 << (i % 64)) != 0 {
        super::double_free();
    }
}

/// Gives objects of class `c` of tier `t`, freed by threads that do not own their spans and
/// checked by [`check_remote_free`], to their spans' remote bitmaps: a span with an owner goes
/// on its owner's pending list, one without an owner gives its pages back if that made it
/// free. Aborts with a message on a pointer that is not a live object of class `c` of tier `t`.
pub fn flush<H: Hooks>(t: TierIndex, c: usize, ptrs: &[*mut u8]) {
    // Spans that became free; their pages go back after the bin lock is released (taking
    // pages back may wait for page locks, never under a heap lock).
    let mut released = [0usize; 16];
    for chunk in ptrs.chunks(released.len()) {
        let mut nreleased = 0;
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
            give_back_span::<H>(page, c);
        }
    }
}

/// Gives object `p` of class `c` to its span's remote bitmap (bin lock held); the first page
/// of the span if that made an unowned span free and it was released.
fn flush_one(bin: &mut Bin, t: TierIndex, c: usize, p: *mut u8) -> Option<usize> {
    let (si, i) = locate(c, p);
    // The slot must belong to this bin before its bitmaps are written: another tier's spans
    // are guarded by another lock.
    if tier_slot(si as usize).load(Ordering::Relaxed) != t {
        sys::fatal("free of a pointer that is not a live object of this size (wrong layout or double free)");
    }
    let sp = desc(si);
    remote_bits(bin, sp, c);
    let (w, b) = (i / 64, 1u64 << (i % 64));
    let r = sp.remote(w).load(Ordering::Relaxed);
    if r & b != 0 || sp.local(w).load(Ordering::Relaxed) & b != 0 {
        sys::fatal("double free detected");
    }
    sp.remote(w).store(r | b, Ordering::Relaxed);
    st(&sp.rfree, ld(&sp.rfree) + 1);
    let owner = ld(&sp.owner);
    if owner != 0 {
        if !sp.queued.load(Ordering::Relaxed) {
            let heads = &pending_of(owner).heads[c];
            sp.queued.store(true, Ordering::Relaxed);
            st(&sp.rnext, ld(heads));
            st(heads, link(si));
        }
        return None;
    }
    if (ld(&sp.nfree) + ld(&sp.rfree)) as usize == size_class::objects_per_span(c) {
        if sp.state() == State::Partial {
            unlink(bin, si);
        }
        merge(si, c);
        return Some(release_span(bin, si));
    }
    if sp.state() == State::Idle {
        push_partial(bin, si);
    }
    None
}

/// Gives span `sp` (class `c`, bin lock held) its remote bitmap if it has none yet.
fn remote_bits(bin: &mut Bin, sp: &Span, c: usize) {
    if !sp.rbits.load(Ordering::Relaxed).is_null() {
        return;
    }
    let Some(r) = bitmap_words(bin, c) else {
        sys::fatal("out of memory for allocator metadata (a span's remote bitmap)");
    };
    for w in 0..words(c) {
        // SAFETY: `r` has words(c) words and is ours (fresh or spare).
        unsafe { *r.add(w) = 0 };
    }
    sp.rbits.store(r as *mut AtomicU64, Ordering::Relaxed);
}

/// `words(c)` words of metadata for a bitmap of class `c` (a spare one, or new): not cleared.
fn bitmap_words(bin: &mut Bin, c: usize) -> Option<*mut u64> {
    if bin.spare_bitmaps.is_null() {
        let b = meta::alloc(words(c) * 8);
        return (!b.is_null()).then_some(b);
    }
    let b = bin.spare_bitmaps;
    // SAFETY: spare bitmaps are linked through their first word (`spare`).
    bin.spare_bitmaps = unsafe { *b } as *mut u64;
    Some(b)
}

/// Puts bitmap `b` of the bin's class on its spare list.
fn spare(bin: &mut Bin, b: *mut u64) {
    // SAFETY: the bitmap is ours (its span is being released); link it through its first word.
    unsafe { *b = bin.spare_bitmaps as u64 };
    bin.spare_bitmaps = b;
}

/// Moves span `si`'s remote frees into its local bitmap (bin lock held, by its owner or the
/// heap adopting it): their freed bits ([`cached`]) are cleared, as they are free in the span
/// now. Aborts if an object is free in both bitmaps (a double free that raced).
pub(super) fn merge(si: u32, c: usize) {
    let sp = desc(si);
    sp.queued.store(false, Ordering::Relaxed);
    st(&sp.rnext, 0);
    if ld(&sp.rfree) == 0 {
        return;
    }
    let (base, size) = (span_addr(si), size_class::size_of(c));
    let mut objs = [core::ptr::null_mut(); 64];
    let mut first = usize::MAX;
    for w in 0..words(c) {
        let r = sp.remote(w).load(Ordering::Relaxed);
        if r == 0 {
            continue;
        }
        first = first.min(w);
        sp.remote(w).store(0, Ordering::Relaxed);
        let l = sp.local(w).load(Ordering::Relaxed);
        if l & r != 0 {
            sys::fatal("double free detected");
        }
        sp.local(w).store(l | r, Ordering::Relaxed);
        let (mut m, mut n) = (r, 0);
        while m != 0 {
            objs[n] = (base + (w * 64 + m.trailing_zeros() as usize) * size) as *mut u8;
            n += 1;
            m &= m - 1;
        }
        cached::clear_taken(&objs[..n]);
    }
    st(&sp.nfree, ld(&sp.nfree) + ld(&sp.rfree));
    COUNTERS
        .remote_frees
        .fetch_add(ld(&sp.rfree) as u64, Ordering::Relaxed);
    st(&sp.rfree, 0);
    if first < sp.hint.load(Ordering::Relaxed) as usize {
        sp.hint.store(first as u16, Ordering::Relaxed);
    }
}

/// Takes every span off heap `id`'s pending list of class `c` and merges it (bin lock held):
/// calls `f` with each, now with its remote frees in its local bitmap.
pub(super) fn drain_pending(_bin: &mut Bin, pending: &Pending, c: usize, mut f: impl FnMut(u32)) {
    let mut l = pending.heads[c].swap(0, Ordering::Relaxed);
    while let Some(si) = linked(l) {
        l = ld(&desc(si).rnext);
        merge(si, c);
        f(si);
    }
}

/// Takes a span off bin's partial list for heap `id`, its remote frees merged: it is the
/// heap's current span now.
pub(super) fn adopt(bin: &mut Bin, c: usize, id: u32) -> Option<u32> {
    let si = linked(bin.partial)?;
    unlink(bin, si);
    merge(si, c);
    let sp = desc(si);
    st(&sp.owner, id);
    sp.set_state(State::Current);
    Some(si)
}

/// Lets go of span `si` that heap `id` owned (bin lock held, its pending list drained): it
/// goes to the bin's partial list or on no list; the first page if it was free and released.
pub(super) fn disown(bin: &mut Bin, si: u32, c: usize) -> Option<usize> {
    let sp = desc(si);
    debug_assert!(!sp.queued.load(Ordering::Relaxed) && ld(&sp.rfree) == 0);
    st(&sp.owner, 0);
    let nfree = ld(&sp.nfree) as usize;
    if nfree == size_class::objects_per_span(c) {
        return Some(release_span(bin, si));
    }
    if nfree > 0 {
        push_partial(bin, si);
    } else {
        sp.set_state(State::Idle);
    }
    None
}

fn push_partial(bin: &mut Bin, si: u32) {
    push(&mut bin.partial, si, State::Partial);
}

fn unlink(bin: &mut Bin, si: u32) {
    remove(&mut bin.partial, si);
}

/// Pushes span `si` on the list at `head` (a bin's partial list, or one of its owner's lists,
/// whoever may write the span's links) in state `s`.
pub(super) fn push(head: &mut Link, si: u32, s: State) {
    let sp = desc(si);
    sp.set_state(s);
    st(&sp.next, *head);
    st(&sp.prev, 0);
    if let Some(h) = linked(*head) {
        st(&desc(h).prev, link(si));
    }
    *head = link(si);
}

/// Removes span `si` from the list at `head`.
pub(super) fn remove(head: &mut Link, si: u32) {
    let sp = desc(si);
    let (next, prev) = (ld(&sp.next), ld(&sp.prev));
    match linked(prev) {
        Some(p) => st(&desc(p).next, next),
        None => *head = next,
    }
    if let Some(n) = linked(next) {
        st(&desc(n).prev, prev);
    }
}

/// Hands out a fresh span's pages for tier `t` and class `c` and, for a device tier, creates
/// them on the device (on failure they serve from host pages, still tier `t`'s). No bin lock
/// is held.
pub(super) fn fresh_pages<H: Hooks>(t: TierIndex, c: usize) -> Option<usize> {
    let (page, _) = PAGES
        .lock()
        .alloc(span_pages(c), size_class::span_size(c), Use::Span)?;
    if t != 0 {
        ANY_TIERED.store(true, Ordering::Relaxed);
    }
    if t != 0 && t != scope::INTERNAL {
        H::place_fresh(page, span_pages(c), t as u16 - 1);
    }
    Some(page)
}

/// Makes the fresh pages at `page` a span of class `c` in `bin` (tier `t`), owned by heap
/// `owner` as its current span (or, for 0, unowned on the partial list); `None` if no bitmap
/// could be had (the caller gives the pages back).
pub(super) fn install(
    bin: &mut Bin,
    page: usize,
    t: TierIndex,
    c: usize,
    owner: u32,
) -> Option<u32> {
    let nwords = words(c);
    let bitmap = bitmap_words(bin, c)?;
    let nobj = size_class::objects_per_span(c);
    for w in 0..nwords {
        let bits = (nobj - w * 64).min(64);
        let v = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        // SAFETY: `w < nwords`; the bitmap has nwords words and is ours (fresh or spare).
        unsafe { *bitmap.add(w) = v };
    }
    let si = (page / PAGES_PER_SLOT) as u32;
    let slots = si as usize..si as usize + size_class::span_slots(c);
    for s in slots.clone() {
        tier_slot(s).store(t, Ordering::Relaxed);
    }
    let sp = desc(si);
    sp.bits.store(bitmap as *mut AtomicU64, Ordering::Relaxed);
    sp.rbits.store(core::ptr::null_mut(), Ordering::Relaxed);
    st(&sp.owner, owner);
    st(&sp.next, 0);
    st(&sp.prev, 0);
    st(&sp.nfree, nobj as u32);
    st(&sp.rfree, 0);
    st(&sp.rnext, 0);
    sp.hint.store(0, Ordering::Relaxed);
    sp.class.store(c as u8, Ordering::Relaxed);
    sp.queued.store(false, Ordering::Relaxed);
    sp.remote_seen.store(false, Ordering::Relaxed);
    if owner != 0 {
        sp.set_state(State::Current);
    } else {
        push_partial(bin, si);
    }
    for s in slots {
        class_slot(s).store(c as u8 + 1, Ordering::Release);
    }
    bin.spans += 1;
    Some(si)
}

/// Makes span `si` (free, on no list, no owner's pending list) unused slots (bin lock held);
/// returns its first page, which the caller gives back to the page runs (its
/// [`span_pages`]) once the bin lock is released.
pub(super) fn release_span(bin: &mut Bin, si: u32) -> usize {
    let sp = desc(si);
    sp.set_state(State::Unused);
    st(&sp.owner, 0);
    let c = sp.class.load(Ordering::Relaxed) as usize;
    for s in si as usize..si as usize + size_class::span_slots(c) {
        class_slot(s).store(0, Ordering::Release);
    }
    for b in [&sp.bits, &sp.rbits] {
        let b = b.swap(core::ptr::null_mut(), Ordering::Relaxed) as *mut u64;
        if !b.is_null() {
            spare(bin, b);
        }
    }
    bin.spans -= 1;
    si as usize * PAGES_PER_SLOT
}

/// One object of class `c` of tier `t` for a thread without a heap (it exited, or no heap id
/// was left): taken under the bin lock from an unowned span. Null when memory is exhausted.
pub fn take_unowned<H: Hooks>(t: TierIndex, c: usize) -> *mut u8 {
    loop {
        {
            let mut bin = BINS[t as usize][c].lock();
            if let Some(si) = linked(bin.partial) {
                merge(si, c);
                let sp = desc(si);
                let nfree = ld(&sp.nfree);
                let p = take_bit(sp, span_addr(si), c);
                if p.is_null() {
                    sys::fatal("a span's free count disagrees with its bitmap");
                }
                st(&sp.nfree, nfree - 1);
                if nfree == 1 {
                    unlink(&mut bin, si);
                    sp.set_state(State::Idle);
                }
                return p;
            }
        }
        let Some(page) = fresh_pages::<H>(t, c) else {
            return core::ptr::null_mut();
        };
        let mut bin = BINS[t as usize][c].lock();
        if install(&mut bin, page, t, c, 0).is_none() {
            drop(bin);
            give_back_span::<H>(page, c);
            return core::ptr::null_mut();
        }
    }
}

/// Takes the first free object of span `sp` at `base` (class `c`) out of its local bitmap (its
/// owner, or under the bin lock); null if it has none. Leaves `nfree` to the caller.
#[inline(always)]
pub(super) fn take_bit(sp: &Span, base: usize, c: usize) -> *mut u8 {
    take_from(sp, sp.bits.load(Ordering::Relaxed), base, c)
}

/// [`take_bit`] with the span's bitmap `bits` at hand.
#[inline(always)]
pub(super) fn take_from(sp: &Span, bits: *const AtomicU64, base: usize, c: usize) -> *mut u8 {
    let Some((w, v)) = first_free_word(sp, bits, c) else {
        return core::ptr::null_mut();
    };
    // SAFETY: `w < words(c)` (first_free_word); metadata memory is never unmapped.
    unsafe { &*bits.add(w) }.store(v & (v - 1), Ordering::Relaxed);
    let i = w * 64 + v.trailing_zeros() as usize;
    (base + i * size_class::size_of(c)) as *mut u8
}

/// The first word of span `sp`'s local bitmap `bits` (class `c`) with a free object, from its
/// hint on, and its value (not 0); the hint moves to it (or past the end, for `None`).
#[inline(always)]
pub(super) fn first_free_word(sp: &Span, bits: *const AtomicU64, c: usize) -> Option<(usize, u64)> {
    let hint = sp.hint.load(Ordering::Relaxed) as usize;
    let nw = words(c);
    for w in hint..nw {
        // SAFETY: `bits` is the span's bitmap (words(c) words, metadata never unmapped) and
        // `w < words(c)`.
        let v = unsafe { &*bits.add(w) }.load(Ordering::Relaxed);
        if v != 0 {
            if w != hint {
                sp.hint.store(w as u16, Ordering::Relaxed);
            }
            return Some((w, v));
        }
    }
    sp.hint.store(nw as u16, Ordering::Relaxed);
    None
}

/// Sets span `si`'s `nfree` from its local bitmap (its owner, as the span stops being its
/// current one: allocating from the current span does not count).
pub(super) fn recount(si: u32, c: usize) {
    let sp = desc(si);
    let n: u32 = (0..words(c))
        .map(|w| sp.local(w).load(Ordering::Relaxed).count_ones())
        .sum();
    st(&sp.nfree, n);
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
///   class is the entry minus one, its pages read `Span` in the page map, and it is owned
///   (`Current`, `Avail`, `Full`: owner ≠ 0) or not (`Partial`, `Idle`: owner = 0);
/// - a slot past a span's first has the first slot's class and tier entries and an unused
///   descriptor;
/// - `nfree` == the bits set in its local bitmap (unless `Current`), `rfree` == those in its
///   remote one, and no
///   object is free in both; no bit is set past the last object, nor in a local word before
///   `hint`; an owned span with remote frees is on its owner's pending list (`queued`);
/// - `Idle` ⇒ no free object; `Partial` ⇒ some; `Full` ⇒ no local free object;
/// - each bin's `spans` == the live slots of its tier and class; its partial list holds
///   `Partial` spans of its own, linked both ways.
///
/// Owned spans change without a lock while their threads allocate: meant for a quiet heap.
///
/// # Safety
/// The caller holds every bin lock ([`lock_for_fork`]).
pub(super) unsafe fn check_locked(top: usize) -> Result<(), super::check::Invalid> {
    use super::check::ensure;
    let mut live = [[0usize; NCLASSES]; NTIERS];
    let slots = (top / PAGES_PER_SLOT).min(TABLE_LEN.load(Ordering::Relaxed));
    for si in 0..slots {
        let sp = desc(si as u32);
        let class = class_slot(si).load(Ordering::Acquire) as usize;
        let state = sp.state();
        if class == 0 {
            ensure(state == State::Unused, "a slot with no class is Unused", si)?;
            continue;
        }
        let c = class - 1;
        let t = tier_slot(si).load(Ordering::Relaxed) as usize;
        ensure(
            c < NCLASSES && t < NTIERS,
            "a live slot's class and tier exist",
            si,
        )?;
        let head = head_slot(si as u32, c) as usize;
        if head != si {
            // A later slot of a span: its entries are its first slot's, its descriptor unused.
            ensure(
                state == State::Unused
                    && class_slot(head).load(Ordering::Relaxed) as usize == class
                    && tier_slot(head).load(Ordering::Relaxed) as usize == t,
                "a span's later slots repeat its first slot's class and tier",
                si,
            )?;
            continue;
        }
        ensure(
            sp.class.load(Ordering::Relaxed) as usize == c,
            "a live span's class matches its slot",
            si,
        )?;
        let owned = ld(&sp.owner) != 0;
        ensure(
            match state {
                State::Current | State::Avail | State::Full => owned,
                State::Partial | State::Idle => !owned,
                State::Unused => false,
            },
            "a live span is owned exactly when its state says so",
            si,
        )?;
        let page = si * PAGES_PER_SLOT;
        super::check::all_read(
            page..page + span_pages(c),
            Use::Span,
            "a live span's pages read Span",
        )?;
        let nobj = size_class::objects_per_span(c);
        let (mut set, mut rset) = (0, 0);
        for w in 0..words(c) {
            let word = sp.local(w).load(Ordering::Relaxed);
            let r = if sp.rbits.load(Ordering::Relaxed).is_null() {
                0
            } else {
                sp.remote(w).load(Ordering::Relaxed)
            };
            set += word.count_ones() as usize;
            rset += r.count_ones() as usize;
            let past = (w * 64 + 64).saturating_sub(nobj).min(64);
            ensure(
                past == 0 || (word | r) >> (64 - past) == 0,
                "no bit is set past the last object",
                si,
            )?;
            ensure(
                w >= sp.hint.load(Ordering::Relaxed) as usize || word == 0,
                "no bit is set before hint",
                si,
            )?;
            ensure(word & r == 0, "no object is free in both bitmaps", si)?;
        }
        ensure(
            state == State::Current || ld(&sp.nfree) as usize == set,
            "nfree == the bits set in the local bitmap",
            si,
        )?;
        ensure(
            ld(&sp.rfree) as usize == rset,
            "rfree == the bits set in the remote bitmap",
            si,
        )?;
        ensure(set + rset <= nobj, "free objects <= objects per span", si)?;
        ensure(
            !owned || rset == 0 || sp.queued.load(Ordering::Relaxed),
            "an owned span with remote frees is on its owner's pending list",
            si,
        )?;
        match state {
            State::Full => ensure(set == 0, "a Full span has no local free object", si)?,
            State::Idle => ensure(set + rset == 0, "an Idle span has no free object", si)?,
            State::Partial => ensure(set + rset > 0, "a Partial span has a free object", si)?,
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
            let (mut l, mut prev, mut n) = (bin.partial, 0, 0);
            while let Some(si) = linked(l) {
                let sp = desc(si);
                ensure(
                    class_slot(si as usize).load(Ordering::Relaxed) as usize == c + 1
                        && tier_slot(si as usize).load(Ordering::Relaxed) as usize == t
                        && sp.state() == State::Partial,
                    "a partial list holds Partial spans of its bin",
                    si as usize,
                )?;
                ensure(
                    ld(&sp.prev) == prev,
                    "a partial span links back to its predecessor",
                    si as usize,
                )?;
                n += 1;
                ensure(n <= bin.spans, "a partial list has no cycle", si as usize)?;
                prev = l;
                l = ld(&sp.next);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walker_finds_free_objects_before_the_hint() {
        let c = size_class::class_of(48, 8).unwrap();
        // The span's hint says its free objects start past the end of its bitmap although
        // some are free.
        let broken = crate::heap::check::testing::broken_by(48, |p| {
            let si = ((p as usize - arena::base()) >> SLOT_SHIFT) as u32;
            let _bin = BINS[0][c].lock();
            desc(si).hint.fetch_xor(0x80, Ordering::Relaxed);
        });
        assert_eq!(broken, Err("no bit is set before hint"));
    }

    #[test]
    fn the_walker_finds_a_later_slot_that_disagrees_with_its_span() {
        let c = size_class::class_of(1024, 8).unwrap();
        assert_eq!(size_class::span_slots(c), 2);
        // The second slot of a two-slot span names another class than its first.
        let broken = crate::heap::check::testing::broken_by(1024, |p| {
            let si = ((p as usize - arena::base()) >> SLOT_SHIFT) as u32;
            let _bin = BINS[0][c].lock();
            class_slot(head_slot(si, c) as usize + 1).fetch_xor(1, Ordering::Relaxed);
        });
        assert_eq!(
            broken,
            Err("a span's later slots repeat its first slot's class and tier")
        );
    }
}
