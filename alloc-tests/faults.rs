//! Fault injection (feature `fault-injection`): system calls and device operations fail at
//! chosen points, and every failure must end in a typed error or a clean fallback, with all
//! data intact, nothing half-moved and device capacity matching the device-resident bytes.
//! Plus: a CPU fault on a device page is resolved while this thread holds every heap lock.
//!
//! Runs in-process with the default backend, and once per backend through `each_backend`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;
use tieralloc::inject::{self, Point};
use tieralloc::policy::{Adaptive, Strict};
use tieralloc::{Error, Tier, TierAlloc};

mod common;
use common::*;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

fn setup() -> MutexGuard<'static, ()> {
    let g = serial_with_devices(&[("dev0", 64 * MIB), ("dev1", 64 * MIB)]);
    inject::disarm_all();
    tieralloc::set_policy(Adaptive::default());
    g
}

/// Device 0 holds exactly the device-resident bytes of the buffers given (nothing else lives
/// there in these tests between setup and the check), once no page of theirs is migrating.
///
/// A read-ahead of the buffer can still be bringing pages back after the test read them: the
/// pages are present (moved) before their entries are unlocked, and while locked they count
/// as migrating, neither host nor device, though their capacity is still the device's. The
/// check failed in about 1 run in 20 (a 4 MiB buffer, its second 2 MiB still in flight).
fn assert_accounted(bufs: &[&[u64]]) {
    let migrating = || -> usize {
        bufs.iter()
            .map(|b| {
                let (p, n) = bytes_of(b);
                tieralloc::residency(p, n).unwrap().migrating_bytes()
            })
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while migrating() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "pages still migrating after 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let resident: usize = bufs
        .iter()
        .map(|b| {
            let (p, n) = bytes_of(b);
            tieralloc::residency(p, n).unwrap().device_bytes(0)
        })
        .sum();
    // Page-rounding: a buffer's first and last page may hold neighbours too.
    let used = used(0);
    assert!(
        used >= resident && used <= resident + 2 * PAGE * bufs.len(),
        "device 0 uses {used} bytes, buffers have {resident} there"
    );
}

/// A fresh page-aligned buffer of `mib` MiB holding `pattern(seed)`.
fn buffer(seed: u64, mib: usize) -> Vec<u64> {
    pattern(seed, mib * MIB / 8)
}

fn is_uffd() -> bool {
    backend() != "signal"
}

/// Makes sure the fault backend is running (a migration starts it).
fn start_backend() {
    let v = vec![1u8; PAGE];
    tieralloc::migrate(v.as_ptr(), PAGE, Tier::Host).unwrap();
}

/// A failure injected into one migration of a fresh `mib` MiB buffer.
struct Injected {
    v: Vec<u64>,
    seed: u64,
    /// Device 0's use before the migration.
    before: usize,
    result: Result<tieralloc::Migrated, Error>,
}

/// Migrates a fresh buffer to device 0 with the points in `arms` (point, calls let through,
/// errno, failures) armed.
fn migrate_with(seed: u64, mib: usize, arms: &[(Point, usize, i32, usize)]) -> Injected {
    start_backend();
    let v = buffer(seed, mib);
    let (p, n) = bytes_of(&v);
    let before = used(0);
    for &(point, skip, errno, times) in arms {
        inject::arm(point, skip, errno, times);
    }
    let result = tieralloc::migrate(p, n, Tier::Device(0));
    inject::disarm_all();
    Injected {
        v,
        seed,
        before,
        result,
    }
}

impl Injected {
    /// The migration failed with `errno` (or the error `want` accepts) and moved nothing.
    fn refused(&self, want: impl Fn(&Error) -> bool) {
        let (p, n) = bytes_of(&self.v);
        match &self.result {
            Err(e) if want(e) => {}
            r => panic!("unexpected outcome {r:?}"),
        }
        assert_eq!(
            tieralloc::residency(p, n).unwrap().host_bytes(),
            n,
            "nothing moved"
        );
        assert_eq!(used(0), self.before, "the reservation was given back");
        self.intact();
    }

    /// The data is intact and device 0 accounts for exactly what lives there.
    fn intact(&self) {
        check(&self.v, self.seed);
        assert_accounted(&[&self.v]);
    }

    /// A second, uninjected try works.
    fn retry_works(&self) {
        let (p, n) = bytes_of(&self.v);
        tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
        self.intact();
    }
}

fn errno_is(want: i32) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Sys { errno, .. } if *errno == want)
}

