//! Per-thread heaps: the allocator's fast path.
//!
//! A thread has two heaps ([`owned::Local`]): one for the host, and one for the last other tier
//! it allocated on (a device, or tieralloc's internal tier in its workers), so allocating
//! inside a device scope costs what allocating on the host does. Each owns spans and allocates
//! from them with plain loads and stores ([`owned`]). Allocating on another tier first lets the
//! second heap's spans go ([`owned::abandon`]).
//!
//! A free of an object of a span the thread's heap owns goes straight back to that span. A free
//! of another thread's object is checked ([`span::check_remote_free`]: a locked instruction)
//! and waits in a per-class buffer of the heap of its tier, which goes to the spans' remote
//! bitmaps under their bin lock half a buffer at a time ([`span::flush`]); their owners merge
//! them when they run out of objects. An object freed by another thread is therefore never
//! handed out by that thread: it goes home to its span, as in mimalloc.
//!
//! The heaps live in metadata memory outside the managed range; the thread-local is one
//! pointer to them (`const`-initialised, without a destructor: a plain TLS offset, usable before
//! `main` and inside other destructors). Why not the heaps themselves: under `libtieralloc.so`
//! a preloaded library's thread-locals are carved out of every thread's stack, and 36 KiB of
//! caches there made `pthread_create` fail with `EINVAL` for threads with small stacks (node's
//! inspector thread asks for 32 KiB, 2026-12-02). The pointer is null until the thread's first
//! allocation or free, which lands in the slow path: it initialises the heap, takes a pair of
//! heaps (one a thread that exited gave back, or new metadata) and registers a `pthread` key
//! whose destructor lets their spans go when the thread exits. After that the pointer is
//! [`DEAD`], the pair goes back for another thread, and the thread's remaining frees and
//! allocations go straight to the bins.

use super::large_slot::LargeSlot;
use super::meta;
use super::owned::{self, Local};
use super::size_class::{self, NCLASSES};
use super::span::{self, Pending};
use super::Hooks;
use crate::mem::scope::TierIndex;
use crate::pal::lock::Lock;
use crate::pal::tls;
use core::sync::atomic::{AtomicPtr, Ordering};

/// Largest number of buffered remote frees per class.
const MAX_BUFFERED: usize = 64;

/// One class's buffer of objects freed by this thread into spans it does not own.
///
/// Invariant: `n <= cap <= MAX_BUFFERED`; each of `items[..n]` passed
/// [`span::check_remote_free`] (its freed bit is set).
struct Stack {
    /// Objects in the buffer.
    n: u32,
    /// Capacity for this class (0 until the heap is started).
    cap: u32,
    /// The objects; `items[..n]` are valid.
    items: [*mut u8; MAX_BUFFERED],
}

/// One tier's heap of a thread: its spans and its buffers of remote frees.
struct Heap {
    local: Local,
    remote: [Stack; NCLASSES],
}

/// A thread's two heaps: the host's, and the one of the last other tier it allocated on.
///
/// Other threads read and write `pending` (under bin locks): it is only ever reached through
/// shared references, never inside a `&mut Caches`.
struct Caches {
    host: Heap,
    other: Heap,
    /// The next pair on the list of pairs given back by exited threads.
    next: *mut Caches,
    /// The next pair on the list of every pair ([`ALL`]).
    all_next: AtomicPtr<Caches>,
    /// Each heap's spans with remote frees to merge.
    pending: [Pending; 2],
    /// The large run this thread freed last, kept for its next allocation of that size.
    large: LargeSlot,
}

/// The host heap of pair `cs` and its pending lists.
///
/// # Safety
/// `cs` is a live pair that only this thread uses (its own, or one no thread has), and no other
/// reference to its `host` heap exists.
#[inline(always)]
unsafe fn host<'a>(cs: *mut Caches) -> (&'a mut Heap, &'a Pending) {
    // SAFETY: the caller's contract; `pending` is a disjoint field, only shared.
    unsafe { (&mut (*cs).host, &(*cs).pending[0]) }
}

