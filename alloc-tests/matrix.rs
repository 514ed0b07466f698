//! Sizes × alignments with pattern checks, realloc growth and shrink, zeroed allocations, and
//! pointers' membership in the managed range — all through `TierAlloc` as the global allocator.

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, GlobalAlloc, Layout};
use tieralloc::TierAlloc;

mod common;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

const SIZES: &[usize] = &[
    1,
    7,
    8,
    9,
    15,
    16,
    17,
    24,
    31,
    32,
    33,
    48,
    63,
    64,
    65,
    100,
    127,
    128,
    129,
    255,
    256,
    257,
    511,
    512,
    1000,
    1024,
    2047,
    2048,
    3000,
    4095,
    4096,
    4097,
    6000,
    8191,
    8192,
    8193,
    12288,
    65535,
    65536,
    65537,
    1 << 20,
    (1 << 20) + 1,
    3 << 20,
];
const ALIGNS: &[usize] = &[
    1,
    2,
    4,
    8,
    16,
    32,
    64,
    128,
    256,
    4096,
    8192,
    16384,
    65536,
    1 << 21,
    1 << 22,
];

/// Tests here run one at a time: in-place growth and heap counters depend on what else is
/// allocating in the process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fill(p: *mut u8, len: usize, seed: usize) {
    // SAFETY: p is a live block of at least len bytes, ours alone.
    common::fill(
        unsafe { std::slice::from_raw_parts_mut(p, len) },
        seed as u64,
    );
}

fn check(p: *const u8, len: usize, seed: usize) {
    // SAFETY: as in fill.
    let buf = unsafe { std::slice::from_raw_parts(p, len) };
    if let Some(i) = common::first_bad(buf, seed as u64) {
        panic!("byte {i} of a {len}-byte block changed");
    }
}

#[test]
fn every_size_and_alignment_is_aligned_distinct_and_keeps_its_bytes() {
    let _serial = serial();
    let mut live = Vec::new();
    for (k, &size) in SIZES.iter().enumerate() {
        for &align in ALIGNS {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null(), "alloc({size}, {align}) returned null");
            assert_eq!(
                p as usize % align,
                0,
                "alloc({size}, {align}) misaligned: {p:p}"
            );
            assert!(
                tieralloc::is_managed(p),
                "{p:p} is outside the managed range"
            );
            fill(p, size, k * 131 + align);
            live.push((p, layout, k * 131 + align));
        }
    }
    // Every block still holds its own pattern: no two blocks overlap.
    for &(p, layout, seed) in &live {
        check(p, layout.size(), seed);
    }
    let mut ranges: Vec<(usize, usize)> = live
        .iter()
        .map(|(p, l, _)| (*p as usize, l.size()))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap: {:?}", w);
    }
    for (p, layout, _) in live {
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(p, layout) };
    }
}

#[test]
fn zeroed_allocations_are_zero_even_when_memory_is_reused() {
    let _serial = serial();
    for round in 0..3 {
        for &size in SIZES {
            for &align in &[8usize, 64, 4096, 1 << 21] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // Dirty a block of this layout, free it, then ask for zeroed memory.
                // SAFETY: non-zero sizes; each block is freed with its layout.
                unsafe {
                    let d = alloc(layout);
                    std::ptr::write_bytes(d, 0xAB, size);
                    dealloc(d, layout);
                    let z = alloc_zeroed(layout);
                    assert!(!z.is_null());
                    let s = std::slice::from_raw_parts(z, size);
                    assert!(
                        s.iter().all(|&b| b == 0),
                        "alloc_zeroed({size}, {align}) round {round} not zero"
                    );
                    dealloc(z, layout);
                }
            }
        }
    }
}

