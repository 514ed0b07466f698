//! Criterion benches of device execution and hints: device-fault cost, prefetch throughput,
//! CPU reads after a migration with and without a `ReadMostly` duplicate.
//! `cargo run --release -p tieralloc-bench --example policy_report` prints them with ratios and the policy table.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use tieralloc::TierAlloc;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

#[path = "common/device_workloads.rs"]
mod device_workloads;
use device_workloads::*;

const MIB: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("device");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(10);
    let buf = filled(16 * MIB);
    g.bench_function("device fault, per 64 KiB block", |b| {
        b.iter_custom(|iters| {
            let ns: f64 = (0..iters).map(|_| device_fault_per_block(&buf)).sum();
            Duration::from_nanos(ns as u64)
        })
    });
    g.throughput(Throughput::Bytes(16 * MIB as u64));
    g.bench_function("prefetch 16 MiB to device", |b| {
        b.iter_custom(|iters| {
            let s: f64 = (0..iters)
                .map(|_| 16.0 * MIB as f64 / prefetch_throughput(&buf))
                .sum();
            Duration::from_secs_f64(s)
        })
    });
    for (name, rm) in [
        ("CPU read after migrate, no duplicate", false),
        ("CPU read after migrate, ReadMostly", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let s: f64 = (0..iters)
                    .map(|_| 16.0 * MIB as f64 / read_after_migrate(&buf, rm))
                    .sum();
                Duration::from_secs_f64(s)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
