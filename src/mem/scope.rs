//! The thread's tier scope: which tier its allocations prefer ([`with_tier`], [`tier_scope`]),
//! as the heap's tier index. Plain thread-local data, read on the allocation fast path and by
//! the fault handler (async-signal-safe: const-initialised TLS without destructors).

use crate::base::consts::MAX_DEVICES;
use crate::base::tier::Tier;
use crate::pal::tls;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Number of tiers the heap segregates: the host, every possible device, and [`INTERNAL`].
pub(crate) const NTIERS: usize = 2 + MAX_DEVICES;

/// Host memory of tieralloc's own worker threads (device kernels and prefetches): spans that
/// never hold user objects. A worker that holds a kernel's pinned pages may allocate and touch
/// its own memory; if that memory shared a page with another kernel's pinned argument, two
/// device workers could each wait for the other's kernel to end. Kept off user pages, their
/// memory is never pinned or migrated by tieralloc.
pub(crate) const INTERNAL: TierIndex = NTIERS as TierIndex - 1;

/// A tier as the heap's index: 0 for the host, `1 + d` for device `d`.
pub(crate) type TierIndex = u8;

/// The heap index of `tier`; devices beyond [`MAX_DEVICES`] map to the host.
pub(crate) fn index_of(tier: Tier) -> TierIndex {
    match tier {
        Tier::Device(d) if (d as usize) < MAX_DEVICES => 1 + d as u8,
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

/// The tier index this thread's allocations prefer now: the thread-local word
/// [`tls::scope`], one `%fs`-relative load (see [`crate::pal::tls`]; through `thread_local!`
/// the C entry points of `libtieralloc.so` paid a call to `__tls_get_addr` for it, and first
/// tested a process-wide flag to skip that call until some thread opened a scope).
#[inline(always)]
pub(crate) fn current() -> TierIndex {
    tls::scope::get() as TierIndex
}

/// Makes this thread (one of tieralloc's workers) allocate from the [`INTERNAL`] tier for the
/// rest of its life, unless a kernel opens a scope of its own.
pub(crate) fn enter_internal() {
    replace(INTERNAL);
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
    let prev = replace(index_of(tier));
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
    tier_of(current())
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
        replace(self.prev);
    }
}

thread_local! {
    /// True on a device worker while it runs a kernel (read by the fault handler).
    static IN_KERNEL: Cell<bool> = const { Cell::new(false) };
}

/// True if this thread is running a device kernel. Async-signal-safe (a plain TLS read).
pub(crate) fn in_kernel() -> bool {
    IN_KERNEL.with(|c| c.get())
}

/// Marks this thread as running a device kernel, or no longer.
pub(crate) fn set_in_kernel(on: bool) {
    IN_KERNEL.with(|c| c.set(on));
}

/// Swaps this thread's scope index for `t`, returning the previous one (the placement code
/// starts devices with the host scope).
#[inline(always)]
pub(crate) fn replace(t: TierIndex) -> TierIndex {
    let prev = current();
    tls::scope::set(t as usize);
    prev
}

/// How many code ranges [`keep_system_home`] remembers.
const SYSTEM_RANGES: usize = 4;
/// Code ranges of the dynamic loader and the C library (`[start, end)` pairs; empty until
/// [`keep_system_home`] found them).
static SYSTEM_CODE: [AtomicUsize; 2 * SYSTEM_RANGES] =
    [const { AtomicUsize::new(0) }; 2 * SYSTEM_RANGES];
static KEEP_SYSTEM_HOME: AtomicBool = AtomicBool::new(false);

/// Finds the loader's and the C library's code, after which [`from_system`] tells their
/// allocations apart (`tieralloc::malloc::keep_system_allocations_home`). False if none was
/// found.
pub(crate) fn keep_system_home() -> bool {
    let mut found = [0usize; 2 * SYSTEM_RANGES];
    let n = crate::pal::process::system_code(&mut found);
    if n == 0 {
        return false;
    }
    for (slot, v) in SYSTEM_CODE.iter().zip(found) {
        slot.store(v, Ordering::Relaxed);
    }
    KEEP_SYSTEM_HOME.store(true, Ordering::Release);
    true
}

/// Whether [`keep_system_home`] is in force.
#[inline]
pub(crate) fn keeps_system_home() -> bool {
    KEEP_SYSTEM_HOME.load(Ordering::Acquire)
}

/// Whether `caller` (a return address) lies in the loader's or the C library's code, once
/// [`keep_system_home`] is in force.
#[inline]
pub(crate) fn from_system(caller: usize) -> bool {
    keeps_system_home()
        && SYSTEM_CODE
            .chunks(2)
            .any(|r| (r[0].load(Ordering::Relaxed)..r[1].load(Ordering::Relaxed)).contains(&caller))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        assert_eq!(index_of(Tier::Host), 0);
        for d in 0..MAX_DEVICES as u16 {
            assert_eq!(tier_of(index_of(Tier::Device(d))), Tier::Device(d));
        }
        // Devices past the last possible one cannot be placed on: they mean the host.
        assert_eq!(index_of(Tier::Device(MAX_DEVICES as u16)), 0);
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