#[test]
fn realloc_grows_and_shrinks_keeping_contents() {
    let _serial = serial();
    for &align in &[1usize, 16, 64, 4096, 1 << 21] {
        let mut size = 1;
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero size.
        let mut p = unsafe { alloc(layout) };
        fill(p, size, 5);
        // Grow by ×3 up to 24 MiB, then shrink back down, checking the common prefix each time.
        let mut sizes: Vec<usize> = std::iter::successors(Some(3usize), |s| Some(s * 3))
            .take_while(|&s| s < 24 << 20)
            .collect();
        let down: Vec<usize> = sizes.iter().rev().skip(1).copied().chain([1]).collect();
        sizes.extend(down);
        for new in sizes {
            // SAFETY: p is live with (size, align); new is non-zero.
            let q = unsafe { realloc(p, Layout::from_size_align(size, align).unwrap(), new) };
            assert!(!q.is_null(), "realloc to {new} failed");
            assert_eq!(q as usize % align, 0);
            check(q, size.min(new), 5);
            fill(q, new, 5);
            p = q;
            size = new;
        }
        // SAFETY: p is live with (size, align).
        unsafe { dealloc(p, Layout::from_size_align(size, align).unwrap()) };
    }
}

#[test]
fn large_realloc_grows_in_place_when_the_next_pages_are_free() {
    let _serial = serial();
    let layout = Layout::from_size_align(1 << 20, 4096).unwrap();
    // SAFETY: non-zero size; freed below.
    unsafe {
        let p = alloc(layout);
        fill(p, 1 << 20, 9);
        // Other tests run concurrently, so growing may or may not find the next pages free;
        // the contents must survive either way, and shrinking never moves.
        let q = realloc(p, layout, 64 << 20);
        check(q, 1 << 20, 9);
        let r = realloc(
            q,
            Layout::from_size_align(64 << 20, 4096).unwrap(),
            32 << 20,
        );
        assert_eq!(r, q, "shrinking a large block must stay in place");
        check(r, 1 << 20, 9);
        dealloc(r, Layout::from_size_align(32 << 20, 4096).unwrap());
    }
}

#[test]
fn large_block_that_cannot_grow_in_place_moves_its_pages() {
    let _serial = serial();
    // No device is ever used in this process: the pages move with `mremap`, into a fresh run
    // (`trim` makes every free run fresh; warm runs are copied into instead).
    let mut v: Vec<u64> = (0..(1u64 << 20)).collect(); // 8 MiB
    let (p, n) = (v.as_ptr(), v.len() * 8);
    let keep = common::block_after(p.cast(), n);
    tieralloc::trim();
    let before = tieralloc::stats().realloc_moved_bytes;
    v.reserve_exact(v.len());
    assert_ne!(v.as_ptr(), p, "the block had to move");
    let moved = tieralloc::stats().realloc_moved_bytes - before;
    assert!(
        moved >= n as u64,
        "whole pages are moved, not copied ({moved} B)"
    );
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    v.extend(0..(1u64 << 20));
    assert_eq!(v[(1 << 20) + 5], 5);
    drop(keep);
}

#[test]
fn a_small_object_freed_again_after_its_cache_flushed_aborts() {
    let _serial = serial();
    // The first free left the object in the thread cache; `trim` returns the cache to the
    // spans, so the object is free in its span when the second free comes. Before the freed
    // bit stayed set in the span, the second free was taken into the cache and the object was
    // handed out twice (once from the cache, once from the span).
    common::assert_second_free_aborts(&A, Layout::from_size_align(64, 8).unwrap(), || {
        tieralloc::trim()
    });
}

/// A size nothing else in these tests' processes allocates (the standard library's own
/// objects would otherwise take the object under test from the cache).
fn odd() -> Result<Layout, std::alloc::LayoutError> {
    Layout::from_size_align(3000, 8)
}

/// An object that was freed, then handed out again from the thread's cache (its freed bit set,
/// then cleared again).
fn reused_object(l: Layout) -> *mut u8 {
    // SAFETY: a valid layout; the object is freed once and then allocated again.
    unsafe {
        let p = A.alloc(l);
        A.dealloc(p, l);
        let q = A.alloc(l);
        assert_eq!(p, q, "the cache hands out the object it was given last");
        q
    }
}

/// Returns every cache to the spans (`trim`), then allocates 10,000 objects of layout `l` and
/// frees them: true if no object came out twice.
fn handed_out_once(l: Layout) -> bool {
    tieralloc::trim();
    // SAFETY: valid layout; every object is freed below.
    let objs: Vec<*mut u8> = (0..10_000).map(|_| unsafe { A.alloc(l) }).collect();
    let mut sorted = objs.clone();
    sorted.sort();
    sorted.dedup();
    for &o in &objs {
        // SAFETY: allocated above with `l`, freed once.
        unsafe { A.dealloc(o, l) };
    }
    sorted.len() == objs.len()
}

