//! Chaos migration: a background thread that, at a fixed interval, moves a random share of the
//! live heap to random devices, so that every run of a program exercises fault-back, system
//! calls on device-resident buffers included (`TIERALLOC_CHAOS=20ms` or `20ms,5%` under
//! `libtieralloc.so`; [`start`] from Rust).
//!
//! Each round walks the page map up to the heap's top and takes each chunk (at most
//! [`CHUNK_PAGES`] host pages of large runs, and of small-object spans once the C library's
//! own blocks are kept apart, in a row) with a probability of the share (see
//! `live_host_run`). A chunk that is
//! freed, reallocated or touched meanwhile is simply migrated as the protocol allows (the
//! migration fails cleanly on pages freed under it; those errors are ignored). Pages the
//! program touches again come back through faults, as with any migration.
//!
//! Chaos runs in the process that started it. A `fork` child has no chaos thread, and brings
//! every device-resident page home before the program's code runs in it (a child may close
//! tieralloc's descriptors before its `exec`; see `bring_home_in_fork_child`).
//!
//! It needs the transparent `uffd` backend: only there do system calls (`read(2)` into a
//! buffer, say) on device-resident memory work; under the other backends they fail with
//! `EFAULT`, which would change what an unmodified program does.

use crate::base::error::Error;
use crate::base::tier::Tier;
use crate::device;
use crate::fault::Backend;
use crate::heap::pages::TOP;
use crate::mem::arena;
use crate::mem::counters::COUNTERS;
use crate::mem::pagemap::{self, Use};
use crate::tiering::migrate;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The most pages one migration of chaos moves (a few spans' worth).
pub const CHUNK_PAGES: usize = 32;

static STARTED: AtomicBool = AtomicBool::new(false);
/// When the chaos thread started (`pal::thread::now_ns`), 0 before.
static STARTED_AT: AtomicU64 = AtomicU64::new(0);

/// How long chaos migration has been running in this process, in nanoseconds (0 if it never
/// started). The stats print it beside the bytes moved, so that a report can weigh what a
/// process moved by how long it ran.
///
/// ```
/// // Chaos was not started here.
/// assert_eq!(tieralloc::chaos::running_ns(), 0);
/// ```
pub fn running_ns() -> u64 {
    match STARTED_AT.load(Ordering::Acquire) {
        0 => 0,
        t => crate::pal::thread::now_ns().saturating_sub(t),
    }
}

/// Starts chaos migration if `TIERALLOC_CHAOS` asks for it. `Ok(true)` when it started,
/// `Ok(false)` when the variable is not set (or is bad: a line on stderr says so).
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// // Not set here: nothing starts.
/// assert!(!tieralloc::chaos::start_from_env().unwrap());
/// ```
///
/// # Errors
/// As [`start`].
pub fn start_from_env() -> Result<bool, Error> {
    match crate::config::chaos() {
        Some((ms, share)) => start(Duration::from_millis(ms.into()), share).map(|()| true),
        None => Ok(false),
    }
}

/// Starts the chaos thread: every `interval`, about `share_percent` percent of the live host
/// pages move to random devices. The first rounds come sooner, after 1 ms and then at doubling
/// delays up to the interval ([`first_delays`]), so that a process that lives less than one
/// interval still runs with some of its heap moved. Once per process; later calls do nothing.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// use std::time::Duration;
/// let v: Vec<u64> = (0..1 << 18).collect();
/// match tieralloc::chaos::start(Duration::from_millis(2), 50) {
///     Ok(()) => {
///         std::thread::sleep(Duration::from_millis(50));
///         // Whatever moved comes back when touched.
///         assert_eq!(v.iter().sum::<u64>(), (0..1u64 << 18).sum());
///         assert!(tieralloc::stats().chaos_bytes > 0);
///     }
///     // Without root, the transparent backend is not available.
///     Err(tieralloc::Error::ChaosNeedsUffd { .. }) => {}
///     Err(e) => panic!("{e}"),
/// }
/// ```
///
/// # Errors
/// [`Error::ChaosNeedsUffd`] when the fault backend is not the transparent `uffd` (system
/// calls on device memory would fail); the errors of starting the devices.
pub fn start(interval: Duration, share_percent: u32) -> Result<(), Error> {
    migrate::start_devices()?;
    let backend = migrate::start_backend()?;
    if backend != Backend::Uffd {
        return Err(Error::ChaosNeedsUffd {
            backend: backend.name(),
        });
    }
    if STARTED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let share = share_percent.clamp(1, 100);
    STARTED_AT.store(crate::pal::thread::now_ns().max(1), Ordering::Release);
    std::thread::Builder::new()
        .name("tieralloc-chaos".into())
        .spawn(move || {
            let mut rng = Rng::seeded();
            for wait in first_delays(interval).chain(core::iter::repeat(interval)) {
                std::thread::sleep(wait);
                round(&mut rng, share);
            }
        })
        .map_err(|e| Error::Sys {
            what: "starting the chaos thread",
            errno: e.raw_os_error().unwrap_or(0),
        })?;
    Ok(())
}

/// In a `fork` child of a process running chaos migration, once the fault service runs again:
/// touches one byte of every device-resident page of the heap, so that all of them come home
/// (by the usual fault-back) before the child's own code runs.
///
/// Why: an unmodified program's fork child may close every descriptor from 3 up before its
/// `exec` (Python's `subprocess` does when `preexec_fn` makes it fork), tieralloc's
/// userfaultfd among them. The kernel then forgets the child's registrations, and a page that
/// was on a device reads as zero: the argument vector the child was about to `exec` with, say.
/// (A fault-back that met the closed descriptor stopped the child: 2 runs of 8 of such a
/// Python script under 1 ms chaos.) Chaos has no thread in the child, so nothing moves the
/// pages out again. Without chaos nothing changes: a program that moves pages itself has its
/// fork children see them on the device, as before.
///
/// It passes over the heap until no page is left on a device. The pages a fault brings home
/// with the faulting one (its fault-around) stay locked by the fault service's thread until
/// they are home. The first version skipped locked pages and returned: in every failing
/// child of the preloaded `fork-closes-descriptors` program, 9 to 12 device pages were still
/// locked when it returned; the program closed its descriptors, and the fault service, still
/// at work, stopped the child (under 5 ms chaos: 11 runs in 40, 2026-12-02). No other lock
/// can be held here: the fork gate let no page lock into the child, and the fault service is
/// the child's only other thread.
pub(crate) fn bring_home_in_fork_child() {
    if running_ns() == 0 {
        return;
    }
    let top = TOP.load(Ordering::Acquire);
    // At most about a second: a read-ahead takes milliseconds.
    for _ in 0..1000 {
        let mut left = false;
        for p in 0..top {
            let e = pagemap::get(p);
            if e.device().is_some() {
                left = true;
                if !e.locked() {
                    // SAFETY: a page of the managed range, which stays mapped for the life of
                    // the process; the read faults the page home and its value is not used.
                    let _ = unsafe { core::ptr::read_volatile(arena::addr_of(p) as *const u8) };
                }
            }
        }
        if !left {
            return;
        }
        crate::pal::thread::sleep_us(1000);
    }
}

/// The waits before the first rounds: 1 ms, then doubling, while shorter than `interval`.
///
/// Why: with only the interval, most processes of a compiler driver or of `git` (each a few
/// to 20 ms long) ended before the first round and ran with nothing moved; over the
/// preload report's gcc and git runs, chaos moved 4% and 2% of the heap per second against
/// 34-63% for the longer programs (2026-12-02). A round costs a walk of the page map up to
/// the heap's top, small while the heap is.
///
/// ```
/// use std::time::Duration;
/// let ms = |n| Duration::from_millis(n);
/// let d: Vec<_> = tieralloc::chaos::first_delays(ms(20)).collect();
/// assert_eq!(d, [ms(1), ms(1), ms(2), ms(4), ms(8)]); // rounds at 1, 2, 4, 8 and 16 ms
/// assert_eq!(tieralloc::chaos::first_delays(ms(1)).count(), 0);
/// ```
pub fn first_delays(interval: Duration) -> impl Iterator<Item = Duration> {
    let ms = Duration::from_millis(1);
    let mut at = Duration::ZERO;
    core::iter::from_fn(move || {
        let next = if at.is_zero() { ms } else { at * 2 };
        if next >= interval {
            return None;
        }
        let wait = next - at;
        at = next;
        Some(wait)
    })
}

/// One round: each chunk of live host pages moves with probability `share` percent.
fn round(rng: &mut Rng, share: u32) {
    let devices = device::count();
    if devices == 0 {
        return;
    }
    let small = crate::mem::scope::keeps_system_home();
    let top = TOP.load(Ordering::Acquire);
    let mut p = 0;
    while p < top {
        let n = live_host_run(p, top.min(p + CHUNK_PAGES), small);
        if n == 0 {
            p += 1;
            continue;
        }
        if rng.below(100) < share as u64 {
            let d = rng.below(devices as u64) as u16;
            let addr = arena::addr_of(p) as *const u8;
            if let Ok(m) = migrate::migrate(addr, n * crate::pal::sys::PAGE_SIZE, Tier::Device(d)) {
                COUNTERS
                    .chaos_pages
                    .fetch_add(m.moved as u64, Ordering::Relaxed);
            }
        }
        p += n;
    }
}

/// How many pages from `p` (before `end`) are on the host, unlocked, and belong to large runs
/// or (with `small`) to spans of the host tier.
///
/// Small-object spans hold glibc's own per-thread blocks under `libtieralloc.so` too (the TLS
/// vector of every thread it creates is `malloc`ed). Moved to a device, one is touched where
/// nothing may wait for a fault-back: a `fork` child re-creating its fault handlers reads the
/// TLS vectors of cached thread stacks before any handler exists, and hung there (git under
/// chaos, about 1 run in 10). So spans move only once the C library's and the loader's own
/// blocks live apart, in spans no migration touches
/// (`tieralloc::malloc::keep_system_allocations_home`, which `libtieralloc.so` turns on with
/// chaos); else large runs only (blocks over 8 KiB).
fn live_host_run(p: usize, end: usize, small: bool) -> usize {
    (p..end)
        .take_while(|&q| {
            let e = pagemap::get(q);
            let movable = match e.use_() {
                Use::Large => true,
                Use::Span => small && span_is_host_tier(q),
                Use::Free => false,
            };
            movable && e.device().is_none() && !e.locked()
        })
        .count()
}

/// Whether page `q`, part of a span, belongs to a span of the host tier (not a device tier's,
/// and not tieralloc's internal one).
fn span_is_host_tier(q: usize) -> bool {
    crate::heap::span::tier_of(arena::addr_of(q) as *mut u8) == 0
}

/// xorshift64*: a few random numbers per round, no allocation, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n
    }
}
