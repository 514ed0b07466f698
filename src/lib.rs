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
//! ## How memory is laid out
//! - At the first allocation tieralloc reserves one range of address space (`TIERALLOC_ARENA`,
//!   default 64 GiB, `MAP_NORESERVE`: only touched pages cost memory). Every byte it hands out
//!   comes from there, so "is this pointer managed?" is a range check.
//! - A page map holds one atomic entry per page of the range.
//! - Small objects (≤ 8 KiB) come from 64 KiB spans through per-thread caches; larger ones are
//!   page runs, resized in place when possible and given back to the OS after they are freed.
//! - No allocator metadata is stored inside the managed range.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod arena;
mod config;
mod error;
mod heap;
mod pagemap;
mod stats;
mod sys;

pub use error::Error;
pub use stats::{stats, Bytes, Stats};

use core::alloc::{GlobalAlloc, Layout};

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
    pub const fn new() -> Self {
        TierAlloc { _private: () }
    }
}

// SAFETY: the heap returns blocks of at least `layout.size()` bytes aligned to `layout.align()`
// from the managed range, or null; a block is never handed out twice while live (span bitmaps
// and page runs are guarded by locks and checked on free); `realloc` preserves the first
// min(old, new) bytes; `alloc_zeroed` returns zeroed bytes (memset, or pages known to be fresh).
unsafe impl GlobalAlloc for TierAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        heap::alloc(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: ptr came from this allocator with this layout.
        unsafe { heap::dealloc(ptr, layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        heap::alloc_zeroed(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract for realloc.
        unsafe { heap::realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

/// True if `ptr` points into tieralloc's managed range.
///
/// ```
/// let local = 5u32;
/// assert!(!tieralloc::is_managed(&local as *const u32 as *const u8));
/// ```
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

/// Gives memory back to the OS: this thread's cached free objects go back to their spans, and
/// every free page run is released (`MADV_DONTNEED`). Freed memory is otherwise kept up to
/// 32 MiB for reuse.
///
/// ```
/// tieralloc::trim();
/// assert_eq!(tieralloc::stats().dirty_bytes, 0);
/// ```
pub fn trim() {
    heap::trim();
}
