//! A tour of tieralloc: install it as the global allocator, allocate the usual way, and look at
//! the managed range every byte comes from.
//!
//! `cargo run --release --example tour`

use std::collections::HashMap;
use tieralloc::{Bytes, TierAlloc};

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
    println!("Device tiers (migrate, fault-back) come with the migration layer; see the README.");
}
