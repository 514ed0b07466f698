//! Signal handling next to tieralloc's own: an application's SIGSEGV handler installed before
//! tieralloc still gets its faults (tieralloc chains to it); one installed after tieralloc that
//! chains to the previous handler keeps device faults working; and a signal handler that reads
//! device-resident memory (a nested fault) while the thread it interrupted is migrating and
//! faulting neither deadlocks nor reads wrong data.
//!
//! Handlers are process-wide, so each case runs in a child process (`ALLOC_TEST_SIGNAL_CASE`),
//! and `each_backend` repeats the file once per fault backend.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tieralloc::{Tier, TierAlloc};

mod common;
use common::*;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

/// The application's own protected page (outside the managed range) and its fault count.
static GUARD: AtomicUsize = AtomicUsize::new(0);
static GUARD_FAULTS: AtomicU64 = AtomicU64::new(0);
/// The handlers that were installed before the application's (for chaining): SIGSEGV, SIGBUS.
// SAFETY: sigaction is plain data; all-zero is SIG_DFL with an empty mask.
static mut PREVIOUS: [libc::sigaction; 2] = unsafe { std::mem::zeroed() };

fn slot(sig: i32) -> usize {
    usize::from(sig == libc::SIGBUS)
}

/// A page the application protects itself and opens in its own handler.
fn make_guard_page() -> *mut u64 {
    // SAFETY: a fresh anonymous mapping, no aliasing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    GUARD.store(p as usize, Ordering::Release);
    p.cast()
}

/// The application's handler: opens its guard page; anything else goes to the handler that
/// was there before it (when `chain` installed it so), or kills.
extern "C" fn app_handler(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: SA_SIGINFO handler: the kernel passes a valid siginfo.
    let addr = unsafe { (*info).si_addr() } as usize;
    let guard = GUARD.load(Ordering::Acquire);
    if guard != 0 && addr & !(PAGE - 1) == guard {
        GUARD_FAULTS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: our own page; mprotect is async-signal-safe.
        unsafe { libc::mprotect(guard as *mut _, PAGE, libc::PROT_READ | libc::PROT_WRITE) };
        return;
    }
    // SAFETY: PREVIOUS was written before this handler was installed.
    let prev = unsafe { (&raw const PREVIOUS).read() }[slot(sig)];
    if prev.sa_sigaction != libc::SIG_DFL && prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO handler has this signature.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(prev.sa_sigaction) };
        return f(sig, info, ctx);
    }
    // SAFETY: restoring the default action; the faulting access then kills the process.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

fn install_app_handler() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a valid SA_SIGINFO action; the previous one is saved for chaining, before
        // this handler can run.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = app_handler as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut act.sa_mask);
            assert_eq!(libc::sigaction(sig, &act, &raw mut PREVIOUS[slot(sig)]), 0);
        }
    }
}

/// Device faults work and the application's own guard-page fault reaches its handler.
fn device_and_guard_faults_both_work() {
    let v = pattern(1, 4 * MIB / 8);
    let (p, n) = bytes_of(&v);
    for _ in 0..5 {
        tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
        check(&v, 1);
    }
    let guard = make_guard_page();
    // SAFETY: the guard page is ours; the first write faults and the app handler opens it.
    unsafe { guard.write_volatile(42) };
    // SAFETY: as above, now readable.
    assert_eq!(unsafe { guard.read_volatile() }, 42);
    assert_eq!(GUARD_FAULTS.load(Ordering::Relaxed), 1);
    assert!(tieralloc::stats().cpu_faults > 0);
}

fn case_before() {
    install_app_handler(); // before tieralloc's backend starts (at the first migration)
    device_and_guard_faults_both_work();
}

fn case_after() {
    let warm = vec![1u8; PAGE];
    tieralloc::migrate(warm.as_ptr(), PAGE, Tier::Host).unwrap(); // tieralloc's handler is in
    install_app_handler(); // and chains to it
    device_and_guard_faults_both_work();
}

