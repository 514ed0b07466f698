//! The heap: turns `Layout`s into addresses of the managed range.
//!
//! - Small requests (at most 8 KiB, see [`size_class`]) are objects in 64 or 128 KiB spans
//!   ([`span`]), each owned by the per-thread heap that allocates from it ([`owned`],
//!   [`tcache`]); other threads' frees go home to the spans' remote bitmaps, and the per-class
//!   bins keep the spans of threads that exited.
//! - Larger requests, and any alignment above 8 KiB, are page runs ([`pages`]), resized in place
//!   when the following pages are free and purged back to the OS once enough are free.
//! - Requests placed on a device tier (`crate::tiering::placement`) go through each thread's second
//!   heap, which holds one tier other than the host at a time; their fresh spans and runs are
//!   created on the device.
//!
//! All metadata (span bitmaps and descriptors, run tags, thread heaps) lives outside the managed
//! range. Initialisation happens at the first allocation, from any thread, before or after
//! `main`; `fork` is made safe by holding every heap lock across it.

pub mod by_address;
pub mod cached;
pub mod check;
pub mod hooks;
pub mod large_slot;
pub mod meta;
pub mod owned;
pub mod pages;
pub mod purge;
pub mod run_cache;
pub mod size_class;
pub mod span;
pub mod tcache;

use crate::config;
use crate::mem::scope::{self, TierIndex};
use crate::mem::{arena, pagemap};
use crate::pal::sys;
use crate::pal::thread;
use core::sync::atomic::{AtomicU32, Ordering};
pub use hooks::Hooks;
use pages::PAGES;

/// Whether the heap started (run once; racing callers yield until it is done).
static INIT: spin::once::Once<bool, spin::relax::Yield> = spin::once::Once::new();

/// `pthread` key whose destructor flushes an exiting thread's cache (set during start-up).
static THREAD_KEY: AtomicU32 = AtomicU32::new(0);

/// Initialises the heap once; true when it is usable. Safe to call from any thread, any time:
/// concurrent callers wait for the first one.
#[inline]
pub fn ensure_init<H: Hooks>() -> bool {
    match INIT.get() {
        Some(&ok) => ok,
        None => init_slow::<H>(),
    }
}

#[cold]
fn init_slow<H: Hooks>() -> bool {
    let mut first = false;
    let ok = *INIT.call_once(|| {
        first = true;
        init_once::<H>()
    });
    if first && ok {
        H::started();
    } else if first {
        let mut buf = [0u8; 20];
        sys::write_stderr(&[
            b"tieralloc: could not reserve the managed range (",
            sys::fmt_u64((config::arena_size() >> 20) as u64, &mut buf),
            b" MiB asked); allocations will fail. Set TIERALLOC_ARENA to a smaller size.\n",
        ]);
    }
    ok
}

fn init_once<H: Hooks>() -> bool {
    if !crate::mem::ensure_init() {
        return false;
    }
    let pages = arena::pages();
    if !span::init(pages)
        || !cached::init(pages)
        || !run_cache::init(pages)
        || !PAGES.lock().init(pages)
    {
        return false;
    }
    purge::init();
    let Some(key) = thread::exit_key(thread_exit::<H>) else {
        return false;
    };
    THREAD_KEY.store(key, Ordering::Release);
    config::check_unknown();
    true
}

/// Arranges for [`thread_exit`] to run when the calling thread exits.
pub(crate) fn register_thread_exit() {
    thread::arm_exit_key(THREAD_KEY.load(Ordering::Acquire));
}

unsafe extern "C" fn thread_exit<H: Hooks>(_: *mut libc::c_void) {
    tcache::flush_and_retire::<H>();
}

/// Ends the process on a second free of a small object.
#[cold]
pub(crate) fn double_free() -> ! {
    sys::fatal("double free detected (the object was freed already)")
}

/// Takes every heap lock on this thread, in the one order all paths use.
pub(crate) fn lock_all() {
    tcache::lock_for_fork();
    span::lock_for_fork();
    PAGES.lock_for_fork();
    meta::lock_for_fork();
}

/// Releases the locks [`lock_all`] took.
///
/// # Safety
/// This thread (or, in a fork child, its copy) took them with [`lock_all`].
pub(crate) unsafe fn unlock_all() {
    // SAFETY: forwarded contract.
    unsafe {
        meta::unlock_after_fork();
        PAGES.unlock_after_fork();
        span::unlock_after_fork();
        tcache::unlock_after_fork();
    }
}

