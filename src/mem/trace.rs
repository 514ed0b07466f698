//! The event trace recorder (the public docs are on `tieralloc::trace`).
//!
//! How it works: recording happens on the fault path, so it must not allocate or lock. Events
//! go into a ring of 65 536 fixed slots mapped when the trace starts; a writer claims a slot
//! with a CAS on the head (or drops the event, counted in a `#` comment line, when the ring is
//! full), fills it with atomics and `clock_gettime` only (async-signal-safe), and publishes it
//! with its sequence number. A flusher thread drains the ring into the file every 20 ms, and an
//! exit handler drains the rest. Only the process that started the trace writes the file: a
//! `fork` child's events are not flushed.

use crate::base::tier::Tier;
use crate::config;
use crate::pal::sys;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::io::Write;
use std::sync::Mutex;

/// Why pages changed residency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cause {
    /// An explicit `migrate` call.
    Migrate = 0,
    /// A `prefetch`.
    Prefetch = 1,
    /// A device fault: a kernel needed the pages on its device.
    Kernel = 2,
    /// Eviction from a full device.
    Evict = 3,
    /// A CPU fault brought the pages back.
    Fault = 4,
    /// Device-resident memory was freed.
    Free = 5,
    /// A device-tier allocation was created on its device.
    Place = 6,
    /// `PreferredLocation` advice (or access-counter auto-migration) moved them.
    Advice = 7,
}

const CAUSES: [&str; 8] = [
    "migrate", "prefetch", "kernel", "evict", "fault", "free", "place", "advice",
];

/// The `from`/`to` of an event: the host, a device, or nothing (fresh or freed memory).
const NOWHERE: u8 = 0xff;
const HOST: u8 = 0xfe;

fn code(t: Option<Tier>) -> u8 {
    match t {
        None => NOWHERE,
        Some(Tier::Host) => HOST,
        Some(Tier::Device(d)) => d as u8,
    }
}

/// Slots in the ring (32 bytes each: 2 MiB).
const CAP: usize = 1 << 16;

/// One event; every field is written before `seq` publishes it.
struct Slot {
    /// `index + 1` once the event with that index is complete.
    seq: AtomicU64,
    /// Nanoseconds since the trace started.
    time: AtomicU64,
    /// First address.
    addr: AtomicU64,
    /// Bytes (bits 0..40), from (40..48), to (48..56), cause (56..64).
    rest: AtomicU64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static RING: AtomicUsize = AtomicUsize::new(0);
/// Next index to claim, and next index to flush.
static HEAD: AtomicU64 = AtomicU64::new(0);
static TAIL: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static START_NS: AtomicU64 = AtomicU64::new(0);
static OWNER: AtomicI32 = AtomicI32::new(0);
static FILE: Mutex<Option<std::io::BufWriter<std::fs::File>>> = Mutex::new(None);

thread_local! {
    /// The cause of the migrations this thread makes now (see [`with_cause`]).
    static CAUSE: Cell<Cause> = const { Cell::new(Cause::Migrate) };
}

use crate::pal::process;
use crate::pal::thread::now_ns;

/// Runs `f` with migrations made by this thread attributed to `cause`.
pub(crate) fn with_cause<R>(cause: Cause, f: impl FnOnce() -> R) -> R {
    let prev = CAUSE.with(|c| c.replace(cause));
    let r = f();
    CAUSE.with(|c| c.set(prev));
    r
}

/// The cause this thread's migrations are attributed to.
pub(crate) fn current_cause() -> Cause {
    CAUSE.with(|c| c.get())
}

/// Starts the trace if `TIERALLOC_TRACE` names a file (once; called when the devices come up).
/// A file that cannot be created is reported on stderr and the trace stays off.
pub(crate) fn start_from_env() {
    let Some(path) = config::trace_path() else {
        return;
    };
    if RING.load(Ordering::Acquire) != 0 {
        return;
    }
    let path = std::path::PathBuf::from(String::from_utf8_lossy(path).trim());
    let file = match std::fs::File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            let why = format!("cannot create the trace file ({e}); tracing is off");
            config::warn_bad("TIERALLOC_TRACE", path.as_os_str().as_encoded_bytes(), &why);
            return;
        }
    };
    let ring = sys::map_noreserve(CAP * core::mem::size_of::<Slot>());
    if ring.is_null() {
        return;
    }
    let mut w = std::io::BufWriter::new(file);
    let _ = writeln!(w, "time_us,addr,bytes,from,to,cause");
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    START_NS.store(now_ns(), Ordering::Relaxed);
    OWNER.store(process::pid(), Ordering::Relaxed);
    RING.store(ring as usize, Ordering::Release);
    ENABLED.store(true, Ordering::Release);
    extern "C" fn at_exit() {
        flush();
    }
    process::at_exit(at_exit);
    let _ = std::thread::Builder::new()
        .name("tieralloc-trace".into())
        .spawn(|| {
            crate::pal::signal::SignalsBlocked::forever();
            loop {
                std::thread::sleep(std::time::Duration::from_millis(20));
                flush();
            }
        });
}

