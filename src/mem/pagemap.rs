//! The page map: one atomic 64-bit entry per page of the managed range.
//!
//! The map is a flat array indexed by page number, mapped with `MAP_NORESERVE` so that only the
//! entries of pages in use cost memory (8 bytes per 4 KiB page, 0.2%). Entries are atomics
//! because fault handlers read and lock them without taking any other lock.
//!
//! Entry layout (bits):
//! - `0..2`   [`Use`]: free, part of a small-object span, or part of a large run.
//! - `2`      [`DEVICE`]: the page lives in a device pool (else in host memory).
//! - `3`      [`LOCKED`]: a migration or fault-back owns the page; everyone else waits.
//! - `4`      [`FILLED`]: (device pages) the device frame holds data; clear means the page was
//!   never touched and reads as zero wherever it lands.
//! - `5`      [`PINNED`]: (with `LOCKED`) a running device kernel uses the page; waiters may
//!   wait long, so they sleep instead of spinning and transparent-mode faults are parked.
//! - `6`      `READ_MOSTLY` advice: migrating to a device makes a read-only duplicate.
//! - `7`      [`DUP`]: (host pages) a read-only duplicate lives on the device in the id field;
//!   the host page is write-protected, and the first write drops the duplicate.
//! - `8..24`  device id (when `DEVICE` or `DUP` is set).
//! - `24..41` `AccessedBy` advice: one bit per device (0..16), bit 40 for the host.
//! - `41`     [`PIN_RO`]: (with `PINNED`) the running kernel only reads the page: a CPU read of a
//!   device-resident one may make a read-only host copy instead of waiting.
//! - `42`     [`COPYING`]: (with `PINNED`) a CPU fault is making that copy; the kernel's end
//!   waits for it.
//! - `44..60` `PreferredLocation` advice: 0 none, 1 host, 2 + d device d.
//!
//! The advice bits and the use stick to the page across residency changes; the heap resets the
//! whole entry when it hands a page out or takes it back.
//!
//! Who may write an entry (one rule for everyone, the heap included):
//! - only the holder of `LOCKED` changes a handed-out page's entry, and it clears `LOCKED`
//!   (and `PINNED`) in the same store that publishes the new entry ([`unlock`]);
//! - a free page (`Use::Free`) is never locked ([`try_lock`] refuses it), and only the heap
//!   writes it, under its page-run lock: handing it out is a plain store;
//! - taking a page back (free) means locking it first, like a migration, before any heap lock
//!   is taken (page locks are never waited for under a heap lock), then storing `Free`.

use crate::base::tier::Tier;
use crate::pal::sys;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// What the allocator uses a page for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Use {
    /// Not handed out: free run or never used.
    Free = 0,
    /// Part of a span of small objects (some of them may be free).
    Span = 1,
    /// Part of one large allocation.
    Large = 2,
}

const USE_MASK: u64 = 0b11;
/// The page lives in a device pool.
const DEVICE: u64 = 1 << 2;
/// A migration or fault-back owns the page.
const LOCKED: u64 = 1 << 3;
/// The device frame holds data (else it reads as zero).
const FILLED: u64 = 1 << 4;
/// A running device kernel holds the page (always together with `LOCKED`).
const PINNED: u64 = 1 << 5;
/// `ReadMostly` advice.
const READ_MOSTLY: u64 = 1 << 6;
/// A read-only duplicate of this host page lives on the device in the id field.
const DUP: u64 = 1 << 7;
/// The running kernel that pinned the page only reads it.
const PIN_RO: u64 = 1 << 41;
/// A CPU fault is copying a read-only pinned device page to the host.
const COPYING: u64 = 1 << 42;
const DEV_SHIFT: u32 = 8;
const DEV_MASK: u64 = 0xffff << DEV_SHIFT;
const ACCESSED_SHIFT: u32 = 24;
/// Bit of the host in the `AccessedBy` mask (after the 16 devices).
const ACCESSED_HOST: u32 = 16;
const ACCESSED_MASK: u64 = 0x1_ffff << ACCESSED_SHIFT;
const PREF_SHIFT: u32 = 44;
const PREF_MASK: u64 = 0xffff << PREF_SHIFT;
/// What stays with a page when it changes residency.
const STICKY: u64 = USE_MASK | READ_MOSTLY | ACCESSED_MASK | PREF_MASK;
const ADVICE: u64 = READ_MOSTLY | ACCESSED_MASK | PREF_MASK;

/// One decoded page map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry(u64);

impl Entry {
    /// The entry of a page the allocator uses as `u`, resident on the host.
    pub const fn host(u: Use) -> Entry {
        Entry(u as u64)
    }

