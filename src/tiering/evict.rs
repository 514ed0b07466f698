//! Eviction: making room on a full device by moving its coldest blocks to the host.
//!
//! A clock over the 64 KiB blocks below the heap's high-water mark, one hand per device. The
//! hand skips blocks with no page on the device, blocks a migration or a running kernel holds,
//! and blocks in the caller's own range; a block a kernel used since the hand last passed
//! (its reference bit, set from the device access counters) gets a second chance; the rest go
//! to the host if the policy calls them cold. Never on the fault path.

use crate::base::tier::Tier;
use crate::device::MAX_DEVICES;
use crate::heap::pages::TOP;
use crate::mem::blocks::{self, BLOCK_PAGES};
use crate::mem::counters::COUNTERS;
use crate::mem::{arena, pagemap};
use crate::tiering::migrate;
use crate::tiering::policy::{self, BlockInfo};
use core::ops::Range;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Each device's clock hand (a block number).
static HANDS: [AtomicUsize; MAX_DEVICES] = [const { AtomicUsize::new(0) }; MAX_DEVICES];

/// Evicts cold blocks of device `d` (none inside `keep`) until `need` pages are free or two
/// sweeps found nothing more. Returns the pages evicted.
pub(crate) fn make_room(d: u16, need: usize, keep: &[Range<usize>]) -> usize {
    let top = TOP.load(Ordering::Relaxed).min(arena::pages());
    let total = top.div_ceil(BLOCK_PAGES);
    let policy = policy::current();
    let mut evicted = 0;
    let mut scanned = 0;
    while crate::device::free_pages(d) < need && scanned < 2 * total {
        let b = HANDS[d as usize].fetch_add(1, Ordering::Relaxed) % total.max(1);
        scanned += 1;
        let (s, e) = (b * BLOCK_PAGES, ((b + 1) * BLOCK_PAGES).min(top));
        if keep.iter().any(|r| r.start < e && s < r.end) {
            continue;
        }
        let mut on_device = false;
        let mut busy = false;
        for p in s..e {
            let entry = pagemap::get(p);
            on_device |= entry.device() == Some(d) || entry.dup() == Some(d);
            busy |= entry.locked();
        }
        if !on_device || busy {
            continue;
        }
        if policy::take_reference(blocks::of_page(s)) || !policy.is_cold(&BlockInfo::of_page(s)) {
            continue;
        }
        // Move the block's device pages (runs of them) to the host. A run freed meanwhile is
        // skipped: freeing gave its capacity back already.
        let mut p = s;
        while p < e {
            let on = |q: usize| {
                let x = pagemap::get(q);
                x.device() == Some(d) || x.dup() == Some(d)
            };
            if !on(p) {
                p += 1;
                continue;
            }
            let r = p;
            while p < e && on(p) {
                p += 1;
            }
            let moved = crate::mem::trace::with_cause(crate::mem::trace::Cause::Evict, || {
                migrate::migrate(
                    arena::addr_of(r) as *const u8,
                    (p - r) * crate::pal::sys::PAGE_SIZE,
                    Tier::Host,
                )
            });
            if let Ok(m) = moved {
                evicted += m.moved + m.never_touched + m.already_there;
            }
        }
        COUNTERS.evictions.fetch_add(1, Ordering::Relaxed);
    }
    COUNTERS
        .evicted_pages
        .fetch_add(evicted as u64, Ordering::Relaxed);
    evicted
}
