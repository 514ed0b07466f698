//! Stress: threads doing random allocations, writes, migrations to random tiers, CPU touches,
//! reallocs, frees, device kernels, prefetches and read-mostly duplicates, all at once, with a
//! shadow model that checks every byte of an object each time it is read.
//!
//! Objects are small and large, placed by the global allocator, by device tier scopes and by
//! `OnDevice`; small ones share pages with other threads' objects, so a migration or a kernel
//! on one object races the CPU writes to its neighbours. Objects change hands between threads
//! (cross-thread frees). At the end every object is verified and freed, and the devices must
//! hold no more than the empty spans the device tiers keep.
//!
//! `STRESS_SECS` sets the time per backend (default 3); `STRESS_THREADS` the worker threads
//! (default 4). `each_backend` runs the body in a child per fault backend, so one run covers
//! `uffd`, `uffd-fast` and `signal`. CI runs it with `STRESS_SECS=60`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tieralloc::{Advice, OnDevice, Tier, TierAlloc};

mod common;
use common::{byte, fill, first_bad, Rng};

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

const DEVICES: u16 = 2;

/// Sizes from 1 B to 2 MiB, most of them small.
fn size(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0..=5 => 1 + rng.below(512) as usize,
        6..=7 => 1 + rng.below(16 << 10) as usize,
        8 => 1 + rng.below(256 << 10) as usize,
        _ => 1 + rng.below(2 << 20) as usize,
    }
}

/// Where an object's buffer comes from.
enum Buf {
    /// The global allocator (possibly inside a device tier scope).
    Global(Vec<u8>),
    /// `OnDevice<0>`.
    Typed(allocator_api2::vec::Vec<u8, OnDevice<0>>),
}

impl Buf {
    fn bytes(&self) -> &[u8] {
        match self {
            Buf::Global(v) => v,
            Buf::Typed(v) => v,
        }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Buf::Global(v) => v,
            Buf::Typed(v) => v,
        }
    }
}

/// One live object and the seed its content was last written with.
struct Obj {
    buf: Buf,
    seed: u64,
}

impl Obj {
    fn check(&self, what: &str) {
        if let Some(i) = first_bad(self.buf.bytes(), self.seed) {
            let b = self.buf.bytes();
            panic!(
                "{what}: byte {i} of {} at {:#x} is {:#04x}, the model says {:#04x} (seed {:#x}, backend {})",
                b.len(),
                b.as_ptr() as usize + i,
                b[i],
                byte(self.seed, i),
                self.seed,
                tieralloc::stats().fault_backend
            );
        }
    }
}

/// Operation counts, for the summary.
#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    allocs: AtomicU64,
    migrations: AtomicU64,
    kernels: AtomicU64,
    prefetches: AtomicU64,
    reallocs: AtomicU64,
    handoffs: AtomicU64,
    checked_bytes: AtomicU64,
}

fn new_obj(rng: &mut Rng) -> Obj {
    let size = size(rng);
    let seed = rng.next();
    let mut buf = match rng.below(6) {
        0 => tieralloc::with_tier(Tier::Device(rng.below(DEVICES as u64) as u16), || {
            Buf::Global(vec![0u8; size])
        }),
        1 => {
            let mut v = allocator_api2::vec::Vec::with_capacity_in(size, OnDevice::<0>);
            v.resize(size, 0);
            Buf::Typed(v)
        }
        _ => Buf::Global(vec![0u8; size]),
    };
    // Fresh memory reads as zero wherever it was placed.
    assert!(
        buf.bytes().iter().all(|&b| b == 0),
        "fresh memory is not zero"
    );
    fill(buf.bytes_mut(), seed);
    Obj { buf, seed }
}

