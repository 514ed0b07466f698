//! Migration scenarios, after the kernel's HMM selftests: data survives every move, CPU touches
//! bring pages back from any thread, concurrent writers lose nothing, fork children get their
//! own copy, frees give device capacity back, and bad input gets a typed error.
//!
//! The tests run in this process with the default backend (`auto`), and `each_backend` runs the
//! whole file again in a child process per backend (`TIERALLOC_FAULT=uffd|uffd-fast|signal`).

use std::sync::{Barrier, MutexGuard};
use std::thread;
use tieralloc::{Error, PageState, Tier, TierAlloc};

mod common;
use common::*;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

const DEVICE_CAPACITY: usize = 256 * MIB;

fn setup() -> MutexGuard<'static, ()> {
    serial_with_devices(&[("dev0", DEVICE_CAPACITY), ("dev1", DEVICE_CAPACITY)])
}

#[test]
fn cpu_write_migrate_then_cpu_read_back() {
    let _g = setup();
    let v = pattern(1, 4 * MIB); // 32 MiB, every page written
    let (p, n) = bytes_of(&v);
    let faults = tieralloc::stats().cpu_faults;
    let used0 = used(0);
    let m = tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    assert_eq!(m.moved * PAGE, m.range.len(), "every page had data");
    assert_eq!(m.never_touched, 0);
    let r = tieralloc::residency(p, n).unwrap();
    assert_eq!(r.device_bytes(0), n);
    assert_eq!(used(0), used0 + m.range.len());
    assert!(
        resident(p, n) <= 2 * PAGE,
        "host memory was not released: {} KiB still resident",
        resident(p, n) / 1024
    );
    check(&v, 1);
    // A read-ahead may still hold the last pages it brought back (the check failed once in a
    // full-suite run with 2 MiB of 32 still migrating): wait for it to publish them.
    let r = settled_residency(p, n);
    assert_eq!(r.host_bytes(), n, "the CPU read brought every page back");
    assert_eq!(used(0), used0);
    assert!(tieralloc::stats().cpu_faults > faults);
}

#[test]
fn migrate_then_cpu_write() {
    let _g = setup();
    let mut v = pattern(2, MIB);
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    for (i, x) in v.iter_mut().enumerate() {
        *x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 3;
    }
    check(&v, 3);
    assert_eq!(tieralloc::residency(p, n).unwrap().host_bytes(), n);
}

#[test]
fn migrate_twice_then_back_explicitly_without_faults() {
    let _g = setup();
    // 2 MiB-aligned, so that no other allocation shares its fault-around blocks or regions: a
    // harness thread faulting on a device-resident neighbour could otherwise bring some of
    // its pages back along with its own.
    let layout = std::alloc::Layout::from_size_align(8 * MIB, 2 * MIB).unwrap();
    // SAFETY: a non-zero size; freed below with the same layout.
    let raw = unsafe { std::alloc::alloc(layout) };
    assert!(!raw.is_null());
    // SAFETY: 8 MiB of u64-aligned memory that only this test uses; written before read.
    let v = unsafe { std::slice::from_raw_parts_mut(raw.cast::<u64>(), MIB) };
    v.copy_from_slice(&pattern(4, MIB));
    let (p, n) = bytes_of(v);
    let first = tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let again = tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    assert_eq!(again.moved, 0);
    assert_eq!(again.already_there * PAGE, again.range.len());
    let faults = tieralloc::stats().cpu_faults;
    let back = tieralloc::migrate(p, n, Tier::Host).unwrap();
    assert_eq!(back.moved, first.moved);
    assert_eq!(
        tieralloc::stats().cpu_faults,
        faults,
        "explicit moves raise no fault"
    );
    assert_eq!(tieralloc::residency(p, n).unwrap().host_bytes(), n);
    check(v, 4);
    // SAFETY: allocated above with this layout; `v` is not used after this.
    unsafe { std::alloc::dealloc(raw, layout) };
}

