//! The fork gate: everyone who locks page-map entries (migrations, fault-backs, advice, kernel
//! pinning, the heap's take-back) is inside it, and `fork` closes it and waits until nobody is,
//! so a child never inherits a page lock whose owner it does not have. Atomics only:
//! async-signal-safe.

use crate::mem::pagemap;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Migrations and fault-backs in flight, and whether `fork` is waiting for them to finish (a
/// child must never inherit a locked page entry whose owner does not exist there).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static FORKING: AtomicBool = AtomicBool::new(false);

/// Enters the gate, waiting while a fork is being prepared.
pub(crate) fn gate_enter() {
    let mut spins = 0;
    loop {
        while FORKING.load(Ordering::SeqCst) {
            pagemap::backoff(&mut spins);
        }
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if !FORKING.load(Ordering::SeqCst) {
            return;
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Leaves the gate.
pub(crate) fn gate_exit() {
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
}

/// Inside the fork gate while it lives: whoever holds page locks is inside it, so a fork child
/// never inherits a page lock whose owner it does not have.
pub(crate) struct Gate(());

impl Gate {
    /// Enters the gate (waiting while a fork is being prepared).
    pub(crate) fn enter() -> Gate {
        gate_enter();
        Gate(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        gate_exit();
    }
}

/// `fork` preparation: stop new migrations and faults and wait for those in flight.
pub(crate) fn gate_close() {
    FORKING.store(true, Ordering::SeqCst);
    let mut spins = 0;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 {
        pagemap::backoff(&mut spins);
    }
}

/// After `fork`, in parent and child.
pub(crate) fn gate_open() {
    FORKING.store(false, Ordering::SeqCst);
}
