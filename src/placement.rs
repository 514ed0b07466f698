//! Placement: which tier an allocation is made on.
//!
//! A thread's *tier scope* ([`with_tier`], [`tier_scope`]) names the tier its allocations prefer;
//! the typed allocators ([`crate::OnDevice`], [`crate::TierAllocator`]) name it per call. The
//! heap keeps the objects of each tier on spans of their own (`heap::span`), so an object placed
//! on a device never shares a page with host objects, and its free bits live outside the managed
//! range: allocating and freeing it never touches its memory.
//!
//! Fresh pages of a device-tier span or large run are *created on the device* ([`place_fresh`]):
//! their entries say "device `d`, never touched", the host pages are released and the device's
//! capacity is charged, with no copy. The first CPU touch brings a page back as a zero page, as
//! for any never-touched page that was migrated.
//!
//! Placement is a preference, like `cudaMemAdviseSetPreferredLocation`: if the device is full
//! (and the policy does not evict) or does not exist, the memory is placed on the host and
//! `stats().placement_fallbacks` counts it. It never fails an allocation.

use crate::fault::{self, Backend};
use crate::pagemap::{self, Entry};
use crate::stats::COUNTERS;
use crate::tier::Tier;
use crate::{arena, device, migrate, sys};
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Number of tiers the heap segregates: the host, every possible device, and [`INTERNAL`].
pub(crate) const NTIERS: usize = 2 + device::MAX_DEVICES;

/// Host memory of tieralloc's own worker threads (device kernels and prefetches): spans that
/// never hold user objects. A worker that holds a kernel's pinned pages may allocate and touch
/// its own memory; if that memory shared a page with another kernel's pinned argument, two
/// device workers could each wait for the other's kernel to end. Kept off user pages, their
/// memory is never pinned or migrated by tieralloc.
pub(crate) const INTERNAL: TierIndex = NTIERS as TierIndex - 1;

/// A tier as the heap's index: 0 for the host, `1 + d` for device `d`.
pub(crate) type TierIndex = u8;

/// The heap index of `tier`; devices beyond [`device::MAX_DEVICES`] map to the host.
pub(crate) fn index_of(tier: Tier) -> TierIndex {
    match tier {
        Tier::Device(d) if (d as usize) < device::MAX_DEVICES => 1 + d as u8,
        _ => 0,
    }
}

/// The tier of heap index `t`.
pub(crate) fn tier_of(t: TierIndex) -> Tier {
    if t == 0 || t == INTERNAL {
        Tier::Host
    } else {
        Tier::Device(t as u16 - 1)
    }
}

thread_local! {
    /// This thread's scope tier, as a heap index. `const`-initialised without a destructor: a
    /// plain TLS load, usable inside the allocator, before `main` and during thread exit.
    static SCOPE: Cell<TierIndex> = const { Cell::new(0) };
}

/// Set once any thread opens a device scope. Until then the allocation fast path skips the
/// thread-local scope read (one shared, read-mostly load instead).
static ANY_SCOPE: AtomicBool = AtomicBool::new(false);

/// The tier index this thread's allocations prefer now.
#[inline(always)]
pub(crate) fn current() -> TierIndex {
    if !ANY_SCOPE.load(Ordering::Relaxed) {
        return 0;
    }
    SCOPE.with(|s| s.get())
}

/// Makes this thread (one of tieralloc's workers) allocate from the [`INTERNAL`] tier for the
/// rest of its life, unless a kernel opens a scope of its own.
pub(crate) fn enter_internal() {
    ANY_SCOPE.store(true, Ordering::Relaxed);
    SCOPE.with(|s| s.set(INTERNAL));
}

/// The scope of this thread, read directly (not through the fast-path flag).
fn scope_now() -> TierIndex {
    SCOPE.with(|s| s.get())
}

/// Runs `f` with this thread's allocations preferring `tier`, then restores the previous scope
/// (also if `f` panics). Scopes nest: the innermost wins.
///
/// Objects allocated inside (by any code: `Vec`, `Box`, `HashMap`, ...) live on spans of that
/// tier; with a device tier their fresh pages are created on the device and cost no host memory
/// until the CPU touches them. A device that is full or does not exist leaves the memory on the
/// host (counted in [`Stats::placement_fallbacks`](crate::Stats::placement_fallbacks)).
///
/// ```
/// use tieralloc::{Tier, TierAlloc};
/// #[global_allocator]
/// static A: TierAlloc = TierAlloc::new();
///
/// let v: Vec<u8> = tieralloc::with_tier(Tier::Device(0), || vec![0u8; 1 << 20]);
/// // Created on the device: nothing was written, so nothing lives on the host yet.
/// let r = tieralloc::residency(v.as_ptr(), v.len()).unwrap();
/// assert_eq!(r.device_bytes(0), v.len());
/// assert_eq!(v[4096], 0); // a CPU touch brings that page back (as zeros)
/// ```
pub fn with_tier<R>(tier: Tier, f: impl FnOnce() -> R) -> R {
    let _g = tier_scope(tier);
    f()
}

