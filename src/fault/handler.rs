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

use crate::mem::arena;

use super::Fault;

use crate::pal::{signal, sys};
use core::sync::atomic::{AtomicBool, Ordering};

/// The handlers tieralloc replaced, per signal (SIGSEGV, SIGBUS). Written once, before
/// [`INSTALLED`] is set; read only after it is seen set.
static mut PREVIOUS: [signal::Action; 2] = [signal::default_action(); 2];
static INSTALLED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

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
    let prev = signal::swap_action(sig, &our_action())?;
    // SAFETY: PREVIOUS[i] is written here once, before INSTALLED[i] is published (install
    // runs under the fault backend's start-up lock).
    unsafe { (&raw mut PREVIOUS[i]).write(prev) };
    INSTALLED[i].store(true, Ordering::Release);
    Ok(())
}

std::thread_local! {
    /// The page and protection count of this thread's last fault that found nothing of ours on
    /// a host page (signal backend): the same page faulting again with no protection change
    /// since is the program's own fault. Const-initialised, without a destructor: reading it
    /// allocates nothing and is async-signal-safe.
    static LAST_HOST_FAULT: core::cell::Cell<(usize, u64)> =
        const { core::cell::Cell::new((usize::MAX, 0)) };
}

/// tieralloc's action: [`on_fault`] with every other signal blocked while it runs (it may hold
/// a page lock, and an application handler that interrupted it and touched that page would
/// wait for its own thread).
fn our_action() -> signal::Action {
    signal::handler_action(on_fault)
}

/// The fault handler. See the module docs for what it may do. `errno` is saved on entry and
/// restored on every return: the interrupted code may be between a failing call and its
/// reading of `errno`.
extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let saved = sys::errno();
    handle(sig, info, ctx);
    sys::set_errno(saved);
}

fn handle(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
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
        let page = arena::page_of(addr);
        match super::resolve(page, None) {
            Fault::NotOurs => {}
            // Only memory a kernel holds for writing stays pinned against the CPU (what one
            // reads gets a read-only copy; pages an argument shares stay on the host): safe
            // code cannot reach it from another kernel or through another reference.
            Fault::Pinned if crate::mem::scope::in_kernel() => sys::fatal(
                "a device kernel touched memory that a running kernel holds for writing \
                 through its CPU address (an aliasing bug)",
            ),
            Fault::Pinned => return crate::pal::thread::sleep_us(50),
            Fault::Host if sig == libc::SIGSEGV => {
                if !first_look(page) {
                    // Nothing of tieralloc's protects the page and nothing changed since
                    // this page faulted last: the program protected it itself.
                    return chain(sig, info, ctx);
                }
                return;
            }
            _ => return,
        }
    }
    chain(sig, info, ctx);
}

/// Signal backend, a fault on a host page with nothing of tieralloc's on it: true (retry) the
/// first time, or when tieralloc changed some protection since this thread's last such fault
/// on this page (the fault raced with a migration that has since lifted its protection).
fn first_look(page: usize) -> bool {
    let epoch = sys::PROTECT_EPOCH.load(Ordering::Acquire);
    LAST_HOST_FAULT.with(|last| {
        let seen = last.get();
        last.set((page, epoch));
        seen != (page, epoch)
    })
}

/// Hands the signal to the previous handler, as the kernel would have delivered it without
/// tieralloc, or applies the default action.
///
/// - A fault (`si_code > 0`) whose previous action is the default: restore the default and
///   return, so the faulting instruction runs again and the kernel applies it (core dump and
///   all).
/// - A signal sent by a process (`kill`, `si_code <= 0`): nothing runs again, so the default
///   action is applied by sending the signal once more (it is delivered when this handler
///   returns); `SIG_IGN` ignores it.
/// - A previous handler runs with its own mask and flags (`SA_RESETHAND` honoured). If it
///   replaced the disposition for a signal that will not recur (a `kill`), tieralloc's handler
///   is put back: std's stack-overflow handler resets the default action and returns, which
///   would otherwise leave device memory without a fault handler.
fn chain(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let i = slot(sig);
    // SAFETY: INSTALLED[i] was set after PREVIOUS[i] was written (we are running as that
    // handler), and nothing writes it again.
    let prev = unsafe { (&raw const PREVIOUS[i]).read() };
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let sent = unsafe { (*info).si_code } <= 0;
    let h = prev.sa_sigaction;
    if h == libc::SIG_IGN && sent {
        return;
    }
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        signal::set_default(sig);
        if sent {
            // Pending until we return (it is blocked while this handler runs).
            signal::resend_to_self(sig);
        }
        return;
    }
    if prev.sa_flags & libc::SA_RESETHAND != 0 {
        signal::set_default(sig);
    }
    // The mask the kernel would have set for the previous handler: the interrupted code's,
    // plus its sa_mask, plus the signal itself unless SA_NODEFER.
    // SAFETY: ctx is the ucontext_t the kernel passed.
    let interrupted = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_sigmask };
    signal::mask_for_handler(interrupted, &prev, sig);
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
    if sent {
        reinstall(sig);
    }
}

/// Puts tieralloc's handler back for `sig` if something replaced it (keeping `PREVIOUS`).
fn reinstall(sig: i32) {
    if signal::current_action(sig).sa_sigaction != on_fault as *const () as usize {
        let _ = signal::swap_action(sig, &our_action());
    }
}