/// The second heap of pair `cs` and its pending lists.
///
/// # Safety
/// As [`host`], for the `other` heap.
#[inline(always)]
unsafe fn other<'a>(cs: *mut Caches) -> (&'a mut Heap, &'a Pending) {
    // SAFETY: as in `host`.
    unsafe { (&mut (*cs).other, &(*cs).pending[1]) }
}

/// The value of [`caches`] once the thread's exit hook ran: its frees and allocations go
/// straight to the bins.
const DEAD: *mut Caches = 1 as *mut Caches;

/// Pairs given back by exited threads, for the next threads that start (their spans let go,
/// their buffers empty).
static SPARE: Lock<usize> = Lock::new(0);
/// Every pair ever made (pairs are reused, never freed), linked through `all_next`.
static ALL: AtomicPtr<Caches> = AtomicPtr::new(core::ptr::null_mut());

/// This thread's heaps (the thread-local word [`tls::heaps`]): null before its first
/// allocation or free, [`DEAD`] after its exit hook, else a pair in metadata memory that only
/// this thread uses.
///
/// Through `thread_local!`, with the whole operation inside the closure, `with` was compiled
/// out of line in some programs and reached the key's accessor by an indirect call: 42% of the
/// samples of a 16-byte alloc+free loop under `perf`, 13.5 ns a pair against 9.5 after
/// (2026-12-02). Its direct read, inlined into other crates on `alloc`'s path, crashed rustc
/// 1.95's LLVM (see [`pop_host`], which is therefore never inlined).
#[inline(always)]
fn caches() -> *mut Caches {
    tls::heaps::get() as *mut Caches
}

/// Sets this thread's heaps pointer (see [`caches`]).
#[inline(always)]
fn set_caches(cs: *mut Caches) {
    tls::heaps::set(cs as usize)
}

/// True if `cs` points to a pair of heaps (not null, not [`DEAD`]).
#[inline(always)]
fn live(cs: *mut Caches) -> bool {
    cs as usize > DEAD as usize
}

/// Allocates a host object of class `c`, or returns null when memory is exhausted.
#[inline(always)]
pub fn alloc<H: Hooks>(c: usize) -> *mut u8 {
    let (p, c) = pop_host(c);
    if !p.is_null() {
        return p;
    }
    alloc_host_slow::<H>(c)
}

/// The fast path of [`alloc`] alone: a free host object of class `c` from this thread's
/// current span of that class, or null (the caller takes [`alloc`]). Makes no system call.
///
/// Never inlined: inlined into other crates, the thread-local read in this form crashed
/// rustc 1.95's LLVM compiling `alloc_races` (SIGSEGV in `AsmPrinter::emitFunctionBody` under
/// ThinLTO, with or without debug info); compiled once here it does not. The closure form
/// that avoided the crash before (`CACHES.with(|k| ..)` around the whole pop) was not inlined
/// either, and reached the key's accessor by an indirect call: a 16-byte batch took 12.2-12.8
/// ns an operation that way, 11.2-11.4 this way (two runs each, 2026-12-02). The crash came
/// back on 2026-12-03 without any thread-local read inlined: with a call to [`pop_other`] in
/// `heap::alloc`'s inlined body (one function further down, in `heap::alloc_other`, it did
/// not). It still crashes with the thread-local read done in `asm!` (`pal::tls`,
/// 2026-12-03), so the read is not the cause; inlined, a 16-byte pair would run 134
/// instructions instead of 139. After changing what `alloc` or `dealloc` inline, compile
/// `alloc_races` (the test command does) before measuring.
///
/// It hands the class back beside the object (in a second return register): the caller then
/// keeps nothing across the call for its slow path, and saves and restores one register
/// fewer (with the next change, 167 → 164 instructions a 16-byte alloc+free pair,
/// 2026-12-03).
#[inline(never)]
pub fn pop_host(c: usize) -> (*mut u8, usize) {
    take_host(c)
}

