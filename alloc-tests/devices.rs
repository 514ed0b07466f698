//! Device execution, hints and policy: kernels compute on the CPU's data, device faults migrate
//! it (or not, under advice), read-mostly duplicates serve reads on both sides and never lose a
//! write, eviction lets a device cycle through 3× its capacity intact, the thrash guard stops
//! ping-pong, prefetch overlaps with CPU work, and a CPU touch waits for a running kernel.
//!
//! Like `scenarios.rs`, the file runs in-process with the default backend, and `each_backend`
//! runs it again in a child per backend (`TIERALLOC_FAULT=uffd|uffd-fast|signal`).

// Kernel arguments must be heap (managed) memory: a stack array would be refused.
#![allow(clippy::useless_vec)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use tieralloc::policy::{Adaptive, Evict, Strict};
use tieralloc::{Advice, Error, Link, Tier, TierAlloc};

mod common;
use common::*;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

fn setup() -> MutexGuard<'static, ()> {
    serial_with_three_devices()
}

#[test]
fn kernel_computes_on_device_resident_data_and_the_cpu_reads_the_result() {
    let _g = setup();
    let x = pattern(1, MIB); // 8 MiB
    let mut y = vec![0u64; MIB];
    let (px, n) = bytes_of(&x);
    tieralloc::migrate(px, n, Tier::Device(0)).unwrap();
    let before = tieralloc::stats();
    let dev = tieralloc::device(0).unwrap();
    let r = dev
        .run((&x[..], &mut y[..]), |(x, y)| {
            for (y, x) in y.iter_mut().zip(x) {
                *y = x.wrapping_mul(3);
            }
        })
        .unwrap();
    // x was there already; y (host, written by the CPU when zeroed) faulted over.
    // (one fault per 64 KiB block y touches: 128, or 129 when y is not block-aligned).
    let blocks = n / (64 << 10);
    assert!((blocks..=blocks + 1).contains(&r.device_faults), "{r:?}");
    let (py, _) = bytes_of(&y);
    assert_eq!(tieralloc::residency(py, n).unwrap().device_bytes(0), n);
    assert_eq!(tieralloc::residency(px, n).unwrap().device_bytes(0), n);
    for (i, v) in y.iter().enumerate() {
        assert_eq!(*v, x[i].wrapping_mul(3), "word {i}");
    }
    let after = tieralloc::stats();
    assert_eq!(after.kernels, before.kernels + 1);
    assert!(
        after.cpu_faults > before.cpu_faults,
        "the CPU read faulted y back"
    );
    let c = tieralloc::residency(px, n).unwrap();
    assert!(
        c.blocks().iter().all(|b| b.device_accesses >= 1),
        "access counters"
    );
    assert!(tieralloc::residency(py, n)
        .unwrap()
        .blocks()
        .iter()
        .all(|b| b.cpu_faults >= 1 && b.device_accesses >= 1));
}

#[test]
fn device_fault_on_host_data_migrates_it_and_counts() {
    let _g = setup();
    let v = pattern(2, MIB / 2); // 4 MiB = 64 blocks
    let (p, n) = bytes_of(&v);
    let before = tieralloc::stats();
    let mut sum = [0u64];
    let r = tieralloc::device(1)
        .unwrap()
        .run((&v[..], &mut sum[..]), |(v, s)| {
            s[0] = v.iter().fold(0u64, |a, x| a.wrapping_add(*x))
        });
    // `sum` is on the stack: not managed memory.
    assert!(matches!(r, Err(Error::NotManaged { .. })), "{r:?}");
    let mut sum = vec![0u64; 1];
    let r = tieralloc::device(1)
        .unwrap()
        .run((&v[..], &mut sum[..]), |(v, s)| {
            s[0] = v.iter().fold(0u64, |a, x| a.wrapping_add(*x))
        })
        .unwrap();
    assert!(r.device_faults >= 64 && r.migrated_bytes >= n, "{r:?}");
    assert_eq!(tieralloc::residency(p, n).unwrap().device_bytes(1), n);
    let s = tieralloc::stats();
    assert!(s.device_faults >= before.device_faults + 64);
    assert_eq!(sum[0], v.iter().fold(0u64, |a, x| a.wrapping_add(*x)));
    check(&v, 2);
}

