//! Fault backends: how a CPU touch of a device-resident page reaches [`crate::tiering::migrate`].
//!
//! - `uffd` (transparent): the managed range is registered with a userfaultfd; handler threads
//!   ([`service::spawn_handlers`]) resolve faults, so the kernel's own accesses (`read(2)` into a
//!   device-resident buffer) work too.
//! - `uffd-fast`: the same registration with `UFFD_FEATURE_SIGBUS`: the faulting thread gets
//!   SIGBUS and resolves its own fault in [`handler`]. System calls that touch device-resident
//!   memory fail with `EFAULT`: migrate such buffers to the host before I/O.
//! - `signal`: device-resident pages are `PROT_NONE`; SIGSEGV brings them back (long runs move
//!   by `mremap`, short ones are written through `/proc/self/mem`). Works without
//!   userfaultfd, but each protected run splits a kernel mapping, so the number of separate
//!   device-resident runs is limited by `vm.max_map_count` (migrations report
//!   [`Error::MapCountLimit`] before the limit is reached).
//!
//! userfaultfd registration is per 2 MiB chunk of the managed range, made the first time a page
//! of the chunk moves to a device and kept afterwards; neighbouring chunks merge into one kernel
//! mapping, so a million alternating device pages cost a handful of mappings. Pages the heap
//! hands out inside a registered chunk get the zero page mapped ([`pages_handed_out`]), so only
//! device-resident pages ever raise a userfault.

pub mod handler;
pub mod service;

use crate::base::error::Error;
use crate::config::{self, FaultMode};
use crate::device;
use crate::mem::arena;
use crate::pal::lock::Lock;
use crate::pal::sys;
use crate::pal::{file, uffd};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// A fault backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Backend {
    /// userfaultfd with handler threads (transparent: syscalls work on device memory).
    Uffd = 1,
    /// userfaultfd in SIGBUS mode: the faulting thread resolves its own fault.
    UffdFast = 2,
    /// mprotect + SIGSEGV.
    Signal = 3,
}

impl Backend {
    /// The name `TIERALLOC_FAULT` uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uffd => "uffd",
            Backend::UffdFast => "uffd-fast",
            Backend::Signal => "signal",
        }
    }
}

static BACKEND: AtomicU8 = AtomicU8::new(0);
static INIT: Lock<()> = Lock::new(());
/// The kernel has `UFFDIO_MOVE` (zero-copy moves); without it pages are copied.
static HAS_MOVE: AtomicBool = AtomicBool::new(false);
/// `/proc/self/mem`, opened read-write (signal backend: fills `PROT_NONE` pages atomically).
static MEM_FD: AtomicI32 = AtomicI32::new(-1);
/// Bitmap of registered 2 MiB chunks (uffd backends), outside the managed range.
static CHUNKS: AtomicUsize = AtomicUsize::new(0);
/// Some chunk is registered (fast check for [`pages_handed_out`]).
static ANY_REGISTERED: AtomicBool = AtomicBool::new(false);
/// Serialises chunk registration (migration path only; never taken by a fault).
static REGISTER: Lock<()> = Lock::new(());
/// `vm.max_map_count` and the mappings the process had when the signal backend started.
static MAP_LIMIT: AtomicUsize = AtomicUsize::new(65530);
static MAP_BASELINE: AtomicUsize = AtomicUsize::new(0);
/// Signal backend: maximal runs of protected pages now (each costs up to two mappings).
pub(crate) static PROTECTED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Pages per registration chunk (2 MiB).
pub const CHUNK_PAGES: usize = 512;

/// What the resolver installed at start-up (`tiering::fault_back::cpu_fault`) did with a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No backend is running: the fault is not tieralloc's.
    NotOurs,
    /// The page (with fault-around neighbours) came back from a device, and threads waiting on
    /// those pages were woken.
    BroughtBack,
    /// The page is on the host (another fault or a migration brought it back meanwhile, or it
    /// was never touched, or its read-only duplicate was dropped): retrying the access is
    /// enough.
    Retry,
    /// A running device kernel uses the page: the access must wait until the kernel is done
    /// (the kernel's end wakes transparent-mode waiters).
    Pinned,
    /// The page is on the host with nothing of tieralloc's on it (unlocked, no duplicate):
    /// with userfaultfd a missing page got the zero page and retrying is enough; with the
    /// signal backend the fault is the program's own unless a protection tieralloc set was
    /// lifted meanwhile (the handler tells the two apart).
    Host,
}

