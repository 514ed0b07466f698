//! Memory: mappings, protections and what the page tables say, plus `errno` and the messages
//! tieralloc prints. On `nix` (`mincore` is libc's: `nix` has none).
//!
//! Nothing here allocates: these functions are called from inside `GlobalAlloc`, before `main`,
//! and from fault handlers. Messages are written with `write(2)` from stack buffers.

pub use crate::base::consts::{PAGE_SHIFT, PAGE_SIZE};
use crate::pal::inject::{self, Point};
use core::num::NonZeroUsize;
use core::ptr::{self, NonNull};
use nix::errno::Errno;
use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};

/// Maps `len` bytes of private anonymous memory that is never charged to commit until touched.
/// Returns null on failure. `len` must be a multiple of the page size.
pub fn map_noreserve(len: usize) -> *mut u8 {
    if let Some(e) = inject::fail(Point::Mmap) {
        set_errno(e);
        return ptr::null_mut();
    }
    let Some(len) = NonZeroUsize::new(len) else {
        return ptr::null_mut();
    };
    // SAFETY: an anonymous mapping at a kernel-chosen address cannot alias anything we own.
    let p = unsafe {
        mman::mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    };
    p.map_or(ptr::null_mut(), |p| p.as_ptr().cast())
}

/// Maps `len` bytes aligned to `align` (a power of two, multiple of the page size) by
/// over-reserving and trimming both ends. Returns null on failure.
pub fn map_noreserve_aligned(len: usize, align: usize) -> *mut u8 {
    map_noreserve_congruent(len, align, 0)
}

/// [`map_noreserve`] of `len` bytes at an address `a` with `a % align == like % align`
/// (`align` a power of two of at least a page): a mapping whose addresses have the same
/// alignment as those of another one at the same offsets. Null if the kernel refused.
pub fn map_noreserve_congruent(len: usize, align: usize, like: usize) -> *mut u8 {
    let Some(total) = len.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map_noreserve(total);
    if raw.is_null() {
        return raw;
    }
    let start = raw as usize;
    let want = like & (align - 1);
    let at = start + (want.wrapping_sub(start) & (align - 1));
    let head = at - start;
    let tail = total - head - len;
    for (from, n) in [(start, head), (at + len, tail)] {
        if let Some(from) = NonNull::new(from as *mut libc::c_void).filter(|_| n > 0) {
            // SAFETY: both trimmed pieces lie inside the mapping we just created and own
            // exclusively.
            let _ = unsafe { mman::munmap(from, n) };
        }
    }
    at as *mut u8
}

/// Moves the pages of `[src, src+len)` to `[dst, dst+len)` by moving their page-table entries
/// ([`move_keeping`]), then maps fresh memory where they were: no byte is copied, and
/// `[src, src+len)` reads as zero afterwards. Both ranges must lie in one private anonymous
/// `MAP_NORESERVE` mapping of this process (the managed range) with default protections, and
/// not overlap. The moved part keeps its file offset, so the kernel can no longer merge it with
/// its new neighbours: each move may leave up to two more mappings until that memory is mapped
/// afresh. The source is never unmapped, not even for a moment, so no other thread's `mmap`
/// can land in it. On failure (the map count limit) nothing changed.
pub fn move_mapping(src: usize, dst: usize, len: usize) -> Result<(), i32> {
    move_keeping(src, dst, len)?;
    // Only so the kernel can merge the source with its neighbours again: it is mapped and
    // empty either way.
    let _ = map_fresh(src, len);
    Ok(())
}

