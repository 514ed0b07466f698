//! The process: its id, its environment, and the callbacks it runs around `fork` and at exit.
//! `nix` wraps none of `getenv` (without allocating), `pthread_atfork` and `atexit`.

/// This process's id. Async-signal-safe.
pub fn pid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// The value of environment variable `name`, without allocating (usable inside the
/// allocator and before `main`). `std::env::var` allocates, so it is not used here.
pub fn getenv(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: NUL-terminated name; the result, if not null, is a NUL-terminated string in the
    // environment, which this crate never modifies.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes())
}

/// Registers the `fork` handlers (`pthread_atfork`): `prepare` in the forking thread before
/// `fork`, `parent` and `child` after it.
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: registers plain callbacks; glibc may use its own malloc here, never ours.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Runs `f` at normal process exit (`atexit`).
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: registers a plain function; atexit has no other preconditions.
    unsafe { libc::atexit(f) };
}
