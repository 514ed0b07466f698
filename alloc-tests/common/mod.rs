//! Helpers shared by the integration tests: data patterns that reveal any lost or misplaced
//! word, residency probes, and the runner that repeats a test file once per fault backend.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard, Once};

pub const MIB: usize = 1 << 20;

/// The tests of a binary share the devices and the counters: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
static DEVICES: Once = Once::new();

/// Takes the binary's test lock; the first call configures `devices` (name, bytes).
pub fn serial_with_devices(devices: &[(&str, usize)]) -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    DEVICES.call_once(|| {
        tieralloc::set_devices(devices).expect("devices are configured before any device use");
    });
    g
}
pub const PAGE: usize = 4096;

/// `n` words where word `i` depends on `i` and `seed`: a lost write or a page landing at the
/// wrong place changes some word.
pub fn pattern(seed: u64, n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed)
        .collect()
}

/// Asserts that `v` still holds `pattern(seed, v.len())`.
pub fn check(v: &[u64], seed: u64) {
    for (i, &x) in v.iter().enumerate() {
        let want = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        assert_eq!(x, want, "word {i} changed");
    }
}

/// A slice as the (pointer, byte length) pair the tieralloc API takes.
pub fn bytes_of<T>(v: &[T]) -> (*const u8, usize) {
    (v.as_ptr().cast(), std::mem::size_of_val(v))
}

/// Allocates 16 KiB blocks until one of the four pages after `[p, p+len)` is handed out, so
/// that a `realloc` growing the block by more than three pages cannot grow in place and must
/// move it (a free gap shorter than a 16 KiB block stays free, and is too short to grow into).
/// The blocks are returned to be kept alive meanwhile.
pub fn block_after(p: *const u8, len: usize) -> Vec<Vec<u8>> {
    let next = (p as usize + len).next_multiple_of(PAGE) as *const u8;
    // Cached freed runs read as handed out, yet a growing block may take them: release them.
    tieralloc::trim();
    let mut keep = Vec::new();
    while tieralloc::residency(next, 4 * PAGE).unwrap().free_bytes() == 4 * PAGE {
        assert!(
            keep.len() < 1 << 16,
            "the page after the block never got handed out"
        );
        keep.push(vec![1u8; 16 << 10]);
    }
    keep
}

/// Bytes device `d` holds now.
pub fn used(d: usize) -> usize {
    tieralloc::devices().unwrap()[d].used
}

/// The fault backend in use.
pub fn backend() -> &'static str {
    tieralloc::stats().fault_backend
}

/// Resident host bytes of `[p, p+len)`, from mincore(2).
pub fn resident(p: *const u8, len: usize) -> usize {
    let start = p as usize & !(PAGE - 1);
    let pages = (p as usize + len - start).div_ceil(PAGE);
    let mut vec = vec![0u8; pages];
    // SAFETY: the range is mapped (managed range); `vec` has one byte per page.
    let rc = unsafe { libc::mincore(start as *mut _, pages * PAGE, vec.as_mut_ptr()) };
    assert_eq!(rc, 0);
    vec.iter().filter(|&&b| b & 1 != 0).count() * PAGE
}

/// Runs this test binary again in a child per fault backend (`TIERALLOC_FAULT`), skipping the
/// test that calls this; `child_var` marks the children, which return at once from here.
/// What a child prints after `summary:` is repeated, prefixed with the backend.
pub fn each_backend(child_var: &str, what: &str) {
    if std::env::var_os(child_var).is_some() {
        return;
    }
    for backend in ["uffd", "uffd-fast", "signal"] {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--test-threads=1", "--nocapture", "--skip", "each_backend"])
            .env("TIERALLOC_FAULT", backend)
            .env(child_var, "1");
        let (ok, stdout, stderr) = run_with_watchdog(cmd, BACKEND_WATCHDOG);
        assert!(
            ok && stdout.contains("test result: ok"),
            "{what} failed with TIERALLOC_FAULT={backend}:\n{stdout}\n{stderr}"
        );
        // Children report figures on lines that start with "summary:".
        for line in stdout
            .lines()
            .filter_map(|l| l.find("summary:").map(|i| &l[i..]))
        {
            println!("{backend}: {line}");
        }
    }
}

/// How long one backend's run of a test file may take before it counts as hung: the longest
/// takes about 40 s on this project's 2-vCPU machines.
const BACKEND_WATCHDOG: std::time::Duration = std::time::Duration::from_secs(600);

