//! `libmimalloc_preload.so`: mimalloc's malloc family (see `../exports.rs`).

use core::ffi::{c_int, c_void};
use libmimalloc_sys as _; // links the mimalloc archive built from the crate's C sources

extern "C" {
    fn mi_malloc(n: usize) -> *mut c_void;
    fn mi_calloc(n: usize, size: usize) -> *mut c_void;
    fn mi_realloc(p: *mut c_void, n: usize) -> *mut c_void;
    fn mi_free(p: *mut c_void);
    fn mi_posix_memalign(out: *mut *mut c_void, align: usize, n: usize) -> c_int;
    fn mi_aligned_alloc(align: usize, n: usize) -> *mut c_void;
    fn mi_usable_size(p: *const c_void) -> usize;
}

use mi_aligned_alloc as peer_aligned_alloc;
use mi_calloc as peer_calloc;
use mi_free as peer_free;
use mi_malloc as peer_malloc;
use mi_posix_memalign as peer_posix_memalign;
use mi_realloc as peer_realloc;

unsafe fn peer_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { mi_usable_size(p) }
}

include!("../exports.rs");
