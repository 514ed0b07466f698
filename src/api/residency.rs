//! Where the pages of a range live: runs of `(address range, PageState)` and byte totals.

use crate::base::error::Error;
use crate::device::MAX_DEVICES;
use crate::mem::{arena, blocks, pagemap};
use crate::pal::sys;
use crate::tiering::migrate::pages_of;
use core::ops::Range;
use core::sync::atomic::Ordering;
use pagemap::Use;

/// The state of one page.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// use tieralloc::PageState;
/// let v = vec![1u8; 8192];
/// tieralloc::migrate(v.as_ptr(), 4096, tieralloc::Tier::Device(0))?;
/// let r = tieralloc::residency(v.as_ptr(), 8192)?;
/// assert_eq!(r.runs()[0].1, PageState::Device(0));
/// assert_eq!(r.runs()[1].1, PageState::Host);
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Not part of a live allocation.
    Free,
    /// In host memory (possibly not populated yet: it reads as zero).
    Host,
    /// In device `n`'s pool.
    Device(u16),
    /// In host memory, with a read-only duplicate on device `n` (`Advice::ReadMostly`).
    /// Counted as host bytes in the totals.
    Duplicated(u16),
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
    duplicated: [usize; MAX_DEVICES],
    blocks: Vec<BlockCounters>,
}

/// The counters of one 64 KiB block: how often devices and the CPU used it.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![1u8; 1 << 20];
/// tieralloc::migrate(v.as_ptr(), v.len(), tieralloc::Tier::Device(0))?;
/// std::hint::black_box(v[0]); // a CPU fault on the first block
/// let r = tieralloc::residency(v.as_ptr(), v.len())?;
/// assert_eq!(r.blocks()[0].cpu_faults, 1);
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockCounters {
    /// The block's addresses (64 KiB, aligned).
    pub range: Range<usize>,
    /// Kernel launches (any device) that touched the block: the device's access counter.
    pub device_accesses: u32,
    /// CPU faults that brought pages of the block back from a device.
    pub cpu_faults: u32,
}

impl Residency {
    /// The access counters of every 64 KiB block the range touches, in address order.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 256 << 10];
    /// let r = tieralloc::residency(v.as_ptr(), v.len())?;
    /// assert!(r.blocks().len() >= 4); // 64 KiB each
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn blocks(&self) -> &[BlockCounters] {
        &self.blocks
    }
    /// Bytes (of the host bytes) that also have a read-only duplicate on device `d`.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 1 << 16];
    /// assert_eq!(tieralloc::residency(v.as_ptr(), v.len())?.duplicated_bytes(0), 0);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn duplicated_bytes(&self, d: u16) -> usize {
        self.duplicated.get(d as usize).copied().unwrap_or(0)
    }
    /// Maximal runs of bytes in one state, in address order, covering the queried range.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 1 << 16];
    /// for (range, state) in tieralloc::residency(v.as_ptr(), v.len())?.runs() {
    ///     println!("{range:x?}: {state:?}");
    /// }
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn runs(&self) -> &[(Range<usize>, PageState)] {
        &self.runs
    }
    /// Bytes in host memory.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 1000];
    /// assert_eq!(tieralloc::residency(v.as_ptr(), v.len())?.host_bytes(), 1000);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn host_bytes(&self) -> usize {
        self.host
    }
    /// Bytes on device `d`.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![1u8; 1 << 16];
    /// tieralloc::migrate(v.as_ptr(), v.len(), tieralloc::Tier::Device(0))?;
    /// assert_eq!(tieralloc::residency(v.as_ptr(), v.len())?.device_bytes(0), 1 << 16);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn device_bytes(&self, d: u16) -> usize {
        self.device.get(d as usize).copied().unwrap_or(0)
    }
    /// Bytes on any device.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![1u8; 1 << 16];
    /// tieralloc::migrate(v.as_ptr(), v.len(), tieralloc::Tier::Device(0))?;
    /// assert_eq!(tieralloc::residency(v.as_ptr(), v.len())?.all_device_bytes(), 1 << 16);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn all_device_bytes(&self) -> usize {
        self.device.iter().sum()
    }
    /// Bytes being moved at the moment of the query.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 1 << 16];
    /// assert_eq!(tieralloc::residency(v.as_ptr(), v.len())?.migrating_bytes(), 0);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn migrating_bytes(&self) -> usize {
        self.migrating
    }
    /// Bytes not part of a live allocation.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 1 << 16];
    /// assert_eq!(tieralloc::residency(v.as_ptr(), v.len())?.free_bytes(), 0);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn free_bytes(&self) -> usize {
        self.free
    }
    /// All bytes counted: the queried length.
    ///
    /// ```
    /// # #[global_allocator]
    /// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
    /// let v = vec![0u8; 12345];
    /// assert_eq!(tieralloc::residency(v.as_ptr(), v.len())?.total(), 12345);
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn total(&self) -> usize {
        self.host + self.all_device_bytes() + self.migrating + self.free
    }
}

fn state_of(page: usize) -> PageState {
    let e = pagemap::get(page);
    if e.locked() && !e.pinned() {
        PageState::Migrating
    } else if e.use_() == Use::Free {
        PageState::Free
    } else {
        match (e.device(), e.dup()) {
            (Some(d), _) => PageState::Device(d),
            (None, Some(d)) => PageState::Duplicated(d),
            (None, None) => PageState::Host,
        }
    }
}

/// Reports where the bytes of `[ptr, ptr+len)` live. See [`crate::api::residency`].
pub fn residency(ptr: *const u8, len: usize) -> Result<Residency, Error> {
    let (first, n) = pages_of(ptr, len)?;
    let (start, end) = (ptr as usize, ptr as usize + len);
    let mut r = Residency {
        runs: Vec::new(),
        host: 0,
        device: [0; MAX_DEVICES],
        migrating: 0,
        free: 0,
        duplicated: [0; MAX_DEVICES],
        blocks: Vec::new(),
    };
    for p in first..first + n {
        let a = arena::addr_of(p).max(start);
        let b = (arena::addr_of(p) + sys::PAGE_SIZE).min(end);
        let st = state_of(p);
        let bytes = b - a;
        match st {
            PageState::Free => r.free += bytes,
            PageState::Host => r.host += bytes,
            PageState::Duplicated(d) => {
                r.host += bytes;
                r.duplicated[d as usize] += bytes;
            }
            PageState::Device(d) => r.device[d as usize] += bytes,
            PageState::Migrating => r.migrating += bytes,
        }
        match r.runs.last_mut() {
            Some((range, s)) if *s == st => range.end = b,
            _ => r.runs.push((a..b, st)),
        }
    }
    let block = blocks::BLOCK_PAGES * sys::PAGE_SIZE;
    let mut p = first - first % blocks::BLOCK_PAGES;
    while p < first + n {
        let b = blocks::of_page(p);
        r.blocks.push(BlockCounters {
            range: arena::addr_of(p)..arena::addr_of(p) + block,
            device_accesses: b.device_accesses.load(Ordering::Relaxed),
            cpu_faults: b.cpu_faults.load(Ordering::Relaxed),
        });
        p += blocks::BLOCK_PAGES;
    }
    Ok(r)
}
