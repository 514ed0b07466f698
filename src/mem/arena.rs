//! The managed range: one contiguous reservation from which every user byte is handed out.
//!
//! Invariant: `base()` and `size()` never change after [`init`] succeeded, so "is this pointer
//! ours?" is a lock-free range check, and page numbers (`(addr - base) >> 12`) index the flat
//! [`crate::mem::pagemap`] and the heap's side tables.
//!
//! The range is mapped read/write with `MAP_NORESERVE`: a page costs memory only once touched,
//! and [`decommit`] gives it back. The reservation is aligned to [`ARENA_ALIGN`] so that every
//! alignment up to 2 MiB is a property of offsets within the range.
//!
//! Until pages can migrate, the range asks for transparent huge pages (`MADV_HUGEPAGE`, which
//! Linux's default `madvise` mode waits for), as mimalloc does for its arenas: a batch of
//! 6144 16 KiB blocks, first touches included, took 356 ns per block instead of 616 (a
//! process of 20 rounds, twice each way, 2026-12-02), and the preload report's C++ hand-off
//! program 600 page faults instead of 7,500 (but only 0.98× the time: 40 paired runs). A
//! fault can now wait for the kernel to compact memory into a huge page: two of six such
//! processes (batches of 1 and 4 MiB blocks) took about 8 times longer. Once devices start,
//! [`stop_huge_pages`] asks for none: a migration moves 4 KiB pages (the kernel splits a huge
//! page it touches), and a collapse by `khugepaged` must never fill the hole a device-resident
//! page leaves. `TIERALLOC_HUGE_PAGES=0` keeps them out from the start.

use crate::pal::sys::{self, PAGE_SHIFT, PAGE_SIZE};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Alignment of the managed range's start.
pub const ARENA_ALIGN: usize = 2 << 20;

static BASE: AtomicUsize = AtomicUsize::new(0);
static SIZE: AtomicUsize = AtomicUsize::new(0);
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// Reserves the managed range, trying `want` bytes first and halving on refusal down to
/// [`crate::config::MIN_ARENA`]. Returns false if nothing could be reserved.
/// Called once, before any other function here, by [`crate::mem::ensure_init`].
pub fn init(want: usize) -> bool {
    REQUESTED.store(want, Ordering::Relaxed);
    let mut size = want & !(ARENA_ALIGN - 1);
    while size >= crate::config::MIN_ARENA {
        let p = sys::map_noreserve_aligned(size, ARENA_ALIGN);
        if !p.is_null() {
            let huge = crate::config::huge_pages() && sys::advise_huge(p as usize, size, true);
            HUGE.store(huge, Ordering::Relaxed);
            HUGE_EVER.store(huge, Ordering::Relaxed);
            SIZE.store(size, Ordering::Relaxed);
            BASE.store(p as usize, Ordering::Release);
            return true;
        }
        size /= 2;
    }
    false
}

/// Whether the range asks for transparent huge pages (see the module doc).
static HUGE: AtomicBool = AtomicBool::new(false);
/// Whether it ever did.
static HUGE_EVER: AtomicBool = AtomicBool::new(false);

/// Asks the kernel for no more transparent huge pages in the range (see the module doc).
/// Called once pages can be locked for migration, before any is.
pub fn stop_huge_pages() {
    if HUGE.swap(false, Ordering::Relaxed) {
        sys::advise_huge(base(), size(), false);
    }
}

/// Pages in a transparent huge page.
pub const HUGE_PAGE_PAGES: usize = (2 << 20) / PAGE_SIZE;

/// Whether the range ever asked for transparent huge pages: then a page the heap never
/// handed out may be resident, if it shares a huge page with one it did.
pub fn huge_pages() -> bool {
    HUGE_EVER.load(Ordering::Relaxed)
}

/// Pages `[page, page+n)` were mapped afresh (`sys::move_mapping`): they take the range's
/// huge-page advice again, so that the kernel can merge them with their neighbours.
pub fn mapped_afresh(page: usize, n: usize) {
    if HUGE.load(Ordering::Relaxed) {
        sys::advise_huge(addr_of(page), n * PAGE_SIZE, true);
    }
}

/// Start address of the managed range (0 before [`init`]).
#[inline]
pub fn base() -> usize {
    BASE.load(Ordering::Acquire)
}

/// Size of the managed range in bytes (0 before [`init`]).
#[inline]
pub fn size() -> usize {
    SIZE.load(Ordering::Relaxed)
}

/// The size that was asked for (from `TIERALLOC_ARENA` or the default).
pub fn requested() -> usize {
    REQUESTED.load(Ordering::Relaxed)
}

/// Number of pages in the managed range.
#[inline]
pub fn pages() -> usize {
    size() >> PAGE_SHIFT
}

/// True if `addr` lies inside the managed range.
#[inline]
pub fn contains(addr: usize) -> bool {
    addr.wrapping_sub(base()) < size()
}

/// Page number of `addr`, which must be inside the managed range.
#[inline]
pub fn page_of(addr: usize) -> usize {
    (addr - base()) >> PAGE_SHIFT
}

/// Address of page number `page`.
#[inline]
pub fn addr_of(page: usize) -> usize {
    base() + (page << PAGE_SHIFT)
}

/// Releases the memory behind pages `[page, page+n)`; they read back as zeros.
pub fn decommit(page: usize, n: usize) -> bool {
    sys::discard(addr_of(page), n * PAGE_SIZE)
}

/// Bytes of the managed range that are resident in host memory right now (`mincore`).
/// Only the first `upto` bytes are scanned (the heap passes its high-water mark).
pub fn resident_bytes(upto: usize) -> usize {
    sys::resident_bytes(base(), upto.min(size()))
}