#[test]
fn a_failed_pagemap_read_loses_nothing() {
    let _g = setup();
    // A 1 MiB run moves by its page-table entries in every backend (the signal backend too:
    // runs of `MOVE_MIN` pages or more).
    // The kernel moved the pages first; the read after the move failed, so every page counts
    // as holding data (a missing frame still reads as zero).
    let m = migrate_with(1, 1, &[(Point::Pagemap, 0, libc::EIO, 1)]);
    let (p, n) = bytes_of(&m.v);
    m.result.as_ref().unwrap();
    assert_eq!(tieralloc::residency(p, n).unwrap().device_bytes(0), n);
    m.intact();
    m.retry_works();
}

#[test]
fn a_zero_page_call_the_kernel_asks_to_retry_is_retried() {
    let _g = setup();
    start_backend();
    if !is_uffd() {
        return;
    }
    // A device-resident block that must move when it grows: its bytes go frame to frame, into
    // fresh device pages, whose frames get the zero page first.
    let mut v = pattern(23, MIB / 8);
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let _keep = block_after(p, n);
    // The kernel answers the first `UFFDIO_ZEROPAGE` with EAGAIN (nothing done, try again).
    // It was taken as done: the frame stayed missing, and the copy into it raised a fault in
    // the device window that nothing resolves (uffd: a hang; uffd-fast: SIGBUS).
    inject::arm(Point::UffdZeropage, 1, libc::EAGAIN, 1);
    v.reserve_exact(MIB / 8);
    inject::disarm_all();
    assert_ne!(v.as_ptr().cast::<u8>(), p, "the block had to move");
    let (q, cap) = (v.as_ptr().cast::<u8>(), v.capacity() * 8);
    assert_eq!(tieralloc::residency(q, cap).unwrap().device_bytes(0), cap);
    check(&v, 23);
}

#[test]
fn a_failed_move_falls_back_to_copying() {
    let _g = setup();
    // Every move fails, there and back (`UFFDIO_MOVE`, or `mremap` in the signal backend):
    // both directions copy instead.
    let moves = [
        (Point::UffdMove, 0, libc::EBUSY, 1_000_000),
        (Point::Mremap, 0, libc::ENOMEM, 1_000_000),
    ];
    let m = migrate_with(2, 4, &moves);
    let (p, n) = bytes_of(&m.v);
    m.result.as_ref().unwrap();
    assert_eq!(tieralloc::residency(p, n).unwrap().device_bytes(0), n);
    for (point, skip, errno, times) in moves {
        inject::arm(point, skip, errno, times);
    }
    m.intact(); // the CPU reads it back through the copy path
    inject::disarm_all();
    assert_eq!(tieralloc::residency(p, n).unwrap().host_bytes(), n);
}

#[test]
fn a_failed_copy_rolls_the_whole_batch_back() {
    let _g = setup();
    // The kernel move "fails" after moving nothing; then the 4th page copy fails.
    let m = migrate_with(
        3,
        1,
        &[
            (Point::UffdMove, 0, libc::EBUSY, 1_000_000),
            (Point::UffdCopy, 3, libc::ENOMEM, 1),
        ],
    );
    if is_uffd() {
        m.refused(errno_is(libc::ENOMEM));
    } else {
        m.result.as_ref().unwrap(); // the signal backend copies with memcpy: nothing to fail
        m.intact();
    }
}

