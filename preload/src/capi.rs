//! The tier API for C (`include/tieralloc.h`): each call returns 0 or a `TIERALLOC_E*` code, and
//! [`tieralloc_last_error`] describes this thread's last failure in words.
//!
//! A tier is an `int`: `TIERALLOC_HOST` (-1) or a device number from 0.

use core::cell::RefCell;
use core::ffi::{c_char, c_int, c_void};
use tieralloc_core::{Advice, Error, Tier};

/// Codes of `tieralloc.h`, one per kind of `tieralloc::Error`.
fn code(e: &Error) -> c_int {
    match e {
        Error::NotManaged { .. } => 1,
        Error::ZeroLength | Error::RangeOverflow { .. } => 2,
        Error::NotAllocated { .. } => 3,
        Error::UnknownDevice { .. } => 4,
        Error::DeviceFull { .. } => 5,
        Error::MapCountLimit { .. } | Error::ArenaUnavailable { .. } => 6,
        Error::BackendUnavailable { .. } | Error::ChaosNeedsUffd { .. } => 7,
        Error::Sys { .. } => 8,
        _ => 9,
    }
}

/// A tier from C's encoding; `TIERALLOC_EINVAL` for a negative number other than the host's.
fn tier(t: c_int) -> Result<Tier, c_int> {
    match t {
        -1 => Ok(Tier::Host),
        d if (0..=u16::MAX as c_int).contains(&d) => Ok(Tier::Device(d as u16)),
        _ => Err(fail_with(
            2,
            "tier must be TIERALLOC_HOST (-1) or a device number",
        )),
    }
}

thread_local! {
    /// This thread's last error message, NUL-terminated (empty: none yet).
    static LAST: RefCell<[u8; 256]> = const { RefCell::new([0; 256]) };
}

fn remember(msg: &str) {
    LAST.with(|l| {
        let mut l = l.borrow_mut();
        let n = msg.len().min(l.len() - 1);
        l[..n].copy_from_slice(&msg.as_bytes()[..n]);
        l[n] = 0;
    });
}

fn fail_with(code: c_int, msg: &str) -> c_int {
    remember(msg);
    code
}

fn fail(e: Error) -> c_int {
    remember(&e.to_string());
    code(&e)
}

/// Describes the calling thread's last failed call (`""` if none failed). The text stays valid
/// until this thread's next failing call.
#[no_mangle]
pub extern "C" fn tieralloc_last_error() -> *const c_char {
    LAST.with(|l| l.as_ptr().cast::<c_char>())
}

/// Moves the pages of `[p, p+len)` to `to`; `*moved` (if not null) gets the pages it moved.
///
/// # Safety
/// `moved` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tieralloc_migrate(
    p: *const c_void,
    len: usize,
    to: c_int,
    moved: *mut usize,
) -> c_int {
    let to = match tier(to) {
        Ok(t) => t,
        Err(c) => return c,
    };
    match tieralloc_core::migrate(p.cast(), len, to) {
        Ok(m) => {
            if !moved.is_null() {
                // SAFETY: not null, writable (the caller's contract).
                unsafe { *moved = m.moved };
            }
            0
        }
        Err(e) => fail(e),
    }
}

/// Starts moving `[p, p+len)` to `to` in the background and returns at once.
#[no_mangle]
pub extern "C" fn tieralloc_prefetch(p: *const c_void, len: usize, to: c_int) -> c_int {
    let to = match tier(to) {
        Ok(t) => t,
        Err(c) => return c,
    };
    match tieralloc_core::prefetch(p.cast(), len, to) {
        // Dropped: the prefetch finishes unobserved.
        Ok(_pending) => 0,
        Err(e) => fail(e),
    }
}

