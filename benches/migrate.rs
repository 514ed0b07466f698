//! Criterion benches of migration and fault-back, in the backend `TIERALLOC_FAULT` selects
//! (default `auto`): e.g. `TIERALLOC_FAULT=uffd-fast cargo bench -p tieralloc-bench --bench migrate`.
//! `cargo run --release -p tieralloc-bench --example fault_report` prints all backends side by side, with ratios.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use tieralloc::TierAlloc;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

#[path = "common/fault_workloads.rs"]
mod fault_workloads;
use fault_workloads::*;
#[path = "common/raw_uffd.rs"]
mod raw_uffd;

const MIB: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fault");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(10);
    g.bench_function("bare floor: SIGSEGV + mprotect", |b| {
        b.iter_custom(|iters| {
            let ns = floor_sigsegv_mprotect(iters as usize);
            Duration::from_nanos((ns * iters as f64) as u64)
        })
    });
    // The kernel's mechanism without tieralloc (before tieralloc's backend starts: the first
    // fault-back below starts it). Skipped where the kernel lacks SIGBUS mode or UFFDIO_MOVE.
    let bare = raw_uffd::raw_sigbus_move(16, Access::Write).is_some();
    for access in [Access::Write, Access::Read].into_iter().filter(|_| bare) {
        let name = format!(
            "kernel mechanism alone: SIGBUS + UFFDIO_MOVE, {}",
            access.name()
        );
        g.bench_function(name, |b| {
            // In batches, so that a long measurement does not map gigabytes at once.
            b.iter_custom(|iters| {
                in_batches(iters, 2000, |n| {
                    raw_uffd::raw_sigbus_move(n, access).unwrap()
                })
            })
        });
    }
    let mut buf = filled_pages(2000);
    for access in [Access::Write, Access::Read] {
        let name = format!("fault-back of one 4 KiB page, {}", access.name());
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = 0.0;
                for _ in 0..iters {
                    total += fault_back_per_page(&mut buf, access);
                }
                Duration::from_nanos(total as u64)
            })
        });
    }
    // Spaced touches (`fault_report` prints them against the kernel mechanism): isolated ones
    // find the transparent handlers asleep, bursts find them polling.
    let mut few = filled_pages(40);
    g.bench_function("fault-back, isolated (2 ms apart), write", |b| {
        b.iter_custom(|iters| {
            in_batches(iters, 20, |n| {
                fault_back_timed(&mut few[..2 * n * PAGE], Access::Write, Spacing::Isolated)
            })
        })
    });
    g.bench_function("fault-back, burst (1-10 µs apart), write", |b| {
        b.iter_custom(|iters| {
            in_batches(iters, 1000, |n| {
                fault_back_timed(&mut buf[..2 * n * PAGE], Access::Write, Spacing::Burst)
            })
        })
    });
    g.finish();

    // Several threads faulting at once: one iteration is one touch of each 64 KiB block of
    // 32 MiB on the device (nearly one fault each), spread over the threads.
    let mut g = c.benchmark_group("fault throughput, 32 MiB on the device");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    let mut many = filled_pages(32 * MIB / PAGE);
    g.throughput(Throughput::Elements(
        (32 * MIB / (BLOCK_PAGES * PAGE)) as u64,
    ));
    for threads in [1, 2, 4, 8] {
        g.bench_function(format!("{threads} threads"), |b| {
            b.iter_custom(|iters| {
                let secs: f64 = (0..iters)
                    .map(|_| timed_faults(&mut many, threads, Access::Write).1)
                    .sum();
                Duration::from_secs_f64(secs)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("migrate 64 MiB");
    g.throughput(Throughput::Bytes((64 * MIB) as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    let words: Vec<u64> = (0..(64 * MIB / 8) as u64).collect();
    g.bench_function("sequential CPU read of device-resident data", |b| {
        b.iter_custom(|iters| {
            let secs: f64 = (0..iters)
                .map(|_| (64 * MIB) as f64 / sequential_read(&words))
                .sum();
            Duration::from_secs_f64(secs)
        })
    });
    let bytes = filled_pages(64 * MIB / PAGE);
    g.bench_function("to device and back", |b| {
        b.iter_custom(|iters| {
            let secs: f64 = (0..iters)
                .map(|_| {
                    let (to, back) = bulk_migrate(&bytes);
                    (64 * MIB) as f64 / to + (64 * MIB) as f64 / back
                })
                .sum();
            Duration::from_secs_f64(secs)
        })
    });
    g.finish();
}

/// `iters` faults measured `batch` at a time: `per_fault(n)` runs `n` of them and returns ns
/// per fault; the total time.
fn in_batches(iters: u64, batch: usize, mut per_fault: impl FnMut(usize) -> f64) -> Duration {
    let mut total = 0.0;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(batch);
        total += per_fault(n) * n as f64;
        left -= n;
    }
    Duration::from_nanos(total as u64)
}

criterion_group!(benches, bench);
criterion_main!(benches);