/// [`pop_host`] inlined, for the C entry points ([`super::alloc_cached`], compiled into
/// `libtieralloc.so` only, where the LLVM crash described at [`pop_host`] does not occur):
/// `malloc` reached the closure form through a call to `LocalKey::with` (the C batch loop took
/// 24.8 ns instead of 22.2, 2026-12-02).
#[inline(always)]
pub fn pop_host_outside(c: usize) -> *mut u8 {
    take_host(c).0
}

/// [`pop_host_outside`] from the current span's objects freed last only
/// ([`owned::take_last`]); null otherwise. Makes no call.
#[inline(always)]
pub fn pop_host_last(c: usize) -> *mut u8 {
    match host_heap() {
        Some(heap) => owned::take_last(&mut heap.local, c),
        None => core::ptr::null_mut(),
    }
}

/// The body of [`pop_host`] and [`pop_host_outside`].
#[inline(always)]
fn take_host(c: usize) -> (*mut u8, usize) {
    match host_heap() {
        Some(heap) => owned::take_class(&mut heap.local, c),
        None => (core::ptr::null_mut(), c),
    }
}

/// This thread's host heap, for one operation of the fast path; `None` before its first
/// allocation or after its exit hook.
#[inline(always)]
fn host_heap<'a>() -> Option<&'a mut Heap> {
    let cs = caches();
    if !live(cs) {
        return None;
    }
    // SAFETY: a live pair is this thread's own (only this thread has its pointer); the caller
    // keeps the reference for one operation only, and the allocator is never re-entered from
    // inside one (nothing on the fast path allocates).
    Some(unsafe { host(cs) }.0)
}

/// [`pop_host`] for tier `t` (not the host): an object of class `c` from the current span of
/// the thread's second heap, if that heap holds tier `t`, taken from the objects it freed
/// last ([`owned::take_last`]); else null (the caller takes [`alloc_on`], which goes on to
/// the bitmap). Inlined into `heap::alloc_other`, itself never inlined (see [`pop_host`]):
/// with no call on its path, that function saves no register.
#[inline(always)]
pub fn pop_other(t: TierIndex, c: usize) -> *mut u8 {
    let cs = caches();
    if !live(cs) {
        return core::ptr::null_mut();
    }
    // SAFETY: as in `host_heap`.
    let (heap, _) = unsafe { other(cs) };
    if heap.local.tier != t {
        return core::ptr::null_mut();
    }
    owned::take_last(&mut heap.local, c)
}

/// The fast path of [`free`] alone: host object `p` of class `c` goes back to its span if this
/// thread's host heap owns it, else into the heap's buffer of remote frees; false if the
/// buffer is full or the thread has no heaps (the caller takes [`free`]). Makes no system
/// call; a second free ends the process, as in [`free`].
#[inline(always)]
pub fn push_host<H: Hooks>(c: usize, p: *mut u8) -> bool {
    let Some(heap) = host_heap() else {
        return false;
    };
    owned::free_local::<H>(&mut heap.local, c, p) || buffer(&mut heap.remote[c], c, p)
}

/// [`push_host`] into the current span of class `c` of this thread's host heap only (see
/// [`owned::free_current`]); false otherwise, with `p` untouched. Makes no call.
#[inline(always)]
pub fn free_current_host(c: usize, p: *mut u8) -> bool {
    host_heap().is_some_and(|heap| owned::free_current(&mut heap.local, c, p))
}

/// [`push_host`] after [`free_current_host`] declined `p`: into its span if this thread's host
/// heap owns it (not its class's current span), else into the heap's buffer of remote frees;
/// false if the buffer is full or the thread has no heaps.
#[inline(always)]
pub fn push_host_past_current<H: Hooks>(c: usize, p: *mut u8) -> bool {
    let Some(heap) = host_heap() else {
        return false;
    };
    owned::free_owned::<H>(&mut heap.local, c, p) || buffer(&mut heap.remote[c], c, p)
}

