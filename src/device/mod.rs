//! Emulated devices: each one is a memory pool with a capacity that user pointers cannot reach.
//!
//! A device's pool is its *window*: a private anonymous mapping as large as the managed range,
//! reserved with `MAP_NORESERVE`. A page that lives on the device sits in the window at the same
//! offset it has in the managed range ("identity frames"), so the device's view of the whole
//! range is one contiguous mapping and no per-page mappings exist. Window pages exist only while
//! a page lives there: moving a page out, or freeing it, drops the window page, so device memory
//! really goes away. Because the window is private anonymous memory, a child after `fork` gets
//! its own copy-on-write copy of every device's contents, like the rest of the process.
//!
//! Capacity is enforced by counting pages ([`reserve`] / [`release`]): `used` always equals the
//! number of pages whose page-map entry names this device (DESIGN §4).

pub mod link;
pub mod worker;

pub use crate::base::consts::{MAX_DEVICES, NAME_MAX};
use crate::base::error::Error;
use crate::config::{self, DeviceSpec};
use crate::mem::arena;
use crate::pal::lock::Lock;
use crate::pal::sys;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

#[allow(clippy::declare_interior_mutable_const)]
const NO_BYTE: AtomicU8 = AtomicU8::new(0);

/// One emulated device.
struct DevicePool {
    /// Name bytes (`dev0` unless configured), `name[..name_len]`.
    name: [AtomicU8; NAME_MAX],
    /// Length of the name.
    name_len: AtomicUsize,
    /// Capacity in pages.
    capacity: AtomicUsize,
    /// Pages that live on this device now.
    used: AtomicUsize,
    /// Start address of the window (0 until initialised).
    window: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_DEVICE: DevicePool = DevicePool {
    name: [NO_BYTE; NAME_MAX],
    name_len: AtomicUsize::new(0),
    capacity: AtomicUsize::new(0),
    used: AtomicUsize::new(0),
    window: AtomicUsize::new(0),
};

/// The pools. Filled by [`ensure_init`] before [`COUNT`] is published (with `Release`);
/// readers look at a device only below `COUNT` (read with `Acquire`).
static POOLS: [DevicePool; MAX_DEVICES] = [NO_DEVICE; MAX_DEVICES];
static COUNT: AtomicUsize = AtomicUsize::new(0);

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// A device configuration given through [`crate::set_devices`] before first use.
struct Requested {
    /// Names and capacities, `list[..n]`.
    list: [DeviceSpec; MAX_DEVICES],
    /// How many were given (0: use `TIERALLOC_DEVICES` or the default).
    n: usize,
}

static REQUESTED: Lock<Requested> = Lock::new(Requested {
    list: [([0; NAME_MAX], 0, 0); MAX_DEVICES],
    n: 0,
});

/// `fork` preparation: holds the device list, which [`ensure_init`] holds while it creates
/// the devices (a leaf lock: nothing else is taken under it). A child forked while another
/// thread was creating them copied it held, with the devices half made, and its first
/// migration waited for it forever (`f10_fork_while_registering` hung once in `alloc_races`).
pub(crate) fn lock_for_fork() {
    REQUESTED.lock_for_fork();
}

/// Releases the device list after `fork`.
///
/// # Safety
/// This thread (or, in a child, its copy) took it with [`lock_for_fork`].
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { REQUESTED.unlock_after_fork() }
}

fn pools() -> &'static [DevicePool; MAX_DEVICES] {
    &POOLS
}

/// Sets the devices to create (name, capacity in bytes). Only before the first device use.
pub fn set_devices(list: &[(&str, usize)]) -> Result<(), Error> {
    if list.is_empty() || list.len() > MAX_DEVICES {
        return Err(Error::BadDeviceConfig {
            why: "give between 1 and 16 devices",
        });
    }
    let mut r = REQUESTED.lock();
    if STATE.load(Ordering::Acquire) != UNINIT {
        return Err(Error::DevicesAlreadyInUse);
    }
    for (i, (name, cap)) in list.iter().enumerate() {
        if *cap < sys::PAGE_SIZE {
            return Err(Error::BadDeviceConfig {
                why: "a device needs a capacity of at least one page (4096 bytes)",
            });
        }
        r.list[i] = (
            config::name_of(name.as_bytes()),
            name.len().min(NAME_MAX),
            *cap,
        );
    }
    r.n = list.len();
    Ok(())
}

