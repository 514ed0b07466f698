//! Take-back of freed memory: before the heap publishes freed pages free, each page entry is
//! locked and whatever tieralloc keeps for it elsewhere (a device frame, a read-only duplicate)
//! is released, so a freed page never stays device-resident or charged to a device.

use super::duplicate;
use super::migrate::{runs_changed, ANY_DEVICE};
use crate::base::tier::Tier;
use crate::device;
use crate::fault::{self, Backend};
use crate::mem::counters::COUNTERS;
use crate::mem::gate::{gate_enter, gate_exit};
use crate::mem::{arena, pagemap, trace};
use crate::pal::sys;
use core::sync::atomic::Ordering;

const PAGE: usize = sys::PAGE_SIZE;

/// Called by the heap (`heap::give_back`), with no heap lock held, before pages
/// `[page, page+n)` of an allocation being freed return to the free runs: locks every page
/// (waiting for the migrations, faults and advice that hold one), gives device-resident pages'
/// frames and capacity back without bringing them home, drops read-only duplicates, and leaves
/// every page locked and free ([`pagemap::claimed_free`]). The heap then publishes them free,
/// which unlocks them.
pub(crate) fn claim_freed(page: usize, n: usize) {
    let backend = fault::backend();
    let any_device = ANY_DEVICE.load(Ordering::Acquire);
    // Page locks are held from here until the heap publishes the pages free, and the fork gate
    // until they read as free: the caller (`heap::give_back`, the only one) blocks signals for
    // all of it, so no handler that touches device memory can wait for this thread.
    gate_enter();
    let end = page + n;
    let mut p = page;
    while p < end {
        let Some(e) = pagemap::lock(p) else {
            sys::fatal("freeing pages that are not handed out (heap corrupted)");
        };
        let (Some(b), true) = (backend, any_device) else {
            p += 1;
            continue;
        };
        let Some(d) = e.device() else {
            if let Some(d) = e.dup() {
                duplicate::drop_locked(b, p, 1, d, true);
            }
            pagemap::keep_locked(p, e.on_host());
            p += 1;
            continue;
        };
        // A run of pages on device `d`: one discard and one protection change for all.
        let s = p;
        p += 1;
        while p < end {
            let Some(e2) = pagemap::lock(p) else {
                sys::fatal("freeing pages that are not handed out (heap corrupted)");
            };
            if e2.device() != Some(d) {
                // Looked at again by the outer loop (it is locked already: keep it so).
                pagemap::unlock(p, e2);
                break;
            }
            p += 1;
        }
        let k = p - s;
        // Invariant (checked in debug builds): the run's pages are ours and on `d`.
        #[cfg(debug_assertions)]
        for q in s..p {
            let e = pagemap::get(q);
            assert!(
                e.locked() && e.device() == Some(d),
                "claim: page {q:#x} is {e:?}"
            );
        }
        sys::discard(device::frame(d, s), k * PAGE);
        if b == Backend::Signal {
            // The host pages were released when they moved; make them accessible again (they
            // read as zero, as fresh pages do).
            if sys::protect(
                arena::addr_of(s),
                k * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
            .is_err()
            {
                sys::fatal("could not unprotect freed device-resident pages (vm.max_map_count?)");
            }
            runs_changed(s, k, false);
        }
        device::release(d, k);
        for q in s..p {
            pagemap::keep_locked(q, pagemap::get(q).on_host());
        }
        COUNTERS
            .freed_device_pages
            .fetch_add(k as u64, Ordering::Relaxed);
        trace::record(s, k, Some(Tier::Device(d)), None, trace::Cause::Free);
    }
    // From here on nobody waits for these pages (they read as free), though they stay locked
    // until the heap takes them: the caller may wait for the heap's lock, which a fork holds
    // while it waits for the migrations that would otherwise wait for these pages.
    for q in page..end {
        pagemap::claimed_free(q);
    }
    gate_exit();
}