/// Resolves a CPU fault on a managed page: brings it back, or says why not. The second argument
/// says who is asking: `None` for the faulting thread itself (signal handlers), `Some(epoch)`
/// for a handler thread serving a fault message it read after `pagemap::to_device_epoch` was
/// `epoch`. Such a message may be stale (its thread already woken by another fault-back), so
/// a page that a later migration put on a device is not brought back for it.
pub type Resolver = fn(usize, Option<usize>) -> Fault;

/// The resolver the layer above installed when the backend started ([`ensure_init`]). Data,
/// not a call by name: the fault layer sits below the migration code it runs.
static RESOLVER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Resolves a fault on `page` with the installed resolver; [`Fault::NotOurs`] before one is.
/// Async-signal-safe as the resolver is (one atomic load, one call).
pub(crate) fn resolve(page: usize, queued: Option<usize>) -> Fault {
    let f = RESOLVER.load(Ordering::Acquire);
    if f.is_null() {
        return Fault::NotOurs;
    }
    // SAFETY: the only non-null value ever stored is a `Resolver` (ensure_init).
    let f: Resolver = unsafe { core::mem::transmute::<*mut (), Resolver>(f) };
    f(page, queued)
}

/// The backend in use, if one was started.
#[inline]
pub fn backend() -> Option<Backend> {
    match BACKEND.load(Ordering::Acquire) {
        1 => Some(Backend::Uffd),
        2 => Some(Backend::UffdFast),
        3 => Some(Backend::Signal),
        _ => None,
    }
}

/// True when the kernel moves pages without copying.
#[inline]
pub fn has_move() -> bool {
    HAS_MOVE.load(Ordering::Relaxed)
}

/// Starts the backend `TIERALLOC_FAULT` asks for (once). `auto`: `uffd` when this process may
/// handle kernel-mode faults (root, or `vm.unprivileged_userfaultfd=1`), else `uffd-fast` with
/// user-mode-only faults, else `signal`.
pub fn ensure_init(resolve: Resolver) -> Result<Backend, Error> {
    if let Some(b) = backend() {
        return Ok(b);
    }
    let _g = INIT.lock();
    if let Some(b) = backend() {
        return Ok(b);
    }
    RESOLVER.store(resolve as *mut (), Ordering::Release);
    let b = match config::fault_mode() {
        FaultMode::Uffd => start_uffd(false, false)
            .map(|_| Backend::Uffd)
            .map_err(|e| unavailable("uffd", e))?,
        FaultMode::UffdFast => start_uffd(true, false)
            .or_else(|_| start_uffd(true, true))
            .map(|_| Backend::UffdFast)
            .map_err(|e| unavailable("uffd-fast", e))?,
        FaultMode::Signal => start_signal().map(|_| Backend::Signal)?,
        FaultMode::Auto => {
            if start_uffd(false, false).is_ok() {
                Backend::Uffd
            } else if start_uffd(true, true).is_ok() {
                Backend::UffdFast
            } else {
                start_signal().map(|_| Backend::Signal)?
            }
        }
    };
    BACKEND.store(b as u8, Ordering::Release);
    Ok(b)
}

fn unavailable(backend: &'static str, errno: i32) -> Error {
    Error::BackendUnavailable {
        backend,
        why: match errno {
            libc::EPERM => "userfaultfd is not permitted for this process (vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE)",
            libc::ENOSYS => "the kernel has no userfaultfd",
            _ => "userfaultfd could not be set up",
        },
    }
}

/// Opens the userfaultfd, registers the device windows and starts the fault service.
fn start_uffd(fast: bool, user_mode_only: bool) -> Result<(), i32> {
    let (fd, features) = uffd::open(fast, user_mode_only)?;
    uffd::set_fd(fd);
    let fail = |e: i32| {
        file::close(fd);
        uffd::set_fd(-1);
        e
    };
    HAS_MOVE.store(features & uffd::FEATURE_MOVE != 0, Ordering::Relaxed);
    register_windows().map_err(fail)?;
    if CHUNKS.load(Ordering::Acquire) == 0 {
        let bytes = (arena::pages() / CHUNK_PAGES / 8 + 8).next_multiple_of(sys::PAGE_SIZE);
        let p = sys::map_noreserve(bytes);
        if p.is_null() {
            return Err(fail(libc::ENOMEM));
        }
        CHUNKS.store(p as usize, Ordering::Release);
    }
    if fast {
        handler::install(libc::SIGBUS).map_err(fail)?;
    } else {
        service::spawn_handlers().map_err(fail)?;
    }
    Ok(())
}

