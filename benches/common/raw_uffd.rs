//! The kernel's userfaultfd mechanisms measured bare, without tieralloc: what one fault-back
//! costs on this machine when nothing but the kernel's work is done. `fault_report` prints
//! them next to tieralloc's figures, so the part of a fault-back that is tieralloc's own code
//! can be told from the part the kernel (and the VM's scheduler) takes.
//!
//! Each measurement opens its own userfaultfd over its own two private mappings: a registered
//! "user" range and a "pool" it moves pages from, the way tieralloc moves a page back from a
//! device pool. Every other page is touched, as in `fault_back_per_page`. Run them in a
//! process where tieralloc's fault backend has not started (the fast variant installs its own
//! SIGBUS handler for its duration).

#![allow(dead_code)] // each includer uses a different subset

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

// The userfaultfd ABI (<linux/userfaultfd.h>; UFFDIO_MOVE is Linux 6.8).
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_MOVE: u64 = 0xc028_aa05;
const UFFD_API: u64 = 0xaa;
const FEATURE_SIGBUS: u64 = 1 << 7;
const FEATURE_MOVE: u64 = 1 << 16;
const REGISTER_MISSING: u64 = 1;
const EVENT_PAGEFAULT: u8 = 0x12;

/// How the CPU touches a device-resident page. Linux handles the two differently before it
/// gets to a userfaultfd: a write to a missing page first allocates and zeroes a page (then
/// frees it when it finds the userfaultfd), a read does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// One touch of the byte at `p`.
    ///
    /// # Safety
    /// `p` is valid for reads and writes.
    pub unsafe fn touch(self, p: *mut u8) {
        // SAFETY: the caller's promise.
        unsafe {
            match self {
                Access::Read => {
                    std::hint::black_box(std::ptr::read_volatile(p));
                }
                Access::Write => std::ptr::write_volatile(p, 7),
            }
        }
    }

    /// The name the report prints.
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// The userfaultfd and the two ranges of the measurement in progress (one at a time).
static FD: AtomicI32 = AtomicI32::new(-1);
static USER: AtomicUsize = AtomicUsize::new(0);
static POOL: AtomicUsize = AtomicUsize::new(0);

/// The user range, the pool (every other page filled) and the userfaultfd with the user range
/// registered for missing pages. None when the kernel lacks what is needed.
struct Setup {
    user: *mut u8,
    pool: *mut u8,
    len: usize,
    fd: i32,
}

impl Setup {
    fn new(pages: usize, sigbus: bool) -> Option<Setup> {
        let len = 2 * pages * PAGE;
        let map = || {
            // SAFETY: a fresh private anonymous mapping; checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(
                p,
                libc::MAP_FAILED,
                "mmap for the raw userfaultfd measurement"
            );
            p.cast::<u8>()
        };
        let (user, pool) = (map(), map());
        for i in 0..pages {
            // SAFETY: page 2i of the pool is inside its `len` bytes.
            unsafe { pool.add(2 * i * PAGE).write_bytes(1, PAGE) };
        }
        let flags = libc::O_CLOEXEC | if sigbus { libc::O_NONBLOCK } else { 0 };
        // SAFETY: userfaultfd takes only flags.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) } as i32;
        let s = Setup {
            user,
            pool,
            len,
            fd,
        };
        if fd < 0 {
            return None;
        }
        let mut api = [
            UFFD_API,
            FEATURE_MOVE | if sigbus { FEATURE_SIGBUS } else { 0 },
            0,
        ];
        let mut reg = [user as u64, len as u64, REGISTER_MISSING, 0];
        // SAFETY: both arguments are the structs these ioctls expect, on our stack.
        let ok = unsafe {
            libc::ioctl(fd, UFFDIO_API as _, api.as_mut_ptr()) == 0
                && libc::ioctl(fd, UFFDIO_REGISTER as _, reg.as_mut_ptr()) == 0
        };
        if !ok {
            return None;
        }
        FD.store(fd, Ordering::SeqCst);
        USER.store(user as usize, Ordering::SeqCst);
        POOL.store(pool as usize, Ordering::SeqCst);
        Some(s)
    }

    /// Touches the first `pages` even pages of the user range once (each faults); ns per
    /// fault.
    fn touch(&self, pages: usize, access: Access) -> f64 {
        let t = Instant::now();
        for i in 0..pages {
            // SAFETY: inside the user range; the fault is resolved by the measurement's handler.
            unsafe { access.touch(self.user.add(2 * i * PAGE + 8)) };
        }
        t.elapsed().as_nanos() as f64 / pages as f64
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        FD.store(-1, Ordering::SeqCst);
        // SAFETY: the mappings and the descriptor are this measurement's own.
        unsafe {
            if self.fd >= 0 {
                libc::close(self.fd);
            }
            libc::munmap(self.user.cast(), self.len);
            libc::munmap(self.pool.cast(), self.len);
        }
    }
}

