//! Allocator workloads shared by `benches/alloc.rs` (Criterion) and `benches/examples/alloc_report.rs`
//! (the ratio table). Every workload is generic over `GlobalAlloc` and calls the allocator it is
//! given directly, so one process measures glibc, mimalloc, jemalloc and tieralloc side by side.

#![allow(dead_code)] // each includer uses a different subset

use allocator_api2::alloc::{AllocError, Allocator};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

pub static SYSTEM: System = System;
pub static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
pub static TIERALLOC: Outlined = Outlined(tieralloc::TierAlloc::new());

/// tieralloc reached through a call that is never inlined. A program reaches its
/// `#[global_allocator]` through the `__rust_alloc` shim, a call, and the peers here are C
/// calls (`malloc`, `mi_malloc_aligned`, `mallocx`); `TierAlloc` called directly from generic
/// workload code would have its fast path inlined into the loop and be flattered by it.
pub struct Outlined(pub tieralloc::TierAlloc);

// SAFETY: forwards every call to `TierAlloc` unchanged.
unsafe impl GlobalAlloc for Outlined {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc(layout) }
    }
    #[inline(never)]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.0.dealloc(p, layout) }
    }
    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc_zeroed(layout) }
    }
    #[inline(never)]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.0.realloc(p, layout, new_size) }
    }
}

/// Names used in tables, in column order.
pub const NAMES: [&str; 4] = ["glibc", "mimalloc", "jemalloc", "tieralloc"];

/// The workloads that `alloc_report` and the Criterion benches also run with tieralloc inside a
/// scope of device 0, beside the host.
const TIER_VARIANTS: [&str; 8] = [
    "pairs 64 B",
    "pairs 1 KiB",
    "pairs 64 KiB",
    "batch 100000 x 64 B",
    "batch 98304 x 1 KiB",
    "batch 1536 x 64 KiB",
    "churn, 10k live, 16 B-64 KiB",
    "4 buffers 16 B -> 16 MiB, in turn",
];

/// The workloads of [`TIER_VARIANTS`]; panics if a name there no longer names a workload.
pub fn tier_workloads() -> Vec<Workload> {
    let w: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| TIER_VARIANTS.contains(&w.name))
        .collect();
    assert_eq!(
        w.len(),
        TIER_VARIANTS.len(),
        "a tier variant names no workload"
    );
    w
}

/// Runs workload `kind` with tieralloc inside a scope of device 0: fresh pages are created on
/// the device and small objects come from the thread's second heap. The first call starts the
/// devices, which turns on the page-claim protocol for the rest of the process: run it after
/// every comparison with the other allocators.
pub fn run_on_device(kind: Kind) {
    tieralloc::with_tier(tieralloc::Tier::Device(0), || run(&TIERALLOC, kind))
}

/// Runs `$body` with `$a` bound to the allocator named by index `$i` (0..4, as in [`NAMES`]).
#[macro_export]
macro_rules! with_alloc {
    ($i:expr, $a:ident => $body:expr) => {
        match $i {
            0 => {
                let $a = &SYSTEM;
                $body
            }
            1 => {
                let $a = &MIMALLOC;
                $body
            }
            2 => {
                let $a = &JEMALLOC;
                $body
            }
            _ => {
                let $a = &TIERALLOC;
                $body
            }
        }
    };
}

/// One workload: what it does, how many operations one run performs, and what an op is.
pub struct Workload {
    pub name: &'static str,
    pub op: &'static str,
    pub ops: u64,
    pub kind: Kind,
}

#[derive(Clone, Copy)]
pub enum Kind {
    /// `(size, n)`: `n` allocate-then-free pairs.
    Pairs(usize, u64),
    VecGrowth(usize),
    Boxes(usize),
    ProducerConsumer(usize),
    Churn(usize),
    /// `(size, n)`: allocate `n` blocks of `size` bytes (one byte written per page), free them
    /// in a scrambled order, [`BATCH_REPEATS`] times.
    Batch(usize, usize),
    /// Random replacements in a live set of mixed sizes ([`mixed_churn`]).
    MixedChurn(usize),
    /// `(max, buffers)`: `buffers` blocks grow by doubling from 16 B to `max` bytes, in turn
    /// (each one's growth is then blocked by the others), one byte written per new page.
    ReallocGrowth(usize, usize),
}

