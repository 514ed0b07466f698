//! Per-thread caches of free small objects: the allocator's fast path.
//!
//! A thread keeps, per size class, a stack of free object pointers in thread-local storage
//! (outside the managed range). `alloc` pops, `dealloc` pushes; only an empty or full stack goes
//! to the class's bin ([`super::span`]) for a batch of half its capacity.
//!
//! Each thread has two caches: one for the host, and one for the last other tier it allocated
//! on (a device, or tieralloc's internal tier in its workers), so allocating inside a device
//! scope costs what allocating on the host does instead of a bin lock per object. The second
//! cache follows the thread's allocations: allocating on another tier first gives its objects
//! back to their bins; a free of an object of a tier it does not hold goes to the bin.
//!
//! The caches live in metadata memory outside the managed range; the thread-local is one
//! pointer to them (`const`-initialised, without a destructor: a plain TLS offset, usable before
//! `main` and inside other destructors). Why not the caches themselves: under `libtieralloc.so`
//! a preloaded library's thread-locals are carved out of every thread's stack, and 36 KiB of
//! caches there made `pthread_create` fail with `EINVAL` for threads with small stacks (node's
//! inspector thread asks for 32 KiB, 2026-12-02). The pointer is null until the thread's first
//! allocation or free, which lands in the slow path: it initialises the heap, takes a pair of
//! caches (one a thread that exited gave back, or new metadata) and registers a `pthread` key
//! whose destructor flushes them when the thread exits. After that the pointer is [`DEAD`], the
//! caches go back for another thread, and the thread's remaining frees and allocations go
//! straight to the bins.

use super::large_slot::LargeSlot;
use super::meta;
use super::owed::{self, Slot, Slots};
use super::size_class::{self, NCLASSES};
use super::{span, Hooks};
use crate::mem::scope::TierIndex;
use crate::pal::lock::Lock;
use core::cell::Cell;

/// Largest number of cached objects per class.
const MAX_CACHED: usize = 64;

/// One class's stack of free objects.
///
/// Invariant: `clean <= n <= cap <= MAX_CACHED`; `items[..clean]` came from the bin and their
/// [`super::cached`] bits are clear, `items[clean..n]` were freed here and their bits are set.
/// Popping a clean object then needs no atomic operation (a batch of allocations costs one
/// fewer per object), nor does popping a freed one while the cache's [`owed`] slot is empty.
struct Stack {
    /// Objects on the stack.
    n: u32,
    /// Capacity for this class (0 until the cache is initialised).
    cap: u32,
    /// How many objects at the bottom of the stack have their bit clear.
    clean: u32,
    /// The objects; `items[..n]` are valid.
    items: [*mut u8; MAX_CACHED],
}

/// A thread's cache of objects of one tier. All zeroes is an empty cache of the host.
struct Cache {
    stacks: [Stack; NCLASSES],
    /// The tier of every object on the stacks (the host cache: always 0).
    tier: TierIndex,
    /// Refills and flushes so far: every [`SETTLE_EVERY`]th pays the slot's owed clear.
    slow: u32,
}

/// How often a cache's slow path pays its slot's owed clear ([`owed::settle`], two atomic
/// operations), so that an owed object the program keeps does not stop the slot from serving
/// later pairs. At every slow path it cost 0.8 ns per operation of the two-thread churn
/// workload (10.0 -> 10.8 ns, 2026-12-02).
const SETTLE_EVERY: u32 = 8;

/// Counts a slow path of `cache` and pays the owed clear of `slot` every [`SETTLE_EVERY`]th.
#[inline]
fn settle_now_and_then(cache: &mut Cache, slot: &Slot) {
    cache.slow = cache.slow.wrapping_add(1);
    if cache.slow % SETTLE_EVERY == 0 {
        owed::settle(slot);
    }
}

/// A thread's two caches: the host's, and the one of the last other tier it allocated on.
///
/// Other threads read and write `slots` (a claim, see [`owed`]): it is only ever reached
/// through shared references, never inside a `&mut Caches`.
struct Caches {
    host: Cache,
    other: Cache,
    /// The next pair on the list of pairs given back by exited threads.
    next: *mut Caches,
    /// Each cache's owed object.
    slots: Slots,
    /// The large run this thread freed last, kept for its next allocation of that size.
    large: LargeSlot,
}

