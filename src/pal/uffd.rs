//! userfaultfd: the ioctls tieralloc uses.
//!
//! Async-signal-safety: every function here is a thin wrapper over one `ioctl(2)`/`read(2)`
//! and is called from fault handlers: no allocation, no locks (messages are read into a stack
//! buffer).
//!
//! The ABI constants are defined here because the C headers of older distributions lack
//! `UFFDIO_MOVE` (Linux 6.8); when the kernel lacks it, [`mv`] fails and callers copy instead.

use crate::pal::inject::{self, Point};
use crate::pal::sys;
use core::sync::atomic::{AtomicI32, Ordering};

const UFFDIO: u64 = 0xAA;
const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (UFFDIO << 8) | nr
}
const fn ior(nr: u64, size: u64) -> u64 {
    (2 << 30) | (size << 16) | (UFFDIO << 8) | nr
}
const UFFDIO_API: u64 = iowr(0x3F, 24);
const UFFDIO_REGISTER: u64 = iowr(0x00, 32);
const UFFDIO_WAKE: u64 = ior(0x02, 16);
const UFFDIO_COPY: u64 = iowr(0x03, 40);
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, 32);
const UFFDIO_MOVE: u64 = iowr(0x05, 40);
const UFFDIO_WRITEPROTECT: u64 = iowr(0x06, 24);

const UFFD_API: u64 = 0xAA;
/// Report write-protect faults (needed to register WP ranges).
const FEATURE_WP: u64 = 1 << 0;
/// Deliver SIGBUS to the faulting thread instead of queueing a message.
const FEATURE_SIGBUS: u64 = 1 << 7;
/// `UFFDIO_MOVE` is available.
pub const FEATURE_MOVE: u64 = 1 << 16;
/// `userfaultfd(2)` flag: handle user-mode faults only (allowed to unprivileged users).
const USER_MODE_ONLY: i32 = 1;

/// Register for missing-page faults.
pub const MODE_MISSING: u64 = 1;
/// Register for write-protect faults.
pub const MODE_WP: u64 = 2;
/// `UFFDIO_MOVE`/`UFFDIO_COPY`/`UFFDIO_ZEROPAGE`: do not wake waiting threads (the caller
/// wakes them after it has published the page's new state).
const DONTWAKE: u64 = 1;
const MOVE_ALLOW_SRC_HOLES: u64 = 2;
/// `UFFDIO_COPY_MODE_WP`: the copied pages are write-protected.
const COPY_MODE_WP: u64 = 2;
const WP_MODE_WP: u64 = 1;
/// `UFFDIO_WRITEPROTECT_MODE_DONTWAKE`.
const WP_MODE_DONTWAKE: u64 = 2;

const EVENT_PAGEFAULT: u8 = 0x12;

/// The process's userfaultfd (-1 when none).
static FD: AtomicI32 = AtomicI32::new(-1);

#[repr(C)]
struct Range {
    start: u64,
    len: u64,
}

/// Opens a userfaultfd. `sigbus` selects the fast mode; `user_mode_only` asks only for
/// user-mode faults, which unprivileged processes may get. Returns (fd, features granted).
pub fn open(sigbus: bool, user_mode_only: bool) -> Result<(i32, u64), i32> {
    // Blocking in the transparent mode: handler threads wait in read(2), and one that loses
    // the race for a message goes back to waiting inside the kernel.
    let flags = libc::O_CLOEXEC
        | if sigbus { libc::O_NONBLOCK } else { 0 }
        | if user_mode_only { USER_MODE_ONLY } else { 0 };
    let want = FEATURE_WP | if sigbus { FEATURE_SIGBUS } else { 0 };
    // Kernels before 6.8 refuse the unknown MOVE feature: then go on without it (copy instead).
    open_with(flags, want | FEATURE_MOVE).or_else(|_| open_with(flags, want))
}

fn open_with(flags: i32, features: u64) -> Result<(i32, u64), i32> {
    // SAFETY: userfaultfd takes only flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) } as i32;
    if fd < 0 {
        return Err(sys::errno());
    }
    let mut api = [UFFD_API, features, 0u64];
    // SAFETY: `api` is a struct uffdio_api (api, features, ioctls).
    if unsafe { libc::ioctl(fd, UFFDIO_API as _, api.as_mut_ptr()) } == 0 {
        return Ok((fd, api[1]));
    }
    let e = sys::errno();
    // SAFETY: fd is ours; a descriptor whose handshake failed is unusable.
    unsafe { libc::close(fd) };
    Err(e)
}

/// Makes `fd` the descriptor the ioctls below use.
pub fn set_fd(fd: i32) {
    FD.store(fd, Ordering::Release);
}

/// The current descriptor.
pub fn fd() -> i32 {
    FD.load(Ordering::Acquire)
}

fn ioctl(req: u64, arg: *mut u64) -> Result<(), i32> {
    // SAFETY: every caller passes a pointer to the struct `req` expects, on its stack.
    if unsafe { libc::ioctl(fd(), req as _, arg) } == 0 {
        Ok(())
    } else {
        Err(sys::errno())
    }
}

/// Registers `[addr, addr+len)` for the faults in `mode`.
pub fn register(addr: usize, len: usize, mode: u64) -> Result<(), i32> {
    if let Some(e) = inject::fail(Point::UffdRegister) {
        return Err(e);
    }
    let mut r = [addr as u64, len as u64, mode, 0];
    ioctl(UFFDIO_REGISTER, r.as_mut_ptr())
}

