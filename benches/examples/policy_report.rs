//! Prints the device and policy table, measured in one run: device-fault cost per 64 KiB
//! block (against an explicit migrate of the same block), prefetch throughput and CPU reads
//! after a migration with and without a `ReadMostly` duplicate (against memcpy), and each
//! built-in policy on a ping-pong workload and an oversubscribed scan.
//!
//! `cargo run --release -p tieralloc-bench --example policy_report` (about 20 s).

use tieralloc::policy::{Adaptive, Evict, Strict};
use tieralloc::{Tier, TierAlloc};

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

#[path = "../common/device_workloads.rs"]
mod device_workloads;
use device_workloads::*;

const MIB: usize = 1 << 20;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> Result<(), tieralloc::Error> {
    // Device 0 is small so that the scan oversubscribes it 3×.
    tieralloc::set_devices(&[("dev0", 64 * MIB)])?;
    let buf = filled(32 * MIB);
    let memcpy = median((0..ROUNDS).map(|_| memcpy_bandwidth(32 * MIB)).collect());
    let fault = median((0..ROUNDS).map(|_| device_fault_per_block(&buf)).collect());
    let block = filled(BLOCK);
    let explicit = median(
        (0..ROUNDS * 20)
            .map(|_| {
                tieralloc::migrate(block.as_ptr().cast(), BLOCK, Tier::Host).unwrap();
                let t = std::time::Instant::now();
                tieralloc::migrate(block.as_ptr().cast(), BLOCK, Tier::Device(0)).unwrap();
                t.elapsed().as_nanos() as f64
            })
            .collect(),
    );
    let prefetch = median((0..ROUNDS).map(|_| prefetch_throughput(&buf)).collect());
    let plain = median(
        (0..ROUNDS)
            .map(|_| read_after_migrate(&buf, false))
            .collect(),
    );
    let dup = median(
        (0..ROUNDS)
            .map(|_| read_after_migrate(&buf, true))
            .collect(),
    );
    let gb = |b: f64| b / 1e9;
    println!(
        "backend {}, memcpy {:.1} GB/s (median of {ROUNDS})",
        tieralloc::stats().fault_backend,
        gb(memcpy)
    );
    println!();
    println!("| measure | figure | ratio |");
    println!("|---|---|---|");
    println!(
        "| device fault, per 64 KiB block (kernel on host data) | {:.1} us | {:.2}× an explicit 64 KiB migrate ({:.1} us) |",
        fault / 1e3,
        fault / explicit,
        explicit / 1e3
    );
    println!(
        "| prefetch 32 MiB to device | {:.1} GB/s | {:.0}% of memcpy |",
        gb(prefetch),
        100.0 * prefetch / memcpy
    );
    println!(
        "| CPU read after migrate, no duplicate (faults back) | {:.1} GB/s | {:.0}% of memcpy |",
        gb(plain),
        100.0 * plain / memcpy
    );
    println!("| CPU read after migrate, ReadMostly duplicate | {:.1} GB/s | {:.0}% of memcpy ({:.1}× faster) |", gb(dup), 100.0 * dup / memcpy, dup / plain);
    drop(buf);

    println!();
    println!("Policies (device 0: 64 MiB). Ping-pong: 1 MiB updated by a kernel, then by the CPU, 40 rounds.");
    println!("Scan: 12 buffers of 16 MiB (3× the device) each summed by a kernel, 3 passes.");
    println!();
    println!("| workload | policy | time ms | to device | to host | CPU faults | device faults | evictions | guards | failed launches |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    type Setter = fn();
    let policies: [(&str, Setter); 3] = [
        ("strict", || tieralloc::set_policy(Strict)),
        ("evict", || tieralloc::set_policy(Evict)),
        ("adaptive", || tieralloc::set_policy(Adaptive::default())),
    ];
    for (workload, f) in [
        ("ping-pong", (|| ping_pong(40)) as fn() -> PolicyRun),
        ("oversubscribed scan", || {
            oversubscribed_scan(12, 16 * MIB, 3)
        }),
    ] {
        for (name, set) in policies {
            set();
            let r = f();
            println!(
                "| {workload} | {name} | {:.1} | {} MiB | {} MiB | {} | {} | {} | {} | {} |",
                r.ms,
                r.to_device >> 20,
                r.to_host >> 20,
                r.cpu_faults,
                r.device_faults,
                r.evictions,
                r.guards,
                r.failed_launches
            );
        }
    }
    Ok(())
}
