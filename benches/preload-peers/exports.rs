// The malloc family exported over a peer allocator's own entry points, for `preload_report`:
// each peer becomes an `LD_PRELOAD`able library built from its crate's sources, as tieralloc's
// is. Included by `mimalloc/lib.rs` and `jemalloc/lib.rs`, which define the seven `peer_*`
// functions and import `c_int` and `c_void`; `memalign`, `valloc`, `pvalloc` and `reallocarray`
// are derived from them here.


fn set_errno(e: c_int) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn malloc(n: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { peer_malloc(n) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { peer_calloc(n, size) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { peer_realloc(p, n) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { peer_free(p) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, n: usize) -> c_int {
    // SAFETY: forwarded.
    unsafe { peer_posix_memalign(out, align, n) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, n: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { peer_aligned_alloc(align, n) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { peer_usable_size(p) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, n: usize) -> *mut c_void {
    let mut p = core::ptr::null_mut();
    let align = align.max(core::mem::size_of::<usize>()).next_power_of_two();
    // SAFETY: `p` is writable.
    match unsafe { peer_posix_memalign(&mut p, align, n) } {
        0 => p,
        e => {
            set_errno(e);
            core::ptr::null_mut()
        }
    }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn valloc(n: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { memalign(4096, n) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(n: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { memalign(4096, n.max(1).next_multiple_of(4096)) }
}

/// # Safety
/// C's.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(b) => unsafe { peer_realloc(p, b) },
        None => {
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}