/// Repetitions of a batch in one run: a program that keeps a working set builds it again
/// and again, so the later rounds show whether freed memory is reused warm.
pub const BATCH_REPEATS: usize = 3;

pub const PAIRS: u64 = 10_000;
pub const BOXES: usize = 1_000_000;
pub const VEC_LEN: usize = 1_000_000;
pub const PC_OBJECTS: usize = 200_000;
pub const CHURN_ROUNDS: usize = 200_000;
pub const MIXED_CHURN: usize = 200_000;

fn batch(name: &'static str, size: usize, n: usize) -> Workload {
    Workload {
        name,
        op: "alloc+free",
        ops: (n * BATCH_REPEATS) as u64,
        kind: Kind::Batch(size, n),
    }
}

/// The report's size grid: each size as alloc+free pairs and as a batch.
pub const SIZES: [(usize, &str); 11] = [
    (16, "16 B"),
    (64, "64 B"),
    (256, "256 B"),
    (1 << 10, "1 KiB"),
    (4 << 10, "4 KiB"),
    (8 << 10, "8 KiB"),
    (16 << 10, "16 KiB"),
    (64 << 10, "64 KiB"),
    (256 << 10, "256 KiB"),
    (1 << 20, "1 MiB"),
    (4 << 20, "4 MiB"),
];