    /// What the allocator uses the page for.
    pub fn use_(self) -> Use {
        match self.0 & USE_MASK {
            0 => Use::Free,
            1 => Use::Span,
            _ => Use::Large,
        }
    }

    /// The device the page lives on, or `None` for host memory.
    #[inline]
    pub fn device(self) -> Option<u16> {
        (self.0 & DEVICE != 0).then_some(((self.0 & DEV_MASK) >> DEV_SHIFT) as u16)
    }

    /// True while a migration or fault-back owns the page.
    #[inline]
    pub fn locked(self) -> bool {
        self.0 & LOCKED != 0
    }

    /// True if the page's device frame holds data (meaningful for device pages only).
    #[inline]
    pub fn filled(self) -> bool {
        self.0 & FILLED != 0
    }

    /// True while a running device kernel uses the page.
    #[inline]
    pub fn pinned(self) -> bool {
        self.0 & PINNED != 0
    }

    /// True if the kernel that pinned the page only reads it.
    #[inline]
    pub fn pinned_read_only(self) -> bool {
        self.0 & (PINNED | PIN_RO) == PINNED | PIN_RO
    }

    /// True while a CPU fault copies this read-only pinned page to the host.
    #[inline]
    pub fn copying(self) -> bool {
        self.0 & COPYING != 0
    }

    /// For a host page with a read-only duplicate: the device holding it.
    #[inline]
    pub fn dup(self) -> Option<u16> {
        (self.0 & (DUP | DEVICE) == DUP).then_some(((self.0 & DEV_MASK) >> DEV_SHIFT) as u16)
    }

    /// True if the page has `ReadMostly` advice.
    #[inline]
    pub fn read_mostly(self) -> bool {
        self.0 & READ_MOSTLY != 0
    }

    /// True if the page has `AccessedBy` advice for `tier`.
    #[inline]
    pub fn accessed_by(self, tier: Tier) -> bool {
        self.0 & (1 << (ACCESSED_SHIFT + accessor_bit(tier))) != 0
    }

    /// The page's `PreferredLocation` advice.
    #[inline]
    pub fn preferred(self) -> Option<Tier> {
        match (self.0 & PREF_MASK) >> PREF_SHIFT {
            0 => None,
            1 => Some(Tier::Host),
            v => Some(Tier::Device(v as u16 - 2)),
        }
    }

    /// This entry with `ReadMostly` advice set or cleared.
    pub fn with_read_mostly(self, on: bool) -> Entry {
        Entry(if on {
            self.0 | READ_MOSTLY
        } else {
            self.0 & !READ_MOSTLY
        })
    }

    /// This entry with `AccessedBy(tier)` advice added.
    pub fn with_accessed_by(self, tier: Tier) -> Entry {
        Entry(self.0 | 1 << (ACCESSED_SHIFT + accessor_bit(tier)))
    }

    /// This entry with `PreferredLocation(tier)` advice.
    pub fn with_preferred(self, tier: Tier) -> Entry {
        let v = match tier {
            Tier::Host => 1,
            Tier::Device(d) => d as u64 + 2,
        };
        Entry((self.0 & !PREF_MASK) | v << PREF_SHIFT)
    }

    /// This entry without any advice.
    pub fn without_advice(self) -> Entry {
        Entry(self.0 & !ADVICE)
    }

    /// This entry moved to host memory (same use and advice, unlocked, no duplicate).
    #[inline]
    pub fn on_host(self) -> Entry {
        Entry(self.0 & STICKY)
    }

    /// This host entry with a read-only duplicate on device `d` (unlocked).
    #[inline]
    pub fn with_dup(self, d: u16) -> Entry {
        Entry((self.0 & STICKY) | DUP | ((d as u64) << DEV_SHIFT))
    }

    /// This entry moved to device `d`, with or without data in its frame (same use, unlocked).
    #[inline]
    pub fn on_device(self, d: u16, filled: bool) -> Entry {
        Entry(
            (self.0 & STICKY)
                | DEVICE
                | ((d as u64) << DEV_SHIFT)
                | if filled { FILLED } else { 0 },
        )
    }

    /// This entry without the lock and pin bits.
    #[inline]
    pub fn unlocked(self) -> Entry {
        Entry(self.0 & !(LOCKED | PINNED | PIN_RO | COPYING))
    }

    /// This entry with the lock bit set: what [`try_lock`] stores (for the protocol model).
    #[cfg(test)]
    pub fn with_lock(self) -> Entry {
        Entry(self.0 | LOCKED)
    }
}

