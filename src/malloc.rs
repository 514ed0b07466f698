//! The malloc family by address, for callers that keep no `Layout`: C programs through the
//! `tieralloc-preload` library (`libtieralloc.so`), or Rust code that frees what C allocated.
//!
//! Blocks are aligned to at least 16 bytes (C's `max_align_t`), come from the same heap and
//! tiers as `TierAlloc`'s, and are found again from their address through the heap's side
//! tables. A block from here must be freed here (not through `GlobalAlloc::dealloc`), and the
//! other way round.
//!
//! ```
//! use tieralloc::malloc;
//! let p = malloc::malloc(100);
//! assert!(!p.is_null() && p as usize % 16 == 0);
//! assert!(malloc::usable_size(p).unwrap() >= 100);
//! // SAFETY: `p` came from `malloc::malloc` and is not used afterwards.
//! let q = unsafe { malloc::realloc(p, 10_000) };
//! assert!(malloc::usable_size(q).unwrap() >= 10_000);
//! // SAFETY: as above, for `q`.
//! unsafe { malloc::free(q) };
//! ```

use crate::heap::{self, by_address, by_address::Block};
use crate::init::HeapHooks;
use crate::mem::scope::INTERNAL;

/// The smallest alignment of every block handed out here (16 bytes).
pub const MIN_ALIGN: usize = by_address::MIN_ALIGN;

/// Allocates `size` bytes (a unique block even for 0), aligned to 16. Null when the managed
/// range is exhausted.
///
/// ```
/// let p = tieralloc::malloc::malloc(0);
/// assert!(!p.is_null());
/// // SAFETY: from `malloc`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// ```
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    heap::alloc::<HeapHooks>(size, MIN_ALIGN)
}

/// [`malloc`]'s fast path alone: a block from this thread's current span of its size, or
/// null when [`malloc`] must be called (the span has no free block, the size is a page run, or a tier
/// scope is active). It makes no system call and leaves `errno` alone, so a C wrapper can skip
/// saving `errno` when it succeeds.
///
/// ```
/// let p = tieralloc::malloc::malloc(24);
/// // SAFETY: from `malloc`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// let q = tieralloc::malloc::malloc_cached(24); // the block just freed, from its span
/// assert_eq!(q, p);
/// // SAFETY: from `malloc_cached`, freed once.
/// unsafe { tieralloc::malloc::free(q) };
/// ```
#[inline]
pub fn malloc_cached(size: usize) -> *mut u8 {
    heap::alloc_cached(size, MIN_ALIGN)
}

/// [`free`]'s fast path alone: true if small block `p` went back to this thread's span or into
/// its buffer of other threads' blocks; false when [`free`] must be called (a page run, a block
/// of a device tier, a full buffer, or a pointer outside the managed range). It leaves `errno`
/// alone (the span it may give back to the page runs saves and restores it).
///
/// ```
/// let p = tieralloc::malloc::malloc(24);
/// // SAFETY: from `malloc`, not used again if it was freed.
/// if !unsafe { tieralloc::malloc::free_cached(p) } {
///     // SAFETY: as above; `free_cached` left it live.
///     unsafe { tieralloc::malloc::free(p) };
/// }
/// ```
///
/// # Safety
/// As [`free`], for `p` non-null; after it returns false, `p` is still live.
#[inline]
pub unsafe fn free_cached(p: *mut u8) -> bool {
    // SAFETY: inside the managed range (checked first); the caller's contract for the rest.
    crate::is_managed(p) && unsafe { by_address::free_cached::<HeapHooks>(p) }
}

/// What is left of a `free` after [`free_current`]: nothing ([`FreeStep::done`]), or the rest,
/// which [`free_rest`] takes on from where [`free_current`] stopped.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct FreeStep(usize);

impl FreeStep {
    /// True if the block is freed.
    #[inline(always)]
    pub fn done(self) -> bool {
        self.0 == 0
    }
}

/// [`malloc_cached`] from the blocks this thread freed last only, with no call on the way:
/// null when [`malloc_cached`] must be tried. The C `malloc` tries this first and jumps on
/// otherwise, so its fast path saves and restores no register.
///
/// ```
/// let p = tieralloc::malloc::malloc(24);
/// // SAFETY: from `malloc`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// let q = tieralloc::malloc::malloc_last(24); // the block freed last
/// assert_eq!(q, p);
/// // SAFETY: from `malloc_last`, freed once.
/// unsafe { tieralloc::malloc::free(q) };
/// ```
#[inline]
pub fn malloc_last(size: usize) -> *mut u8 {
    heap::alloc_last(size, MIN_ALIGN)
}