/// Blocks in a batch of `size`-byte blocks: about 96 MiB, between 16 and 100k blocks.
pub fn batch_len(size: usize) -> usize {
    ((96 << 20) / size).clamp(16, 100_000)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub fn workloads() -> Vec<Workload> {
    let mut w = Vec::new();
    for (size, name) in SIZES {
        let ops = if size >= 1 << 20 { 1000 } else { PAIRS };
        w.push(Workload {
            name: leak(format!("pairs {name}")),
            op: "alloc+free",
            ops,
            kind: Kind::Pairs(size, ops),
        });
    }
    for (size, name) in SIZES {
        let n = batch_len(size);
        w.push(batch(leak(format!("batch {n} x {name}")), size, n));
    }
    w.extend([
        batch("batch 100k x 1 KiB (issue 15)", 1 << 10, 100_000),
        batch("batch 20k x 8 KiB (issue 15)", 8 << 10, 20_000),
        batch("batch 4k x 100 KiB (issue 15)", 100 << 10, 4_000),
        Workload {
            name: "churn, 10k live, 16 B-64 KiB",
            op: "replace",
            ops: MIXED_CHURN as u64,
            kind: Kind::MixedChurn(MIXED_CHURN),
        },
        Workload {
            name: "realloc 16 B -> 64 MiB, doubling",
            op: "realloc",
            ops: 22,
            kind: Kind::ReallocGrowth(64 << 20, 1),
        },
        Workload {
            name: "4 buffers 16 B -> 16 MiB, in turn",
            op: "realloc",
            ops: 4 * 20,
            kind: Kind::ReallocGrowth(16 << 20, 4),
        },
        Workload {
            name: "Vec<u64> growth to 1M",
            op: "push",
            ops: VEC_LEN as u64,
            kind: Kind::VecGrowth(VEC_LEN),
        },
        Workload {
            name: "1M Box<[u8; 32]> random free",
            op: "alloc+free",
            ops: BOXES as u64,
            kind: Kind::Boxes(BOXES),
        },
        Workload {
            name: "2-thread producer/consumer",
            op: "object",
            ops: PC_OBJECTS as u64,
            kind: Kind::ProducerConsumer(PC_OBJECTS),
        },
        Workload {
            name: "larson-like churn, 2 threads",
            op: "replace",
            ops: 2 * CHURN_ROUNDS as u64,
            kind: Kind::Churn(CHURN_ROUNDS),
        },
    ]);
    w
}

/// Runs workload `kind` once with allocator `a`.
pub fn run<A: GlobalAlloc + Sync>(a: &'static A, kind: Kind) {
    match kind {
        Kind::Pairs(size, n) => pairs(a, size, n),
        Kind::MixedChurn(n) => mixed_churn(a, n),
        Kind::VecGrowth(n) => vec_growth(a, n),
        Kind::Boxes(n) => boxes(a, n),
        Kind::ProducerConsumer(n) => producer_consumer(a, n),
        Kind::Churn(n) => churn(a, n),
        Kind::Batch(size, n) => {
            for _ in 0..BATCH_REPEATS {
                batch_round(a, size, n)
            }
        }
        Kind::ReallocGrowth(max, buffers) => realloc_growth(a, max, buffers),
    }
}

/// `buffers` blocks of 16 B grow in turn by doubling to `max` bytes with `realloc`; one byte is
/// written in every page each growth adds (a program filling its buffer writes them all), and
/// the first and last byte of the old part is checked.
pub fn realloc_growth<A: GlobalAlloc>(a: &A, max: usize, buffers: usize) {
    const START: usize = 16;
    let mut bufs: Vec<(*mut u8, usize)> = (0..buffers)
        .map(|i| {
            let layout = Layout::from_size_align(START, 8).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(layout) };
            // SAFETY: a fresh 16-byte block.
            unsafe { p.write_bytes(i as u8, START) };
            (p, START)
        })
        .collect();
    while bufs[0].1 < max {
        for (i, (p, size)) in bufs.iter_mut().enumerate() {
            let old = Layout::from_size_align(*size, 8).unwrap();
            // SAFETY: `p` is live with `old`; the new size is non-zero.
            let q = unsafe { a.realloc(*p, old, 2 * *size) };
            // SAFETY: `q` holds `2 * size` bytes, the first `size` of them kept.
            unsafe {
                assert!(*q == i as u8 && *q.add(*size - 1) != 0xEE);
                for off in (*size..2 * *size).step_by(4096) {
                    q.add(off).write(i as u8);
                }
            }
            (*p, *size) = (q, 2 * *size);
        }
    }
    for (p, size) in bufs {
        // SAFETY: live with this layout.
        unsafe { a.dealloc(p, Layout::from_size_align(size, 8).unwrap()) };
    }
}

/// Allocates `n` blocks of `size` bytes, writes one byte per page of each, and frees them in a
/// fixed scrambled order.
pub fn batch_round<A: GlobalAlloc>(a: &A, size: usize, n: usize) {
    let perm = permutation_of(n);
    let layout = Layout::from_size_align(size, 8).unwrap();
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: non-zero size; every page of the fresh block is ours to write.
        unsafe {
            let p = a.alloc(layout);
            for off in (0..size).step_by(4096) {
                p.add(off).write(i as u8);
            }
            ptrs.push(p);
        }
    }
    for &i in perm {
        // SAFETY: each pointer is freed exactly once, with its layout.
        unsafe { a.dealloc(ptrs[i as usize], layout) };
    }
}

/// [`permutation`] of `0..n`, made once per `n` (outside the timed part after the first call).
fn permutation_of(n: usize) -> &'static [u32] {
    static MADE: std::sync::Mutex<Vec<(usize, &'static [u32])>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap();
    if let Some(&(_, p)) = made.iter().find(|(m, _)| *m == n) {
        return p;
    }
    let p: &'static [u32] = Vec::leak(permutation(n));
    made.push((n, p));
    p
}

/// `n` allocate-then-free pairs of `size` bytes, touching the first byte.
pub fn pairs<A: GlobalAlloc>(a: &A, size: usize, n: u64) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for _ in 0..n {
        // SAFETY: non-zero size; freed with the same layout.
        unsafe {
            let p = black_box(a.alloc(layout));
            p.write(1);
            a.dealloc(p, layout);
        }
    }
}

