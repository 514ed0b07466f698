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
//! The storage is a `const`-initialised thread-local without a destructor, so access is a plain
//! TLS offset with no lazy-init check, usable before `main` and inside other destructors. A
//! never-used cache has capacity 0, so the first use of either path lands in the slow path,
//! which initialises the heap and registers a `pthread` key whose destructor flushes the cache
//! when the thread exits. After that the cache is `Dead` and the thread's remaining frees and
//! allocations go straight to the bins.

use super::size_class::{self, NCLASSES};
use super::{cached, span, Hooks};
use crate::mem::scope::TierIndex;
use core::cell::UnsafeCell;

/// Largest number of cached objects per class.
const MAX_CACHED: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Never used by this thread.
    Fresh,
    /// In use; flushed at thread exit.
    Active,
    /// The thread is exiting and its cache was flushed.
    Dead,
}

/// One class's stack of free objects.
///
/// Invariant: `clean <= n <= cap <= MAX_CACHED`; `items[..clean]` came from the bin and their
/// [`cached`] bits are clear, `items[clean..n]` were freed here and their bits are set. Popping
/// a clean object then needs no atomic operation (a batch of allocations costs one fewer per
/// object).
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

/// A thread's cache of objects of one tier.
struct Cache {
    stacks: [Stack; NCLASSES],
    state: State,
    /// The tier of every object on the stacks (the host cache: always 0).
    tier: TierIndex,
}

const EMPTY_STACK: Stack = Stack {
    n: 0,
    cap: 0,
    clean: 0,
    items: [core::ptr::null_mut(); MAX_CACHED],
};

thread_local! {
    static CACHE: UnsafeCell<Cache> = const {
        UnsafeCell::new(Cache { stacks: [EMPTY_STACK; NCLASSES], state: State::Fresh, tier: 0 })
    };
    /// The cache of the other tier this thread allocates on.
    static OTHER: UnsafeCell<Cache> = const {
        UnsafeCell::new(Cache { stacks: [EMPTY_STACK; NCLASSES], state: State::Fresh, tier: 0 })
    };
}

/// Allocates a host object of class `c`, or returns null when memory is exhausted.
#[inline(always)]
pub fn alloc<H: Hooks>(c: usize) -> *mut u8 {
    let p = CACHE.with(|cache| {
        // SAFETY: the cache is this thread's own; no reference to it outlives this call, and
        // the allocator is never re-entered from inside (nothing here allocates).
        pop_cached(unsafe { &mut *cache.get() }, c)
    });
    if !p.is_null() {
        return p;
    }
    alloc_host_slow::<H>(c)
}

/// The fast path of [`alloc`] alone: the most recently freed host object of class `c` in this
/// thread's cache, or null (the caller takes [`alloc`]). Makes no system call.
#[inline(always)]
pub fn pop_host(c: usize) -> *mut u8 {
    CACHE.with(|cache| {
        // SAFETY: as in `alloc`.
        pop_cached(unsafe { &mut *cache.get() }, c)
    })
}

/// The fast path of [`free`] alone: pushes host object `p` of class `c` on this thread's
/// cache; false if the stack is full or not in use yet (the caller takes [`free`]). Makes no
/// system call; a second free ends the process, as in [`free`].
#[inline(always)]
pub fn push_host(c: usize, p: *mut u8) -> bool {
    // SAFETY: as in `alloc`.
    push_cached(unsafe { &mut *host_cache() }, c, p)
}

/// [`alloc`] when the class's stack is empty.
#[cold]
#[inline(never)]
fn alloc_host_slow<H: Hooks>(c: usize) -> *mut u8 {
    // SAFETY: as in `alloc`.
    alloc_slow::<H>(unsafe { &mut *host_cache() }, c)
}

/// Frees a host object of class `c`.
#[inline(always)]
pub fn free<H: Hooks>(c: usize, p: *mut u8) {
    // SAFETY: as in `alloc`.
    if !push_cached(unsafe { &mut *host_cache() }, c, p) {
        free_host_slow::<H>(c, p);
    }
}

/// [`free`] when the class's stack is full or the cache is not in use.
#[cold]
#[inline(never)]
fn free_host_slow<H: Hooks>(c: usize, p: *mut u8) {
    // SAFETY: as in `alloc`.
    free_slow::<H>(unsafe { &mut *host_cache() }, c, p)
}

/// This thread's host cache, taken as a pointer by a closure that does nothing else, so that
/// `LocalKey::with` inlines to one TLS offset. With the whole push or pop inside the closure,
/// `with` was compiled out of line in some programs and reached the key's accessor by an
/// indirect call: 42% of the samples of a 16-byte alloc+free loop under `perf`, 13.5 ns a pair
/// against 9.5 after (2026-12-02).
///
/// `free` uses it; `alloc` keeps a closure that only pops (null when the stack is empty) and
/// leaves the slow path outside it. With `alloc` in this pointer form, with or without its
/// slow path split off, rustc 1.95's LLVM crashed compiling `alloc_races` (SIGSEGV in
/// `TargetMachine::getSymbol` under ThinLTO, not with one codegen unit); the cause is not
/// known, and the closure form compiles everywhere.
#[inline(always)]
fn host_cache() -> *mut Cache {
    CACHE.with(|cache| cache.get())
}

