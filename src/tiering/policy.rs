//! Placement policy: what happens when a device is full, when a device kernel touches memory
//! that is not on its device, and how far a CPU fault reaches around itself.
//!
//! A policy is a [`Policy`] trait object, chosen with `TIERALLOC_POLICY` (`adaptive`, the
//! default; `evict`; `strict`) or [`set_policy`]. Its methods run in ordinary threads (the
//! caller of `migrate`, a device worker), never on the fault path: the fault path only reads the
//! few numbers a policy publishes through [`Policy::fault_around`] and [`Policy::thrash_window`],
//! which are copied into atomics when the policy is installed.
//!
//! The built-ins are small on purpose; they are also the examples for writing your own:
//! - [`Strict`]: a migration to a full device fails with `Error::DeviceFull`; device faults
//!   always migrate.
//! - [`Evict`]: on-demand migration; a full device evicts its coldest blocks to the host (a clock
//!   over the device access counters).
//! - [`Adaptive`]: `Evict`, plus a thrash guard (a block that bounced between CPU and device more
//!   than [`Adaptive::thrash_limit`] times in the window stays on the host for a while and the
//!   device reads it remotely), auto-migration of remotely read blocks the device uses often,
//!   and density-driven fault-around.

use crate::mem::blocks::{self, Block};
use crate::tiering::migrate;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::time::Duration;

/// What tieralloc knows about one 64 KiB block when it asks the policy.
///
/// ```
/// use tieralloc::policy::{BlockInfo, Policy};
/// struct ColdIfUnused;
/// impl Policy for ColdIfUnused {
///     fn name(&self) -> &str { "cold-if-unused" }
///     fn is_cold(&self, b: &BlockInfo) -> bool { b.device_accesses == 0 }
/// }
/// tieralloc::set_policy(ColdIfUnused);
/// assert_eq!(tieralloc::policy_name(), "cold-if-unused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockInfo {
    /// Address of the block's first byte.
    pub addr: usize,
    /// Kernel launches (any device) that touched the block.
    pub device_accesses: u32,
    /// CPU faults that brought pages of the block back, ever.
    pub cpu_faults: u32,
    /// CPU fault-backs in the current thrash window.
    pub recent_cpu_faults: u32,
    /// True while a thrash guard holds the block where it is.
    pub guarded: bool,
}

impl BlockInfo {
    pub(crate) fn of_page(page: usize) -> BlockInfo {
        let b = blocks::of_page(page);
        BlockInfo {
            addr: crate::mem::arena::addr_of(page - page % blocks::BLOCK_PAGES),
            device_accesses: b.device_accesses.load(Ordering::Relaxed),
            cpu_faults: b.cpu_faults.load(Ordering::Relaxed),
            recent_cpu_faults: blocks::recent_bounces(b),
            guarded: blocks::guarded(b),
        }
    }
}

/// The answer to a device fault: a kernel on a device uses a block that lives elsewhere.
///
/// ```
/// use tieralloc::policy::{BlockInfo, DeviceFault, Policy};
/// /// Never migrates for kernels: devices always read host memory remotely.
/// struct ZeroCopy;
/// impl Policy for ZeroCopy {
///     fn name(&self) -> &str { "zero-copy" }
///     fn on_device_fault(&self, _device: u16, _b: &BlockInfo) -> DeviceFault { DeviceFault::Remote }
/// }
/// tieralloc::set_policy(ZeroCopy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFault {
    /// Migrate the block to the kernel's device (the default).
    Migrate,
    /// Leave it where it is; the device reads and writes it remotely.
    Remote,
    /// Leave it where it is and keep it there (remote access) for this long: a thrash guard.
    Guard(Duration),
}

/// How far a CPU fault brings neighbouring device pages back with it.
///
/// ```
/// use tieralloc::policy::{FaultAround, Policy};
/// /// Brings back exactly the faulting page.
/// struct PageAtATime;
/// impl Policy for PageAtATime {
///     fn name(&self) -> &str { "page-at-a-time" }
///     fn fault_around(&self) -> FaultAround {
///         FaultAround { min_pages: 1, max_pages: 1, density: false }
///     }
/// }
/// tieralloc::set_policy(PageAtATime);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAround {
    /// Pages brought back by an isolated fault (the 64 KiB block around it by default).
    pub min_pages: usize,
    /// Upper bound while faults follow each other sequentially (doubling each time); at most
    /// 8192 (32 MiB). A run longer than 512 pages comes back 512 at a time, the faulting thread
    /// resuming after the first 512 while the rest follow it (read-ahead).
    pub max_pages: usize,
    /// Bring back the rest of a 2 MiB region once half of its blocks have faulted (CUDA's
    /// density prefetcher, in small).
    pub density: bool,
}