/// Runs `f(p)` on a new thread, `p` passed as an address.
fn on_other_thread(p: *mut u8, f: fn(*mut u8)) {
    let a = p as usize;
    std::thread::spawn(move || f(a as *mut u8)).join().unwrap();
}

#[test]
fn a_small_object_freed_again_by_another_thread_aborts() {
    // Its child starts a thread: in a process of its own, so that no other test's thread is
    // being started (holding the standard library's thread-start lock) at the fork.
    if common::ran_in_fresh_process("a_small_object_freed_again_by_another_thread_aborts", &[]) {
        return;
    }
    let _serial = serial();
    let l = odd().unwrap();
    fn free_odd(p: *mut u8) {
        // SAFETY: the second free of `p` is the bug under test.
        unsafe { A.dealloc(p, odd().unwrap()) }
    }
    // The first free leaves the object in this thread's cache; another thread's free must
    // still see it is freed.
    common::assert_child_aborts("a second free on another thread", || {
        // SAFETY: a valid layout; freed once here, once (the bug) on the other thread.
        let p = unsafe {
            let p = A.alloc(l);
            A.dealloc(p, l);
            p
        };
        on_other_thread(p, free_odd);
        false
    });
    // The same when the object was handed out again from the cache before its first free.
    common::assert_child_aborts("a second free of a reused object on another thread", || {
        let p = reused_object(l);
        // SAFETY: freed once here, once on the other thread.
        unsafe { A.dealloc(p, l) };
        on_other_thread(p, free_odd);
        false
    });
}

#[test]
fn a_small_object_another_thread_freed_aborts_when_its_owner_frees_it_again() {
    // Its child starts a thread: in a process of its own (see above).
    if common::ran_in_fresh_process(
        "a_small_object_another_thread_freed_aborts_when_its_owner_frees_it_again",
        &[],
    ) {
        return;
    }
    let _serial = serial();
    let l = odd().unwrap();
    fn free_odd(p: *mut u8) {
        // SAFETY: `p` is live; this is its first free.
        unsafe { A.dealloc(p, odd().unwrap()) }
    }
    // The other thread's free leaves the object waiting for its span (the thread's buffer,
    // sent to the span's remote bitmap when the thread exits): in the span's own bitmap it is
    // still handed out, and only its freed bit tells the owner's second free apart. Let
    // through, the object would be handed out at once (the owner's object freed last) and
    // again once the remote frees are merged.
    common::assert_child_aborts("an owner's free after another thread's", || {
        // SAFETY: a valid layout; freed once on the other thread, once (the bug) here; `q`
        // stays live.
        unsafe {
            let p = A.alloc(l);
            on_other_thread(p, free_odd);
            A.dealloc(p, l);
            let q = A.alloc(l);
            tieralloc::trim();
            let objs: Vec<*mut u8> = (0..10_000).map(|_| A.alloc(l)).collect();
            objs.contains(&q)
        }
    });
}

#[test]
fn a_free_into_the_middle_of_a_small_object_with_another_size_or_of_a_foreign_pointer_aborts() {
    let _serial = serial();
    let l = Layout::from_size_align(64, 8).unwrap();
    // The object the thread allocated last is in its current span (the free's first test);
    // the first of 1100 allocated before it is in a span that is no longer current (a span
    // holds 1024 of them).
    for (what, current) in [("current", true), ("earlier", false)] {
        let object = move || {
            // SAFETY: a valid layout; the blocks are freed by the caller (or never, in the
            // child that aborts).
            let early: Vec<*mut u8> = (0..1100).map(|_| unsafe { A.alloc(l) }).collect();
            if current {
                // SAFETY: as above.
                unsafe { A.alloc(l) }
            } else {
                early[0]
            }
        };
        common::assert_child_aborts(&format!("a free into a {what} object's middle"), || {
            // SAFETY: the free of an interior pointer is the bug under test.
            unsafe { A.dealloc(object().add(16), l) };
            false
        });
        common::assert_child_aborts(&format!("a free of a {what} object as 128 B"), || {
            // SAFETY: the free with another size class is the bug under test.
            unsafe { A.dealloc(object(), Layout::from_size_align(128, 8).unwrap()) };
            false
        });
    }
    // Pointers tieralloc never handed out: a low address (inside the first span's length from
    // 0, where a heap without a current span of the class keeps its base) and a stack
    // address. Both end with the message, not a segfault.
    for (what, p) in [
        ("a low address", 0x1000usize),
        ("a stack address", &l as *const Layout as usize),
    ] {
        common::assert_child_aborts(&format!("a free of {what}"), || {
            // SAFETY: the free of a pointer that is not a block is the bug under test.
            unsafe { A.dealloc(p as *mut u8, Layout::from_size_align(7000, 8).unwrap()) };
            false
        });
    }
}