#[test]
fn accessed_by_reads_remotely_without_migrating() {
    let _g = setup();
    let v = pattern(3, MIB / 2);
    let (p, n) = bytes_of(&v);
    tieralloc::advise(p, n, Advice::AccessedBy(Tier::Device(0))).unwrap();
    // `out` gets a page of its own: a small vector would share its page with other objects,
    // and another thread (the test harness's) allocating there would bring the page back
    // between the kernels, which then move it again.
    let layout = std::alloc::Layout::from_size_align(PAGE, PAGE).unwrap();
    // SAFETY: a non-zero size; freed below with the same layout.
    let o = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!o.is_null());
    // SAFETY: one zeroed, u64-aligned page that only this test uses.
    let out = unsafe { std::slice::from_raw_parts_mut(o.cast::<u64>(), 1) };
    let before = tieralloc::stats();
    for _ in 0..3 {
        let r = tieralloc::device(0)
            .unwrap()
            .run((&v[..], &mut *out), |(v, o)| o[0] = v[v.len() - 1])
            .unwrap();
        assert!(r.remote_bytes >= n, "{r:?}");
    }
    let after = tieralloc::stats();
    assert_eq!(tieralloc::residency(p, n).unwrap().host_bytes(), n);
    assert!(after.remote_bytes >= before.remote_bytes + 3 * n as u64);
    // Only `out` (one page) ever moved.
    assert!(after.bytes_to_device - before.bytes_to_device <= PAGE as u64);
    assert_eq!(out[0], v[v.len() - 1]);
    tieralloc::advise(p, n, Advice::Reset).unwrap();
    // SAFETY: allocated above with this layout; `out` is not used after this.
    unsafe { std::alloc::dealloc(o, layout) };
}

/// Launches `n` kernels on device 0 that read one 64 KiB block (AccessedBy device 0) and
/// returns the bytes of it on device 0 afterwards. The block is allocated block-aligned, so
/// its counters start at zero.
fn remote_launches(n: usize) -> usize {
    let layout = std::alloc::Layout::from_size_align(64 << 10, 64 << 10).unwrap();
    // SAFETY: a non-zero size; freed below with the same layout.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!p.is_null());
    // SAFETY: 64 KiB of zeroed, u64-aligned memory that only this function uses.
    let v = unsafe { std::slice::from_raw_parts_mut(p.cast::<u64>(), 8192) };
    v[7] = 77;
    tieralloc::advise(p, 64 << 10, Advice::AccessedBy(Tier::Device(0))).unwrap();
    let mut out = vec![0u64; 1];
    for _ in 0..n {
        tieralloc::device(0)
            .unwrap()
            .run((&v[..], &mut out[..]), |(v, o)| o[0] = v[7])
            .unwrap();
    }
    let on_device = tieralloc::residency(p, 64 << 10).unwrap().device_bytes(0);
    assert_eq!(out[0], 77);
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(p, layout) };
    on_device
}

#[test]
fn adaptive_policy_migrates_what_a_device_reads_remotely_often() {
    let _g = setup();
    tieralloc::set_policy(Evict);
    assert_eq!(remote_launches(12), 0, "evict never auto-migrates");
    tieralloc::set_policy(Adaptive::default());
    assert_eq!(remote_launches(3), 0, "below the threshold it stays remote");
    assert_eq!(
        remote_launches(12),
        65536,
        "after 8 remote launches it moved"
    );
}