/// For a test that needs a process of its own (one where the devices do not exist yet, say):
/// in the test process, runs test `name` of this binary again in a fresh process with `env`,
/// under a one-minute watchdog, asserts that it passed, and returns true (the caller returns).
/// In that fresh process, returns false: the caller goes on with the test's body.
pub fn ran_in_fresh_process(name: &str, env: &[(&str, &str)]) -> bool {
    const FRESH: &str = "ALLOC_TEST_FRESH_PROCESS";
    if std::env::var_os(FRESH).is_some() {
        return false;
    }
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(FRESH, "1")
        .envs(env.iter().copied());
    let (ok, stdout, stderr) = run_with_watchdog(cmd, std::time::Duration::from_secs(60));
    assert!(
        ok && stdout.contains("1 passed"),
        "{name} failed in its own process:\n{stdout}\n{stderr}"
    );
    true
}

/// Runs `cmd` to its end, or kills it once `limit` has passed (a hang is a failure, not a
/// stuck CI). Returns whether it exited with status 0, and its stdout and stderr.
pub fn run_with_watchdog(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
) -> (bool, String, String) {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    // A process group of its own: the watchdog kills the child's forked children too. A hung
    // grandchild would otherwise keep the pipes open, and reading them to their end would
    // hang this process.
    let mut child = cmd
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while the child runs, so a full pipe cannot stall it.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: kill(2) of the child's process group (its pid, see above) only sends a
            // signal.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (stdout, mut stderr) = (out.join().unwrap(), err.join().unwrap());
    if status.is_none() {
        stderr.push_str(&format!(
            "\nwatchdog: killed after {} s (hung)",
            limit.as_secs()
        ));
    }
    (status.is_some_and(|s| s.success()), stdout, stderr)
}

/// Capacity of the small third device of [`serial_with_three_devices`], for eviction.
pub const SMALL: usize = 16 * MIB;

/// [`serial_with_devices`] with `dev0` and `dev1` of 256 MiB and `small` of 16 MiB, and the
/// default (adaptive) policy back in place.
pub fn serial_with_three_devices() -> MutexGuard<'static, ()> {
    let g = serial_with_devices(&[("dev0", 256 * MIB), ("dev1", 256 * MIB), ("small", SMALL)]);
    tieralloc::set_policy(tieralloc::policy::Adaptive::default());
    g
}

/// Runs `child` in a `fork`ed child and returns its raw wait status (exit code 0: `child`
/// returned true).
pub fn fork_status(child: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the child runs `child` and `_exit`s without returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false);
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // A watchdog: a child that hangs (a lock another thread held at the fork, say) fails the
    // test instead of stalling the run. Generous: under valgrind a child that aborts took
    // 20-100 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut status = 0;
    loop {
        // SAFETY: pid is our child; WNOHANG returns at once.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        assert_eq!(r, 0, "waitpid failed");
        if std::time::Instant::now() > deadline {
            // SAFETY: pid is our child, still running; it is killed and reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("a forked child hung for 300 s and was killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Asserts that freeing a block of layout `l` twice through `a` aborts (in a forked child)
/// instead of letting two later allocations share the block. The calls go to the allocator
/// directly: `std::alloc::alloc` pairs may be optimised away.
pub fn assert_double_free_aborts<A: std::alloc::GlobalAlloc>(a: &A, l: std::alloc::Layout) {
    assert_second_free_aborts(a, l, || {});
}

/// [`assert_double_free_aborts`] with `between` run between the two frees.
pub fn assert_second_free_aborts<A: std::alloc::GlobalAlloc>(
    a: &A,
    l: std::alloc::Layout,
    between: impl FnOnce(),
) {
    assert_child_aborts(&format!("a double free of {} B", l.size()), || {
        // SAFETY: a valid layout; the second dealloc is the bug under test.
        unsafe {
            let p = a.alloc(l);
            a.dealloc(p, l);
            between();
            a.dealloc(p, l);
            let x = a.alloc(l);
            let y = a.alloc(l);
            x != y
        }
    });
}

/// Runs `child` in a forked child and asserts that it ended with `SIGABRT` (tieralloc's
/// answer to a double free); `what` names the bug in the failure message.
pub fn assert_child_aborts(what: &str, child: impl FnOnce() -> bool) {
    let status = fork_status(child);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
        "{what} did not abort (status {status:#x})"
    );
}

/// [`fork_status`], failing the test if the child died of a signal; returns its exit code.
pub fn in_child(child: impl FnOnce() -> bool) -> i32 {
    let status = fork_status(child);
    assert!(
        libc::WIFEXITED(status),
        "child died with signal {}",
        libc::WTERMSIG(status)
    );
    libc::WEXITSTATUS(status)
}

/// A small random number generator (xorshift64*), one per thread.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// The host or one of devices 0 and 1, evenly.
    pub fn tier(&mut self) -> tieralloc::Tier {
        match self.below(3) {
            0 => tieralloc::Tier::Host,
            d => tieralloc::Tier::Device(d as u16 - 1),
        }
    }
}