/// Moves the pages of `[src, src+len)` to `[dst, dst+len)` by moving their page-table entries
/// (`mremap` with `MREMAP_DONTUNMAP`): no byte is copied, swapped-out pages move as swap
/// entries, and `[dst, dst+len)` takes over the source's protection. The source stays mapped
/// and empty (it reads as zero), so no hole opens in which another thread's `mmap` could land.
/// Other threads see `dst` before or after the move, never half-way: the kernel holds the
/// address space's lock for writing meanwhile. Both ranges lie in private anonymous mappings
/// of tieralloc's (the managed range, a device window) and do not overlap. On error some pages
/// may have moved (Linux moves a range that spans several kernel mappings one mapping at a
/// time): the caller looks where the pages are. Async-signal-safe.
pub fn move_keeping(src: usize, dst: usize, len: usize) -> Result<(), i32> {
    if let Some(e) = inject::fail(Point::Mremap) {
        return Err(e);
    }
    let (Some(from), Some(to)) = (
        NonNull::new(src as *mut libc::c_void),
        NonNull::new(dst as *mut libc::c_void),
    ) else {
        return Err(libc::EINVAL);
    };
    // SAFETY: both ranges are tieralloc's own private anonymous memory (the caller's
    // contract), whose pages the caller holds locked: replacing the destination's (empty)
    // pages and emptying the source is the point, and nothing outside the two ranges changes.
    unsafe {
        mman::mremap(
            from,
            len,
            len,
            mman::MRemapFlags::MREMAP_MAYMOVE
                | mman::MRemapFlags::MREMAP_FIXED
                | mman::MRemapFlags::MREMAP_DONTUNMAP,
            Some(to),
        )
    }
    .map(|_| ())
    .map_err(|e| e as i32)
}

/// Maps `[addr, addr+len)` afresh over what was there, with the flags of the managed range and
/// the device windows (private, anonymous, `MAP_NORESERVE`, read-write), in one step: its pages
/// are dropped, and the kernel may merge the new mapping with neighbours mapped the same way.
/// False if the kernel refused (then nothing changed). Async-signal-safe.
pub fn map_fresh(addr: usize, len: usize) -> bool {
    let (Some(at), Some(n)) = (NonZeroUsize::new(addr), NonZeroUsize::new(len)) else {
        return false;
    };
    // SAFETY: callers pass a page-aligned range of tieralloc's own mappings whose contents they
    // want gone (nothing of value lives there); `MAP_FIXED` replaces exactly that range.
    unsafe {
        mman::mmap_anonymous(
            Some(at),
            n,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_FIXED,
        )
    }
    .is_ok()
}

/// Tells the kernel it may drop the pages of `[addr, addr+len)`; they read back as zeros.
/// Returns false if the kernel refused (the memory stays valid either way).
pub fn discard(addr: usize, len: usize) -> bool {
    let Some(at) = NonNull::new(addr as *mut libc::c_void).filter(|_| len > 0) else {
        return true;
    };
    // SAFETY: callers pass page-aligned ranges inside mappings tieralloc owns and that no live
    // allocation uses; MADV_DONTNEED on private anonymous memory only zero-fills them.
    unsafe { mman::madvise(at, len, MmapAdvise::MADV_DONTNEED) }.is_ok()
}

/// Asks for transparent huge pages in `[addr, addr+len)` (`huge`), or for none
/// (`MADV_NOHUGEPAGE`). Returns false if the kernel refused (nothing changes then; a kernel
/// without them says `EINVAL`). Leaves `errno` as it found it: the first `malloc` of a
/// program calls this.
pub fn advise_huge(addr: usize, len: usize, huge: bool) -> bool {
    let Some(at) = NonNull::new(addr as *mut libc::c_void).filter(|_| len > 0) else {
        return true;
    };
    let advice = if huge {
        MmapAdvise::MADV_HUGEPAGE
    } else {
        MmapAdvise::MADV_NOHUGEPAGE
    };
    let saved = errno();
    // SAFETY: callers pass a page-aligned range of a mapping tieralloc owns; the advice only
    // changes how later faults are served, never the contents.
    let ok = unsafe { mman::madvise(at, len, advice) }.is_ok();
    set_errno(saved);
    ok
}

