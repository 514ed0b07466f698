//! A tour of tieralloc, in under 10 seconds: allocate the usual way, annotate where data
//! should live, move a large Vec to an emulated device and watch host memory fall, run a
//! device kernel, touch the data from the CPU (it faults back), print the counters and write a
//! residency map.
//!
//! `cargo run --release --example tour` (writes `tour-residency.svg` in the current directory;
//! with `TIERALLOC_TRACE=trace.csv` it also records every residency change, which
//! `cargo run --release --example tieralloc-view -- trace.csv timeline.svg` draws).

use std::time::Instant;
use tieralloc::{Bytes, OnDevice, Tier, TierAlloc};

#[global_allocator]
static ALLOC: TierAlloc = TierAlloc::new();

const MIB: usize = 1 << 20;

fn host_resident() -> Bytes {
    Bytes(tieralloc::stats().host_resident as u64)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    println!("tieralloc tour\n");

    // 1. Allocate: ordinary Rust allocations all come from one managed address range.
    let names: Vec<String> = (0..100_000).map(|i| format!("item-{i}")).collect();
    let range = tieralloc::managed_range();
    println!(
        "1. allocate: 100k Strings, all inside the managed range {:#x}..{:#x} ({} reserved): {}",
        range.start,
        range.end,
        Bytes((range.end - range.start) as u64),
        names.iter().all(|s| tieralloc::is_managed(s.as_ptr()))
    );
    let devices = tieralloc::devices()?;
    for d in &devices {
        println!(
            "   device {} ({}): {} capacity",
            d.id,
            d.name,
            Bytes(d.capacity as u64)
        );
    }

    // 2. Annotate: allocations made in a device scope (or with a device allocator) are created
    //    on the device: no host memory, no copy, until the CPU touches them.
    let before = host_resident();
    let n = 16 * MIB; // f32s: 64 MiB
    let mut y: Vec<f32> = tieralloc::with_tier(Tier::Device(0), || vec![0.0; n]);
    let scratch: allocator_api2::vec::Vec<u8, OnDevice<0>> =
        allocator_api2::vec::Vec::with_capacity_in(8 * MIB, OnDevice);
    let ry = tieralloc::residency(y.as_ptr().cast(), n * 4)?;
    println!(
        "\n2. annotate: with_tier(Device(0), || vec![0f32; 16M]) and Vec::with_capacity_in(8 MiB, OnDevice::<0>)\n   \
         {} of y on device 0, scratch at {:#x} on device 0; host resident {} -> {}",
        Bytes(ry.device_bytes(0) as u64),
        scratch.as_ptr() as usize,
        before,
        host_resident()
    );

    // 3. Migrate: a 256 MiB Vec moves to device 0 under the same addresses.
    let x: Vec<f32> = (0..64 * MIB).map(|i| (i % 1000) as f32).collect(); // 256 MiB
    let (px, nx) = (x.as_ptr().cast::<u8>(), x.len() * 4);
    let before = host_resident();
    let t = Instant::now();
    let m = tieralloc::migrate(px, nx, Tier::Device(0))?;
    println!(
        "\n3. migrate(x: 256 MiB, Device(0)): {} pages moved in {:.1} ms; x still at {:#x}\n   \
         host resident {} -> {}",
        m.moved,
        ms(t),
        px as usize,
        before,
        host_resident()
    );

    // 4. A device kernel: y[i] = 2 * x[i % n] + y[i], on device 0, where both already live.
    let t = Instant::now();
    let report = tieralloc::device(0)?.run((&x[..], &mut y[..]), |(x, y)| {
        for (i, y) in y.iter_mut().enumerate() {
            *y += 2.0 * x[i];
        }
    })?;
    println!(
        "\n4. kernel on device 0 in {:.1} ms: {} device faults ({} migrated) - the data was \
         already there",
        ms(t),
        report.device_faults,
        Bytes(report.migrated_bytes as u64)
    );

    // 5. The CPU touches y: its pages fault back, same addresses, right values.
    let faults = tieralloc::stats().cpu_faults;
    let t = Instant::now();
    let quarter = n / 4;
    let sum: f64 = y[..quarter].iter().map(|&v| v as f64).sum();
    let want: f64 = (0..quarter).map(|i| 2.0 * (i % 1000) as f64).sum();
    assert_eq!(sum, want, "the kernel's result, read by the CPU");
    let r = tieralloc::residency(y.as_ptr().cast(), n * 4)?;
    println!(
        "\n5. CPU sums the first quarter of y in {:.1} ms: {} faults brought {} home; sum is \
         right ({sum})\n   y now: {} host, {} device 0",
        ms(t),
        tieralloc::stats().cpu_faults - faults,
        Bytes(r.host_bytes() as u64),
        Bytes(r.host_bytes() as u64),
        Bytes(r.device_bytes(0) as u64)
    );

    // 6. The counters.
    println!("\n6. {}", tieralloc::stats());

    // 7. A residency map of y: host (touched by the CPU) and device 0, shaded by use.
    let map = tieralloc::residency_map(y.as_ptr().cast(), n * 4)?;
    let path = "tour-residency.svg";
    map.write_svg(path)?;
    let text = map.text();
    println!(
        "\n7. residency map of y ({} KiB per cell) written to {path}; as text (rows around \
         the host/device boundary):",
        map.pages_per_cell() * 4
    );
    let lines: Vec<&str> = text.lines().collect();
    let boundary = map
        .cells()
        .iter()
        .position(|c| c.state != tieralloc::PageState::Host)
        .map_or(1, |i| 1 + i / 64);
    for i in [0, 1, boundary - 1, boundary, boundary + 1, lines.len() - 1] {
        println!("   {}", lines[i.min(lines.len() - 1)]);
    }
    if tieralloc::trace::is_enabled() {
        tieralloc::trace::flush();
        println!("   trace recorded: draw it with `cargo run --release --example tieralloc-view -- <trace.csv> timeline.svg`");
    }
    drop((names, scratch, x));
    println!("\ntour done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