/// Allocates an object of class `c` on tier `t` (not the host), through the thread's second
/// cache, which takes tier `t` if it held another.
#[inline]
pub fn alloc_on<H: Hooks>(t: TierIndex, c: usize) -> *mut u8 {
    // SAFETY: as in `alloc`.
    let cache = unsafe { &mut *other_cache() };
    if cache.tier != t {
        flush_all::<H>(cache);
        cache.tier = t;
    }
    pop::<H>(cache, c)
}

/// Frees an object of class `c` of tier `t` (not the host): into the second cache if it holds
/// tier `t`, else to its bin.
#[inline]
pub fn free_on<H: Hooks>(t: TierIndex, c: usize, p: *mut u8) {
    // SAFETY: as in `alloc`.
    let cache = unsafe { &mut *other_cache() };
    if cache.tier == t {
        push::<H>(cache, c, p)
    } else {
        free_to_span::<H>(t, c, p)
    }
}

/// This thread's second cache (see [`host_cache`]).
#[inline(always)]
fn other_cache() -> *mut Cache {
    OTHER.with(|cache| cache.get())
}

#[inline(always)]
fn pop<H: Hooks>(cache: &mut Cache, c: usize) -> *mut u8 {
    let p = pop_cached(cache, c);
    if !p.is_null() {
        return p;
    }
    alloc_slow::<H>(cache, c)
}

/// The most recently freed object of class `c`, or null if the stack is empty (a stack never
/// holds null).
#[inline(always)]
fn pop_cached(cache: &mut Cache, c: usize) -> *mut u8 {
    let s = &mut cache.stacks[c];
    if s.n == 0 {
        return core::ptr::null_mut();
    }
    s.n -= 1;
    let p = s.items[s.n as usize];
    if s.n >= s.clean {
        cached::clear(p);
    } else {
        s.clean = s.n;
    }
    p
}

#[inline(always)]
fn push<H: Hooks>(cache: &mut Cache, c: usize, p: *mut u8) {
    if !push_cached(cache, c, p) {
        free_slow::<H>(cache, c, p)
    }
}

/// Pushes `p` on its class's stack; false if the stack is full (or not in use yet).
#[inline(always)]
fn push_cached(cache: &mut Cache, c: usize, p: *mut u8) -> bool {
    let s = &mut cache.stacks[c];
    if s.n >= s.cap {
        return false;
    }
    if !cached::mark(p) {
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

#[cold]
fn alloc_slow<H: Hooks>(cache: &mut Cache, c: usize) -> *mut u8 {
    match cache.state {
        State::Fresh => {
            if !start::<H>(cache) {
                return core::ptr::null_mut();
            }
        }
        State::Dead => {
            let mut one = [core::ptr::null_mut(); 1];
            return if span::refill::<H>(cache.tier, c, &mut one) == 1 {
                one[0]
            } else {
                core::ptr::null_mut()
            };
        }
        State::Active => {}
    }
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

#[cold]
fn free_slow<H: Hooks>(cache: &mut Cache, c: usize, p: *mut u8) {
    match cache.state {
        State::Fresh => {
            if !start::<H>(cache) {
                return free_to_span::<H>(cache.tier, c, p);
            }
        }
        State::Dead => return free_to_span::<H>(cache.tier, c, p),
        State::Active => {}
    }
    if !cached::mark(p) {
        double_free();
    }
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
    if !cached::mark(p) {
        double_free();
    }
    span::flush::<H>(t, c, &[p])
}

/// Makes this thread's cache usable: the heap is initialised and the exit hook registered.
fn start<H: Hooks>(cache: &mut Cache) -> bool {
    if !super::ensure_init::<H>() {
        return false;
    }
    for (c, s) in cache.stacks.iter_mut().enumerate() {
        s.cap = size_class::tcache_capacity(c);
    }
    cache.state = State::Active;
    super::register_thread_exit();
    true
}

/// Flushes this thread's cache into the bins and marks it dead. Called by the thread-exit hook;
/// later calls on this thread are served by the bins directly.
pub fn flush_and_retire<H: Hooks>() {
    for key in [&CACHE, &OTHER] {
        key.with(|cache| {
            // SAFETY: this thread's own cache; see `alloc`.
            let cache = unsafe { &mut *cache.get() };
            flush_all::<H>(cache);
            for s in &mut cache.stacks {
                s.cap = 0;
            }
            cache.state = State::Dead;
        })
    }
}

/// Returns every cached object of this thread to the bins (the caches stay usable).
pub fn flush_current_thread<H: Hooks>() {
    for key in [&CACHE, &OTHER] {
        key.with(|cache| {
            // SAFETY: this thread's own cache; see `alloc`.
            flush_all::<H>(unsafe { &mut *cache.get() })
        })
    }
}

fn flush_all<H: Hooks>(cache: &mut Cache) {
    for (c, s) in cache.stacks.iter_mut().enumerate() {
        if s.n > 0 {
            span::flush::<H>(cache.tier, c, &s.items[..s.n as usize]);
            s.n = 0;
            s.clean = 0;
        }
    }
}