/// Number of pages of `[addr, addr+len)` that are resident, via `mincore(2)`.
/// Counts in chunks with a stack buffer, so it allocates nothing.
pub fn resident_bytes(addr: usize, len: usize) -> usize {
    const CHUNK_PAGES: usize = 4096;
    let mut vec = [0u8; CHUNK_PAGES];
    let start = addr & !(PAGE_SIZE - 1);
    let end = (addr + len + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    let mut at = start;
    let mut pages = 0;
    while at < end {
        let n = ((end - at) / PAGE_SIZE).min(CHUNK_PAGES);
        if mincore(at, n, &mut vec).is_ok() {
            pages += vec[..n].iter().filter(|&&b| b & 1 != 0).count();
        }
        at += n * PAGE_SIZE;
    }
    pages * PAGE_SIZE
}

/// `mincore(2)` of the `n` pages at `addr` into `out[..n]` (bit 0: resident). `nix` has no
/// `mincore`. Async-signal-safe.
pub fn mincore(addr: usize, n: usize, out: &mut [u8]) -> Result<(), i32> {
    assert!(n <= out.len());
    // SAFETY: `out` has room for `n` entries; mincore only reads the page tables.
    if unsafe { libc::mincore(addr as *mut libc::c_void, n * PAGE_SIZE, out.as_mut_ptr()) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Writes `parts` to stderr with one `write(2)` per part. Async-signal-safe.
pub fn write_stderr(parts: &[&[u8]]) {
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            // SAFETY: descriptor 2 is the process's stderr, open for its whole life.
            let stderr = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
            match nix::unistd::write(stderr, rest) {
                Ok(n @ 1..) => rest = &rest[n..],
                _ => return,
            }
        }
    }
}

/// Formats `v` in decimal into `buf`, returning the digits. Allocation-free.
pub fn fmt_u64(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Prints `tieralloc: fatal: <msg>` and aborts the process. Used only for heap corruption
/// caused by the program (double free, free of a foreign pointer): continuing would corrupt data.
#[cold]
pub fn fatal(msg: &str) -> ! {
    write_stderr(&[b"tieralloc: fatal: ", msg.as_bytes(), b"\n"]);
    std::process::abort()
}

/// The calling thread's `errno`. Async-signal-safe.
pub fn errno() -> i32 {
    Errno::last_raw()
}

/// Sets the calling thread's `errno` (injected failures; the fault handler restoring it).
/// Async-signal-safe.
pub fn set_errno(v: i32) {
    Errno::set_raw(v);
}

/// Counts the protection changes tieralloc made (see [`protect`]): a fault handler that finds
/// a page with no reason to fault tells a fault it raced with (the count moved since) from one
/// it did not cause (the same page faults again with the count unchanged).
pub static PROTECT_EPOCH: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// `mprotect(2)` on a page-aligned range; the errno on failure. Async-signal-safe.
pub fn protect(addr: usize, len: usize, prot: i32) -> Result<(), i32> {
    if let Some(e) = inject::fail(Point::Mprotect) {
        return Err(e);
    }
    let Some(at) = NonNull::new(addr as *mut libc::c_void) else {
        return Err(libc::EINVAL);
    };
    // SAFETY: callers pass page-aligned ranges of mappings tieralloc owns; changing their
    // protection is the point (the fault handlers restore access before anyone relies on it).
    match unsafe { mman::mprotect(at, len, ProtFlags::from_bits_retain(prot)) } {
        Ok(()) => {
            PROTECT_EPOCH.fetch_add(1, core::sync::atomic::Ordering::Release);
            Ok(())
        }
        Err(e) => Err(e as i32),
    }
}

/// Page frame number of the kernel's shared zero page, as `/proc/self/pagemap` shows it (0 when
/// unknown: unprivileged processes see no frame numbers).
static ZERO_PFN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);
const PFN_MASK: u64 = (1 << 55) - 1;
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;

/// The descriptor of `/proc/self/pagemap`, kept open (-1 before [`open_pagemap`]).
///
/// Why kept and not opened per read: reads come from tieralloc's own threads (chaos, fault
/// handlers, workers) while the program runs, and a descriptor opened there can take a number
/// the program is redirecting and then close the program's file (`file::open_kept`). It also
/// saves an `open` and a `close` per read.
static PAGEMAP_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(-1);

/// Opens `/proc/self/pagemap` for the page-table reads below, at start-up; in a fork child
/// again (the parent's descriptor shows the parent's pages), closing the inherited one.
/// Call it with no other thread of tieralloc running: at start-up, or in the fork child.
pub fn open_pagemap() -> Result<(), i32> {
    let fd = super::file::open_kept(c"/proc/self/pagemap")?;
    let old = PAGEMAP_FD.swap(fd, core::sync::atomic::Ordering::AcqRel);
    super::file::close(old);
    Ok(())
}

/// In a fork child: reopens the page-map descriptor if the parent had one (see
/// [`open_pagemap`]). On failure reads fail as they would without `/proc`.
pub fn reopen_pagemap_in_child() {
    if PAGEMAP_FD.load(core::sync::atomic::Ordering::Acquire) >= 0 && open_pagemap().is_err() {
        super::file::close(PAGEMAP_FD.swap(-1, core::sync::atomic::Ordering::AcqRel));
    }
}

fn pagemap_fd() -> Result<i32, i32> {
    let fd = PAGEMAP_FD.load(core::sync::atomic::Ordering::Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    // Not opened at start-up (a unit test of this layer, say): open it now, once.
    let new = super::file::open_kept(c"/proc/self/pagemap")?;
    match PAGEMAP_FD.compare_exchange(
        -1,
        new,
        core::sync::atomic::Ordering::AcqRel,
        core::sync::atomic::Ordering::Acquire,
    ) {
        Ok(_) => Ok(new),
        Err(won) => {
            super::file::close(new);
            Ok(won)
        }
    }
}

fn pagemap_entries(addr: usize, out: &mut [u64]) -> Result<(), i32> {
    if let Some(e) = inject::fail(Point::Pagemap) {
        return Err(e);
    }
    // SAFETY: `out` is plain u64 data; viewed as its bytes for the read.
    let bytes =
        unsafe { core::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), out.len() * 8) };
    let off = (addr / PAGE_SIZE * 8) as u64;
    match super::file::pread_fd(pagemap_fd()?, bytes, off)? {
        n if n == bytes.len() => Ok(()),
        _ => Err(libc::EIO),
    }
}