/// Objects above 512 bytes live in 128 KiB spans, two of the 64 KiB slots the heap's side
/// tables are indexed by: each free must find the span from an address in its second slot.
const SLOT: usize = 64 << 10;

/// A block of layout `l` in the second 64 KiB of a 128 KiB-aligned range; with `current`, the
/// one allocated last (its class's current span), else one of a span allocated before.
fn in_second_slot(l: Layout, current: bool) -> *mut u8 {
    let second = |p: *mut u8| p as usize & SLOT != 0;
    let span = |p: *mut u8| p as usize & !(2 * SLOT - 1);
    // Enough for three spans of 128 KiB, then up to the next block in a second slot.
    let n = 6 * SLOT / l.size();
    // SAFETY: a valid layout; the blocks stay live (each test's child exits).
    let mut objs: Vec<*mut u8> = (0..n).map(|_| unsafe { A.alloc(l) }).collect();
    while !second(*objs.last().unwrap()) {
        // SAFETY: as above.
        objs.push(unsafe { A.alloc(l) });
        assert!(
            objs.len() < 2 * n,
            "no {}-byte block in a second slot",
            l.size()
        );
    }
    let last = *objs.last().unwrap();
    if current {
        return last;
    }
    *objs
        .iter()
        .find(|&&p| second(p) && span(p) != span(last))
        .expect("a block of an earlier span in its second slot")
}

#[test]
fn objects_in_the_second_slot_of_a_span_free_and_come_back_once() {
    if common::ran_in_fresh_process(
        "objects_in_the_second_slot_of_a_span_free_and_come_back_once",
        &[],
    ) {
        return;
    }
    let _serial = serial();
    let l = Layout::from_size_align(1024, 8).unwrap();
    // SAFETY: a valid layout; every block is freed once below.
    let objs: Vec<usize> = (0..600).map(|_| unsafe { A.alloc(l) } as usize).collect();
    assert!(
        objs.iter().any(|&p| p & SLOT != 0),
        "no 1 KiB block in the second slot of its span"
    );
    for (i, &p) in objs.iter().enumerate() {
        fill(p as *mut u8, l.size(), i);
    }
    // Every other block is freed by another thread (to its span's remote bitmap), the rest by
    // their owner, the blocks of the current span among them.
    let theirs: Vec<usize> = objs.iter().copied().step_by(2).collect();
    std::thread::spawn(move || {
        for p in theirs {
            // SAFETY: live, freed once here.
            unsafe { A.dealloc(p as *mut u8, Layout::from_size_align(1024, 8).unwrap()) };
        }
    })
    .join()
    .unwrap();
    for &p in objs.iter().skip(1).step_by(2) {
        // SAFETY: live, freed once here.
        unsafe { A.dealloc(p as *mut u8, l) };
    }
    // SAFETY: a valid layout; freed below.
    let again: Vec<usize> = (0..600).map(|_| unsafe { A.alloc(l) } as usize).collect();
    let mut sorted = again.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), again.len(), "a block was handed out twice");
    assert_eq!(tieralloc::check_invariants(), Ok(()));
    for p in again {
        // SAFETY: live, freed once here.
        unsafe { A.dealloc(p as *mut u8, l) };
    }
}