#[test]
fn read_mostly_duplicates_serve_reads_on_both_sides_without_faults() {
    let _g = setup();
    let v = pattern(4, MIB / 2);
    let (p, n) = bytes_of(&v);
    tieralloc::advise(p, n, Advice::ReadMostly).unwrap();
    let used0 = used(0);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let r = tieralloc::residency(p, n).unwrap();
    assert_eq!((r.host_bytes(), r.duplicated_bytes(0)), (n, n));
    assert_eq!(used(0), used0 + n, "a duplicate takes device capacity");
    let before = tieralloc::stats();
    check(&v, 4); // CPU reads: the host copy, no fault
    let mut sum = vec![0u64; 1];
    let k = tieralloc::device(0)
        .unwrap()
        .run((&v[..], &mut sum[..]), |(v, s)| {
            s[0] = v.iter().fold(0, |a: u64, x| a.wrapping_add(*x))
        })
        .unwrap();
    let after = tieralloc::stats();
    assert_eq!(
        after.cpu_faults, before.cpu_faults,
        "CPU reads did not fault"
    );
    // The kernel read its local duplicate: only `sum` (one block) faulted over.
    assert_eq!(k.device_faults, 1, "{k:?}");
    check(&v, 4);
    assert_eq!(sum[0], v.iter().fold(0, |a: u64, x| a.wrapping_add(*x)));
    // The first CPU write drops that page's duplicate and keeps the write.
    let mut v = v;
    v[5] = 77;
    assert_eq!(v[5], 77);
    let s = tieralloc::stats();
    assert_eq!(s.duplicate_invalidations, after.duplicate_invalidations + 1);
    let r = tieralloc::residency(p, n).unwrap();
    assert_eq!(r.duplicated_bytes(0), n - PAGE);
    assert_eq!(
        used(0),
        used0 + n - PAGE,
        "one duplicate went (sum came back on its CPU read)"
    );
    drop(sum);
    drop(v);
    assert_eq!(used(0), used0, "freeing drops the duplicates");
}

#[test]
fn read_mostly_writes_from_four_threads_are_never_lost() {
    let _g = setup();
    const PAGES: usize = 32;
    const ROUNDS: u64 = 300;
    let buf = vec![0u64; PAGES * PAGE / 8];
    let (p, n) = bytes_of(&buf);
    tieralloc::advise(p, n, Advice::ReadMostly).unwrap();
    let base = p as usize;
    let start = Barrier::new(5);
    thread::scope(|s| {
        for t in 0..4usize {
            let start = &start;
            s.spawn(move || {
                start.wait();
                for round in 1..=ROUNDS {
                    for page in 0..PAGES {
                        // Thread t owns word t of every page.
                        let w = (base + page * PAGE) as *mut u64;
                        // SAFETY: inside `buf`; each word has one writer (this thread).
                        unsafe {
                            assert_eq!(w.add(t).read_volatile(), round - 1, "lost write");
                            w.add(t).write_volatile(round);
                            let _ = w.add((t + 1) % 4).read_volatile();
                        }
                    }
                }
            });
        }
        s.spawn(|| {
            start.wait();
            let mut k = 0;
            while k < 200 {
                tieralloc::migrate(base as *const u8, n, Tier::Device(k % 2)).unwrap();
                k += 1;
            }
        });
    });
    for page in 0..PAGES {
        for t in 0..4 {
            assert_eq!(buf[page * PAGE / 8 + t], ROUNDS, "page {page} word {t}");
        }
    }
    assert!(tieralloc::stats().duplicate_invalidations > 0);
}

#[test]
fn eviction_cycles_three_times_capacity_through_a_device_intact() {
    let _g = setup();
    let bufs: Vec<Vec<u64>> = (0..6).map(|i| pattern(100 + i, MIB)).collect(); // 6 × 8 MiB
    let before = tieralloc::stats();
    for round in 0..3 {
        for (i, b) in bufs.iter().enumerate() {
            let (p, n) = bytes_of(b);
            tieralloc::migrate(p, n, Tier::Device(2)).unwrap();
            assert!(
                used(2) <= SMALL,
                "round {round} buffer {i}: used {}",
                used(2)
            );
            assert_eq!(tieralloc::residency(p, n).unwrap().device_bytes(2), n);
        }
    }
    // Kernels evict too.
    for b in &bufs {
        let mut out = vec![0u64; 1];
        tieralloc::device(2)
            .unwrap()
            .run((&b[..], &mut out[..]), |(b, o)| o[0] = b[1])
            .unwrap();
        assert_eq!(out[0], b[1]);
        assert!(used(2) <= SMALL);
    }
    let s = tieralloc::stats();
    assert!(s.evictions > before.evictions, "{s}");
    for (i, b) in bufs.iter().enumerate() {
        check(b, 100 + i as u64);
    }
    // Strict mode refuses instead, and moves nothing.
    tieralloc::set_policy(Strict);
    let big = pattern(7, 3 * MIB); // 24 MiB > 16 MiB
    let (p, n) = bytes_of(&big);
    let r = tieralloc::migrate(p, n, Tier::Device(2));
    assert!(
        matches!(r, Err(Error::DeviceFull { device: 2, .. })),
        "{r:?}"
    );
    assert_eq!(tieralloc::residency(p, n).unwrap().host_bytes(), n);
    drop(bufs);
    let fill = pattern(8, 2 * MIB - 512); // fits only if nothing else is there
    let (p, n) = bytes_of(&fill);
    tieralloc::migrate(p, n, Tier::Device(2)).unwrap();
    let more = pattern(9, MIB / 2);
    let (q, m) = bytes_of(&more);
    assert!(matches!(
        tieralloc::migrate(q, m, Tier::Device(2)),
        Err(Error::DeviceFull { .. })
    ));
    check(&fill, 8);
    check(&more, 9);
}

