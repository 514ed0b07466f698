//! Race stress: the shapes the concurrency review found bugs in, all at once, with an oracle.
//!
//! - **Owners** allocate objects (small, medium, large; some on device tiers), write a pattern,
//!   publish their address ranges, and free or reallocate them while other threads work on
//!   those very ranges. Some objects are published before their first touch, and the owner
//!   writes them page by page while a mover migrates them (first touches racing migrations).
//! - **Movers** take published ranges, live or already freed and handed out again, and
//!   migrate, prefetch or advise them (a free page is `NotAllocated`; a reused one is someone
//!   else's live memory and must stay intact). The second device is small, so migrations to it
//!   evict.
//! - A **kernel** thread runs kernels on its objects that capture a neighbour sharing a page
//!   with the argument, and read a shared object through another reference.
//! - A **forker** forks while all of this runs; the child checks its copy of a read-mostly
//!   object with a duplicate, writes it, runs a kernel on it and exits.
//! - A **signal** thread interrupts an owner with a handler that reads device-resident memory.
//!
//! Every object is checked against its pattern when it is read, reallocated, freed and at the
//! end. At the end each device's `used` must equal exactly the device-resident and duplicated
//! bytes that `residency` counts over the whole heap, before and after everything is freed.
//!
//! `STRESS_SECS` (default 3) per backend, `STRESS_SEED` to replay a run (every failure prints
//! the seed). Each backend runs in a child process under a watchdog. The last line printed is
//! `N passed, N failed`.

use std::alloc::{GlobalAlloc, Layout};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tieralloc::{Advice, Tier, TierAlloc};

mod common;
use common::{byte, fill, first_bad, Rng};

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

const PAGE: usize = 4096;
const DEVICES: u16 = 2;

/// Sizes from 1 B to 3 MiB, most of them small.
fn size(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0..=3 => 1 + rng.below(256) as usize,
        4..=5 => 1 + rng.below(16 << 10) as usize,
        6 => 1 + rng.below(256 << 10) as usize,
        _ => 1 + rng.below(3 << 20) as usize,
    }
}

fn check(buf: &[u8], seed: u64, what: &str) {
    if let Some(i) = first_bad(buf, seed) {
        panic!(
            "{what}: byte {i} of {} at {:#x} is {:#04x}, expected {:#04x} (STRESS_SEED={})",
            buf.len(),
            buf.as_ptr() as usize + i,
            buf[i],
            byte(seed, i),
            run_seed()
        );
    }
}

static SEED: AtomicU64 = AtomicU64::new(0);
fn run_seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

/// Ranges published for the movers: (address, length). Entries are overwritten in a ring, so
/// movers often get ranges that were freed and handed out again since.
struct Board {
    slots: Vec<(AtomicUsize, AtomicUsize)>,
    next: AtomicUsize,
}