#[test]
fn a_bad_free_into_the_second_slot_of_a_span_aborts() {
    let _serial = serial();
    let kib = Layout::from_size_align(1024, 8).unwrap();
    for (what, current) in [("current", true), ("earlier", false)] {
        common::assert_child_aborts(&format!("a free into a {what} object's middle"), || {
            // SAFETY: the free of an interior pointer is the bug under test.
            unsafe { A.dealloc(in_second_slot(kib, current).add(16), kib) };
            false
        });
        // A class of one slot (whose free reads the second slot's own descriptor, which
        // describes no span) and another class of two (which finds the span and its class).
        for other in [128, 768] {
            common::assert_child_aborts(
                &format!("a free of a {what} 1 KiB object as {other} B"),
                || {
                    // SAFETY: the free with another size class is the bug under test.
                    unsafe {
                        A.dealloc(
                            in_second_slot(kib, current),
                            Layout::from_size_align(other, 8).unwrap(),
                        )
                    };
                    false
                },
            );
        }
        // The other way round: an object of a one-slot span at an odd slot, freed with a class
        // of two slots, whose span would start a slot below.
        common::assert_child_aborts(&format!("a free of a {what} 64 B object as 1 KiB"), || {
            let small = Layout::from_size_align(64, 8).unwrap();
            // SAFETY: the free with another size class is the bug under test.
            unsafe { A.dealloc(in_second_slot(small, current), kib) };
            false
        });
    }
}

#[test]
fn a_fork_child_frees_an_object_of_a_span_a_thread_of_its_parent_owns() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let _serial = serial();
    let l = odd().unwrap();
    // A thread takes an object again right after freeing it (the object of its span it freed
    // last, see heap/owned.rs), passes it to this thread and stays alive while this thread
    // forks: in the child that thread does not exist, its heap still owns the span, and the
    // object is freed there as another thread's.
    static HANDED: AtomicUsize = AtomicUsize::new(0);
    static DONE: AtomicBool = AtomicBool::new(false);
    HANDED.store(0, Ordering::SeqCst);
    DONE.store(false, Ordering::SeqCst);
    let owner = std::thread::spawn(|| {
        HANDED.store(reused_object(odd().unwrap()) as usize, Ordering::SeqCst);
        while !DONE.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
    });
    while HANDED.load(Ordering::SeqCst) == 0 {
        std::hint::spin_loop();
    }
    let p = HANDED.load(Ordering::SeqCst) as *mut u8;
    let ok = common::in_child(|| {
        // SAFETY: `p` is live (its owner thread only handed it over) and freed once here.
        unsafe { A.dealloc(p, l) };
        handed_out_once(l)
    });
    DONE.store(true, Ordering::SeqCst);
    owner.join().unwrap();
    // SAFETY: the parent's copy of `p` is still live; freed once here.
    unsafe { A.dealloc(p, l) };
    assert_eq!(ok, 0, "the child stopped, or handed an object out twice");
}

#[test]
fn an_object_reused_then_freed_by_another_thread_is_handed_out_once_afterwards() {
    // Its child starts a thread: in a process of its own, so that no other test's thread is
    // being started (holding the standard library's thread-start lock) at the fork.
    if common::ran_in_fresh_process(
        "an_object_reused_then_freed_by_another_thread_is_handed_out_once_afterwards",
        &[],
    ) {
        return;
    }
    let _serial = serial();
    let l = odd().unwrap();
    let ok = common::in_child(|| {
        let p = reused_object(l);
        // The other thread frees it: not a double free; afterwards it is in that thread's cache.
        on_other_thread(p, |p| {
            // SAFETY: `p` is live and freed once, here.
            unsafe { A.dealloc(p, odd().unwrap()) }
        });
        // This thread's next objects of the class never include `p` twice; `trim` returns
        // every cache to the spans so the object can come back from its span once.
        handed_out_once(l)
    });
    assert_eq!(ok, 0, "an object was handed out twice");
}

