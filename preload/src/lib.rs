//! `libtieralloc.so`: tieralloc under any program, unmodified.
//!
//! ```sh
//! cargo build --release -p tieralloc-preload
//! LD_PRELOAD=$PWD/target/release/libtieralloc.so sqlite3 db.sqlite < script.sql
//! ```
//!
//! It exports the whole malloc family with glibc's semantics (`malloc`, `free`, `calloc`,
//! `realloc`, `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`,
//! `pvalloc`, `malloc_usable_size`, `malloc_trim`, `malloc_stats`), so every allocation of the
//! process, from the dynamic loader's first one on, comes from tieralloc's managed range. The
//! `TIERALLOC_*` environment variables work as for Rust programs (`TIERALLOC_STATS=1` prints the
//! stats table at exit), and `TIERALLOC_CHAOS=20ms` starts chaos migration (see
//! `tieralloc::chaos`) before `main`.
//!
//! A pointer outside the managed range was not handed out here (allocated before the library
//! took over, or by another allocator): `free`, `realloc` and `malloc_usable_size` pass it to
//! the next definition in the lookup order (glibc's), as if tieralloc were not there.
//!
//! Every function leaves `errno` as it found it, except to report a failure as glibc does
//! (`ENOMEM`, `EINVAL`).

#![deny(unsafe_op_in_unsafe_fn)]

mod capi;
mod next;

use core::ffi::{c_int, c_void};
use libc::size_t;
use tieralloc_core::malloc as heap;

/// The library's own Rust code (start-up, the purge, chaos and worker threads, the policy)
/// allocates from the heap directly, in internal memory (`tieralloc::malloc::internal`): a
/// fault handler that read a structure of tieralloc's which chaos had moved to a device would
/// wait for itself.
struct Internal;

// SAFETY: blocks come from `malloc::internal` with the layout's size and alignment, and go
// back through `TierAlloc`, which finds their span or run (and tier) from the address.
unsafe impl core::alloc::GlobalAlloc for Internal {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        heap::internal(layout.size(), layout.align(), false)
    }
    unsafe fn alloc_zeroed(&self, layout: core::alloc::Layout) -> *mut u8 {
        heap::internal(layout.size(), layout.align(), true)
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: forwarded contract.
        unsafe { TIERS.dealloc(p, layout) }
    }
    unsafe fn realloc(&self, p: *mut u8, layout: core::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded contract; a block keeps its tier when it moves.
        unsafe { TIERS.realloc(p, layout, new) }
    }
}

static TIERS: tieralloc_core::TierAlloc = tieralloc_core::TierAlloc::new();

#[global_allocator]
static RUST: Internal = Internal;

/// Starts chaos migration when `TIERALLOC_CHAOS` asks for it, once the C library is up (a
/// constructor of this library: it runs before the program's `main`, after libc's start-up,
/// so the chaos thread can be created). A backend that cannot serve it is said in one line.
/// With chaos, the C library's and the loader's own blocks are kept apart, so that chaos can
/// move the program's small objects too.
extern "C" fn start_chaos() {
    if std::env::var_os("TIERALLOC_CHAOS").is_some() {
        heap::keep_system_allocations_home();
    }
    if let Err(e) = tieralloc_core::chaos::start_from_env() {
        eprintln!("tieralloc: {e}");
    }
}

// The dynamic loader calls the functions of `.init_array` when the library is loaded.
#[used]
#[link_section = ".init_array"]
static START_CHAOS: extern "C" fn() = start_chaos;

fn errno() -> c_int {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e };
}

/// This thread's `errno` and where it lives. `__errno_location` is a call into libc through
/// the PLT: the hot paths make it once and write through the pointer (two calls per `malloc`
/// were 11% of a malloc/free loop under `perf`, 2026-12-02).
#[inline(always)]
fn errno_slot() -> (*mut c_int, c_int) {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for the thread's life.
    unsafe {
        let slot = libc::__errno_location();
        (slot, *slot)
    }
}

/// Runs `f` and puts `errno` back as it was: the heap's own system calls (a failed `madvise`
/// it tolerates, say) must not show through. A null result sets `fail` instead, if given.
#[inline(always)]
fn keeping_errno(fail: Option<c_int>, f: impl FnOnce() -> *mut u8) -> *mut c_void {
    let (slot, saved) = errno_slot();
    let p = f();
    let e = match (p.is_null(), fail) {
        (true, Some(e)) => e,
        _ => saved,
    };
    // SAFETY: this thread's errno slot (`errno_slot`).
    unsafe { *slot = e };
    p.cast()
}

