//! Prints the allocator comparison table: each workload's median ns per operation under glibc,
//! mimalloc, jemalloc and tieralloc, measured in this run, and tieralloc's ratio to mimalloc
//! and glibc. Also prints tieralloc's metadata overhead for 1M live 32-byte objects.
//!
//! `cargo run --release -p tieralloc-bench --example alloc_report` (about a minute; `ROUNDS=n` for more rounds).

use std::alloc::{GlobalAlloc, Layout};
use std::time::Instant;

#[path = "../common/alloc_workloads.rs"]
mod alloc_workloads;
use alloc_workloads::*;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Metadata bytes tieralloc adds while 1M 32-byte objects are live, as a share of their bytes.
fn metadata_share() -> (usize, usize) {
    let layout = Layout::new::<[u8; 32]>();
    let before = tieralloc::stats().metadata_bytes;
    // SAFETY: non-zero size; every block is freed below with the same layout.
    let ptrs: Vec<*mut u8> = (0..1_000_000)
        .map(|_| unsafe { TIERALLOC.alloc(layout) })
        .collect();
    let meta = tieralloc::stats().metadata_bytes - before;
    for p in ptrs {
        // SAFETY: as above.
        unsafe { TIERALLOC.dealloc(p, layout) };
    }
    (meta, 1_000_000 * 32)
}

fn main() {
    // Initialise tieralloc first so its one-time setup is not part of a measurement, and take
    // the metadata figure while the heap is otherwise empty.
    let (meta, live) = metadata_share();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    println!("tieralloc allocator report: median of {rounds} interleaved rounds, ns per op (lower is better)\n");
    println!(
        "| {:<30} | {:<10} | {:>9} | {:>9} | {:>9} | {:>9} | {:>11} | {:>9} |",
        "workload", "op", NAMES[0], NAMES[1], NAMES[2], NAMES[3], "vs mimalloc", "vs glibc"
    );
    println!(
        "|{:-<32}|{:-<12}|{:->11}|{:->11}|{:->11}|{:->11}|{:->13}|{:->11}|",
        "", "", "", "", "", "", "", ""
    );
    for w in workloads() {
        let mut samples = vec![Vec::new(); NAMES.len()];
        // Warm every allocator once, then interleave rounds so drift hits all alike.
        for i in 0..NAMES.len() {
            with_alloc!(i, a => run(a, w.kind));
        }
        for _ in 0..rounds {
            for (i, s) in samples.iter_mut().enumerate() {
                let t = Instant::now();
                with_alloc!(i, a => run(a, w.kind));
                s.push(t.elapsed().as_nanos() as f64 / w.ops as f64);
            }
        }
        let m: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
        println!(
            "| {:<30} | {:<10} | {:>9.1} | {:>9.1} | {:>9.1} | {:>9.1} | {:>10.2}× | {:>8.2}× |",
            w.name,
            w.op,
            m[0],
            m[1],
            m[2],
            m[3],
            m[3] / m[1],
            m[3] / m[0]
        );
    }
    println!(
        "\nmetadata for 1M live 32-byte objects: {} of {} = {:.2}% (target ≤ 1%)",
        tieralloc::Bytes(meta as u64),
        tieralloc::Bytes(live as u64),
        meta as f64 * 100.0 / live as f64
    );
}