/// A block bounces: a kernel writes it on device 0, then the CPU writes it. Returns the
/// pages migrated to the device over `rounds` rounds.
fn ping_pong(rounds: usize) -> u64 {
    let mut v = vec![1u64; 8192]; // 64 KiB
    let mut out = vec![0u64; 1];
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Host).unwrap();
    let dev = tieralloc::device(0).unwrap();
    let before = tieralloc::stats().bytes_to_device;
    for i in 0..rounds {
        dev.run(&mut v[..], |v| {
            for x in v.iter_mut() {
                *x += 1;
            }
        })
        .unwrap();
        v[0] += 1; // CPU write: the block comes back
        assert_eq!(v[1], i as u64 + 2);
        out[0] = v[0];
    }
    (tieralloc::stats().bytes_to_device - before) / PAGE as u64
}

#[test]
fn thrash_guard_stops_ping_pong() {
    let _g = setup();
    tieralloc::set_policy(Evict);
    let plain = ping_pong(20);
    tieralloc::set_policy(Adaptive::default());
    let guarded = ping_pong(20);
    assert_eq!(
        plain,
        20 * 16,
        "without a guard every round migrates the block"
    );
    assert!(
        guarded <= 4 * 16,
        "the guard keeps the block on the host after 3 bounces: {guarded} pages moved"
    );
    assert!(tieralloc::stats().thrash_guards > 0);
}

/// Faults needed to read one 2 MiB region back when the CPU touches every other 64 KiB block
/// first, then the rest.
fn strided_faults() -> u64 {
    let layout = std::alloc::Layout::from_size_align(2 * MIB, 2 * MIB).unwrap();
    // SAFETY: a non-zero size; freed below with the same layout.
    let p = unsafe { std::alloc::alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: 2 MiB that only this function uses.
    let v = unsafe { std::slice::from_raw_parts_mut(p, 2 * MIB) };
    v.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    tieralloc::migrate(p, 2 * MIB, Tier::Device(0)).unwrap();
    let before = tieralloc::stats().cpu_faults;
    let block = 64 << 10;
    for b in (0..32).step_by(2).chain((1..32).step_by(2)) {
        assert_eq!(v[b * block + 5], (b * block + 5) as u8);
    }
    let faults = tieralloc::stats().cpu_faults - before;
    assert!(v.iter().enumerate().all(|(i, b)| *b == i as u8));
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(p, layout) };
    faults
}

#[test]
fn density_fault_around_brings_a_half_faulted_region_back_at_once() {
    let _g = setup();
    tieralloc::set_policy(Evict); // fixed fault-around: one fault per block touched
    assert_eq!(strided_faults(), 32);
    tieralloc::set_policy(Adaptive::default()); // density: the rest comes at half
    let dense = strided_faults();
    assert!(dense <= 18, "{dense} faults");
}

/// Fault-around of a whole 2 MiB region at a time, from wherever the fault lands.
struct WholeRegions;

