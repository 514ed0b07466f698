//! Typed placement: `allocator_api2` allocators that put every block on one tier.
//!
//! `OnHost` and `OnDevice<D>` name the tier in the type (zero-sized, so a
//! `Vec<T, OnDevice<0>>` is as small as a `Vec<T>`); [`TierAllocator`] names it at run time.
//! All three allocate from the same heap as the global allocator, on the tier's own spans (see
//! [`crate::with_tier`]), whether or not `TierAlloc` is the global allocator. As with scopes,
//! placement is a preference: a full or missing device leaves the block on the host (counted
//! in [`Stats::placement_fallbacks`](crate::Stats::placement_fallbacks)), never an error.

use crate::base::error::Error;
use crate::base::tier::Tier;
use crate::heap;
use crate::init::HeapHooks;
use crate::mem::scope::{self as placement, TierIndex};
use allocator_api2::alloc::{AllocError, Allocator, Layout};
use core::ptr::NonNull;

/// Allocates on tier index `t`; the block is exactly `layout.size()` long.
fn allocate_on(t: TierIndex, layout: Layout, zero: bool) -> Result<NonNull<[u8]>, AllocError> {
    let p = heap::alloc_in::<HeapHooks>(t, layout.size(), layout.align(), zero);
    let p = NonNull::new(p).ok_or(AllocError)?;
    Ok(NonNull::slice_from_raw_parts(p, layout.size()))
}

/// Frees a block from [`allocate_on`].
///
/// # Safety
/// `ptr` is live, from this heap, with `layout`.
unsafe fn deallocate(ptr: NonNull<u8>, layout: Layout) {
    // SAFETY: forwarded contract; the heap finds the block's tier itself.
    unsafe { heap::dealloc::<HeapHooks>(ptr.as_ptr(), layout.size(), layout.align()) }
}

/// Resizes a block from [`allocate_on`] onto tier `t` (the allocator's) with the heap's
/// `realloc`, which copies without faulting device pages back; falls back to allocate-copy-free (the
/// trait's way) when the alignment changes or a size is zero.
///
/// # Safety
/// As `Allocator::grow`/`shrink`: `ptr` is live with `old`; `new` is the requested layout.
unsafe fn resize(
    t: TierIndex,
    ptr: NonNull<u8>,
    old: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    if old.align() != new.align() || old.size() == 0 || new.size() == 0 {
        let q = allocate_on(t, new, false)?;
        // SAFETY: both blocks are live and distinct; the copy is as long as the shorter one.
        unsafe {
            core::ptr::copy_nonoverlapping(
                ptr.as_ptr(),
                q.as_ptr().cast::<u8>(),
                old.size().min(new.size()),
            );
            deallocate(ptr, old);
        }
        return Ok(q);
    }
    // SAFETY: `ptr` is live with `old` (the caller's contract); the new size is non-zero and,
    // being a valid `Layout`'s, does not overflow when rounded up to the alignment.
    let p = unsafe {
        heap::realloc_on::<HeapHooks>(ptr.as_ptr(), old.size(), old.align(), new.size(), Some(t))
    };
    let p = NonNull::new(p).ok_or(AllocError)?;
    Ok(NonNull::slice_from_raw_parts(p, new.size()))
}

/// Implements `Allocator` for a type whose `tier_index(&self)` says where its blocks go.
macro_rules! tier_allocator {
    ($ty:ty $(, const $d:ident: u16)?) => {
        // SAFETY: blocks come from the tieralloc heap, which never hands out a live block twice,
        // and stay valid until deallocated (the allocator holds no state that could invalidate
        // them when moved or cloned: all instances share the process-wide heap). `grow` and
        // `shrink` keep the first bytes (the heap's `realloc`); `grow_zeroed` is the trait's
        // default (allocate zeroed on the same tier, copy, deallocate).
        unsafe impl<$(const $d: u16)?> Allocator for $ty {
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                allocate_on(self.tier_index(), layout, false)
            }

            fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                allocate_on(self.tier_index(), layout, true)
            }

            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                // SAFETY: Allocator's contract: `ptr` is a live block of ours with `layout`.
                unsafe { deallocate(ptr, layout) }
            }

            unsafe fn grow(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, AllocError> {
                // SAFETY: Allocator's contract: `ptr` is live with `old`, `new` is not smaller.
                unsafe { resize(self.tier_index(), ptr, old, new) }
            }

            unsafe fn shrink(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, AllocError> {
                // SAFETY: Allocator's contract: `ptr` is live with `old`, `new` is not larger.
                unsafe { resize(self.tier_index(), ptr, old, new) }
            }
        }
    };
}