/// The host cache of pair `cs` and its slot.
///
/// # Safety
/// `cs` is a live pair that only this thread uses (its own, or one no thread has), and no other
/// reference to its `host` cache exists.
#[inline(always)]
unsafe fn host<'a>(cs: *mut Caches) -> (&'a mut Cache, &'a Slot) {
    // SAFETY: the caller's contract; `slots` is a disjoint field, only shared.
    unsafe { (&mut (*cs).host, &(*cs).slots.host) }
}

/// The second cache of pair `cs` and its slot.
///
/// # Safety
/// As [`host`], for the `other` cache.
#[inline(always)]
unsafe fn other<'a>(cs: *mut Caches) -> (&'a mut Cache, &'a Slot) {
    // SAFETY: as in `host`.
    unsafe { (&mut (*cs).other, &(*cs).slots.other) }
}

/// The value of [`CACHES`] once the thread's exit hook ran: its frees and allocations go
/// straight to the bins.
const DEAD: *mut Caches = 1 as *mut Caches;

/// Pairs of caches given back by exited threads, for the next threads that start (flushed, so
/// every stack is empty).
static SPARE: Lock<usize> = Lock::new(0);

thread_local! {
    /// This thread's caches: null before its first allocation or free, [`DEAD`] after its exit
    /// hook, else a pair in metadata memory that only this thread uses.
    static CACHES: Cell<*mut Caches> = const { Cell::new(core::ptr::null_mut()) };
}

/// This thread's caches pointer (see [`CACHES`]).
///
/// `free` and the slow paths take it this way; `alloc`'s fast path pops inside the
/// thread-local's closure instead ([`pop_host`]). With the whole push or pop inside the
/// closure, `with` was compiled out of line in some programs and reached the key's accessor by
/// an indirect call: 42% of the samples of a 16-byte alloc+free loop under `perf`, 13.5 ns a
/// pair against 9.5 after (2026-12-02). With `alloc` in this pointer form, rustc 1.95's LLVM
/// crashed compiling `alloc_races` (SIGSEGV in `TargetMachine::getSymbol` or the AsmPrinter
/// under ThinLTO, not with one codegen unit); the cause is not known, and the closure form
/// compiles everywhere.
#[inline(always)]
fn caches() -> *mut Caches {
    CACHES.with(Cell::get)
}

/// True if `cs` points to a pair of caches (not null, not [`DEAD`]).
#[inline(always)]
fn live(cs: *mut Caches) -> bool {
    cs as usize > DEAD as usize
}

/// Allocates a host object of class `c`, or returns null when memory is exhausted.
#[inline(always)]
pub fn alloc<H: Hooks>(c: usize) -> *mut u8 {
    let p = pop_host(c);
    if !p.is_null() {
        return p;
    }
    alloc_host_slow::<H>(c)
}

/// The fast path of [`alloc`] alone: the most recently freed host object of class `c` in this
/// thread's cache, or null (the caller takes [`alloc`]). Makes no system call.
#[inline(always)]
pub fn pop_host(c: usize) -> *mut u8 {
    // The pop inside the closure: with the pointer taken out first (`caches()`), rustc 1.95's
    // LLVM crashed compiling `alloc_races` (SIGSEGV in the AsmPrinter under ThinLTO), as it
    // did for the earlier thread-local caches (see `caches`).
    CACHES.with(|k| {
        let cs = k.get();
        if !live(cs) {
            return core::ptr::null_mut();
        }
        // SAFETY: a live pair is this thread's own (only this thread has its pointer); no
        // reference to it outlives this call, and the allocator is never re-entered from
        // inside (nothing here allocates).
        let (cache, slot) = unsafe { host(cs) };
        pop_cached(cache, slot, c)
    })
}

/// [`pop_host`] with the thread-local read first and the pop outside its closure, for the C
/// entry points ([`super::alloc_cached`]). Since a pop may owe its object ([`owed`]), LLVM no
/// longer inlines the closure form, and `malloc` reached the pop through a call to
/// `LocalKey::with`: the C batch loop took 24.8 ns instead of 22.2, and pairs 12.8 against
/// 11.3 ns in this form (2026-12-02). The Rust allocator keeps the closure form (one direct
/// call): rustc 1.95's LLVM crashes compiling `alloc_races` with this one (see `caches`).
#[inline(always)]
pub fn pop_host_outside(c: usize) -> *mut u8 {
    let cs = caches();
    if !live(cs) {
        return core::ptr::null_mut();
    }
    // SAFETY: as in `pop_host`.
    let (cache, slot) = unsafe { host(cs) };
    pop_cached(cache, slot, c)
}