impl Default for FaultAround {
    fn default() -> Self {
        FaultAround {
            min_pages: 16,
            max_pages: 4096,
            density: true,
        }
    }
}

/// A placement policy. Every method has a default, so a policy overrides only what it changes.
///
/// ```
/// use tieralloc::policy::{BlockInfo, DeviceFault, Policy};
///
/// /// Never migrates for a device: kernels read host memory remotely.
/// struct AlwaysRemote;
/// impl Policy for AlwaysRemote {
///     fn name(&self) -> &str { "always-remote" }
///     fn on_device_fault(&self, _device: u16, _block: &BlockInfo) -> DeviceFault {
///         DeviceFault::Remote
///     }
/// }
/// tieralloc::set_policy(AlwaysRemote);
/// assert_eq!(tieralloc::policy_name(), "always-remote");
/// ```
pub trait Policy: Send + Sync + 'static {
    /// A short name, shown by `stats()`.
    fn name(&self) -> &str;

    /// A migration to `device` needs more room than it has: evict its coldest blocks to the
    /// host (`true`, the default) or fail with `Error::DeviceFull` and move nothing (`false`).
    fn evict_when_full(&self, device: u16) -> bool {
        let _ = device;
        true
    }

    /// A kernel on `device` uses `block`, which lives elsewhere.
    fn on_device_fault(&self, device: u16, block: &BlockInfo) -> DeviceFault {
        let _ = (device, block);
        DeviceFault::Migrate
    }

    /// After a kernel on `device` has read `block` remotely: move it to the device now?
    fn auto_migrate(&self, device: u16, block: &BlockInfo) -> bool {
        let _ = (device, block);
        false
    }

    /// Whether an unreferenced device block is a good eviction victim. The clock hand clears
    /// each block's reference bit as it passes; a block a kernel used since is skipped once.
    fn is_cold(&self, block: &BlockInfo) -> bool {
        let _ = block;
        true
    }

    /// Fault-around for CPU faults.
    fn fault_around(&self) -> FaultAround {
        FaultAround {
            density: false,
            ..FaultAround::default()
        }
    }

    /// The window in which CPU fault-backs of a block are counted as bounces.
    fn thrash_window(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// Migrations to a full device fail with `Error::DeviceFull`.
///
/// ```
/// tieralloc::set_policy(tieralloc::policy::Strict);
/// assert_eq!(tieralloc::policy_name(), "strict");
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Strict;

impl Policy for Strict {
    fn name(&self) -> &str {
        "strict"
    }
    fn evict_when_full(&self, _device: u16) -> bool {
        false
    }
}

/// On-demand migration; a full device evicts its coldest blocks.
///
/// ```
/// tieralloc::set_policy(tieralloc::policy::Evict);
/// assert_eq!(tieralloc::policy_name(), "evict");
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Evict;

impl Policy for Evict {
    fn name(&self) -> &str {
        "evict"
    }
}

/// `Evict` plus a thrash guard, access-counter auto-migration and density fault-around.
///
/// Auto-migration: a block a device reads remotely (under `AccessedBy`, or while a custom
/// policy says `Remote`) moves to that device once [`Adaptive::migrate_after`] kernel launches
/// have touched it, as access-counter migration does on recent GPUs. Guarded blocks and blocks
/// with a `PreferredLocation` stay put.
///
/// ```
/// use std::time::Duration;
/// tieralloc::set_policy(tieralloc::policy::Adaptive {
///     thrash_limit: 5,
///     guard: Duration::from_secs(1),
///     ..Default::default()
/// });
/// assert_eq!(tieralloc::policy_name(), "adaptive");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Adaptive {
    /// Bounces (CPU fault-backs) in the window after which a block stays on the host.
    pub thrash_limit: u32,
    /// How long the guard keeps a thrashing block on the host.
    pub guard: Duration,
    /// Remote kernel launches on a block after which it moves to the device.
    pub migrate_after: u32,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            thrash_limit: 3,
            guard: Duration::from_millis(500),
            migrate_after: 8,
        }
    }
}

