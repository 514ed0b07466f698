//! # tieralloc
//!
//! A drop-in `#[global_allocator]` whose memory comes from one managed address range, built to
//! let pages move between host memory and emulated device-memory pools under the same virtual
//! address (a user-space take on Linux HMM / CUDA Unified Memory).
//!
//! Install it with one line:
//!
//! ```
//! use tieralloc::TierAlloc;
//!
//! #[global_allocator]
//! static ALLOC: TierAlloc = TierAlloc::new();
//!
//! fn main() {
//!     let v: Vec<u64> = (0..1 << 16).collect();
//!     assert!(tieralloc::is_managed(v.as_ptr().cast()));
//!     println!("{}", tieralloc::stats());
//! }
//! ```
//!
//! ## Moving memory to a device and back
//!
//! ```
//! use tieralloc::{Tier, TierAlloc};
//!
//! #[global_allocator]
//! static ALLOC: TierAlloc = TierAlloc::new();
//!
//! fn main() -> Result<(), tieralloc::Error> {
//!     let v: Vec<u64> = (0..1 << 18).collect();
//!     let (p, n) = (v.as_ptr().cast::<u8>(), v.len() * 8);
//!     tieralloc::migrate(p, n, Tier::Device(0))?; // same addresses, host memory released
//!     assert_eq!(tieralloc::residency(p, n)?.device_bytes(0), n);
//!     let sum: u64 = v.iter().sum(); // a CPU touch brings the pages back
//!     assert_eq!(sum, (0..1u64 << 18).sum());
//!     assert_eq!(tieralloc::residency(p, n)?.host_bytes(), n);
//!     Ok(())
//! }
//! ```
//!
//! ## Placing allocations on a tier
//!
//! Annotate where data should live; device-tier memory is created on the device (no host
//! memory, no copy) and allocating or freeing it never faults it back:
//!
//! ```
//! use allocator_api2::vec::Vec as AVec;
//! use tieralloc::{OnDevice, Tier, TierAlloc};
//!
//! #[global_allocator]
//! static ALLOC: TierAlloc = TierAlloc::new();
//!
//! fn main() -> Result<(), tieralloc::Error> {
//!     // A scope: everything this thread allocates inside prefers device 0.
//!     let weights: Vec<f32> = tieralloc::with_tier(Tier::Device(0), || vec![0.0; 1 << 20]);
//!     assert_eq!(tieralloc::residency(weights.as_ptr().cast(), 4 << 20)?.device_bytes(0), 4 << 20);
//!     // A typed allocator: this Vec's buffer always lives on device 0's spans.
//!     let mut grads: AVec<f32, OnDevice<0>> = AVec::with_capacity_in(1 << 20, OnDevice);
//!     grads.extend((0..1000).map(|i| i as f32)); // the CPU writes: those pages come home
//!     // A device kernel uses both where they are.
//!     let mut out = vec![0.0f32; 1];
//!     tieralloc::device(0)?.run((&weights[..], &mut out[..]), |(w, o)| o[0] = w.iter().sum())?;
//!     assert_eq!(out[0], 0.0);
//!     Ok(())
//! }
//! ```
//!
//! With the `macros` feature, `#[tieralloc::tier(device = 0)]` on a function runs its body in
//! such a scope.
//!
//! ## Seeing where memory lives
//!
//! - [`stats()`] (also printed at exit with `TIERALLOC_STATS=1`) counts migrations, faults,
//!   kernels, evictions and device use; it implements `Display` as a table.
//! - [`residency`] lists the runs of a range by tier; [`residency_map`] draws them as SVG or
//!   text, shaded by the per-block access counters.
//! - `TIERALLOC_TRACE=trace.csv` records every residency change ([`trace`]); the
//!   `tieralloc-view` example draws the trace as a timeline.
//!
//! Devices are emulated memory pools (`TIERALLOC_DEVICES`, default one of 1 GiB; see
//! [`devices`]). A CPU touch of a device-resident page faults it back through one of three
//! backends (`TIERALLOC_FAULT=auto|uffd|uffd-fast|signal`; see the README for what each allows,
//! such as system calls on device-resident buffers).
//!
//! ## How memory is laid out
//! - At the first allocation tieralloc reserves one range of address space (`TIERALLOC_ARENA`,
//!   default 64 GiB, `MAP_NORESERVE`: only touched pages cost memory). Every byte it hands out
//!   comes from there, so "is this pointer managed?" is a range check.
//! - A page map holds one atomic entry per page of the range.
//! - Small objects (≤ 8 KiB) come from 64 or 128 KiB spans owned by per-thread heaps; larger
//!   ones are page runs, resized in place when possible and given back to the OS after they are
//!   freed.
//! - No allocator metadata is stored inside the managed range.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The layers, bottom to top; a module imports only from its own layer and those below it
// (`alloc-tests/layers.rs` checks this). src/README.md says what each owns.
mod allocator;
mod api;
mod base;
mod config;
mod device;
mod fault;
mod heap;
mod init;
pub mod malloc;
mod mem;
mod pal;
mod report;
mod tiering;

