//! Read-only duplicates (`Advice::ReadMostly`): a host page and a copy of it on one device.
//!
//! Creating one follows the migration protocol without the last step: with the page locked,
//! the host page is write-protected (readers go on), its data is copied into the device frame,
//! and the entry says "host, duplicate on d". CPU reads and device kernels that read both hit
//! their own copy without faulting. The first CPU write faults on the protection, drops the
//! device copy and opens the host page again ([`drop_locked`], on the fault path); a kernel that
//! declares a write makes the device copy the only one ([`promote_locked`]). Either way there is
//! one authoritative copy whenever a write can happen, so no write is lost.
//!
//! A duplicate counts against the device's capacity like a device-resident page.

use crate::base::error::Error;
use crate::device;
use crate::fault::{self, Backend};
use crate::mem::arena;
use crate::mem::counters::COUNTERS;
use crate::mem::pagemap::{self, Entry};
use crate::pal::sys;
use crate::pal::uffd;
use crate::tiering::migrate::{runs_changed, Migrated};
use core::sync::atomic::Ordering;

const PAGE: usize = sys::PAGE_SIZE;

/// Makes read-only duplicates of host pages `[s, s+n)` (locked, entries `e`) on device `d`,
/// whose capacity is reserved, and publishes them. On error the pages stay plain host pages
/// (unlocked, their reservation given back).
pub(crate) fn create(
    backend: Backend,
    d: u16,
    s: usize,
    n: usize,
    e: &[Entry],
    out: &mut Migrated,
) -> Result<(), Error> {
    let (addr, frame, len) = (arena::addr_of(s), device::frame(d, s), n * PAGE);
    let done = match backend {
        Backend::Uffd | Backend::UffdFast => {
            // Missing host pages get the zero page first, so the write protection has a page
            // to sit on (a write to a missing page would otherwise fill it unprotected).
            // (A missing page keeps no write protection: should the zero page fail, so does
            // the duplicate.)
            uffd::zeropage(addr, len, false)
                .and_then(|()| uffd::write_protect(addr, len, true))
                .and_then(|()| {
                    copy_into_window(addr, frame, len).inspect_err(|_| {
                        let _ = uffd::write_protect(addr, len, false);
                    })
                })
        }
        Backend::Signal => sys::protect(addr, len, libc::PROT_READ).map(|()| {
            runs_changed(s, n, true);
            // SAFETY: the host pages are readable (and locked: no one frees or moves them); the
            // window pages are plain memory in this backend; they do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, frame as *mut u8, len) };
        }),
    };
    match done {
        Ok(()) => {
            for (i, entry) in e.iter().enumerate().take(n) {
                pagemap::unlock(s + i, entry.with_dup(d));
            }
            out.moved += n;
            COUNTERS
                .pages_to_device
                .fetch_add(n as u64, Ordering::Relaxed);
            COUNTERS.dup_pages.fetch_add(n as u64, Ordering::Relaxed);
            Ok(())
        }
        Err(errno) => {
            device::release(d, n);
            for (i, entry) in e.iter().enumerate().take(n) {
                pagemap::unlock(s + i, *entry);
            }
            Err(Error::Sys {
                what: "making read-only duplicates on a device",
                errno,
            })
        }
    }
}

/// `UFFDIO_COPY` of `[addr, addr+len)` into the (missing) window pages at `frame`; a stale
/// window page is dropped and copied again.
fn copy_into_window(addr: usize, frame: usize, len: usize) -> Result<(), i32> {
    match uffd::copy(frame, addr, len) {
        Err(libc::EEXIST) => {
            sys::discard(frame, len);
            uffd::copy(frame, addr, len)
        }
        r => r,
    }
}

/// Drops the duplicates on device `d` of host pages `[s, s+n)` (locked by the caller, who
/// publishes `on_host` entries) and opens the host pages for writing. Writers waiting in
/// transparent mode are woken only if `wake` (the fault path wakes them after publishing, so
/// that a woken writer sees its fault counted). Async-signal-safe: the fault path calls it on
/// the first write.
pub(crate) fn drop_locked(backend: Backend, s: usize, n: usize, d: u16, wake: bool) {
    let (addr, len) = (arena::addr_of(s), n * PAGE);
    sys::discard(device::frame(d, s), len);
    device::release(d, n);
    match backend {
        Backend::Uffd | Backend::UffdFast => {
            let opened = if wake {
                uffd::write_protect(addr, len, false)
            } else {
                uffd::unprotect_quietly(addr, len)
            };
            if opened.is_err() {
                sys::fatal("could not open a read-mostly page for writing");
            }
        }
        Backend::Signal => {
            if sys::protect(addr, len, libc::PROT_READ | libc::PROT_WRITE).is_err() {
                sys::fatal("could not open a read-mostly page for writing (vm.max_map_count?)");
            }
            runs_changed(s, n, false);
        }
    }
}

/// A kernel on `d` will write pages `[s, s+n)` (locked, host pages with duplicates on `d`):
/// the device copies become the only ones and the host pages are released. Returns the new
/// entries' template (the caller publishes or pins `on_device(d, true)`).
pub(crate) fn promote_locked(backend: Backend, s: usize, n: usize) {
    let (addr, len) = (arena::addr_of(s), n * PAGE);
    match backend {
        Backend::Uffd | Backend::UffdFast => {
            // A released page is missing again: the next CPU touch faults it back.
            sys::discard(addr, len);
            let _ = uffd::write_protect(addr, len, false);
        }
        Backend::Signal => {
            if sys::protect(addr, len, libc::PROT_NONE).is_err() {
                sys::fatal("could not protect pages a device kernel writes (vm.max_map_count?)");
            }
            sys::discard(addr, len);
        }
    }
    fault::wake_pages(s, n);
}