/// Moves the pages of `[src, src+len)` to `[dst, dst+len)` without copying (holes in the
/// source are skipped). Wakes no one: see [`wake`]. On failure returns the bytes moved before
/// it and the errno.
pub fn mv(dst: usize, src: usize, len: usize) -> Result<(), (usize, i32)> {
    transfer(UFFDIO_MOVE, MOVE_ALLOW_SRC_HOLES, dst, src, len)
}

/// Copies `len` bytes from `src` into the missing pages at `dst`, atomically per page. Wakes no
/// one: see [`wake`]. `EEXIST` means a page was already there.
pub fn copy(dst: usize, src: usize, len: usize) -> Result<(), i32> {
    transfer(UFFDIO_COPY, 0, dst, src, len).map_err(|(_, e)| e)
}

/// [`copy`], leaving the new pages write-protected (`UFFDIO_COPY_MODE_WP`): readers go on,
/// a write faults.
pub fn copy_write_protected(dst: usize, src: usize, len: usize) -> Result<(), i32> {
    transfer(UFFDIO_COPY, COPY_MODE_WP, dst, src, len).map_err(|(_, e)| e)
}

/// One `UFFDIO_MOVE` or `UFFDIO_COPY` (same argument layout: dst, src, len, mode, result),
/// continued after partial progress (`EAGAIN`), never waking waiters. On failure returns the
/// bytes done before it and the errno.
fn transfer(req: u64, mode: u64, dst: usize, src: usize, len: usize) -> Result<(), (usize, i32)> {
    let point = if req == UFFDIO_MOVE {
        Point::UffdMove
    } else {
        Point::UffdCopy
    };
    if let Some(e) = inject::fail(point) {
        return Err((0, e));
    }
    let mut done = 0;
    while done < len {
        let mut a = [
            (dst + done) as u64,
            (src + done) as u64,
            (len - done) as u64,
            mode | DONTWAKE,
            0,
        ];
        let r = ioctl(req, a.as_mut_ptr());
        let n = a[4] as i64;
        match r {
            Ok(()) => return Ok(()),
            Err(libc::EAGAIN) if n > 0 => done += n as usize,
            Err(e) => return Err((done + n.max(0) as usize, e)),
        }
    }
    Ok(())
}

/// Maps the zero page at every missing page of `[addr, addr+len)` (pages already there are
/// skipped); wakes threads waiting on them if `wake`.
pub fn zeropage(addr: usize, len: usize, wake: bool) {
    let mut at = addr;
    let end = addr + len;
    while at < end {
        let mut z = [
            at as u64,
            (end - at) as u64,
            if wake { 0 } else { DONTWAKE },
            0,
        ];
        let r = ioctl(UFFDIO_ZEROPAGE, z.as_mut_ptr());
        let done = (z[3] as i64).max(0) as usize;
        match r {
            Ok(()) => return,
            Err(libc::EAGAIN) if done > 0 => at += done,
            // A page already there: skip it and carry on after it.
            Err(libc::EEXIST) => at += done + sys::PAGE_SIZE,
            Err(_) => return,
        }
    }
}

/// Write-protects (`on`) or unprotects `[addr, addr+len)`; unprotecting wakes waiting writers.
pub fn write_protect(addr: usize, len: usize, on: bool) -> Result<(), i32> {
    if let Some(e) = inject::fail(Point::UffdWriteProtect) {
        return Err(e);
    }
    let mut w = [addr as u64, len as u64, if on { WP_MODE_WP } else { 0 }];
    ioctl(UFFDIO_WRITEPROTECT, w.as_mut_ptr())
}

/// Unprotects `[addr, addr+len)` without waking waiting writers (the caller wakes them once
/// the page's new state is published).
pub fn unprotect_quietly(addr: usize, len: usize) -> Result<(), i32> {
    let mut w = [addr as u64, len as u64, WP_MODE_DONTWAKE];
    ioctl(UFFDIO_WRITEPROTECT, w.as_mut_ptr())
}

/// Wakes threads waiting on faults in `[addr, addr+len)` so they retry their access.
pub fn wake(addr: usize, len: usize) {
    let mut r = Range {
        start: addr as u64,
        len: len as u64,
    };
    let _ = ioctl(UFFDIO_WAKE, (&raw mut r).cast());
}

/// One message from the descriptor: `struct uffd_msg` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct Msg {
    event: u8,
    _reserved: [u8; 7],
    /// For page faults: flags.
    flags: u64,
    /// For page faults: the faulting address.
    address: u64,
    _feat: u64,
}

/// Reads the pending page-fault messages into `out` (blocking until one comes) and returns
/// how many faulting addresses it stored; other events are skipped. `Err(errno)` when the
/// read failed. Allocates nothing.
pub fn read_faults(out: &mut [usize; 16]) -> Result<usize, i32> {
    let mut msgs = [Msg {
        event: 0,
        _reserved: [0; 7],
        flags: 0,
        address: 0,
        _feat: 0,
    }; 16];
    // SAFETY: `msgs` has room for 16 messages; the descriptor blocks until one comes.
    let got = unsafe {
        libc::read(
            fd(),
            msgs.as_mut_ptr().cast(),
            core::mem::size_of_val(&msgs),
        )
    };
    if got <= 0 {
        return Err(sys::errno());
    }
    let count = got as usize / core::mem::size_of::<Msg>();
    let mut n = 0;
    for m in msgs[..count].iter().filter(|m| m.event == EVENT_PAGEFAULT) {
        out[n] = m.address as usize;
        n += 1;
    }
    Ok(n)
}
