//! Fault-back: a CPU touch of a device-resident page brings it (and its fault-around
//! neighbours, or a read-ahead of a sequential stream) back to the host. [`cpu_fault`] is the
//! resolver the fault backend calls, from a signal handler or a handler thread.
//!
//! Async-signal-safe: atomics and system calls only, no allocation, and the only lock it waits
//! for is a page entry's, whose holders never wait for a heap lock. With the fault handlers
//! (`fault::handler`, `fault::service`), this file and what it calls (`migrate::device_to_host`,
//! `duplicate::drop_locked`, the page map, the device windows, `pal`) are all the fault path
//! reaches.

use super::migrate::{device_to_host, BATCH, FAULT_AROUND_MAX, FAULT_AROUND_MIN};
use crate::base::tier::Tier;
use crate::device;
use crate::device::link;
use crate::fault::{self, Backend, Fault};
use crate::mem::counters::COUNTERS;
use crate::mem::gate::{gate_enter, gate_exit};
use crate::mem::pagemap::{self, Use};
use crate::mem::{arena, blocks, trace};
use crate::pal::sys;
use crate::pal::uffd;
use crate::tiering::{duplicate, policy};
use core::sync::atomic::{AtomicUsize, Ordering};

const PAGE: usize = sys::PAGE_SIZE;

/// Where the last fault-back ended, and the current fault-around size (pages).
static NEXT_FAULT: AtomicUsize = AtomicUsize::new(usize::MAX);
static AROUND: AtomicUsize = AtomicUsize::new(FAULT_AROUND_MIN);
/// The pages a read-ahead is bringing back now, `[start, end)` (empty when none). A reader that
/// overtakes it (in the transparent backend the handler doing it shares the reader's CPU)
/// faults inside it; that fault continues the stream at its current size (and reads ahead
/// itself) instead of bringing the 64 KiB of an isolated fault.
static AHEAD_START: AtomicUsize = AtomicUsize::new(0);
static AHEAD_END: AtomicUsize = AtomicUsize::new(0);

/// Resolves a CPU fault on managed page `page`: brings it (and its fault-around neighbours)
/// back from a device, or repairs a host page that faulted because of a migration that has
/// since finished. `queued`: see [`fault::Resolver`]. Async-signal-safe.
pub fn cpu_fault(page: usize, queued: Option<usize>) -> Fault {
    let Some(backend) = fault::backend() else {
        return Fault::NotOurs;
    };
    gate_enter();
    let mut spins = 0;
    let done = loop {
        let e = pagemap::get(page);
        if e.pinned() {
            if e.pinned_read_only() && !e.copying() {
                match (e.device(), e.dup()) {
                    // A kernel only reads this device page: give the CPU a read-only copy
                    // instead of waiting for the kernel (which may be the one reading).
                    (Some(d), _) => {
                        if pagemap::begin_copy(page, e) {
                            if copy_pinned_to_host(backend, page, d) {
                                pagemap::end_copy(page, e.with_dup(d));
                                COUNTERS.dup_pages.fetch_add(1, Ordering::Relaxed);
                                break Fault::Retry;
                            }
                            pagemap::end_copy(page, e);
                            break Fault::Pinned;
                        }
                        continue;
                    }
                    // Copied already: a read goes through now (a write, which no safe code
                    // can make to memory a kernel reads, faults again until the kernel ends).
                    (None, Some(_)) => break Fault::Retry,
                    (None, None) => {}
                }
            }
            if e.copying() {
                pagemap::backoff(&mut spins);
                continue;
            }
            break Fault::Pinned;
        }
        if e.use_() == Use::Free {
            // Freed memory (touched after free), perhaps still on its way to the heap's free
            // runs: nothing of tieralloc's is on it, and waiting for its lock could wait for a
            // fork that waits for this fault.
            break Fault::Host;
        }
        if e.locked() {
            pagemap::backoff(&mut spins);
            continue;
        }
        let Some(d) = e.device() else {
            if let Some(d) = e.dup() {
                // A write to a read-only host copy: the device's duplicate goes.
                if let Some(locked) = pagemap::try_lock(page) {
                    if locked.dup() == Some(d) {
                        duplicate::drop_locked(backend, page, 1, d, false);
                        pagemap::unlock(page, locked.on_host());
                        COUNTERS.dup_invalidations.fetch_add(1, Ordering::Relaxed);
                        break Fault::Retry;
                    }
                    pagemap::unlock(page, locked);
                }
                continue;
            }
            fault::fix_host(page);
            break Fault::Host;
        };
        match pagemap::try_lock(page) {
            Some(locked) if locked.device() == Some(d) => {
                if queued.is_some_and(|epoch| pagemap::to_device_epoch() != epoch) {
                    // A handler thread's message from before a move to a device: its thread
                    // may have gone on long ago, and this page been put on a device since on
                    // purpose (scenarios test: 64 KiB of a buffer migrated to a device came
                    // back with no CPU access, once in a loaded CI run). Leave it; the caller
                    // wakes the page, and a thread still waiting faults again.
                    pagemap::unlock(page, locked);
                    COUNTERS.stale_faults.fetch_add(1, Ordering::Relaxed);
                    break Fault::Retry;
                }
                bring_back(backend, page, d);
                break Fault::BroughtBack;
            }
            Some(locked) => pagemap::unlock(page, locked),
            None => {}
        }
    };
    gate_exit();
    done
}