/// Pages needed for `size` bytes, or `None` if it cannot be represented.
fn pages_for(size: usize) -> Option<usize> {
    let n = size.checked_add(sys::PAGE_SIZE - 1)? >> sys::PAGE_SHIFT;
    (n <= u32::MAX as usize / 2).then_some(n.max(1))
}

/// Allocates `size` bytes aligned to `align` on this thread's scope tier. Null when the
/// managed range is exhausted.
#[inline(always)]
pub fn alloc<H: Hooks>(size: usize, align: usize) -> *mut u8 {
    if align > 16 {
        return alloc_aligned::<H>(size, align);
    }
    let t = scope::current();
    match size_class::class_of_16(size, align) {
        Some(c) if t == 0 => tcache::alloc::<H>(c),
        Some(c) => alloc_other::<H>(t, c),
        None if t == 0 => alloc_large::<H>(size, align, false, 0),
        None => alloc_in::<H>(t, size, align, false),
    }
}

/// [`alloc`] for alignments above 16, out of the fast path's line.
#[inline(never)]
fn alloc_aligned<H: Hooks>(size: usize, align: usize) -> *mut u8 {
    alloc_in::<H>(scope::current(), size, align, false)
}

/// [`alloc`] of a small object of class `c` in the scope of tier `t` (not the host): from the
/// current span of the thread's second heap if that heap holds the tier (it took the tier
/// through `prepare`, so the tier exists), else through [`alloc_class`]. The class is all the
/// request needs: an object of class `c` has room and alignment for it. The class comes from
/// `alloc`, computed once: a device-tier pair ran 225 instructions when this function computed
/// it again, 241 through `alloc_in` every time (2026-12-03). Its fast path makes no call (the
/// rest is reached by a jump): a device-tier pair ran 188 instructions before, 177 after, and
/// 160 once the thread-local reads stopped looking like calls to the compiler (`pal::tls`).
/// With the second heap's test inlined into `alloc`, rustc 1.95's LLVM crashed compiling
/// `alloc_races`, as described at [`tcache::pop_host`].
#[inline(never)]
fn alloc_other<H: Hooks>(t: TierIndex, c: usize) -> *mut u8 {
    let p = tcache::pop_other(t, c);
    if !p.is_null() {
        return p;
    }
    alloc_class::<H>(t, c)
}

/// An object of class `c` in the scope of tier `t`, through the thread's heap of the tier it
/// is placed on. Out of line, so that [`alloc_other`] reaches it by a jump.
#[inline(never)]
fn alloc_class<H: Hooks>(t: TierIndex, c: usize) -> *mut u8 {
    alloc_prepared::<H>(H::prepare(t), c)
}

/// [`alloc_class`] once `t` is prepared (`H::prepare`).
#[inline(always)]
fn alloc_prepared<H: Hooks>(t: TierIndex, c: usize) -> *mut u8 {
    if t == 0 {
        tcache::alloc::<H>(c)
    } else {
        tcache::alloc_on::<H>(t, c)
    }
}

/// The fast path of [`alloc`] alone: a host object from this thread's cache, or null when the
/// caller must take [`alloc`] (a tier scope, a page run, an empty stack). Makes no system
/// call, so a C wrapper need not save `errno` around it.
#[inline(always)]
pub fn alloc_cached(size: usize, align: usize) -> *mut u8 {
    fast_class(size, align).map_or(core::ptr::null_mut(), tcache::pop_host_outside)
}

/// The class of a host allocation of `size` and `align` that the fast path may serve: `None`
/// inside a tier scope or for a page run.
#[inline(always)]
fn fast_class(size: usize, align: usize) -> Option<usize> {
    if scope::current() != 0 {
        return None;
    }
    size_class::class_of(size, align)
}

/// [`alloc_cached`] from the objects this thread freed last only (see
/// [`owned::take_last`]): null for anything else. Makes no call, so a C `malloc` that tries it
/// first and jumps on otherwise saves no register.
#[inline(always)]
pub fn alloc_last(size: usize, align: usize) -> *mut u8 {
    fast_class(size, align).map_or(core::ptr::null_mut(), tcache::pop_host_last)
}

/// Allocates zeroed memory on this thread's scope tier. Fresh pages are known to be zero and
/// are not written.
#[inline]
pub fn alloc_zeroed<H: Hooks>(size: usize, align: usize) -> *mut u8 {
    let t = scope::current();
    if t != 0 {
        return alloc_in::<H>(t, size, align, true);
    }
    match size_class::class_of(size, align) {
        Some(c) => {
            let p = tcache::alloc::<H>(c);
            if !p.is_null() {
                // SAFETY: p is a fresh object of at least `size` bytes.
                unsafe { core::ptr::write_bytes(p, 0, size) };
            }
            p
        }
        None => alloc_large::<H>(size, align, true, 0),
    }
}

