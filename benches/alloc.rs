//! Criterion benches: the same allocator workloads against glibc (`System`), mimalloc,
//! jemalloc and tieralloc in one run, then tieralloc's tier variants (a few workloads on the
//! host and inside a scope of device 0, group `tiers/...`).
//! `cargo run --release -p tieralloc-bench --example alloc_report` prints the ratio tables from
//! the same workloads.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::time::Duration;

#[path = "common/alloc_workloads.rs"]
mod alloc_workloads;
use alloc_workloads::*;

/// A group of `ops` operations per iteration, short enough for the whole run to take minutes.
fn group(c: &mut Criterion, name: String, ops: u64) -> BenchmarkGroup<'_, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(ops));
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(10);
    g
}

fn bench(c: &mut Criterion) {
    for w in workloads() {
        let mut g = group(c, w.name.to_string(), w.ops);
        for (i, name) in NAMES.iter().enumerate() {
            g.bench_function(*name, |b| b.iter(|| with_alloc!(i, a => run(a, w.kind))));
        }
        g.finish();
    }
}

/// tieralloc alone, on the host and inside a scope of device 0. Registered after [`bench`]: the
/// first device-scope run starts the devices, which turns on the page-claim protocol for every
/// allocation after it.
fn tiers(c: &mut Criterion) {
    for w in tier_workloads() {
        let mut g = group(c, format!("tiers/{}", w.name), w.ops);
        g.bench_function("host", |b| b.iter(|| run(&TIERALLOC, w.kind)));
        g.bench_function("device 0", |b| b.iter(|| run_on_device(w.kind)));
        g.finish();
    }
}

criterion_group!(benches, bench, tiers);
criterion_main!(benches);