/// Puts a read-only copy of device `d`'s page `page` (pinned read-only by a kernel; the caller
/// set `COPYING`) at its host address. False if the kernel refused. Async-signal-safe.
fn copy_pinned_to_host(backend: Backend, page: usize, d: u16) -> bool {
    let (addr, frame) = (arena::addr_of(page), device::frame(d, page));
    match backend {
        Backend::Uffd | Backend::UffdFast => match uffd::copy_write_protected(addr, frame, PAGE) {
            Ok(()) => true,
            Err(libc::EEXIST) => {
                // A stray host page beside the device copy (the device's is authoritative).
                sys::discard(addr, PAGE);
                uffd::copy_write_protected(addr, frame, PAGE).is_ok()
            }
            Err(_) => false,
        },
        Backend::Signal => {
            fault::write_protected(addr, frame, PAGE).is_ok()
                && sys::protect(addr, PAGE, libc::PROT_READ).is_ok()
        }
    }
}

/// Locks `p` if it lives on device `d`; leaves it alone otherwise.
fn try_lock_on(p: usize, d: u16) -> bool {
    // A plain load first: most neighbours of an isolated fault are host pages, and a CAS per
    // neighbour would cost more than the fault-back itself.
    if pagemap::get(p).device() != Some(d) {
        return false;
    }
    match pagemap::try_lock(p) {
        Some(e) if e.device() == Some(d) => true,
        Some(e) => {
            pagemap::unlock(p, e);
            false
        }
        None => false,
    }
}

