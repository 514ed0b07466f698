//! Counters and snapshots of what tieralloc holds.

use crate::device::DeviceInfo;
use crate::heap;
use crate::heap::pages::PAGES;
use crate::mem::counters::COUNTERS;
use crate::mem::{arena, pagemap};
use crate::pal::sys;
use crate::{device, fault};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the allocator's state. Byte counts; "resident" figures are measured with
/// `mincore(2)` when the snapshot is taken.
///
/// ```
/// let s = tieralloc::stats();
/// println!("{s}");
/// assert!(s.arena_size == 0 || s.arena_used <= s.arena_size);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Start of the managed range (0 before the first allocation).
    pub arena_base: usize,
    /// Size of the managed range (address space reserved, not memory).
    pub arena_size: usize,
    /// Size that was asked for (`TIERALLOC_ARENA` or the 64 GiB default).
    pub arena_requested: usize,
    /// High-water mark: bytes of the managed range ever handed out.
    pub arena_used: usize,
    /// Bytes of the managed range resident in host memory now.
    pub host_resident: usize,
    /// Bytes in live small-object spans (objects, free or not, of 64 and 128 KiB spans).
    pub span_bytes: usize,
    /// Live small-object spans.
    pub spans: usize,
    /// Bytes in live large allocations (page-rounded).
    pub large_bytes: usize,
    /// Bytes in free page runs.
    pub free_bytes: usize,
    /// Bytes of free page runs that may still be resident (purged past 32 MiB).
    pub dirty_bytes: usize,
    /// Bytes given back to the OS after being freed, ever.
    pub purged_bytes: u64,
    /// Bytes `realloc` moved to a new block by moving pages rather than copying bytes.
    pub realloc_moved_bytes: u64,
    /// Small objects freed by another thread than the one whose heap owns their span, counted
    /// when they are back in their span (merged by its owner, or the heap that adopted it;
    /// objects still waiting in a buffer or for the merge are not counted yet). Counts since
    /// the start.
    pub remote_frees: u64,
    /// Resident bytes of allocator metadata: page map, span table, run tags, span bitmaps.
    pub metadata_bytes: usize,
    /// The fault backend in use (`uffd`, `uffd-fast`, `signal`), or `none` before the first
    /// migration.
    pub fault_backend: &'static str,
    /// CPU faults that brought pages back from a device.
    pub cpu_faults: u64,
    /// Pages those faults brought back (with fault-around).
    pub fault_pages: u64,
    /// Bytes moved host → device.
    pub bytes_to_device: u64,
    /// Bytes moved device → host (faults and explicit migrations).
    pub bytes_to_host: u64,
    /// Bytes moved between devices.
    pub bytes_device_to_device: u64,
    /// `migrate` calls.
    pub migrations: u64,
    /// Bytes of device-resident memory freed without coming back to the host.
    pub device_bytes_freed: u64,
    /// Device faults: 64 KiB blocks a kernel needed on its device that lived elsewhere.
    pub device_faults: u64,
    /// Bytes those device faults migrated.
    pub device_fault_bytes: u64,
    /// Bytes kernels accessed remotely, without migrating them.
    pub remote_bytes: u64,
    /// Kernel launches run.
    pub kernels: u64,
    /// Prefetches completed.
    pub prefetches: u64,
    /// Bytes of read-only duplicates made on devices (`ReadMostly`).
    pub duplicated_bytes: u64,
    /// Duplicates dropped by a CPU write.
    pub duplicate_invalidations: u64,
    /// Blocks evicted from full devices.
    pub evictions: u64,
    /// Bytes evictions moved to the host.
    pub evicted_bytes: u64,
    /// Thrash guards started.
    pub thrash_guards: u64,
    /// Time all transfers would take over the devices' links (see `set_link`), in ns.
    pub simulated_transfer_ns: u64,
    /// Bytes of device-tier allocations created directly on their device (no host memory, no
    /// copy; see [`with_tier`](crate::with_tier)).
    pub placed_on_device: u64,
    /// Device-tier allocations (or fresh spans of them) left on the host because the device
    /// was full or does not exist.
    pub placement_fallbacks: u64,
    /// Bytes chaos migration (`TIERALLOC_CHAOS`, [`chaos`](crate::chaos)) moved to devices;
    /// [`fault_pages`](Self::fault_pages) counts what CPU touches brought back.
    pub chaos_bytes: u64,
    /// How long chaos migration has run in this process, in nanoseconds (0 if it never
    /// started).
    pub chaos_running_ns: u64,
    /// Transparent (`uffd`) mode: faults the handler threads served.
    pub handler_faults: u64,
    /// Of those, faults a handler found while it polled after the previous one (the burst
    /// went on, and no sleeping thread had to be woken).
    pub handler_poll_hits: u64,
    /// Fault messages a handler left alone: it read them before a move to a device started,
    /// and the page is on a device when it gets to them. Their thread was woken by another
    /// fault-back meanwhile, or is woken now and faults again.
    pub stale_faults: u64,
    /// CPU time the handler threads spent polling for the next fault, in ns, the faults
    /// found meanwhile included (polling lasts at most 50 µs after each fault, adaptively
    /// less when faults are isolated).
    pub handler_poll_ns: u64,
    /// The placement policy in use.
    pub policy: String,
    /// The devices, with capacity and bytes used.
    pub devices: Vec<DeviceInfo>,
}

