//! Memory goes back to the OS: RSS falls at once after a 1 GiB allocation is freed, and within
//! the purge delay after many medium ones are (alloc-tests/purge.rs tests the delay itself).

use std::alloc::{GlobalAlloc, Layout};
use tieralloc::TierAlloc;

mod common;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

/// Resident set size of this process, from /proc/self/statm.
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const GIB: usize = 1 << 30;

/// RSS is process-wide: the tests here run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn rss_falls_after_freeing_one_gib() {
    let _serial = serial();
    let before = rss();
    let mut v = vec![0u8; GIB];
    // Touch every page (vec! of zeros on fresh pages does not write them).
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    let during = rss();
    assert!(
        during >= before + GIB * 9 / 10,
        "1 GiB touched but RSS only grew {} MiB",
        (during - before) >> 20
    );
    drop(v);
    let after = rss();
    assert!(
        after < before + (64 << 20),
        "RSS still {} MiB above the start after freeing 1 GiB",
        (after - before) >> 20
    );
}

#[test]
fn rss_falls_after_freeing_many_medium_blocks() {
    let _serial = serial();
    let before = rss();
    // 1 GiB in 256 KiB blocks: each free is below any single-block threshold.
    let mut blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 256 << 10]).collect();
    assert!(rss() >= before + GIB * 9 / 10);
    blocks.clear();
    blocks.shrink_to_fit();
    // Freed pages stay warm for the purge delay (1 s by default), then the purger thread
    // gives them back: this thread only waits.
    let start = std::time::Instant::now();
    while rss() >= before + (64 << 20) && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let after = rss();
    assert!(
        after < before + (64 << 20),
        "RSS still {} MiB above the start 5 s after freeing 1 GiB in blocks",
        (after - before) >> 20
    );
}

const MIB8: usize = 8 << 20;

/// Blocks of `n` × 8 MiB, allocated one after another: in a fresh process, consecutive pages of
/// the managed range (the test asserts it).
fn consecutive_blocks(n: usize) -> Vec<*mut u8> {
    let layout = Layout::from_size_align(MIB8, 4096).unwrap();
    // SAFETY: non-zero size.
    let blocks: Vec<*mut u8> = (0..n).map(|_| unsafe { A.alloc(layout) }).collect();
    assert!(
        blocks.iter().all(|p| !p.is_null()),
        "8 MiB blocks allocated"
    );
    for w in blocks.windows(2) {
        assert_eq!(
            w[1] as usize,
            w[0] as usize + MIB8,
            "blocks allocated in turn in a fresh process lie one after another"
        );
    }
    blocks
}

/// Writes every page of 8 MiB block `p`.
fn touch(p: *mut u8) {
    for off in (0..MIB8).step_by(4096) {
        // SAFETY: `p` is a live 8 MiB block.
        unsafe { p.add(off).write(1) };
    }
}

fn free8(p: *mut u8) {
    // SAFETY: `p` is a live 8 MiB block, not used again.
    unsafe { A.dealloc(p, Layout::from_size_align(MIB8, 4096).unwrap()) };
}

/// A program that frees a working set and builds it again gets its resident pages back, even
/// when pages that went back to the OS lie right before them: freed and purged pages used to
/// merge into one run, whose clean low pages the next allocation took (faulting them in, while
/// the resident ones stayed unused).
#[test]
fn a_freed_working_set_is_reused_before_the_purged_pages_beside_it() {
    if common::ran_in_fresh_process(
        "a_freed_working_set_is_reused_before_the_purged_pages_beside_it",
        &[],
    ) {
        return;
    }
    let _serial = serial();
    let [purged, resident, guard] = consecutive_blocks(3)[..] else {
        unreachable!()
    };
    for p in [purged, resident, guard] {
        touch(p);
    }
    free8(purged);
    tieralloc::trim();
    // Measured first: reading RSS allocates, and the span that takes would be carved from the
    // resident pages once they are free.
    let before = rss();
    free8(resident);
    // SAFETY: non-zero size.
    let again = unsafe { A.alloc(Layout::from_size_align(MIB8, 4096).unwrap()) };
    touch(again);
    let grown = rss().saturating_sub(before);
    assert!(
        grown < (2 << 20),
        "an 8 MiB block allocated after an 8 MiB one was freed made RSS grow by {} KiB \
         (it got the purged pages at {:#x}, not the resident ones at {:#x}: it is at {:#x})",
        grown >> 10,
        purged as usize,
        resident as usize,
        again as usize
    );
    assert_eq!(tieralloc::check_invariants(), Ok(()));
    free8(again);
    free8(guard);
}