/// `malloc(3)`.
///
/// # Safety
/// None beyond C's: the block is freed at most once, with `free` or `realloc`.
// SAFETY (naked): on entry (System V x86-64) the caller's return address is at `[rsp]` and
// the arguments are in registers; the jump leaves the stack as the caller left it, so
// `malloc_from` runs as if called directly and returns straight to the caller.
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn malloc(size: size_t) -> *mut c_void {
    // The caller's return address, still on top of the stack, as a second argument.
    core::arch::naked_asm!("mov rsi, [rsp]", "jmp {f}", f = sym malloc_from)
}

/// [`malloc`] with its caller's return address (see `malloc::malloc_from`).
unsafe extern "C" fn malloc_from(size: size_t, caller: usize) -> *mut c_void {
    // The cache's fast path makes no system call: `errno` needs no saving around it.
    if !heap::keeps_system_allocations_home() {
        let p = heap::malloc_last(size);
        if !p.is_null() {
            return p.cast();
        }
    }
    malloc_rest(size, caller)
}

/// [`malloc_from`] past the blocks freed last: the rest of the thread cache's fast path, then
/// [`malloc_slow`]. Out of line and `extern "C"`, reached by a jump: with the whole fast path
/// inlined, its call to the bitmap's refill made `malloc` save and restore three registers at
/// every call (2026-12-04).
#[inline(never)]
extern "C" fn malloc_rest(size: size_t, caller: usize) -> *mut c_void {
    if !heap::keeps_system_allocations_home() {
        let p = heap::malloc_cached(size);
        if !p.is_null() {
            return p.cast();
        }
    }
    malloc_slow(size, caller)
}

/// [`malloc_from`] past the thread cache's fast path, out of line as [`free_slow`] is;
/// `extern "C"` as [`free_rest`] is, so that `malloc_from` reaches it by a jump.
#[cold]
#[inline(never)]
extern "C" fn malloc_slow(size: size_t, caller: usize) -> *mut c_void {
    keeping_errno(Some(libc::ENOMEM), || heap::malloc_from(size, caller))
}

/// `calloc(3)`: null with `ENOMEM` when `n * size` overflows.
///
/// # Safety
/// As [`malloc`].
// SAFETY (naked): on entry (System V x86-64) the caller's return address is at `[rsp]` and
// the arguments are in registers; the jump leaves the stack as the caller left it, so
// `calloc_from` runs as if called directly and returns straight to the caller.
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn calloc(n: size_t, size: size_t) -> *mut c_void {
    // The caller's return address as a third argument, as in `malloc`.
    core::arch::naked_asm!("mov rdx, [rsp]", "jmp {f}", f = sym calloc_from)
}

/// [`calloc`] with its caller's return address.
unsafe extern "C" fn calloc_from(n: size_t, size: size_t, caller: usize) -> *mut c_void {
    keeping_errno(Some(libc::ENOMEM), || heap::calloc_from(n, size, caller))
}

/// `free(3)`.
///
/// # Safety
/// `p` is null or a live block from this family (or from the allocator before it).
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: the caller's contract; `p` stays live unless the step is done.
    let step = unsafe { heap::free_current(p.cast()) };
    if step.done() {
        return;
    }
    // SAFETY: as above.
    unsafe { free_rest(p, step) }
}

/// [`free`] past the current span: the rest of the thread cache's fast path, from where
/// [`heap::free_current`] stopped, then [`free_slow`]. Out of line, reached by a jump: with
/// [`heap::free_cached`] inlined into `free`, the calls on its other paths made `free` save and
/// restore six registers at every call, the current span's frees too (15 of a pair's 185
/// instructions under `callgrind`, 2026-12-04). `extern "C"` like `free`: with the same calling
/// convention the call is a jump (a sibling call), and `free` keeps no stack frame.
///
/// # Safety
/// As [`free`], for `p` non-null and still live.
#[inline(never)]
unsafe extern "C" fn free_rest(p: *mut c_void, step: heap::FreeStep) {
    // SAFETY: the caller's contract (`step` is `free_current`'s for `p`); a false return
    // leaves `p` live.
    if unsafe { heap::free_rest(p.cast(), step) } {
        return;
    }
    // SAFETY: as above.
    unsafe { free_slow(p) }
}

/// [`free`] past the thread cache's fast path. Out of line: inlined, its calls made `free`
/// save and restore six registers at every call (15 of a pair's 211 instructions under
/// `callgrind`, 2026-12-03).
///
/// # Safety
/// As [`free`], for `p` non-null and still live.
#[cold]
#[inline(never)]
unsafe fn free_slow(p: *mut c_void) {
    let (slot, saved) = errno_slot();
    if tieralloc_core::is_managed(p.cast()) {
        // SAFETY: a live block of the managed range (the caller's contract).
        unsafe { heap::free(p.cast()) };
    } else {
        // SAFETY: not ours: the caller's contract holds for the allocator that made it.
        unsafe { next::free(p) };
    }
    // SAFETY: this thread's errno slot (`errno_slot`).
    unsafe { *slot = saved };
}

