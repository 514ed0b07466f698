//! The handler threads of the transparent (`uffd`) mode: one per CPU, each reading fault
//! messages from the userfaultfd and resolving them. Async-signal-safety is not needed here
//! (these are ordinary threads with every signal blocked), but the loop allocates nothing and
//! takes no lock an allocating thread may hold, as the fault path must not.

use crate::mem::counters::COUNTERS;
use crate::mem::pagemap;
use crate::pal::signal::SignalsBlocked;
use crate::pal::{thread, uffd};
use core::sync::atomic::Ordering;

/// Starts one handler thread per CPU this process may run on (at most 8), each pinned to its
/// CPU: a fault is then served by the handler on the faulting CPU, without a cross-CPU wake-up
/// (6.8 us instead of ~50 us per fault on the project machine, see physics.md).
///
/// The threads are started with `pthread_create` directly, not `std::thread`: starting them
/// must not allocate from tieralloc, because in a `fork` child an allocation may touch a
/// device-resident page, whose fault only a running handler can serve.
pub fn spawn_handlers() -> Result<(), i32> {
    let mut cpus = [0usize; 8];
    let n = thread::allowed_cpus(&mut cpus)?;
    for &cpu in &cpus[..n] {
        thread::spawn_raw(handler_main, cpu, 256 << 10, c"tieralloc-fault")?;
    }
    Ok(())
}

extern "C" fn handler_main(cpu: *mut libc::c_void) -> *mut libc::c_void {
    thread::pin_to(cpu as usize);
    // Without it a handler that lost a message to another would sleep in `read` until the
    // next fault; if it fails, reads block as before and the handlers still serve (polling
    // then only ever finds the messages it waits for).
    let _ = uffd::set_nonblocking();
    SignalsBlocked::forever();
    serve()
}

/// Polling window after a fault: it starts here, doubles each time a fault comes within it
/// and halves each time none does. Measured with `fault_report` on the project machine
/// (bursts of write faults 1-10 µs of work apart): a 5-50 µs window found 65-98% of a burst's
/// faults while polling and cost the same per burst fault as a 10-200 µs one (28-32 µs of
/// handler CPU, the faults it served included); for faults 2 ms apart it costs 7 µs of CPU
/// per fault, against 12 µs for the 10-200 µs window.
const POLL_MIN_NS: u64 = 5_000;
/// At most this long: the CPU a handler spends polling for a burst that does not come.
const POLL_MAX_NS: u64 = 50_000;

/// The handler loop: wait for fault messages and resolve each one. Allocates nothing.
///
/// Faults come in bursts. After a fault a handler keeps polling the descriptor for a short,
/// adaptive window before it sleeps again (as the kernel's halt-polling and io_uring's SQPOLL
/// idle do), so the next fault of a burst finds it awake: no wake-up of a sleeping thread,
/// and on a VM no wake-up of a halted vCPU. It yields between polls, so the faulting thread,
/// which runs on the same CPU, is not kept waiting. The time spent polling is counted
/// (`Stats::handler_poll_ns`: the CPU time of the polling, faults it served included), beside
/// the faults served.
fn serve() -> ! {
    let mut faults = [0usize; 16];
    let mut window = POLL_MIN_NS;
    loop {
        uffd::wait_message(None);
        // Before the read: every message read below was queued after this (see `Resolver`).
        let epoch = pagemap::to_device_epoch();
        match uffd::read_faults(&mut faults) {
            Ok(n) => resolve_all(&faults[..n], epoch),
            Err(libc::EBADF) => {
                // The descriptor is gone (it never is while the process uses it): stop serving.
                thread::exit_thread();
            }
            // Another handler read it first.
            Err(_) => continue,
        }
        let cpu = thread::cpu_ns();
        let mut since = thread::now_ns();
        loop {
            if uffd::wait_message(Some(0)) {
                let epoch = pagemap::to_device_epoch();
                if let Ok(n @ 1..) = uffd::read_faults(&mut faults) {
                    COUNTERS
                        .handler_poll_hits
                        .fetch_add(n as u64, Ordering::Relaxed);
                    resolve_all(&faults[..n], epoch);
                    window = (window * 2).min(POLL_MAX_NS);
                    since = thread::now_ns();
                    continue;
                }
            }
            if thread::now_ns() - since > window {
                window = (window / 2).max(POLL_MIN_NS);
                break;
            }
            thread::yield_now();
        }
        COUNTERS
            .handler_poll_ns
            .fetch_add(thread::cpu_ns().saturating_sub(cpu), Ordering::Relaxed);
    }
}

fn resolve_all(faults: &[usize], epoch: usize) {
    COUNTERS
        .handler_faults
        .fetch_add(faults.len() as u64, Ordering::Relaxed);
    crate::pal::inject::stall(crate::pal::inject::Point::QueuedFaultStall);
    for &addr in faults {
        super::resolve_queued(addr, epoch);
    }
}
