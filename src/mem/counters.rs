//! The global event counters (`tieralloc::stats()` reads them).

use core::sync::atomic::AtomicU64;

/// Event counters of the migration layer. They only go up. Atomics only, so the fault path
/// can count without allocating or locking.
pub(crate) struct Counters {
    /// CPU faults that brought pages back from a device.
    pub cpu_faults: AtomicU64,
    /// Pages those faults brought back (fault-around included).
    pub fault_pages: AtomicU64,
    /// Pages moved host → device.
    pub pages_to_device: AtomicU64,
    /// Pages moved device → host (by faults and by `migrate`).
    pub pages_to_host: AtomicU64,
    /// Pages moved device → device.
    pub pages_device_to_device: AtomicU64,
    /// `migrate` calls that moved or checked pages.
    pub migrations: AtomicU64,
    /// Device-resident pages released by frees (without coming back to the host).
    pub freed_device_pages: AtomicU64,
    /// Pages `realloc` moved to a new block by moving their mappings instead of copying.
    pub realloc_moved_pages: AtomicU64,
    /// Small objects freed by a thread that did not own their span, once their span's owner
    /// (or the heap that adopted it) merged them back (`heap::span::merge`).
    pub remote_frees: AtomicU64,
    /// Device faults: 64 KiB blocks a kernel needed on its device that lived elsewhere.
    pub device_faults: AtomicU64,
    /// Pages those device faults migrated to the kernel's device.
    pub device_fault_pages: AtomicU64,
    /// Pages kernels accessed remotely (left where they were).
    pub remote_pages: AtomicU64,
    /// Kernel launches run.
    pub kernels: AtomicU64,
    /// Prefetches completed.
    pub prefetches: AtomicU64,
    /// Read-only duplicates made on devices (`ReadMostly`), in pages.
    pub dup_pages: AtomicU64,
    /// Duplicates dropped by a CPU write.
    pub dup_invalidations: AtomicU64,
    /// Blocks evicted from full devices.
    pub evictions: AtomicU64,
    /// Pages those evictions moved to the host.
    pub evicted_pages: AtomicU64,
    /// Thrash guards started (a block kept on the host for a while).
    pub thrash_guards: AtomicU64,
    /// Runs moved back to their preferred device after a CPU fault.
    pub returns: AtomicU64,
    /// Time the transfers would take over the devices' links (ns).
    pub simulated_transfer_ns: AtomicU64,
    /// Fresh pages of device-tier allocations created on their device.
    pub placed_on_device: AtomicU64,
    /// Device-tier allocations (or fresh spans) left on the host: device full or unknown.
    pub placement_fallbacks: AtomicU64,
    /// Pages chaos migration (`TIERALLOC_CHAOS`) moved to devices.
    pub chaos_pages: AtomicU64,
    /// Transparent mode: faults the handler threads served.
    pub handler_faults: AtomicU64,
    /// Transparent mode: faults a handler found while it polled after a fault (no wake-up).
    pub handler_poll_hits: AtomicU64,
    /// Transparent mode: fault messages left alone because a move to a device started after
    /// they were queued (their thread, if still waiting, faults again).
    pub stale_faults: AtomicU64,
    /// Transparent mode: time handler threads spent polling for the next fault (ns).
    pub handler_poll_ns: AtomicU64,
}

pub(crate) static COUNTERS: Counters = Counters {
    cpu_faults: AtomicU64::new(0),
    fault_pages: AtomicU64::new(0),
    pages_to_device: AtomicU64::new(0),
    pages_to_host: AtomicU64::new(0),
    pages_device_to_device: AtomicU64::new(0),
    migrations: AtomicU64::new(0),
    freed_device_pages: AtomicU64::new(0),
    realloc_moved_pages: AtomicU64::new(0),
    remote_frees: AtomicU64::new(0),
    device_faults: AtomicU64::new(0),
    device_fault_pages: AtomicU64::new(0),
    remote_pages: AtomicU64::new(0),
    kernels: AtomicU64::new(0),
    prefetches: AtomicU64::new(0),
    dup_pages: AtomicU64::new(0),
    dup_invalidations: AtomicU64::new(0),
    evictions: AtomicU64::new(0),
    evicted_pages: AtomicU64::new(0),
    thrash_guards: AtomicU64::new(0),
    returns: AtomicU64::new(0),
    simulated_transfer_ns: AtomicU64::new(0),
    placed_on_device: AtomicU64::new(0),
    placement_fallbacks: AtomicU64::new(0),
    chaos_pages: AtomicU64::new(0),
    handler_faults: AtomicU64::new(0),
    handler_poll_hits: AtomicU64::new(0),
    stale_faults: AtomicU64::new(0),
    handler_poll_ns: AtomicU64::new(0),
};
