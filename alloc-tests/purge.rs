//! Retention with decay (`TIERALLOC_PURGE_DELAY`): freed pages stay mapped and are reused warm,
//! then go back to the OS once they stayed free for the delay, with no further call into the
//! allocator; `trim()` gives them back at once; a delay of 0 gives them back at free.
//!
//! Each case runs in a child process of its own with the delay it needs (the variable is read
//! when the heap starts), so RSS figures see no other test's memory.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tieralloc::TierAlloc;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

const MIB: usize = 1 << 20;

/// Resident set size of this process, from /proc/self/statm.
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// 256 MiB in blocks of 4 KiB to 1 MiB (page runs), every page written.
fn working_set() -> Vec<Vec<u8>> {
    let sizes = [16 << 10, 64 << 10, 256 << 10, MIB, 12 << 10];
    let mut v = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while total < 256 * MIB {
        let n = sizes[i % sizes.len()];
        v.push(vec![i as u8 | 1; n]);
        total += n;
        i += 1;
    }
    v
}

/// Frees the working set in a scrambled order.
fn free_scrambled(mut v: Vec<Vec<u8>>) {
    let mut x = 0x9E37_79B9u64;
    while !v.is_empty() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % v.len() as u64) as usize;
        drop(v.swap_remove(i));
    }
}

/// In the child: true (run the case). In the parent: runs case `name` in a child with
/// `TIERALLOC_PURGE_DELAY=delay`, checks it passed, and returns false.
fn in_child(name: &str, delay: &str) -> bool {
    if std::env::var_os("PURGE_CHILD").is_some() {
        return true;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("PURGE_CHILD", "1")
        .env("TIERALLOC_PURGE_DELAY", delay)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog: a hang (a start-up that waits for itself, say) is a failure, not a stuck run.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{name} with TIERALLOC_PURGE_DELAY={delay} hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} with TIERALLOC_PURGE_DELAY={delay} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

#[test]
fn freed_pages_are_reused_warm_while_the_delay_runs() {
    if !in_child("freed_pages_are_reused_warm_while_the_delay_runs", "3600s") {
        return;
    }
    let before = rss();
    free_scrambled(working_set());
    let kept = rss();
    assert!(
        kept >= before + 200 * MIB,
        "freed pages should stay mapped for an hour; RSS is only {} MiB above the start",
        (kept.saturating_sub(before)) / MIB
    );
    // Built again: from the retained pages, not from fresh ones.
    let again = working_set();
    assert!(
        rss() <= kept + 16 * MIB,
        "the second working set grew RSS by {} MiB: freed pages were not reused",
        (rss().saturating_sub(kept)) / MIB
    );
    free_scrambled(again);
    // trim() gives them back now, whatever the delay.
    tieralloc::trim();
    assert!(
        rss() <= before + 16 * MIB,
        "after trim() RSS is {} MiB above the start",
        (rss().saturating_sub(before)) / MIB
    );
}

#[test]
fn freed_pages_leave_after_the_delay_without_another_call() {
    if !in_child(
        "freed_pages_leave_after_the_delay_without_another_call",
        "50ms",
    ) {
        return;
    }
    let before = rss();
    free_scrambled(working_set());
    // The program only sleeps now: the purger thread gives the pages back.
    let start = Instant::now();
    while rss() > before + MIB && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        rss() <= before + MIB,
        "5 s after freeing 256 MiB with a 50 ms delay, RSS is {} KiB above the start",
        (rss().saturating_sub(before)) / 1024
    );
    println!(
        "summary: 256 MiB freed; RSS back within 1 MiB of the start after {} ms ({} KiB above it)",
        start.elapsed().as_millis(),
        rss().saturating_sub(before) / 1024
    );
}

#[test]
fn the_large_block_a_thread_freed_last_leaves_after_the_delay_while_the_thread_lives() {
    if !in_child(
        "the_large_block_a_thread_freed_last_leaves_after_the_delay_while_the_thread_lives",
        "50ms",
    ) {
        return;
    }
    // A thread keeps the large run it freed last for its next allocation of that size, where
    // no other thread can take it; the purger must still give it back once it stays unused.
    // The baseline is taken once the thread runs: its own heap and spans (which may take a
    // fresh 2 MiB huge page) are not what this measures.
    let (freed_tx, freed_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let started = std::sync::Arc::new(std::sync::Barrier::new(2));
    let measured = std::sync::Arc::new(std::sync::Barrier::new(2));
    let (started2, measured2) = (started.clone(), measured.clone());
    let t = std::thread::spawn(move || {
        started2.wait();
        measured2.wait();
        let v = vec![7u8; 4 * MIB];
        assert!(v.iter().all(|&b| b == 7));
        drop(v);
        freed_tx.send(()).unwrap();
        done_rx.recv().unwrap();
    });
    started.wait();
    let before = rss();
    measured.wait();
    freed_rx.recv().unwrap();
    let start = Instant::now();
    while rss() > before + MIB && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = rss().saturating_sub(before);
    done_tx.send(()).unwrap();
    t.join().unwrap();
    assert!(
        left <= MIB,
        "5 s after a live thread freed 4 MiB with a 50 ms delay, RSS is {} KiB above the start",
        left / 1024
    );
}

#[test]
fn freed_pages_stay_for_the_delay_while_the_purger_runs() {
    if !in_child("freed_pages_stay_for_the_delay_while_the_purger_runs", "4s") {
        return;
    }
    // Start the purger (the first retained run does) and let it tick: from then on, freed runs
    // take their stamps from it instead of the clock.
    drop(vec![1u8; MIB]);
    std::thread::sleep(Duration::from_millis(1500));
    let before = rss();
    free_scrambled(working_set());
    let freed = Instant::now();
    // Half the delay later, nothing went back: a stamp taken ahead of the clock must not
    // read as old (it read as 4.6 hours old, and the next tick, within 1 s, gave it back).
    std::thread::sleep(Duration::from_secs(2));
    let kept = rss();
    assert!(
        kept >= before + 200 * MIB || freed.elapsed() >= Duration::from_secs(4),
        "{} ms after the frees, with a 4 s delay, RSS is only {} MiB above the start",
        freed.elapsed().as_millis(),
        kept.saturating_sub(before) / MIB
    );
}

#[test]
fn a_zero_delay_gives_pages_back_at_free() {
    if !in_child("a_zero_delay_gives_pages_back_at_free", "0") {
        return;
    }
    let before = rss();
    free_scrambled(working_set());
    assert!(
        rss() <= before + 16 * MIB,
        "with TIERALLOC_PURGE_DELAY=0, RSS is {} MiB above the start right after the frees",
        (rss().saturating_sub(before)) / MIB
    );
}
