//! The handler threads of the transparent (`uffd`) mode: one per CPU, each reading fault
//! messages from the userfaultfd and resolving them. Async-signal-safety is not needed here
//! (these are ordinary threads with every signal blocked), but the loop allocates nothing and
//! takes no lock an allocating thread may hold, as the fault path must not.

use crate::pal::{sys, uffd};

/// Starts one handler thread per CPU this process may run on (at most 8), each pinned to its
/// CPU: a fault is then served by the handler on the faulting CPU, without a cross-CPU wake-up
/// (6.8 us instead of ~50 us per fault on the project machine, see physics.md).
///
/// The threads are started with `pthread_create` directly, not `std::thread`: starting them
/// must not allocate from tieralloc, because in a `fork` child an allocation may touch a
/// device-resident page, whose fault only a running handler can serve.
pub fn spawn_handlers() -> Result<(), i32> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, core::mem::size_of_val(&set), &mut set) } != 0 {
        return Err(sys::errno());
    }
    let mut started = 0;
    for cpu in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: cpu is below CPU_SETSIZE.
        if started == 8 || !unsafe { libc::CPU_ISSET(cpu, &set) } {
            continue;
        }
        // SAFETY: attributes are initialised before use and destroyed after; the thread runs
        // `handler_main`, which never returns and takes its CPU number by value.
        let rc = unsafe {
            let mut attr: libc::pthread_attr_t = core::mem::zeroed();
            libc::pthread_attr_init(&mut attr);
            libc::pthread_attr_setstacksize(&mut attr, 256 << 10);
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            let mut t: libc::pthread_t = 0;
            let rc = libc::pthread_create(&mut t, &attr, handler_main, cpu as *mut libc::c_void);
            libc::pthread_attr_destroy(&mut attr);
            if rc == 0 {
                libc::pthread_setname_np(t, c"tieralloc-fault".as_ptr());
            }
            rc
        };
        if rc != 0 {
            return Err(rc);
        }
        started += 1;
    }
    Ok(())
}

fn pin_to(cpu: usize) {
    // SAFETY: plain data, filled below.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE (it came from sched_getaffinity); pinning only the calling thread.
    unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of_val(&set), &set);
    }
}

extern "C" fn handler_main(cpu: *mut libc::c_void) -> *mut libc::c_void {
    pin_to(cpu as usize);
    sys::SignalsBlocked::forever();
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
                // SAFETY: ends only this handler thread.
                unsafe { libc::pthread_exit(core::ptr::null_mut()) };
            }
            Err(_) => {}
        }
    }
}
