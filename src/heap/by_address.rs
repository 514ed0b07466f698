//! Blocks found by their address alone. C's `free`, `realloc` and `malloc_usable_size` carry no
//! `Layout`: the block's class or length is read from the side tables (a span slot's class, a
//! run's live length), never from the block's own memory, which may be on a device.

use super::{alloc_in, free_large, pages_for, realloc_on, resize_large, size_class, span, tcache};
use super::{run_cache, Hooks};
use crate::mem::arena;
use crate::mem::scope::TierIndex;
use crate::pal::sys;

/// The alignment every block handed out by address-only callers gets: `max_align_t` on the
/// 64-bit ABIs, what C's `malloc` promises.
pub const MIN_ALIGN: usize = 16;

/// What an address heads, as far as the heap's side tables say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Outside the managed range: not tieralloc's.
    Foreign,
    /// Inside a span of size class `class` on tier `tier` (whether it is the start of a live
    /// object is checked when it is freed).
    Small {
        /// The span's size class.
        class: usize,
        /// The span's tier index.
        tier: TierIndex,
    },
    /// The first page of a live page run of `pages` pages.
    Large {
        /// The run's first page.
        page: usize,
        /// Its length in pages.
        pages: usize,
    },
    /// Inside the managed range but heads no live block (freed, or not a block's start).
    Invalid,
}

/// What `p` heads.
#[inline]
pub fn block_at(p: *const u8) -> Block {
    let addr = p as usize;
    if !arena::contains(addr) {
        return Block::Foreign;
    }
    if let Some(class) = span::class_at(addr) {
        return Block::Small {
            class,
            tier: span::tier_of(p as *mut u8),
        };
    }
    if addr & (sys::PAGE_SIZE - 1) != 0 {
        return Block::Invalid;
    }
    let page = arena::page_of(addr);
    match run_cache::live_len(page) {
        0 => Block::Invalid,
        pages => Block::Large { page, pages },
    }
}

/// Bytes usable at `p`, a block [`block_at`] found (0 for the others).
pub fn usable_size(b: Block) -> usize {
    match b {
        Block::Small { class, .. } => size_class::size_of(class),
        Block::Large { pages, .. } => pages * sys::PAGE_SIZE,
        Block::Foreign | Block::Invalid => 0,
    }
}

/// [`free_cached`] into the current span of the object's class only. Returns 0 when done; for
/// a host object it did not free, its class plus one (the caller goes on to
/// [`free_past_current`]); [`NOT_HOST_SMALL`] for anything else. Makes no call, so a C `free`
/// that tries it first and then jumps on saves no register.
///
/// # Safety
/// As [`free_cached`], but `p` may be outside the managed range (checked here).
#[inline(always)]
pub unsafe fn free_current(p: *mut u8) -> usize {
    match span::host_class_at(p as usize) {
        Some(class) => {
            if tcache::free_current_host(class, p) {
                0
            } else {
                class + 1
            }
        }
        None => NOT_HOST_SMALL,
    }
}

/// What [`free_current`] returns for a pointer that is not a host small object.
pub const NOT_HOST_SMALL: usize = usize::MAX;

/// The rest of [`free_cached`] after [`free_current`] returned `class + 1` for `p`: true when
/// `p` went back to its span or into the buffer of other threads' objects.
///
/// # Safety
/// As [`free_cached`]; `class` is `p`'s, and [`free_current`] has just declined `p`.
#[inline(always)]
pub unsafe fn free_past_current<H: Hooks>(p: *mut u8, class: usize) -> bool {
    tcache::push_host_past_current::<H>(class, p)
}

/// The fast path of [`free`] alone: `p`, a host object of the managed range, goes on this
/// thread's cache. False when it is anything else or the stack is full: the caller takes
/// [`block_at`] and [`free`]. Leaves `errno` alone (a C wrapper need not save it): its only
/// system call, `membarrier(2)` when another thread owes the object, restores it.
///
/// # Safety
/// `p` is inside the managed range and, if it heads a live object, not used after this call
/// returns true.
#[inline(always)]
pub unsafe fn free_cached<H: Hooks>(p: *mut u8) -> bool {
    match span::class_at(p as usize) {
        Some(class) if span::tier_of(p) == 0 => tcache::push_host::<H>(class, p),
        _ => false,
    }
}

/// Frees block `b` at `p`. A pointer into the middle of an object, or a second free, ends the
/// process with a message (as the heap's other frees do).
///
/// # Safety
/// `b` is `block_at(p)`, a `Small` or `Large` block not used after this call.
pub unsafe fn free<H: Hooks>(p: *mut u8, b: Block) {
    match b {
        Block::Small { class, tier: 0 } => tcache::free::<H>(class, p),
        Block::Small { class, tier } => tcache::free_on::<H>(tier, class, p),
        Block::Large { .. } => free_large::<H>(p),
        Block::Foreign | Block::Invalid => {
            sys::fatal("free of a pointer that is not a live tieralloc block")
        }
    }
}

/// Resizes block `b` at `p` to `new_size` (non-zero) bytes, aligned to [`MIN_ALIGN`], on the
/// block's own tier: in place when it fits or can grow, else moved (pages) or copied without
/// faulting device pages back. Null (and `p` untouched) when memory is exhausted.
///
/// # Safety
/// `b` is `block_at(p)`, a `Small` or `Large` block; `p` is not used after a non-null return.
pub unsafe fn realloc<H: Hooks>(p: *mut u8, b: Block, new_size: usize) -> *mut u8 {
    match b {
        // Address-only blocks have classes whose size is a multiple of MIN_ALIGN, so the class
        // found again from (size, MIN_ALIGN) is the block's own.
        Block::Small { class, tier } => {
            let old = size_class::size_of(class);
            debug_assert_eq!(size_class::class_of(old, MIN_ALIGN), Some(class));
            // SAFETY: `p` is a live object of class `class` (the caller's contract).
            unsafe { realloc_on::<H>(p, old, MIN_ALIGN, new_size, Some(tier)) }
        }
        Block::Large { page, pages } => {
            let t = H::tier_of_run(page, pages);
            if size_class::class_of(new_size, MIN_ALIGN).is_none() {
                let n = match pages_for(new_size) {
                    Some(n) => n,
                    None => return core::ptr::null_mut(),
                };
                if let Some(q) = resize_large::<H>(page, n, sys::PAGE_SIZE, t) {
                    return q;
                }
            }
            let q = alloc_in::<H>(t, new_size, MIN_ALIGN, false);
            if !q.is_null() {
                H::copy_block(q as usize, p as usize, new_size.min(pages * sys::PAGE_SIZE));
                free_large::<H>(p);
            }
            q
        }
        Block::Foreign | Block::Invalid => {
            sys::fatal("realloc of a pointer that is not a live tieralloc block")
        }
    }
}