/// Takes a snapshot of the allocator's counters.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let before = tieralloc::stats();
/// let v = vec![1u8; 1 << 20];
/// tieralloc::migrate(v.as_ptr(), v.len(), tieralloc::Tier::Device(0)).unwrap();
/// let after = tieralloc::stats();
/// assert!(after.bytes_to_device >= before.bytes_to_device + (1 << 20));
/// println!("{after}");
/// ```
pub fn stats() -> Stats {
    if !heap::is_ready() {
        return Stats::default();
    }
    let (counts, tags) = {
        let p = PAGES.lock();
        (p.counts(), p.tags_resident_bytes())
    };
    let page = sys::PAGE_SIZE;
    Stats {
        arena_base: arena::base(),
        arena_size: arena::size(),
        arena_requested: arena::requested(),
        arena_used: counts.top * page,
        host_resident: arena::resident_bytes(counts.top * page),
        span_bytes: counts.span_pages * page,
        spans: heap::span::live_spans(),
        large_bytes: counts.large * page,
        free_bytes: counts.free * page,
        dirty_bytes: counts.dirty * page,
        purged_bytes: counts.purged * page as u64,
        realloc_moved_bytes: pages_to_bytes(&COUNTERS.realloc_moved_pages),
        remote_frees: COUNTERS.remote_frees.load(Ordering::Relaxed),
        metadata_bytes: pagemap::resident_bytes()
            + heap::span::table_resident_bytes()
            + tags
            + heap::meta::bytes(),
        fault_backend: fault::backend().map_or("none", |b| b.name()),
        cpu_faults: COUNTERS.cpu_faults.load(Ordering::Relaxed),
        fault_pages: COUNTERS.fault_pages.load(Ordering::Relaxed),
        bytes_to_device: pages_to_bytes(&COUNTERS.pages_to_device),
        bytes_to_host: pages_to_bytes(&COUNTERS.pages_to_host),
        bytes_device_to_device: pages_to_bytes(&COUNTERS.pages_device_to_device),
        migrations: COUNTERS.migrations.load(Ordering::Relaxed),
        device_bytes_freed: pages_to_bytes(&COUNTERS.freed_device_pages),
        device_faults: COUNTERS.device_faults.load(Ordering::Relaxed),
        device_fault_bytes: pages_to_bytes(&COUNTERS.device_fault_pages),
        remote_bytes: pages_to_bytes(&COUNTERS.remote_pages),
        kernels: COUNTERS.kernels.load(Ordering::Relaxed),
        prefetches: COUNTERS.prefetches.load(Ordering::Relaxed),
        duplicated_bytes: pages_to_bytes(&COUNTERS.dup_pages),
        duplicate_invalidations: COUNTERS.dup_invalidations.load(Ordering::Relaxed),
        evictions: COUNTERS.evictions.load(Ordering::Relaxed),
        evicted_bytes: pages_to_bytes(&COUNTERS.evicted_pages),
        thrash_guards: COUNTERS.thrash_guards.load(Ordering::Relaxed),
        simulated_transfer_ns: COUNTERS.simulated_transfer_ns.load(Ordering::Relaxed),
        placed_on_device: pages_to_bytes(&COUNTERS.placed_on_device),
        placement_fallbacks: COUNTERS.placement_fallbacks.load(Ordering::Relaxed),
        chaos_bytes: pages_to_bytes(&COUNTERS.chaos_pages),
        chaos_running_ns: crate::api::chaos::running_ns(),
        handler_faults: COUNTERS.handler_faults.load(Ordering::Relaxed),
        handler_poll_hits: COUNTERS.handler_poll_hits.load(Ordering::Relaxed),
        stale_faults: COUNTERS.stale_faults.load(Ordering::Relaxed),
        handler_poll_ns: COUNTERS.handler_poll_ns.load(Ordering::Relaxed),
        policy: crate::tiering::policy::name(),
        devices: device::infos(),
    }
}

