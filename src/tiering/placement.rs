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

use crate::base::tier::Tier;
use crate::device;
use crate::fault::{self, Backend};
use crate::mem::arena;
use crate::mem::counters::COUNTERS;
use crate::mem::pagemap::{self, Entry};
use crate::mem::scope::{self, TierIndex, INTERNAL};
use crate::pal::sys;
use crate::tiering::migrate;
use core::sync::atomic::{AtomicU8, Ordering};

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
        let prev = scope::replace(0);
        let ok = migrate::start_devices().is_ok() && migrate::start_backend().is_ok();
        scope::replace(prev);
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
    let _quiet = crate::pal::signal::SignalsBlocked::new();
    let _gate = crate::mem::gate::Gate::enter();
    // Work planned on these addresses earlier (a read-ahead, a queued fault message of their
    // last owner) must not bring the new pages back.
    pagemap::begin_to_device();
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
    crate::mem::trace::record(
        page,
        n,
        None,
        Some(Tier::Device(d)),
        crate::mem::trace::Cause::Place,
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