/// [`free_cached`] for a block of its class's current span only, with no call on the way. The
/// C `free` tries this first and jumps on to [`free_rest`] otherwise, so its fast path saves
/// and restores no register (six pushes and pops of a pair's 185 instructions before).
///
/// ```
/// let p = tieralloc::malloc::malloc(24);
/// // SAFETY: from `malloc`, not used after it is freed.
/// let step = unsafe { tieralloc::malloc::free_current(p) };
/// // SAFETY: as above; `p` is still live unless the step is done.
/// if !step.done() && !unsafe { tieralloc::malloc::free_rest(p, step) } {
///     // SAFETY: as above; `free_rest` left it live.
///     unsafe { tieralloc::malloc::free(p) };
/// }
/// ```
///
/// # Safety
/// As [`free`], for `p` non-null; unless the step it returns is done, `p` is still live.
#[inline]
pub unsafe fn free_current(p: *mut u8) -> FreeStep {
    if !heap::is_ready() {
        return FreeStep(by_address::NOT_HOST_SMALL);
    }
    // SAFETY: the caller's contract (the range is checked there).
    FreeStep(unsafe { by_address::free_current(p) })
}

/// The rest of [`free_cached`] after [`free_current`] returned `step` (not done) for `p`:
/// true if `p` is freed, false when [`free`] must be called.
///
/// # Safety
/// As [`free_cached`]; `step` is what [`free_current`] just returned for `p`.
#[inline]
pub unsafe fn free_rest(p: *mut u8, step: FreeStep) -> bool {
    match step.0 {
        0 | by_address::NOT_HOST_SMALL => false,
        // SAFETY: `p` is a host object of class `k - 1` that `free_current` declined.
        k => unsafe { by_address::free_past_current::<HeapHooks>(p, k - 1) },
    }
}

/// Allocates `size` bytes aligned to `align`, a power of two (smaller ones are raised to 16).
/// Null when `align` is not a power of two or memory is exhausted.
///
/// ```
/// let p = tieralloc::malloc::aligned(100, 4096);
/// assert_eq!(p as usize % 4096, 0);
/// assert!(tieralloc::malloc::aligned(100, 48).is_null());
/// // SAFETY: from `aligned`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// ```
pub fn aligned(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() || size > isize::MAX as usize - align {
        return core::ptr::null_mut();
    }
    heap::alloc::<HeapHooks>(size, align.max(MIN_ALIGN))
}

/// Allocates `n * size` zeroed bytes; null if the product overflows or memory is exhausted.
/// Fresh pages are not written (they read as zero already).
///
/// ```
/// let p = tieralloc::malloc::calloc(4, 8);
/// // SAFETY: 32 zeroed bytes were allocated.
/// assert_eq!(unsafe { *p.cast::<[u64; 4]>() }, [0; 4]);
/// assert!(tieralloc::malloc::calloc(usize::MAX, 2).is_null());
/// // SAFETY: from `calloc`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// ```
pub fn calloc(n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        Some(bytes) if bytes <= isize::MAX as usize => {
            heap::alloc_zeroed::<HeapHooks>(bytes, MIN_ALIGN)
        }
        _ => core::ptr::null_mut(),
    }
}

/// Bytes usable at `p`, a live block from this module; `None` if `p` is not a live tieralloc
/// block (outside the managed range, freed, or not a block's first byte).
///
/// ```
/// let p = tieralloc::malloc::malloc(5000);
/// assert_eq!(tieralloc::malloc::usable_size(p), Some(5120));
/// let x = 7u8;
/// assert_eq!(tieralloc::malloc::usable_size(&x), None);
/// // SAFETY: from `malloc`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// ```
pub fn usable_size(p: *const u8) -> Option<usize> {
    if !crate::is_managed(p) {
        return None;
    }
    match by_address::block_at(p) {
        b @ (Block::Small { .. } | Block::Large { .. }) => Some(by_address::usable_size(b)),
        Block::Foreign | Block::Invalid => None,
    }
}

/// Frees `p` (null does nothing). A pointer inside the managed range that is not a live
/// block (a double free, an interior pointer) ends the process with a message.
///
/// # Safety
/// `p` is null or was returned by this module and is not used afterwards; a pointer outside
/// the managed range ([`crate::is_managed`]) is not tieralloc's: give it to its own allocator.
#[inline]
pub unsafe fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    // SAFETY: the block is what `block_at` found (the caller's contract makes it live).
    unsafe { by_address::free::<HeapHooks>(p, by_address::block_at(p)) }
}