/// The `AccessedBy` bit of `tier`.
fn accessor_bit(tier: Tier) -> u32 {
    match tier {
        Tier::Host => ACCESSED_HOST,
        Tier::Device(d) => d as u32 % ACCESSED_HOST,
    }
}

static MAP: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);

/// Maps the entry array for `pages` pages. Called once by the heap's initialisation, after
/// [`arena::init`]. Returns false if the kernel refused the mapping.
pub fn init(pages: usize) -> bool {
    let bytes = (pages * 8).next_multiple_of(sys::PAGE_SIZE);
    let p = sys::map_noreserve(bytes);
    if p.is_null() {
        return false;
    }
    LEN.store(pages, Ordering::Relaxed);
    MAP.store(p as usize, Ordering::Release);
    true
}

#[inline]
/// Gives back to the OS the memory of the entries of pages `[from, to)` where a whole page of
/// the map holds only such entries; they read as `Free` (zero) afterwards. For the heap, on the
/// interior of a free run it purges: every entry there is `Free`, unlocked, and written by no
/// one but the heap (which holds its page-run lock).
pub fn decommit_free(from: usize, to: usize) {
    let base = MAP.load(Ordering::Acquire);
    let (lo, hi) = (
        (base + from * 8).next_multiple_of(sys::PAGE_SIZE),
        (base + to * 8) & !(sys::PAGE_SIZE - 1),
    );
    if lo < hi {
        sys::discard(lo, hi - lo);
    }
}

fn slot(page: usize) -> &'static AtomicU64 {
    debug_assert!(page < LEN.load(Ordering::Relaxed));
    // SAFETY: the map covers every page of the arena (init), is never unmapped, and `page` is a
    // page number of the arena; AtomicU64 has the layout of u64 and zero is a valid entry.
    unsafe { &*(MAP.load(Ordering::Acquire) as *const AtomicU64).add(page) }
}

/// The entry of page `page`.
#[inline]
pub fn get(page: usize) -> Entry {
    Entry(slot(page).load(Ordering::Acquire))
}

/// Publishes `e` (unlocked) for pages `[page, page+n)`. Only for the heap: pages it hands out
/// (free pages: nobody can lock those, see [`try_lock`]) or takes back (pages whose locks the
/// caller holds, taken with [`lock`] before any heap lock; or any page, before anything can
/// lock one: [`claims_enabled`]).
pub fn set_range(page: usize, n: usize, e: Entry) {
    for p in page..page + n {
        debug_assert!(get(p).use_() == Use::Free || get(p).locked() || !claims_enabled());
        slot(p).store(e.unlocked().0, Ordering::Release);
    }
}

/// True if every page of `[page, page+n)` reads as the heap publishes a page it hands out as
/// `u`: on the host, unlocked, no duplicate, no advice. A snapshot: a locker may change any
/// of them right after (as it may for any handed-out page).
pub fn all_fresh_entries(page: usize, n: usize, u: Use) -> bool {
    (page..page + n).all(|p| get(p) == Entry::host(u))
}

/// Locks page `page` if its entry is unlocked and the page is handed out; returns the entry
/// it had. A free page is never locked: only the heap changes free pages, so a migration that
/// started before its memory was freed cannot hold a page the heap hands out again.
/// Async-signal-safe.
#[inline]
pub fn try_lock(page: usize) -> Option<Entry> {
    let s = slot(page);
    let cur = s.load(Ordering::Acquire);
    if cur & LOCKED != 0 || cur & USE_MASK == Use::Free as u64 {
        return None;
    }
    s.compare_exchange(cur, cur | LOCKED, Ordering::Acquire, Ordering::Relaxed)
        .ok()
        .map(Entry)
}

/// Locks page `page`, waiting (spin, then yield) while someone else holds it. Returns the entry
/// it had, or `None` if the page is free (not handed out: nothing to lock). Async-signal-safe;
/// holders never wait for anything a waiter could hold, and nobody waits for a page lock while
/// holding a heap lock.
pub fn lock(page: usize) -> Option<Entry> {
    let mut spins = 0u32;
    loop {
        if let Some(e) = try_lock(page) {
            return Some(e);
        }
        let e = get(page);
        if e.use_() == Use::Free {
            // Free, or freed and on its way back to the heap's free runs (see `claimed_free`).
            return None;
        }
        if e.pinned() {
            // A device kernel holds it: that can take a while.
            crate::pal::thread::sleep_us(50);
        } else {
            backoff(&mut spins);
        }
    }
}

