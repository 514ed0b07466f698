//! Threads and time: tieralloc's own raw threads, CPU affinity, thread-exit keys, yielding,
//! sleeping and the monotonic clock. Everything but [`spawn_pinned`] is async-signal-safe.

use core::time::Duration;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};
use nix::unistd::Pid;

/// Gives the CPU to another thread. Async-signal-safe.
#[inline]
pub fn yield_now() {
    let _ = nix::sched::sched_yield();
}

/// Sleeps for `us` microseconds. Async-signal-safe.
pub fn sleep_us(us: u64) {
    sleep_ns(us.saturating_mul(1000));
}

/// Sleeps for `ns` nanoseconds (less if a signal interrupts it). Async-signal-safe.
pub fn sleep_ns(ns: u64) {
    let ts = TimeSpec::from_duration(Duration::from_nanos(ns));
    let _ = clock_nanosleep(ClockId::CLOCK_MONOTONIC, ClockNanosleepFlags::empty(), &ts);
}

/// Nanoseconds of the monotonic clock. Async-signal-safe (vDSO).
#[inline]
pub fn now_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// Milliseconds of the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`: the kernel's last
/// tick, 1-4 ms resolution), for stamps that only need milliseconds. Reading it costs a
/// quarter of the precise clock on this VM (12 against 52 ns a call): the page heap stamps
/// every run it frees, and the precise clock was 18% of a batch of 16 KiB allocations under
/// `perf` (2026-12-02). Async-signal-safe (vDSO).
#[inline]
pub fn coarse_now_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(t) => t.tv_sec() as u64 * 1_000 + t.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}

/// CPU time the calling thread has used, in nanoseconds. Async-signal-safe.
pub fn cpu_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// The CPUs this process may run on, in order, at most `out.len()`; returns how many.
pub fn allowed_cpus(out: &mut [usize]) -> Result<usize, i32> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|e| e as i32)?;
    let mut n = 0;
    for cpu in 0..CpuSet::count() {
        if n == out.len() {
            break;
        }
        if set.is_set(cpu).unwrap_or(false) {
            out[n] = cpu;
            n += 1;
        }
    }
    Ok(n)
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// Starts a detached thread named `name` (at most 15 bytes) running `main(arg)` on a stack of
/// `stack` bytes, with `pthread_create` directly: tieralloc's own service threads must start
/// without allocating from tieralloc (in a `fork` child an allocation may touch a
/// device-resident page whose fault only a running service can serve). `nix` has no
/// `pthread_create`. `Err(errno)` on failure.
pub fn spawn_raw(
    main: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    arg: usize,
    stack: usize,
    name: &core::ffi::CStr,
) -> Result<(), i32> {
    // SAFETY: the attributes are initialised before use and destroyed after; the new thread
    // runs `main` with `arg` passed by value; the name is NUL-terminated.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, stack);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut t: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut t, &attr, main, arg as *mut libc::c_void);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return Err(rc);
        }
        libc::pthread_setname_np(t, name.as_ptr());
    }
    Ok(())
}

/// Ends the calling thread (one started by [`spawn_raw`]).
pub fn exit_thread() -> ! {
    // SAFETY: ends only the calling thread, which holds no locks of ours when it calls this.
    unsafe { libc::pthread_exit(core::ptr::null_mut()) }
}

/// A thread-specific key whose destructor runs at thread exit (`pthread_key_create`; `nix` has
/// no thread keys). Creating one in a static block of keys early does not allocate (glibc).
pub fn exit_key(
    destructor: unsafe extern "C" fn(*mut libc::c_void),
) -> Option<libc::pthread_key_t> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is ours to fill; the destructor is a plain function.
    (unsafe { libc::pthread_key_create(&mut key, Some(destructor)) } == 0).then_some(key)
}

/// Arms `key`'s destructor for the calling thread (a non-null value makes it run).
pub fn arm_exit_key(key: libc::pthread_key_t) {
    // SAFETY: `key` came from exit_key; setting a value for this thread has no other effect.
    unsafe { libc::pthread_setspecific(key, 1 as *const libc::c_void) };
}