/// Moves the pool's page behind user address `addr` into place (waking any waiter).
/// Async-signal-safe: one ioctl on a stack struct.
fn move_back(addr: usize) {
    let page = addr & !(PAGE - 1);
    let off = page - USER.load(Ordering::Relaxed);
    let mut mv = [
        page as u64,
        (POOL.load(Ordering::Relaxed) + off) as u64,
        PAGE as u64,
        0,
        0,
    ];
    // SAFETY: a struct uffdio_move on our stack; both pages belong to the measurement.
    unsafe {
        libc::ioctl(
            FD.load(Ordering::Relaxed),
            UFFDIO_MOVE as _,
            mv.as_mut_ptr(),
        )
    };
}

extern "C" fn on_sigbus(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    move_back(unsafe { (*info).si_addr() } as usize);
}

/// The bare `uffd-fast` mechanism: SIGBUS mode, the faulting thread's handler does one
/// `UFFDIO_MOVE` from the pool (ns per fault). None when the kernel lacks SIGBUS mode or
/// `UFFDIO_MOVE`.
pub fn raw_sigbus_move(pages: usize, access: Access) -> Option<f64> {
    let s = Setup::new(pages, true)?;
    Some(with_handler(libc::SIGBUS, on_sigbus, || {
        s.touch(pages, access)
    }))
}

/// A signal handler that takes `siginfo` (`SA_SIGINFO`).
pub type Handler = extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void);

/// Runs `f` with `handler` installed for `sig`, then puts the previous handler back.
pub fn with_handler<R>(sig: i32, handler: Handler, f: impl FnOnce() -> R) -> R {
    // SAFETY: a zeroed sigaction is valid; the measurements' handlers only make system calls
    // on memory of their own; the previous handler is put back before returning.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, &act, &mut old);
        let r = f();
        libc::sigaction(sig, &old, std::ptr::null_mut());
        r
    }
}

/// The bare transparent mechanism: the faulting thread sleeps in the kernel while one handler
/// thread reads the fault message and does one `UFFDIO_MOVE`, which wakes it (ns per fault).
/// `same_cpu`: both threads are pinned to the CPU the caller is on (the best case: no other
/// vCPU is woken); otherwise the scheduler places them. None without `UFFDIO_MOVE`.
pub fn raw_handler_thread_move(pages: usize, same_cpu: bool, access: Access) -> Option<f64> {
    // One filled page more than measured: its touch stops the handler.
    let s = Setup::new(pages + 1, false)?;
    let fd = s.fd;
    // SAFETY: plain data, filled by sched_getaffinity.
    let mut old_set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `old_set` is a cpu_set_t of the size given.
    unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&old_set), &mut old_set) };
    // SAFETY: sched_getcpu only reads the CPU number.
    let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
    if same_cpu {
        pin_to(cpu);
    }
    // The spare page's fault is the last one the handler serves.
    let stop_page = s.user as usize + 2 * pages * PAGE;
    let ready = std::sync::Arc::new(AtomicBool::new(false));
    let ready2 = ready.clone();
    let handler = std::thread::spawn(move || {
        if same_cpu {
            pin_to(cpu);
        }
        ready2.store(true, Ordering::SeqCst);
        let mut msg = [0u64; 4];
        loop {
            // SAFETY: `msg` is one struct uffd_msg (32 bytes); the read blocks until a fault.
            let n = unsafe { libc::read(fd, msg.as_mut_ptr().cast(), 32) };
            if n == 32 && msg[0] as u8 == EVENT_PAGEFAULT {
                move_back(msg[2] as usize);
                if msg[2] as usize & !(PAGE - 1) == stop_page {
                    return;
                }
            }
        }
    });
    while !ready.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(5));
    let ns = s.touch(pages, access);
    // SAFETY: the spare filled page, never touched: this faults once more and the handler
    // moves it into place and exits.
    unsafe { std::ptr::write_volatile(stop_page as *mut u8, 1) };
    handler.join().unwrap();
    // SAFETY: restores the affinity read above, for this thread only.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&old_set), &old_set) };
    Some(ns)
}