#[test]
fn a_sequential_read_brings_a_large_buffer_back_with_few_faults_and_intact() {
    let _g = setup();
    // Fault-around doubles from 64 KiB while faults are sequential, up to 16 MiB per fault;
    // past 2 MiB the rest of a run comes back after the reader has resumed (read-ahead), and
    // may race with the reader's own faults on pages still on their way.
    let v = pattern(15, 8 * MIB); // 64 MiB
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let before = tieralloc::stats();
    let sum = v.iter().fold(0u64, |a, x| a.wrapping_add(*x));
    let after = tieralloc::stats();
    let faults = after.cpu_faults - before.cpu_faults;
    // 64 KiB, 128 KiB, ... 16 MiB: 9 faults bring 32 MiB, two or three more the rest. At
    // 2 MiB a fault (the limit before read-ahead) it took 37. In the transparent backend the
    // reader sometimes overtakes a read-ahead (the handler doing it shares the reader's CPU)
    // and the stream restarts small once: 19-20 faults, in about one run in forty.
    let most = if backend() == "uffd" { 28 } else { 16 };
    assert!(
        faults <= most,
        "{faults} faults for a 64 MiB sequential read"
    );
    assert_eq!(after.fault_pages - before.fault_pages, (n / PAGE) as u64);
    assert_eq!(tieralloc::residency(p, n).unwrap().host_bytes(), n);
    assert_eq!(
        sum,
        pattern(15, 8 * MIB)
            .iter()
            .fold(0u64, |a, x| a.wrapping_add(*x))
    );
    check(&v, 15);
}

#[test]
fn device_to_device() {
    let _g = setup();
    let v = pattern(5, MIB);
    let (p, n) = bytes_of(&v);
    let (u0, u1) = (used(0), used(1));
    let m = tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    tieralloc::migrate(p, n, Tier::Device(1)).unwrap();
    let r = tieralloc::residency(p, n).unwrap();
    assert_eq!((r.device_bytes(0), r.device_bytes(1)), (0, n));
    assert_eq!((used(0), used(1)), (u0, u1 + m.range.len()));
    check(&v, 5);
    assert_eq!((used(0), used(1)), (u0, u1));
}

#[test]
fn range_with_never_touched_holes() {
    let _g = setup();
    // vec! of zeros takes fresh (or purged) pages and does not write them.
    tieralloc::trim();
    let mut v = vec![0u64; 2 * MIB]; // 16 MiB = 4096 pages
    let words_per_page = PAGE / 8;
    for page in (0..v.len() / words_per_page).step_by(2) {
        v[page * words_per_page] = page as u64 + 1;
    }
    let (p, n) = bytes_of(&v);
    let m = tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    assert!(
        m.never_touched >= 2000,
        "half the pages were never touched: {m:?}"
    );
    assert!(m.moved >= 2048 && m.moved <= 2050, "{m:?}");
    for (i, &x) in v.iter().enumerate() {
        let page = i / words_per_page;
        let want = if i % words_per_page == 0 && page % 2 == 0 {
            page as u64 + 1
        } else {
            0
        };
        assert_eq!(x, want, "word {i}");
    }
}

#[test]
fn eight_threads_touch_the_same_device_pages() {
    let _g = setup();
    let v = pattern(6, 64 * 1024); // 512 KiB
    let (p, n) = bytes_of(&v);
    for _round in 0..10 {
        tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
        let barrier = Barrier::new(8);
        thread::scope(|s| {
            for t in 0..8 {
                let (v, barrier) = (&v, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    // Each thread starts somewhere else so faults collide on every page.
                    let k = v.len() / 8 * t;
                    for i in (k..v.len()).chain(0..k) {
                        let want = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 6;
                        assert_eq!(v[i], want);
                    }
                });
            }
        });
        assert_eq!(tieralloc::residency(p, n).unwrap().host_bytes(), n);
    }
}

#[test]
fn no_write_is_lost_while_a_third_thread_migrates() {
    let _g = setup();
    // A rare platform fault showed here about once in 20 runs of the shape (a counter 32 or
    // 64 too high: RELIABILITY.md, "Platform"), so the shape runs many times.
    for attempt in 0..10 {
        common::writers_race_a_mover(attempt);
    }
}

#[test]
fn read_syscall_into_a_device_resident_buffer() {
    let _g = setup();
    let mut buf = vec![0u8; 64 * 1024];
    buf.fill(0xEE);
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let data: Vec<u8> = (0..buf.len()).map(|i| (i % 251) as u8).collect();
    let writer = {
        let data = data.clone();
        thread::spawn(move || {
            // SAFETY: fds[1] is the pipe's write end; data is a live buffer.
            let n = unsafe { libc::write(fds[1], data.as_ptr().cast(), data.len()) };
            assert_eq!(n, data.len() as isize);
            // SAFETY: closing our descriptor.
            unsafe { libc::close(fds[1]) };
        })
    };
    tieralloc::migrate(buf.as_ptr(), buf.len(), Tier::Device(0)).unwrap();
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the live buffer's remaining bytes.
        let n = unsafe { libc::read(fds[0], buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap();
            assert_ne!(
                backend(),
                "uffd",
                "the transparent backend serves kernel accesses, got errno {e}"
            );
            assert_eq!(e, libc::EFAULT, "documented: EFAULT in {} mode", backend());
            // The documented remedy: move the buffer to the host before I/O.
            tieralloc::migrate(buf.as_ptr(), buf.len(), Tier::Host).unwrap();
            continue;
        }
        assert!(n > 0, "pipe closed early");
        got += n as usize;
    }
    writer.join().unwrap();
    // SAFETY: closing our descriptor.
    unsafe { libc::close(fds[0]) };
    assert!(buf == data, "read(2) delivered the pipe's bytes");
}

