//! Migration: pages move between host memory and device pools under the same address, and a CPU
//! touch of a device-resident page brings it back.
//!
//! The protocol (the seed's, DESIGN §3), for each batch of at most [`BATCH`] pages:
//! 1. **Lock** the pages' entries (`LOCKED` in the page map). A CPU fault on a locked page waits
//!    in the fault handler until the entry is unlocked, then looks again.
//! 2. **Move the data.** With userfaultfd and a kernel that has `UFFDIO_MOVE`, the kernel moves
//!    each page's mapping into the device window: copy, switch and release in one atomic step
//!    per page, so there is never a second copy a write could land in, and readers of pages not
//!    yet moved carry on. The signal backend moves runs of [`MOVE_MIN`] pages or more the same
//!    way with `mremap` (the run is `PROT_NONE` for the move, so every access waits for it;
//!    no thread sees the run half-moved). Otherwise the host pages are **write-protected**
//!    (readers go on, writers wait in the fault handler), **copied** to the window, then
//!    **released** (`MADV_DONTNEED`; the signal backend first makes them `PROT_NONE`).
//! 3. **Switch**: publish the new entries (device id, whether the frame holds data) with the lock
//!    bit cleared, in one store per page.
//!
//! Back to host is the mirror image: the data is placed into the host page atomically
//! (`UFFDIO_MOVE`/`UFFDIO_COPY`; in the signal backend `mremap`, or a write through
//! `/proc/self/mem` while the page is still `PROT_NONE`), so no thread can see a half-filled
//! page; then the device frame is dropped.
//!
//! Never-touched pages (never populated) are not copied: they change tier as zero pages with no
//! frame behind them ("they are zero wherever they land").
//!
//! The back-path on a CPU touch is in [`super::fault_back`].

use crate::base::error::Error;
pub use crate::base::tier::Tier;
use crate::device::link;
use crate::fault::{self, Backend};
use crate::mem::counters::COUNTERS;
use crate::mem::pagemap::{self, Entry, Use};
use crate::mem::{arena, trace};
use crate::pal::sys;
use crate::pal::uffd;
use crate::tiering::{duplicate, evict, policy};
use crate::{device, heap};
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

const PAGE: usize = sys::PAGE_SIZE;
/// Pages locked and moved together by [`migrate`] (2 MiB): a reader that touches a page of a
/// batch in flight waits at most one batch.
pub const BATCH: usize = 512;
/// Fault-around: a CPU fault brings back at least this many pages when their neighbours are on
/// the same device (64 KiB) ...
pub const FAULT_AROUND_MIN: usize = 16;
/// Signal backend: runs of at least this many pages move to and from a device by their
/// page-table entries (`mremap`) instead of being copied. A move costs about one kernel mapping
/// split whatever its length (11.7 µs per page moved alone with 16k mappings in the process;
/// 0.34 µs per page in 2 MiB runs), a copy 4.5 µs per page to the device and 8 µs back
/// (through `/proc/self/mem`), both measured by `fault_report` before moves existed. But a
/// moved run may cost two more kernel mappings in the device window, and a copy none: short
/// runs, which fragmented migrations and isolated fault-backs make, keep copying.
pub const MOVE_MIN: usize = 16;
/// ... doubling while faults follow each other sequentially, up to the policy's `max_pages`
/// (16 MiB by default). The density prefetcher works on regions of this many pages (2 MiB).
pub const FAULT_AROUND_MAX: usize = 512;
/// ... which may be at most this many (32 MiB). Beyond one batch, the fault brings its first
/// batch back, wakes the faulting thread and brings the following batches after it (read-ahead).
pub const FAULT_AROUND_LIMIT: usize = 8192;