#[test]
fn a_failed_mprotect_is_a_typed_error_in_the_signal_backend() {
    let _g = setup();
    // Twice: the move path's first `mprotect`, then the copy path's it falls back to.
    let m = migrate_with(4, 1, &[(Point::Mprotect, 0, libc::ENOMEM, 2)]);
    if is_uffd() {
        m.result.as_ref().unwrap(); // no mprotect in the userfaultfd backends
        m.intact();
    } else {
        m.refused(|e| matches!(e, Error::MapCountLimit { .. }));
    }
}

#[test]
fn a_move_whose_window_cannot_be_opened_is_put_back() {
    let _g = setup();
    // Signal backend: the first `mprotect` (the host run to `PROT_NONE`) goes through, the
    // pages move to the window, and opening the window fails: they must move back, with the
    // host run readable and writable again, and the copy path then moves them (it copies
    // from the host run: pages left in the window would arrive as zeros).
    let mut m = migrate_with(11, 1, &[(Point::Mprotect, 1, libc::ENOMEM, 1)]);
    let (p, n) = bytes_of(&m.v);
    m.result.as_ref().unwrap();
    assert_eq!(tieralloc::residency(p, n).unwrap().device_bytes(0), n);
    m.intact();
    // Writable, not only readable: write every word and put it back.
    m.v.iter_mut().for_each(|x| *x = x.wrapping_add(1));
    m.v.iter_mut().for_each(|x| *x = x.wrapping_sub(1));
    m.intact();
}

#[test]
fn a_failed_registration_is_a_typed_error() {
    let _g = setup();
    // A fresh 16 MiB run: chunks beyond anything registered so far.
    let m = migrate_with(5, 16, &[(Point::UffdRegister, 0, libc::ENOMEM, 1)]);
    if is_uffd() {
        m.refused(errno_is(libc::ENOMEM));
    } else {
        m.result.as_ref().unwrap();
    }
    m.retry_works();
}

#[test]
fn a_full_device_fails_migrations_prefetches_and_launches_cleanly() {
    let _g = setup();
    tieralloc::set_policy(Strict);
    let v = buffer(6, 2);
    let (p, n) = bytes_of(&v);
    let before = used(0);

    inject::arm(Point::DeviceReserve, 0, 0, 1);
    let r = tieralloc::migrate(p, n, Tier::Device(0));
    assert!(
        matches!(r, Err(Error::DeviceFull { device: 0, .. })),
        "{r:?}"
    );

    inject::arm(Point::DeviceReserve, 0, 0, 1);
    let r = tieralloc::prefetch(p, n, Tier::Device(0)).unwrap().wait();
    assert!(matches!(r, Err(Error::DeviceFull { .. })), "{r:?}");

    let mut w = buffer(7, 1);
    inject::arm(Point::DeviceReserve, 0, 0, 1);
    let r = tieralloc::device(0)
        .unwrap()
        .run(&mut w[..], |w| w.iter_mut().for_each(|x| *x = 0));
    assert!(matches!(r, Err(Error::DeviceFull { .. })), "{r:?}");
    inject::disarm_all();

    assert_eq!(used(0), before);
    assert_eq!(tieralloc::residency(p, n).unwrap().host_bytes(), n);
    check(&v, 6);
    check(&w, 7); // the kernel did not run, and its pages are not pinned
                  // And a device-tier allocation falls back to the host.
    inject::arm(Point::DeviceReserve, 0, 0, 1);
    let fallbacks = tieralloc::stats().placement_fallbacks;
    let z = tieralloc::with_tier(Tier::Device(0), || vec![0u8; 4 * MIB]);
    inject::disarm_all();
    assert!(tieralloc::stats().placement_fallbacks > fallbacks);
    assert_eq!(
        tieralloc::residency(z.as_ptr(), z.len())
            .unwrap()
            .host_bytes(),
        z.len()
    );
    tieralloc::set_policy(Adaptive::default());
}

