//! Thin wrappers over the few system calls the allocator needs.
//!
//! Nothing here allocates: these functions are called from inside `GlobalAlloc`, before `main`,
//! and (later) from fault handlers. Messages are written with `write(2)` from stack buffers.

pub use crate::base::consts::{PAGE_SHIFT, PAGE_SIZE};
use crate::pal::inject::{self, Point};
use core::ptr;

/// Maps `len` bytes of private anonymous memory that is never charged to commit until touched.
/// Returns null on failure. `len` must be a multiple of the page size.
pub fn map_noreserve(len: usize) -> *mut u8 {
    if let Some(e) = inject::fail(Point::Mmap) {
        set_errno(e);
        return ptr::null_mut();
    }
    // SAFETY: an anonymous mapping at a kernel-chosen address cannot alias anything we own.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
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
    // SAFETY: both trimmed pieces lie inside the mapping we just created and own exclusively.
    unsafe {
        if head > 0 {
            libc::munmap(raw.cast(), head);
        }
        if tail > 0 {
            libc::munmap((at + len) as *mut libc::c_void, tail);
        }
    }
    at as *mut u8
}

/// Tells the kernel it may drop the pages of `[addr, addr+len)`; they read back as zeros.
/// Returns false if the kernel refused (the memory stays valid either way).
pub fn discard(addr: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    // SAFETY: callers pass page-aligned ranges inside mappings tieralloc owns and that no live
    // allocation uses; MADV_DONTNEED on private anonymous memory only zero-fills them.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 }
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
        // SAFETY: `vec` has room for `n` entries; mincore only reads the page tables.
        let rc = unsafe { libc::mincore(at as *mut libc::c_void, n * PAGE_SIZE, vec.as_mut_ptr()) };
        if rc == 0 {
            pages += vec[..n].iter().filter(|&&b| b & 1 != 0).count();
        }
        at += n * PAGE_SIZE;
    }
    pages * PAGE_SIZE
}

/// Sleeps for `us` microseconds. Async-signal-safe.
pub fn sleep_us(us: u64) {
    let ts = libc::timespec {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_nsec: (us % 1_000_000 * 1000) as libc::c_long,
    };
    // SAFETY: nanosleep only reads the timespec we pass; it is async-signal-safe.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// Asynchronous signals blocked on this thread until the guard is dropped (then the previous
/// mask comes back). A thread that holds page locks blocks them: a signal handler that
/// touched one of those pages would otherwise wait for a lock its own thread holds. The
/// synchronous signals (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`) stay open, so a
/// real fault still kills as usual. Async-signal-safe.
pub struct SignalsBlocked {
    /// The mask to restore.
    old: libc::sigset_t,
}

impl SignalsBlocked {
    /// Blocks the asynchronous signals on the calling thread.
    pub fn new() -> SignalsBlocked {
        // SAFETY: sigset_t is plain data initialised by sigfillset/sigdelset; pthread_sigmask
        // only changes this thread's mask and writes the old one into `old`.
        unsafe {
            let mut set: libc::sigset_t = core::mem::zeroed();
            let mut old: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGTRAP,
            ] {
                libc::sigdelset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SignalsBlocked { old }
        }
    }

    /// Blocks the asynchronous signals on the calling thread for the rest of its life (for
    /// tieralloc's own threads, which have no use for them).
    pub fn forever() {
        core::mem::forget(SignalsBlocked::new());
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread (the guard is not Send).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, core::ptr::null_mut()) };
    }
}

/// Writes `parts` to stderr with one `write(2)` per part. Async-signal-safe.
pub fn write_stderr(parts: &[&[u8]]) {
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            // SAFETY: `rest` is a valid byte slice for the duration of the call.
            let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                return;
            }
            rest = &rest[n as usize..];
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
    // SAFETY: abort never returns and is async-signal-safe.
    unsafe { libc::abort() }
}

/// The calling thread's kernel thread id (cheap, allocation-free).
#[allow(dead_code)]
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The calling thread's `errno`. Async-signal-safe.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno` (injected failures; the fault handler restoring it).
/// Async-signal-safe.
pub fn set_errno(v: i32) {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() = v };
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
    // SAFETY: callers pass page-aligned ranges of mappings tieralloc owns; changing their
    // protection is the point (the fault handlers restore access before anyone relies on it).
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) } == 0 {
        PROTECT_EPOCH.fetch_add(1, core::sync::atomic::Ordering::Release);
        Ok(())
    } else {
        Err(errno())
    }
}

/// Page frame number of the kernel's shared zero page, as `/proc/self/pagemap` shows it (0 when
/// unknown: unprivileged processes see no frame numbers).
static ZERO_PFN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);
const PFN_MASK: u64 = (1 << 55) - 1;
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;

fn pagemap_entries(addr: usize, out: &mut [u64]) -> Result<(), i32> {
    if let Some(e) = inject::fail(Point::Pagemap) {
        return Err(e);
    }
    // SAFETY: the path is a NUL-terminated literal.
    let fd = unsafe {
        libc::open(
            c"/proc/self/pagemap".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let want = out.len() * 8;
    let off = (addr / PAGE_SIZE * 8) as libc::off_t;
    // SAFETY: `out` has room for `want` bytes; fd is open for reading.
    let got = unsafe { libc::pread(fd, out.as_mut_ptr().cast(), want, off) };
    let err = errno();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if got != want as isize {
        return Err(if got < 0 { err } else { libc::EIO });
    }
    Ok(())
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
        unsafe { libc::munmap(p.cast(), PAGE_SIZE) };
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