/// Places every block in host memory, whatever the thread's tier scope says.
///
/// ```
/// use allocator_api2::vec::Vec;
/// use tieralloc::{OnHost, Tier};
///
/// let v: Vec<u32, OnHost> = tieralloc::with_tier(Tier::Device(0), || {
///     let mut v = Vec::new_in(OnHost);
///     v.extend(0..1000);
///     v
/// });
/// assert!(tieralloc::is_managed(v.as_ptr().cast()));
/// assert_eq!(v.iter().sum::<u32>(), 499_500);
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OnHost;

impl OnHost {
    fn tier_index(&self) -> TierIndex {
        0
    }
}

/// Places every block on device `D`: its spans and runs are created on the device, and cost
/// no host memory until the CPU touches them.
///
/// ```
/// use allocator_api2::{boxed::Box, vec::Vec};
/// use tieralloc::OnDevice;
///
/// // Reserved and not written yet: all of it lives on device 0.
/// let v: Vec<u8, OnDevice<0>> = Vec::with_capacity_in(1 << 20, OnDevice);
/// let r = tieralloc::residency(v.as_ptr(), 1 << 20).unwrap();
/// assert_eq!(r.device_bytes(0), 1 << 20);
///
/// let b = Box::new_in([7u64; 64], OnDevice::<0>); // written by the CPU: faulted back
/// assert_eq!(b[63], 7);
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OnDevice<const D: u16>;

impl<const D: u16> OnDevice<D> {
    fn tier_index(&self) -> TierIndex {
        placement::index_of(Tier::Device(D))
    }
}

/// Places every block on a tier chosen at run time.
///
/// ```
/// use allocator_api2::vec::Vec;
/// use tieralloc::{Tier, TierAllocator};
///
/// let on_dev = TierAllocator::new(Tier::Device(0))?;
/// let mut v: Vec<u64, TierAllocator> = Vec::with_capacity_in(4096, on_dev);
/// v.extend(0..4096);
/// assert_eq!(v.allocator().tier(), Tier::Device(0));
/// assert!(TierAllocator::new(Tier::Device(99)).is_err());
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierAllocator {
    /// The tier, as the heap's index.
    index: TierIndex,
}

impl TierAllocator {
    /// An allocator for `tier`. Fails with [`Error::UnknownDevice`] for a device that does not
    /// exist (this starts the devices if needed, like [`crate::devices`]).
    ///
    /// ```
    /// use tieralloc::{Tier, TierAllocator};
    /// assert_eq!(TierAllocator::new(Tier::Host)?.tier(), Tier::Host);
    /// assert!(TierAllocator::new(Tier::Device(42)).is_err()); // no such device
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn new(tier: Tier) -> Result<TierAllocator, Error> {
        if let Some(d) = tier.device() {
            crate::tiering::migrate::start_devices()?;
            crate::device::check(d)?;
        }
        Ok(TierAllocator {
            index: placement::index_of(tier),
        })
    }

    /// The tier this allocator places blocks on.
    ///
    /// ```
    /// let a = tieralloc::TierAllocator::new(tieralloc::Tier::Device(0))?;
    /// assert_eq!(a.tier(), tieralloc::Tier::Device(0));
    /// # Ok::<(), tieralloc::Error>(())
    /// ```
    pub fn tier(&self) -> Tier {
        placement::tier_of(self.index)
    }

    fn tier_index(&self) -> TierIndex {
        self.index
    }
}

tier_allocator!(OnHost);
tier_allocator!(OnDevice<D>, const D: u16);
tier_allocator!(TierAllocator);