/// The fast path of [`free`] alone: pushes host object `p` of class `c` on this thread's
/// cache; false if the stack is full or the thread has no caches (the caller takes [`free`]).
/// Leaves `errno` alone (the one system call it may make, `membarrier(2)` in
/// [`owed::claim`], restores it); a second free ends the process, as in [`free`].
#[inline(always)]
pub fn push_host(c: usize, p: *mut u8) -> bool {
    let cs = caches();
    if !live(cs) {
        return false;
    }
    // SAFETY: as in `pop_host`.
    let (cache, slot) = unsafe { host(cs) };
    push_cached(cache, slot, c, p)
}

/// [`alloc`] when the class's stack is empty.
#[cold]
#[inline(never)]
fn alloc_host_slow<H: Hooks>(c: usize) -> *mut u8 {
    match this_thread::<H>() {
        Some(cs) => {
            // SAFETY: as in `pop_host`.
            let (cache, slot) = unsafe { host(cs) };
            alloc_slow::<H>(cache, slot, c)
        }
        None => alloc_direct::<H>(0, c),
    }
}

/// Frees a host object of class `c`.
#[inline(always)]
pub fn free<H: Hooks>(c: usize, p: *mut u8) {
    if !push_host(c, p) {
        free_host_slow::<H>(c, p);
    }
}

/// [`free`] when the class's stack is full or the thread has no caches yet.
#[cold]
#[inline(never)]
fn free_host_slow<H: Hooks>(c: usize, p: *mut u8) {
    match this_thread::<H>() {
        Some(cs) => {
            // SAFETY: as in `pop_host`.
            let (cache, slot) = unsafe { host(cs) };
            free_slow::<H>(cache, slot, c, p)
        }
        None => free_to_span::<H>(0, c, p),
    }
}

/// This thread's caches, started on its first call; `None` once its exit hook ran (or if the
/// heap cannot start): the caller goes straight to the bins.
#[inline]
fn this_thread<H: Hooks>() -> Option<*mut Caches> {
    let cs = caches();
    if live(cs) {
        return Some(cs);
    }
    if cs == DEAD {
        return None;
    }
    start::<H>()
}

/// Allocates an object of class `c` on tier `t` (not the host), through the thread's second
/// cache, which takes tier `t` if it held another.
#[inline]
pub fn alloc_on<H: Hooks>(t: TierIndex, c: usize) -> *mut u8 {
    let Some(cs) = this_thread::<H>() else {
        return alloc_direct::<H>(t, c);
    };
    // SAFETY: as in `pop_host`.
    let (cache, slot) = unsafe { other(cs) };
    if cache.tier != t {
        flush_all::<H>(cache, slot);
        cache.tier = t;
    }
    pop::<H>(cache, slot, c)
}

/// Frees an object of class `c` of tier `t` (not the host): into the second cache if it holds
/// tier `t`, else to its bin.
#[inline]
pub fn free_on<H: Hooks>(t: TierIndex, c: usize, p: *mut u8) {
    let cs = caches();
    // SAFETY: as in `pop_host`.
    match live(cs).then(|| unsafe { other(cs) }) {
        Some((cache, slot)) if cache.tier == t => push::<H>(cache, slot, c, p),
        _ => free_to_span::<H>(t, c, p),
    }
}

#[inline(always)]
fn pop<H: Hooks>(cache: &mut Cache, slot: &Slot, c: usize) -> *mut u8 {
    let p = pop_cached(cache, slot, c);
    if !p.is_null() {
        return p;
    }
    alloc_slow::<H>(cache, slot, c)
}

/// The most recently freed object of class `c`, or null if the stack is empty (a stack never
/// holds null). A freed object leaves with its bit still set if the cache's slot can owe it.
#[inline(always)]
fn pop_cached(cache: &mut Cache, slot: &Slot, c: usize) -> *mut u8 {
    let s = &mut cache.stacks[c];
    if s.n == 0 {
        return core::ptr::null_mut();
    }
    s.n -= 1;
    let p = s.items[s.n as usize];
    if s.n >= s.clean {
        owed::hand_out(slot, p);
    } else {
        s.clean = s.n;
    }
    p
}