impl Board {
    fn new(n: usize) -> Board {
        Board {
            slots: (0..n)
                .map(|_| (AtomicUsize::new(0), AtomicUsize::new(0)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }
    fn publish(&self, p: *const u8, len: usize) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].1.store(0, Ordering::Relaxed);
        self.slots[i].0.store(p as usize, Ordering::Relaxed);
        self.slots[i].1.store(len, Ordering::Relaxed);
    }
    fn pick(&self, rng: &mut Rng) -> Option<(*const u8, usize)> {
        let s = &self.slots[rng.below(self.slots.len() as u64) as usize];
        let (p, n) = (s.0.load(Ordering::Relaxed), s.1.load(Ordering::Relaxed));
        (p != 0 && n != 0).then_some((p as *const u8, n))
    }
}

struct Obj {
    v: Vec<u8>,
    seed: u64,
}

struct Shared {
    board: Board,
    stop: AtomicBool,
    ops: AtomicU64,
    frees: AtomicU64,
    reallocs: AtomicU64,
    first_touch: AtomicU64,
    moves: AtomicU64,
    not_allocated: AtomicU64,
    kernels: AtomicU64,
    forks: AtomicU64,
    signals: AtomicU64,
    /// An object that stays device-resident for the signal handler to read: address, length,
    /// seed.
    sig_obj: (AtomicUsize, AtomicUsize, AtomicU64),
    sig_bad: AtomicU64,
}

fn owner(id: u64, sh: &Shared) {
    let mut rng = Rng(run_seed() ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut objs: Vec<Obj> = Vec::new();
    while !sh.stop.load(Ordering::Relaxed) {
        sh.ops.fetch_add(1, Ordering::Relaxed);
        let op = rng.below(100);
        if objs.len() < 16 || (op < 25 && objs.len() < 300) {
            let size = size(&mut rng);
            let seed = rng.next();
            let mut v = match rng.below(5) {
                0 => tieralloc::with_tier(Tier::Device(rng.below(DEVICES as u64) as u16), || {
                    vec![0u8; size]
                }),
                _ => vec![0u8; size],
            };
            sh.board.publish(v.as_ptr(), v.len());
            fill(&mut v, seed);
            objs.push(Obj { v, seed });
            continue;
        }
        let k = rng.below(objs.len() as u64) as usize;
        match op {
            // Free while movers may be working on it.
            25..=44 => {
                let o = objs.swap_remove(k);
                check(&o.v, o.seed, "before free");
                sh.frees.fetch_add(1, Ordering::Relaxed);
            }
            // Realloc: the prefix survives.
            45..=64 => {
                let o = &mut objs[k];
                let old = o.v.len();
                let new = size(&mut rng);
                if new > old {
                    o.v.resize(new, 0);
                } else {
                    o.v.truncate(new);
                    o.v.shrink_to_fit();
                }
                check(&o.v[..old.min(new)], o.seed, "realloc prefix");
                o.seed = rng.next();
                fill(&mut o.v, o.seed);
                sh.board.publish(o.v.as_ptr(), o.v.len());
                sh.reallocs.fetch_add(1, Ordering::Relaxed);
            }
            // First touches racing a migration of the same fresh memory.
            65..=72 => {
                let n = (1 + rng.below(512) as usize) * PAGE;
                let l = Layout::from_size_align(n, PAGE).unwrap();
                // SAFETY: a valid layout; freed below.
                let p = unsafe { A.alloc(l) };
                assert!(!p.is_null());
                sh.board.publish(p, n);
                let seed = rng.next();
                // SAFETY: `p` is ours for `n` bytes until the dealloc below.
                let buf = unsafe { std::slice::from_raw_parts_mut(p, n) };
                for page in (0..n / PAGE).rev() {
                    fill(&mut buf[page * PAGE..(page + 1) * PAGE], seed ^ page as u64);
                }
                for page in 0..n / PAGE {
                    check(
                        &buf[page * PAGE..(page + 1) * PAGE],
                        seed ^ page as u64,
                        "first touch during a migration",
                    );
                }
                // SAFETY: allocated above with `l`.
                unsafe { A.dealloc(p, l) };
                sh.first_touch.fetch_add(1, Ordering::Relaxed);
            }
            // Read back (faults device pages home).
            73..=89 => check(&objs[k].v, objs[k].seed, "CPU read"),
            // Rewrite.
            _ => {
                let o = &mut objs[k];
                o.seed = rng.next();
                fill(&mut o.v, o.seed);
            }
        }
    }
    for o in objs {
        check(&o.v, o.seed, "owner's object at the end");
    }
}

fn mover(id: u64, sh: &Shared) {
    let mut rng = Rng(run_seed() ^ 0xabcd ^ (id + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut pending = Vec::new();
    while !sh.stop.load(Ordering::Relaxed) {
        let Some((p, n)) = sh.board.pick(&mut rng) else {
            std::thread::yield_now();
            continue;
        };
        let r = match rng.below(10) {
            0..=4 => tieralloc::migrate(p, n, rng.tier()).map(|_| ()),
            5..=7 => tieralloc::prefetch(p, n, rng.tier()).map(|pf| {
                if rng.below(2) == 0 {
                    pending.push(pf);
                } else {
                    let _ = pf.wait();
                }
            }),
            8 => tieralloc::advise(p, n, Advice::ReadMostly).and_then(|()| {
                tieralloc::migrate(p, n, Tier::Device(rng.below(DEVICES as u64) as u16)).map(|_| ())
            }),
            _ => tieralloc::advise(p, n, Advice::Reset),
        };
        match r {
            Ok(()) => {}
            Err(tieralloc::Error::NotAllocated { .. }) => {
                sh.not_allocated.fetch_add(1, Ordering::Relaxed);
            }
            Err(tieralloc::Error::DeviceFull { .. }) => {}
            Err(e) => panic!("mover: {e} (STRESS_SEED={})", run_seed()),
        }
        sh.moves.fetch_add(1, Ordering::Relaxed);
        if pending.len() > 8 {
            for pf in pending.drain(..) {
                let _ = pf.wait();
            }
        }
    }
    for pf in pending {
        let _ = pf.wait();
    }
}

fn kernels(sh: &Shared) {
    let mut rng = Rng(run_seed() ^ 0x5eed);
    let shared = Arc::new(vec![7u64; 128 * 1024]);
    while !sh.stop.load(Ordering::Relaxed) {
        let d = rng.below(DEVICES as u64) as u16;
        let dev = tieralloc::device(d).unwrap();
        // A small argument with a captured neighbour on its page.
        let n = 1 + rng.below(64) as usize;
        let table: Vec<u32> = (0..n as u32).collect();
        let mut out = vec![0u32; n];
        let seed = rng.next() as u32;
        let r = dev.run(&mut out[..], move |o| {
            for (i, x) in o.iter_mut().enumerate() {
                *x = table[i] ^ seed;
            }
        });
        if r.is_ok() {
            assert!(
                out.iter().enumerate().all(|(i, &x)| x == i as u32 ^ seed),
                "kernel with a captured neighbour (STRESS_SEED={})",
                run_seed()
            );
        }
        // A shared argument also read through another reference, while the CPU reads it.
        let s2 = shared.clone();
        let sum = Arc::new(AtomicU64::new(0));
        let sum2 = sum.clone();
        let r = dev.run(&shared[..], move |v| {
            sum2.store(v[5] + s2[100_000], Ordering::Relaxed)
        });
        if r.is_ok() {
            assert_eq!(sum.load(Ordering::Relaxed), 14);
        }
        assert_eq!(shared[77_777], 7);
        sh.kernels.fetch_add(1, Ordering::Relaxed);
    }
}

fn forker(sh: &Shared) {
    let mut rng = Rng(run_seed() ^ 0xf0f0);
    while !sh.stop.load(Ordering::Relaxed) {
        let seed = rng.next();
        let mut v = vec![0u8; 256 * 1024];
        fill(&mut v, seed);
        let (p, n) = (v.as_ptr(), v.len());
        let _ = tieralloc::advise(p, n, Advice::ReadMostly);
        let _ = tieralloc::migrate(p, n, Tier::Device(0));
        let vp = v.as_mut_ptr() as usize;
        let code = common::fork_status(move || {
            // SAFETY: the child's copy of `v`, used by this thread alone.
            let v = unsafe { std::slice::from_raw_parts_mut(vp as *mut u8, 256 * 1024) };
            check(v, seed, "fork child's copy");
            v[0] ^= 0xff;
            let ok = tieralloc::device(0)
                .unwrap()
                .run(&mut v[..], |v| v[1] ^= 0xff)
                .is_ok();
            v[0] ^= 0xff;
            v[1] ^= 0xff;
            check(v, seed, "fork child after its writes");
            ok
        });
        assert!(
            libc::WIFEXITED(code) && libc::WEXITSTATUS(code) == 0,
            "fork child failed: status {code:#x} (STRESS_SEED={})",
            run_seed()
        );
        check(&v, seed, "parent after a fork");
        let _ = tieralloc::advise(p, n, Advice::Reset);
        sh.forks.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }
}

static SHARED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_usr1(_: i32) {
    // SAFETY: SHARED points to the live `Shared` for as long as the handler is installed.
    let sh = unsafe { &*(SHARED.load(Ordering::Acquire) as *const Shared) };
    let (p, n, seed) = (
        sh.sig_obj.0.load(Ordering::Acquire),
        sh.sig_obj.1.load(Ordering::Acquire),
        sh.sig_obj.2.load(Ordering::Acquire),
    );
    if p == 0 {
        return;
    }
    // Reads device-resident memory inside a signal handler (a nested fault in the fast and
    // signal backends). Only a few bytes: the handler runs on an alternate stack.
    for i in (0..n).step_by(PAGE * 7 + 1) {
        // SAFETY: the object stays alive while the handler can run (see `signaller`).
        let b = unsafe { std::ptr::read_volatile((p + i) as *const u8) };
        if b != byte(seed, i) {
            sh.sig_bad.fetch_add(1, Ordering::Relaxed);
        }
    }
    sh.signals.fetch_add(1, Ordering::Relaxed);
}

fn signaller(sh: &Shared, target: libc::pthread_t) {
    let mut rng = Rng(run_seed() ^ 0x5151);
    let seed = rng.next();
    let mut v = vec![0u8; 1 << 20];
    fill(&mut v, seed);
    sh.sig_obj.1.store(v.len(), Ordering::Release);
    sh.sig_obj.2.store(seed, Ordering::Release);
    sh.sig_obj.0.store(v.as_ptr() as usize, Ordering::Release);
    while !sh.stop.load(Ordering::Relaxed) {
        let _ = tieralloc::migrate(v.as_ptr(), v.len(), Tier::Device(rng.below(2) as u16));
        // SAFETY: the target thread lives until `stop` is seen and joined after us.
        unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_micros(500 + rng.below(2000)));
    }
    // Block the handler's access before the object goes.
    sh.sig_obj.0.store(0, Ordering::Release);
    std::thread::sleep(Duration::from_millis(10));
    check(&v, seed, "signal handler's object");
}

/// Device `used` against what the page map says lives on each device, over the whole heap.
/// Reading both allocates (and a new object may sit on a device page, which then faults back),
/// so the check is repeated until nothing changed while it read.
fn check_accounting(what: &str) {
    let range = tieralloc::managed_range();
    let snapshot = || {
        let used: Vec<usize> = tieralloc::devices()
            .unwrap()
            .iter()
            .map(|d| d.used)
            .collect();
        (used, tieralloc::stats().cpu_faults)
    };
    for attempt in 0.. {
        let before = snapshot();
        let used_len = tieralloc::stats().arena_used;
        let r = tieralloc::residency(range.start as *const u8, used_len.max(PAGE)).unwrap();
        let after = snapshot();
        if before != after && attempt < 50 {
            continue;
        }
        // The purge thread locks the pages of a cached run it releases for as long as it takes
        // their frames back (the check saw 50 pages so, once in a full-suite run): a leaked
        // lock stays, a purge's goes within milliseconds.
        if r.migrating_bytes() > 0 && attempt < 500 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        assert_eq!(
            r.migrating_bytes(),
            0,
            "{what}: pages are still locked with nothing running (STRESS_SEED={})",
            run_seed()
        );
        for (d, &used) in after.0.iter().enumerate() {
            let resident = r.device_bytes(d as u16) + r.duplicated_bytes(d as u16);
            assert_eq!(
                used,
                resident,
                "{what}: device {d} counts {used} bytes used, the page map has {resident} \
                 device-resident (STRESS_SEED={})",
                run_seed()
            );
        }
        common::assert_invariants(&format!("{what} (STRESS_SEED={})", run_seed()));
        return;
    }
}

fn stress() {
    tieralloc::set_devices(&[("dev0", 128 << 20), ("dev1", 16 << 20)]).unwrap();
    let secs: u64 = std::env::var("STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let sh: &'static Shared = Box::leak(Box::new(Shared {
        board: Board::new(64),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        frees: AtomicU64::new(0),
        reallocs: AtomicU64::new(0),
        first_touch: AtomicU64::new(0),
        moves: AtomicU64::new(0),
        not_allocated: AtomicU64::new(0),
        kernels: AtomicU64::new(0),
        forks: AtomicU64::new(0),
        signals: AtomicU64::new(0),
        sig_obj: (AtomicUsize::new(0), AtomicUsize::new(0), AtomicU64::new(0)),
        sig_bad: AtomicU64::new(0),
    }));
    SHARED.store(sh as *const Shared as usize, Ordering::Release);
    // SAFETY: a plain handler for SIGUSR1, installed before any thread can receive it.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_usr1 as *const () as usize;
        act.sa_flags = libc::SA_RESTART;
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()),
            0
        );
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = Arc::new(Mutex::new(None));
    let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
        let failed = failed.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                    sh.stop.store(true, Ordering::Relaxed);
                    failed.lock().unwrap().get_or_insert(p);
                }
            })
            .unwrap()
    };
    // `STRESS_SHAPES` (comma-separated: movers, kernels, fork, signals) narrows a run down to
    // some shapes when hunting a failure; the owners always run.
    let shapes = std::env::var("STRESS_SHAPES").unwrap_or_else(|_| "all".into());
    let on = |s: &str| shapes == "all" || shapes.split(',').any(|x| x == s);
    let mut threads = vec![
        spawn(
            "owner0",
            Box::new(move || {
                // SAFETY: pthread_self has no preconditions.
                tx.send(unsafe { libc::pthread_self() }).unwrap();
                owner(0, sh)
            }),
        ),
        spawn("owner1", Box::new(move || owner(1, sh))),
    ];
    if on("movers") {
        threads.push(spawn("mover0", Box::new(move || mover(0, sh))));
        threads.push(spawn("mover1", Box::new(move || mover(1, sh))));
    }
    if on("kernels") {
        threads.push(spawn("kernels", Box::new(move || kernels(sh))));
    }
    if on("fork") {
        threads.push(spawn("forker", Box::new(move || forker(sh))));
    }
    let target = rx.recv().unwrap();
    if on("signals") {
        threads.push(spawn("signals", Box::new(move || signaller(sh, target))));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut next_report = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !sh.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() > next_report {
            next_report += Duration::from_secs(30);
            let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
            eprintln!(
                "progress: {} owner ops, {} moves, {} kernels, {} forks, {} signals",
                c(&sh.ops),
                c(&sh.moves),
                c(&sh.kernels),
                c(&sh.forks),
                c(&sh.signals)
            );
        }
    }
    sh.stop.store(true, Ordering::Relaxed);
    threads.drain(..).rev().for_each(|t| t.join().unwrap());
    if let Some(p) = failed.lock().unwrap().take() {
        std::panic::resume_unwind(p);
    }
    assert_eq!(
        sh.sig_bad.load(Ordering::Relaxed),
        0,
        "a signal handler read wrong data"
    );
    check_accounting("right after the threads");
    // Objects of this thread are still live: accounting with live device memory, then after
    // everything is freed and trimmed.
    let keep: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            let v = vec![i as u8; 300 * 1024];
            let _ = tieralloc::migrate(v.as_ptr(), v.len(), Tier::Device(i % DEVICES));
            v
        })
        .collect();
    check_accounting("with live objects");
    for (i, v) in keep.iter().enumerate() {
        assert!(v.iter().all(|&b| b == i as u8));
    }
    drop(keep);
    tieralloc::trim();
    check_accounting("after every object was freed");
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "summary: race stress {secs} s on {}: {} owner ops ({} frees, {} reallocs, {} first-touch \
         races), {} moves ({} hit freed memory), {} kernels, {} forks, {} signal-handler reads; \
         STRESS_SEED={}",
        tieralloc::stats().fault_backend,
        c(&sh.ops),
        c(&sh.frees),
        c(&sh.reallocs),
        c(&sh.first_touch),
        c(&sh.moves),
        c(&sh.not_allocated),
        c(&sh.kernels),
        c(&sh.forks),
        c(&sh.signals),
        run_seed()
    );
    if shapes == "all" {
        assert!(c(&sh.kernels) > 0 && c(&sh.moves) > 0 && c(&sh.forks) > 0);
    }
}

