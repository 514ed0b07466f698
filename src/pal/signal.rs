//! Signals: blocking them around page-lock holders, and installing and chaining the fault
//! handler. Async-signal-safe: system calls on stack data only.
//!
//! The handler's actions are kept as the kernel's own `struct sigaction` (`libc`): chaining to
//! whatever handler was installed before tieralloc needs its raw `sa_sigaction`, flags and mask
//! as they were, and reading the current action without changing it, neither of which `nix`'s
//! `sigaction` offers. Masks use `nix` (and libc set operations where real-time signals count).

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

/// A signal action as the kernel takes it.
pub type Action = libc::sigaction;

/// A `SA_SIGINFO` handler.
pub type Handler = extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void);

/// The action that runs `f` on the alternate stack, with every other signal blocked.
pub fn handler_action(f: Handler) -> Action {
    // SAFETY: sigaction is plain data; all-zero is SIG_DFL with no flags and an empty mask.
    let mut act: Action = unsafe { core::mem::zeroed() };
    act.sa_sigaction = f as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    act.sa_mask = *SigSet::all().as_ref();
    act
}

/// The default action (`SIG_DFL`, no flags, empty mask), usable in a `static` initialiser.
pub const fn default_action() -> Action {
    // SAFETY: sigaction is plain data; all-zero is SIG_DFL with no flags and an empty mask.
    unsafe { core::mem::zeroed() }
}

/// Installs `act` for `sig` and returns the action it replaced; `Err(errno)` on failure.
pub fn swap_action(sig: i32, act: &Action) -> Result<Action, i32> {
    let mut old = default_action();
    // SAFETY: both pointers are to valid sigaction structs of ours.
    if unsafe { libc::sigaction(sig, act, &mut old) } != 0 {
        return Err(super::sys::errno());
    }
    Ok(old)
}

/// The action installed for `sig` now (unchanged).
pub fn current_action(sig: i32) -> Action {
    let mut cur = default_action();
    // SAFETY: a null new action only queries; `cur` is a valid sigaction to fill.
    unsafe { libc::sigaction(sig, core::ptr::null(), &mut cur) };
    cur
}

/// Restores the default action for `sig`.
pub fn set_default(sig: i32) {
    let _ = swap_action(sig, &default_action());
}

/// Sends `sig` to the calling thread (it stays pending while the signal is blocked).
pub fn resend_to_self(sig: i32) {
    if let Ok(s) = Signal::try_from(sig) {
        let _ = nix::sys::pthread::pthread_kill(nix::sys::pthread::pthread_self(), s);
    }
}

/// Sets this thread's mask to what the kernel would set when it runs handler `prev` for `sig`
/// interrupting code whose mask was `interrupted`: that mask, plus `prev`'s `sa_mask`, plus
/// `sig` itself unless `SA_NODEFER`.
pub fn mask_for_handler(interrupted: &libc::sigset_t, prev: &Action, sig: i32) {
    let mut mask = *interrupted;
    // Real-time signals too, which `nix`'s `Signal` does not name: plain libc set operations.
    // SAFETY: sigset operations on local copies of valid sets.
    unsafe {
        for s in 1..libc::SIGRTMAX() {
            if libc::sigismember(&prev.sa_mask, s) == 1 {
                libc::sigaddset(&mut mask, s);
            }
        }
        if prev.sa_flags & libc::SA_NODEFER == 0 {
            libc::sigaddset(&mut mask, sig);
        }
    }
    // SAFETY: `mask` is a sigset_t built above from valid sets.
    let mask = unsafe { SigSet::from_sigset_t_unchecked(mask) };
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
}

/// Asynchronous signals blocked on this thread until the guard is dropped (then the previous
/// mask comes back). A thread that holds page locks blocks them: a signal handler that
/// touched one of those pages would otherwise wait for a lock its own thread holds. The
/// synchronous signals (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`) stay open, so a
/// real fault still kills as usual. Async-signal-safe.
pub struct SignalsBlocked {
    /// The mask to restore.
    old: SigSet,
    /// Ties the guard to its thread: the mask it restores is this thread's.
    _not_send: core::marker::PhantomData<*const ()>,
}

impl SignalsBlocked {
    /// Blocks the asynchronous signals on the calling thread.
    pub fn new() -> SignalsBlocked {
        let mut set = SigSet::all();
        for sig in [
            Signal::SIGSEGV,
            Signal::SIGBUS,
            Signal::SIGILL,
            Signal::SIGFPE,
            Signal::SIGTRAP,
        ] {
            set.remove(sig);
        }
        let mut old = SigSet::empty();
        let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old));
        SignalsBlocked {
            old,
            _not_send: core::marker::PhantomData,
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
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}