#[test]
fn a_free_during_thread_exit_after_the_cache_is_gone_still_catches_a_double_free() {
    // Its child starts a thread: in a process of its own, so that no other test's thread is
    // being started (holding the standard library's thread-start lock) at the fork.
    if common::ran_in_fresh_process(
        "a_free_during_thread_exit_after_the_cache_is_gone_still_catches_a_double_free",
        &[],
    ) {
        return;
    }
    let _serial = serial();
    // A thread whose cache was flushed at exit (a `pthread` key destructor that runs after
    // tieralloc's) frees straight to the span. The object sits freed in the main thread's
    // cache, where the span counts it as handed out: only its freed bit tells. Before that
    // path set the bit, the free was taken and the object handed out twice.
    static KEY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    unsafe extern "C" fn free_at_exit(p: *mut libc::c_void) {
        // SAFETY: `p` is the object set below; its second free is the bug under test.
        unsafe { A.dealloc(p.cast(), odd().unwrap()) }
    }
    common::assert_child_aborts("a second free at thread exit", || {
        let l = odd().unwrap();
        // The heap (and its own key) exists already: this key comes after it.
        let mut key = 0;
        // SAFETY: a valid out-pointer and destructor.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(free_at_exit)) },
            0
        );
        KEY.store(key, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: a valid layout; freed here and again (the bug) by the exiting thread.
        let p = unsafe {
            let p = A.alloc(l);
            A.dealloc(p, l);
            p
        };
        on_other_thread(p, |p| {
            // The thread's cache is in use (so tieralloc's destructor flushes it at exit).
            std::hint::black_box(vec![0u8; 64]);
            // SAFETY: the key exists; the value is freed by its destructor at thread exit.
            unsafe {
                libc::pthread_setspecific(KEY.load(std::sync::atomic::Ordering::Relaxed), p.cast())
            };
        });
        false
    });
}

#[test]
fn a_large_block_freed_twice_aborts_instead_of_being_handed_out_twice() {
    let _serial = serial();
    // No device is used in this process: a freed 64 KiB block waits in the run cache, and a
    // second free must still be caught there.
    for size in [64 << 10, 1 << 20, 4 << 20, 8 << 20] {
        common::assert_double_free_aborts(&A, Layout::from_size_align(size, 8).unwrap());
    }
}