#[inline(always)]
fn push<H: Hooks>(cache: &mut Cache, slot: &Slot, c: usize, p: *mut u8) {
    if !push_cached(cache, slot, c, p) {
        free_slow::<H>(cache, slot, c, p)
    }
}

/// Pushes `p` on its class's stack; false if the stack is full.
#[inline(always)]
fn push_cached(cache: &mut Cache, slot: &Slot, c: usize, p: *mut u8) -> bool {
    let s = &mut cache.stacks[c];
    if s.n >= s.cap {
        return false;
    }
    if !owed::free(Some(slot), p) {
        double_free();
    }
    s.items[s.n as usize] = p;
    s.n += 1;
    true
}

#[cold]
fn double_free() -> ! {
    crate::pal::sys::fatal("double free detected (the object was freed already)")
}

/// One object of class `c` of tier `t` straight from its bin (a thread without caches).
#[cold]
fn alloc_direct<H: Hooks>(t: TierIndex, c: usize) -> *mut u8 {
    let mut one = [core::ptr::null_mut(); 1];
    if span::refill::<H>(t, c, &mut one) == 1 {
        one[0]
    } else {
        core::ptr::null_mut()
    }
}

/// Refills class `c`'s empty stack from its bin and hands out one of the objects.
#[cold]
fn alloc_slow<H: Hooks>(cache: &mut Cache, slot: &Slot, c: usize) -> *mut u8 {
    settle_now_and_then(cache, slot);
    let s = &mut cache.stacks[c];
    let want = (s.cap as usize / 2).max(1);
    let got = span::refill::<H>(cache.tier, c, &mut s.items[..want]);
    if got == 0 {
        return core::ptr::null_mut();
    }
    s.n = got as u32 - 1;
    s.clean = s.n;
    s.items[got - 1]
}

/// Frees `p` into class `c`'s full stack: the older half goes back to the bin first.
#[cold]
fn free_slow<H: Hooks>(cache: &mut Cache, slot: &Slot, c: usize, p: *mut u8) {
    if !owed::free(Some(slot), p) {
        double_free();
    }
    settle_now_and_then(cache, slot);
    let s = &mut cache.stacks[c];
    if s.n == s.cap {
        // Give back the older half; keep the most recently freed (cache-hot) objects.
        let half = (s.cap / 2) as usize;
        span::flush::<H>(cache.tier, c, &s.items[..half]);
        s.items.copy_within(half..s.n as usize, 0);
        s.n -= half as u32;
        s.clean = s.clean.saturating_sub(half as u32);
    }
    s.items[s.n as usize] = p;
    s.n += 1;
}

/// Frees `p` (class `c`, tier `t`) straight to its span. Its freed bit is set first: an
/// object waiting in another thread's cache has its bit set while its span counts it as handed
/// out, so only the bit tells a second free of it. Before, such a free (at thread exit, or of
/// a device-tier object the second cache does not hold) was taken by the span and the object
/// was handed out twice.
fn free_to_span<H: Hooks>(t: TierIndex, c: usize, p: *mut u8) {
    if !owed::free(None, p) {
        double_free();
    }
    span::flush::<H>(t, c, &[p])
}

/// Gives this thread its caches: the heap is initialised, a pair is taken (given back by an
/// exited thread, or new) and the exit hook registered. `None` if the heap cannot start or
/// no metadata memory is left (the thread then goes straight to the bins).
#[cold]
fn start<H: Hooks>() -> Option<*mut Caches> {
    if !super::ensure_init::<H>() {
        return None;
    }
    let spare = {
        let mut head = SPARE.lock();
        let cs = *head as *mut Caches;
        if !cs.is_null() {
            // SAFETY: pairs on the list are given back and used by no thread; the lock is held.
            *head = unsafe { (*cs).next } as usize;
        }
        cs
    };
    let cs = if spare.is_null() {
        // Zeroed memory is a pair of empty host caches with capacity 0 and empty slots.
        let cs = meta::alloc(core::mem::size_of::<Caches>()) as *mut Caches;
        if cs.is_null() {
            return None;
        }
        // SAFETY: metadata memory is never freed, and the slots are only ever shared.
        owed::register(unsafe { &(*cs).slots });
        cs
    } else {
        spare
    };
    // SAFETY: the pair is ours alone now (new, or taken off the list); its slots are not
    // touched here.
    for cache in unsafe { [&mut (*cs).host, &mut (*cs).other] } {
        cache.tier = 0;
        for (c, s) in cache.stacks.iter_mut().enumerate() {
            s.cap = size_class::tcache_capacity(c);
        }
    }
    // SAFETY: as above.
    unsafe { (*cs).next = core::ptr::null_mut() };
    CACHES.with(|k| k.set(cs));
    super::register_thread_exit();
    Some(cs)
}