/// What a [`crate::migrate`] call did. Counts are in pages of 4 KiB.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![1u8; 3 * 4096];
/// let m = tieralloc::migrate(v.as_ptr(), v.len(), tieralloc::Tier::Device(0))?;
/// assert_eq!(m.moved + m.never_touched, 3);
/// let again = tieralloc::migrate(v.as_ptr(), v.len(), tieralloc::Tier::Device(0))?;
/// assert_eq!(again.already_there, 3);
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migrated {
    /// The pages the call covered: the range rounded out to whole pages.
    pub range: Range<usize>,
    /// Pages whose data moved to the target tier.
    pub moved: usize,
    /// Pages that were already on the target tier (left alone).
    pub already_there: usize,
    /// Pages that were never touched: they changed tier without a copy and read as zero.
    pub never_touched: usize,
}

use crate::mem::gate::{gate_enter, gate_exit};

/// Set once a page has been on a device: until then freeing memory skips the device scan.
pub(crate) static ANY_DEVICE: AtomicBool = AtomicBool::new(false);

/// Notes that some page is device-resident (freeing memory scans for device pages from now on).
pub(crate) fn device_in_use() {
    ANY_DEVICE.store(true, Ordering::Release);
}

/// Checks a user range and returns its first page and page count.
pub(crate) fn pages_of(ptr: *const u8, len: usize) -> Result<(usize, usize), Error> {
    let start = ptr as usize;
    if len == 0 {
        return Err(Error::ZeroLength);
    }
    let end = start
        .checked_add(len)
        .ok_or(Error::RangeOverflow { addr: start, len })?;
    if !heap::is_ready() || !arena::contains(start) {
        return Err(Error::NotManaged { addr: start });
    }
    if !arena::contains(end - 1) {
        return Err(Error::NotManaged {
            addr: arena::base() + arena::size(),
        });
    }
    let first = arena::page_of(start);
    Ok((first, arena::page_of(end - 1) + 1 - first))
}

/// Moves the pages of `[ptr, ptr+len)` to tier `to`. See [`crate::tiering::migrate`].
pub fn migrate(ptr: *const u8, len: usize, to: Tier) -> Result<Migrated, Error> {
    migrate_keeping(ptr, len, to, &[])
}

/// [`migrate`], where eviction (if the target device is full) spares the pages of `keep` as
/// well as the range itself: a kernel's other arguments.
pub(crate) fn migrate_keeping(
    ptr: *const u8,
    len: usize,
    to: Tier,
    keep: &[Range<usize>],
) -> Result<Migrated, Error> {
    let (first, n) = pages_of(ptr, len)?;
    start_devices()?;
    if let Some(d) = to.device() {
        device::check(d)?;
    }
    let backend = start_backend()?;
    if let Some(p) = (first..first + n).find(|&p| pagemap::get(p).use_() == Use::Free) {
        return Err(Error::NotAllocated {
            addr: arena::addr_of(p),
        });
    }
    let mut reserved = 0;
    if let Some(d) = to.device() {
        let need = (first..first + n)
            .filter(|&p| pagemap::get(p).device() != Some(d) && pagemap::get(p).dup() != Some(d))
            .count();
        let mut spare = [first..first + n, 0..0, 0..0, 0..0, 0..0, 0..0, 0..0, 0..0];
        let spare: &[Range<usize>] = if keep.len() < spare.len() {
            spare[1..=keep.len()].clone_from_slice(keep);
            &spare[..=keep.len()]
        } else {
            keep
        };
        reserve_or_evict(d, need, spare)?;
        reserved = need;
        ANY_DEVICE.store(true, Ordering::Release);
    }
    let mut out = Migrated {
        range: arena::addr_of(first)..arena::addr_of(first + n),
        moved: 0,
        already_there: 0,
        never_touched: 0,
    };
    let result = (|| {
        if to != Tier::Host {
            pagemap::begin_to_device();
            fault::prepare_host(first, n)?;
            if backend == Backend::Signal {
                fault::check_map_budget(host_runs(first, n))?;
            }
        }
        COUNTERS.migrations.fetch_add(1, Ordering::Relaxed);
        // Read outside the gate: a thread-local read can fault under libtieralloc.so (glibc's
        // TLS vector is `malloc`ed, so it may be device-resident), and nothing inside the gate
        // may wait for a fault-back.
        let cause = trace::current_cause();
        let mut p = first;
        while p < first + n {
            let m = BATCH.min(first + n - p);
            let r = {
                // The batch's pages are locked until it ends: no signal handler may run here.
                let _quiet = crate::pal::signal::SignalsBlocked::new();
                gate_enter();
                let r = migrate_batch(backend, p, m, to, cause, &mut reserved, &mut out);
                gate_exit();
                r
            };
            match r? {
                Batch::Done => p += m,
                // A running kernel pins a page of the batch: wait for it holding nothing, not
                // even the fork gate (the kernel may allocate, and a fork holds the heap locks
                // while it waits for the gate), then do the batch again.
                Batch::Pinned(q) => pagemap::wait_unpinned(q),
            }
        }
        Ok(())
    })();
    if let Some(d) = to.device() {
        device::release(d, reserved);
    }
    result.map(|()| out)
}