/// `TIERALLOC_STATS=1`: prints the stats table on stderr when the process exits (`exit(3)`
/// or returning from `main`; not `_exit` or a fatal signal).
pub(crate) fn print_at_exit() {
    extern "C" fn print() {
        use std::io::Write;
        // Exit handlers run after `main`: the heap still works, so formatting may allocate.
        let _ = writeln!(std::io::stderr(), "{}", stats());
    }
    crate::pal::process::at_exit(print);
}

fn pages_to_bytes(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed) * sys::PAGE_SIZE as u64
}

/// Formats a byte count with a binary unit (`12.0 MiB`).
///
/// ```
/// assert_eq!(tieralloc::Bytes(3 << 20).to_string(), "3.0 MiB");
/// assert_eq!(tieralloc::Bytes(512).to_string(), "512 B");
/// ```
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut u = 0;
        while v >= 1024.0 && u < UNITS.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[u])
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = |v: usize| Bytes(v as u64);
        writeln!(f, "tieralloc stats")?;
        writeln!(
            f,
            "  managed range   {:#x} .. {:#x} ({} reserved)",
            self.arena_base,
            self.arena_base + self.arena_size,
            b(self.arena_size)
        )?;
        writeln!(f, "  used (high)     {}", b(self.arena_used))?;
        writeln!(f, "  host resident   {}", b(self.host_resident))?;
        writeln!(
            f,
            "  small spans     {} in {} spans",
            b(self.span_bytes),
            self.spans
        )?;
        writeln!(f, "  large runs      {}", b(self.large_bytes))?;
        writeln!(
            f,
            "  free runs       {} ({} dirty)",
            b(self.free_bytes),
            b(self.dirty_bytes)
        )?;
        writeln!(f, "  purged (total)  {}", Bytes(self.purged_bytes))?;
        writeln!(
            f,
            "  realloc moved   {} (pages moved, not copied)",
            Bytes(self.realloc_moved_bytes)
        )?;
        writeln!(
            f,
            "  remote frees    {} (small objects freed by another thread, back in their span)",
            self.remote_frees
        )?;
        writeln!(f, "  metadata        {}", b(self.metadata_bytes))?;
        writeln!(f, "  fault backend   {}", self.fault_backend)?;
        writeln!(
            f,
            "  migrations      {} calls; to device {}, to host {}, device to device {}",
            self.migrations,
            Bytes(self.bytes_to_device),
            Bytes(self.bytes_to_host),
            Bytes(self.bytes_device_to_device)
        )?;
        writeln!(
            f,
            "  cpu faults      {} ({} brought back)",
            self.cpu_faults,
            Bytes(self.fault_pages * sys::PAGE_SIZE as u64)
        )?;
        writeln!(
            f,
            "  kernels         {} launches; {} device faults ({} migrated), {} remote",
            self.kernels,
            self.device_faults,
            Bytes(self.device_fault_bytes),
            Bytes(self.remote_bytes)
        )?;
        writeln!(
            f,
            "  placement       {} created on devices, {} fallbacks to host",
            Bytes(self.placed_on_device),
            self.placement_fallbacks
        )?;
        writeln!(
            f,
            "  read-mostly     {} duplicated, {} invalidated by CPU writes",
            Bytes(self.duplicated_bytes),
            self.duplicate_invalidations
        )?;
        writeln!(
            f,
            "  policy          {}: {} evictions ({}), {} thrash guards, {} prefetches",
            self.policy,
            self.evictions,
            Bytes(self.evicted_bytes),
            self.thrash_guards,
            self.prefetches
        )?;
        writeln!(
            f,
            "  link time       {:.3} ms simulated",
            self.simulated_transfer_ns as f64 / 1e6
        )?;
        if self.chaos_bytes > 0 || self.chaos_running_ns > 0 {
            writeln!(
                f,
                "  chaos           {} moved to devices in {:.1} ms; CPU faults brought back {}",
                Bytes(self.chaos_bytes),
                self.chaos_running_ns as f64 / 1e6,
                Bytes(self.fault_pages * sys::PAGE_SIZE as u64)
            )?;
        }
        write!(f, "  device freed    {}", Bytes(self.device_bytes_freed))?;
        for d in &self.devices {
            write!(
                f,
                "\n  device {:<2} {:<6} {} of {} used",
                d.id,
                d.name,
                Bytes(d.used as u64),
                Bytes(d.capacity as u64)
            )?;
        }
        Ok(())
    }
}
