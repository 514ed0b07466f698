//! Migration and fault workloads shared by `benches/migrate.rs` (Criterion) and
//! `benches/examples/fault_report.rs` (the ratio table). The fault backend is fixed per process
//! (`TIERALLOC_FAULT`); callers that compare backends run one process per backend.
//! The includer installs `TierAlloc` as its global allocator and includes `raw_uffd.rs` as
//! `raw_uffd` next to this file's module.

#![allow(dead_code)] // each includer uses a different subset

use std::hint::black_box;
use std::time::{Duration, Instant};
use tieralloc::Tier;

pub use super::raw_uffd::Access;

pub const PAGE: usize = 4096;

/// A fresh private read-write page in a kernel mapping of its own: a neighbouring anonymous
/// mapping with the same flags would merge with it, and each mprotect would then split and
/// re-merge kernel mappings, a cost the bare mechanism does not have. A flag no neighbour has
/// keeps it apart.
fn private_page() -> usize {
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; checked below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        libc::madvise(p, PAGE, libc::MADV_DONTDUMP);
        (p as *mut u8).write(1);
        p as usize
    }
}

/// The bare mechanism floor, measured on the spot: a write to a `PROT_NONE` private page, a
/// SIGSEGV whose handler does `mprotect(RW)`, and the return (ns per fault). Installs its own
/// handler for the duration and restores the previous one; call it before any migration.
pub fn floor_sigsegv_mprotect(iters: usize) -> f64 {
    let p = private_page();
    let total = super::raw_uffd::with_handler(libc::SIGSEGV, reopen_page, || {
        let mut total = Duration::ZERO;
        for i in 0..iters {
            // SAFETY: `p` is our private page; the handler opens it again.
            unsafe {
                libc::mprotect(p as *mut libc::c_void, PAGE, libc::PROT_NONE);
                let t = Instant::now();
                std::ptr::write_volatile((p as *mut u8).add(i % 64), i as u8);
                total += t.elapsed();
            }
        }
        total
    });
    // SAFETY: the page this function mapped.
    unsafe { libc::munmap(p as *mut libc::c_void, PAGE) };
    total.as_nanos() as f64 / iters as f64
}

/// A buffer of `pages` pages, every page written.
pub fn filled_pages(pages: usize) -> Vec<u8> {
    let mut v = vec![0u8; pages * PAGE];
    for (i, page) in v.chunks_mut(PAGE).enumerate() {
        page[0] = i as u8;
        page[PAGE - 1] = 1;
    }
    v
}

/// The default policy with the density prefetcher off: an isolated fault brings back only its
/// own page's run, so the fault-back figure measures one fault, not a 2 MiB bulk return.
struct IsolatedFaults;

impl tieralloc::policy::Policy for IsolatedFaults {
    fn name(&self) -> &str {
        "isolated-faults"
    }
    fn fault_around(&self) -> tieralloc::policy::FaultAround {
        tieralloc::policy::FaultAround {
            density: false,
            ..Default::default()
        }
    }
}

/// Fault-back cost of one isolated 4 KiB page (ns per fault): every other page of a buffer is
/// moved to device 0 on its own, so fault-around finds no neighbour to bring along; then one
/// byte of each device page is read or written. Runs under a policy without the density
/// prefetcher and puts the default (`Adaptive`) policy back afterwards.
pub fn fault_back_per_page(buf: &mut [u8], access: Access) -> f64 {
    tieralloc::set_policy(IsolatedFaults);
    let pages = buf.len() / PAGE;
    let base = buf.as_ptr() as usize;
    for p in (0..pages).step_by(2) {
        tieralloc::migrate((base + p * PAGE) as *const u8, PAGE, Tier::Device(0)).unwrap();
    }
    let faults = tieralloc::stats().cpu_faults;
    let t = Instant::now();
    for p in (0..pages).step_by(2) {
        // SAFETY: inside the buffer.
        unsafe { access.touch(buf.as_mut_ptr().add(p * PAGE + 8)) };
    }
    let ns = t.elapsed().as_nanos() as f64;
    let n = tieralloc::stats().cpu_faults - faults;
    tieralloc::set_policy(tieralloc::policy::Adaptive::default());
    assert_eq!(n as usize, pages.div_ceil(2), "one fault per isolated page");
    ns / n as f64
}