pub use allocator::{OnDevice, OnHost, TierAllocator};
pub use api::advice::{advise, Advice};
pub use api::chaos;
pub use api::kernel::{device, Device, KernelArgs, KernelReport, Launch, Stream};
pub use api::prefetch::{prefetch, Pending};
pub use api::residency::{BlockCounters, PageState, Residency};
pub use base::error::{Error, Invalid};
pub use base::tier::Tier;
pub use device::link::{link, set_link, Link};
pub use device::DeviceInfo;
pub use mem::scope::{current_tier, tier_scope, with_tier, TierGuard};
pub use report::render::{residency_map, MapCell, ResidencyMap};
pub use report::stats::{stats, Bytes, Stats};
pub use tiering::migrate::Migrated;
pub use tiering::policy;
pub use tiering::policy::{name as policy_name, set_policy};

/// Fault injection for tests (feature `fault-injection`): make a chosen system call or device
/// operation fail. See `alloc-tests/faults.rs`.
#[doc(hidden)]
pub mod inject {
    pub use crate::pal::inject::*;

    /// Runs `f` with every heap lock held by this thread (as `fork` does), to show that the
    /// fault path needs none of them. `f` must not allocate or free.
    #[cfg(feature = "fault-injection")]
    pub fn with_heap_locked<R>(f: impl FnOnce() -> R) -> R {
        crate::heap::lock_all();
        let r = f();
        // SAFETY: lock_all above took the locks on this thread.
        unsafe { crate::heap::unlock_all() };
        r
    }
}

/// The event trace: every residency change as one CSV line, for `tieralloc-view` to draw.
///
/// Set `TIERALLOC_TRACE=path` and run the program; the file gets a header and one line per
/// event (times in µs since the devices came up; `none` is fresh or freed memory):
///
/// ```text
/// time_us,addr,bytes,from,to,cause
/// 791.586,0x7f3384194000,2097152,host,dev0,migrate
/// 2230.104,0x7f3384194000,65536,dev0,host,fault
/// ```
///
/// Causes: `migrate`, `prefetch`, `kernel` (a device fault), `evict`, `fault` (a CPU fault),
/// `free`, `place` (a device-tier allocation created on its device), `advice` (preferred
/// location or access-counter migration). Then draw it:
/// `cargo run --release --example tieralloc-view -- trace.csv timeline.svg`, or call
/// [`timeline_svg`](trace::timeline_svg).
pub mod trace {
    pub use crate::mem::trace::*;
    pub use crate::report::render::timeline_svg;
}
/// `#[tieralloc::tier(device = N)]` / `#[tieralloc::tier(host)]` on a function: its body runs
/// inside [`tier_scope`], so what it allocates prefers that tier (feature `macros`).
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// #[tieralloc::tier(device = 0)]
/// fn build() -> Vec<u8> {
///     vec![0; 1 << 20]
/// }
///
/// let v = build();
/// assert_eq!(tieralloc::residency(v.as_ptr(), v.len()).unwrap().device_bytes(0), v.len());
/// ```
#[cfg(feature = "macros")]
pub use tieralloc_macros::tier;