/// The expected byte `i` of an object whose content was written with `seed`.
#[inline]
pub fn byte(seed: u64, i: usize) -> u8 {
    let x = (seed ^ (i as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x >> (8 * (i & 7))) as u8 ^ (x >> 59) as u8
}

/// Writes the pattern of `seed` into `buf`.
pub fn fill(buf: &mut [u8], seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte(seed, i);
    }
}

/// The first byte of `buf` that differs from the pattern of `seed`, if any.
pub fn first_bad(buf: &[u8], seed: u64) -> Option<usize> {
    buf.iter()
        .enumerate()
        .position(|(i, &b)| b != byte(seed, i))
}

/// The seed of a random test: the variable `var` if set (to replay a run), else the clock.
/// Printed as `var=seed`, so a failing run says how to repeat it.
pub fn seed_from(var: &str) -> u64 {
    let s = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("{var}={s}");
    s
}

/// Runs random test `f` with the seed of `TIERALLOC_TEST_SEED` ([`seed_from`]) in a forked
/// child ([`fork_status`]), and fails with the seed to replay unless the child finished
/// cleanly: an object handed out twice usually ends in an abort, which must still say the seed.
pub fn seeded_in_child(what: &str, f: impl FnOnce(u64)) {
    let seed = seed_from("TIERALLOC_TEST_SEED");
    let status = fork_status(|| {
        f(seed);
        true
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what} failed (status {status:#x}); rerun with TIERALLOC_TEST_SEED={seed}"
    );
}

/// tieralloc's internal invariants once nothing runs. Work can outlive the call that started
/// it (a userfaultfd handler thread finishing a read-ahead after the faulting thread went on, a
/// device worker finishing a prefetch) and hold page locks for a moment: the check is retried
/// for up to half a second; a broken invariant stays broken.
pub fn settled_invariants() -> Result<(), tieralloc::Invalid> {
    let mut last = Ok(());
    for _ in 0..50 {
        last = tieralloc::check_invariants();
        if last.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    last
}

/// Where `[p, p+len)` lives once no page of it is held by a migration or a fault-back: as
/// [`settled_invariants`], work that outlived the call that started it may hold a page's lock
/// for a moment (a read-ahead still bringing 2 MiB back after the reader had its bytes: retried
/// for up to 5 s; a page that stays held is reported as such).
pub fn settled_residency(p: *const u8, len: usize) -> tieralloc::Residency {
    let mut r = tieralloc::residency(p, len).unwrap();
    for _ in 0..500 {
        if r.migrating_bytes() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        r = tieralloc::residency(p, len).unwrap();
    }
    r
}

/// Asserts [`settled_invariants`].
pub fn assert_invariants(what: &str) {
    if let Err(e) = settled_invariants() {
        panic!("{what}: {e}");
    }
}

/// Two writers own alternate counters spread over the same 16 pages; a third thread moves
/// those pages between host, device 0 and device 1 as fast as it can. Each writer checks that
/// every counter holds what it left there (a lost write shows as a lower value, an invented
/// one as a higher).
pub fn writers_race_a_mover(attempt: usize) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tieralloc::Tier;
    let counters: Vec<AtomicU64> = (0..16 * PAGE / 8).map(|_| AtomicU64::new(0)).collect();
    let (p, n) = bytes_of(&counters);
    let p = p as usize;
    let stop = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    const ROUNDS: u64 = 2000;
    let (migrations, wrong) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (counters, stop, started) = (&counters, &stop, &started);
                s.spawn(move || {
                    while !started.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    // The first surprise per counter: (round, counter, value found).
                    let mut wrong = Vec::new();
                    for round in 0..ROUNDS {
                        for (i, c) in counters.iter().enumerate().skip(w).step_by(2) {
                            let found = c.fetch_add(1, Ordering::Relaxed);
                            if found != round && wrong.len() < 8 {
                                wrong.push((round, i, found));
                            }
                        }
                    }
                    stop.fetch_or(w == 1, Ordering::Relaxed);
                    wrong
                })
            })
            .collect();
        let (stop, started) = (&stop, &started);
        let mover = s.spawn(move || {
            let tiers = [
                Tier::Device(0),
                Tier::Host,
                Tier::Device(1),
                Tier::Device(0),
            ];
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                tieralloc::migrate(p as *const u8, n, tiers[k % tiers.len()]).unwrap();
                k += 1;
                started.store(true, Ordering::Release);
            }
            k
        });
        let wrong: Vec<_> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (mover.join().unwrap(), wrong)
    });
    assert!(
        wrong.is_empty(),
        "attempt {attempt}: counters not as their writer left them, (round, counter, found): \
         {wrong:?}"
    );
    for (i, c) in counters.iter().enumerate() {
        assert_eq!(c.load(Ordering::Relaxed), ROUNDS, "counter {i} lost writes");
    }
    assert!(migrations > 1, "the mover ran alongside the writers");
}