/// Registers every device window for missing faults: the windows are the destination of
/// zero-copy moves, which the kernel only allows into registered ranges.
fn register_windows() -> Result<(), i32> {
    for d in 0..device::count() as u16 {
        uffd::register(device::window(d), arena::size(), uffd::MODE_MISSING)?;
    }
    Ok(())
}

fn start_signal() -> Result<(), Error> {
    open_mem_fd().map_err(|errno| Error::Sys {
        what: "opening /proc/self/mem for the signal backend",
        errno,
    })?;
    MAP_LIMIT.store(
        read_number(c"/proc/sys/vm/max_map_count").unwrap_or(65530),
        Ordering::Relaxed,
    );
    MAP_BASELINE.store(count_maps(), Ordering::Relaxed);
    handler::install(libc::SIGSEGV).map_err(|errno| Error::Sys {
        what: "installing the SIGSEGV handler",
        errno,
    })
}

fn open_mem_fd() -> Result<(), i32> {
    let fd = file::open_rw_raw(c"/proc/self/mem")?;
    let old = MEM_FD.swap(fd, Ordering::AcqRel);
    if old >= 0 {
        file::close(old);
    }
    Ok(())
}

/// Signal backend: writes `len` bytes from `src` to `dst` even though `dst` is `PROT_NONE`,
/// through `/proc/self/mem`, so no other thread can see the page half-filled.
/// Async-signal-safe.
///
/// Each destination page is read once first (one byte, through the same file): a missing page
/// then gets the shared zero page, and the write replaces it by copy-on-write instead of
/// faulting a fresh page in. Why: on this project's Linux 6.18 KVM guests, pages faulted in by
/// such a forced write were later found with bit 5 or 6 of a word set (page-table accessed and
/// dirty bits, where bit 0 was set), also in a program without tieralloc
/// (`alloc-tests/platform/forced_write_fault.c`); with the read, never (RELIABILITY.md, P1).
pub fn write_protected(dst: usize, src: usize, len: usize) -> Result<(), i32> {
    let fd = MEM_FD.load(Ordering::Acquire);
    let mut byte = [0u8; 1];
    let mut at = dst;
    while at < dst + len {
        // Only a precaution: if the read fails, the write below still places the data.
        let _ = file::pread_fd(fd, &mut byte, at as u64);
        at += sys::PAGE_SIZE;
    }
    // SAFETY: src is a readable range of ours of `len` bytes; the offset is an address.
    unsafe { file::pwrite_all(fd, src, len, dst as u64) }
}

fn read_number(path: &core::ffi::CStr) -> Option<usize> {
    let mut buf = [0u8; 32];
    let n = file::read_start(path, &mut buf)?;
    config::parse_size(&buf[..n])
}

/// Lines of `/proc/self/maps`: the mappings this process has now.
fn count_maps() -> usize {
    file::count_byte(c"/proc/self/maps", b'\n')
}

/// `vm.max_map_count` as the signal backend read it at start.
pub fn map_limit() -> usize {
    MAP_LIMIT.load(Ordering::Relaxed)
}

/// Signal backend: refuses a migration that would create up to `new_runs` protected runs when
/// that could bring the process near `vm.max_map_count`. Half of the room is kept for the
/// splits that faults make later (a fault in the middle of a run splits it).
pub fn check_map_budget(new_runs: usize) -> Result<(), Error> {
    let limit = map_limit();
    let room = limit.saturating_sub(MAP_BASELINE.load(Ordering::Relaxed) + 1000) / 2;
    let runs = PROTECTED_RUNS.load(Ordering::Relaxed) + new_runs;
    // Each protected run is up to two kernel mappings in the managed range, and one whose
    // pages moved by their page-table entries (`tiering::migrate::MOVE_MIN`) up to two more
    // in the device window.
    if 4 * runs > room {
        return Err(Error::MapCountLimit { limit });
    }
    Ok(())
}

fn chunk_bit(chunk: usize) -> (&'static AtomicUsize, usize) {
    let bits = usize::BITS as usize;
    // SAFETY: the bitmap covers every chunk of the arena (start_uffd) and is never unmapped.
    let word =
        unsafe { &*(CHUNKS.load(Ordering::Acquire) as *const AtomicUsize).add(chunk / bits) };
    (word, 1 << (chunk % bits))
}

fn chunk_registered(chunk: usize) -> bool {
    let (w, b) = chunk_bit(chunk);
    w.load(Ordering::Acquire) & b != 0
}

