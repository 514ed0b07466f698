//! Criterion benches: the same allocator workloads against glibc (`System`), mimalloc,
//! jemalloc and tieralloc in one run. `cargo run --release -p tieralloc-bench --example alloc_report` prints the
//! ratio table from the same workloads.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

#[path = "common/alloc_workloads.rs"]
mod alloc_workloads;
use alloc_workloads::*;

fn bench(c: &mut Criterion) {
    for w in workloads() {
        let mut g = c.benchmark_group(w.name);
        g.throughput(Throughput::Elements(w.ops));
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(2));
        g.sample_size(10);
        for (i, name) in NAMES.iter().enumerate() {
            g.bench_function(*name, |b| b.iter(|| with_alloc!(i, a => run(a, w.kind))));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