/// [`lock`], except that it does not wait for a page a running kernel has pinned: `Err(())`
/// then, with nothing locked. For callers that hold other page locks: a kernel may touch (and
/// wait for) any of them while it runs, so waiting for its pin meanwhile could wait forever.
/// Async-signal-safe.
pub fn lock_unless_pinned(page: usize) -> Result<Option<Entry>, ()> {
    let mut spins = 0u32;
    loop {
        if let Some(e) = try_lock(page) {
            return Ok(Some(e));
        }
        let e = get(page);
        if e.use_() == Use::Free {
            return Ok(None);
        }
        if e.pinned() {
            return Err(());
        }
        backoff(&mut spins);
    }
}

/// Waits (sleeping) until page `page` is not pinned by a running kernel.
pub fn wait_unpinned(page: usize) {
    while get(page).pinned() {
        crate::pal::thread::sleep_us(50);
    }
}

/// Some page has been pinned (a fork child then looks for pins to clear).
static ANY_PINNED: AtomicBool = AtomicBool::new(false);

/// Marks page `page` (locked by this thread, entry `e`) as used by a running device kernel,
/// which only reads it if `read_only`.
#[inline]
pub fn pin(page: usize, e: Entry, read_only: bool) {
    if !ANY_PINNED.load(Ordering::Relaxed) {
        ANY_PINNED.store(true, Ordering::Relaxed);
    }
    let ro = if read_only { PIN_RO } else { 0 };
    slot(page).store(e.unlocked().0 | LOCKED | PINNED | ro, Ordering::Release);
}

