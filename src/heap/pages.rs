//! Page runs: contiguous pages of the managed range, handed out as small-object spans or as
//! large allocations.
//!
//! Invariants (all under the [`PAGES`] lock):
//! - Pages `[top, end)` were never handed out: zero, and unpopulated but for the rest of the
//!   huge page (see [`arena`]) that holds the page below `top`.
//! - Every page below `top` is either allocated (its page map entry says `Span` or `Large`) or in
//!   exactly one free run. Free runs are maximal among runs of their kind (dirty or clean, see
//!   below): two adjacent free runs are never both dirty or both clean.
//! - A free run `[h, h+len)` has a [`Tag`] with its length and kind at `h` (head: flags, list
//!   links) and at `h+len-1` (tail), so freeing a neighbour finds it in O(1) and coalesces.
//! - A live large allocation has a tag at its head page with its length and [`LARGE`].
//! - `dirty` counts pages of free runs that may be resident. A dirty run's head tag carries when
//!   it was freed (a stamp, see [`super::purge`]); it goes back to the OS (`MADV_DONTNEED`) once
//!   it stayed free for the purge delay, so a program that frees and reallocates the same sizes
//!   keeps its pages warm while RSS falls soon after memory is really done with.
//! - Dirty and clean runs are kept apart, as jemalloc keeps its dirty and retained extents:
//!   they coalesce only with their own kind and sit on separate lists, and an allocation takes
//!   a dirty run before a clean one. Merged into one run, a freed working set and the clean
//!   pages around it read as one dirty run: allocations then took its clean low pages first,
//!   faulting them in while the resident ones stayed unused, and a realloc copied into them
//!   instead of moving its pages (four buffers growing in turn peaked at 1.74× mimalloc's RSS,
//!   2026-12-03).
//!
//! The tags live in a side table outside the managed range, so no metadata is ever written into
//! pages that may migrate.

/// Large runs moved by [`PageHeap::move_large`], and how many such moves are allowed.
static MAPPING_MOVES: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
const MAX_MAPPING_MOVES: usize = 8192;

/// Mirror of the high-water page (`top`) readable without the lock: pages at or above it
/// were never handed out (eviction scans stop there).
pub static TOP: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

use crate::base::consts::{HUGE_RUN_PAGES, RETAIN_MAX_PAGES};
use crate::mem::arena;
use crate::mem::pagemap::{self, Entry, Use};
use crate::pal::lock::Lock;
use crate::pal::sys;
use core::sync::atomic::Ordering;

const NIL: u32 = u32::MAX;
/// The tag is the head (and, for one-page runs, the tail) of a free run.
pub(super) const FREE: u32 = 1;
/// The free run's pages may be resident and non-zero.
pub(super) const DIRTY: u32 = 2;
/// The tag is the head of a live large allocation.
pub(super) const LARGE: u32 = 4;

/// A dirty free run's stamp (when it was freed) sits above the flag bits of its head tag.
const STAMP_SHIFT: u32 = 8;

/// Free-run size bins: 16 exact bins for 1..=16 pages, then 4 per doubling up to 2^32 pages.
const NBINS: usize = 128;

/// Boundary tag of a run, in the side table indexed by page number.
#[repr(C)]
#[derive(Clone, Copy)]
struct Tag {
    /// Length of the run in pages (valid at the head and tail of a free run, head of a large one).
    len: u32,
    /// `FREE`, `DIRTY`, `LARGE` bits; above [`STAMP_SHIFT`], a dirty run's stamp.
    flags: u32,
    /// Next free run in the same bin (head tags of free runs only).
    next: u32,
    /// Previous free run in the same bin.
    prev: u32,
}