impl tieralloc::policy::Policy for WholeRegions {
    fn name(&self) -> &str {
        "whole-regions"
    }
    fn fault_around(&self) -> tieralloc::policy::FaultAround {
        tieralloc::policy::FaultAround {
            min_pages: 512,
            max_pages: 512,
            density: false,
        }
    }
}

#[test]
fn the_largest_fault_around_brings_back_one_region_from_mid_region_faults() {
    let _g = setup();
    tieralloc::set_policy(WholeRegions);
    let layout = std::alloc::Layout::from_size_align(6 * MIB, 2 * MIB).unwrap();
    // SAFETY: a non-zero size; freed below with the same layout.
    let p = unsafe { std::alloc::alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: 6 MiB that only this test uses.
    let v = unsafe { std::slice::from_raw_parts_mut(p, 6 * MIB) };
    v.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 251) as u8);
    tieralloc::migrate(p, 6 * MIB, Tier::Device(0)).unwrap();
    // The middle of the second region: the pages around it on both sides are on the device.
    let at = 3 * MIB + 5;
    assert_eq!(v[at], (at % 251) as u8);
    let r = tieralloc::residency(p, 6 * MIB).unwrap();
    assert_eq!(
        r.device_bytes(0),
        4 * MIB,
        "one 2 MiB region came back, no more"
    );
    assert!(v.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(p, layout) };
    tieralloc::set_policy(Adaptive::default());
}

#[test]
fn prefetch_overlaps_with_cpu_work_and_is_correct() {
    let _g = setup();
    let v = pattern(10, 16 * MIB); // 128 MiB
    let (p, n) = bytes_of(&v);
    let work = pattern(11, 512);
    let t = Instant::now();
    let pending = tieralloc::prefetch(p, n, Tier::Device(0)).unwrap();
    let returned = t.elapsed();
    let mut cpu_rounds = 0u64;
    let mut acc = 0u64;
    while !pending.is_done() {
        acc = acc.wrapping_add(work.iter().fold(0, |a: u64, x| a ^ x));
        cpu_rounds += 1;
    }
    let total = t.elapsed();
    let m = pending.wait().unwrap();
    assert_eq!(m.moved * PAGE, n);
    assert!(
        cpu_rounds > 0 && acc != 1,
        "the CPU worked while the prefetch ran"
    );
    assert!(
        returned < total,
        "prefetch returned before the move finished"
    );
    assert_eq!(tieralloc::residency(p, n).unwrap().device_bytes(0), n);
    check(&v, 10);
    // Bad input is refused at once.
    assert!(matches!(
        tieralloc::prefetch(p, n, Tier::Device(9)),
        Err(Error::UnknownDevice { .. })
    ));
    let x = 5u8;
    assert!(matches!(
        tieralloc::prefetch(&x, 1, Tier::Device(0)),
        Err(Error::NotManaged { .. })
    ));
}

static KERNEL_STARTED: AtomicBool = AtomicBool::new(false);

#[test]
fn a_cpu_touch_of_a_running_kernels_page_waits_for_the_kernel() {
    let _g = setup();
    let mut v = vec![0u64; 4096]; // 32 KiB
    let addr = v.as_mut_ptr() as usize;
    KERNEL_STARTED.store(false, Ordering::SeqCst);
    let seen = tieralloc::device(0).unwrap().scope(|s| {
        let k = s.launch(&mut v[..], |v| {
            KERNEL_STARTED.store(true, Ordering::SeqCst);
            v[0] = 1;
            thread::sleep(Duration::from_millis(100));
            v[4095] = 2;
            v[0] = 3;
        });
        while !KERNEL_STARTED.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        // SAFETY: the address of v's last word; the read is what this test checks: it must
        // wait for the kernel rather than see a half-written vector.
        let last = unsafe { (addr as *const u64).add(4095).read_volatile() };
        // SAFETY: as above.
        let first = unsafe { (addr as *const u64).read_volatile() };
        k.wait().unwrap();
        (first, last)
    });
    assert_eq!(seen, (3, 2), "the CPU saw the kernel's finished result");
}