/// Allocates on tier index `t` (falling back to the host if that device cannot be used),
/// zeroed if `zero`. Objects of another tier than the host go through the thread's second
/// heap ([`tcache::alloc_on`]), and zeroing
/// skips bytes that are device-resident and never touched (they read as zero already), so
/// allocating them does not fault their pages back.
#[inline(never)]
pub fn alloc_in<H: Hooks>(t: TierIndex, size: usize, align: usize, zero: bool) -> *mut u8 {
    let t = H::prepare(t);
    let Some(c) = size_class::class_of(size, align) else {
        return alloc_large::<H>(size, align, zero, t);
    };
    let p = alloc_prepared::<H>(t, c);
    if zero && !p.is_null() && !(t != 0 && H::reads_as_zero(p as usize, size)) {
        // SAFETY: p is a fresh object of at least `size` bytes.
        unsafe { core::ptr::write_bytes(p, 0, size) };
    }
    p
}

#[cold]
fn alloc_large<H: Hooks>(size: usize, align: usize, zero: bool, t: TierIndex) -> *mut u8 {
    if !ensure_init::<H>() {
        return core::ptr::null_mut();
    }
    let Some(n) = pages_for(size) else {
        return core::ptr::null_mut();
    };
    if align <= sys::PAGE_SIZE && (t == 0 || t == scope::INTERNAL) {
        if let Some(page) = tcache::take_large(n).or_else(|| run_cache::pop(n)) {
            if cached_run_is_fresh(page, n) {
                run_cache::set_live(page, n);
                let p = arena::addr_of(page) as *mut u8;
                if zero {
                    // SAFETY: the run is ours and `n` pages long; it was used before (warm).
                    unsafe { core::ptr::write_bytes(p, 0, size) };
                }
                return p;
            }
            // Moved, locked or advised while it waited (a policy or chaos may move any
            // large run's pages): freed the way every run is once pages can be claimed.
            end_large::<H>(page);
        }
    }
    let align = align.max(sys::PAGE_SIZE);
    let Some((page, is_zero)) = PAGES.lock().alloc(n, align, pagemap::Use::Large) else {
        return core::ptr::null_mut();
    };
    let p = arena::addr_of(page) as *mut u8;
    // Created on the device: the pages read as zero until touched.
    let on_device = t != 0 && t != scope::INTERNAL && H::place_fresh(page, n, t as u16 - 1);
    if zero && !is_zero && !on_device {
        // SAFETY: the run is ours and `n` pages long.
        unsafe { core::ptr::write_bytes(p, 0, size) };
    }
    p
}

/// Frees `p`, allocated with this `size` and `align`.
///
/// # Safety
/// `p` was returned by this heap for the same size and alignment and is not used afterwards.
#[inline(always)]
pub unsafe fn dealloc<H: Hooks>(p: *mut u8, size: usize, align: usize) {
    if align > 16 {
        // SAFETY: forwarded contract.
        return unsafe { dealloc_aligned::<H>(p, size, align) };
    }
    match size_class::class_of_16(size, align) {
        Some(c) => tcache::free_small::<H>(c, p),
        None => free_large::<H>(p),
    }
}

/// [`dealloc`] for alignments above 16, out of the fast path's line (see
/// [`size_class::class_of_16`]).
///
/// # Safety
/// As [`dealloc`].
#[inline(never)]
unsafe fn dealloc_aligned<H: Hooks>(p: *mut u8, size: usize, align: usize) {
    match size_class::class_of(size, align) {
        Some(c) => tcache::free_small::<H>(c, p),
        None => free_large::<H>(p),
    }
}

#[cold]
fn free_large<H: Hooks>(p: *mut u8) {
    let addr = p as usize;
    if !arena::contains(addr) || addr & (sys::PAGE_SIZE - 1) != 0 {
        sys::fatal("free of a pointer that tieralloc did not allocate");
    }
    let h = arena::page_of(addr);
    // One swap ends the run for every path: a second free of it finds 0.
    let n = run_cache::take_live(h);
    if n == 0 {
        sys::fatal("free of a large pointer that is not live (double free or wrong layout)");
    }
    // This thread's large slot first, then the shared run cache; what neither keeps goes to
    // the free runs (warm, for the purge delay).
    let rest = if cached_run_is_fresh(h, n) {
        tcache::keep_large(h, n).filter(|&(h, n)| !run_cache::push(h, n))
    } else {
        Some((h, n))
    };
    match rest {
        Some((h, _)) => {
            end_large::<H>(h);
        }
        None => purge::ensure_running::<H>(),
    }
}

