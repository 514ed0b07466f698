//! Realloc without faults: when a block moves, its bytes go to the new block wherever each side
//! lives, never through a CPU access to device memory.
//!
//! The rule users see: **a block's tier follows the block, not the scope `realloc` runs in.** A
//! small object keeps its span's tier; a large run goes to the tier holding most of its pages
//! ([`tier_of_run`]). The heap places the new block there (fresh device pages are created on
//! the device, `placement::place_fresh`) and calls [`copy_block`], which copies each page's
//! bytes where they are:
//! - from a device page: out of its frame (a never-touched one reads as zero and is not
//!   copied onto a device page that reads as zero already);
//! - into a device page: into its frame, which is then marked as holding data;
//! - host to host, whole pages of a large run under userfaultfd: moved, not copied
//!   (`UFFDIO_MOVE`, no fault on either side, no new mapping);
//! - otherwise with `memcpy`.
//!
//! Each page is locked while its bytes are copied (both sides, in ascending page order, like
//! every other taker of several page locks), so a migration, prefetch, eviction or advice pass
//! over either block waits for the copy instead of moving half of it.

use crate::base::consts::MAX_DEVICES;
use crate::device;
use crate::fault::{self, Backend, CHUNK_PAGES};
use crate::mem::gate::{gate_enter, gate_exit};
use crate::mem::pagemap::{self, Entry};
use crate::mem::scope::TierIndex;
use crate::mem::{arena, counters::COUNTERS};
use crate::pal::signal::SignalsBlocked;
use crate::pal::{sys, uffd};
use crate::tiering::duplicate;
use crate::tiering::migrate::BATCH;
use core::sync::atomic::Ordering;

const PAGE: usize = sys::PAGE_SIZE;

/// Whole-page host moves start at this many pages. One `UFFDIO_MOVE` call costs about 10 us
/// plus 0.13 us a page on this machine's VM (64 KiB: 12 us; 1 MiB: 31 us; 64 MiB: 2.2 ms),
/// against about 0.2 us a page to copy warm memory: moving pays from about 128 pages.
pub const MOVE_MIN_PAGES: usize = 128;

/// The tier a large run of pages `[page, page+n)` follows when it is reallocated: the device
/// holding most of its pages, or the host (also when no device was ever used).
pub(crate) fn tier_of_run(page: usize, n: usize) -> TierIndex {
    if !pagemap::claims_enabled() {
        return 0;
    }
    let mut on = [0usize; MAX_DEVICES];
    for p in page..page + n {
        if let Some(d) = pagemap::get(p).device() {
            on[d as usize] += 1;
        }
    }
    let (d, most) = on
        .iter()
        .enumerate()
        .max_by_key(|&(_, k)| *k)
        .map_or((0, 0), |(d, k)| (d, *k));
    if 2 * most > n {
        1 + d as TierIndex
    } else {
        0
    }
}

/// Copies the `len` bytes of live block `src` into the fresh block `dst` (distinct, both
/// handed out, no heap lock held), wherever their pages live, without a CPU fault.
pub(crate) fn copy_block(dst: usize, src: usize, len: usize) {
    if len == 0 {
        return;
    }
    let backend = fault::backend();
    let Some(backend) = backend.filter(|_| pagemap::claims_enabled()) else {
        // No page has ever been on a device or locked by anyone: plain memory.
        // SAFETY: both blocks are live, distinct and at least `len` bytes long (the caller's
        // contract).
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) };
        return;
    };
    let on_device = |a: usize| {
        let first = arena::page_of(a);
        (first..=arena::page_of(a + len - 1)).any(|p| pagemap::get(p).device().is_some())
    };
    let moving = matches!(backend, Backend::Uffd | Backend::UffdFast)
        && fault::has_move()
        && src % PAGE == 0
        && dst % PAGE == 0
        && len >= MOVE_MIN_PAGES * PAGE
        && fault::prepare_host(arena::page_of(dst), len / PAGE).is_ok()
        && fault::prepare_host(arena::page_of(src), len / PAGE).is_ok();
    if !moving && !on_device(src) && !on_device(dst) {
        // Host pages only: a plain copy. Should a migration take one of them meanwhile, the
        // copy faults and waits for it like any access (correct, if slower).
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) };
        return;
    }
    // Page locks are held while bytes are copied: no signal handler may run on this thread
    // meanwhile (one that touched either page would wait for us).
    let _quiet = SignalsBlocked::new();
    let mut off = 0;
    while off < len {
        if moving && len - off >= PAGE {
            // One move stays inside one registered chunk on each side: the kernel moves within
            // one mapping only (EINVAL otherwise), and registration splits mappings at chunks.
            let (sp, dp) = (arena::page_of(src + off), arena::page_of(dst + off));
            let to_edge = |p: usize| CHUNK_PAGES - p % CHUNK_PAGES;
            let n = ((len - off) / PAGE)
                .min(BATCH)
                .min(to_edge(sp))
                .min(to_edge(dp));
            let moved = move_host_pages(dp, sp, n);
            if moved > 0 {
                off += moved * PAGE;
                continue;
            }
        }
        let (s, d) = (src + off, dst + off);
        let k = (PAGE - s % PAGE).min(PAGE - d % PAGE).min(len - off);
        copy_piece(backend, d, s, k);
        off += k;
    }
}