/// Takes `need` pages of device `d`'s capacity, evicting cold blocks (other than `keep`) to
/// the host if the policy allows; `Error::DeviceFull` (nothing taken) otherwise.
pub(crate) fn reserve_or_evict(d: u16, need: usize, keep: &[Range<usize>]) -> Result<(), Error> {
    let full = || Error::DeviceFull {
        device: d,
        needed: need * PAGE,
        free: device::free_pages(d) * PAGE,
    };
    while !device::reserve(d, need) {
        if need > device::capacity_pages(d) || !policy::current().evict_when_full(d) {
            return Err(full());
        }
        if evict::make_room(d, need, keep) == 0 {
            return Err(full());
        }
    }
    Ok(())
}

/// Maximal runs of host pages in `[first, first+n)` (each may become one protected run).
fn host_runs(first: usize, n: usize) -> usize {
    let mut runs = 0;
    let mut prev_host = false;
    for p in first..first + n {
        let host = pagemap::get(p).device().is_none();
        runs += usize::from(host && !prev_host);
        prev_host = host;
    }
    runs
}

/// Locks `[p, p+m)`, moves what is not on `to` yet, and unlocks with the new entries.
/// How a batch ended.
enum Batch {
    /// Moved (or already there).
    Done,
    /// Nothing done: this page is pinned by a running kernel.
    Pinned(usize),
}

