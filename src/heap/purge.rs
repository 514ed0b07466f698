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
//! (`tieralloc-purge`, started the first time pages are retained) wakes every quarter delay
//! and gives back what has expired, so a program that frees everything and sleeps gets its memory
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

/// The stamp a run freed now gets, kept by the purger thread while it runs ([`TICKING`]): the
/// time of its last tick plus two ticks, so not earlier than the real time of a free until the
/// next tick comes (one tick later, plus the pass's own time). Reading the clock on every freed run, even `CLOCK_MONOTONIC_COARSE` through the
/// vDSO and even inside the page-run lock, made a batch of 16 KiB blocks 20% slower (215 against
/// 172 ns per alloc+free, `perf`: 14% of samples around `clock_gettime`, 2026-12-02).
static STAMP: AtomicU32 = AtomicU32::new(0);
/// Whether [`STAMP`] is kept: set by the purger thread once it stored the first one, cleared
/// in a `fork` child (which has no purger until its next free starts one).
static TICKING: AtomicBool = AtomicBool::new(false);

/// The clock, as a stamp.
#[inline]
pub fn now() -> u32 {
    thread::coarse_now_ms() as u32 & STAMP_MASK
}

/// The stamp of a run freed now: [`STAMP`] while the purger keeps it, else the clock. A stamp
/// is not earlier than the free, so no run goes back before it stayed free for the delay; it
/// may be later by up to two ticks of the purger (half the delay), and the run goes back by as
/// much later: between the delay and 1.75 times it, counting the tick that finds it. A purger that is descheduled for longer than its tick leaves stamps
/// that are too early: those runs may go back sooner than the delay (a cost in page faults,
/// never in data).
#[inline]
pub fn stamp() -> u32 {
    if TICKING.load(Ordering::Relaxed) {
        STAMP.load(Ordering::Relaxed)
    } else {
        now()
    }
}

/// Milliseconds from stamp `then` to stamp `now`; 0 if `then` is later than `now` (a stamp
/// taken ahead by [`stamp`]). Stamps wrap every 2^24 ms: ages of up to half that compare right.
#[inline]
pub fn age(now: u32, then: u32) -> u32 {
    let d = now.wrapping_sub(then) & STAMP_MASK;
    if d >= 1 << (STAMP_BITS - 1) {
        0
    } else {
        d
    }
}

/// The purger's period for `delay` ms: a quarter of it, at least 5 ms.
fn tick_ms(delay: u32) -> u32 {
    (delay / 4).max(5)
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
    TICKING.store(false, Ordering::Relaxed);
    RUNNING.store(false, Ordering::Relaxed);
}

extern "C" fn purger<H: super::Hooks>(_: *mut libc::c_void) -> *mut libc::c_void {
    SignalsBlocked::forever();
    // The run cache is drained every other tick (half the delay, as it was before the tick
    // was shortened to keep the stamps close).
    let mut drain = false;
    loop {
        let delay = delay_ms();
        let tick = tick_ms(delay);
        // Two ticks ahead: the next store comes one tick later, plus the time this pass takes.
        STAMP.store((now() + 2 * tick) & STAMP_MASK, Ordering::Relaxed);
        TICKING.store(true, Ordering::Relaxed);
        thread::sleep_us(u64::from(tick) * 1000);
        drain = !drain;
        if drain {
            super::drain_run_cache::<H>(false);
        }
        PAGES.lock().purge_expired(now(), delay);
    }
}