/// Makes this thread's allocations prefer `tier` until the returned guard is dropped, which
/// restores the previous scope. See [`with_tier`].
///
/// ```
/// use tieralloc::{Tier, TierAlloc};
/// #[global_allocator]
/// static A: TierAlloc = TierAlloc::new();
///
/// let table = {
///     let _g = tieralloc::tier_scope(Tier::Device(0));
///     assert_eq!(tieralloc::current_tier(), Tier::Device(0));
///     vec![0u32; 100_000]
/// };
/// assert_eq!(tieralloc::current_tier(), Tier::Host);
/// assert!(tieralloc::residency(table.as_ptr().cast(), 400_000).unwrap().device_bytes(0) > 0);
/// ```
#[must_use = "the scope ends when the guard is dropped"]
pub fn tier_scope(tier: Tier) -> TierGuard {
    let t = index_of(tier);
    if t != 0 && !ANY_SCOPE.load(Ordering::Relaxed) {
        ANY_SCOPE.store(true, Ordering::Relaxed);
    }
    let prev = SCOPE.with(|s| s.replace(t));
    TierGuard {
        prev,
        _not_send: core::marker::PhantomData,
    }
}

/// The tier this thread's allocations prefer now ([`Tier::Host`] outside any scope).
///
/// ```
/// assert_eq!(tieralloc::current_tier(), tieralloc::Tier::Host);
/// ```
pub fn current_tier() -> Tier {
    tier_of(scope_now())
}

/// Restores the previous tier scope when dropped (see [`tier_scope`]). Not `Send`: a scope
/// belongs to the thread that opened it.
///
/// ```
/// let g = tieralloc::tier_scope(tieralloc::Tier::Device(0));
/// assert_eq!(tieralloc::current_tier(), tieralloc::Tier::Device(0));
/// drop(g);
/// assert_eq!(tieralloc::current_tier(), tieralloc::Tier::Host);
/// ```
#[derive(Debug)]
pub struct TierGuard {
    /// The scope to restore.
    prev: TierIndex,
    /// Ties the guard to its thread.
    _not_send: core::marker::PhantomData<*const ()>,
}

impl Drop for TierGuard {
    fn drop(&mut self) {
        SCOPE.with(|s| s.set(self.prev));
    }
}

const UNPREPARED: u8 = 0;
const PREPARED: u8 = 1;
const UNAVAILABLE: u8 = 2;
/// Whether devices and the fault backend are up, so that device placement can run inside the
/// heap without allocating.
static PREPARED_STATE: AtomicU8 = AtomicU8::new(UNPREPARED);

/// Makes sure device placement can run, before the heap takes any lock: the devices and the
/// fault backend start here (they allocate, so nested allocations are sent to the host).
/// Returns `t` if device `t - 1` exists, else 0 (the host), counting a fallback.
#[cold]
fn prepare_slow(t: TierIndex) -> TierIndex {
    let state = PREPARED_STATE.load(Ordering::Acquire);
    if state == UNPREPARED {
        let prev = SCOPE.with(|s| s.replace(0));
        let ok = device::ensure_init().is_ok() && fault::ensure_init().is_ok();
        SCOPE.with(|s| s.set(prev));
        // Racing threads may both get here; both stores say the same.
        PREPARED_STATE.store(if ok { PREPARED } else { UNAVAILABLE }, Ordering::Release);
    }
    prepare(t)
}

/// The tier index to allocate on for a request preferring `t`: `t` itself when it is the host
/// or an existing device (starting the devices if needed), else the host.
#[inline]
pub(crate) fn prepare(t: TierIndex) -> TierIndex {
    if t == 0 || t == INTERNAL {
        return t;
    }
    match PREPARED_STATE.load(Ordering::Acquire) {
        PREPARED if ((t - 1) as usize) < device::count() => t,
        UNPREPARED => prepare_slow(t),
        _ => {
            COUNTERS.placement_fallbacks.fetch_add(1, Ordering::Relaxed);
            0
        }
    }
}

