//! Hints: `advise(ptr, len, Advice)` records, per page, how the program will use memory, and
//! the placement paths follow it (see [`Advice`]).

use crate::base::error::Error;
use crate::base::tier::Tier;
use crate::device;
use crate::fault;
use crate::mem::arena;
use crate::mem::counters::COUNTERS;
use crate::mem::pagemap::{self, Use};
use crate::tiering::duplicate;
use crate::tiering::migrate;
use core::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

/// A usage hint for a range of pages (whole pages: the hint covers every page the range
/// touches). Hints stay with the pages until [`Advice::Reset`] or until the memory is freed.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// use tieralloc::{Advice, Tier};
/// let table = vec![1u32; 1 << 16];
/// let (p, n) = (table.as_ptr().cast::<u8>(), 1 << 18);
/// tieralloc::advise(p, n, Advice::ReadMostly)?;
/// tieralloc::migrate(p, n, Tier::Device(0))?; // a read-only copy; the host keeps its own
/// assert_eq!(tieralloc::residency(p, n)?.duplicated_bytes(0), n);
/// assert_eq!(table[7], 1); // CPU reads hit the host copy: no fault
/// tieralloc::advise(p, n, Advice::Reset)?;
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// Where the data should live. For `Device(d)`: kernels on other devices read it remotely
    /// instead of taking it away, and after a CPU fault brought pages back, a background
    /// worker moves them to `d` again soon after (once the CPU has left them alone for a few
    /// ms). For `Host`: kernels read the pages remotely, on the host.
    PreferredLocation(Tier),
    /// `Device(d)`: kernels on `d` read and write the pages where they are (remote access),
    /// without migrating them. `Host` is recorded, but the CPU cannot map device memory in
    /// this emulation: a CPU touch still brings device pages back.
    AccessedBy(Tier),
    /// Migrating to a device makes a read-only duplicate there, and the host copy stays: CPU
    /// reads and device kernels that read both hit local copies without faults. The first
    /// CPU write (or a kernel that declares a write) leaves one copy again.
    ReadMostly,
    /// Forget every hint on the pages (duplicates are dropped; the host copy stays).
    Reset,
}

/// Ranges with `PreferredLocation(Device)` advice, for the worker that moves them back.
static PREFERRED: Mutex<Vec<(usize, usize, u16)>> = Mutex::new(Vec::new());
static RETURNER: Mutex<u32> = Mutex::new(0);

/// Records `advice` for the pages of `[ptr, ptr+len)`. See [`crate::advise`].
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// let v = vec![0u8; 1 << 20];
/// tieralloc::advise(v.as_ptr(), v.len(), tieralloc::Advice::AccessedBy(tieralloc::Tier::Device(0)))?;
/// assert!(tieralloc::advise(v.as_ptr(), 0, tieralloc::Advice::Reset).is_err()); // empty range
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub fn advise(ptr: *const u8, len: usize, advice: Advice) -> Result<(), Error> {
    let (first, n) = migrate::pages_of(ptr, len)?;
    migrate::start_devices()?;
    if let Advice::PreferredLocation(Tier::Device(d)) | Advice::AccessedBy(Tier::Device(d)) = advice
    {
        device::check(d)?;
    }
    if let Some(p) = (first..first + n).find(|&p| pagemap::get(p).use_() == Use::Free) {
        return Err(Error::NotAllocated {
            addr: arena::addr_of(p),
        });
    }
    // Each page is locked while its advice changes: no signal handler may run meanwhile (one
    // that touched the page would wait for this thread).
    let quiet = crate::pal::signal::SignalsBlocked::new();
    for p in first..first + n {
        // Locked inside the fork gate (a fork child never inherits the lock), and never waiting
        // there for a kernel's pin (the kernel may allocate, which a fork holds up): a pinned
        // page is waited for outside it.
        let locked = loop {
            let gate = crate::mem::gate::Gate::enter();
            match pagemap::lock_unless_pinned(p) {
                Ok(Some(e)) => break Some((e, gate)),
                // A page freed meanwhile (free pages are never locked) keeps no advice.
                Ok(None) => break None,
                Err(()) => {
                    drop(gate);
                    pagemap::wait_unpinned(p);
                }
            }
        };
        let Some((e, _gate)) = locked else {
            continue;
        };
        let next = match advice {
            Advice::PreferredLocation(t) => e.with_preferred(t),
            Advice::AccessedBy(t) => e.with_accessed_by(t),
            Advice::ReadMostly => e.with_read_mostly(true),
            Advice::Reset => match (e.dup(), fault::backend()) {
                (Some(d), Some(b)) => {
                    duplicate::drop_locked(b, p, 1, d, true);
                    e.on_host().without_advice()
                }
                _ => e.without_advice(),
            },
        };
        pagemap::unlock(p, next);
    }
    drop(quiet);
    if let Advice::PreferredLocation(Tier::Device(d)) = advice {
        let mut list = PREFERRED.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|&(s, k, _)| s + k <= first || first + n <= s);
        list.push((first, n, d));
        start_returner();
    } else if advice == Advice::Reset {
        let mut list = PREFERRED.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|&(s, k, _)| s + k <= first || first + n <= s);
    }
    Ok(())
}

/// How long the CPU must leave a faulted-back block alone before it returns to its
/// preferred device.
const QUIET: Duration = Duration::from_millis(20);

fn start_returner() {
    let mut pid = RETURNER.lock().unwrap_or_else(|e| e.into_inner());
    if *pid == std::process::id() {
        return;
    }
    *pid = std::process::id();
    let _ = std::thread::Builder::new()
        .name("tieralloc-return".into())
        .spawn(|| {
            crate::pal::signal::SignalsBlocked::forever();
            loop {
                std::thread::sleep(QUIET);
                return_preferred();
            }
        });
}

/// Moves host pages with `PreferredLocation(Device(d))` whose block has not faulted recently
/// back to `d`.
fn return_preferred() {
    let list = PREFERRED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (first, n, d) in list {
        let mut p = first;
        while p < first + n {
            let e = pagemap::get(p);
            let back = e.use_() != Use::Free
                && e.device().is_none()
                && e.preferred() == Some(Tier::Device(d))
                && crate::mem::blocks::recent_bounces(crate::mem::blocks::of_page(p)) == 0;
            if !back {
                p += 1;
                continue;
            }
            let s = p;
            while p < first + n && pagemap::get(p).device().is_none() {
                p += 1;
            }
            if crate::mem::trace::with_cause(crate::mem::trace::Cause::Advice, || {
                migrate::migrate(
                    arena::addr_of(s) as *const u8,
                    (p - s) * crate::pal::sys::PAGE_SIZE,
                    Tier::Device(d),
                )
            })
            .is_ok()
            {
                COUNTERS.returns.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