/// Frees small object `p` of class `c`, whatever its tier: a host object through this
/// thread's host heap (into its span if the heap owns it, else into the heap's buffer of
/// remote frees), another tier's through the second heap.
///
/// The tier is looked up first, though only the host heap owns host spans: trying the host
/// heap first saved 4 of a host pair's 149 instructions, but sent every device-tier free
/// through a failed host attempt and a call, and device-tier pairs took 1.6× the host's time
/// in the report instead of 1.2× (2026-12-03).
#[inline(always)]
pub fn free_small<H: Hooks>(c: usize, p: *mut u8) {
    match span::tier_of(p) {
        0 => {
            let cs = caches();
            if live(cs) {
                // SAFETY: as in `host_heap`.
                let (heap, _) = unsafe { host(cs) };
                if owned::free_local::<H>(&mut heap.local, c, p) {
                    return;
                }
            }
            free_not_owned::<H>(c, p)
        }
        t => free_on_tier::<H>(t, c, p),
    }
}

/// [`free_on`] out of the host path's line: inlined there, it took registers from the host
/// free, which then saved and restored five at every call. Only a free into the second heap's
/// current span is done here, with no call on the way (so no register is saved); the rest
/// goes to [`free_on`] by a jump.
#[inline(never)]
fn free_on_tier<H: Hooks>(t: TierIndex, c: usize, p: *mut u8) {
    let cs = caches();
    if live(cs) {
        // SAFETY: as in `host_heap`.
        let (heap, _) = unsafe { other(cs) };
        if heap.local.tier == t && owned::free_current(&mut heap.local, c, p) {
            return;
        }
    }
    free_on_outlined::<H>(t, c, p)
}

/// [`free_on`], never inlined (see [`free_on_tier`]).
#[inline(never)]
fn free_on_outlined<H: Hooks>(t: TierIndex, c: usize, p: *mut u8) {
    free_on::<H>(t, c, p)
}

/// [`free_small`] for a host object of a span this thread's host heap does not own: into the
/// heap's buffer of remote frees, or its slow path.
#[inline(never)]
fn free_not_owned<H: Hooks>(c: usize, p: *mut u8) {
    let cs = caches();
    if live(cs) {
        // SAFETY: as in `host_heap`.
        let (heap, _) = unsafe { host(cs) };
        if buffer(&mut heap.remote[c], c, p) {
            return;
        }
    }
    free_host_slow::<H>(c, p)
}

/// Buffers `p`, an object of class `c` of a span this thread does not own, after checking the
/// free; false if the buffer is full.
#[inline(always)]
fn buffer(s: &mut Stack, c: usize, p: *mut u8) -> bool {
    if s.n >= s.cap {
        return false;
    }
    span::check_remote_free(c, p);
    s.items[s.n as usize] = p;
    s.n += 1;
    true
}

/// [`alloc`] when the current span has no free object.
#[cold]
#[inline(never)]
fn alloc_host_slow<H: Hooks>(c: usize) -> *mut u8 {
    match this_thread::<H>() {
        Some(cs) => {
            // SAFETY: as in `host_heap`.
            let (heap, pending) = unsafe { host(cs) };
            alloc_from::<H>(heap, pending, c)
        }
        None => span::take_unowned::<H>(0, c),
    }
}

/// An object of class `c` from `heap`, its slow path if need be.
#[inline(always)]
fn alloc_from<H: Hooks>(heap: &mut Heap, pending: &Pending, c: usize) -> *mut u8 {
    let p = owned::take(&mut heap.local, c);
    if !p.is_null() {
        return p;
    }
    owned::take_slow::<H>(&mut heap.local, pending, c)
}

/// Frees a host object of class `c`.
#[inline(always)]
pub fn free<H: Hooks>(c: usize, p: *mut u8) {
    if !push_host::<H>(c, p) {
        free_host_slow::<H>(c, p);
    }
}