fn pin_to(cpu: usize) {
    // SAFETY: plain data; cpu came from sched_getcpu, so it is below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// Touches even page `2 * (t + threads * i)` of the user range for `i < pages`, on `threads`
/// threads started together (each its own pages); wall time in seconds.
fn touch_on_threads(s: &Setup, threads: usize, pages: usize, access: Access) -> f64 {
    let user = s.user as usize;
    let start = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|sc| {
        for t in 0..threads {
            let start = &start;
            sc.spawn(move || {
                start.wait();
                for i in 0..pages {
                    let page = 2 * (t + threads * i);
                    // SAFETY: inside the user range; the measurement's handler resolves it.
                    unsafe { access.touch((user + page * PAGE + 8) as *mut u8) };
                }
            });
        }
        start.wait();
        Instant::now()
    })
    .elapsed()
    .as_secs_f64()
}

/// [`raw_sigbus_move`] with `threads` threads faulting at once, `pages` faults each: faults
/// per second. None when the kernel lacks SIGBUS mode or `UFFDIO_MOVE`.
pub fn raw_sigbus_move_threads(threads: usize, pages: usize, access: Access) -> Option<f64> {
    let s = Setup::new(threads * pages, true)?;
    let secs = with_handler(libc::SIGBUS, on_sigbus, || {
        touch_on_threads(&s, threads, pages, access)
    });
    Some((threads * pages) as f64 / secs)
}

/// The bare transparent mechanism with `threads` threads faulting at once, `pages` faults
/// each, and one handler thread per CPU (placed by the scheduler, as tieralloc's are not
/// pinned to the faulting thread) reading the userfaultfd: faults per second. None without
/// `UFFDIO_MOVE`.
pub fn raw_handler_threads_move(threads: usize, pages: usize, access: Access) -> Option<f64> {
    let s = Setup::new(threads * pages, false)?;
    let fd = s.fd;
    // Non-blocking: two handlers may both see a message that only one of them can read.
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    let stop = AtomicBool::new(false);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let secs = std::thread::scope(|sc| {
        for _ in 0..cpus {
            let stop = &stop;
            sc.spawn(move || {
                let mut msg = [0u64; 4];
                while !stop.load(Ordering::Acquire) {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd on our stack.
                    if unsafe { libc::poll(&mut p, 1, 10) } <= 0 {
                        continue;
                    }
                    // SAFETY: `msg` is one struct uffd_msg (32 bytes); a read that finds
                    // nothing (another handler took the message) returns at once.
                    let n = unsafe { libc::read(fd, msg.as_mut_ptr().cast(), 32) };
                    if n == 32 && msg[0] as u8 == EVENT_PAGEFAULT {
                        move_back(msg[2] as usize);
                    }
                }
            });
        }
        let secs = touch_on_threads(&s, threads, pages, access);
        stop.store(true, Ordering::Release);
        secs
    });
    Some((threads * pages) as f64 / secs)
}