fn migrate_batch(
    backend: Backend,
    p: usize,
    m: usize,
    to: Tier,
    cause: trace::Cause,
    reserved: &mut usize,
    out: &mut Migrated,
) -> Result<Batch, Error> {
    let mut entries = [Entry::host(Use::Free); BATCH];
    let unlock_rest = |from: usize, to: usize, entries: &[Entry]| {
        for (i, e) in entries.iter().enumerate().take(to).skip(from) {
            pagemap::unlock(p + i, *e);
        }
    };
    for i in 0..m {
        match pagemap::lock_unless_pinned(p + i) {
            Ok(Some(e)) => entries[i] = e,
            // Freed meanwhile: a free page is never locked (the heap may hand it out again).
            Ok(None) => {
                unlock_rest(0, i, &entries);
                return Err(Error::NotAllocated {
                    addr: arena::addr_of(p + i),
                });
            }
            // A running kernel pins it. The kernel may touch (and wait for) a page this batch
            // holds (data it captured): let go of the batch; the caller waits and retries.
            Err(()) => {
                unlock_rest(0, i, &entries);
                return Ok(Batch::Pinned(p + i));
            }
        }
    }
    let unlock_rest = |from: usize, entries: &[Entry]| unlock_rest(from, m, entries);
    let target = to.device();
    // Read-only duplicates stay when the target is their device and the page still has
    // `ReadMostly` advice; otherwise they go (the host copy holds the data).
    for (i, e) in entries.iter_mut().enumerate().take(m) {
        if let Some(dd) = e.dup() {
            if !(target == Some(dd) && e.read_mostly()) {
                duplicate::drop_locked(backend, p + i, 1, dd, true);
                *e = e.on_host();
            }
        }
    }
    // Host pages with `ReadMostly` advice get a duplicate on the target device instead of
    // moving there.
    let duplicates = |e: Entry| e.device().is_none() && target.is_some() && e.read_mostly();
    let mut i = 0;
    while i < m {
        let src = entries[i].device();
        if src == target || (target.is_some() && entries[i].dup() == target) {
            out.already_there += 1;
            pagemap::unlock(p + i, entries[i]);
            i += 1;
            continue;
        }
        let dup = duplicates(entries[i]);
        let mut j = i + 1;
        while j < m
            && entries[j].device() == src
            && duplicates(entries[j]) == dup
            && !(target.is_some() && entries[j].dup() == target)
        {
            j += 1;
        }
        let (s, len) = (p + i, j - i);
        if let Some(d) = target {
            let take = len.min(*reserved);
            *reserved -= take;
            if take < len && !device::reserve(d, len - take) {
                device::release(d, take);
                unlock_rest(i, &entries);
                return Err(Error::DeviceFull {
                    device: d,
                    needed: len * PAGE,
                    free: device::free_pages(d) * PAGE,
                });
            }
        }
        let done = match (src, target) {
            (None, Some(d)) if dup => duplicate::create(backend, d, s, len, &entries[i..j], out),
            (None, Some(d)) => to_device(backend, d, s, len, &entries[i..j], out),
            (Some(a), None) => to_host(backend, a, s, len, &entries[i..j], out),
            (Some(a), Some(b)) => device_to_device(backend, a, b, s, len, &entries[i..j], out),
            (None, None) => unreachable!("src == target is skipped above"),
        };
        // The mover unlocked the group's pages itself (published or restored).
        if let Err(e) = done {
            unlock_rest(j, &entries);
            return Err(e);
        }
        if let Some(d) = src.or(target) {
            link::transfer(d, len * PAGE);
        }
        let tier = |t: Option<u16>| Some(t.map_or(Tier::Host, Tier::Device));
        trace::record(s, len, tier(src), tier(target), cause);
        i = j;
    }
    Ok(Batch::Done)
}