/// Locks page `a` and page `b` (which may be the same page), in ascending order, never waiting
/// for a running kernel's pin while holding a lock (the kernel may be waiting for it). Enters
/// the fork gate for as long as they are held (the caller leaves it with [`unlock_two`]).
fn lock_two(a: usize, b: usize) -> (Entry, Entry) {
    let (lo, hi) = (a.min(b), a.max(b));
    loop {
        gate_enter();
        let first = match pagemap::lock_unless_pinned(lo) {
            Ok(Some(e)) => e,
            Ok(None) => sys::fatal("realloc of memory that is not handed out (heap corrupted)"),
            Err(()) => {
                gate_exit();
                pagemap::wait_unpinned(lo);
                continue;
            }
        };
        if lo == hi {
            return (first, first);
        }
        match pagemap::lock_unless_pinned(hi) {
            Ok(Some(second)) => {
                return if a < b {
                    (first, second)
                } else {
                    (second, first)
                };
            }
            Ok(None) => sys::fatal("realloc of memory that is not handed out (heap corrupted)"),
            Err(()) => {
                pagemap::unlock(lo, first);
                gate_exit();
                pagemap::wait_unpinned(hi);
            }
        }
    }
}

/// Publishes the entries of the pages [`lock_two`] locked and leaves the gate.
fn unlock_two(a: usize, ea: Entry, b: usize, eb: Entry) {
    if a == b {
        pagemap::unlock(a, eb);
    } else {
        pagemap::unlock(a, ea);
        pagemap::unlock(b, eb);
    }
    gate_exit();
}

/// Makes device `d`'s frame of page `page` (which holds no data) a page of zeros that can be
/// written: a stale frame is dropped, and under userfaultfd a missing one gets the zero page
/// (the window is registered there: a write to a missing frame would raise a userfault).
fn zero_frame(backend: Backend, d: u16, page: usize) {
    let f = device::frame(d, page);
    sys::discard(f, PAGE);
    if backend != Backend::Signal && uffd::zeropage(f, PAGE, false).is_err() {
        sys::fatal("could not give a device page a frame to copy into");
    }
}

