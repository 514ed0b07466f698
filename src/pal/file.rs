//! File descriptors: the `/proc` files tieralloc reads and the `/proc/self/mem` descriptor the
//! signal backend writes through. On `nix`; nothing here allocates (paths are `CStr`s, buffers
//! are the caller's), and [`pwrite_all`] is async-signal-safe.

use core::ffi::CStr;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};

fn open_with(path: &CStr, flags: OFlag) -> Result<OwnedFd, i32> {
    open(path, flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| e as i32)
}

/// Opens `path` for reading and writing and hands over the raw descriptor, moved high
/// ([`keep_high`]; kept in an atomic by the caller, closed with [`close`]).
pub fn open_rw_raw(path: &CStr) -> Result<i32, i32> {
    open_with(path, OFlag::O_RDWR).map(keep_high)
}

/// The lowest number a descriptor tieralloc keeps for the life of the process is moved to.
/// Programs manage low numbers by hand: a shell's redirections use 0-9 (`exec 3>file` closes
/// whatever was at 3: with tieralloc's userfaultfd there, every device-resident page of the
/// shell read as zero and it crashed, 2026-12-02), dash keeps its saved copies at 10 and
/// above, bash its script at 255. A kept descriptor up here stays out of their way.
const KEPT_MIN: i32 = 512;

/// Moves descriptor `fd` to a number of at least [`KEPT_MIN`] (close-on-exec) and hands over
/// the raw new number; where `RLIMIT_NOFILE` does not allow it, `fd` stays where it is.
pub fn keep_high(fd: OwnedFd) -> i32 {
    match nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(KEPT_MIN)) {
        // The low number closes as `fd` drops.
        Ok(high) => high,
        Err(_) => fd.into_raw_fd(),
    }
}

/// Opens `path` read-only for the life of the process and hands over the raw descriptor, moved
/// high ([`keep_high`]). Close it with [`close`].
///
/// Only start-up and a fork child (one thread) should call it. Why: a descriptor opened by one
/// of tieralloc's threads while the program redirects a descriptor (`close(1)`, then
/// `dup2(4, 1)`, as dash does for `printf ... > file`) can get the number the program just
/// freed; the `dup2` then closes tieralloc's file silently, and tieralloc's `close` closes the
/// program's standard output (its `write` failed with `EBADF` under chaos migration,
/// 2026-12-02).
pub fn open_kept(path: &CStr) -> Result<i32, i32> {
    open_with(path, OFlag::O_RDONLY).map(keep_high)
}

/// Closes a descriptor handed over by [`open_rw_raw`], [`open_kept`] or `uffd::open`.
pub fn close(fd: i32) {
    if fd < 0 {
        return;
    }
    // SAFETY: the caller owns `fd` and nothing uses it afterwards.
    let _ = nix::unistd::close(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
}

/// Reads the start of `path` into `buf` (one `read`); the number of bytes read.
pub fn read_start(path: &CStr, buf: &mut [u8]) -> Option<usize> {
    let fd = open_with(path, OFlag::O_RDONLY).ok()?;
    nix::unistd::read(&fd, buf).ok().filter(|&n| n > 0)
}

/// How many times `byte` occurs in `path` (read in 4 KiB pieces on the stack).
pub fn count_byte(path: &CStr, byte: u8) -> usize {
    let Ok(fd) = open_with(path, OFlag::O_RDONLY) else {
        return 0;
    };
    let mut buf = [0u8; 4096];
    let mut count = 0;
    while let Ok(n @ 1..) = nix::unistd::read(&fd, &mut buf) {
        count += buf[..n].iter().filter(|&&b| b == byte).count();
    }
    count
}

/// Reads up to `buf.len()` bytes at offset `off` of descriptor `fd` (one `pread`); the count.
/// Async-signal-safe.
pub fn pread_fd(fd: i32, buf: &mut [u8], off: u64) -> Result<usize, i32> {
    if fd < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: `fd` stays open while the caller uses it (the caller's descriptor).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::sys::uio::pread(fd, buf, off as libc::off_t).map_err(|e| e as i32)
}

/// Writes `len` bytes from `src` at offset `off` of descriptor `fd` (one `pwrite`).
/// Async-signal-safe.
///
/// # Safety
/// `[src, src + len)` is readable.
pub unsafe fn pwrite_all(fd: i32, src: usize, len: usize, off: u64) -> Result<(), i32> {
    if fd < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: the caller's contract; `fd` stays open while the caller uses it.
    let (buf, fd) = unsafe {
        (
            core::slice::from_raw_parts(src as *const u8, len),
            BorrowedFd::borrow_raw(fd),
        )
    };
    match nix::sys::uio::pwrite(fd, buf, off as libc::off_t) {
        Ok(n) if n == len => Ok(()),
        Ok(_) => Err(libc::EIO),
        Err(e) => Err(e as i32),
    }
}
