//! SAXPY on an emulated device: the CPU fills two vectors, a kernel on device 0 computes
//! `y = a*x + y` through the device's view of the same memory (the pages migrate there on the
//! kernel's device faults), and the CPU reads the result back (its touches fault the pages
//! home).
//!
//! `cargo run --release --example saxpy`

use std::time::Instant;
use tieralloc::{Tier, TierAlloc};

#[global_allocator]
static ALLOC: TierAlloc = TierAlloc::new();

const N: usize = 16 << 20; // 16 Mi floats = 64 MiB per vector

fn main() -> Result<(), tieralloc::Error> {
    let a = 2.5f32;
    let x: Vec<f32> = (0..N).map(|i| (i % 1000) as f32).collect();
    let mut y: Vec<f32> = (0..N).map(|i| (i % 7) as f32).collect();
    let dev = tieralloc::device(0)?;

    let t = Instant::now();
    let report = dev.run((&x[..], &mut y[..]), |(x, y)| {
        for (y, x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    })?;
    let on_device = tieralloc::residency(y.as_ptr().cast(), N * 4)?.device_bytes(0);
    println!(
        "kernel: {} device faults, {} MiB migrated, kernel {:.1} ms, launch total {:.1} ms",
        report.device_faults,
        report.migrated_bytes >> 20,
        report.run_time.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("y on device 0 after the kernel: {} MiB", on_device >> 20);

    let t = Instant::now();
    let bad = (0..N)
        .filter(|&i| y[i] != (i % 7) as f32 + a * (i % 1000) as f32)
        .count();
    println!(
        "CPU check of y: {} wrong of {N} ({:.1} ms, pages faulted home)",
        bad,
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(bad, 0, "the CPU must read what the kernel wrote");
    tieralloc::migrate(x.as_ptr().cast(), N * 4, Tier::Host)?;
    println!("{}", tieralloc::stats());
    Ok(())
}
