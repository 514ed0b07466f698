//! The handler threads of the transparent (`uffd`) mode: one per CPU, each reading fault
//! messages from the userfaultfd and resolving them. Async-signal-safety is not needed here
//! (these are ordinary threads with every signal blocked), but the loop allocates nothing and
//! takes no lock an allocating thread may hold, as the fault path must not.

use crate::pal::signal::SignalsBlocked;
use crate::pal::{thread, uffd};

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
    SignalsBlocked::forever();
    serve()
}

/// The handler loop: wait for fault messages and resolve each one. Allocates nothing.
fn serve() -> ! {
    let mut faults = [0usize; 16];
    loop {
        match uffd::read_faults(&mut faults) {
            Ok(n) => {
                for &addr in &faults[..n] {
                    super::resolve_queued(addr);
                }
            }
            Err(libc::EBADF) => {
                // The descriptor is gone (it never is while the process uses it): stop serving.
                thread::exit_thread();
            }
            Err(_) => {}
        }
    }
}