fn slot(i: u64) -> &'static Slot {
    // SAFETY: the ring holds CAP slots (start_from_env) and is never unmapped; atomics of zero
    // are valid slots.
    unsafe { &*(RING.load(Ordering::Acquire) as *const Slot).add(i as usize % CAP) }
}

/// Records that pages `[page, page+n)` went `from` → `to` because of `cause` (`None`: fresh or
/// freed memory). Async-signal-safe; a no-op unless tracing.
#[inline]
pub(crate) fn record(page: usize, n: usize, from: Option<Tier>, to: Option<Tier>, cause: Cause) {
    if ENABLED.load(Ordering::Relaxed) {
        record_slow(page, n, from, to, cause);
    }
}

#[cold]
fn record_slow(page: usize, n: usize, from: Option<Tier>, to: Option<Tier>, cause: Cause) {
    let mut h = HEAD.load(Ordering::Relaxed);
    loop {
        if h - TAIL.load(Ordering::Acquire) >= CAP as u64 {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match HEAD.compare_exchange_weak(h, h + 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => h = now,
        }
    }
    let s = slot(h);
    let bytes = (n * sys::PAGE_SIZE) as u64 & ((1 << 40) - 1);
    s.time.store(
        now_ns().saturating_sub(START_NS.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    s.addr
        .store(crate::mem::arena::addr_of(page) as u64, Ordering::Relaxed);
    s.rest.store(
        bytes | (code(from) as u64) << 40 | (code(to) as u64) << 48 | (cause as u64) << 56,
        Ordering::Relaxed,
    );
    s.seq.store(h + 1, Ordering::Release);
}

fn tier_name(c: u8, out: &mut String) {
    use core::fmt::Write as _;
    match c {
        NOWHERE => out.push_str("none"),
        HOST => out.push_str("host"),
        d => {
            let _ = write!(out, "dev{d}");
        }
    }
}

/// Writes the events recorded so far to the trace file. A no-op when not tracing (or in a
/// `fork` child of the tracing process). The trace is also flushed every 20 ms and at exit.
///
/// ```
/// tieralloc::trace::flush(); // nothing to do unless TIERALLOC_TRACE is set
/// ```
pub fn flush() {
    if !ENABLED.load(Ordering::Acquire) || OWNER.load(Ordering::Relaxed) != process::pid() {
        return;
    }
    let mut file = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(w) = file.as_mut() else { return };
    let mut line = String::with_capacity(96);
    let head = HEAD.load(Ordering::Acquire);
    let mut t = TAIL.load(Ordering::Acquire);
    while t < head {
        let s = slot(t);
        if s.seq.load(Ordering::Acquire) != t + 1 {
            break; // a writer is still filling it: next time
        }
        let (time, addr, rest) = (
            s.time.load(Ordering::Relaxed),
            s.addr.load(Ordering::Relaxed),
            s.rest.load(Ordering::Relaxed),
        );
        line.clear();
        {
            use core::fmt::Write as _;
            let _ = write!(
                line,
                "{}.{:03},{addr:#x},{},",
                time / 1000,
                time % 1000,
                rest & ((1 << 40) - 1)
            );
        }
        tier_name((rest >> 40) as u8, &mut line);
        line.push(',');
        tier_name((rest >> 48) as u8, &mut line);
        line.push(',');
        line.push_str(CAUSES.get((rest >> 56) as usize).copied().unwrap_or("?"));
        line.push('\n');
        let _ = w.write_all(line.as_bytes());
        t += 1;
        TAIL.store(t, Ordering::Release);
    }
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(w, "# {dropped} events dropped (ring full)");
    }
    let _ = w.flush();
}

/// True when `TIERALLOC_TRACE` is recording.
///
/// ```
/// if std::env::var_os("TIERALLOC_TRACE").is_none() {
///     assert!(!tieralloc::trace::is_enabled());
/// }
/// ```
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}