/// The page-run allocator's state. One instance, [`PAGES`].
pub struct PageHeap {
    /// Side table of tags, one per arena page (mapped at init).
    tags: *mut Tag,
    /// First page never handed out.
    top: usize,
    /// Number of pages in the arena.
    end: usize,
    /// Head of each bin's doubly linked list of free runs: `heads[1]` dirty runs, `heads[0]`
    /// clean ones.
    heads: [[u32; NBINS]; 2],
    /// Bit `b` of `nonempty[d]` set when bin `b` of `heads[d]` is non-empty.
    nonempty: [[u64; NBINS / 64]; 2],
    /// Pages in free runs that may be resident.
    dirty: usize,
    /// Pages in free runs.
    free: usize,
    /// Pages in live large allocations.
    large: usize,
    /// Pages in live small-object spans.
    span_pages: usize,
    /// Pages given back to the OS by purging, ever.
    purged: u64,
}

// SAFETY: `tags` points into a process-wide mapping that is only accessed under the PAGES lock.
unsafe impl Send for PageHeap {}

/// Called before anything may lock page entries (device start-up, by the tiering layer).
/// Takes the page-run lock: the caller holds no heap lock.
pub fn enable_claims() {
    if !pagemap::claims_enabled() {
        let _g = PAGES.lock();
        arena::stop_huge_pages();
        pagemap::set_claims_enabled();
    }
}

/// The one page-run allocator.
pub static PAGES: Lock<PageHeap> = Lock::new(PageHeap {
    tags: core::ptr::null_mut(),
    top: 0,
    end: 0,
    heads: [[NIL; NBINS]; 2],
    nonempty: [[0; NBINS / 64]; 2],
    dirty: 0,
    free: 0,
    large: 0,
    span_pages: 0,
    purged: 0,
});

/// Snapshot of the page heap's counters, in pages.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageCounts {
    /// High-water mark: pages ever handed out.
    pub top: usize,
    /// Pages in free runs.
    pub free: usize,
    /// Pages in free runs that may still be resident.
    pub dirty: usize,
    /// Pages in live large allocations.
    pub large: usize,
    /// Pages in live spans.
    pub span_pages: usize,
    /// Pages purged (given back to the OS), ever.
    pub purged: u64,
}

fn bin_of(len: usize) -> usize {
    if len <= 16 {
        len - 1
    } else {
        let p = usize::BITS - 1 - len.leading_zeros();
        let sub = (len >> (p - 2)) & 3;
        (16 + (p as usize - 4) * 4 + sub).min(NBINS - 1)
    }
}

/// First page at or after `page` whose address is aligned to `align` bytes.
fn align_page(page: usize, align: usize) -> usize {
    let addr = arena::addr_of(page);
    arena::page_of((addr + align - 1) & !(align - 1))
}

impl PageHeap {
    /// Maps the tag table for the arena's pages. Called once by the heap's initialisation.
    pub fn init(&mut self, pages: usize) -> bool {
        let bytes = (pages * core::mem::size_of::<Tag>()).next_multiple_of(sys::PAGE_SIZE);
        let p = sys::map_noreserve(bytes);
        if p.is_null() {
            return false;
        }
        self.tags = p.cast();
        self.end = pages.min(NIL as usize - 1);
        true
    }

    #[inline]
    fn tag(&mut self, page: usize) -> &mut Tag {
        debug_assert!(page < self.end);
        // SAFETY: the tag table covers every arena page (init) and the PAGES lock, which `&mut
        // self` proves, serialises all access to it.
        unsafe { &mut *self.tags.add(page) }
    }

    fn insert(&mut self, h: usize, len: usize, dirty: bool) {
        let b = bin_of(len);
        let d = dirty as usize;
        let next = self.heads[d][b];
        *self.tag(h) = Tag {
            len: len as u32,
            flags: FREE
                | if dirty {
                    DIRTY | super::purge::stamp() << STAMP_SHIFT
                } else {
                    0
                },
            next,
            prev: NIL,
        };
        if len > 1 {
            *self.tag(h + len - 1) = Tag {
                len: len as u32,
                flags: FREE | if dirty { DIRTY } else { 0 },
                next: NIL,
                prev: NIL,
            };
        }
        if next != NIL {
            self.tag(next as usize).prev = h as u32;
        }
        self.heads[d][b] = h as u32;
        self.nonempty[d][b / 64] |= 1 << (b % 64);
        self.free += len;
        if dirty {
            self.dirty += len;
        }
    }

