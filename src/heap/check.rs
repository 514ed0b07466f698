//! Validity walkers for the heap, in the style of mimalloc's `mi_page_is_valid`: the
//! invariants of `pages` and `span` written as checks, run by `tieralloc::check_invariants`
//! (the model and stress tests call it after their steps). They hold every heap lock and
//! allocate nothing; a broken invariant comes back as an [`Invalid`] naming it and the page.

use super::pages::PageHeap;
use super::span;
pub use crate::base::error::Invalid;
use crate::mem::pagemap::{self, Use};

/// Fails with `what` at `at` unless `ok`.
pub(crate) fn ensure(ok: bool, what: &'static str, at: usize) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid { what, at })
    }
}

/// Every page of `pages` reads `use_` in the page map.
pub(crate) fn all_read(
    pages: core::ops::Range<usize>,
    use_: Use,
    what: &'static str,
) -> Result<(), Invalid> {
    pages
        .into_iter()
        .try_for_each(|q| ensure(pagemap::get(q).use_() == use_, what, q))
}

/// Checks the page runs and the spans, holding every heap lock meanwhile.
pub fn check() -> Result<(), Invalid> {
    if !super::is_ready() {
        return Ok(());
    }
    super::lock_all();
    // SAFETY: lock_all above took every heap lock on this thread; check_locked only reads.
    let r = unsafe { check_locked() };
    // SAFETY: taken by lock_all above on this thread.
    unsafe { super::unlock_all() };
    r
}

/// # Safety
/// The caller holds every heap lock ([`super::lock_all`]).
unsafe fn check_locked() -> Result<(), Invalid> {
    // SAFETY: the page-run lock is held (caller's contract), so nobody else touches it.
    let heap: &mut PageHeap = unsafe { super::pages::PAGES.held_value() };
    heap.check()?;
    // SAFETY: every bin lock is held (caller's contract).
    unsafe { span::check_locked(heap.top()) }
}

impl PageHeap {
    /// Walks pages `[0, top)`, reading each page's use from the page map first (tags are only
    /// meaningful where it says what the page is):
    /// - a free run: head and tail tags say `FREE`, its kind (`DIRTY` or not) and its length;
    ///   each page reads `Free` in the page map; the run before it, if free, is of the other
    ///   kind (runs are maximal among their kind);
    /// - a large run: its head tag says `LARGE` and its length; each page reads `Large`; its
    ///   live length ([`super::run_cache`]) is its length, or 0 while it waits in the run
    ///   cache, and the cache holds no more pages than such runs have;
    /// - otherwise a page reads `Span`;
    /// - `free`, `dirty`, `large` and `span_pages` equal the sums found; every free run is on
    ///   the list of its size's bin, and the lists hold nothing else.
    pub fn check(&mut self) -> Result<(), Invalid> {
        let top = self.top();
        let (mut free, mut dirty, mut large, mut spans, mut runs) = (0, 0, 0, 0, 0);
        let mut not_live = 0;
        // The kind of the free run just walked (`FREE | DIRTY` or `FREE`), 0 after pages in use.
        let mut prev_free = 0;
        let mut p = 0;
        while p < top {
            let e = pagemap::get(p);
            ensure(!e.locked(), "no page entry is locked when nothing runs", p)?;
            let (len, flags) = self.tag_at(p);
            // Tags are valid only where the page map says what the page is: a tail tag stays
            // behind when its run is handed out.
            if e.use_() == Use::Free {
                let len = len as usize;
                ensure(
                    flags & super::pages::FREE != 0,
                    "a page that reads Free heads a free run or lies inside one",
                    p,
                )?;
                ensure(len > 0 && p + len <= top, "a free run lies below top", p)?;
                let kind = flags & (super::pages::FREE | super::pages::DIRTY);
                ensure(
                    prev_free != kind,
                    "free runs are maximal: no two of a kind are adjacent",
                    p,
                )?;
                let (tail_len, tail_flags) = self.tag_at(p + len - 1);
                ensure(
                    tail_len as usize == len
                        && tail_flags & (super::pages::FREE | super::pages::DIRTY) == kind,
                    "a free run's tail tag repeats its length and kind",
                    p + len - 1,
                )?;
                all_read(p..p + len, Use::Free, "pages of a free run read Free")?;
                free += len;
                runs += 1;
                if flags & super::pages::DIRTY != 0 {
                    dirty += len;
                }
                prev_free = kind;
                p += len;
                continue;
            }
            prev_free = 0;
            match e.use_() {
                Use::Large => {
                    let len = len as usize;
                    ensure(
                        flags & super::pages::LARGE != 0 && len > 0 && p + len <= top,
                        "a large run's head tag says LARGE and its length",
                        p,
                    )?;
                    all_read(p..p + len, Use::Large, "pages of a large run read Large")?;
                    let live = super::run_cache::live_len(p);
                    ensure(
                        live == len || live == 0,
                        "a large run's live length is its length, or 0 while it is cached",
                        p,
                    )?;
                    if live == 0 {
                        not_live += len;
                    }
                    large += len;
                    p += len;
                }
                Use::Span => {
                    spans += 1;
                    p += 1;
                }
                Use::Free => unreachable!("free pages are walked above"),
            }
        }
        let c = self.counts();
        ensure(
            super::run_cache::cached_pages() <= not_live,
            "the run cache holds no more pages than the large runs that are not live",
            not_live,
        )?;
        ensure(c.free == free, "free == the pages of all free runs", free)?;
        ensure(
            c.dirty == dirty,
            "dirty == the pages of dirty free runs",
            dirty,
        )?;
        ensure(
            c.large == large,
            "large == the pages of all large runs",
            large,
        )?;
        ensure(
            c.span_pages == spans,
            "span_pages == the pages that read Span",
            spans,
        )?;
        ensure(
            self.listed_runs()? == runs,
            "the bins list every free run once",
            runs,
        )
    }
}

/// For the heap's unit tests: the heap alone, with no tier above it.
#[cfg(test)]
pub(crate) mod testing {
    use super::super::Hooks;
    use crate::mem::scope::TierIndex;

    /// Hooks of a heap with nothing above it: every allocation stays on the host.
    pub(crate) struct HostOnly;

    impl Hooks for HostOnly {
        fn prepare(_: TierIndex) -> TierIndex {
            0
        }
        fn place_fresh(_: usize, _: usize, _: u16) -> bool {
            false
        }
        fn reads_as_zero(_: usize, _: usize) -> bool {
            false
        }
        fn claim_freed(_: usize, _: usize) {}
        fn tier_of_run(_: usize, _: usize) -> TierIndex {
            0
        }
        fn copy_block(dst: usize, src: usize, len: usize) {
            // SAFETY: the heap passes two live, distinct blocks of at least `len` bytes.
            unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) }
        }
        fn started() {}
    }

    /// The tests that break the heap on purpose run one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Allocates `size` bytes, breaks the heap with `flip(p)`, checks, repairs with `flip(p)`
    /// again (it must undo itself) and frees; the invariant the walkers reported broken.
    pub(crate) fn broken_by(size: usize, flip: impl Fn(*mut u8)) -> Result<(), &'static str> {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let p = super::super::alloc::<HostOnly>(size, 8);
        assert!(!p.is_null());
        assert_eq!(super::check(), Ok(()));
        flip(p);
        let broken = super::check();
        flip(p);
        // SAFETY: p came from alloc with this size and alignment.
        unsafe { super::super::dealloc::<HostOnly>(p, size, 8) };
        assert_eq!(super::check(), Ok(()));
        broken.map_err(|e| e.what)
    }
}