/// A `GlobalAlloc` seen through the `Allocator` trait, so collections can use it directly.
#[derive(Clone, Copy)]
pub struct Via<A: 'static>(pub &'static A);

// SAFETY: forwards to a GlobalAlloc, whose blocks are valid until freed and which preserves
// contents across realloc; zero-sized requests get a dangling, well-aligned pointer.
unsafe impl<A: GlobalAlloc> Allocator for Via<A> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            let p = NonNull::new(layout.align() as *mut u8).unwrap();
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        // SAFETY: non-zero size.
        let p = unsafe { self.0.alloc(layout) };
        NonNull::new(p)
            .map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
            .ok_or(AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller's contract: ptr came from allocate with this layout.
            unsafe { self.0.dealloc(ptr.as_ptr(), layout) }
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 || old.align() != new.align() {
            let q = self.allocate(new)?;
            // SAFETY: both blocks are live and distinct; old.size() <= new.size().
            unsafe {
                std::ptr::copy_nonoverlapping(ptr.as_ptr(), q.as_ptr().cast(), old.size());
                self.deallocate(ptr, old);
            }
            return Ok(q);
        }
        // SAFETY: ptr is live with `old`; new size is non-zero and has the same alignment.
        let p = unsafe { self.0.realloc(ptr.as_ptr(), old, new.size()) };
        NonNull::new(p)
            .map(|p| NonNull::slice_from_raw_parts(p, new.size()))
            .ok_or(AllocError)
    }
}

/// Pushes `n` u64s into an empty `Vec`, letting it grow by doubling.
pub fn vec_growth<A: GlobalAlloc>(a: &'static A, n: usize) {
    let mut v = allocator_api2::vec::Vec::new_in(Via(a));
    for i in 0..n as u64 {
        v.push(i);
    }
    black_box(&v);
}

/// A fixed random permutation of `0..n` (xorshift, so every allocator frees in the same order).
pub fn permutation(n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.swap(i, (x % (i as u64 + 1)) as usize);
    }
    p
}

static PERM: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

/// Allocates `n` 32-byte boxes, then frees them in a random order.
pub fn boxes<A: GlobalAlloc>(a: &A, n: usize) {
    let perm = PERM.get_or_init(|| permutation(BOXES));
    let layout = Layout::new::<[u8; 32]>();
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(layout) };
        // SAFETY: p is a fresh 32-byte block.
        unsafe { p.write(i as u8) };
        ptrs.push(p);
    }
    for &i in perm.iter().filter(|&&i| (i as usize) < n) {
        // SAFETY: each pointer is freed exactly once, with its layout.
        unsafe { a.dealloc(ptrs[i as usize], layout) };
    }
}

/// Random churn over a live set: 10k slots hold blocks of sizes spread log-uniformly over
/// 16 B-64 KiB (one byte written per page); each of `n` steps frees a random slot's block and
/// allocates one of a new random size there.
pub fn mixed_churn<A: GlobalAlloc>(a: &A, n: usize) {
    const LIVE: usize = 10_000;
    let layout = |s: usize| Layout::from_size_align(s, 8).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut table = vec![(std::ptr::null_mut::<u8>(), 0usize); LIVE];
    for step in 0..LIVE + n {
        let r = next();
        let slot = if step < LIVE {
            step
        } else {
            (r % LIVE as u64) as usize
        };
        // 16 B << 0..12, plus a random part of the next power: 16 B to 64 KiB.
        let shift = (r >> 16) % 12;
        let size = (16usize << shift) + ((r >> 24) as usize % (16usize << shift));
        let (old, old_size) = table[slot];
        if !old.is_null() {
            // SAFETY: allocated below with this layout, freed once.
            unsafe { a.dealloc(old, layout(old_size)) };
        }
        // SAFETY: non-zero size; one byte per page of the fresh block is ours to write.
        let p = unsafe { a.alloc(layout(size)) };
        for off in (0..size).step_by(4096) {
            // SAFETY: as above.
            unsafe { p.add(off).write(step as u8) };
        }
        table[slot] = (p, size);
    }
    for (p, size) in table {
        // SAFETY: live blocks from above, freed once.
        unsafe { a.dealloc(p, layout(size)) };
    }
}

