//! Prints the allocator comparison tables: each workload's median ns per operation under glibc,
//! mimalloc, jemalloc and tieralloc, measured in this run, with tieralloc's ratio to mimalloc
//! and glibc; each allocator's peak RSS over one run of each workload; tieralloc's tier
//! variants (the same workloads inside a device scope, beside the host); and tieralloc's
//! metadata overhead for 1M live 32-byte objects.
//!
//! `cargo run --release -p tieralloc-bench --example alloc_report` (a few minutes; `ROUNDS=n`
//! for more or fewer rounds, `ONLY=text` for the workloads whose name contains `text`).

use std::alloc::{GlobalAlloc, Layout};
use std::time::Instant;

#[path = "../common/alloc_workloads.rs"]
mod alloc_workloads;
use alloc_workloads::*;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// tieralloc alone: a few workloads on the host and inside a scope of device 0 (fresh pages
/// created on the device, small objects through the thread's second cache), median ns per op.
/// Runs last: starting the devices turns on the page-claim protocol for the rest of the process.
fn tier_variants(rounds: usize, only: &str) {
    let chosen: Vec<Workload> = tier_workloads()
        .into_iter()
        .filter(|w| w.name.contains(only))
        .collect();
    if chosen.is_empty() {
        return;
    }
    println!(
        "\ntieralloc's tiers: the same workloads on the host and in a device-0 scope, ns per op\n"
    );
    println!(
        "| {:<34} | {:>9} | {:>9} | {:>9} |",
        "workload", "host", "device 0", "dev/host"
    );
    println!("|{:-<36}|{:->11}|{:->11}|{:->11}|", "", "", "", "");
    for w in &chosen {
        run(&TIERALLOC, w.kind);
        run_on_device(w.kind);
        let (mut host, mut dev) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            run(&TIERALLOC, w.kind);
            host.push(t.elapsed().as_nanos() as f64 / w.ops as f64);
            let t = Instant::now();
            run_on_device(w.kind);
            dev.push(t.elapsed().as_nanos() as f64 / w.ops as f64);
        }
        let (h, d) = (median(&mut host), median(&mut dev));
        println!(
            "| {:<34} | {:>9.1} | {:>9.1} | {:>8.2}× |",
            w.name,
            h,
            d,
            d / h
        );
    }
}

/// Metadata bytes tieralloc adds while 1M 32-byte objects are live, and those objects' bytes.
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

/// A field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// Peak RSS of workload `w` under allocator `a`, each in a process of its own (allocators
/// keep memory between runs, so one process could not tell whose it is): this program run
/// again with `--peak-rss w a`, which runs the workload [`PEAK_RUNS`] times and prints its
/// RSS high-water mark above the RSS it started the workload with.
fn peak_rss(w: usize, a: usize) -> usize {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--peak-rss", &w.to_string(), &a.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "peak RSS child failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs of the workload in a `--peak-rss` child: a program that does the same work again.
const PEAK_RUNS: usize = 3;

fn peak_rss_child(w: usize, a: usize) {
    let kind = workloads()[w].kind;
    let before = status_bytes("VmRSS:");
    for _ in 0..PEAK_RUNS {
        with_alloc!(a, x => run(x, kind));
    }
    println!("{}", status_bytes("VmHWM:").saturating_sub(before));
}

fn mib(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--peak-rss") {
        return peak_rss_child(args[2].parse().unwrap(), args[3].parse().unwrap());
    }
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
    let only = std::env::var("ONLY").unwrap_or_default();
    let chosen: Vec<(usize, Workload)> = workloads()
        .into_iter()
        .enumerate()
        .filter(|(_, w)| w.name.contains(only.as_str()))
        .collect();
    let mut peaks = Vec::new();
    for (index, w) in &chosen {
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
        let peak: Vec<usize> = (0..NAMES.len()).map(|i| peak_rss(*index, i)).collect();
        peaks.push((w.name, peak));
    }
    println!(
        "\npeak RSS, MiB above the RSS at the start, over {PEAK_RUNS} runs in a process of each \
         allocator's own (lower is better)\n"
    );
    println!(
        "| {:<34} | {:>9} | {:>9} | {:>9} | {:>9} | {:>11} |",
        "workload", NAMES[0], NAMES[1], NAMES[2], NAMES[3], "vs mimalloc"
    );
    println!(
        "|{:-<36}|{:->11}|{:->11}|{:->11}|{:->11}|{:->13}|",
        "", "", "", "", "", ""
    );
    for (name, p) in &peaks {
        // Below 1 MiB the ratio says nothing (page-granular counts, other allocators' caches).
        let ratio = if p[1] >= 1 << 20 {
            format!("{:.2}×", p[3] as f64 / p[1] as f64)
        } else {
            "-".into()
        };
        println!(
            "| {:<34} | {:>9.1} | {:>9.1} | {:>9.1} | {:>9.1} | {:>11} |",
            name,
            mib(p[0]),
            mib(p[1]),
            mib(p[2]),
            mib(p[3]),
            ratio
        );
    }
    tier_variants(rounds, &only);
    println!(
        "\nmetadata for 1M live 32-byte objects: {} of {} = {:.2}% (target ≤ 1%)",
        tieralloc::Bytes(meta as u64),
        tieralloc::Bytes(live as u64),
        meta as f64 * 100.0 / live as f64
    );
}