    /// Unlinks the free run headed at `h`; returns (len, dirty).
    fn remove(&mut self, h: usize) -> (usize, bool) {
        let t = *self.tag(h);
        debug_assert!(t.flags & FREE != 0);
        let len = t.len as usize;
        let b = bin_of(len);
        let d = (t.flags & DIRTY != 0) as usize;
        if t.prev != NIL {
            self.tag(t.prev as usize).next = t.next;
        } else {
            self.heads[d][b] = t.next;
            if t.next == NIL {
                self.nonempty[d][b / 64] &= !(1 << (b % 64));
            }
        }
        if t.next != NIL {
            self.tag(t.next as usize).prev = t.prev;
        }
        self.tag(h).flags = 0;
        self.free -= len;
        let dirty = t.flags & DIRTY != 0;
        if dirty {
            self.dirty -= len;
        }
        (len, dirty)
    }

    /// The first non-empty bin at or above `from` on the lists of dirty (`d == 1`) or clean
    /// (`d == 0`) runs.
    fn next_nonempty(&self, d: usize, from: usize) -> Option<usize> {
        let mut b = from;
        while b < NBINS {
            let word = self.nonempty[d][b / 64] >> (b % 64);
            if word != 0 {
                return Some(b + word.trailing_zeros() as usize);
            }
            b = (b / 64 + 1) * 64;
        }
        None
    }

    /// Hands out `n` pages whose first address is aligned to `align` bytes (a power of two of at
    /// least a page), recorded as `use_` in the page map. Returns the first page and whether the
    /// pages are known to be zero. `None` when the arena is exhausted.
    pub fn alloc(&mut self, n: usize, align: usize, use_: Use) -> Option<(usize, bool)> {
        self.alloc_with_room(n, 0, align, use_)
    }

    /// [`alloc`](Self::alloc), placed where at least `room` free pages follow the run (or at
    /// the top of the heap), so that it can later grow by `room` pages in place.
    fn alloc_with_room(
        &mut self,
        n: usize,
        room: usize,
        align: usize,
        use_: Use,
    ) -> Option<(usize, bool)> {
        let (start, zero) = self
            .find_free(n, room, align)
            .or_else(|| self.carve_top(n, align))?;
        // Zero pages first, while the pages are still free: nothing can lock (and migrate) a
        // free page, so the zero page cannot land beside a device copy.
        crate::fault::pages_handed_out(start, n);
        crate::mem::blocks::reset(start, n);
        pagemap::set_range(start, n, Entry::host(use_));
        match use_ {
            Use::Large => {
                *self.tag(start) = Tag {
                    len: n as u32,
                    flags: LARGE,
                    next: NIL,
                    prev: NIL,
                };
                self.large += n;
                super::run_cache::set_live(start, n);
            }
            Use::Span => self.span_pages += n,
            Use::Free => unreachable!("alloc hands out pages for a use"),
        }
        Some((start, zero))
    }