/// Frees the run of `n` pages at `h`, taken out of a cache of freed runs (its live length is
/// 0): decommitted at once while page claims are off, else through the take-back of freed
/// pages (a migration may hold them, or have moved them to a device).
pub(crate) fn free_cached_run<H: Hooks>(h: usize, n: usize) {
    if pagemap::claims_enabled() {
        let len = end_large::<H>(h);
        debug_assert_eq!(len, n, "a cached run keeps its length");
    } else {
        PAGES.lock().free_cached(h, n);
    }
}

/// Whether the large run `[h, h+n)` may enter or leave the run cache as it is: always while
/// no page can be locked ([`pagemap::claims_enabled`] false); after that, only if every page
/// reads as the heap hands a page out (on the host, unlocked, no duplicate, no advice), so
/// that a run from the cache is indistinguishable from a fresh one. A run that fails the
/// check goes through the take-back of freed pages ([`end_large`]), which waits for the
/// migrations holding its pages and releases its device frames and duplicates. The check is
/// a snapshot: a migration that locks a page just after it finds a live run (the run was
/// popped) or a cached one (the next pop checks again), never a run in the free runs.
#[inline]
fn cached_run_is_fresh(h: usize, n: usize) -> bool {
    !pagemap::claims_enabled() || pagemap::all_fresh_entries(h, n, pagemap::Use::Large)
}

/// Ends the large run at page `h` and gives its pages back. The run is ended under the
/// page-run lock before [`give_back`] claims its pages: claimed pages read Free, and the run
/// could no longer be found (the count of large pages would never go down). Its length.
fn end_large<H: Hooks>(h: usize) -> usize {
    let Some(len) = PAGES.lock().take_large(h) else {
        sys::fatal("free of a large pointer that is not live (heap corrupted)");
    };
    give_back::<H>(h, len, |heap| heap.release_large(h, len));
    len
}

/// Returns pages `[h, h+n)`, which the caller took out of use, to the page runs: `put` runs
/// under the page-run lock and publishes them free.
///
/// Once page entries can be locked by others ([`pagemap::claims_enabled`]), every page is locked
/// first, and its device frame or duplicate released ([`Hooks::claim_freed`]), with no heap
/// lock held: a migration, prefetch or eviction that started before the free may hold some of
/// them, and a page lock is never waited for under a heap lock (it could wait for a kernel that
/// is waiting for that heap lock). The flag is read again under the lock: it is set under it.
pub(crate) fn give_back<H: Hooks>(h: usize, n: usize, put: impl FnOnce(&mut pages::PageHeap)) {
    'put: {
        if !pagemap::claims_enabled() {
            let mut heap = PAGES.lock();
            if !pagemap::claims_enabled() {
                put(&mut heap);
                break 'put;
            }
        }
        // The claimed pages stay locked until `put` publishes them free: no signal handler may
        // run on this thread meanwhile (it could touch device memory and wait for us).
        let _quiet = crate::pal::signal::SignalsBlocked::new();
        H::claim_freed(h, n);
        put(&mut PAGES.lock());
    }
    // Freed pages are retained now: the purger gives them back once they expire.
    purge::ensure_running::<H>();
}

/// Large runs from this many pages on move by moving their page mappings when they cannot
/// grow in place and their new run is fresh (no device ever used). `mremap` of 64 KiB to
/// 64 MiB took 20-76 us here, plus 4-9 us to map the hole again, against about 1.5 us a page
/// to copy into fresh pages: moving pays from about 128 pages.
const MOVE_MIN_PAGES: usize = 128;

/// Resizes `p` to `new_size`: in place when possible, else by moving its pages (large runs)
/// or copying its bytes to a new block.
///
/// A block keeps its tier, whatever the scope of the thread that reallocates it: a small
/// object its span's, a large run the tier most of its pages live on ([`Hooks::tier_of_run`]);
/// pages it grows into in place are placed there too. Its bytes reach the new block without a
/// CPU fault on device memory ([`Hooks::copy_block`]).
///
/// # Safety
/// As `GlobalAlloc::realloc`: `p` is live with `old_size`/`align`, `new_size` is non-zero and
/// does not overflow when rounded up to `align`.
pub unsafe fn realloc<H: Hooks>(
    p: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { realloc_on::<H>(p, old_size, align, new_size, None) }
}