/// `realloc(3)`: null `p` allocates; size 0 frees and returns null (glibc's choice).
///
/// # Safety
/// As [`free`] for `p`.
// SAFETY (naked): on entry (System V x86-64) the caller's return address is at `[rsp]` and
// the arguments are in registers; the jump leaves the stack as the caller left it, so
// `realloc_from` runs as if called directly and returns straight to the caller.
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: size_t) -> *mut c_void {
    // The caller's return address as a third argument, as in `malloc`.
    core::arch::naked_asm!("mov rdx, [rsp]", "jmp {f}", f = sym realloc_from)
}

/// [`realloc`] with its caller's return address: a null `p` allocates as `malloc` does.
unsafe extern "C" fn realloc_from(p: *mut c_void, size: size_t, caller: usize) -> *mut c_void {
    if p.is_null() {
        return keeping_errno(Some(libc::ENOMEM), || heap::malloc_from(size, caller));
    }
    if !tieralloc_core::is_managed(p.cast()) {
        // SAFETY: not ours: the caller's contract holds for the allocator that made it.
        return unsafe { next::realloc(p, size) };
    }
    let fail = (size != 0).then_some(libc::ENOMEM);
    // SAFETY: `p` is a live block of ours (the caller's contract).
    keeping_errno(fail, || unsafe { heap::realloc(p.cast(), size) })
}

/// `reallocarray(3)`: `realloc(p, n * size)`, null with `ENOMEM` (and `p` untouched) on
/// overflow.
///
/// # Safety
/// As [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: size_t, size: size_t) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded contract.
        Some(bytes) => unsafe { realloc(p, bytes) },
        None => {
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// `posix_memalign(3)`: `EINVAL` unless `align` is a power of two and a multiple of
/// `sizeof(void *)`; `ENOMEM` when memory is exhausted. `errno` is not changed.
///
/// # Safety
/// `out` is valid for a write of a pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    align: size_t,
    size: size_t,
) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<usize>() != 0 {
        return libc::EINVAL;
    }
    let p = keeping_errno(None, || heap::aligned(size, align));
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: `out` is writable (the caller's contract).
    unsafe { *out = p };
    0
}

/// `aligned_alloc(3)`: `EINVAL` unless `align` is a power of two.
///
/// # Safety
/// As [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: size_t, size: size_t) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    keeping_errno(Some(libc::ENOMEM), || heap::aligned(size, align))
}

/// `memalign(3)`: an alignment that is not a power of two is raised to the next one (glibc's
/// behaviour); `EINVAL` when there is none.
///
/// # Safety
/// As [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn memalign(align: size_t, size: size_t) -> *mut c_void {
    let Some(align) = align.max(1).checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    };
    keeping_errno(Some(libc::ENOMEM), || heap::aligned(size, align))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// `valloc(3)`: page-aligned.
///
/// # Safety
/// As [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn valloc(size: size_t) -> *mut c_void {
    keeping_errno(Some(libc::ENOMEM), || heap::aligned(size, page_size()))
}

/// `pvalloc(3)`: page-aligned, the size rounded up to whole pages.
///
/// # Safety
/// As [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: size_t) -> *mut c_void {
    let page = page_size();
    let Some(size) = size.max(1).checked_next_multiple_of(page) else {
        set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    keeping_errno(Some(libc::ENOMEM), || heap::aligned(size, page))
}

/// `malloc_usable_size(3)`: 0 for null.
///
/// # Safety
/// `p` is null or a live block.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> size_t {
    if p.is_null() {
        return 0;
    }
    if !tieralloc_core::is_managed(p.cast()) {
        // SAFETY: not ours: the caller's contract holds for the allocator that made it.
        return unsafe { next::usable_size(p) };
    }
    heap::usable_size(p.cast()).unwrap_or(0)
}

/// `malloc_trim(3)`: gives this thread's cached objects and every free page back to the OS at
/// once. Returns 1 (memory may have been released).
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(_pad: size_t) -> c_int {
    let saved = errno();
    tieralloc_core::trim();
    set_errno(saved);
    1
}

/// `malloc_stats(3)`: tieralloc's stats table on stderr.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn malloc_stats() {
    use std::io::Write;
    let saved = errno();
    let _ = writeln!(std::io::stderr(), "{}", tieralloc_core::stats());
    set_errno(saved);
}