#[test]
fn a_panicking_kernel_is_an_error_and_leaves_its_pages_usable() {
    let _g = setup();
    let mut v = pattern(12, 4096);
    let r = tieralloc::device(1).unwrap().run(&mut v[..], |v| {
        v[0] = 99;
        panic!("kernel bug (expected by the test)");
    });
    assert!(
        matches!(r, Err(Error::KernelPanicked { device: 1 })),
        "{r:?}"
    );
    assert_eq!(v[0], 99);
    v[0] = pattern(12, 1)[0];
    check(&v, 12);
    tieralloc::migrate(v.as_ptr().cast(), 8 * 4096, Tier::Host).unwrap();
}

#[test]
fn preferred_location_brings_pages_back_to_their_device() {
    let _g = setup();
    let v = pattern(13, MIB / 8); // 1 MiB
    let (p, n) = bytes_of(&v);
    tieralloc::advise(p, n, Advice::PreferredLocation(Tier::Device(0))).unwrap();
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    check(&v, 13); // CPU touch: back to the host ...
    let t = Instant::now();
    while tieralloc::residency(p, n).unwrap().device_bytes(0) < n {
        assert!(t.elapsed() < Duration::from_secs(5), "never went back");
        thread::sleep(Duration::from_millis(5));
    }
    // ... and soon after to its preferred device. A kernel elsewhere reads it remotely.
    let mut out = vec![0u64; 1];
    tieralloc::device(1)
        .unwrap()
        .run((&v[..], &mut out[..]), |(v, o)| o[0] = v[3])
        .unwrap();
    assert_eq!(out[0], v[3]);
    tieralloc::advise(p, n, Advice::Reset).unwrap();
}

#[test]
fn the_link_model_counts_time_and_can_enforce_it() {
    let _g = setup();
    let v = pattern(14, MIB); // 8 MiB
    let (p, n) = bytes_of(&v);
    let before = tieralloc::stats().simulated_transfer_ns;
    tieralloc::migrate(p, n, Tier::Device(1)).unwrap();
    let counted = tieralloc::stats().simulated_transfer_ns - before;
    let pcie4 = Link::PCIE4_X16.transfer_time(n).as_nanos() as u64;
    assert!(
        counted >= pcie4,
        "{counted} ns counted, a PCIe 4 link needs {pcie4}"
    );
    let slow = Link::parse("1GB/s,10us").unwrap();
    tieralloc::set_link(1, slow, true).unwrap();
    let t = Instant::now();
    tieralloc::migrate(p, n, Tier::Host).unwrap();
    let took = t.elapsed();
    tieralloc::set_link(1, Link::PCIE4_X16, false).unwrap();
    assert!(
        took >= slow.transfer_time(n),
        "8 MiB over 1 GB/s take >= 8 ms, took {took:?}"
    );
    check(&v, 14);
    assert!(Link::parse("fast").is_none());
}

#[test]
fn bad_advice_and_kernel_inputs_are_typed_errors() {
    let _g = setup();
    let v = vec![1u8; 4096];
    let x = 0u32;
    assert!(matches!(
        tieralloc::advise(&x as *const u32 as *const u8, 4, Advice::ReadMostly),
        Err(Error::NotManaged { .. })
    ));
    assert!(matches!(
        tieralloc::advise(v.as_ptr(), 0, Advice::ReadMostly),
        Err(Error::ZeroLength)
    ));
    assert!(matches!(
        tieralloc::advise(v.as_ptr(), 1, Advice::AccessedBy(Tier::Device(40))),
        Err(Error::UnknownDevice { .. })
    ));
    assert!(matches!(
        tieralloc::device(40),
        Err(Error::UnknownDevice { .. })
    ));
    // A kernel larger than its device (strict or not: it could never run).
    let big = vec![1u64; 3 * MIB]; // 24 MiB > 16 MiB
    let mut big2 = vec![0u64; 1];
    let r = tieralloc::device(2)
        .unwrap()
        .run((&big[..], &mut big2[..]), |(b, o)| o[0] = b[0]);
    assert!(
        matches!(r, Err(Error::DeviceFull { device: 2, .. })),
        "{r:?}"
    );
}

#[test]
fn each_backend() {
    common::each_backend("ALLOC_TEST_DEVICES_CHILD", "device tests");
}