/// [`realloc`] onto tier `on` if given (a typed allocator's), else the block's own tier.
///
/// # Safety
/// As [`realloc`].
pub unsafe fn realloc_on<H: Hooks>(
    p: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
    on: Option<TierIndex>,
) -> *mut u8 {
    let (from, to) = (
        size_class::class_of(old_size, align),
        size_class::class_of(new_size, align),
    );
    let t = match from {
        Some(a) if to == Some(a) => return p,
        Some(_) => on.unwrap_or_else(|| span::tier_of(p)),
        None => {
            let page = arena::page_of(p as usize);
            let t = on.unwrap_or_else(|| H::tier_of_run(page, pages_for(old_size).unwrap_or(1)));
            if let (None, Some(n)) = (to, pages_for(new_size)) {
                if let Some(q) = resize_large::<H>(page, n, align, t) {
                    return q;
                }
            }
            t
        }
    };
    let q = alloc_in::<H>(t, new_size, align, false);
    if !q.is_null() {
        H::copy_block(q as usize, p as usize, old_size.min(new_size));
        // SAFETY: `p` is live with this layout (the caller's contract) and not used again.
        unsafe { dealloc::<H>(p, old_size, align) };
    }
    q
}

/// Resizes the large run at `page` to `n` pages without copying: shrinks it, grows it into the
/// following free pages (placed on tier `t`), or moves its mappings. `None` when the caller
/// must allocate and copy.
fn resize_large<H: Hooks>(page: usize, n: usize, align: usize, t: TierIndex) -> Option<*mut u8> {
    let p = arena::addr_of(page) as *mut u8;
    let mut heap = PAGES.lock();
    let old = heap.large_len(page)?;
    if n < old {
        drop(heap);
        give_back::<H>(page + n, old - n, |heap| heap.shrink_large(page, old, n));
        return Some(p);
    }
    if pagemap::claims_enabled() && n > old {
        // A cached run right after this one: take it out of the cache and free it the way
        // freed runs are once pages can be claimed, then try to grow into its pages.
        if let Some(len) = heap.cached_after(page, old) {
            if run_cache::steal(page + old, len) {
                drop(heap);
                end_large::<H>(page + old);
                heap = PAGES.lock();
                if heap.large_len(page) != Some(old) {
                    sys::fatal("a large run changed length while its owner resized it");
                }
            }
        }
    }
    if heap.grow_large(page, old, n) {
        drop(heap);
        if t != 0 && t != scope::INTERNAL && n > old {
            H::place_fresh(page + old, n - old, t as u16 - 1);
        }
        return Some(p);
    }
    if t == 0 && old >= MOVE_MIN_PAGES && !pagemap::claims_enabled() {
        let (q, moved) = heap.move_large(page, old, n, align)?;
        drop(heap);
        let q = arena::addr_of(q);
        if !moved {
            H::copy_block(q, p as usize, old * sys::PAGE_SIZE);
            // Straight to the free runs, not the run caches: a buffer that grew out of this
            // length is not likely to ask for it again, and there the pages join their free
            // neighbours for any length. Through the caches, four buffers growing in turn kept
            // up to 29 MiB of such runs resident, unused (peak RSS 134 against 127 MiB).
            end_large::<H>(page);
        }
        purge::ensure_running::<H>();
        return Some(q as *mut u8);
    }
    None
}

/// Returns this thread's cached free objects and all purgeable free pages to the OS.
pub fn trim<H: Hooks>() {
    if !is_ready() {
        return;
    }
    tcache::flush_current_thread::<H>();
    drain_run_cache::<H>(true);
    PAGES.lock().purge_all();
}

/// Frees the runs waiting in the run cache (all, or the sizes unused for a purger period) to
/// the page runs: decommitted at once while page claims are off, else through the take-back
/// of freed pages (a migration may hold them, or have moved them to a device).
pub(crate) fn drain_run_cache<H: Hooks>(all: bool) {
    tcache::drain_large::<H>(all);
    if pagemap::claims_enabled() {
        run_cache::drain(all, |h, n| {
            let len = end_large::<H>(h);
            debug_assert_eq!(len, n, "a cached run keeps its length");
        });
    } else {
        // Slots are emptied under the page-run lock: a neighbour growing in place (which holds
        // it) never finds a run that left its slot but is not free yet, and has to move.
        let mut heap = PAGES.lock();
        run_cache::drain(all, |h, n| heap.free_cached(h, n));
    }
}

/// True once the heap has been initialised.
#[inline]
pub fn is_ready() -> bool {
    INIT.get() == Some(&true)
}