#[test]
fn a_cpu_fault_is_resolved_while_this_thread_holds_every_heap_lock() {
    let _g = setup();
    let v = buffer(8, 4);
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in 0..300 {
                if done.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("deadlock: a fault under the heap locks did not resolve in 30 s");
            std::process::abort();
        })
    };
    let faults = tieralloc::stats().cpu_faults;
    // Nothing inside may allocate: the heap is locked. Summing reads every device page.
    let sum = inject::with_heap_locked(|| v.iter().fold(0u64, |a, &x| a.wrapping_add(x)));
    done.store(true, Ordering::Release);
    watchdog.join().unwrap();
    assert_eq!(
        sum,
        pattern(8, v.len())
            .iter()
            .fold(0u64, |a, &x| a.wrapping_add(x))
    );
    assert!(tieralloc::stats().cpu_faults > faults);
}

#[test]
fn a_failed_fault_back_stops_the_process_with_a_message() {
    // Bringing a page home can only fail if the kernel is out of memory; a half-done return
    // cannot be represented, so tieralloc stops rather than hand out wrong data.
    if std::env::var_os("ALLOC_TEST_FAULTS_FATAL").is_some() {
        let v = buffer(9, 1);
        let (p, n) = bytes_of(&v);
        tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
        inject::arm(Point::UffdMove, 0, libc::ENOMEM, 1_000_000);
        inject::arm(Point::UffdCopy, 0, libc::ENOMEM, 1_000_000);
        inject::arm(Point::Mprotect, 0, libc::ENOMEM, 1_000_000);
        inject::arm(Point::Mremap, 0, libc::ENOMEM, 1_000_000);
        check(&v, 9);
        unreachable!("the fault-back cannot have succeeded");
    }
    let _g = setup();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_failed_fault_back_stops_the_process_with_a_message",
            "--nocapture",
        ])
        .env("ALLOC_TEST_FAULTS_FATAL", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("tieralloc: fatal: could not bring device-resident pages back"),
        "{err}"
    );
}

#[test]
fn a_failed_device_window_mapping_is_an_error_and_can_be_retried() {
    if std::env::var_os("ALLOC_TEST_FAULTS_MMAP").is_some() {
        inject::arm(Point::Mmap, 0, libc::ENOMEM, 1);
        let r = tieralloc::devices();
        inject::disarm_all();
        assert!(
            matches!(
                r,
                Err(Error::Sys {
                    errno: libc::ENOMEM,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(tieralloc::devices().unwrap().len(), 1);
        let v = buffer(10, 1);
        let (p, n) = bytes_of(&v);
        tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
        check(&v, 10);
        return;
    }
    let _g = setup();
    // Devices start once per process: this needs a fresh one.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_failed_device_window_mapping_is_an_error_and_can_be_retried",
        ])
        .env("ALLOC_TEST_FAULTS_MMAP", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `fork` while another thread creates the devices: the child's first migration works.
/// Runs in a fresh process (this test binary again), where the devices do not exist yet.
/// Before the fix the child copied the device list's lock held, and its migration waited
/// for it forever: the watchdog killed the run.
#[test]
fn a_fork_while_another_thread_creates_the_devices_leaves_the_child_working_devices() {
    if ran_in_fresh_process(
        "a_fork_while_another_thread_creates_the_devices_leaves_the_child_working_devices",
        &[],
    ) {
        return;
    }
    inject::arm(Point::DeviceInitStall, 0, 300, 1);
    let creator = std::thread::spawn(|| tieralloc::devices().is_ok());
    std::thread::sleep(Duration::from_millis(50)); // inside the creation's stall
    let code = in_child(|| {
        let v = vec![7u8; 1 << 20];
        tieralloc::migrate(v.as_ptr(), v.len(), Tier::Device(0)).is_ok()
            && v.iter().all(|&b| b == 7)
    });
    assert_eq!(code, 0, "the child's migration failed");
    assert!(creator.join().unwrap());
}

#[test]
fn each_backend() {
    common::each_backend("ALLOC_TEST_FAULTS_CHILD", "fault injection tests");
}
