//! Where the pages of a range live: runs of `(address range, PageState)` and byte totals.

use crate::device::MAX_DEVICES;
use crate::error::Error;
use crate::migrate::pages_of;
use crate::{arena, pagemap, sys};
use core::ops::Range;
use pagemap::Use;

/// The state of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Not part of a live allocation.
    Free,
    /// In host memory (possibly not populated yet: it reads as zero).
    Host,
    /// In device `n`'s pool.
    Device(u16),
    /// A migration or fault-back is moving it right now.
    Migrating,
}

/// Where the bytes of a range live. Totals cover exactly the queried bytes.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![1u8; 1 << 20];
/// let r = tieralloc::residency(v.as_ptr(), v.len()).unwrap();
/// assert_eq!(r.host_bytes(), v.len());
/// assert_eq!(r.runs().len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Residency {
    runs: Vec<(Range<usize>, PageState)>,
    host: usize,
    device: [usize; MAX_DEVICES],
    migrating: usize,
    free: usize,
}

impl Residency {
    /// Maximal runs of bytes in one state, in address order, covering the queried range.
    pub fn runs(&self) -> &[(Range<usize>, PageState)] {
        &self.runs
    }
    /// Bytes in host memory.
    pub fn host_bytes(&self) -> usize {
        self.host
    }
    /// Bytes on device `d`.
    pub fn device_bytes(&self, d: u16) -> usize {
        self.device.get(d as usize).copied().unwrap_or(0)
    }
    /// Bytes on any device.
    pub fn all_device_bytes(&self) -> usize {
        self.device.iter().sum()
    }
    /// Bytes being moved at the moment of the query.
    pub fn migrating_bytes(&self) -> usize {
        self.migrating
    }
    /// Bytes not part of a live allocation.
    pub fn free_bytes(&self) -> usize {
        self.free
    }
    /// All bytes counted: the queried length.
    pub fn total(&self) -> usize {
        self.host + self.all_device_bytes() + self.migrating + self.free
    }
}

fn state_of(page: usize) -> PageState {
    let e = pagemap::get(page);
    if e.locked() {
        PageState::Migrating
    } else if e.use_() == Use::Free {
        PageState::Free
    } else {
        match e.device() {
            Some(d) => PageState::Device(d),
            None => PageState::Host,
        }
    }
}

/// Reports where the bytes of `[ptr, ptr+len)` live. See [`crate::residency`].
pub fn residency(ptr: *const u8, len: usize) -> Result<Residency, Error> {
    let (first, n) = pages_of(ptr, len)?;
    let (start, end) = (ptr as usize, ptr as usize + len);
    let mut r = Residency {
        runs: Vec::new(),
        host: 0,
        device: [0; MAX_DEVICES],
        migrating: 0,
        free: 0,
    };
    for p in first..first + n {
        let a = arena::addr_of(p).max(start);
        let b = (arena::addr_of(p) + sys::PAGE_SIZE).min(end);
        let st = state_of(p);
        let bytes = b - a;
        match st {
            PageState::Free => r.free += bytes,
            PageState::Host => r.host += bytes,
            PageState::Device(d) => r.device[d as usize] += bytes,
            PageState::Migrating => r.migrating += bytes,
        }
        match r.runs.last_mut() {
            Some((range, s)) if *s == st => range.end = b,
            _ => r.runs.push((a..b, st)),
        }
    }
    Ok(r)
}