/// A single-producer single-consumer ring of pointers.
struct Ring {
    slots: Box<[AtomicUsize]>,
    head: AtomicUsize,
    tail: AtomicUsize,
}

impl Ring {
    fn new(n: usize) -> Ring {
        Ring {
            slots: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }
    fn push(&self, v: usize) {
        let t = self.tail.load(Ordering::Relaxed);
        while t - self.head.load(Ordering::Acquire) == self.slots.len() {
            std::hint::spin_loop();
        }
        self.slots[t % self.slots.len()].store(v, Ordering::Relaxed);
        self.tail.store(t + 1, Ordering::Release);
    }
    fn pop(&self) -> usize {
        let h = self.head.load(Ordering::Relaxed);
        while self.tail.load(Ordering::Acquire) == h {
            std::hint::spin_loop();
        }
        let v = self.slots[h % self.slots.len()].load(Ordering::Relaxed);
        self.head.store(h + 1, Ordering::Release);
        v
    }
}

/// One thread allocates `n` objects (16..256 B) and passes them to another, which frees them:
/// every free is a cross-thread free.
pub fn producer_consumer<A: GlobalAlloc + Sync>(a: &'static A, n: usize) {
    let ring = Ring::new(1024);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..n {
                let size = 16 << (i % 5);
                // SAFETY: non-zero size; freed by the consumer with the same layout.
                let p = unsafe { a.alloc(Layout::from_size_align(size, 8).unwrap()) };
                // SAFETY: fresh block of `size` bytes.
                unsafe { p.write(i as u8) };
                ring.push(p as usize);
            }
        });
        s.spawn(|| {
            for i in 0..n {
                let p = ring.pop() as *mut u8;
                let size = 16 << (i % 5);
                // SAFETY: the producer allocated p with this layout; freed once.
                unsafe { a.dealloc(p, Layout::from_size_align(size, 8).unwrap()) };
            }
        });
    });
}

/// Larson-like churn: two threads each replace random objects (16..1 KiB) in a table of 1000
/// slots `rounds` times; then each frees the other's table (objects die in a thread that did not
/// make them).
pub fn churn<A: GlobalAlloc + Sync>(a: &'static A, rounds: usize) {
    const SLOTS: usize = 1000;
    let layout = |s: usize| Layout::from_size_align(s, 8).unwrap();
    let work = |seed: u64| {
        let mut table = vec![(0usize, 0usize); SLOTS];
        let mut x = seed;
        for r in 0..rounds + SLOTS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = if r < SLOTS {
                r
            } else {
                (x % SLOTS as u64) as usize
            };
            let size = 16 + ((x >> 20) % 1009) as usize;
            let (old, old_size) = table[slot];
            if old != 0 {
                // SAFETY: allocated below with this layout, freed once.
                unsafe { a.dealloc(old as *mut u8, layout(old_size)) };
            }
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(layout(size)) };
            // SAFETY: fresh block.
            unsafe { p.write(r as u8) };
            table[slot] = (p as usize, size);
        }
        table
    };
    let (t1, t2) = std::thread::scope(|s| {
        let h1 = s.spawn(|| work(0x1234_5678_9ABC_DEF1));
        let h2 = s.spawn(|| work(0x0FED_CBA9_8765_4321));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    std::thread::scope(|s| {
        for table in [t2, t1] {
            s.spawn(move || {
                for (p, size) in table {
                    // SAFETY: live blocks from `work`, freed once.
                    unsafe { a.dealloc(p as *mut u8, layout(size)) };
                }
            });
        }
    });
}
