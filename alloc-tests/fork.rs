//! `fork` while other threads allocate, then allocate and free in the child.

use std::thread;
use tieralloc::TierAlloc;

mod common;
use common::in_child;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

fn work(seed: u64) -> bool {
    let mut v: Vec<Vec<u64>> = Vec::new();
    for i in 0..20_000u64 {
        v.push((0..(i % 50)).map(|k| k ^ seed).collect());
        if i % 4 == 0 {
            v.swap_remove((i as usize * 13) % v.len());
        }
    }
    let big = vec![seed; 4 << 20];
    v.iter()
        .all(|x| x.iter().enumerate().all(|(k, &y)| y == k as u64 ^ seed))
        && big.iter().all(|&x| x == seed)
}

#[test]
fn child_allocates_after_fork_while_parent_threads_were_allocating() {
    let parent_data: Vec<String> = (0..10_000).map(|i| format!("item {i}")).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += work(t) as u64;
                }
                n
            })
        })
        .collect();
    for round in 0..10 {
        // Other threads hold heap locks at arbitrary moments; the child must still be able to
        // allocate (the allocator's fork handlers make the locks consistent).
        let status = in_child(|| {
            work(round)
                && parent_data
                    .iter()
                    .enumerate()
                    .all(|(i, s)| *s == format!("item {i}"))
        });
        assert_eq!(status, 0, "child {round} failed");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
}

#[test]
fn child_can_spawn_threads_and_free_parent_objects() {
    let parent: Vec<Box<[u8; 100]>> = (0..1000).map(|i| Box::new([i as u8; 100])).collect();
    let status = in_child(move || {
        let ok = parent
            .iter()
            .enumerate()
            .all(|(i, b)| b.iter().all(|&x| x == i as u8));
        drop(parent);
        let h = thread::spawn(|| work(7));
        ok && h.join().unwrap_or(false)
    });
    assert_eq!(status, 0);
}