    /// First fit of `n` pages aligned to `align`, from the smallest bin up, in a free run that
    /// has `room` more free pages after them (left free): among the dirty runs first (their
    /// pages are likely resident: no fault, no new RSS), then among the clean ones.
    fn find_free(&mut self, n: usize, room: usize, align: usize) -> Option<(usize, bool)> {
        for d in [1, 0] {
            let mut budget = 256; // runs of each kind examined before falling back
            let mut from = bin_of(n + room);
            'bins: while let Some(b) = self.next_nonempty(d, from) {
                let mut h = self.heads[d][b];
                while h != NIL {
                    if budget == 0 {
                        break 'bins;
                    }
                    budget -= 1;
                    let t = *self.tag(h as usize);
                    let (run, len) = (h as usize, t.len as usize);
                    let s = align_page(run, align);
                    if s + n + room <= run + len {
                        let (_, dirty) = self.remove(run);
                        // The pieces left over border what the run bordered: runs of the
                        // other kind, or pages in use.
                        if s > run {
                            self.insert(run, s - run, dirty);
                        }
                        if s + n < run + len {
                            self.insert(s + n, run + len - s - n, dirty);
                        }
                        return Some((s, !dirty));
                    }
                    h = t.next;
                }
                from = b + 1;
            }
        }
        None
    }

    fn carve_top(&mut self, n: usize, align: usize) -> Option<(usize, bool)> {
        let s = align_page(self.top, align);
        if s.checked_add(n)? > self.end {
            return None;
        }
        if s > self.top {
            let gap = (self.top, s - self.top);
            self.top = s + n;
            TOP.store(self.top, Ordering::Relaxed);
            // Never used, but resident if a huge page covers it (see `arena`).
            self.release_run(gap.0, gap.1, arena::huge_pages());
        } else {
            self.top = s + n;
            TOP.store(self.top, Ordering::Relaxed);
        }
        Some((s, true))
    }

    /// Returns pages `[h, h+len)` to the free runs, coalescing with free neighbours. The pages
    /// are free already (never handed out), or locked by the caller ([`super::give_back`]), or
    /// no page can be locked yet ([`pagemap::claims_enabled`] is false).
    fn release_run(&mut self, h: usize, len: usize, dirty: bool) {
        pagemap::set_range(h, len, Entry::host(Use::Free));
        let start = self.merge_insert(h, len, dirty);
        // A huge free goes back at once (its own length decides: freeing a working set block by
        // block coalesces into long runs that are still worth keeping warm).
        if dirty && (len >= HUGE_RUN_PAGES || super::purge::delay_ms() == 0) {
            self.purge_run(start);
        } else if self.dirty > RETAIN_MAX_PAGES {
            self.purge(RETAIN_MAX_PAGES / 2);
        }
    }

    /// Lists the free pages `[h, h+len)` (their page map entries read `Free`) as a run of the
    /// given kind, coalesced with the free runs of that kind on either side; returns its head.
    fn merge_insert(&mut self, h: usize, len: usize, dirty: bool) -> usize {
        let (mut start, mut len) = (h, len);
        let kind = if dirty { DIRTY } else { 0 };
        // A neighbour merges only if it is a free run (its tag says so) of the same kind: a
        // free page can also be one `carve_top` is handing out right now, whose entry is not
        // set yet. A tail tag carries its run's kind.
        if start > 0
            && pagemap::in_free_run(pagemap::get(start - 1))
            && self.tag(start - 1).flags & (FREE | DIRTY) == FREE | kind
        {
            let prev_len = self.tag(start - 1).len as usize;
            let prev = start - prev_len;
            self.remove(prev);
            start = prev;
            len += prev_len;
        }
        let next = start + len;
        if next < self.top
            && pagemap::in_free_run(pagemap::get(next))
            && self.tag(next).flags & (FREE | DIRTY) == FREE | kind
        {
            let (l, _) = self.remove(next);
            len += l;
        }
        self.insert(start, len, dirty);
        start
    }

    /// Frees a span's pages (which may be resident).
    pub fn free_span(&mut self, h: usize, len: usize) {
        self.span_pages -= len;
        self.release_run(h, len, true);
    }

    /// Length in pages of the live large allocation starting at page `h`, or `None` if `h` does
    /// not start one.
    pub fn large_len(&mut self, h: usize) -> Option<usize> {
        if h >= self.top || pagemap::get(h).use_() != Use::Large {
            return None;
        }
        let t = *self.tag(h);
        (t.flags & LARGE != 0).then_some(t.len as usize)
    }

    /// Ends the large allocation at page `h` and returns its length in pages (`None` if there
    /// is none: a double free, or a pointer that does not start one). Its pages stay out of
    /// the free runs until [`PageHeap::release_large`].
    pub fn take_large(&mut self, h: usize) -> Option<usize> {
        let len = self.large_len(h)?;
        self.tag(h).flags = 0;
        self.large -= len;
        super::run_cache::take_live(h);
        Some(len)
    }

    /// Gives a run that waited in the run cache (`n` pages at `h`, still a large run here)
    /// back to the free runs and its pages to the OS: nobody asked for its size for a whole
    /// purger period. Only while page claims are off (nothing can hold its pages).
    pub fn free_cached(&mut self, h: usize, n: usize) {
        debug_assert_eq!(self.large_len(h), Some(n));
        self.take_large(h);
        arena::decommit(h, n);
        self.purged += n as u64;
        self.release_run(h, n, false);
    }

    /// Returns the pages of a large allocation ended by [`PageHeap::take_large`] to the free runs.
    pub fn release_large(&mut self, h: usize, len: usize) {
        self.release_run(h, len, true);
    }

    /// Shrinks the large allocation at page `h` from `old` to `new` pages, returning its tail to
    /// the free runs (see [`PageHeap::release_run`] for the tail's pages).
    pub fn shrink_large(&mut self, h: usize, old: usize, new: usize) {
        debug_assert!(new < old);
        self.tag(h).len = new as u32;
        self.large -= old - new;
        super::run_cache::set_live(h, new);
        self.release_run(h + new, old - new, true);
    }

    /// The length of the run that waits in the run cache right after the large run at `h`
    /// (`old` pages long), if one does.
    pub fn cached_after(&mut self, h: usize, old: usize) -> Option<usize> {
        let next = h + old;
        let cached = next < self.top
            && pagemap::get(next).use_() == Use::Large
            && super::run_cache::live_len(next) == 0
            && self.tag(next).flags & LARGE != 0;
        cached.then(|| self.tag(next).len as usize)
    }

    /// Grows the large allocation at page `h` (of `old` pages) to `new` >= `old` pages without
    /// moving it, into the next free run or fresh pages. Returns false (and changes nothing)
    /// if it cannot.
    pub fn grow_large(&mut self, h: usize, old: usize, new: usize) -> bool {
        if new == old {
            return true;
        }
        let extra = new - old;
        let next = h + old;
        // A freed run waiting in the run cache right after this one: take it back, so that
        // the cache does not stop a neighbour from growing in place. Once pages can be
        // claimed, its pages may be locked or on a device: the caller frees it through the
        // take-back of freed pages instead, outside this lock, and asks again.
        if !pagemap::claims_enabled() {
            if let Some(n) = self.cached_after(h, old) {
                if super::run_cache::steal(next, n) {
                    self.take_large(next);
                    self.release_run(next, n, true);
                }
            }
        }
        // The free runs right after it (dirty and clean ones may alternate), up to `extra`
        // pages or up to the top of the heap.
        let mut end = next;
        while end < next + extra
            && end < self.top
            && pagemap::in_free_run(pagemap::get(end))
            && self.tag(end).flags & FREE != 0
        {
            end += self.tag(end).len as usize;
        }
        let to_top = end < next + extra;
        if to_top && (end != self.top || self.top + (next + extra - end) > self.end) {
            return false;
        }
        let mut p = next;
        while p < end {
            let (len, dirty) = self.remove(p);
            // What is left of the last run borders what it bordered: a run of the other kind,
            // or pages in use.
            if p + len > next + extra {
                self.insert(next + extra, p + len - next - extra, dirty);
            }
            p += len;
        }
        if to_top {
            self.top = next + extra;
            TOP.store(self.top, Ordering::Relaxed);
        }
        crate::fault::pages_handed_out(next, extra);
        pagemap::set_range(next, extra, Entry::host(Use::Large));
        self.tag(h).len = new as u32;
        self.large += extra;
        super::run_cache::set_live(h, new);
        true
    }

    /// Finds a new run of `new` >= `old` pages aligned to `align` for the large allocation at
    /// page `h` (`old` pages), and if the new run is fresh (not resident) moves the old pages'
    /// mappings there (`mremap`): no byte is copied, no fresh page is faulted in, and the old
    /// run goes back to the free runs as fresh pages. Returns the new run's first page and
    /// whether it moved the old pages; if not, the new run is handed out and the caller copies
    /// and frees the old one (warm pages are cheaper to copy into than to throw away: moving
    /// over them would leave both runs to be faulted in again when reused).
    ///
    /// Only while no page entry can be locked by anyone ([`pagemap::claims_enabled`] is false,
    /// checked by the caller under this lock, which [`enable_claims`] takes), so nothing else
    /// can be moving these pages. `None` (nothing changed) when the arena is exhausted.
    pub fn move_large(
        &mut self,
        h: usize,
        old: usize,
        new: usize,
        align: usize,
    ) -> Option<(usize, bool)> {
        debug_assert!(!pagemap::claims_enabled());
        // Each move may leave two more mappings until the memory is mapped afresh (see
        // `sys::move_mapping`): a quarter of Linux's default `vm.max_map_count` at most.
        // A run that had to move while growing is likely to grow again (a `Vec` doubles):
        // place it where two more doublings fit behind it, so that they happen in place. Only
        // address space is set aside; the room stays free for anyone. Without it, a
        // fragmented heap (valgrind in CI) moved a growing `Vec` at every step from 2 MiB to
        // 32 MiB.
        let (q, fresh) = self.alloc_with_room(new, 3 * new, align, Use::Large)?;
        let len = old * sys::PAGE_SIZE;
        if !fresh
            || MAPPING_MOVES.load(Ordering::Relaxed) >= MAX_MAPPING_MOVES
            || sys::move_mapping(arena::addr_of(h), arena::addr_of(q), len).is_err()
        {
            return Some((q, false));
        }
        MAPPING_MOVES.fetch_add(1, Ordering::Relaxed);
        arena::mapped_afresh(h, old);
        crate::mem::counters::COUNTERS
            .realloc_moved_pages
            .fetch_add(old as u64, Ordering::Relaxed);
        self.take_large(h);
        // Mapped afresh: zero and not resident.
        self.release_run(h, old, false);
        Some((q, true))
    }

    /// Gives the free run headed at `h` back to the OS if it is dirty, with the side-table
    /// memory of its interior (page-map entries and tags, which read as zero again: `Free`, no
    /// tag), so a heap that freed everything costs what it cost before it grew.
    fn purge_run(&mut self, h: usize) {
        let t = *self.tag(h);
        if t.flags & DIRTY != 0 {
            let len = t.len as usize;
            self.remove(h);
            // The never-used pages above the top of the heap, up to the end of its huge page:
            // resident too if that huge page was (see `arena`). A program that freed 256 MiB
            // and slept kept 2 MiB of them.
            let upto = if h + len == self.top && arena::huge_pages() {
                (h + len)
                    .next_multiple_of(arena::HUGE_PAGE_PAGES)
                    .min(self.end)
            } else {
                h + len
            };
            arena::decommit(h, upto - h);
            if len > 2 {
                pagemap::decommit_free(h + 1, h + len - 1);
                let tags = self.tags as usize;
                let size = core::mem::size_of::<Tag>();
                let lo = (tags + (h + 1) * size).next_multiple_of(sys::PAGE_SIZE);
                let hi = (tags + (h + len - 1) * size) & !(sys::PAGE_SIZE - 1);
                if lo < hi {
                    sys::discard(lo, hi - lo);
                }
            }
            self.purged += len as u64;
            // Clean now: it joins the clean runs beside it (which are on the other lists, so
            // a walk of the dirty lists is not disturbed).
            self.merge_insert(h, len, false);
        }
    }

    /// Gives dirty free runs back to the OS, largest bins first, until at most `target` dirty
    /// pages remain.
    fn purge(&mut self, target: usize) {
        let mut b = NBINS;
        while b > 0 && self.dirty > target {
            b -= 1;
            // Purging a run moves it to the clean lists: `next` stays on this one.
            let mut h = self.heads[1][b];
            while h != NIL && self.dirty > target {
                let next = self.tag(h as usize).next;
                self.purge_run(h as usize);
                h = next;
            }
        }
    }

    /// Gives back every dirty free run that has stayed free for `delay` ms at stamp `now` (the
    /// purger thread, every quarter delay).
    pub fn purge_expired(&mut self, now: u32, delay: u32) {
        for b in 0..NBINS {
            if self.dirty == 0 {
                return;
            }
            let mut h = self.heads[1][b];
            while h != NIL {
                let t = *self.tag(h as usize);
                if t.flags & DIRTY != 0 && super::purge::age(now, t.flags >> STAMP_SHIFT) >= delay {
                    self.purge_run(h as usize);
                }
                h = t.next;
            }
        }
    }

    /// Purges every dirty free run (used by `tieralloc::trim`).
    pub fn purge_all(&mut self) {
        self.purge(0);
    }

    /// The counters, in pages.
    pub fn counts(&self) -> PageCounts {
        PageCounts {
            top: self.top,
            free: self.free,
            dirty: self.dirty,
            large: self.large,
            span_pages: self.span_pages,
            purged: self.purged,
        }
    }

    /// The first page never handed out.
    pub fn top(&self) -> usize {
        self.top
    }

    /// Length and flags of the tag of page `p` (for the validity walker).
    pub(super) fn tag_at(&mut self, p: usize) -> (u32, u32) {
        let t = *self.tag(p);
        (t.len, t.flags)
    }

    /// Walks every bin's lists of free runs: each head says `FREE`, and `DIRTY` exactly on the
    /// dirty lists, belongs to the bin of its length, links back to its predecessor, and a
    /// bin's bit in `nonempty` says whether its list is. Returns how many runs the lists hold.
    pub(super) fn listed_runs(&mut self) -> Result<usize, super::check::Invalid> {
        use super::check::ensure;
        let mut n = 0;
        for d in 0..2 {
            for b in 0..NBINS {
                let mut h = self.heads[d][b];
                ensure(
                    (h != NIL) == (self.nonempty[d][b / 64] >> (b % 64) & 1 != 0),
                    "a bin's nonempty bit says whether its list is",
                    b,
                )?;
                let mut prev = NIL;
                while h != NIL {
                    let t = *self.tag(h as usize);
                    ensure(t.flags & FREE != 0, "a listed run is free", h as usize)?;
                    ensure(
                        (t.flags & DIRTY != 0) == (d == 1),
                        "a run is listed with its kind (dirty or clean)",
                        h as usize,
                    )?;
                    ensure(
                        bin_of(t.len as usize) == b,
                        "a run is listed in its size's bin",
                        h as usize,
                    )?;
                    ensure(
                        t.prev == prev,
                        "a listed run links back to its predecessor",
                        h as usize,
                    )?;
                    n += 1;
                    ensure(n <= self.end, "the free lists have no cycle", h as usize)?;
                    prev = h;
                    h = t.next;
                }
            }
        }
        Ok(n)
    }

    /// Resident bytes of the tag table.
    pub fn tags_resident_bytes(&self) -> usize {
        sys::resident_bytes(self.tags as usize, self.end * core::mem::size_of::<Tag>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walker_finds_a_page_count_that_is_off() {
        let broken = crate::heap::check::testing::broken_by(1 << 20, |_| PAGES.lock().large ^= 1);
        assert_eq!(broken, Err("large == the pages of all large runs"));
    }

    #[test]
    fn bins_are_monotonic_and_in_range() {
        let mut last = 0;
        for len in 1..100_000usize {
            let b = bin_of(len);
            assert!(b >= last && b < NBINS, "len {len} bin {b}");
            last = b;
        }
        assert_eq!(bin_of(u32::MAX as usize), NBINS - 1);
    }
}
