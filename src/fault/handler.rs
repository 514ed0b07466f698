//! The signal handler of the `signal` (SIGSEGV) and `uffd-fast` (SIGBUS) backends.
//!
//! **Async-signal-safe.** Everything reachable from [`on_fault`] only reads and CASes atomics
//! (page-map entries, counters) and makes system calls (`ioctl`, `mprotect`, `madvise`,
//! `pwrite`, `sched_yield`, `sigaction`). It never allocates, never prints, and takes no lock
//! that an allocating thread could hold: the only waiting it does is on a page-map entry's lock
//! bit, whose holders (a migration or another fault) never wait for a heap lock. A thread may
//! fault while it is inside `malloc`.
//!
//! A fault that is not ours (outside the managed range, or a signal code the kernel uses for
//! other causes) goes to the handler that was installed before tieralloc's, or to the default
//! action, so a genuine bug still dies with the same signal.

use crate::{arena, migrate, sys};
use core::sync::atomic::{AtomicBool, Ordering};

/// The handlers tieralloc replaced, per signal (SIGSEGV, SIGBUS). Written once, before
/// [`INSTALLED`] is set; read only after it is seen set.
static mut PREVIOUS: [libc::sigaction; 2] = [unsafe_zeroed_sigaction(); 2];
static INSTALLED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

const fn unsafe_zeroed_sigaction() -> libc::sigaction {
    // SAFETY: sigaction is plain data; all-zero is SIG_DFL with no flags and an empty mask.
    unsafe { core::mem::zeroed() }
}

/// `si_code` of a SIGSEGV on a mapped page without the needed access (`<asm/siginfo.h>`).
const SEGV_ACCERR: i32 = 2;
/// `si_code` of a SIGBUS raised for a userfaultfd fault in SIGBUS mode.
const BUS_ADRERR: i32 = 2;

fn slot(sig: i32) -> usize {
    usize::from(sig == libc::SIGBUS)
}

/// Installs [`on_fault`] for `sig` (SIGSEGV or SIGBUS), remembering the previous handler.
pub fn install(sig: i32) -> Result<(), i32> {
    let i = slot(sig);
    if INSTALLED[i].load(Ordering::Acquire) {
        return Ok(());
    }
    // SAFETY: a zeroed sigaction is valid; we fill the handler, flags and an empty mask.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = on_fault as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: PREVIOUS[i] is written here once, before INSTALLED[i] is published; `act` is a
    // valid handler for this signal. The mask blocks every other signal while the handler
    // runs: it may hold a page lock, and an application handler that interrupted it and
    // touched that page would wait for its own thread.
    let rc = unsafe {
        libc::sigfillset(&mut act.sa_mask);
        libc::sigaction(sig, &act, &raw mut PREVIOUS[i])
    };
    if rc != 0 {
        return Err(sys::errno());
    }
    INSTALLED[i].store(true, Ordering::Release);
    Ok(())
}

/// The fault handler. See the module docs for what it may do.
extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    // SAFETY: as above.
    let code = unsafe { (*info).si_code };
    let ours = arena::contains(addr)
        && match sig {
            // uffd SIGBUS faults carry BUS_ADRERR; memory errors (BUS_MCEERR_*) are not ours.
            libc::SIGBUS => code == BUS_ADRERR,
            // Our protections give SEGV_ACCERR; a user-space kill(2) has si_code <= 0.
            _ => code == SEGV_ACCERR,
        };
    if ours {
        match migrate::cpu_fault(arena::page_of(addr)) {
            migrate::Fault::NotOurs => {}
            migrate::Fault::Pinned if crate::kernel::in_kernel() => sys::fatal(
                "a device kernel touched one of its own arguments through its CPU address; \
                 kernels must use the views they are given",
            ),
            migrate::Fault::Pinned => return sys::sleep_us(50),
            _ => return,
        }
    }
    chain(sig, info, ctx);
}

/// Hands the signal to the previous handler, or restores the default action and returns so
/// that the faulting instruction runs again and the kernel applies it (core dump and all).
fn chain(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let i = slot(sig);
    // SAFETY: INSTALLED[i] was set after PREVIOUS[i] was written (we are running as that
    // handler), and nothing writes it again.
    let prev = unsafe { (&raw const PREVIOUS[i]).read() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // SAFETY: a zeroed sigaction is SIG_DFL; restoring the default for this signal is
        // async-signal-safe, and the re-executed access then kills the process as usual.
        unsafe {
            let dfl: libc::sigaction = core::mem::zeroed();
            libc::sigaction(sig, &dfl, core::ptr::null_mut());
        }
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the handler takes only the signal number.
        let f: extern "C" fn(i32) = unsafe { core::mem::transmute(h) };
        f(sig);
    }
}
