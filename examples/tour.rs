//! A tour of tieralloc: install it as the global allocator, allocate the usual way, look at the
//! managed range every byte comes from, then move a large Vec to an emulated device and watch
//! it come back when the CPU touches it.
//!
//! `cargo run --release --example tour`

use std::collections::HashMap;
use std::time::Instant;
use tieralloc::{Bytes, Tier, TierAlloc};

#[global_allocator]
static ALLOC: TierAlloc = TierAlloc::new();

fn main() {
    println!("tieralloc tour\n");

    // 1. Ordinary Rust allocations: all come from one managed address range.
    let words: Vec<String> = (0..200_000).map(|i| format!("word-{i}")).collect();
    let index: HashMap<&str, usize> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let big = vec![42u64; 32 << 20 >> 3]; // 32 MiB
    let range = tieralloc::managed_range();
    println!(
        "1. managed range {:#x}..{:#x} ({} of address space, reserved, not memory)",
        range.start,
        range.end,
        Bytes((range.end - range.start) as u64)
    );
    for (what, p) in [
        ("a String", words[7].as_ptr()),
        (
            "the HashMap's table",
            (index.get("word-7").unwrap() as *const usize).cast(),
        ),
        ("a 32 MiB Vec", big.as_ptr().cast()),
    ] {
        println!(
            "   {what:<22} at {:#x}: managed = {}",
            p as usize,
            tieralloc::is_managed(p)
        );
    }
    let local = 0u8;
    println!(
        "   {:<22} at {:#x}: managed = {}\n",
        "a stack variable",
        &local as *const u8 as usize,
        tieralloc::is_managed(&local)
    );

    // 2. What the allocator holds right now.
    println!(
        "2. with 200k strings, a map and a 32 MiB Vec live:\n{}\n",
        tieralloc::stats()
    );

    // 3. Freed memory goes back to the OS.
    let before = tieralloc::stats().host_resident;
    drop(big);
    drop(index);
    drop(words);
    tieralloc::trim();
    let after = tieralloc::stats();
    println!(
        "3. after freeing them and trim(): host resident {} -> {} ({} purged so far)\n",
        Bytes(before as u64),
        Bytes(after.host_resident as u64),
        Bytes(after.purged_bytes)
    );
    // 4. Move a large Vec to device 0: same addresses, host memory released.
    let devices = tieralloc::devices().expect("devices");
    println!(
        "4. devices: {}",
        devices
            .iter()
            .map(|d| format!("{} ({}, {})", d.id, d.name, Bytes(d.capacity as u64)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let v: Vec<u64> = (0..32u64 << 20).collect(); // 256 MiB
    let (p, n) = (v.as_ptr().cast::<u8>(), v.len() * 8);
    let before = tieralloc::stats().host_resident;
    let t = Instant::now();
    let m = tieralloc::migrate(p, n, Tier::Device(0)).expect("migrate to device 0");
    let took = t.elapsed();
    let after = tieralloc::stats().host_resident;
    println!(
        "   migrate(Vec of {}, Device(0)): {} pages moved in {:.1} ms",
        Bytes(n as u64),
        m.moved,
        took.as_secs_f64() * 1e3
    );
    println!(
        "   managed range resident in host memory: {} -> {}",
        Bytes(before as u64),
        Bytes(after as u64)
    );
    let r = tieralloc::residency(p, n).expect("residency");
    println!(
        "   residency: {} on device 0, {} on the host; the Vec is still at {:#x}\n",
        Bytes(r.device_bytes(0) as u64),
        Bytes(r.host_bytes() as u64),
        p as usize
    );

    // 5. The CPU touches it: pages fault back transparently, same addresses, same data.
    let faults = tieralloc::stats().cpu_faults;
    let t = Instant::now();
    let sum: u64 = v.iter().sum();
    let took = t.elapsed();
    assert_eq!(sum, (0..32u64 << 20).sum::<u64>());
    let r = tieralloc::residency(p, n).expect("residency");
    println!(
        "5. summed it on the CPU in {:.1} ms ({:.1} GB/s) with {} faults: sum is right, {} back on the host\n",
        took.as_secs_f64() * 1e3,
        n as f64 / took.as_secs_f64() / 1e9,
        tieralloc::stats().cpu_faults - faults,
        Bytes(r.host_bytes() as u64)
    );
    println!("6. counters:\n{}", tieralloc::stats());
}