/// A hung child's threads, from gdb when it is installed (to find what waits for what).
fn print_stacks(pid: u32) {
    let out = Command::new("gdb")
        .args([
            "-q",
            "-batch",
            "-p",
            &pid.to_string(),
            "-ex",
            "thread apply all bt 25",
        ])
        .output();
    match out {
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if line.starts_with("Thread") || (line.starts_with('#') && !line.contains(" std::"))
                {
                    println!("  {line}");
                }
            }
        }
        Err(e) => println!("(no stacks: gdb not available: {e})"),
    }
}

fn main() {
    let seed = common::seed_from("STRESS_SEED");
    SEED.store(seed, Ordering::Relaxed);
    if std::env::var_os("RACE_STRESS_CHILD").is_some() {
        stress();
        return;
    }
    let secs: u64 = std::env::var("STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (mut passed, mut failed) = (0, 0);
    for backend in ["uffd", "uffd-fast", "signal"] {
        let t = Instant::now();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("RACE_STRESS_CHILD", "1")
            .env("TIERALLOC_FAULT", backend)
            .env("STRESS_SEED", seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The watchdog: a hang is a failure.
        let limit = Duration::from_secs(secs + 60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if t.elapsed() > limit {
                print_stacks(child.id());
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stdout.lines().filter(|l| l.contains("summary:")) {
            println!("{backend}: {line}");
        }
        match status {
            Some(s) if s.success() => passed += 1,
            other => {
                failed += 1;
                println!(
                    "race stress FAILED on {backend} ({}), STRESS_SEED={seed}\n{stdout}\n{}",
                    match other {
                        None => "hung: killed by the watchdog".to_string(),
                        Some(s) => s.to_string(),
                    },
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}
