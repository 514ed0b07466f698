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

/// The executable segments of the dynamic loader (its base is `AT_BASE`) and of `libc.so`, as
/// `[start, end)` pairs in `out`; returns how many (at most `out.len() / 2`). Allocates nothing.
pub fn system_code(out: &mut [usize]) -> usize {
    // SAFETY: `getauxval` reads the auxiliary vector; AT_BASE is the dynamic loader's base.
    let loader = unsafe { libc::getauxval(libc::AT_BASE) } as usize;
    let mut state = SystemCode { loader, out, n: 0 };
    // SAFETY: the callback only reads the headers the loader passes and writes `state`, which
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(system_object), (&raw mut state).cast()) };
    state.n
}

struct SystemCode<'a> {
    loader: usize,
    out: &'a mut [usize],
    n: usize,
}

/// `dl_iterate_phdr` callback of [`system_code`].
unsafe extern "C" fn system_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the `SystemCode` passed to `dl_iterate_phdr`, `info` a valid entry.
    let (st, info) = unsafe { (&mut *data.cast::<SystemCode>(), &*info) };
    let name = if info.dlpi_name.is_null() {
        &[][..]
    } else {
        // SAFETY: a NUL-terminated name owned by the loader.
        unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    let file = name.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
    let is_loader = st.loader != 0 && info.dlpi_addr as usize == st.loader;
    if !(file.starts_with(b"libc.so") || is_loader) {
        return 0;
    }
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: `dlpi_phdr` has `dlpi_phnum` entries.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 && 2 * st.n + 1 < st.out.len()
        {
            let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
            st.out[2 * st.n] = start;
            st.out[2 * st.n + 1] = start + ph.p_memsz as usize;
            st.n += 1;
        }
    }
    0
}