/// Creates fresh pages `[page, page+n)` (just handed out by the heap; the caller holds no
/// heap lock) on device `d`: charges the capacity (evicting per the policy if the device is full), releases
/// the host pages and publishes "device `d`, never touched". Returns false, with the pages left
/// on the host, when the device cannot take them. Allocates nothing: [`prepare`] ran first.
pub(crate) fn place_fresh(page: usize, n: usize, d: u16) -> bool {
    let Some(backend) = fault::backend() else {
        return false;
    };
    let fallback = || {
        COUNTERS.placement_fallbacks.fetch_add(1, Ordering::Relaxed);
        false
    };
    // Eviction must not pick the pages being placed.
    if migrate::reserve_or_evict(d, n, core::slice::from_ref(&(page..page + n))).is_err() {
        return fallback();
    }
    // Registration takes a lock that fork holds while it waits for migrations: done before
    // any page lock is taken (a migration may be waiting for one of these pages).
    let registered = !matches!(backend, Backend::Uffd | Backend::UffdFast)
        || fault::prepare_host(page, n).is_ok();
    // The pages are handed out now, so a migration that started before they were last freed
    // may lock them: take their locks like everyone else (no heap lock is held here). If such
    // a migration moved one meanwhile, the run stays on the host.
    // Page locks are held until the pages are published: no signal handler may run here, and
    // no fork may copy them locked (the gate).
    let _quiet = sys::SignalsBlocked::new();
    let _gate = migrate::Gate::enter();
    let unlock = |to: usize| {
        for q in page..to {
            pagemap::unlock(q, pagemap::get(q));
        }
    };
    for p in page..page + n {
        match pagemap::lock(p) {
            Some(e) if e.device().is_none() && e.dup().is_none() => {}
            other => {
                if let Some(e) = other {
                    pagemap::unlock(p, e);
                }
                unlock(p);
                device::release(d, n);
                return fallback();
            }
        }
    }
    let (addr, len) = (arena::addr_of(page), n * sys::PAGE_SIZE);
    let armed = match backend {
        Backend::Uffd | Backend::UffdFast => registered,
        Backend::Signal => {
            fault::check_map_budget(1).is_ok() && sys::protect(addr, len, libc::PROT_NONE).is_ok()
        }
    };
    if !armed {
        unlock(page + n);
        device::release(d, n);
        return fallback();
    }
    // Drop whatever the host pages held (reused runs, or zero pages mapped at hand-out): a
    // touch must find them missing (userfaultfd) or inaccessible (signal) and fault.
    sys::discard(addr, len);
    if backend == Backend::Signal {
        migrate::runs_changed(page, n, true);
    }
    for p in page..page + n {
        let e = pagemap::get(p);
        pagemap::unlock(p, Entry::host(e.use_()).on_device(d, false));
    }
    migrate::device_in_use();
    crate::trace::record(
        page,
        n,
        None,
        Some(Tier::Device(d)),
        crate::trace::Cause::Place,
    );
    COUNTERS
        .placed_on_device
        .fetch_add(n as u64, Ordering::Relaxed);
    true
}

/// True if every page under `[p, p+len)` is device-resident and never touched, so the bytes
/// read as zero without being written (`alloc_zeroed` of a device-tier object).
pub(crate) fn reads_as_zero(p: usize, len: usize) -> bool {
    let first = arena::page_of(p);
    let last = arena::page_of(p + len.max(1) - 1);
    (first..=last).all(|q| {
        let e = pagemap::get(q);
        e.device().is_some() && !e.filled() && !e.locked()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        assert_eq!(index_of(Tier::Host), 0);
        for d in 0..device::MAX_DEVICES as u16 {
            assert_eq!(tier_of(index_of(Tier::Device(d))), Tier::Device(d));
        }
        // Devices past the last possible one cannot be placed on: they mean the host.
        assert_eq!(index_of(Tier::Device(device::MAX_DEVICES as u16)), 0);
        assert_eq!(tier_of(INTERNAL), Tier::Host);
        assert!((0..=u16::MAX).all(|d| index_of(Tier::Device(d)) != INTERNAL));
    }

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current_tier(), Tier::Host);
        with_tier(Tier::Device(1), || {
            assert_eq!(current_tier(), Tier::Device(1));
            {
                let _g = tier_scope(Tier::Host);
                assert_eq!(current_tier(), Tier::Host);
                with_tier(Tier::Device(0), || {
                    assert_eq!(current_tier(), Tier::Device(0))
                });
                assert_eq!(current_tier(), Tier::Host);
            }
            assert_eq!(current_tier(), Tier::Device(1));
        });
        assert_eq!(current_tier(), Tier::Host);
        let r = std::panic::catch_unwind(|| with_tier(Tier::Device(2), || panic!("inside")));
        assert!(r.is_err());
        assert_eq!(current_tier(), Tier::Host, "a panic restores the scope");
    }

    #[test]
    fn scopes_are_per_thread() {
        let _g = tier_scope(Tier::Device(3));
        let other = std::thread::spawn(current_tier).join().unwrap();
        assert_eq!(other, Tier::Host);
        assert_eq!(current_tier(), Tier::Device(3));
    }
}