/// Runs `child` in a forked child and returns its wait status.
#[test]
fn fork_child_sees_its_own_copy_of_device_data() {
    let _g = setup();
    let mut v = pattern(7, MIB);
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let vp = v.as_mut_ptr() as usize;
    let status = fork_status(|| {
        // SAFETY: the child's copy of `v`, as in the parent.
        let v = unsafe { std::slice::from_raw_parts_mut(vp as *mut u64, MIB) };
        check(v, 7);
        v.fill(99); // the child's writes must not reach the parent
        let w = pattern(8, MIB / 4);
        let (q, m) = bytes_of(&w);
        tieralloc::migrate(q, m, Tier::Device(0)).unwrap();
        check(&w, 8);
        true
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status}"
    );
    check(&v, 7);
    v[0] = 1;
}

#[test]
fn freeing_device_resident_memory_gives_the_capacity_back() {
    let _g = setup();
    let used0 = used(0);
    let s0 = tieralloc::stats();
    let v = pattern(9, 4 * MIB);
    let (p, n) = bytes_of(&v);
    let m = tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    assert_eq!(used(0), used0 + m.range.len());
    drop(v);
    let s1 = tieralloc::stats();
    assert_eq!(used(0), used0, "device capacity returns after the free");
    assert_eq!(
        s1.cpu_faults, s0.cpu_faults,
        "freeing did not fault pages back"
    );
    assert_eq!(s1.bytes_to_host, s0.bytes_to_host);
    assert!(s1.device_bytes_freed >= s0.device_bytes_freed + n as u64);
    // The freed pages are usable again, and read as zero when fresh.
    let w = vec![0u64; 4 * MIB];
    assert!(w.iter().all(|&x| x == 0));
}

#[test]
fn shrinking_device_resident_memory_gives_the_tail_back_without_faults() {
    let _g = setup();
    let used0 = used(0);
    let mut v = pattern(15, 2 * MIB); // 16 MiB
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let faults = tieralloc::stats().cpu_faults;
    // SAFETY: shrinking the length of a Vec of plain integers drops nothing; no byte is read.
    unsafe { v.set_len(MIB) };
    v.shrink_to_fit(); // realloc in place: the freed tail leaves the device without a fault
    assert_eq!(v.as_ptr().cast::<u8>(), p, "shrunk in place");
    assert_eq!(tieralloc::stats().cpu_faults, faults);
    assert_eq!(used(0), used0 + n / 2);
    check(&v, 15);
    // A read-ahead may still be bringing the last 2 MiB back after the reader had its bytes
    // (a CI run found 496 pages still on the device here): wait for it, as above.
    let (q, m) = bytes_of(&v);
    assert_eq!(
        settled_residency(q, m).host_bytes(),
        m,
        "the read brought it all back"
    );
    assert_eq!(used(0), used0);
}