/// Readies host pages `[page, page+n)` to become device-resident: with userfaultfd, registers
/// the chunks that hold them (missing + write-protect faults).
pub fn prepare_host(page: usize, n: usize) -> Result<(), Error> {
    if !matches!(backend(), Some(Backend::Uffd | Backend::UffdFast)) {
        return Ok(());
    }
    let _g = REGISTER.lock();
    let (first, last) = (page / CHUNK_PAGES, (page + n - 1) / CHUNK_PAGES);
    let mut c = first;
    while c <= last {
        if chunk_registered(c) {
            c += 1;
            continue;
        }
        let start = c;
        while c <= last && !chunk_registered(c) {
            c += 1;
        }
        let addr = arena::addr_of(start * CHUNK_PAGES);
        let len = ((c - start) * CHUNK_PAGES).min(arena::pages() - start * CHUNK_PAGES);
        uffd::register(
            addr,
            len * sys::PAGE_SIZE,
            uffd::MODE_MISSING | uffd::MODE_WP,
        )
        .map_err(|errno| Error::Sys {
            what: "registering the range with userfaultfd",
            errno,
        })?;
        for k in start..c {
            let (w, b) = chunk_bit(k);
            w.fetch_or(b, Ordering::AcqRel);
        }
        ANY_REGISTERED.store(true, Ordering::Release);
        // Pages of these chunks that were handed out before they were registered and never
        // touched are missing now: a system call reading them would fail with EFAULT in
        // uffd-fast mode (and wait for a handler in uffd mode). Give every missing page the
        // zero page. No page of an unregistered chunk lives on a device, and migrations into
        // these chunks wait for this lock, so none is missing by design.
        for k in start..c {
            let first = k * CHUNK_PAGES;
            zero_missing(first, CHUNK_PAGES.min(arena::pages() - first));
        }
    }
    Ok(())
}

/// Called by the heap when it hands out pages `[page, page+n)`: inside registered chunks, the
/// missing ones get the zero page, so touching fresh memory (also from a system call) never
/// raises a userfault. Costs nothing until some page has been on a device.
pub fn pages_handed_out(page: usize, n: usize) {
    if !ANY_REGISTERED.load(Ordering::Acquire) {
        return;
    }
    let end = page + n;
    let mut p = page;
    while p < end {
        let chunk_end = ((p / CHUNK_PAGES + 1) * CHUNK_PAGES).min(end);
        if chunk_registered(p / CHUNK_PAGES) {
            zero_missing(p, chunk_end - p);
        }
        p = chunk_end;
    }
}

/// Maps the zero page at the missing pages of `[page, page+n)` (n ≤ one chunk).
fn zero_missing(page: usize, n: usize) {
    let mut vec = [0u8; CHUNK_PAGES];
    let addr = arena::addr_of(page);
    // A host page left missing here is given the zero page when it faults (`fix_host`).
    if sys::mincore(addr, n, &mut vec).is_err() {
        let _ = uffd::zeropage(addr, n * sys::PAGE_SIZE, true);
        return;
    }
    let mut i = 0;
    while i < n {
        if vec[i] & 1 != 0 {
            i += 1;
            continue;
        }
        let s = i;
        while i < n && vec[i] & 1 == 0 {
            i += 1;
        }
        let _ = uffd::zeropage(addr + s * sys::PAGE_SIZE, (i - s) * sys::PAGE_SIZE, true);
    }
}

/// Makes host page `page` accessible after a fault on it, when no migration holds it.
///
/// With userfaultfd the page may be missing inside a registered chunk (allocated before the
/// chunk was registered, and never touched): it gets the zero page, under the page's lock, so
/// the fill cannot land after a migration has moved the page away (that would put a stray host
/// page beside the device copy). A page that is there already needs nothing: the common case of
/// several threads faulting on a page another fault just brought back takes no lock at all.
/// Nothing else makes a host page fault: a host page is write-protected or `PROT_NONE` only
/// while its entry is locked. Async-signal-safe.
pub fn fix_host(page: usize) {
    if !matches!(backend(), Some(Backend::Uffd | Backend::UffdFast)) {
        return;
    }
    let addr = arena::addr_of(page);
    let mut vec = [0u8; 1];
    if sys::mincore(addr, 1, &mut vec).is_ok() && vec[0] & 1 != 0 {
        return;
    }
    if let Some(e) = crate::mem::pagemap::try_lock(page) {
        if e.device().is_none() {
            // If it fails the access faults again and comes back here.
            let _ = uffd::zeropage(addr, sys::PAGE_SIZE, true);
        }
        crate::mem::pagemap::unlock(page, e);
    }
}