/// Flushes this thread's caches into the bins and gives them back for another thread. Called
/// by the thread-exit hook; later calls on this thread are served by the bins directly.
pub fn flush_and_retire<H: Hooks>() {
    let cs = caches();
    if !live(cs) {
        return;
    }
    CACHES.with(|k| k.set(DEAD));
    flush_pair::<H>(cs);
    let mut head = SPARE.lock();
    // SAFETY: the pair was this thread's, and no longer is anyone's but ours until it is on
    // the list.
    unsafe { (*cs).next = *head as *mut Caches };
    *head = cs as usize;
}

/// Returns every cached object of this thread to the bins (the caches stay usable).
pub fn flush_current_thread<H: Hooks>() {
    let cs = caches();
    if live(cs) {
        flush_pair::<H>(cs);
    }
}

/// Flushes both caches of pair `cs`, this thread's (or no thread's), and its large slot.
fn flush_pair<H: Hooks>(cs: *mut Caches) {
    // SAFETY: the pair is this thread's; no other reference to its caches exists here.
    let ((host, hs), (other, os)) = unsafe { (host(cs), other(cs)) };
    flush_all::<H>(host, hs);
    flush_all::<H>(other, os);
    // SAFETY: as above; the large slot is only ever shared.
    if let Some((h, n)) = unsafe { &(*cs).large }.empty() {
        super::free_cached_run::<H>(h, n);
    }
}

/// This thread's large slot, if it has caches.
#[inline]
fn large_slot() -> Option<&'static LargeSlot> {
    let cs = caches();
    // SAFETY: a live pair stays mapped for the process (metadata memory); its large slot is
    // only ever shared.
    live(cs).then(|| unsafe { &(*cs).large })
}

/// A run of `n` pages from this thread's large slot, if it holds one of that length: its first
/// page. The caller checks it and records it live, as for the run cache.
#[inline]
pub fn take_large(n: usize) -> Option<usize> {
    large_slot()?.take(n)
}

/// Keeps the freed run of `n` pages at page `h` (its live length already taken) in this
/// thread's large slot if it can ([`LargeSlot::keep`]); the run the caller must still free,
/// if any (`(h, n)` itself when the thread has no slot or the run is too long for one).
#[inline]
pub fn keep_large(h: usize, n: usize) -> Option<(usize, usize)> {
    match large_slot() {
        Some(slot) if n <= super::run_cache::MAX_PAGES => slot.keep(h, n),
        _ => Some((h, n)),
    }
}

/// Empties every thread's large slot that stayed unused since the last call (all of them if
/// `all`), freeing the runs as the run cache's drain does. The purger's, every other tick.
pub fn drain_large<H: Hooks>(all: bool) {
    owed::each(|slots| {
        // SAFETY: every pair of slots on the list is the `slots` field of a pair of caches
        // (`start` registers nothing else), which lives for the process; its large slot is
        // only ever shared.
        let cs = unsafe {
            (slots as *const Slots)
                .byte_sub(core::mem::offset_of!(Caches, slots))
                .cast::<Caches>()
        };
        // SAFETY: as above.
        if let Some((h, n)) = unsafe { &(*cs).large }.drain(all) {
            super::free_cached_run::<H>(h, n);
        }
    });
}

/// Returns every object of `cache` to its bin and pays its slot's owed clear.
fn flush_all<H: Hooks>(cache: &mut Cache, slot: &Slot) {
    owed::settle(slot);
    for (c, s) in cache.stacks.iter_mut().enumerate() {
        if s.n > 0 {
            span::flush::<H>(cache.tier, c, &s.items[..s.n as usize]);
            s.n = 0;
            s.clean = 0;
        }
    }
}

/// Holds the list of spare caches across `fork` (see `heap::lock_all`).
pub fn lock_for_fork() {
    owed::lock_for_fork();
    SPARE.lock_for_fork();
}

/// Releases the lock taken by [`lock_for_fork`].
///
/// # Safety
/// Only from the fork handlers, after [`lock_for_fork`].
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe {
        SPARE.unlock_after_fork();
        owed::unlock_after_fork();
    }
}
