//! Threads allocating and freeing each other's objects, and threads exiting while their objects
//! live on elsewhere.

use std::sync::{mpsc, Mutex};
use std::thread;
use tieralloc::TierAlloc;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

/// Tests here run one at a time, so heap-wide counters read by one are not moved by another.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A heap object whose bytes encode who made it, so corruption is detected on free.
fn make(thread: u64, i: u64) -> Box<[u64]> {
    let len = 1 + (i % 97) as usize * if i % 13 == 0 { 211 } else { 1 }; // 8 B .. ~160 KiB
    (0..len as u64)
        .map(|k| thread << 48 ^ i << 16 ^ k)
        .collect()
}

fn checksum(b: &[u64]) -> u64 {
    b.iter().fold(0u64, |a, &x| a.rotate_left(5) ^ x)
}

/// Objects a thread kept, with the index each was made with.
type Objects = Vec<(u64, Box<[u64]>)>;

/// `n` threads in a ring: each allocates objects and sends them to the next thread, which
/// verifies and frees them. Every object is freed by a thread other than its allocator.
fn ring(n: usize, per_thread: u64) {
    let _serial = serial();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| mpsc::sync_channel::<(Box<[u64]>, u64, u64, u64)>(256))
        .unzip();
    let mut handles = Vec::new();
    for (t, rx) in rxs.into_iter().enumerate() {
        let tx = txs[(t + 1) % n].clone();
        handles.push(thread::spawn(move || {
            let t = t as u64;
            let mut received = 0u64;
            let mut sent = 0u64;
            while sent < per_thread || received < per_thread {
                if sent < per_thread {
                    let b = make(t, sent);
                    let sum = checksum(&b);
                    tx.send((b, t, sent, sum)).unwrap();
                    sent += 1;
                }
                while let Ok((b, from, i, sum)) = if sent < per_thread {
                    rx.try_recv().map_err(|_| ())
                } else {
                    rx.recv().map_err(|_| ())
                } {
                    assert_eq!(
                        checksum(&b),
                        sum,
                        "object {i} from thread {from} was corrupted"
                    );
                    assert_eq!(b[0], from << 48 ^ i << 16);
                    drop(b);
                    received += 1;
                    if sent < per_thread || received == per_thread {
                        break;
                    }
                }
            }
            received
        }));
    }
    drop(txs);
    for h in handles {
        assert_eq!(h.join().unwrap(), per_thread);
    }
}

#[test]
fn two_threads_free_each_others_objects() {
    ring(2, 20_000);
}

#[test]
fn four_threads_free_each_others_objects() {
    ring(4, 10_000);
}

#[test]
fn eight_threads_free_each_others_objects() {
    ring(8, 5_000);
}

#[test]
fn objects_outlive_the_thread_that_allocated_them() {
    let _serial = serial();
    for round in 0..20u64 {
        let objs: Vec<Box<[u64]>> =
            thread::spawn(move || (0..2000).map(|i| make(round, i)).collect())
                .join()
                .unwrap();
        // The allocating thread has exited (its cache flushed); its objects are intact and can
        // be freed here.
        for (i, b) in objs.iter().enumerate() {
            assert_eq!(b[0], round << 48 ^ (i as u64) << 16);
            assert_eq!(b.len(), make(round, i as u64).len());
        }
        drop(objs);
    }
}

#[test]
fn threads_that_exit_with_objects_cached_lose_nothing() {
    let _serial = serial();
    // Each short-lived thread frees objects made elsewhere (they land in its cache) and exits.
    let spans_before = tieralloc::stats().spans;
    for _ in 0..50 {
        let objs: Vec<Box<[u8; 48]>> = (0..500).map(|i| Box::new([i as u8; 48])).collect();
        thread::spawn(move || drop(objs)).join().unwrap();
    }
    // The exiting threads gave their cached objects back: the spans they came from are reused
    // rather than leaked (50 × 500 × 48 B = 1.2 MiB if nothing came back, 19+ spans).
    let grown = tieralloc::stats().spans.saturating_sub(spans_before);
    assert!(
        grown < 19,
        "{grown} new spans: objects cached by exited threads were not returned"
    );
}

#[test]
fn many_threads_allocate_concurrently_without_overlap() {
    let _serial = serial();
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            thread::spawn(move || {
                let mut v: Objects = Vec::new();
                for i in 0..3000 {
                    v.push((i, make(t, i)));
                    if i % 3 == 0 {
                        let k = (i as usize * 7) % v.len();
                        v.swap_remove(k);
                    }
                }
                v
            })
        })
        .collect();
    let all: Vec<(u64, Objects)> = handles
        .into_iter()
        .enumerate()
        .map(|(t, h)| (t as u64, h.join().unwrap()))
        .collect();
    // Every surviving object still holds exactly what its thread wrote: no block was handed to
    // two threads.
    for (t, objs) in &all {
        for (i, b) in objs {
            assert_eq!(
                **b,
                *make(*t, *i),
                "object {i} of thread {t} was overwritten"
            );
        }
    }
}
