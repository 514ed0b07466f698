//! `realloc` keeps a block's tier and faults nothing back: device-resident, never-touched and
//! duplicated blocks that must move (the pages after them are taken) reach their new block
//! without a CPU fault, stay on their device, and keep every byte; a device-tier `Vec` that
//! grows outside its scope stays on its device; whole host pages move instead of being copied
//! where a userfaultfd is open.
//!
//! `each_backend` runs the file again in a child process per fault backend.

use std::sync::MutexGuard;
use tieralloc::{Advice, Tier, TierAlloc};

mod common;
use common::*;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

fn setup() -> MutexGuard<'static, ()> {
    serial_with_devices(&[("dev0", 256 * MIB), ("dev1", 256 * MIB)])
}

/// Grows `v` to twice its capacity with `reserve_exact`, after taking the page that follows
/// it so that the block must move. Returns whether it moved.
fn grow_moving<T>(v: &mut Vec<T>) -> bool {
    let (p, n) = (v.as_ptr(), v.capacity() * std::mem::size_of::<T>());
    let _keep = block_after(p.cast(), n);
    v.reserve_exact(v.capacity() - v.len() + v.capacity());
    v.as_ptr() != p
}

#[test]
fn device_resident_block_moves_on_its_device_without_faults() {
    let _g = setup();
    let mut v = pattern(11, MIB / 8); // 1 MiB, every page written
    let (p, n) = bytes_of(&v);
    let m = tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
    assert_eq!(m.moved * PAGE, n);
    let before = tieralloc::stats();
    assert!(grow_moving(&mut v), "the block had to move");
    let after = tieralloc::stats();
    assert_eq!(
        after.cpu_faults, before.cpu_faults,
        "realloc faulted pages back"
    );
    assert_eq!(after.bytes_to_host, before.bytes_to_host);
    let (q, cap) = (v.as_ptr().cast::<u8>(), v.capacity() * 8);
    let r = tieralloc::residency(q, cap).unwrap();
    assert_eq!(
        r.device_bytes(0),
        cap,
        "the new block lives on dev0: {:?}",
        r.runs()
    );
    // The old pages' bytes are in the new block's frames; the part it grew into holds nothing.
    let home = tieralloc::migrate(q, cap, Tier::Host).unwrap();
    assert_eq!(home.moved * PAGE, n, "pages with data");
    assert_eq!(home.never_touched * PAGE, cap - n, "pages never written");
    check(&v, 11);
    assert_invariants("after a device-resident realloc");
}

#[test]
fn never_touched_device_block_copies_nothing() {
    let _g = setup();
    let mut v: Vec<u8> = tieralloc::with_tier(Tier::Device(0), || vec![0u8; MIB]);
    let before = tieralloc::stats();
    assert!(grow_moving(&mut v), "the block had to move");
    let after = tieralloc::stats();
    assert_eq!(
        after.cpu_faults, before.cpu_faults,
        "realloc faulted pages back"
    );
    let (q, cap) = (v.as_ptr(), v.capacity());
    assert_eq!(tieralloc::residency(q, cap).unwrap().device_bytes(0), cap);
    let home = tieralloc::migrate(q, cap, Tier::Host).unwrap();
    assert_eq!(
        home.never_touched * PAGE,
        cap,
        "no page was written by the copy"
    );
    assert!(v.iter().all(|&b| b == 0));
    assert_invariants("after a never-touched realloc");
}

#[test]
fn duplicated_block_keeps_its_bytes_without_faults() {
    let _g = setup();
    let mut v = pattern(12, MIB / 8);
    let (p, n) = bytes_of(&v);
    tieralloc::advise(p, n, Advice::ReadMostly).unwrap();
    tieralloc::migrate(p, n, Tier::Device(1)).unwrap();
    assert_eq!(tieralloc::residency(p, n).unwrap().duplicated_bytes(1), n);
    let before = tieralloc::stats();
    assert!(grow_moving(&mut v), "the block had to move");
    assert_eq!(tieralloc::stats().cpu_faults, before.cpu_faults);
    let (q, cap) = (v.as_ptr().cast::<u8>(), v.capacity() * 8);
    assert_eq!(tieralloc::residency(q, cap).unwrap().host_bytes(), cap);
    check(&v, 12);
    // Writing the new block touches no stale duplicate.
    v.iter_mut().for_each(|x| *x ^= 1);
    check(&v, 12 ^ 1);
    assert_invariants("after a duplicated realloc");
}

#[test]
fn device_tier_vec_grows_outside_its_scope_on_its_device() {
    let _g = setup();
    let mut v: Vec<u8> = tieralloc::with_tier(Tier::Device(1), || Vec::with_capacity(8));
    let before = tieralloc::stats();
    let mut moves = 0;
    while v.capacity() < MIB {
        let p = v.as_ptr();
        v.reserve_exact(2 * v.capacity()); // empty: capacity doubles
        moves += usize::from(v.as_ptr() != p);
    }
    let after = tieralloc::stats();
    assert!(moves >= 5, "small sizes always move ({moves} moves)");
    assert_eq!(
        after.cpu_faults, before.cpu_faults,
        "growing an untouched device-tier Vec faulted"
    );
    let r = tieralloc::residency(v.as_ptr(), v.capacity()).unwrap();
    assert_eq!(r.device_bytes(1), v.capacity(), "{:?}", r.runs());
    v.extend((0..MIB).map(|i| i as u8));
    assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
}