/// A block grows in place over the free pages after it even when some of them went back to the
/// OS and some did not (they are kept as separate runs).
#[test]
fn a_block_grows_in_place_over_resident_and_purged_free_pages() {
    if common::ran_in_fresh_process(
        "a_block_grows_in_place_over_resident_and_purged_free_pages",
        &[],
    ) {
        return;
    }
    let _serial = serial();
    let [block, resident, purged, guard] = consecutive_blocks(4)[..] else {
        unreachable!()
    };
    for p in [block, resident, purged] {
        touch(p);
    }
    // SAFETY: `block` is live; the bytes written are inside it.
    unsafe { block.write_bytes(7, MIB8) };
    free8(purged);
    tieralloc::trim();
    free8(resident);
    // Free after `block`: 8 MiB resident, then 8 MiB purged. Growing by 12 MiB needs both.
    let grown = 20 << 20;
    // SAFETY: `block` is live with this layout; the new size is non-zero.
    let q = unsafe { A.realloc(block, Layout::from_size_align(MIB8, 4096).unwrap(), grown) };
    assert_eq!(q, block, "the block grew in place");
    // SAFETY: `q` holds `grown` bytes, the first 8 MiB kept.
    unsafe {
        assert!(std::slice::from_raw_parts(q, MIB8).iter().all(|&b| b == 7));
        q.add(grown - 1).write(1);
    }
    assert_eq!(tieralloc::check_invariants(), Ok(()));
    // SAFETY: live with this layout, not used again.
    unsafe { A.dealloc(q, Layout::from_size_align(grown, 4096).unwrap()) };
    free8(guard);
}

/// Random large blocks (1 to 700 pages, some aligned to 64 KiB or 2 MiB) allocated, grown and
/// shrunk by `realloc`, freed, and every so often purged by `trim()`, so that dirty and clean
/// free runs lie side by side in every order: every page of every live block keeps what was
/// written to it, and the heap's invariants hold throughout. In a child, so that an abort
/// still prints the seed.
#[test]
fn random_large_blocks_through_purges_keep_their_pages_and_the_heap_valid() {
    let _serial = serial();
    common::seeded_in_child("random large blocks", random_large_blocks);
}

/// A live block of the random test: address, size, alignment and the tag its pages hold.
#[derive(Clone, Copy)]
struct Block {
    p: usize,
    size: usize,
    align: usize,
    tag: u64,
}

/// Writes `tag ^ k` into the first word of each page `k` of the block.
fn mark(b: Block) {
    for k in 0..b.size.div_ceil(4096) {
        // SAFETY: sizes are chosen so that the first word of every page lies inside the block.
        unsafe { ((b.p + k * 4096) as *mut u64).write(b.tag ^ k as u64) };
    }
}

/// Checks the first `len` bytes' page words of block `b` (written by [`mark`]).
fn marked(b: Block, len: usize, seed: u64) {
    for k in 0..len.min(b.size).div_ceil(4096) {
        // SAFETY: as in `mark`.
        let w = unsafe { ((b.p + k * 4096) as *const u64).read() };
        assert_eq!(
            w,
            b.tag ^ k as u64,
            "page {k} of the {} B block at {:#x} changed (seed {seed})",
            b.size,
            b.p
        );
    }
}