/// Resizes `p` to `new_size` bytes, keeping its first bytes and its tier. Null `p` allocates;
/// `new_size` 0 frees `p` and returns null (glibc's behaviour). Null when memory is exhausted,
/// and then `p` is untouched.
///
/// # Safety
/// As [`free`]: `p` is null or a live block of this module, not used after a non-null return.
pub unsafe fn realloc(p: *mut u8, new_size: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(new_size);
    }
    if new_size == 0 {
        // SAFETY: forwarded contract.
        unsafe { free(p) };
        return core::ptr::null_mut();
    }
    if new_size > isize::MAX as usize - MIN_ALIGN {
        return core::ptr::null_mut();
    }
    // SAFETY: the block is what `block_at` found; `new_size` is non-zero and in range.
    unsafe { by_address::realloc::<HeapHooks>(p, by_address::block_at(p), new_size) }
}

/// Allocates `size` bytes aligned to `align` (a power of two, taken as given: a block for
/// [`free`] needs [`MIN_ALIGN`], one for `GlobalAlloc` its layout's) for data that must
/// stay in host memory for good: tieralloc's own structures, and the C library's and the
/// dynamic loader's (see [`keep_system_allocations_home`]). Such blocks live in spans and runs
/// of their own, which no migration, kernel pin or chaos round ever moves. Zeroed if `zeroed`.
/// Freed as it was allocated: with [`free`], or with `GlobalAlloc::dealloc` and its layout.
///
/// ```
/// let p = tieralloc::malloc::internal(64, 16, true);
/// // SAFETY: 64 zeroed bytes were allocated.
/// assert_eq!(unsafe { *p.cast::<[u8; 64]>() }, [0; 64]);
/// // SAFETY: from `internal`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// ```
pub fn internal(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if !align.is_power_of_two() || size > isize::MAX as usize - align {
        return core::ptr::null_mut();
    }
    heap::alloc_in::<HeapHooks>(INTERNAL, size, align, zeroed)
}

/// From now on, blocks that the dynamic loader and the C library allocate for themselves (a
/// thread's TLS vector, a `FILE`, the loader's lists) come from [`internal`] memory when the
/// C entry points pass their caller ([`malloc_from`], [`calloc_from`]). A `fork` child reads
/// some of them before tieralloc's fault handlers exist in it: moved to a device, one hangs
/// the child (git under chaos migration of small objects hung 20 runs in 20 without this).
/// With them kept home, chaos may move small objects too ([`keeps_system_allocations_home`]).
/// False if the loader's and the C library's code could not be found (nothing changes then).
///
/// ```
/// // A Rust program allocates through `GlobalAlloc`, not through the C entry points: this
/// // only marks where the C library's code lies.
/// let _found = tieralloc::malloc::keep_system_allocations_home();
/// ```
pub fn keep_system_allocations_home() -> bool {
    crate::mem::scope::keep_system_home()
}

/// Whether [`keep_system_allocations_home`] is in force. Inlined: the C `malloc` asks it at
/// every call, and out of line it was a call through the GOT that made `malloc` save and
/// restore registers (2026-12-04).
///
/// ```
/// let _ = tieralloc::malloc::keeps_system_allocations_home();
/// ```
#[inline]
pub fn keeps_system_allocations_home() -> bool {
    crate::mem::scope::keeps_system_home()
}

/// Whether `caller` (a return address) lies in the loader's or the C library's code, once
/// [`keep_system_allocations_home`] is in force.
#[inline]
fn from_system(caller: usize) -> bool {
    crate::mem::scope::from_system(caller)
}

/// [`malloc`] called from code at `caller` (the C entry point's return address): from
/// [`internal`] memory for the loader and the C library, once [`keep_system_allocations_home`]
/// is in force.
///
/// ```
/// let p = tieralloc::malloc::malloc_from(32, 0);
/// // SAFETY: from `malloc_from`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// ```
#[inline]
pub fn malloc_from(size: usize, caller: usize) -> *mut u8 {
    if from_system(caller) {
        return internal(size, MIN_ALIGN, false);
    }
    malloc(size)
}

/// [`calloc`] called from code at `caller`, as [`malloc_from`].
///
/// ```
/// let p = tieralloc::malloc::calloc_from(4, 8, 0);
/// // SAFETY: from `calloc_from`, freed once.
/// unsafe { tieralloc::malloc::free(p) };
/// ```
#[inline]
pub fn calloc_from(n: usize, size: usize, caller: usize) -> *mut u8 {
    if from_system(caller) {
        return match n.checked_mul(size) {
            Some(bytes) if bytes <= isize::MAX as usize => internal(bytes, MIN_ALIGN, true),
            _ => core::ptr::null_mut(),
        };
    }
    calloc(n, size)
}