/// Host pages `[s, s+n)` (locked, entries `e`) to device `d`, whose capacity is reserved.
/// Publishes the pages that moved; on error the rest stay on the host with their data and
/// their reservation is given back (the caller unlocks them).
fn to_device(
    backend: Backend,
    d: u16,
    s: usize,
    n: usize,
    e: &[Entry],
    out: &mut Migrated,
) -> Result<(), Error> {
    let mut filled = [false; BATCH];
    let (addr, frame, len) = (arena::addr_of(s), device::frame(d, s), n * PAGE);
    let published = |k: usize, filled: &[bool; BATCH], out: &mut Migrated| {
        // Invariant (checked in debug builds): the pages are still ours and on the host.
        #[cfg(debug_assertions)]
        for (p, was) in (s..s + k).zip(e) {
            let cur = pagemap::get(p);
            assert!(
                cur.locked() && cur.device().is_none(),
                "to_device: page {p:#x} is {cur:?}, was {was:?}"
            );
        }
        for i in 0..k {
            pagemap::unlock(s + i, e[i].on_device(d, filled[i]));
            out.moved += usize::from(filled[i]);
            out.never_touched += usize::from(!filled[i]);
        }
        COUNTERS
            .pages_to_device
            .fetch_add(k as u64, Ordering::Relaxed);
    };
    let result = match backend {
        Backend::Uffd | Backend::UffdFast => {
            let mut left = [false; BATCH];
            if move_pages(frame, addr, n, &mut left) {
                Ok(())
            } else {
                // Copy what did not move, under write protection.
                copy_to_window(addr, frame, &left[..n]).inspect_err(|_| {
                    // Put back what the kernel did move, so that nothing moved at all.
                    for i in (0..n).filter(|&i| !left[i]) {
                        let (h, f) = (addr + i * PAGE, frame + i * PAGE);
                        if uffd::mv(h, f, PAGE).is_err() && uffd::copy(h, f, PAGE).is_err() {
                            sys::fatal("could not return pages to the host after a failed move");
                        }
                    }
                    sys::discard(frame, len);
                })
            }
        }
        // A move that fails changes nothing: copying may still work (it needs no new kernel
        // mapping in the window).
        Backend::Signal if n >= MOVE_MIN => {
            protect_and_move(addr, frame, n).or_else(|_| protect_and_copy(addr, frame, n))
        }
        Backend::Signal => protect_and_copy(addr, frame, n),
    };
    match result {
        Ok(()) => {
            if backend == Backend::Signal {
                runs_changed(s, n, true);
            }
            // The data is in the window now and the host pages are gone; what holds data is
            // read there, after the move (a first write that raced the move is in the window
            // too). If the read fails every page counts as filled: a frame that is missing
            // reads as zero at fault-back all the same.
            if sys::populated(frame, n, &mut filled).is_err() {
                filled[..n].fill(true);
            }
            published(n, &filled, out);
            Ok(())
        }
        Err(errno) => {
            for (i, entry) in e.iter().enumerate() {
                pagemap::unlock(s + i, *entry);
            }
            device::release(d, n);
            Err(if errno == libc::ENOMEM && backend == Backend::Signal {
                Error::MapCountLimit {
                    limit: fault::map_limit(),
                }
            } else {
                Error::Sys {
                    what: "moving pages to a device",
                    errno,
                }
            })
        }
    }
}

/// Moves the `n` pages at `src` to `dst` with `UFFDIO_MOVE` as far as the kernel can. Returns
/// true if every page moved; otherwise `left[i]` says whether page `i` still has a page at
/// `src` (not moved: the caller copies it if it holds data). Async-signal-safe.
///
/// After an error the kernel's count of moved bytes is not trusted: under contention Linux
/// 6.18 was seen to move pages and then fail the call with `EEXIST` and a count of 0 (the
/// stress test caught it, as data read back as zeros). So the source is looked at instead:
/// the caller holds the pages' locks, nothing else moves them meanwhile.
fn move_pages(dst: usize, src: usize, n: usize, left: &mut [bool; BATCH]) -> bool {
    let len = n * PAGE;
    if fault::has_move() && uffd::mv(dst, src, len).is_ok() {
        left[..n].fill(false);
        return true;
    }
    // Present or swapped out: `mincore` would call a swapped-out page gone, and it would be
    // dropped without a copy. If pagemap cannot be read, every page counts as still there.
    if sys::present(src, n, &mut left[..n]).is_err() {
        left[..n].fill(true);
    }
    false
}

/// uffd copy path (no `UFFDIO_MOVE`, pages shared with a `fork` child, or what a move left):
/// write-protect the host pages, then copy those of the pages marked in `left` that hold data
/// (read after the protection, so a first write cannot slip in between), then release the host
/// pages. On failure the host pages are as they were (protection lifted); the caller drops the
/// window copies.
fn copy_to_window(addr: usize, frame: usize, left: &[bool]) -> Result<(), i32> {
    let n = left.len();
    let len = n * PAGE;
    uffd::write_protect(addr, len, true)?;
    let mut filled = [false; BATCH];
    if let Err(e) = sys::populated(addr, n, &mut filled[..n]) {
        let _ = uffd::write_protect(addr, len, false);
        return Err(e);
    }
    for i in (0..n).filter(|&i| left[i] && filled[i]) {
        let (dst, src) = (frame + i * PAGE, addr + i * PAGE);
        let done = match uffd::copy(dst, src, PAGE) {
            // A window page is there although the page lives on the host: it is stale.
            Err(libc::EEXIST) => {
                sys::discard(dst, PAGE);
                uffd::copy(dst, src, PAGE)
            }
            r => r,
        };
        if let Err(e) = done {
            let _ = uffd::write_protect(addr, len, false);
            return Err(e);
        }
    }
    sys::discard(addr, len);
    Ok(())
}

