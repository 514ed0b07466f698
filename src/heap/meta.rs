//! Memory for allocator metadata (span free bitmaps), outside the managed range.
//!
//! Metadata must never live in pages that can migrate, or allocating would fault device pages
//! back. This is a bump allocator over 1 MiB anonymous mappings; callers recycle what they free
//! through their own free lists (bitmaps of one size class are interchangeable).

use crate::pal::lock::Lock;
use crate::pal::sys;
use core::sync::atomic::{AtomicUsize, Ordering};

const CHUNK: usize = 1 << 20;

struct Bump {
    /// Next free byte of the current chunk.
    next: usize,
    /// End of the current chunk.
    end: usize,
}

static BUMP: Lock<Bump> = Lock::new(Bump { next: 0, end: 0 });
static HANDED_OUT: AtomicUsize = AtomicUsize::new(0);

/// Returns `bytes` (rounded up to 64) of zeroed memory outside the managed range, or null.
pub fn alloc(bytes: usize) -> *mut u64 {
    let bytes = bytes.next_multiple_of(64);
    let mut b = BUMP.lock();
    if b.end - b.next < bytes {
        let size = bytes.max(CHUNK).next_multiple_of(sys::PAGE_SIZE);
        let p = sys::map_noreserve(size);
        if p.is_null() {
            return core::ptr::null_mut();
        }
        b.next = p as usize;
        b.end = p as usize + size;
    }
    let p = b.next;
    b.next += bytes;
    HANDED_OUT.fetch_add(bytes, Ordering::Relaxed);
    p as *mut u64
}

/// Bytes of metadata handed out so far (all of it is written, so all of it is resident).
pub fn bytes() -> usize {
    HANDED_OUT.load(Ordering::Relaxed)
}

/// Holds the lock across `fork` (see `heap::fork`).
pub fn lock_for_fork() {
    BUMP.lock_for_fork();
}

/// Releases the lock taken by [`lock_for_fork`].
///
/// # Safety
/// Only from the fork handlers, after [`lock_for_fork`].
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { BUMP.unlock_after_fork() }
}