#[test]
fn bad_input_gets_typed_errors_and_moves_nothing() {
    let _g = setup();
    let local = [0u8; 64];
    assert!(matches!(
        tieralloc::migrate(local.as_ptr(), 64, Tier::Device(0)),
        Err(Error::NotManaged { .. })
    ));
    let v = pattern(10, MIB);
    let (p, n) = bytes_of(&v);
    assert_eq!(
        tieralloc::migrate(p, 0, Tier::Device(0)),
        Err(Error::ZeroLength)
    );
    assert_eq!(
        tieralloc::migrate(p, n, Tier::Device(9)),
        Err(Error::UnknownDevice {
            device: 9,
            devices: 2
        })
    );
    assert!(matches!(
        tieralloc::migrate(p, usize::MAX, Tier::Device(0)),
        Err(Error::RangeOverflow { .. })
    ));
    // More than the device holds: DeviceFull, and every page stays on the host.
    let big = vec![1u8; DEVICE_CAPACITY + 16 * MIB];
    let used0 = used(0);
    let e = tieralloc::migrate(big.as_ptr(), big.len(), Tier::Device(0)).unwrap_err();
    assert!(matches!(e, Error::DeviceFull { device: 0, .. }), "{e}");
    assert!(e.to_string().contains("nothing was moved"));
    assert_eq!(used(0), used0);
    let r = tieralloc::residency(big.as_ptr(), big.len()).unwrap();
    assert_eq!(r.host_bytes(), big.len());
    drop(big);
    // A freed large block: its pages are no longer allocated.
    let gone = vec![3u8; 8 * MIB];
    let (gp, gn) = (gone.as_ptr() as usize, gone.len());
    drop(gone);
    let e = tieralloc::migrate(gp as *const u8, gn, Tier::Device(0)).unwrap_err();
    assert!(matches!(e, Error::NotAllocated { .. }), "{e}");
    check(&v, 10);
}

#[test]
fn residency_covers_exactly_the_queried_bytes() {
    let _g = setup();
    let v = pattern(11, MIB);
    let (p, n) = bytes_of(&v);
    // Move the middle third; query an unaligned window across all three parts.
    let third = n / 3;
    tieralloc::migrate(p.wrapping_add(third), third, Tier::Device(1)).unwrap();
    let (q, len) = (p.wrapping_add(1234), n - 5000);
    let r = tieralloc::residency(q, len).unwrap();
    assert_eq!(r.total(), len);
    assert!(r.device_bytes(1) >= third);
    let runs = r.runs();
    assert_eq!(runs.first().unwrap().0.start, q as usize);
    assert_eq!(runs.last().unwrap().0.end, q as usize + len);
    assert!(runs
        .windows(2)
        .all(|w| w[0].0.end == w[1].0.start && w[0].1 != w[1].1));
    assert_eq!(
        runs.iter().map(|r| r.1).collect::<Vec<_>>(),
        [PageState::Host, PageState::Device(1), PageState::Host]
    );
    check(&v, 11);
}

#[test]
fn a_null_dereference_still_dies_with_sigsegv() {
    let _g = setup();
    let v = pattern(12, 4096);
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap(); // the backend's handlers are installed
    let status = fork_status(|| {
        // SAFETY: deliberately not safe: the child must die of it.
        let x = unsafe { std::ptr::read_volatile(std::ptr::null::<u64>()) };
        x == 0
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
        "status {status}"
    );
    check(&v, 12);
}

#[test]
fn many_alternating_pages() {
    let _g = setup();
    // 25,600 separate device-resident pages: fine with userfaultfd (no kernel mapping per
    // run); the signal backend must refuse with MapCountLimit before the kernel's limit.
    let v = pattern(13, 51_200 * PAGE / 8);
    let base = v.as_ptr() as usize;
    let mut refused = None;
    for page in (0..51_200).step_by(2) {
        match tieralloc::migrate((base + page * PAGE) as *const u8, PAGE, Tier::Device(0)) {
            Ok(_) => {}
            Err(e @ Error::MapCountLimit { .. }) => {
                refused = Some((page, e));
                break;
            }
            Err(e) => panic!("page {page}: {e}"),
        }
    }
    match backend() {
        "signal" => {
            let (page, e) = refused.expect("signal backend must hit its mapping budget");
            assert!(page > 10_000, "refused too early, at page {page}");
            assert!(e.to_string().contains("max_map_count"));
        }
        b => assert!(refused.is_none(), "{b} refused: {refused:?}"),
    }
    check(&v, 13);
}

#[test]
fn each_backend() {
    common::each_backend("ALLOC_TEST_SCENARIO_CHILD", "scenarios");
}

#[test]
fn the_requested_backend_is_the_one_in_use() {
    let _g = setup();
    let v = pattern(14, 512);
    tieralloc::migrate(v.as_ptr().cast(), 4096, Tier::Device(0)).unwrap();
    let want = std::env::var("TIERALLOC_FAULT").unwrap_or_else(|_| "auto".into());
    let got = backend();
    match want.as_str() {
        // As root (CI and the project machine) auto picks the transparent backend.
        // SAFETY: geteuid has no preconditions.
        "auto" if unsafe { libc::geteuid() } == 0 => assert_eq!(got, "uffd"),
        "auto" => assert!(["uffd", "uffd-fast", "signal"].contains(&got)),
        w => assert_eq!(got, w),
    }
    check(&v, 14);
}