/// How the touches of [`fault_back_timed`] follow each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// 2 ms apart: every fault finds the handlers asleep (their polling window is 50 µs at
    /// most).
    Isolated,
    /// In a seeded random order, with 1-10 µs of work between touches: a burst.
    Burst,
}

/// Fault-back cost of one 4 KiB page (ns per fault), each touch timed on its own: every other
/// page of `buf` is moved to device 0 on its own (no neighbour to bring along), then one byte
/// of each is read or written, spaced as `spacing` says. Under a policy without the density
/// prefetcher, which is put back afterwards.
pub fn fault_back_timed(buf: &mut [u8], access: Access, spacing: Spacing) -> f64 {
    tieralloc::set_policy(IsolatedFaults);
    let pages = buf.len() / PAGE;
    let base = buf.as_ptr() as usize;
    let mut order: Vec<usize> = (0..pages).step_by(2).collect();
    for p in &order {
        tieralloc::migrate((base + p * PAGE) as *const u8, PAGE, Tier::Device(0)).unwrap();
    }
    let mut rng = Rng::new(7);
    if spacing == Spacing::Burst {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    let faults = tieralloc::stats().cpu_faults;
    let mut total = Duration::ZERO;
    for p in order {
        match spacing {
            Spacing::Isolated => std::thread::sleep(Duration::from_millis(2)),
            Spacing::Burst => {
                let until =
                    Instant::now() + Duration::from_nanos(1000 + 1000 * rng.below(10) as u64);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        }
        let t = Instant::now();
        // SAFETY: inside the buffer.
        unsafe { access.touch(buf.as_mut_ptr().add(p * PAGE + 8)) };
        total += t.elapsed();
    }
    let n = tieralloc::stats().cpu_faults - faults;
    tieralloc::set_policy(tieralloc::policy::Adaptive::default());
    assert_eq!(n as usize, pages.div_ceil(2), "one fault per isolated page");
    total.as_nanos() as f64 / n as f64
}

/// Sums a device-resident buffer from the CPU, sequentially (bytes per second). Every page
/// faults back, with fault-around.
pub fn sequential_read(buf: &[u64]) -> f64 {
    let bytes = std::mem::size_of_val(buf);
    tieralloc::migrate(buf.as_ptr().cast(), bytes, Tier::Device(0)).unwrap();
    let t = Instant::now();
    let s: u64 = buf.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    let secs = t.elapsed().as_secs_f64();
    black_box(s);
    bytes as f64 / secs
}

/// Explicit bulk migration of a populated buffer to device 0 and back (bytes per second each).
pub fn bulk_migrate(buf: &[u8]) -> (f64, f64) {
    let (p, n) = (buf.as_ptr(), buf.len());
    let t = Instant::now();
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let to_dev = t.elapsed().as_secs_f64();
    let t = Instant::now();
    tieralloc::migrate(p, n, Tier::Host).unwrap();
    let to_host = t.elapsed().as_secs_f64();
    (n as f64 / to_dev, n as f64 / to_host)
}

/// memcpy bandwidth between two populated buffers of equal size (bytes per second).
pub fn memcpy_bandwidth(src: &[u8], dst: &mut [u8]) -> f64 {
    dst.copy_from_slice(src); // warm
    let t = Instant::now();
    dst.copy_from_slice(black_box(src));
    let secs = t.elapsed().as_secs_f64();
    black_box(&dst);
    src.len() as f64 / secs
}

/// A small seeded generator (xorshift64*): the benchmarks' random orders, the same in every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Pages per block in the thread-scaling workload (64 KiB: what an isolated fault brings back).
pub const BLOCK_PAGES: usize = 16;

/// Runs `work(t)` on `threads` threads started together; wall time of the slowest in seconds.
pub fn on_threads(threads: usize, work: impl Fn(usize) + Sync) -> f64 {
    let start = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (start, work) = (&start, &work);
            s.spawn(move || {
                start.wait();
                work(t);
            });
        }
        start.wait();
        let t0 = Instant::now();
        // The scope joins every thread before it returns.
        t0
    })
    .elapsed()
    .as_secs_f64()
}