#[test]
fn a_large_buffer_that_had_to_move_grows_in_place_on_its_next_doublings() {
    let _serial = serial();
    const MIB: usize = 1 << 20;
    // A 2 MiB buffer that cannot grow in place: it must move.
    let mut v: Vec<u64> = (0..(MIB as u64 / 4)).collect();
    let keep = common::block_after(v.as_ptr().cast(), v.len() * 8);
    // A free gap of exactly 4 MiB, closed on both sides by live blocks: the tightest fit for
    // the buffer's new run, and one it could not grow in afterwards.
    let mut head: Vec<u8> = vec![3; 4 * MIB + 64 * 1024];
    let closed = common::block_after(head.as_ptr(), head.len());
    head.truncate(64 * 1024);
    head.shrink_to_fit();
    tieralloc::trim();
    let before = v.as_ptr();
    v.reserve_exact(v.len());
    assert_ne!(v.as_ptr(), before, "the buffer had to move");
    let moved = v.as_ptr();
    for mib in [8, 16] {
        v.reserve_exact(mib * MIB / 8 - v.len());
        assert_eq!(
            v.as_ptr(),
            moved,
            "growing to {mib} MiB moved the buffer again: it was placed without room to grow"
        );
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    drop((head, closed, keep));
}

#[test]
fn vec_growth_stays_in_place_for_large_buffers() {
    let _serial = serial();
    let mut v: Vec<u64> = Vec::new();
    let mut moves = 0;
    let mut last = v.as_ptr();
    for i in 0..(4u64 << 20) {
        v.push(i);
        if v.as_ptr() != last {
            moves += 1;
            last = v.as_ptr();
        }
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    // 22 doublings; the small ones move between size classes, the large ones grow in place.
    assert!(
        moves < 18,
        "Vec buffer moved {moves} times while growing to 32 MiB"
    );
}

#[test]
fn stats_describe_the_managed_range() {
    let _serial = serial();
    let v = vec![1u8; 10 << 20];
    let s = tieralloc::stats();
    let r = tieralloc::managed_range();
    assert_eq!(s.arena_base, r.start);
    assert_eq!(s.arena_base + s.arena_size, r.end);
    assert!(r.contains(&(v.as_ptr() as usize)));
    assert!(s.large_bytes >= 10 << 20);
    assert!(
        s.host_resident >= 10 << 20,
        "10 MiB written but {} resident",
        s.host_resident
    );
    assert!(s.metadata_bytes > 0);
    let text = s.to_string();
    assert!(text.contains("managed range"));
}

/// Objects of a class (2560 B) no other test of this binary uses, so that its first object
/// comes from a fresh span.
const SET_ASIDE: Layout = match Layout::from_size_align(2500, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

#[test]
fn objects_set_aside_for_the_next_allocations_still_abort_when_freed_again() {
    let _serial = serial();
    // A thread keeps the objects it freed last (the latest, a stack of the ones before, and
    // the ones that overflowed it, in the bitmap only), and the rest of a bitmap word it took
    // from: a second free of any of them must stop the process, not hand one out twice.
    let l = Layout::from_size_align(48, 8).unwrap();
    for back in [0, 3, 7, 15] {
        common::assert_child_aborts(
            &format!("a second free of the object freed {back} before"),
            || {
                // SAFETY: a valid layout; each object is freed once, then one of them again.
                unsafe {
                    let objs: Vec<*mut u8> = (0..20).map(|_| A.alloc(l)).collect();
                    for &o in &objs {
                        A.dealloc(o, l);
                    }
                    A.dealloc(objs[objs.len() - 1 - back], l);
                }
                false
            },
        );
    }
    // Objects never handed out: the first object of a fresh span comes from a scan of its
    // bitmap, which sets the next ones aside; a free of one of them is a free of a free object.
    for ahead in [1, 2, 12] {
        common::assert_child_aborts(
            &format!("a free of the object {ahead} after a fresh one"),
            || {
                // SAFETY: a valid layout; the pointer freed is the bug under test.
                unsafe {
                    let p = A.alloc(SET_ASIDE);
                    let size = tieralloc::malloc::usable_size(p).unwrap();
                    A.dealloc(p.add(ahead * size), SET_ASIDE);
                }
                false
            },
        );
    }
}

#[test]
fn random_replacements_of_mixed_sizes_never_hand_out_a_live_object() {
    let _serial = serial();
    // The larson-like pattern the per-class stacks and words were made for: random frees and
    // allocations of mixed sizes, some classes over several spans, with bursts that overflow
    // a stack and drain it. Every live object keeps its pattern, and no allocation returns an
    // address that is live. In a child: an object handed out twice usually ends in an abort at
    // its second free, and the seed must still be printed.
    common::seeded_in_child("random replacements", random_replacements);
}

fn random_replacements(seed: u64) {
    let mut rng = common::Rng(seed);
    const SLOTS: usize = 3000;
    let mut table: Vec<(usize, usize, u64)> = vec![(0, 0, 0); SLOTS];
    let mut live = std::collections::HashSet::new();
    let layout = |s: usize| Layout::from_size_align(s, 8).unwrap();
    let mut replace = |slot: usize, size: usize, rng: &mut common::Rng| {
        let (old, old_size, tag) = table[slot];
        if old != 0 {
            // SAFETY: allocated below with this layout and written with `tag`.
            let buf = unsafe { std::slice::from_raw_parts(old as *const u8, old_size) };
            assert!(
                buf.iter()
                    .enumerate()
                    .all(|(i, &b)| b == common::byte(tag, i)),
                "object {old:#x} of {old_size} B changed while live (seed {seed})"
            );
            live.remove(&old);
            // SAFETY: live, freed once.
            unsafe { A.dealloc(old as *mut u8, layout(old_size)) };
        }
        // SAFETY: a non-zero size.
        let p = unsafe { A.alloc(layout(size)) };
        assert!(!p.is_null());
        assert!(
            live.insert(p as usize),
            "{p:?} handed out while live (seed {seed})"
        );
        let tag = rng.next();
        // SAFETY: a fresh object of `size` bytes.
        common::fill(unsafe { std::slice::from_raw_parts_mut(p, size) }, tag);
        table[slot] = (p as usize, size, tag);
    };
    for round in 0..200_000usize {
        if round % 5000 == 4999 {
            // A burst: 40 objects of one size freed, then allocated again.
            let size = 16 + rng.below(1009) as usize;
            for k in 0..40 {
                replace((round + k * 37) % SLOTS, size, &mut rng);
            }
        }
        let slot = rng.below(SLOTS as u64) as usize;
        let size = 16 + rng.below(1009) as usize;
        replace(slot, size, &mut rng);
    }
    for &(p, size, _) in &table {
        // SAFETY: live, freed once.
        unsafe { A.dealloc(p as *mut u8, layout(size)) };
    }
}