/// [`free`] when the buffer is full or the thread has no heaps yet.
#[cold]
#[inline(never)]
fn free_host_slow<H: Hooks>(c: usize, p: *mut u8) {
    match this_thread::<H>() {
        Some(cs) => {
            // SAFETY: as in `host_heap`.
            let (heap, _) = unsafe { host(cs) };
            free_into::<H>(heap, c, p)
        }
        None => free_direct::<H>(0, c, p),
    }
}

/// Frees `p` (class `c`, of `heap`'s tier) through `heap`: into its span if the heap owns it,
/// else into the buffer, sending the older half to the spans first if it is full.
#[inline(always)]
fn free_into<H: Hooks>(heap: &mut Heap, c: usize, p: *mut u8) {
    if !owned::free_local::<H>(&mut heap.local, c, p) && !buffer(&mut heap.remote[c], c, p) {
        free_full::<H>(heap, c, p);
    }
}

/// [`free_into`] when `p` is not the heap's and its buffer is full.
#[cold]
#[inline(never)]
fn free_full<H: Hooks>(heap: &mut Heap, c: usize, p: *mut u8) {
    let s = &mut heap.remote[c];
    // `n > 0`: a buffer of capacity 0 (a heap that never started) holds nothing to send.
    if s.n > 0 && s.n >= s.cap {
        let half = (s.cap / 2).max(1) as usize;
        span::flush::<H>(heap.local.tier, c, &s.items[..half]);
        s.items.copy_within(half..s.n as usize, 0);
        s.n -= half as u32;
    }
    if !buffer(s, c, p) {
        // A buffer of capacity 0: a heap that never started.
        span::check_remote_free(c, p);
        span::flush::<H>(heap.local.tier, c, &[p]);
    }
}

/// Frees `p` (class `c`, tier `t`) straight to its span's remote bitmap (a thread without
/// heaps, or an object of a tier its second heap does not hold).
fn free_direct<H: Hooks>(t: TierIndex, c: usize, p: *mut u8) {
    span::check_remote_free(c, p);
    span::flush::<H>(t, c, &[p])
}

/// This thread's heaps, started on its first call; `None` once its exit hook ran (or if the
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
/// heap, which takes tier `t` if it held another.
#[inline]
pub fn alloc_on<H: Hooks>(t: TierIndex, c: usize) -> *mut u8 {
    let Some(cs) = this_thread::<H>() else {
        return span::take_unowned::<H>(t, c);
    };
    // SAFETY: as in `host_heap`.
    let (heap, pending) = unsafe { other(cs) };
    if heap.local.tier != t {
        let_go::<H>(heap, pending);
        heap.local.tier = t;
    }
    alloc_from::<H>(heap, pending, c)
}

/// Frees an object of class `c` of tier `t` (not the host): through the second heap if it
/// holds tier `t`, else to its span.
#[inline]
pub fn free_on<H: Hooks>(t: TierIndex, c: usize, p: *mut u8) {
    let cs = caches();
    // SAFETY: as in `host_heap`.
    match live(cs).then(|| unsafe { other(cs) }) {
        Some((heap, _)) if heap.local.tier == t => free_into::<H>(heap, c, p),
        _ => free_direct::<H>(t, c, p),
    }
}

