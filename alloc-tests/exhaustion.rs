//! The managed range's size comes from `TIERALLOC_ARENA`; when it is exhausted `alloc` returns
//! null (Rust's OOM path), and a bad value is reported and replaced by the default.
//!
//! Each test re-runs this test binary as a child with the variable set, because the range is
//! reserved once per process.

use std::alloc::{alloc, dealloc, Layout};
use std::process::Command;
use tieralloc::TierAlloc;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

/// Runs test `name` of this binary in a child with `TIERALLOC_ARENA=value`; returns its stderr.
fn run_child(name: &str, value: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env("TIERALLOC_ARENA", value)
        .env("ALLOC_TEST_TEST_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "child `{name}` failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn is_child() -> bool {
    std::env::var_os("ALLOC_TEST_TEST_CHILD").is_some()
}

#[test]
fn exhausting_a_small_arena_returns_null_not_a_crash() {
    if !is_child() {
        run_child(
            "exhausting_a_small_arena_returns_null_not_a_crash",
            "128MiB",
        );
        return;
    }
    let s = tieralloc::stats();
    assert_eq!(s.arena_size, 128 << 20);
    // SAFETY: every non-null block is freed with its layout.
    unsafe {
        let too_big = Layout::from_size_align(256 << 20, 8).unwrap();
        // black_box: the compiler may otherwise elide an allocation whose pointer is unused.
        let p = std::hint::black_box(alloc(too_big));
        assert!(p.is_null(), "a 256 MiB block cannot fit a 128 MiB arena");
        // Fill the arena with 8 MiB blocks until it says no.
        let l = Layout::from_size_align(8 << 20, 4096).unwrap();
        let mut got = Vec::new();
        loop {
            let p = std::hint::black_box(alloc(l));
            if p.is_null() {
                break;
            }
            got.push(p);
            assert!(
                got.len() <= 16,
                "more than 128 MiB handed out of a 128 MiB arena"
            );
        }
        assert!(
            got.len() >= 12,
            "only {} × 8 MiB fit a 128 MiB arena",
            got.len()
        );
        // try_reserve reports the failure as an error.
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve(64 << 20).is_err());
        for p in got {
            dealloc(p, l);
        }
        // Freed memory is usable again.
        let p = std::hint::black_box(alloc(l));
        assert!(
            !p.is_null(),
            "memory freed after exhaustion could not be reused"
        );
        dealloc(p, l);
    }
}

#[test]
fn a_bad_arena_size_is_reported_and_the_default_kept() {
    if !is_child() {
        let err = run_child("a_bad_arena_size_is_reported_and_the_default_kept", "lots");
        assert!(
            err.contains("TIERALLOC_ARENA=lots"),
            "no warning on stderr: {err}"
        );
        return;
    }
    let v = vec![7u8; 1 << 20];
    assert!(tieralloc::is_managed(v.as_ptr()));
    assert_eq!(tieralloc::stats().arena_requested, 64 << 30);
}