use api::residency;
use core::alloc::{GlobalAlloc, Layout};
use init::HeapHooks;
use mem::arena;
use tiering::migrate;

/// The allocator. Install it as the global allocator; every instance shares one process-wide
/// heap, so `TierAlloc::new()` values are interchangeable.
///
/// Works before `main`, in every thread (including during thread exit), and in a child after
/// `fork`. When the managed range is exhausted `alloc` returns null, which Rust reports as an
/// allocation failure.
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// let a = tieralloc::TierAlloc::new();
/// let layout = Layout::from_size_align(100, 64).unwrap();
/// // SAFETY: the layout has a non-zero size; the block is freed with the same layout.
/// unsafe {
///     let p = a.alloc(layout);
///     assert!(!p.is_null() && p as usize % 64 == 0);
///     a.dealloc(p, layout);
/// }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct TierAlloc {
    _private: (),
}

impl TierAlloc {
    /// The allocator; `const`, so it can initialise a `static`. Nothing runs until the first
    /// allocation.
    ///
    /// ```
    /// #[global_allocator]
    /// static ALLOC: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// # fn main() {}
    /// ```
    pub const fn new() -> Self {
        TierAlloc { _private: () }
    }
}

// SAFETY: the heap returns blocks of at least `layout.size()` bytes aligned to `layout.align()`
// from the managed range, or null; a block is never handed out twice while live: span bitmaps
// and page runs are guarded by locks, a page entry is written only by the holder of its lock
// (the heap included, see `pagemap`), and a second free of a block aborts (the thread-cache
// bit of `heap::cached`, the span bitmap, the run's tag) instead of handing it out again;
// `realloc` preserves the first min(old, new) bytes; `alloc_zeroed` returns zeroed bytes
// (memset, or pages known to be fresh).
unsafe impl GlobalAlloc for TierAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        heap::alloc::<HeapHooks>(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: ptr came from this allocator with this layout.
        unsafe { heap::dealloc::<HeapHooks>(ptr, layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        heap::alloc_zeroed::<HeapHooks>(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract for realloc.
        unsafe { heap::realloc::<HeapHooks>(ptr, layout.size(), layout.align(), new_size) }
    }
}

/// True if `ptr` points into tieralloc's managed range.
///
/// ```
/// let local = 5u32;
/// assert!(!tieralloc::is_managed(&local as *const u32 as *const u8));
/// ```
#[inline]
pub fn is_managed(ptr: *const u8) -> bool {
    heap::is_ready() && arena::contains(ptr as usize)
}

/// The managed range, as addresses (empty before the first allocation through tieralloc).
///
/// ```
/// let r = tieralloc::managed_range();
/// assert!(r.start <= r.end);
/// ```
pub fn managed_range() -> core::ops::Range<usize> {
    if !heap::is_ready() {
        return 0..0;
    }
    arena::base()..arena::base() + arena::size()
}

/// Moves the pages of `[ptr, ptr + len)` to tier `to`, keeping their addresses.
///
/// The range is rounded out to whole pages (the returned [`Migrated`] says which, and what
/// happened to them). After a move to a device the host memory is released: the process's
/// resident size falls by the bytes moved. Any later CPU access (from any thread) brings the
/// touched pages back transparently. Pages that were never touched are not copied; they read as
/// zero wherever they land.
///
/// Errors found before anything moves (nothing moved): the range is empty, overflows, is not
/// from tieralloc's managed range, covers memory that is not allocated (freed); the device does
/// not exist; the device has too little free capacity ([`Error::DeviceFull`]); the signal
/// backend would pass `vm.max_map_count` ([`Error::MapCountLimit`]). The range moves in
/// batches of 2 MiB; an error met later (memory freed by another thread meanwhile, a device
/// filled meanwhile, a failing system call) stops at that batch: the batches before it stay
/// moved, and each page is intact wherever it is (`residency` tells where).
///
/// ```
/// use tieralloc::{Tier, TierAlloc};
/// #[global_allocator]
/// static A: TierAlloc = TierAlloc::new();
///
/// let v: Vec<u64> = (0..1 << 16).collect();
/// let (p, n) = (v.as_ptr().cast::<u8>(), v.len() * 8);
/// let m = tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
/// assert!(m.moved * 4096 >= n);
/// assert!(tieralloc::residency(p, n).unwrap().device_bytes(0) == n);
/// let sum: u64 = v.iter().sum(); // the CPU touches it: it comes back
/// assert_eq!(sum, (0..1u64 << 16).sum());
/// assert!(tieralloc::residency(p, n).unwrap().host_bytes() == n);
/// ```
pub fn migrate(ptr: *const u8, len: usize, to: Tier) -> Result<Migrated, Error> {
    migrate::migrate(ptr, len, to)
}

/// Where the bytes of `[ptr, ptr + len)` live right now: runs of `(range, PageState)` and
/// byte totals per tier (they add up to `len`).
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![7u8; 3 << 20];
/// tieralloc::migrate(v.as_ptr(), 1 << 20, tieralloc::Tier::Device(0))?;
/// let r = tieralloc::residency(v.as_ptr(), v.len())?;
/// assert_eq!(r.device_bytes(0), 1 << 20);
/// assert_eq!(r.host_bytes(), 2 << 20);
/// assert_eq!(r.total(), v.len());
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub fn residency(ptr: *const u8, len: usize) -> Result<Residency, Error> {
    residency::residency(ptr, len)
}

/// The emulated devices with their capacity and use. They are created at the first device
/// operation from `TIERALLOC_DEVICES` (e.g. `2x1GiB` or `gpu0=1GiB,gpu1=512MiB`; default one
/// device of 1 GiB) or from [`set_devices`].
///
/// ```
/// let devs = tieralloc::devices().unwrap();
/// assert!(!devs.is_empty());
/// assert!(devs[0].used <= devs[0].capacity);
/// ```
pub fn devices() -> Result<Vec<DeviceInfo>, Error> {
    device::ensure_init()?;
    Ok(device::infos())
}

/// Configures the emulated devices (name, capacity in bytes) instead of `TIERALLOC_DEVICES`.
/// Only before the first device operation; afterwards it returns
/// [`Error::DevicesAlreadyInUse`].
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// // Before the first device operation of the process:
/// tieralloc::set_devices(&[("gpu0", 1 << 30), ("gpu1", 512 << 20)])?;
/// assert_eq!(tieralloc::devices()?[1].name, "gpu1");
/// assert_eq!(
///     tieralloc::set_devices(&[("late", 1 << 20)]),
///     Err(tieralloc::Error::DevicesAlreadyInUse)
/// );
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub fn set_devices(list: &[(&str, usize)]) -> Result<(), Error> {
    device::set_devices(list)
}

/// Gives memory back to the OS: this thread's cached free objects go back to their spans, and
/// every free page run is released (`MADV_DONTNEED`). Freed memory is otherwise kept up to
/// 32 MiB for reuse.
///
/// ```
/// tieralloc::trim();
/// assert_eq!(tieralloc::stats().dirty_bytes, 0);
/// ```
pub fn trim() {
    heap::trim::<HeapHooks>();
}

/// Checks tieralloc's internal invariants and returns the first one broken: the page runs
/// (tags, free lists, counters) and the spans (bitmaps, free counts, bin lists) against the page
/// map, and the page map against each device's accounting. Meant for tests and for policy
/// experiments: call it when no migration, prefetch or kernel is running (a page locked by one
/// in flight reads as broken). Holds every heap lock while it walks the heap (other threads'
/// allocations wait), and takes time proportional to the memory handed out.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![1u8; 1 << 20];
/// tieralloc::migrate(v.as_ptr(), v.len(), tieralloc::Tier::Device(0)).unwrap();
/// assert_eq!(tieralloc::check_invariants(), Ok(()));
/// ```
pub fn check_invariants() -> Result<(), Invalid> {
    heap::check::check()?;
    if device::count() > 0 {
        tiering::check::check_devices()?;
    }
    Ok(())
}
