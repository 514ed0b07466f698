//! Prefetch: an asynchronous [`crate::migrate`] on a background worker, so the copy overlaps
//! with CPU work.

use crate::error::Error;
use crate::migrate::{self, Migrated};
use crate::pagemap::{self, Use};
use crate::stats::COUNTERS;
use crate::tier::Tier;
use crate::worker::{self, Completion};
use crate::{arena, device};
use core::sync::atomic::Ordering;
use std::sync::Arc;

/// A prefetch in flight. [`Pending::wait`] returns what it did; dropping it lets the prefetch
/// finish unobserved.
#[must_use = "a prefetch runs in the background; wait() returns its result"]
pub struct Pending {
    done: Arc<Completion<Result<Migrated, Error>>>,
}

impl Pending {
    /// Waits for the prefetch and returns what the migration did.
    pub fn wait(self) -> Result<Migrated, Error> {
        self.done.wait()
    }

    /// True once the prefetch has finished.
    pub fn is_done(&self) -> bool {
        self.done.is_set()
    }
}

/// Starts moving `[ptr, ptr+len)` to `to` on the background prefetch worker and returns at
/// once. The range is checked now (same errors as `migrate`); the migration's own outcome
/// comes from [`Pending::wait`]. Prefetches run one after another, in the order they were
/// asked for. Memory freed before the prefetch runs is reported as `Error::NotAllocated`.
pub fn prefetch(ptr: *const u8, len: usize, to: Tier) -> Result<Pending, Error> {
    let (first, n) = migrate::pages_of(ptr, len)?;
    device::ensure_init()?;
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
            let r = crate::trace::with_cause(crate::trace::Cause::Prefetch, || {
                migrate::migrate(addr as *const u8, len, to)
            });
            COUNTERS.prefetches.fetch_add(1, Ordering::Relaxed);
            result.set(r);
        }),
    );
    Ok(Pending { done })
}