fn worker(id: u64, deadline: Instant, pool: &Mutex<Vec<Obj>>, counts: &Counts, stop: &AtomicBool) {
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut objs: Vec<Obj> = Vec::new();
    let mut pending = Vec::new();
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        counts.ops.fetch_add(1, Ordering::Relaxed);
        let op = rng.below(100);
        if objs.len() < 8 || (op < 20 && objs.len() < 400) {
            objs.push(new_obj(&mut rng));
            counts.allocs.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let k = rng.below(objs.len() as u64) as usize;
        match op {
            // Free (after a last check).
            20..=29 => {
                let o = objs.swap_remove(k);
                o.check("before free");
            }
            // Read it all back on the CPU (faults device pages home).
            30..=44 => {
                objs[k].check("CPU read");
                counts
                    .checked_bytes
                    .fetch_add(objs[k].buf.bytes().len() as u64, Ordering::Relaxed);
            }
            // Rewrite on the CPU.
            45..=52 => {
                let o = &mut objs[k];
                o.seed = rng.next();
                fill(o.buf.bytes_mut(), o.seed);
            }
            // Migrate to a random tier.
            53..=64 => {
                let b = objs[k].buf.bytes();
                let to = rng.tier();
                match tieralloc::migrate(b.as_ptr(), b.len(), to) {
                    Ok(_) => {}
                    // A small device can be full of pinned kernel arguments right now.
                    Err(tieralloc::Error::DeviceFull { .. }) => {}
                    Err(e) => panic!("migrate to {to:?}: {e}"),
                }
                counts.migrations.fetch_add(1, Ordering::Relaxed);
            }
            // A kernel rewrites it on a device; the CPU then checks the result.
            65..=72 => {
                let seed = rng.next();
                let d = rng.below(DEVICES as u64) as u16;
                let o = &mut objs[k];
                let r = tieralloc::device(d)
                    .unwrap()
                    .run(o.buf.bytes_mut(), move |b| fill(b, seed));
                match r {
                    Ok(_) => o.seed = seed,
                    Err(tieralloc::Error::DeviceFull { .. }) => {}
                    Err(e) => panic!("kernel on device {d}: {e}"),
                }
                o.check("after a kernel");
                counts.kernels.fetch_add(1, Ordering::Relaxed);
            }
            // Prefetch (waited for later, or now).
            73..=78 => {
                let b = objs[k].buf.bytes();
                let p = tieralloc::prefetch(b.as_ptr(), b.len(), rng.tier()).unwrap();
                if rng.below(2) == 0 {
                    pending.push(p);
                } else {
                    let _ = p.wait();
                }
                counts.prefetches.fetch_add(1, Ordering::Relaxed);
            }
            // Read-mostly: a duplicate on a device, then reads, then a write drops it.
            79..=82 => {
                let b = objs[k].buf.bytes();
                let (p, n) = (b.as_ptr(), b.len());
                tieralloc::advise(p, n, Advice::ReadMostly).unwrap();
                let _ = tieralloc::migrate(p, n, Tier::Device(rng.below(DEVICES as u64) as u16));
                objs[k].check("read-mostly read");
                if rng.below(2) == 0 {
                    let o = &mut objs[k];
                    o.seed = rng.next();
                    fill(o.buf.bytes_mut(), o.seed);
                }
                let b = objs[k].buf.bytes();
                tieralloc::advise(b.as_ptr(), b.len(), Advice::Reset).unwrap();
            }
            // Realloc: the prefix survives, then the whole object is rewritten.
            83..=90 => {
                let o = &mut objs[k];
                let Buf::Global(v) = &mut o.buf else { continue };
                let old = v.len();
                let new = size(&mut rng);
                if new > old {
                    v.resize(new, 0);
                } else {
                    v.truncate(new);
                    v.shrink_to_fit();
                }
                let keep = old.min(new);
                if let Some(i) = first_bad(&v[..keep], o.seed) {
                    panic!("realloc {old} -> {new} lost byte {i}");
                }
                o.seed = rng.next();
                fill(v, o.seed);
                counts.reallocs.fetch_add(1, Ordering::Relaxed);
            }
            // Hand an object to another thread, or take one.
            _ => {
                let mut shared = pool.lock().unwrap();
                if rng.below(2) == 0 || shared.is_empty() {
                    shared.push(objs.swap_remove(k));
                } else {
                    let i = rng.below(shared.len() as u64) as usize;
                    let o = shared.swap_remove(i);
                    drop(shared);
                    o.check("after a hand-off");
                    objs.push(o);
                }
                counts.handoffs.fetch_add(1, Ordering::Relaxed);
            }
        }
        if pending.len() > 8 {
            for p in pending.drain(..) {
                let _ = p.wait();
            }
        }
    }
    for p in pending {
        let _ = p.wait();
    }
    for o in objs {
        o.check("at the end");
    }
}

fn secs(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The stress body for the backend this process uses.
fn run() {
    tieralloc::set_devices(&[("dev0", 64 << 20), ("dev1", 16 << 20)]).unwrap(); // dev1 fills up: eviction
    let duration = Duration::from_secs(secs("STRESS_SECS", 3));
    let threads = secs("STRESS_THREADS", 4);
    let deadline = Instant::now() + duration;
    let pool = Arc::new(Mutex::new(Vec::new()));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|id| {
            let (pool, counts, stop) = (pool.clone(), counts.clone(), stop.clone());
            std::thread::spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker(id, deadline, &pool, &counts, &stop)
                }));
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                r
            })
        })
        .collect();
    let mut failed = None;
    for h in handles {
        if let Err(p) = h.join().unwrap() {
            failed.get_or_insert(p);
        }
    }
    if let Some(p) = failed {
        std::panic::resume_unwind(p);
    }
    for o in pool.lock().unwrap().drain(..) {
        o.check("in the shared pool at the end");
    }
    tieralloc::trim();
    let s = tieralloc::stats();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "summary: stress {} s x {threads} threads on {}: {} ops ({} allocs, {} migrations, {} kernels, \
         {} prefetches, {} reallocs, {} hand-offs), {:.1} GiB verified; {} CPU faults, {} \
         evictions, {} placement fallbacks",
        duration.as_secs(),
        s.fault_backend,
        c(&counts.ops),
        c(&counts.allocs),
        c(&counts.migrations),
        c(&counts.kernels),
        c(&counts.prefetches),
        c(&counts.reallocs),
        c(&counts.handoffs),
        c(&counts.checked_bytes) as f64 / (1u64 << 30) as f64,
        s.cpu_faults,
        s.evictions,
        s.placement_fallbacks,
    );
    common::assert_invariants("after the stress");
    // Everything is freed: the devices hold at most the empty current spans that each device
    // tier keeps per size class (34 classes of 64 KiB).
    for d in tieralloc::devices().unwrap() {
        assert!(
            d.used <= 34 * (64 << 10),
            "device {} still holds {} bytes after every object was freed",
            d.id,
            d.used
        );
    }
    assert!(c(&counts.kernels) > 0 && c(&counts.migrations) > 0);
}

#[test]
fn stress() {
    if std::env::var_os("ALLOC_TEST_STRESS_CHILD").is_some() {
        run();
    }
}

#[test]
fn each_backend() {
    // Children run only `stress` (which does the work there); see common::each_backend.
    common::each_backend("ALLOC_TEST_STRESS_CHILD", "stress");
}