/// Ends the pin of page `page` (pinned by this thread's kernel): publishes the entry as it is
/// now, unlocked. A CPU fault may have turned a read-only pinned device page into a host page
/// with a duplicate meanwhile (see [`begin_copy`]): the entry is read and cleared in one CAS,
/// after such a copy finished.
pub fn unpin(page: usize) {
    let s = slot(page);
    let mut spins = 0;
    loop {
        let cur = s.load(Ordering::Acquire);
        if cur & COPYING != 0 {
            backoff(&mut spins);
            continue;
        }
        let next = Entry(cur).unlocked().0;
        if s.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// A CPU fault on read-only pinned device page `page` (entry `e` as read) claims the right to
/// copy it to the host: true if it set `COPYING` on exactly `e`. Async-signal-safe.
pub fn begin_copy(page: usize, e: Entry) -> bool {
    e.pinned_read_only()
        && !e.copying()
        && slot(page)
            .compare_exchange(e.0, e.0 | COPYING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
}

/// Ends [`begin_copy`]: publishes `now` (still pinned, read-only) and clears `COPYING`. Only
/// the fault that set `COPYING` calls it; nothing else changes the entry meanwhile.
pub fn end_copy(page: usize, now: Entry) {
    slot(page).store(
        (now.0 & !COPYING) | LOCKED | PINNED | PIN_RO,
        Ordering::Release,
    );
}

/// In a fork child (one thread, no kernels): unpins every pinned page of `[0, pages)`. Pins
/// are taken under the fork gate but held while kernels run outside it, so a child can inherit
/// them; their entries already say where the page lives.
pub fn clear_pins(pages: usize) {
    if !ANY_PINNED.load(Ordering::Relaxed) {
        return;
    }
    for p in 0..pages.min(LEN.load(Ordering::Relaxed)) {
        let e = get(p);
        if e.pinned() {
            slot(p).store(e.unlocked().0, Ordering::Release);
        }
    }
}

/// Marks page `page` (locked by this thread, which is freeing it) as free but still locked:
/// nobody waits for it any more (a locker sees a free page and gives up), and nobody can lock
/// it until the heap puts it in its free runs ([`set_range`]). The freeing thread may then
/// wait for the heap's lock without making lockers wait for it.
#[inline]
pub fn claimed_free(page: usize) {
    debug_assert!(get(page).locked(), "page {page:#x} is not locked");
    slot(page).store(Use::Free as u64 | LOCKED, Ordering::Release);
}

/// True if `e` is a free page of a free run (not one still on its way there, see
/// [`claimed_free`]).
#[inline]
pub fn in_free_run(e: Entry) -> bool {
    e.use_() == Use::Free && !e.locked()
}

/// Stores `e` for a page this thread locked, keeping it locked.
#[inline]
pub fn keep_locked(page: usize, e: Entry) {
    debug_assert!(get(page).locked(), "page {page:#x} is not locked");
    slot(page).store(e.0 | LOCKED, Ordering::Release);
}

/// Publishes `e` (unlocked) for a page this thread locked.
#[inline]
pub fn unlock(page: usize, e: Entry) {
    if cfg!(debug_assertions) {
        let old = slot(page).swap(e.unlocked().0, Ordering::AcqRel);
        assert!(
            old & LOCKED != 0,
            "unlocking page {page:#x}, which is not locked"
        );
    } else {
        slot(page).store(e.unlocked().0, Ordering::Release);
    }
}

/// Spins briefly, then yields the CPU: lock holders may be descheduled on small machines.
#[inline]
pub fn backoff(spins: &mut u32) {
    if *spins < 64 {
        *spins += 1;
        core::hint::spin_loop();
    } else {
        crate::pal::thread::yield_now();
    }
}

/// Resident bytes of the entry array itself (how much memory the map costs right now).
pub fn resident_bytes() -> usize {
    let len = LEN.load(Ordering::Relaxed) * 8;
    sys::resident_bytes(MAP.load(Ordering::Acquire), len)
}

/// Set once some page may be locked by a migration, a fault, advice or a kernel (the devices
/// started): from then on pages are locked before the heap takes them back. The heap's
/// `pages::enable_claims` sets it under its page-run lock, and the heap reads it under that
/// lock, so a take-back that saw it clear finished before the first page could be locked.
static CLAIMS: AtomicBool = AtomicBool::new(false);

/// Sets [`claims_enabled`]. Only for `heap::pages::enable_claims`, which holds the page-run
/// lock while it calls this.
pub fn set_claims_enabled() {
    CLAIMS.store(true, Ordering::Release);
}

/// True once pages must be locked before they are taken back.
#[inline]
pub fn claims_enabled() -> bool {
    CLAIMS.load(Ordering::Acquire)
}

/// Bumped by everything that puts pages on a device on purpose (a migration to a device, a
/// device-tier placement) before it locks its first page. Work planned from an older view of
/// the pages stops when it sees a new value, because the pages it would bring back may have
/// been put on a device since, with no CPU access to call them back:
/// - a fault-back's read-ahead, planned when its stream faulted;
/// - a fault message a handler thread read earlier, whose thread another fault-back (or a
///   migration) may have woken long ago: the handler was descheduled before it got to it.
static TO_DEVICE_EPOCH: AtomicUsize = AtomicUsize::new(0);

/// The current [`TO_DEVICE_EPOCH`]: read before planning work on pages that must not outlive a
/// later move to a device.
#[inline]
pub fn to_device_epoch() -> usize {
    TO_DEVICE_EPOCH.load(Ordering::Acquire)
}

/// Announces a move of pages to a device: call before locking the first of them.
#[inline]
pub fn begin_to_device() {
    TO_DEVICE_EPOCH.fetch_add(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_residency_and_keep_their_use() {
        let e = Entry::host(Use::Large);
        assert_eq!(e.device(), None);
        let d = e.on_device(513, true);
        assert_eq!(d.device(), Some(513));
        assert!(d.filled() && !d.locked());
        assert_eq!(d.use_(), Use::Large);
        let h = d.on_host();
        assert_eq!(h, Entry::host(Use::Large));
        let z = Entry::host(Use::Span).on_device(0, false);
        assert_eq!(
            (z.device(), z.filled(), z.use_()),
            (Some(0), false, Use::Span)
        );
        assert!(!Entry(z.0 | LOCKED).unlocked().locked());
    }

    #[test]
    fn advice_sticks_across_moves_and_duplicates_are_host_only() {
        let e = Entry::host(Use::Large)
            .with_read_mostly(true)
            .with_accessed_by(Tier::Device(3))
            .with_accessed_by(Tier::Host)
            .with_preferred(Tier::Device(15));
        let moved = e.on_device(2, true).on_host();
        assert!(moved.read_mostly());
        assert!(moved.accessed_by(Tier::Device(3)) && moved.accessed_by(Tier::Host));
        assert!(!moved.accessed_by(Tier::Device(2)));
        assert_eq!(moved.preferred(), Some(Tier::Device(15)));
        assert_eq!(
            moved.with_preferred(Tier::Host).preferred(),
            Some(Tier::Host)
        );
        let dup = moved.with_dup(7);
        assert_eq!((dup.dup(), dup.device()), (Some(7), None));
        assert_eq!(dup.on_host().dup(), None);
        assert_eq!(dup.on_device(7, true).dup(), None);
        let bare = dup.without_advice();
        assert!(!bare.read_mostly() && bare.preferred().is_none());
        assert!(bare.dup() == Some(7) && bare.use_() == Use::Large);
        assert!(!Entry(e.0 | LOCKED | PINNED).unlocked().pinned());
        let ro = Entry(e.0 | LOCKED | PINNED | PIN_RO);
        assert!(ro.pinned_read_only() && !ro.unlocked().pinned_read_only());
    }
}
