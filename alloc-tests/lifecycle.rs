//! Process and thread lifecycle with pages on devices: a `fork` child keeps working (reads,
//! allocates, migrates, runs kernels, while the parent's handler threads do not exist there);
//! `exec` after `fork`; a thread that exits while its pages are on a device; a process that
//! exits with pages on devices and a kernel just done (no hang, stats printed when asked).
//!
//! Runs in-process with the default backend, and once per backend through `each_backend`.

use std::process::Command;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};
use tieralloc::{Tier, TierAlloc};

mod common;
use common::*;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

fn setup() -> MutexGuard<'static, ()> {
    serial_with_devices(&[("dev0", 128 * MIB), ("dev1", 128 * MIB)])
}

#[test]
fn a_fork_child_reads_allocates_migrates_and_runs_kernels() {
    let _g = setup();
    let v = pattern(1, 2 * MIB / 8);
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    let code = in_child(|| {
        check(&v, 1); // device-resident at fork: faults back in the child
        let mut w = pattern(2, MIB / 8);
        let (q, m) = bytes_of(&w);
        tieralloc::migrate(q, m, Tier::Device(1)).unwrap();
        check(&w, 2);
        tieralloc::device(0)
            .unwrap()
            .run(&mut w[..], |w| w.iter_mut().for_each(|x| *x ^= 5))
            .unwrap();
        assert_eq!(w[3], pattern(2, 4)[3] ^ 5);
        let z = tieralloc::with_tier(Tier::Device(1), || vec![0u8; 4 * MIB]);
        assert!(z.iter().all(|&b| b == 0));
        // The child can fork again.
        in_child(|| {
            check(&v, 1);
            true
        }) == 0
    });
    assert_eq!(code, 0, "the child failed");
    // The parent's data is still on the device, intact.
    assert_eq!(tieralloc::residency(p, n).unwrap().device_bytes(0), n);
    check(&v, 1);
}

#[test]
fn exec_after_fork_with_device_pages() {
    let _g = setup();
    let v = pattern(3, MIB / 8);
    let (p, n) = bytes_of(&v);
    tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    // Prepared before fork: the child only execs.
    let sh = c"/bin/sh";
    let args = [
        sh.as_ptr(),
        c"-c".as_ptr(),
        c"exit 7".as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: the child calls only execv and _exit (async-signal-safe).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: argv is a NULL-terminated array of C strings that live on this stack.
        unsafe {
            libc::execv(sh.as_ptr(), args.as_ptr());
            libc::_exit(99);
        }
    }
    let mut status = 0;
    // SAFETY: pid is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7,
        "{status}"
    );
    // And through std (which allocates before exec).
    let out = Command::new("/bin/sh")
        .args(["-c", "echo hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    check(&v, 3);
}

#[test]
fn a_thread_exits_while_its_pages_are_on_a_device() {
    let _g = setup();
    for t in 0..4u64 {
        // One thread at a time: no other CPU activity moves pages while we compare.
        let (v, small, on_device) = std::thread::spawn(move || {
            // Small device-tier objects made by this thread, freed after it exited.
            let small: Vec<Box<[u8; 64]>> = tieralloc::with_tier(Tier::Device(0), || {
                (0..100).map(|_| Box::new([t as u8; 64])).collect()
            });
            let v = pattern(10 + t, MIB / 8);
            let (p, n) = bytes_of(&v);
            tieralloc::migrate(p, n, Tier::Device(t as u16 % 2)).unwrap();
            let on_device = tieralloc::residency(p, n).unwrap().all_device_bytes();
            (v, small, on_device)
        })
        .join()
        .unwrap();
        let (p, n) = bytes_of(&v);
        assert_eq!(on_device, n);
        assert_eq!(
            tieralloc::residency(p, n).unwrap().all_device_bytes(),
            n,
            "the thread's exit left its pages where they were"
        );
        check(&v, 10 + t);
        assert!(small.iter().all(|b| b.iter().all(|&x| x == t as u8)));
    }
}

/// The body of the exit test's child: pages on both devices, a kernel just run, then return
/// from `main` (well, from the test) and let the process exit.
#[test]
fn exit_child_body() {
    if std::env::var_os("ALLOC_TEST_EXIT_CHILD").is_none() {
        return;
    }
    tieralloc::set_devices(&[("dev0", 128 * MIB), ("dev1", 128 * MIB)]).unwrap();
    let mut v = pattern(4, 32 * MIB / 8);
    let w = pattern(5, 32 * MIB / 8);
    let (q, m) = bytes_of(&w);
    tieralloc::migrate(q, m, Tier::Device(1)).unwrap();
    tieralloc::device(0)
        .unwrap()
        .run(&mut v[..], |v| v.iter_mut().for_each(|x| *x += 1))
        .unwrap();
    let _p = tieralloc::prefetch(q, m, Tier::Device(0)).unwrap(); // maybe still running at exit
    std::mem::forget((v, w)); // still on the devices when the process goes
}

#[test]
fn a_process_exits_promptly_with_pages_on_devices_and_prints_stats() {
    let _g = setup();
    let start = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "exit_child_body", "--test-threads=1"])
        .env("ALLOC_TEST_EXIT_CHILD", "1")
        .env("TIERALLOC_STATS", "1")
        .output()
        .unwrap();
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("tieralloc stats") && err.contains("kernels         1"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "exit took {took:?}");
}

#[test]
fn each_backend() {
    common::each_backend("ALLOC_TEST_LIFECYCLE_CHILD", "lifecycle tests");
}