/// Signal path for runs of [`MOVE_MIN`] pages or more: `PROT_NONE` (every access waits, but
/// only for the move: there is no copy), then the page-table entries move to the window
/// ([`sys::move_keeping`]), which is opened again. The host pages are gone with the move. On
/// failure what moved goes back and access is restored: nothing changed.
fn protect_and_move(addr: usize, frame: usize, n: usize) -> Result<(), i32> {
    let len = n * PAGE;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    sys::protect(addr, len, libc::PROT_NONE)?;
    let moved = sys::move_keeping(addr, frame, len).and_then(|()| sys::protect(frame, len, rw));
    if let Err(e) = moved {
        put_back(frame, addr, n);
        // The window range may have kept the protection the pages came in with: open it.
        if !sys::map_fresh(frame, len) && sys::protect(frame, len, rw).is_err() {
            sys::fatal("could not open a device window again after a failed move");
        }
        let _ = sys::protect(addr, len, rw);
        return Err(e);
    }
    Ok(())
}

/// After a move of `n` pages from `home` to `at` failed part-way: moves the pages that reached
/// `at` back to where they were. Stops the process if it cannot (the data would be split
/// between two places no entry describes).
fn put_back(at: usize, home: usize, n: usize) {
    let mut there = [false; BATCH];
    if sys::present(at, n, &mut there[..n]).is_err() {
        sys::fatal("could not tell which pages a failed move moved");
    }
    let mut i = 0;
    while i < n {
        if !there[i] {
            i += 1;
            continue;
        }
        let s = i;
        while i < n && there[i] {
            i += 1;
        }
        if sys::move_keeping(at + s * PAGE, home + s * PAGE, (i - s) * PAGE).is_err() {
            sys::fatal("could not put pages back after a failed move");
        }
    }
}

/// Signal path: read-only while copying (readers go on, writers fault and wait), then
/// `PROT_NONE` and release the host pages. Which pages hold data is read once they are
/// read-only. On failure access is restored and nothing changed.
fn protect_and_copy(addr: usize, frame: usize, n: usize) -> Result<(), i32> {
    let len = n * PAGE;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    sys::protect(addr, len, libc::PROT_READ)?;
    let mut filled = [false; BATCH];
    if let Err(e) = sys::populated(addr, n, &mut filled[..n]) {
        let _ = sys::protect(addr, len, rw);
        return Err(e);
    }
    for i in (0..n).filter(|&i| filled[i]) {
        // SAFETY: both pages are ours and mapped (the host page readable, the window page
        // writable and not registered with userfaultfd in this backend); they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (addr + i * PAGE) as *const u8,
                (frame + i * PAGE) as *mut u8,
                PAGE,
            )
        };
    }
    if let Err(e) = sys::protect(addr, len, libc::PROT_NONE) {
        sys::discard(frame, len);
        let _ = sys::protect(addr, len, rw);
        return Err(e);
    }
    sys::discard(addr, len);
    Ok(())
}