/// Fault-back of `page` (locked, on device `d`) with fault-around.
fn bring_back(backend: Backend, page: usize, d: u16) {
    // The read-ahead and the dense-region return below stop once a migration to a device
    // starts after this point (see `return_unless_stale`).
    let epoch = pagemap::to_device_epoch();
    let min = policy::AROUND_MIN.load(Ordering::Relaxed);
    let max = policy::AROUND_MAX.load(Ordering::Relaxed);
    let in_read_ahead =
        (AHEAD_START.load(Ordering::Relaxed)..AHEAD_END.load(Ordering::Relaxed)).contains(&page);
    let around = if NEXT_FAULT.load(Ordering::Relaxed) == page {
        (AROUND.load(Ordering::Relaxed) * 2).min(max)
    } else if in_read_ahead {
        AROUND.load(Ordering::Relaxed).clamp(min, max)
    } else {
        min
    };
    AROUND.store(around, Ordering::Relaxed);
    // Half of this 2 MiB region has faulted recently: bring the rest of it back at once (its
    // other runs on this device, between pages already home). The run around the faulting
    // page then spans the region, so it comes back in one move and one wake-up: a thread
    // reading on does not fault again on the rest while it is still on its way.
    let dense = policy::AROUND_DENSITY.load(Ordering::Relaxed) && dense_region(page);
    let region = page - page % FAULT_AROUND_MAX;
    let (floor, reach) = if dense {
        (region, (region + FAULT_AROUND_MAX).max(page + around))
    } else {
        (page - page % min, page + around)
    };
    let mut lo = page;
    while lo > floor && try_lock_on(lo - 1, d) {
        lo -= 1;
    }
    // At most one batch per run (the moves work in batches of BATCH pages).
    let limit = reach.min(lo + BATCH).min(arena::pages());
    let mut hi = page + 1;
    while hi < limit && try_lock_on(hi, d) {
        hi += 1;
    }
    // A sequential stream longer than one batch goes on after this run (read-ahead below):
    // expect the next fault where the stream will end, so that it doubles the fault-around
    // again. A reader's fault inside the read-ahead meanwhile continues the stream.
    let ahead = around > BATCH && hi == limit && reach > limit;
    // The read-ahead covers the run on `d` that follows (it stops where the run does).
    let end = if ahead { run_end(hi, reach, d) } else { hi };
    if end > hi {
        AHEAD_START.store(hi, Ordering::Relaxed);
        AHEAD_END.store(end, Ordering::Relaxed);
    }
    NEXT_FAULT.store(end, Ordering::Relaxed);
    // Count before waking anyone: a thread that reads `stats()` after its access sees its fault.
    COUNTERS.cpu_faults.fetch_add(1, Ordering::Relaxed);
    return_run(backend, d, lo, hi);
    if end > hi {
        read_ahead(backend, d, hi, end, epoch);
        let _ = AHEAD_END.compare_exchange(end, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
    if dense {
        let region_end = (region + FAULT_AROUND_MAX).min(arena::pages());
        read_ahead(backend, d, region, region_end, epoch);
    }
}

/// The first page in `[from, to)` (capped at the arena) that is not on device `d`.
fn run_end(from: usize, to: usize, d: u16) -> usize {
    let to = to.min(arena::pages());
    (from..to)
        .find(|&p| pagemap::get(p).device() != Some(d))
        .unwrap_or(to)
}

/// The rest of a sequential fault-around after its first batch, or of a dense region: device
/// `d`'s pages in `[from, to)`, a batch at a time. Pages another fault has taken meanwhile (a
/// reader that overtook the read-ahead) are skipped. It stops once a move to a device has
/// started since the fault was planned (`epoch`, see `pagemap::begin_to_device`): the pages
/// ahead may have been put there on purpose since. Async-signal-safe.
fn read_ahead(backend: Backend, d: u16, from: usize, to: usize, epoch: usize) {
    let mut s = from;
    while s < to {
        crate::pal::inject::stall(crate::pal::inject::Point::ReadAheadStall);
        if !try_lock_on(s, d) {
            s += 1;
            continue;
        }
        let limit = to.min(s + BATCH);
        let mut e = s + 1;
        while e < limit && try_lock_on(e, d) {
            e += 1;
        }
        // Checked with the batch locked: a migration bumps the epoch before it locks a page,
        // so one that moved any of these pages is seen here.
        if pagemap::to_device_epoch() != epoch {
            for p in s..e {
                pagemap::unlock(p, pagemap::get(p));
            }
            fault::wake_pages(s, e - s);
            return;
        }
        return_run(backend, d, s, e);
        s = e;
    }
}

/// Brings device `d`'s pages `[lo, hi)` (locked by this fault) home, publishes and wakes.
/// Async-signal-safe.
fn return_run(backend: Backend, d: u16, lo: usize, hi: usize) {
    // Invariant (checked in debug builds): the run's pages are ours and on `d`.
    #[cfg(debug_assertions)]
    for p in lo..hi {
        let e = pagemap::get(p);
        assert!(
            e.locked() && e.device() == Some(d),
            "return_run: page {p:#x} is {e:?}"
        );
    }
    if let Err(e) = device_to_host(backend, d, lo, hi - lo) {
        if e == libc::EBADF {
            // A Python `subprocess` child (`preexec_fn` makes it fork) closes every descriptor
            // from 3 up before its `exec`; under chaos such children stopped here with the
            // bare message below, before they brought their pages home at the fork.
            sys::fatal(
                "could not bring device-resident pages back to host memory: the program closed \
                 tieralloc's userfaultfd (close_range or closefrom, as a fork child before exec \
                 may do)",
            );
        }
        sys::fatal("could not bring device-resident pages back to host memory");
    }
    device::release(d, hi - lo);
    blocks::cpu_fault(lo, hi - lo);
    link::transfer(d, (hi - lo) * PAGE);
    COUNTERS
        .pages_to_host
        .fetch_add((hi - lo) as u64, Ordering::Relaxed);
    COUNTERS
        .fault_pages
        .fetch_add((hi - lo) as u64, Ordering::Relaxed);
    for p in lo..hi {
        pagemap::unlock(p, pagemap::get(p).on_host());
    }
    trace::record(
        lo,
        hi - lo,
        Some(Tier::Device(d)),
        Some(Tier::Host),
        trace::Cause::Fault,
    );
    fault::wake_pages(lo, hi - lo);
}

/// True if at least half of the blocks of page's 2 MiB region faulted in the thrash window.
fn dense_region(page: usize) -> bool {
    let start = page - page % FAULT_AROUND_MAX;
    let end = (start + FAULT_AROUND_MAX).min(arena::pages());
    let total = (end - start).div_ceil(blocks::BLOCK_PAGES);
    let hot = blocks::blocks_of(start, end - start)
        .filter(|b| blocks::recent_bounces(b) > 0)
        .count();
    2 * hot >= total && total > 1
}
