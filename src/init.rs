//! Start-up and `fork` handling, in one place.
//!
//! Start-up runs bottom-up, each step on first use and once:
//! 1. `mem::ensure_init`: reserve the managed range, map the page map and the block counters
//!    (from the heap's first allocation, or from the devices' start, whichever comes first);
//! 2. the heap's own tables (`heap::ensure_init`), then [`HeapHooks::started`]: register the
//!    fork handlers below and, with `TIERALLOC_STATS=1`, the stats table at exit;
//! 3. on the first device operation (`tiering::migrate::start_devices`): the device pools, the
//!    link model and the trace, then page claims (`heap::pages::enable_claims`);
//! 4. on the first migration (`tiering::migrate::start_backend`): the fault backend, handed the
//!    function that resolves its faults.
//!
//! [`HeapHooks`] binds the heap to the tiering layer at compile time: the allocator façade
//! (`TierAlloc`, `TierAllocator`) calls `heap::alloc::<HeapHooks>` and friends.

use crate::device::{self, worker};
use crate::heap::{self, Hooks};
use crate::mem::gate::{gate_close, gate_open};
use crate::mem::pagemap;
use crate::mem::scope::TierIndex;
use crate::pal::{process, sys};
use crate::tiering::{freed, placement, relocate};
use crate::{config, fault};
use core::sync::atomic::Ordering;

/// The heap's calls upward, bound to the tiering layer.
pub(crate) struct HeapHooks;

impl Hooks for HeapHooks {
    #[inline(always)]
    fn prepare(t: TierIndex) -> TierIndex {
        placement::prepare(t)
    }

    #[inline]
    fn place_fresh(page: usize, n: usize, d: u16) -> bool {
        placement::place_fresh(page, n, d)
    }

    #[inline]
    fn reads_as_zero(p: usize, len: usize) -> bool {
        placement::reads_as_zero(p, len)
    }

    #[inline]
    fn claim_freed(page: usize, n: usize) {
        freed::claim_freed(page, n)
    }

    #[inline]
    fn tier_of_run(page: usize, n: usize) -> TierIndex {
        relocate::tier_of_run(page, n)
    }

    #[inline]
    fn copy_block(dst: usize, src: usize, len: usize) {
        relocate::copy_block(dst, src, len)
    }

    fn started() {
        // Before any thread of ours runs (see `sys::open_pagemap`). If it fails, page-map
        // reads try again and fail as they do without `/proc`.
        let _ = sys::open_pagemap();
        process::at_fork(fork_prepare, fork_parent, fork_child);
        if config::stats_at_exit() {
            crate::report::stats::print_at_exit();
        }
    }
}

/// Before `fork`: the device list, the locks of the fault backend's start-up and chunk
/// registration, the worker table, every heap lock, and last the gate (no migration or fault
/// in flight). The order matters:
/// - none of these locks is ever waited for inside the gate, so waiting for them first cannot
///   wait for the gate;
/// - the heap locks come before the gate: a thread holding one may be interrupted by a signal
///   handler that touches device memory, and its fault needs the gate open to finish.
extern "C" fn fork_prepare() {
    device::lock_for_fork();
    fault::lock_for_fork();
    worker::lock_for_fork();
    heap::lock_all();
    gate_close();
}

/// Releases the locks [`fork_prepare`] took (not the gate).
///
/// # Safety
/// This thread (or, in a fork child, its copy) ran `fork_prepare`.
unsafe fn release_fork_locks() {
    // SAFETY: forwarded contract.
    unsafe {
        heap::unlock_all();
        worker::unlock_after_fork();
        fault::unlock_after_fork();
        device::unlock_after_fork();
    }
}

extern "C" fn fork_parent() {
    gate_open();
    // SAFETY: fork_prepare ran in this thread.
    unsafe { release_fork_locks() };
}

/// The child has one thread: locks and gate go first (restarting the fault service starts
/// handler threads, which allocates); it has no kernels, so the pins it inherited go too.
extern "C" fn fork_child() {
    // SAFETY: the child is a copy of the thread that ran fork_prepare.
    unsafe { release_fork_locks() };
    sys::reopen_pagemap_in_child();
    pagemap::clear_pins(heap::pages::TOP.load(Ordering::Relaxed));
    heap::purge::forget_thread_after_fork();
    gate_open();
    fault::restart_in_child();
    crate::api::chaos::bring_home_in_fork_child();
}
