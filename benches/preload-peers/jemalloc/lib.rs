//! `libjemalloc_preload.so`: jemalloc's malloc family (see `../exports.rs`), through the
//! crate's prefixed entry points.

use core::ffi::{c_int, c_void};
use tikv_jemalloc_sys::aligned_alloc as peer_aligned_alloc;
use tikv_jemalloc_sys::calloc as peer_calloc;
use tikv_jemalloc_sys::free as peer_free;
use tikv_jemalloc_sys::malloc as peer_malloc;
use tikv_jemalloc_sys::posix_memalign as peer_posix_memalign;
use tikv_jemalloc_sys::realloc as peer_realloc;

unsafe fn peer_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { tikv_jemalloc_sys::malloc_usable_size(p) }
}

include!("../exports.rs");