/// Gives this thread its heaps: the heap is initialised, a pair is taken (given back by an
/// exited thread, or new) and the exit hook registered. `None` if the heap cannot start, or
/// no metadata memory or heap id is left (the thread then goes straight to the bins).
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
        // Zeroed memory is a pair of empty heaps with capacity 0 and empty pending lists;
        // metadata memory is 64-byte aligned, enough for the heaps' per-class lines.
        const { assert!(core::mem::align_of::<Caches>() <= 64) };
        let cs = meta::alloc(core::mem::size_of::<Caches>()) as *mut Caches;
        if cs.is_null() {
            return None;
        }
        // SAFETY: metadata memory is never freed; the pending lists are only ever shared.
        let pending: &'static [Pending; 2] = unsafe { &(*cs).pending };
        let (Some(h), Some(o)) = (span::register(&pending[0]), span::register(&pending[1])) else {
            return None;
        };
        // SAFETY: the pair is ours alone until it is on a list.
        unsafe {
            (*cs).host.local.id = h;
            (*cs).other.local.id = o;
        }
        let mut head = ALL.load(Ordering::Acquire);
        loop {
            // SAFETY: as above; `all_next` is only ever shared.
            unsafe { &(*cs).all_next }.store(head, Ordering::Relaxed);
            match ALL.compare_exchange_weak(head, cs, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        cs
    } else {
        spare
    };
    // SAFETY: the pair is ours alone now (new, or taken off the list); its pending lists are
    // not touched here.
    for heap in unsafe { [&mut (*cs).host, &mut (*cs).other] } {
        heap.local.tier = 0;
        owned::set_up(&mut heap.local);
        for (c, s) in heap.remote.iter_mut().enumerate() {
            s.cap = size_class::tcache_capacity(c);
        }
    }
    // SAFETY: as above.
    unsafe { (*cs).next = core::ptr::null_mut() };
    set_caches(cs);
    super::register_thread_exit();
    Some(cs)
}

/// Lets this thread's heaps go and gives them back for another thread. Called by the
/// thread-exit hook; later calls on this thread are served by the bins directly.
pub fn flush_and_retire<H: Hooks>() {
    let cs = caches();
    if !live(cs) {
        return;
    }
    set_caches(DEAD);
    flush_pair::<H>(cs);
    let mut head = SPARE.lock();
    // SAFETY: the pair was this thread's, and no longer is anyone's but ours until it is on
    // the list.
    unsafe { (*cs).next = *head as *mut Caches };
    *head = cs as usize;
}

/// Sends this thread's buffered frees to their spans and lets its spans go to the bins, where
/// the free ones go back to the page runs (the heaps stay usable).
pub fn flush_current_thread<H: Hooks>() {
    let cs = caches();
    if live(cs) {
        flush_pair::<H>(cs);
    }
}

/// Lets both heaps of pair `cs` go, this thread's (or no thread's), and empties its large
/// slot.
fn flush_pair<H: Hooks>(cs: *mut Caches) {
    // SAFETY: the pair is this thread's; no other reference to its heaps exists here.
    let ((host, hp), (other, op)) = unsafe { (host(cs), other(cs)) };
    let_go::<H>(host, hp);
    let_go::<H>(other, op);
    // SAFETY: as above; the large slot is only ever shared.
    if let Some((h, n)) = unsafe { &(*cs).large }.empty() {
        super::free_cached_run::<H>(h, n);
    }
}

/// Sends `heap`'s buffered frees to their spans, then lets its spans go.
fn let_go<H: Hooks>(heap: &mut Heap, pending: &Pending) {
    for (c, s) in heap.remote.iter_mut().enumerate() {
        if s.n > 0 {
            span::flush::<H>(heap.local.tier, c, &s.items[..s.n as usize]);
            s.n = 0;
        }
    }
    owned::abandon::<H>(&mut heap.local, pending);
}

/// This thread's large slot, if it has heaps.
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
    let mut at = ALL.load(Ordering::Acquire);
    while !at.is_null() {
        // SAFETY: pairs on the list live for the process (metadata memory never unmapped);
        // their large slots and `all_next` are only ever shared.
        let (large, next) = unsafe { (&(*at).large, &(*at).all_next) };
        if let Some((h, n)) = large.drain(all) {
            super::free_cached_run::<H>(h, n);
        }
        at = next.load(Ordering::Acquire);
    }
}

/// Holds the list of spare heaps across `fork` (see `heap::lock_all`).
pub fn lock_for_fork() {
    SPARE.lock_for_fork();
}

/// Releases the lock taken by [`lock_for_fork`].
///
/// # Safety
/// Only from the fork handlers, after [`lock_for_fork`].
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { SPARE.unlock_after_fork() }
}
