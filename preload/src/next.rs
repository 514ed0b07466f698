//! The allocator loaded after this library (glibc's), for pointers tieralloc did not hand out.
//! Looked up once, on the first such pointer, with `dlsym(RTLD_NEXT)`.

use core::ffi::{c_char, c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};

/// The next definition of `name` (0 if there is none), cached in `slot`.
fn lookup(slot: &AtomicUsize, name: &CStr) -> usize {
    let mut f = slot.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: `name` is NUL-terminated; RTLD_NEXT lookups have no other precondition. A
        // racing thread stores the same address.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) } as usize;
        slot.store(f, Ordering::Release);
    }
    f
}

static FREE: AtomicUsize = AtomicUsize::new(0);
static REALLOC: AtomicUsize = AtomicUsize::new(0);
static USABLE: AtomicUsize = AtomicUsize::new(0);

/// The next `free(p)`; nothing if there is none (the block leaks rather than crash).
///
/// # Safety
/// `p` is a live block of the next allocator.
pub unsafe fn free(p: *mut c_void) {
    let f = lookup(&FREE, c"free");
    if f != 0 {
        // SAFETY: `f` is the address of a function with free's signature; `p` is its block.
        unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void)>(f)(p) }
    }
}

/// The next `realloc(p, size)`; null with `ENOMEM` if there is none.
///
/// # Safety
/// `p` is a live block of the next allocator.
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    let f = lookup(&REALLOC, c"realloc");
    if f == 0 {
        // SAFETY: this thread's errno slot.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
        return core::ptr::null_mut();
    }
    type Realloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
    // SAFETY: `f` has realloc's signature; `p` is its block.
    unsafe { core::mem::transmute::<usize, Realloc>(f)(p, size) }
}

/// The next `malloc_usable_size(p)`; 0 if there is none.
///
/// # Safety
/// `p` is a live block of the next allocator.
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    let f = lookup(&USABLE, c"malloc_usable_size");
    if f == 0 {
        return 0;
    }
    // SAFETY: `f` has malloc_usable_size's signature; `p` is its block.
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> usize>(f)(p) }
}