#[test]
fn typed_device_vec_grows_on_its_device_without_faults() {
    let _g = setup();
    let mut v: allocator_api2::vec::Vec<u8, tieralloc::OnDevice<0>> =
        allocator_api2::vec::Vec::with_capacity_in(8, tieralloc::OnDevice);
    let before = tieralloc::stats().cpu_faults;
    while v.capacity() < MIB {
        v.reserve_exact(2 * v.capacity());
    }
    assert_eq!(tieralloc::stats().cpu_faults, before, "growing faulted");
    let r = tieralloc::residency(v.as_ptr(), v.capacity()).unwrap();
    assert_eq!(r.device_bytes(0), v.capacity());
    v.extend((0..1000).map(|i| i as u8));
    v.shrink_to_fit();
    assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
}

#[test]
fn host_pages_move_instead_of_being_copied_under_userfaultfd() {
    let _g = setup();
    // Devices and the fault backend up: page moves go through its userfaultfd.
    let w = vec![1u8; PAGE];
    tieralloc::migrate(w.as_ptr(), PAGE, Tier::Host).unwrap();
    let mut v = pattern(13, 4 * MIB / 8);
    let before = tieralloc::stats();
    assert!(grow_moving(&mut v), "the block had to move");
    let moved = tieralloc::stats().realloc_moved_bytes - before.realloc_moved_bytes;
    if backend().starts_with("uffd") {
        assert_eq!(moved, 4 * MIB as u64, "whole pages are moved, not copied");
    }
    check(&v, 13);
    v.iter_mut().for_each(|x| *x ^= 5);
    check(&v, 13 ^ 5);
}

#[test]
fn a_block_with_a_page_given_back_by_the_program_moves_without_hanging() {
    let _g = setup();
    const PAGES: usize = 7;
    let layout = std::alloc::Layout::from_size_align(PAGES * PAGE, PAGE).unwrap();
    // SAFETY: non-zero size; freed below.
    let b = unsafe { std::alloc::alloc(layout) };
    // SAFETY: `b` holds PAGES pages.
    unsafe { b.write_bytes(7, PAGES * PAGE) };
    // Most of it on a device, so the block follows the device when it grows; its first page
    // on the host, given back to the OS by the program itself (as allocators and caches that
    // know their pages do): missing, and reading as zero.
    let rest = b.wrapping_add(PAGE);
    tieralloc::migrate(rest, (PAGES - 1) * PAGE, Tier::Device(0)).unwrap();
    // SAFETY: the block's own first page.
    assert_eq!(
        unsafe { libc::madvise(b.cast(), PAGE, libc::MADV_DONTNEED) },
        0
    );
    assert!(!page_resident(b), "the first page is missing");
    // The bytes are copied page by page under the pages' locks. The missing host page raised
    // a userfault there whose handler waited for the lock the copying thread held: a hang
    // (uffd, uffd-fast; alloc_races' realloc case hung so, 1 run in 15).
    let _keep = block_after(b, PAGES * PAGE);
    // SAFETY: `b` is live with `layout`; the new size is non-zero.
    let q = unsafe { std::alloc::realloc(b, layout, 2 * PAGES * PAGE) };
    assert!(!q.is_null() && q != b, "the block had to move");
    let r = tieralloc::residency(q, 2 * PAGES * PAGE).unwrap();
    assert_eq!(r.device_bytes(0), 2 * PAGES * PAGE, "{:?}", r.runs());
    // SAFETY: `q` holds the PAGES pages copied.
    let bytes = unsafe { std::slice::from_raw_parts(q, PAGES * PAGE) };
    assert!(
        bytes[..PAGE].iter().all(|&x| x == 0),
        "the page given back reads as zero"
    );
    assert!(
        bytes[PAGE..].iter().all(|&x| x == 7),
        "the other pages kept their bytes"
    );
    // SAFETY: `q` is live with the grown layout.
    unsafe {
        std::alloc::dealloc(
            q,
            std::alloc::Layout::from_size_align(2 * PAGES * PAGE, PAGE).unwrap(),
        )
    };
    assert_invariants("after a realloc of a block with a page given back");
}

/// Whether the page holding `p` is in memory (`mincore`).
fn page_resident(p: *const u8) -> bool {
    let page = (p as usize & !(PAGE - 1)) as *mut libc::c_void;
    let mut v = 0u8;
    // SAFETY: one page of this process's address space, one byte of output.
    let r = unsafe { libc::mincore(page, PAGE, &mut v) };
    r == 0 && v & 1 != 0
}

#[test]
fn each_backend() {
    common::each_backend("ALLOC_TEST_REALLOC_CHILD", "realloc test");
}
