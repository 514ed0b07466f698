//! Prefetch: an asynchronous [`crate::tiering::migrate`] on a background worker, so the copy overlaps
//! with CPU work.

use crate::base::error::Error;
use crate::base::tier::Tier;
use crate::device;
use crate::device::worker::{self, Completion};
use crate::mem::arena;
use crate::mem::counters::COUNTERS;
use crate::mem::pagemap::{self, Use};
use crate::tiering::migrate::{self, Migrated};
use core::sync::atomic::Ordering;
use std::sync::Arc;

/// A prefetch in flight. [`Pending::wait`] returns what it did; dropping it lets the prefetch
/// finish unobserved.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![5u8; 8 << 20];
/// let pending = tieralloc::prefetch(v.as_ptr(), v.len(), tieralloc::Tier::Device(0))?;
/// // ... the CPU works on something else meanwhile ...
/// let m = pending.wait()?;
/// assert_eq!(m.moved * 4096, v.len());
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[must_use = "a prefetch runs in the background; wait() returns its result"]
pub struct Pending {
    done: Arc<Completion<Result<Migrated, Error>>>,
}

impl Pending {
    /// Waits for the prefetch and returns what the migration did.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![1u8; 1 << 20];
    /// let m = tieralloc::prefetch(v.as_ptr(), v.len(), tieralloc::Tier::Device(0))?.wait()?;
    /// assert_eq!(m.moved, 256);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn wait(self) -> Result<Migrated, Error> {
        self.done.wait()
    }

    /// True once the prefetch has finished.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![1u8; 1 << 20];
    /// let p = tieralloc::prefetch(v.as_ptr(), v.len(), tieralloc::Tier::Device(0))?;
    /// while !p.is_done() {
    ///     std::thread::yield_now();
    /// }
    /// p.wait()?;
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn is_done(&self) -> bool {
        self.done.is_set()
    }
}

/// Starts moving `[ptr, ptr+len)` to `to` on the background prefetch worker and returns at
/// once. The range is checked now (same errors as `migrate`); the migration's own outcome
/// comes from [`Pending::wait`]. Prefetches run one after another, in the order they were
/// asked for. Memory freed before the prefetch runs is reported as `Error::NotAllocated`.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![3u32; 1 << 20];
/// let (p, n) = (v.as_ptr().cast::<u8>(), v.len() * 4);
/// let to_device = tieralloc::prefetch(p, n, tieralloc::Tier::Device(0))?;
/// to_device.wait()?;
/// let back = tieralloc::prefetch(p, n, tieralloc::Tier::Host)?; // bring it home ahead of use
/// back.wait()?;
/// assert_eq!(tieralloc::residency(p, n)?.host_bytes(), n);
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub fn prefetch(ptr: *const u8, len: usize, to: Tier) -> Result<Pending, Error> {
    let (first, n) = migrate::pages_of(ptr, len)?;
    migrate::start_devices()?;
    if let Some(d) = to.device() {
        device::check(d)?;
    }
    if let Some(p) = (first..first + n).find(|&p| pagemap::get(p).use_() == Use::Free) {
        return Err(Error::NotAllocated {
            addr: arena::addr_of(p),
        });
    }
    let done = Completion::new();
    let result = done.clone();
    let (addr, len) = (ptr as usize, len);
    worker::submit(
        worker::PREFETCH,
        Box::new(move || {
            // A panicking user policy (asked about eviction, with nothing locked) must not
            // kill the prefetch worker and leave `wait` hanging.
            let r = std::panic::catch_unwind(|| {
                crate::mem::trace::with_cause(crate::mem::trace::Cause::Prefetch, || {
                    migrate::migrate(addr as *const u8, len, to)
                })
            })
            .unwrap_or(Err(Error::PolicyPanicked));
            COUNTERS.prefetches.fetch_add(1, Ordering::Relaxed);
            result.set(r);
        }),
    );
    Ok(Pending { done })
}