/// Read by the SIGUSR1 handler: device-resident most of the time.
static SHARED: AtomicUsize = AtomicUsize::new(0);
static SHARED_LEN: AtomicUsize = AtomicUsize::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);
static BAD: AtomicU64 = AtomicU64::new(0);

extern "C" fn usr1(_: i32) {
    let (p, n) = (
        SHARED.load(Ordering::Acquire) as *const u64,
        SHARED_LEN.load(Ordering::Acquire),
    );
    if p.is_null() {
        return;
    }
    // SAFETY: SHARED points to a live Vec<u64> of n words for the whole test; reading device
    // memory here is the point (a fault inside a signal handler).
    let words = unsafe { std::slice::from_raw_parts(p, n) };
    let i = (HANDLED.fetch_add(1, Ordering::Relaxed) as usize * 4099) % n;
    let want = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 7;
    if words[i] != want {
        BAD.fetch_add(1, Ordering::Relaxed);
    }
}

fn case_nested() {
    let shared = pattern(7, 2 * MIB / 8);
    SHARED_LEN.store(shared.len(), Ordering::Release);
    SHARED.store(shared.as_ptr() as usize, Ordering::Release);
    // SAFETY: installing a plain handler for SIGUSR1.
    unsafe { libc::signal(libc::SIGUSR1, usr1 as *const () as usize) };
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `me` is alive until `stop` is set and this thread joined.
                unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let watchdog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for _ in 0..600 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("deadlock: nested faults in a signal handler did not finish in 60 s");
            std::process::abort();
        })
    };
    let mine = pattern(8, 2 * MIB / 8);
    let (ps, ns) = bytes_of(&shared);
    let (pm, nm) = bytes_of(&mine);
    for _ in 0..200 {
        tieralloc::migrate(ps, ns, Tier::Device(0)).unwrap();
        tieralloc::migrate(pm, nm, Tier::Device(1)).unwrap();
        check(&mine, 8); // faults, interrupted by handlers that fault too
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    watchdog.join().unwrap();
    SHARED.store(0, Ordering::Release);
    check(&shared, 7);
    println!("summary: {} handlers ran", HANDLED.load(Ordering::Relaxed));
    assert!(HANDLED.load(Ordering::Relaxed) > 50);
    assert_eq!(BAD.load(Ordering::Relaxed), 0, "a handler read wrong data");
}

/// Runs the case named by `ALLOC_TEST_SIGNAL_CASE` (a no-op in the parent).
#[test]
fn case() {
    let Ok(name) = std::env::var("ALLOC_TEST_SIGNAL_CASE") else {
        return;
    };
    tieralloc::set_devices(&[("dev0", 64 * MIB), ("dev1", 64 * MIB)]).unwrap();
    match name.as_str() {
        "before" => case_before(),
        "after" => case_after(),
        "nested" => case_nested(),
        other => panic!("unknown case {other}"),
    }
}

fn run_case(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "case", "--nocapture", "--test-threads=1"])
        .env("ALLOC_TEST_SIGNAL_CASE", name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "case {name} ({}):\n{stdout}\n{}",
        backend_name(),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(i) = stdout.find("summary:") {
        println!("{name}: {}", stdout[i..].lines().next().unwrap_or(""));
    }
}

fn backend_name() -> String {
    std::env::var("TIERALLOC_FAULT").unwrap_or_else(|_| "auto".into())
}

#[test]
fn an_application_handler_installed_before_tieralloc_still_gets_its_faults() {
    run_case("before");
}

#[test]
fn an_application_handler_installed_after_tieralloc_can_chain_to_it() {
    run_case("after");
}

#[test]
fn signal_handlers_may_read_device_memory_while_their_thread_migrates() {
    run_case("nested");
}

#[test]
fn each_backend() {
    common::each_backend("ALLOC_TEST_SIGNALS_CHILD", "signal tests");
}