/// Creates the devices once: from [`set_devices`], else `TIERALLOC_DEVICES`, else one device
/// of 1 GiB. Needs the managed range (its size and alignment); fails if the windows cannot be mapped.
pub fn ensure_init() -> Result<(), Error> {
    if STATE.load(Ordering::Acquire) == READY {
        return Ok(());
    }
    if !crate::mem::ensure_init() {
        return Err(Error::ArenaUnavailable {
            requested: arena::requested(),
        });
    }
    let r = REQUESTED.lock();
    if STATE.load(Ordering::Acquire) == READY {
        return Ok(());
    }
    STATE.store(RUNNING, Ordering::Relaxed);
    crate::pal::inject::stall(crate::pal::inject::Point::DeviceInitStall);
    let mut specs: [DeviceSpec; MAX_DEVICES] = [([0; NAME_MAX], 0, 0); MAX_DEVICES];
    let n = if r.n > 0 {
        specs[..r.n].copy_from_slice(&r.list[..r.n]);
        r.n
    } else {
        config::devices(&mut specs)
    };
    for (i, (name, len, cap)) in specs[..n].iter().enumerate() {
        let p = &POOLS[i];
        for (slot, b) in p.name.iter().zip(name) {
            slot.store(*b, Ordering::Relaxed);
        }
        p.name_len.store(*len, Ordering::Relaxed);
        p.capacity.store(
            (cap / sys::PAGE_SIZE).min(arena::pages()),
            Ordering::Relaxed,
        );
        // Congruent with the managed range modulo the largest alignment Rust allows (2^29):
        // a kernel's view of an argument (window + offset in the range) is then aligned as
        // the argument is, for every type.
        let w = sys::map_noreserve_congruent(arena::size(), MAX_ALIGN, arena::base());
        if w.is_null() {
            STATE.store(UNINIT, Ordering::Release);
            return Err(Error::Sys {
                what: "mmap of a device window",
                errno: sys::errno(),
            });
        }
        p.window.store(w as usize, Ordering::Release);
    }
    COUNT.store(n, Ordering::Release);
    crate::device::link::from_env(n);
    STATE.store(READY, Ordering::Release);
    drop(r);
    crate::mem::trace::start_from_env();
    Ok(())
}

/// The largest alignment a Rust type can have (`#[repr(align)]` accepts up to 2^29).
const MAX_ALIGN: usize = 1 << 29;

/// Number of devices (0 before [`ensure_init`]).
#[inline]
pub fn count() -> usize {
    COUNT.load(Ordering::Acquire)
}

/// Checks that device `d` exists.
pub fn check(d: u16) -> Result<(), Error> {
    if (d as usize) < count() {
        Ok(())
    } else {
        Err(Error::UnknownDevice {
            device: d,
            devices: count() as u16,
        })
    }
}

/// Address of page `page`'s frame in device `d`'s window. Async-signal-safe.
#[inline]
pub fn frame(d: u16, page: usize) -> usize {
    pools()[d as usize].window.load(Ordering::Acquire) + (page << sys::PAGE_SHIFT)
}

/// Start of device `d`'s window.
#[inline]
pub fn window(d: u16) -> usize {
    pools()[d as usize].window.load(Ordering::Acquire)
}

/// Takes `pages` pages of device `d`'s capacity; false (and nothing taken) if they do not fit.
pub fn reserve(d: u16, pages: usize) -> bool {
    if crate::pal::inject::fail(crate::pal::inject::Point::DeviceReserve).is_some() {
        return false;
    }
    let p = &pools()[d as usize];
    let cap = p.capacity.load(Ordering::Relaxed);
    p.used
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
            u.checked_add(pages).filter(|&n| n <= cap)
        })
        .is_ok()
}

/// Gives back `pages` pages of device `d`'s capacity. Async-signal-safe.
#[inline]
pub fn release(d: u16, pages: usize) {
    pools()[d as usize].used.fetch_sub(pages, Ordering::AcqRel);
}

/// Pages of device `d`'s capacity in use.
pub fn used_pages(d: u16) -> usize {
    pools()[d as usize].used.load(Ordering::Acquire)
}

/// Capacity of device `d` in pages.
pub fn capacity_pages(d: u16) -> usize {
    pools()[d as usize].capacity.load(Ordering::Relaxed)
}

/// Free pages of device `d`.
pub fn free_pages(d: u16) -> usize {
    let p = &pools()[d as usize];
    p.capacity
        .load(Ordering::Relaxed)
        .saturating_sub(p.used.load(Ordering::Relaxed))
}

/// One device as [`crate::devices`] reports it.
///
/// ```
/// for d in tieralloc::devices()? {
///     println!("device {} ({}): {} of {} bytes used", d.id, d.name, d.used, d.capacity);
/// }
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device number, as in `Tier::Device(id)`.
    pub id: u16,
    /// Its name (`dev0`, … unless `TIERALLOC_DEVICES` named it).
    pub name: String,
    /// Capacity in bytes.
    pub capacity: usize,
    /// Bytes of pages that live on the device now.
    pub used: usize,
}

/// The devices and how full they are.
pub fn infos() -> Vec<DeviceInfo> {
    (0..count())
        .map(|i| {
            let p = &pools()[i];
            let len = p.name_len.load(Ordering::Relaxed);
            DeviceInfo {
                id: i as u16,
                name: p.name[..len]
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed) as char)
                    .collect(),
                capacity: p.capacity.load(Ordering::Relaxed) * sys::PAGE_SIZE,
                used: p.used.load(Ordering::Relaxed) * sys::PAGE_SIZE,
            }
        })
        .collect()
}
