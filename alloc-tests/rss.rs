//! Memory goes back to the OS: RSS falls at once after a 1 GiB allocation is freed, and within
//! the purge delay after many medium ones are (alloc-tests/purge.rs tests the delay itself).

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
