//! The page map against the devices, checked when nothing runs (after a step of the model and
//! stress tests): every page entry unlocked and unpinned; a free page on no device and with no
//! duplicate; a duplicate only beside a host page; and each device's `used` equal to the pages
//! the page map puts on it (device-resident plus duplicated). Allocates nothing.

use crate::base::consts::MAX_DEVICES;
use crate::device;
use crate::heap::check::{ensure, Invalid};
use crate::mem::pagemap::{self, Use};
use core::sync::atomic::Ordering;

/// Checks the page map against the devices' accounting (see the module docs).
pub fn check_devices() -> Result<(), Invalid> {
    let top = crate::heap::pages::TOP.load(Ordering::Acquire);
    let mut on = [0usize; MAX_DEVICES];
    for p in 0..top {
        let e = pagemap::get(p);
        ensure(!e.locked(), "no page entry is locked when nothing runs", p)?;
        ensure(!e.pinned(), "no page is pinned when no kernel runs", p)?;
        if e.use_() == Use::Free {
            ensure(
                e.device().is_none() && e.dup().is_none(),
                "a free page is on no device and has no duplicate",
                p,
            )?;
        }
        if let Some(d) = e.dup() {
            ensure(
                e.device().is_none(),
                "a duplicated page lives on the host",
                p,
            )?;
            on[d as usize] += 1;
        }
        if let Some(d) = e.device() {
            on[d as usize] += 1;
        }
    }
    for (d, &pages) in on.iter().enumerate().take(device::count()) {
        ensure(
            device::used_pages(d as u16) == pages,
            "a device's used pages == the pages the page map puts on it",
            d,
        )?;
    }
    Ok(())
}
