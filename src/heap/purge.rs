//! Retention with decay: freed page runs stay mapped ("dirty") and are reused first; a run goes
//! back to the OS (`MADV_DONTNEED`) once it has stayed free for the purge delay
//! (`TIERALLOC_PURGE_DELAY`, default 1 s), as mimalloc's `purge_delay` and jemalloc's
//! `dirty_decay_ms` do. Without it, a program that frees a working set and builds it again pays
//! the kernel to zero every page again (the allocator report's batch workloads ran 13–22× slower
//! than mimalloc, most of it in `clear_page`).
//!
//! The run cache ([`super::run_cache`]) is drained here too: a size nobody used for a whole
//! period goes back to the page runs, decommitted at once.
//!
//! Bounds: a run of 256 MiB or more goes back at once; more than 1 GiB of freed pages is trimmed
//! at once, oldest bins first; `tieralloc::trim()` releases everything now. A thread of its own
//! (`tieralloc-purge`, started the first time pages are retained) wakes every half delay and
//! gives back what has expired, so a program that frees everything and sleeps gets its memory
//! back without calling into the allocator again.

use super::pages::PAGES;
use crate::config;
use crate::pal::signal::SignalsBlocked;
use crate::pal::thread;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The purge delay in ms (read at start-up).
static DELAY_MS: AtomicU32 = AtomicU32::new(crate::base::consts::DEFAULT_PURGE_DELAY_MS);
/// Whether the purger thread runs (or is being started) in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Stamps are milliseconds modulo 2^24 (4.6 hours): ages up to half that compare right.
pub const STAMP_BITS: u32 = 24;
const STAMP_MASK: u32 = (1 << STAMP_BITS) - 1;

/// Reads `TIERALLOC_PURGE_DELAY` (heap start-up).
pub fn init() {
    DELAY_MS.store(config::purge_delay_ms(), Ordering::Relaxed);
}

/// The purge delay in milliseconds; 0: freed pages go back at once.
#[inline]
pub fn delay_ms() -> u32 {
    DELAY_MS.load(Ordering::Relaxed)
}

/// Now, as a stamp.
#[inline]
pub fn now() -> u32 {
    thread::coarse_now_ms() as u32 & STAMP_MASK
}

/// Milliseconds from stamp `then` to stamp `now`.
#[inline]
pub fn age(now: u32, then: u32) -> u32 {
    now.wrapping_sub(then) & STAMP_MASK
}

/// Starts the purger thread if pages are being retained and it does not run yet. Called with no
/// heap lock held (starting a thread may allocate through the C library).
#[inline]
pub fn ensure_running<H: super::Hooks>() {
    if RUNNING.load(Ordering::Relaxed) || delay_ms() == 0 {
        return;
    }
    if RUNNING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
        && thread::spawn_raw(purger::<H>, 0, 64 << 10, c"tieralloc-purge").is_err()
    {
        // No thread: expired runs still go back when later frees look at them.
        RUNNING.store(false, Ordering::Release);
    }
}

/// In a `fork` child: the purger thread does not exist there (the next free starts one).
pub fn forget_thread_after_fork() {
    RUNNING.store(false, Ordering::Relaxed);
}

extern "C" fn purger<H: super::Hooks>(_: *mut libc::c_void) -> *mut libc::c_void {
    SignalsBlocked::forever();
    loop {
        let delay = delay_ms();
        thread::sleep_us(u64::from((delay / 2).max(5)) * 1000);
        super::drain_run_cache::<H>(false);
        PAGES.lock().purge_expired(now(), delay);
    }
}