fn random_large_blocks(seed: u64) {
    let mut rng = common::Rng(seed);
    let mut table: Vec<Option<Block>> = vec![None; 48];
    // Up to 700 pages; the first word of the last page always lies inside the block.
    let size_of = |rng: &mut common::Rng| {
        let pages = 1 + rng.below(700) as usize;
        pages * 4096 - 8 * rng.below(256) as usize
    };
    let layout = |b: Block| Layout::from_size_align(b.size, b.align).unwrap();
    for step in 0..5000 {
        let slot = rng.below(table.len() as u64) as usize;
        let op = rng.below(100);
        match table[slot] {
            Some(b) if op < 40 => {
                // Grown or shrunk: the pages both sizes cover keep their words.
                marked(b, b.size, seed);
                let size = size_of(&mut rng);
                // SAFETY: live with this layout; a non-zero size.
                let q = unsafe { A.realloc(b.p as *mut u8, layout(b), size) };
                assert!(!q.is_null(), "realloc to {size} B failed (seed {seed})");
                let moved = Block {
                    p: q as usize,
                    size,
                    ..b
                };
                marked(moved, b.size, seed);
                let fresh = Block {
                    tag: rng.next(),
                    ..moved
                };
                mark(fresh);
                table[slot] = Some(fresh);
            }
            Some(b) if op < 75 => {
                marked(b, b.size, seed);
                // SAFETY: live with this layout, freed once.
                unsafe { A.dealloc(b.p as *mut u8, layout(b)) };
                table[slot] = None;
            }
            Some(_) if op < 80 => tieralloc::trim(),
            Some(_) => {}
            None => {
                let align = match rng.below(10) {
                    0 => 2 << 20,
                    1 => 64 << 10,
                    2 => 4096,
                    _ => 8,
                };
                let size = size_of(&mut rng);
                // SAFETY: a non-zero size and a power-of-two alignment.
                let p = unsafe { A.alloc(Layout::from_size_align(size, align).unwrap()) };
                assert!(!p.is_null(), "allocating {size} B failed (seed {seed})");
                assert_eq!(p as usize % align, 0, "alignment {align} (seed {seed})");
                let b = Block {
                    p: p as usize,
                    size,
                    align,
                    tag: rng.next(),
                };
                mark(b);
                table[slot] = Some(b);
            }
        }
        if step % 100 == 99 {
            assert_eq!(tieralloc::check_invariants(), Ok(()), "seed {seed}");
        }
    }
    for b in table.into_iter().flatten() {
        marked(b, b.size, seed);
        // SAFETY: live with this layout, freed once.
        unsafe { A.dealloc(b.p as *mut u8, layout(b)) };
    }
    tieralloc::trim();
    assert_eq!(tieralloc::check_invariants(), Ok(()), "seed {seed}");
}

#[test]
fn zeroed_gib_costs_no_memory_until_written() {
    let _serial = serial();
    let before = rss();
    let v = vec![0u8; GIB];
    assert!(v[GIB / 2] == 0);
    assert!(
        rss() < before + (64 << 20),
        "vec![0; 1 GiB] made {} MiB resident",
        (rss() - before) >> 20
    );
}

/// The `VmFlags` line of the mapping that holds `addr`, from /proc/self/smaps.
fn vm_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = range.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside && line.starts_with("VmFlags:") {
            return line.to_string();
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// Whether `flags` (a `VmFlags` line) has the two-letter flag `f`.
fn has_flag(flags: &str, f: &str) -> bool {
    flags.split_whitespace().skip(1).any(|x| x == f)
}

/// The managed range asks for transparent huge pages (`hg`) while no page can migrate, and
/// for none (`nh`) from the first migration on: a collapse by khugepaged must never fill the
/// hole a device-resident page leaves.
#[test]
fn the_managed_range_asks_for_huge_pages_until_pages_can_migrate() {
    if common::ran_in_fresh_process(
        "the_managed_range_asks_for_huge_pages_until_pages_can_migrate",
        &[],
    ) {
        return;
    }
    let v = vec![1u8; 4 << 20];
    let p = v.as_ptr() as usize;
    let before = vm_flags(p);
    assert!(
        has_flag(&before, "hg") && !has_flag(&before, "nh"),
        "before any migration: {before}"
    );
    let w = vec![2u8; 1 << 20];
    tieralloc::migrate(w.as_ptr(), w.len(), tieralloc::Tier::Device(0)).unwrap();
    let after = vm_flags(p);
    assert!(
        has_flag(&after, "nh") && !has_flag(&after, "hg"),
        "after a migration: {after}"
    );
    assert!(w.iter().all(|&b| b == 2) && v.iter().all(|&b| b == 1));
}

/// `TIERALLOC_HUGE_PAGES=0` keeps transparent huge pages out of the managed range.
#[test]
fn huge_pages_stay_out_when_turned_off() {
    if common::ran_in_fresh_process(
        "huge_pages_stay_out_when_turned_off",
        &[("TIERALLOC_HUGE_PAGES", "0")],
    ) {
        return;
    }
    let v = vec![1u8; 4 << 20];
    let flags = vm_flags(v.as_ptr() as usize);
    assert!(
        !has_flag(&flags, "hg"),
        "with TIERALLOC_HUGE_PAGES=0: {flags}"
    );
}