impl Policy for Adaptive {
    fn name(&self) -> &str {
        "adaptive"
    }
    fn on_device_fault(&self, _device: u16, block: &BlockInfo) -> DeviceFault {
        if block.guarded {
            DeviceFault::Remote
        } else if block.recent_cpu_faults >= self.thrash_limit {
            DeviceFault::Guard(self.guard)
        } else {
            DeviceFault::Migrate
        }
    }
    fn auto_migrate(&self, _device: u16, block: &BlockInfo) -> bool {
        !block.guarded && block.device_accesses >= self.migrate_after
    }
    fn fault_around(&self) -> FaultAround {
        FaultAround::default()
    }
}

/// The installed policy (boxed twice so the slot holds a thin pointer); old ones are leaked,
/// as a thread may still be using them. An atomic, not a lock: it is read under heap locks
/// (placement) and must stay usable in a fork child whatever other threads were doing.
static CURRENT: AtomicPtr<&'static dyn Policy> = AtomicPtr::new(core::ptr::null_mut());
static FROM_ENV: AtomicBool = AtomicBool::new(false);
/// Fault-around parameters of the installed policy, for the fault path.
pub(crate) static AROUND_MIN: AtomicUsize = AtomicUsize::new(16);
pub(crate) static AROUND_MAX: AtomicUsize = AtomicUsize::new(4096);
pub(crate) static AROUND_DENSITY: AtomicBool = AtomicBool::new(true);

/// Installs `policy` for the whole process (replacing `TIERALLOC_POLICY`'s choice).
///
/// ```
/// tieralloc::set_policy(tieralloc::policy::Evict);
/// assert_eq!(tieralloc::policy_name(), "evict");
/// ```
pub fn set_policy<P: Policy>(policy: P) {
    install(Box::leak(Box::new(policy)));
    FROM_ENV.store(true, Ordering::Release);
}

fn install(p: &'static dyn Policy) {
    let fa = p.fault_around();
    let min = fa.min_pages.clamp(1, 512);
    AROUND_MIN.store(min, Ordering::Relaxed);
    AROUND_MAX.store(
        fa.max_pages.clamp(min, migrate::FAULT_AROUND_LIMIT),
        Ordering::Relaxed,
    );
    AROUND_DENSITY.store(fa.density, Ordering::Relaxed);
    blocks::THRASH_WINDOW_MS.store(
        p.thrash_window().as_millis().clamp(1, u32::MAX as u128 / 2) as u32,
        Ordering::Relaxed,
    );
    CURRENT.store(Box::leak(Box::new(p)), Ordering::Release);
}

/// The installed policy (the one `TIERALLOC_POLICY` names on first use).
pub(crate) fn current() -> &'static dyn Policy {
    if !FROM_ENV.swap(true, Ordering::AcqRel) {
        let p: &'static dyn Policy = match crate::config::policy() {
            crate::config::PolicyChoice::Strict => &Strict,
            crate::config::PolicyChoice::Evict => &Evict,
            crate::config::PolicyChoice::Adaptive => Box::leak(Box::new(Adaptive::default())),
        };
        if CURRENT.load(Ordering::Acquire).is_null() {
            install(p);
        }
    }
    loop {
        let p = CURRENT.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: non-null values are leaked boxes (install), never freed.
            return unsafe { *p };
        }
        // Another thread is installing the environment's choice right now.
        std::thread::yield_now();
    }
}

/// The name of the installed policy.
///
/// ```
/// // `adaptive` unless TIERALLOC_POLICY or set_policy chose another.
/// println!("policy: {}", tieralloc::policy_name());
/// ```
pub fn name() -> String {
    current().name().to_string()
}

/// Starts a thrash guard on the blocks of pages `[page, page+n)` for `d`.
pub(crate) fn guard(page: usize, n: usize, d: Duration) {
    let until = blocks::now_ms()
        .wrapping_add(d.as_millis().min(1 << 30) as u32)
        .max(1);
    for b in blocks::blocks_of(page, n) {
        b.guard_until.store(until, Ordering::Relaxed);
    }
}

/// Blocks' reference bits, for the eviction clock.
pub(crate) fn take_reference(b: &Block) -> bool {
    b.referenced.swap(0, Ordering::Relaxed) != 0
}