/// For each of the `n` pages at `addr`: is a page there (present, the zero page included, or
/// swapped out)? From `/proc/self/pagemap`. Async-signal-safe, and small on the stack (it runs
/// on the fault handler's alternate signal stack): it reads 64 entries at a time.
pub fn present(addr: usize, n: usize, out: &mut [bool]) -> Result<(), i32> {
    let mut buf = [0u64; 64];
    let mut i = 0;
    while i < n {
        let k = (n - i).min(buf.len());
        pagemap_entries(addr + i * PAGE_SIZE, &mut buf[..k])?;
        for j in 0..k {
            out[i + j] = buf[j] & (PRESENT | SWAPPED) != 0;
        }
        i += k;
    }
    Ok(())
}

/// Finds the zero page's frame number: map a page, read it (the kernel maps the zero page),
/// and look it up.
fn zero_pfn() -> u64 {
    let known = ZERO_PFN.load(core::sync::atomic::Ordering::Relaxed);
    if known != u64::MAX {
        return known;
    }
    let p = map_noreserve(PAGE_SIZE);
    let mut pfn = 0;
    if !p.is_null() {
        // SAFETY: p is a fresh readable page of ours.
        let _ = unsafe { core::ptr::read_volatile(p) };
        let mut e = [0u64; 1];
        if pagemap_entries(p as usize, &mut e).is_ok() && e[0] & PRESENT != 0 {
            pfn = e[0] & PFN_MASK;
        }
        // SAFETY: unmapping the page we mapped.
        let _ = unsafe { mman::munmap(NonNull::new_unchecked(p.cast()), PAGE_SIZE) };
    }
    ZERO_PFN.store(pfn, core::sync::atomic::Ordering::Relaxed);
    pfn
}

/// Reads which pages of `[addr, addr + n pages)` hold data from `/proc/self/pagemap` into
/// `out[..n]`: present or swapped out, and (when frame numbers are visible) not the shared zero
/// page. Never-touched pages are false. Allocation-free; `n` is at most 512.
pub fn populated(addr: usize, n: usize, out: &mut [bool]) -> Result<(), i32> {
    let mut buf = [0u64; 512];
    assert!(n <= buf.len() && n <= out.len());
    let zero = zero_pfn();
    pagemap_entries(addr, &mut buf[..n])?;
    for i in 0..n {
        let e = buf[i];
        let zero_page = zero != 0 && e & PRESENT != 0 && e & PFN_MASK == zero;
        out[i] = e & (PRESENT | SWAPPED) != 0 && !zero_page;
    }
    Ok(())
}