/// Copies `k` bytes from `s` to `d`, which lie within one page each.
fn copy_piece(backend: Backend, d: usize, s: usize, k: usize) {
    let (sp, dp) = (arena::page_of(s), arena::page_of(d));
    let (se, mut de) = lock_two(sp, dp);
    if backend != Backend::Signal {
        // A host page of a registered chunk may be missing (freed while device-resident, its
        // frame dropped, and handed out again untouched): the CPU access below would raise a
        // userfault, and its handler would wait for the lock this thread holds. It gets the
        // zero page first (nothing if it is there).
        for (p, e) in [(sp, se), (dp, de)] {
            if e.device().is_none() && uffd::zeropage(arena::addr_of(p), PAGE, false).is_err() {
                sys::fatal("could not map a missing host page for a realloc copy");
            }
        }
    }
    // Where the bytes are: a device page's frame, or nothing (never touched: zeros).
    let from = match se.device() {
        Some(e) if se.filled() => Some(device::frame(e, sp) + s % PAGE),
        Some(_) => None,
        None => Some(s),
    };
    let to = match de.device() {
        Some(e) => {
            if from.is_none() && !de.filled() {
                // Zeros onto a page that reads as zero: nothing to do.
                unlock_two(sp, se, dp, de);
                return;
            }
            if !de.filled() {
                zero_frame(backend, e, dp);
                de = de.on_device(e, true);
            }
            device::frame(e, dp) + d % PAGE
        }
        None => {
            if let Some(x) = de.dup() {
                // A read-only duplicate of the destination would go stale: it goes.
                duplicate::drop_locked(backend, dp, 1, x, true);
                de = de.on_host();
            }
            d
        }
    };
    match from {
        // SAFETY: `from` and `to` are `k` bytes inside two pages we hold locked (host pages
        // are accessible while their lock is ours and they have no duplicate; frames are
        // mapped in their device's window and present, `zero_frame`), and distinct blocks do
        // not overlap.
        Some(from) => unsafe { core::ptr::copy(from as *const u8, to as *mut u8, k) },
        // SAFETY: as above, for the destination.
        None => unsafe { core::ptr::write_bytes(to as *mut u8, 0, k) },
    }
    let se = if sp == dp { de } else { se };
    unlock_two(sp, se, dp, de);
}

/// Moves up to `n` whole host pages from page `sp` on to page `dp` on (userfaultfd with
/// `UFFDIO_MOVE`; both sides' chunks are registered, and neither crosses a chunk's end). Stops before the first page of
/// either side that is device-resident or has a duplicate. Returns how many pages it did (0:
/// the caller copies the first page itself).
fn move_host_pages(dp: usize, sp: usize, n: usize) -> usize {
    let mut k = 0;
    let plain = |e: Entry| e.device().is_none() && e.dup().is_none();
    // Lock pairs in ascending order of the lower run: both runs are ascending, so the order of
    // all locks taken is ascending as long as the runs do not interleave (distinct blocks).
    gate_enter();
    while k < n {
        let (a, b) = if sp < dp {
            (sp + k, dp + k)
        } else {
            (dp + k, sp + k)
        };
        let ea = match pagemap::lock_unless_pinned(a) {
            Ok(Some(e)) => e,
            _ => break,
        };
        let eb = match pagemap::lock_unless_pinned(b) {
            Ok(Some(e)) => e,
            _ => {
                pagemap::unlock(a, ea);
                break;
            }
        };
        if !plain(ea) || !plain(eb) {
            pagemap::unlock(a, ea);
            pagemap::unlock(b, eb);
            break;
        }
        k += 1;
    }
    // The moves change no entry: both sides stay host pages of their blocks.
    let unlock_all = |k: usize| {
        for p in (sp..sp + k).chain(dp..dp + k) {
            pagemap::unlock(p, pagemap::get(p));
        }
    };
    if k == 0 {
        gate_exit();
        return 0;
    }
    let (from, to, len) = (arena::addr_of(sp), arena::addr_of(dp), k * PAGE);
    // The destination must be missing for a move.
    sys::discard(to, len);
    let done = match uffd::mv(to, from, len) {
        Ok(()) => k,
        Err((bytes, _)) => bytes / PAGE,
    };
    if done < k {
        // What did not move (a page shared with a fork child, say) is copied into the pages
        // that are missing now, atomically per page; a source page that is not there (never
        // touched) leaves its destination missing, which reads as zero.
        let mut there = [true; BATCH];
        if sys::present(from + done * PAGE, k - done, &mut there[..k - done]).is_err() {
            there.fill(true);
        }
        for i in (done..k).filter(|&i| there[i - done]) {
            let (t, f) = (to + i * PAGE, from + i * PAGE);
            if uffd::copy(t, f, PAGE).is_err() {
                sys::fatal("could not copy a page to its reallocated block");
            }
        }
    }
    COUNTERS
        .realloc_moved_pages
        .fetch_add(done as u64, Ordering::Relaxed);
    unlock_all(k);
    gate_exit();
    k
}