/// Transparent mode: wakes the threads waiting on faults in pages `[page, page+n)`, once their
/// new state is published. A no-op in the other backends (the faulting thread resolves its own
/// fault there). Async-signal-safe.
pub fn wake_pages(page: usize, n: usize) {
    if backend() == Some(Backend::Uffd) {
        uffd::wake(arena::addr_of(page), n * sys::PAGE_SIZE);
    }
}

/// Transparent mode: resolves one queued fault at `addr` and makes sure the threads waiting on
/// its page are woken (a fault-back wakes its whole range itself; a running kernel's end
/// wakes the pages it pinned). `epoch`: `pagemap::to_device_epoch()` before the message was
/// read (see [`Resolver`]); a thread still waiting on a page left alone faults again.
pub(crate) fn resolve_queued(addr: usize, epoch: usize) {
    // A pinned page's waiters are woken by the kernel's end (`wake_pages`), so a handler thread
    // never waits for a kernel.
    let woken = arena::contains(addr)
        && matches!(
            resolve(arena::page_of(addr), Some(epoch)),
            Fault::BroughtBack | Fault::Pinned
        );
    if !woken {
        uffd::wake(addr & !(sys::PAGE_SIZE - 1), sys::PAGE_SIZE);
    }
}

/// Part of `init`'s fork handling: the locks of start-up and chunk registration.
pub(crate) fn lock_for_fork() {
    INIT.lock_for_fork();
    REGISTER.lock_for_fork();
}

/// Releases the locks [`lock_for_fork`] took.
///
/// # Safety
/// This thread (or, in a fork child, its copy) took them with [`lock_for_fork`].
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe {
        REGISTER.unlock_after_fork();
        INIT.unlock_after_fork();
    }
}

/// In a fork child, once locks and gate are open again: the kernel dropped the userfaultfd
/// registrations (they belong to the parent's descriptor) and the handler threads do not
/// exist. Register everything again on a new descriptor and restart the service; the device
/// windows were copied with the address space.
pub(crate) fn restart_in_child() {
    match backend() {
        Some(b @ (Backend::Uffd | Backend::UffdFast)) => {
            let fast = b == Backend::UffdFast;
            let old = uffd::fd();
            let opened = uffd::open(fast, false).or_else(|_| uffd::open(fast, true));
            match opened {
                Ok((fd, _)) => {
                    uffd::set_fd(fd);
                    // The parent's descriptor is of no use in the child.
                    file::close(old);
                    if register_windows().is_err()
                        || reregister_chunks().is_err()
                        || reprotect_duplicates().is_err()
                    {
                        sys::fatal(
                            "could not re-register device memory with userfaultfd after fork",
                        );
                    }
                    if !fast && service::spawn_handlers().is_err() {
                        sys::fatal("could not start the fault handler threads after fork");
                    }
                }
                Err(_) => sys::fatal("could not open a userfaultfd in the child after fork"),
            }
        }
        Some(Backend::Signal) if open_mem_fd().is_err() => {
            sys::fatal("could not reopen /proc/self/mem after fork")
        }
        _ => {}
    }
}

/// In a fork child: the kernel copied the pages without their userfaultfd write-protect bits
/// (the child's mappings were not registered while it copied them), so host pages with a
/// read-only duplicate on a device are writable again and a write would not drop the
/// duplicate. Protect them again; they all lie in registered chunks.
fn reprotect_duplicates() -> Result<(), i32> {
    let pages = arena::pages();
    let chunks = pages.div_ceil(CHUNK_PAGES);
    for c in (0..chunks).filter(|&c| chunk_registered(c)) {
        let end = ((c + 1) * CHUNK_PAGES).min(pages);
        let mut p = c * CHUNK_PAGES;
        while p < end {
            if crate::mem::pagemap::get(p).dup().is_none() {
                p += 1;
                continue;
            }
            let s = p;
            while p < end && crate::mem::pagemap::get(p).dup().is_some() {
                p += 1;
            }
            uffd::write_protect(arena::addr_of(s), (p - s) * sys::PAGE_SIZE, true)?;
        }
    }
    Ok(())
}

fn reregister_chunks() -> Result<(), i32> {
    let chunks = arena::pages().div_ceil(CHUNK_PAGES);
    let mut c = 0;
    while c < chunks {
        if !chunk_registered(c) {
            c += 1;
            continue;
        }
        let start = c;
        while c < chunks && chunk_registered(c) {
            c += 1;
        }
        let len = ((c - start) * CHUNK_PAGES).min(arena::pages() - start * CHUNK_PAGES);
        uffd::register(
            arena::addr_of(start * CHUNK_PAGES),
            len * sys::PAGE_SIZE,
            uffd::MODE_MISSING | uffd::MODE_WP,
        )?;
    }
    Ok(())
}