/// Fault throughput of `threads` threads (faults per second): `buf` moves to device 0, then
/// each thread touches one random page in each of its own 64 KiB blocks (blocks dealt round
/// robin, visited in a seeded random order) under a policy without the density prefetcher,
/// so nearly every touch is a fault that brings 64 KiB back. Counts the faults that happened.
pub fn fault_throughput(buf: &mut [u8], threads: usize, access: Access) -> f64 {
    let (faults, secs) = timed_faults(buf, threads, access);
    faults as f64 / secs
}

/// [`fault_throughput`]'s run: the faults it took and its wall time in seconds.
pub fn timed_faults(buf: &mut [u8], threads: usize, access: Access) -> (u64, f64) {
    tieralloc::set_policy(IsolatedFaults);
    tieralloc::migrate(buf.as_ptr(), buf.len(), Tier::Device(0)).unwrap();
    let blocks = buf.len() / (BLOCK_PAGES * PAGE);
    let base = buf.as_mut_ptr() as usize;
    let faults = tieralloc::stats().cpu_faults;
    let secs = on_threads(threads, |t| {
        let mine: Vec<usize> = (t..blocks).step_by(threads).collect();
        let mut rng = Rng::new(t as u64 + 1);
        let mut order = mine.clone();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for b in order {
            let page = b * BLOCK_PAGES + rng.below(BLOCK_PAGES);
            // SAFETY: inside `buf`, which outlives the threads.
            unsafe { access.touch((base + page * PAGE + 8) as *mut u8) };
        }
    });
    let n = tieralloc::stats().cpu_faults - faults;
    tieralloc::set_policy(tieralloc::policy::Adaptive::default());
    // Nearly one fault per block: a fault brings back the 16 pages from its own (its block's
    // start to 16 pages on), so a touch low in the next block may find its page home already.
    assert!(n as usize > blocks / 2, "{n} faults for {blocks} blocks");
    (n, secs)
}

/// The signal backend's bare mechanism with `threads` threads (faults per second): each thread
/// has a private page of its own mapping, makes it `PROT_NONE` and writes it, and the SIGSEGV
/// handler makes it writable again, `iters` times. Call before any migration.
pub fn floor_sigsegv_mprotect_threads(threads: usize, iters: usize) -> f64 {
    let pages: Vec<usize> = (0..threads).map(|_| private_page()).collect();
    let secs = super::raw_uffd::with_handler(libc::SIGSEGV, reopen_page, || {
        on_threads(threads, |t| {
            let p = pages[t];
            for i in 0..iters {
                // SAFETY: `p` is this thread's private page; the handler opens it again.
                unsafe {
                    libc::mprotect(p as *mut libc::c_void, PAGE, libc::PROT_NONE);
                    std::ptr::write_volatile((p as *mut u8).add(i % 64), i as u8);
                }
            }
        })
    });
    for p in pages {
        // SAFETY: pages this function mapped.
        unsafe { libc::munmap(p as *mut libc::c_void, PAGE) };
    }
    (threads * iters) as f64 / secs
}

/// Opens the faulting page again (the floors' SIGSEGV handler).
extern "C" fn reopen_page(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; the page is one a floor mapped.
    unsafe {
        let p = (*info).si_addr() as usize & !(PAGE - 1);
        libc::mprotect(
            p as *mut libc::c_void,
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
        );
    }
}