/// Device `a` pages `[s, s+n)` (locked) back to the host, published as host pages.
fn to_host(
    backend: Backend,
    a: u16,
    s: usize,
    n: usize,
    e: &[Entry],
    out: &mut Migrated,
) -> Result<(), Error> {
    // Placing a page into a missing host page fails only when the kernel is out of memory, and
    // a half-done move back cannot be represented: stop rather than lose data.
    // Invariant (checked in debug builds): the group's pages are ours and on `a`.
    #[cfg(debug_assertions)]
    for p in s..s + n {
        let e = pagemap::get(p);
        assert!(
            e.locked() && e.device() == Some(a),
            "to_host: page {p:#x} is {e:?}"
        );
    }
    if device_to_host(backend, a, s, n).is_err() {
        sys::fatal("could not move device-resident pages back to host memory");
    }
    device::release(a, n);
    for (i, entry) in e.iter().enumerate().take(n) {
        out.moved += usize::from(entry.filled());
        out.never_touched += usize::from(!entry.filled());
        pagemap::unlock(s + i, entry.on_host());
    }
    COUNTERS
        .pages_to_host
        .fetch_add(n as u64, Ordering::Relaxed);
    fault::wake_pages(s, n);
    Ok(())
}

/// Places the data of device `d`'s pages `[s, s+n)` (locked) into host memory, atomically per
/// page, and drops the device frames. Reads `FILLED` from the (locked, stable) entries.
/// Async-signal-safe: this is the fault path's work.
pub(crate) fn device_to_host(backend: Backend, d: u16, s: usize, n: usize) -> Result<(), i32> {
    let (addr, frame, len) = (arena::addr_of(s), device::frame(d, s), n * PAGE);
    match backend {
        Backend::Uffd | Backend::UffdFast => {
            let mut left = [false; BATCH];
            if !move_pages(addr, frame, n, &mut left) {
                for k in (0..n).filter(|&k| left[k] && pagemap::get(s + k).filled()) {
                    let (dst, src) = (addr + k * PAGE, frame + k * PAGE);
                    match uffd::copy(dst, src, PAGE) {
                        Ok(()) => {}
                        // A host page is there although the entry says "device": the device
                        // copy is the authoritative one. Drop the stray page and copy again.
                        Err(libc::EEXIST) => {
                            sys::discard(dst, PAGE);
                            uffd::copy(dst, src, PAGE)?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                sys::discard(frame, len);
            }
            // Never-touched pages had no frame: give them the zero page. Waiting threads are
            // woken by the caller once the entries say "host" (`fault::wake_pages`).
            for k in 0..n {
                if !pagemap::get(s + k).filled() {
                    // A host page left missing gets the zero page when it faults (`fix_host`).
                    let _ = uffd::zeropage(addr + k * PAGE, PAGE, false);
                }
            }
            Ok(())
        }
        // A run of `MOVE_MIN` pages or more moves by its page-table entries: the host run
        // takes the window's protection (read-write) with them, in one step.
        Backend::Signal if n >= MOVE_MIN && sys::move_keeping(frame, addr, len).is_ok() => {
            // The window keeps an empty piece of the mapping the pages came in with: map it
            // afresh so the kernel can merge it with the rest of the window again (if it
            // refuses, the window only keeps one more mapping).
            let _ = sys::map_fresh(frame, len);
            runs_changed(s, n, false);
            Ok(())
        }
        Backend::Signal => {
            // After a failed move, pages that did move are home already and their frames
            // are empty: copy only what is still in the window.
            let mut there = [true; BATCH];
            if n >= MOVE_MIN {
                sys::present(frame, n, &mut there[..n])?;
            }
            for k in (0..n).filter(|&k| there[k] && pagemap::get(s + k).filled()) {
                fault::write_protected(addr + k * PAGE, frame + k * PAGE, PAGE)?;
            }
            sys::protect(addr, len, libc::PROT_READ | libc::PROT_WRITE)?;
            runs_changed(s, n, false);
            sys::discard(frame, len);
            Ok(())
        }
    }
}

/// Device `a` pages `[s, s+n)` (locked) to device `b`, whose capacity is reserved.
fn device_to_device(
    backend: Backend,
    a: u16,
    b: u16,
    s: usize,
    n: usize,
    e: &[Entry],
    out: &mut Migrated,
) -> Result<(), Error> {
    let (from, to, len) = (device::frame(a, s), device::frame(b, s), n * PAGE);
    // Invariant (checked in debug builds): the pages are ours and on `a`.
    #[cfg(debug_assertions)]
    for q in s..s + n {
        let cur = pagemap::get(q);
        assert!(
            cur.locked() && cur.device() == Some(a),
            "d2d: page {q:#x} is {cur:?}"
        );
    }
    // `left[k]`: page k is still on `a` (not moved by the kernel).
    let mut left = [true; BATCH];
    let all_moved = match backend {
        Backend::Uffd | Backend::UffdFast => move_pages(to, from, n, &mut left),
        Backend::Signal => false,
    };
    for k in (0..n).filter(|&k| !all_moved && left[k] && e[k].filled()) {
        let (dst, src) = (to + k * PAGE, from + k * PAGE);
        if backend == Backend::Signal {
            // SAFETY: two distinct, mapped window pages of ours (not registered in this backend).
            unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, PAGE) };
        } else if let Err(errno) = uffd::copy(dst, src, PAGE) {
            // The pages the kernel moved are on `b`; the rest stay on `a` (drop their partial
            // copies on `b`).
            let on_b = |i: usize| e[i].filled() && !left[i];
            let moved_n = (0..n).filter(|&i| on_b(i)).count();
            for i in (0..n).filter(|&i| !on_b(i)) {
                sys::discard(to + i * PAGE, PAGE);
            }
            device::release(a, moved_n);
            device::release(b, n - moved_n);
            for (i, entry) in e.iter().enumerate() {
                let now = if on_b(i) {
                    entry.on_device(b, true)
                } else {
                    *entry
                };
                pagemap::unlock(s + i, now);
            }
            return Err(Error::Sys {
                what: "moving pages between devices",
                errno,
            });
        }
    }
    if !all_moved {
        sys::discard(from, len);
    }
    device::release(a, n);
    for (i, entry) in e.iter().enumerate().take(n) {
        out.moved += usize::from(entry.filled());
        out.never_touched += usize::from(!entry.filled());
        pagemap::unlock(s + i, entry.on_device(b, entry.filled()));
    }
    COUNTERS
        .pages_device_to_device
        .fetch_add(n as u64, Ordering::Relaxed);
    Ok(())
}

/// Signal backend: keeps [`fault::PROTECTED_RUNS`] (maximal runs of protected pages, each a
/// kernel mapping of its own) up to date when `[s, s+n)` becomes protected or accessible.
pub(crate) fn runs_changed(s: usize, n: usize, protected: bool) {
    let left = s > 0 && pagemap::get(s - 1).device().is_some();
    let right = s + n < arena::pages() && pagemap::get(s + n).device().is_some();
    let neighbours = usize::from(left) + usize::from(right);
    let runs = &fault::PROTECTED_RUNS;
    // Protecting joins the neighbouring runs (1 - neighbours runs more); unprotecting splits
    // them (neighbours - 1 more). Saturating: the count is an estimate kept for a budget.
    let (add, sub) = if protected {
        (usize::from(neighbours == 0), neighbours.saturating_sub(1))
    } else {
        (neighbours.saturating_sub(1), usize::from(neighbours == 0))
    };
    runs.fetch_add(add, Ordering::Relaxed);
    let _ = runs.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
        Some(r.saturating_sub(sub))
    });
}

/// Starts the fault backend (once), handing it [`super::fault_back::cpu_fault`] as the function that resolves
/// its faults: the fault layer, below this one, never calls up by name.
pub(crate) fn start_backend() -> Result<Backend, Error> {
    fault::ensure_init(super::fault_back::cpu_fault)
}

/// Starts the devices (once) and, before anything can lock a page entry, has the heap lock
/// pages before it takes them back (`heap::pages::enable_claims`). Every path that migrates,
/// prefetches, advises or runs a kernel starts here.
pub(crate) fn start_devices() -> Result<(), Error> {
    device::ensure_init()?;
    crate::heap::pages::enable_claims();
    Ok(())
}