/// Records advice for `[p, p+len)`: `TIERALLOC_ADVISE_PREFERRED_LOCATION` and
/// `TIERALLOC_ADVISE_ACCESSED_BY` take `tier`; `READ_MOSTLY` and `RESET` ignore it.
#[no_mangle]
pub extern "C" fn tieralloc_advise(p: *const c_void, len: usize, advice: c_int, t: c_int) -> c_int {
    let advice = match advice {
        0 | 1 => match tier(t) {
            Ok(t) if advice == 0 => Advice::PreferredLocation(t),
            Ok(t) => Advice::AccessedBy(t),
            Err(c) => return c,
        },
        2 => Advice::ReadMostly,
        3 => Advice::Reset,
        _ => return fail_with(2, "unknown advice"),
    };
    match tieralloc_core::advise(p.cast(), len, advice) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Where the bytes of `[p, p+len)` live: `*host` gets the host-resident bytes, and
/// `device[d]` for `d < ndevices` the bytes on device `d` (either may be null).
///
/// # Safety
/// `host` is null or writable; `device` is null or valid for `ndevices` writes.
#[no_mangle]
pub unsafe extern "C" fn tieralloc_residency(
    p: *const c_void,
    len: usize,
    host: *mut usize,
    device: *mut usize,
    ndevices: usize,
) -> c_int {
    match tieralloc_core::residency(p.cast(), len) {
        Ok(r) => {
            if !host.is_null() {
                // SAFETY: writable (the caller's contract).
                unsafe { *host = r.host_bytes() };
            }
            for d in 0..if device.is_null() { 0 } else { ndevices } {
                // SAFETY: `d < ndevices` writes are valid (the caller's contract).
                unsafe { *device.add(d) = r.device_bytes(d as u16) };
            }
            0
        }
        Err(e) => fail(e),
    }
}

/// One device, as `tieralloc_device_t` in the header.
#[repr(C)]
pub struct CDevice {
    /// Its name, NUL-terminated (cut at 31 bytes).
    pub name: [c_char; 32],
    /// Capacity in bytes.
    pub capacity: usize,
    /// Bytes on it now.
    pub used: usize,
}

/// Fills `out[0..max]` with the devices; returns how many there are (more than `max` if
/// `out` was too short), or -1 with the error in `tieralloc_last_error`.
///
/// # Safety
/// `out` is null or valid for `max` writes.
#[no_mangle]
pub unsafe extern "C" fn tieralloc_devices(out: *mut CDevice, max: usize) -> c_int {
    match tieralloc_core::devices() {
        Ok(list) => {
            for (i, d) in list
                .iter()
                .enumerate()
                .take(if out.is_null() { 0 } else { max })
            {
                let mut name = [0 as c_char; 32];
                for (n, b) in name.iter_mut().zip(d.name.bytes().take(31)) {
                    *n = b as c_char;
                }
                // SAFETY: `i < max` writes are valid (the caller's contract).
                unsafe {
                    out.add(i).write(CDevice {
                        name,
                        capacity: d.capacity,
                        used: d.used,
                    })
                };
            }
            list.len() as c_int
        }
        Err(e) => {
            fail(e);
            -1
        }
    }
}

/// The main counters, as `tieralloc_stats_t` in the header.
#[repr(C)]
pub struct CStats {
    /// Bytes of the managed range handed out at its high point.
    pub used_bytes: usize,
    /// Host-resident bytes of the managed range.
    pub host_resident: usize,
    /// Bytes moved host → device.
    pub bytes_to_device: u64,
    /// Bytes moved device → host.
    pub bytes_to_host: u64,
    /// CPU faults that brought pages back.
    pub cpu_faults: u64,
    /// `migrate` calls.
    pub migrations: u64,
    /// Bytes chaos migration moved.
    pub chaos_bytes: u64,
}

/// Fills `*out` with the counters.
///
/// # Safety
/// `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn tieralloc_stats(out: *mut CStats) -> c_int {
    if out.is_null() {
        return fail_with(2, "tieralloc_stats: out is null");
    }
    let s = tieralloc_core::stats();
    // SAFETY: writable (the caller's contract).
    unsafe {
        out.write(CStats {
            used_bytes: s.arena_used,
            host_resident: s.host_resident,
            bytes_to_device: s.bytes_to_device,
            bytes_to_host: s.bytes_to_host,
            cpu_faults: s.cpu_faults,
            migrations: s.migrations,
            chaos_bytes: s.chaos_bytes,
        })
    };
    0
}
