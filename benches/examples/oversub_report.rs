//! Oversubscription, measured the way unified-memory papers report it: a kernel streams over a
//! working set of 1.25×, 1.5×, 2× and 3× a device's capacity, and the time is compared with the
//! same work on a device it fits in, per policy, with migrations, evictions and faults. Then a
//! CPU/device ping-pong over a hot set, per thrash guard: tieralloc's `Adaptive` default and
//! one shaped after the NVIDIA driver's published design.
//!
//! `cargo run --release -p tieralloc-bench --example oversub_report` (about a minute; `--quick`
//! for one pass, as CI runs it). It writes the slowdown curve to `docs/oversubscription.svg`
//! (or the path after `--svg`).

use std::time::Duration;
use tieralloc::policy::{Adaptive, BlockInfo, DeviceFault, Evict, Policy, Strict};
use tieralloc::{Tier, TierAlloc};

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

#[path = "../common/device_workloads.rs"]
mod device_workloads;
use device_workloads::*;

const MIB: usize = 1 << 20;
/// The small device, which the working sets oversubscribe.
const SMALL: usize = 64 * MIB;
/// Each buffer a kernel scans.
const EACH: usize = 8 * MIB;
const RATIOS: [f64; 4] = [1.25, 1.5, 2.0, 3.0];

/// A thrash guard shaped after the NVIDIA driver's published design: 3 thrashing events on a
/// block within a short window pin it where it is for 150 ms. The driver's window starts at
/// 500 µs and adapts; tieralloc's window is counted in milliseconds, so this one is 1 ms, fixed,
/// and there is no throttling stage before the pin.
struct NvidiaLike;

impl Policy for NvidiaLike {
    fn name(&self) -> &str {
        "nvidia-like"
    }
    fn on_device_fault(&self, _device: u16, block: &BlockInfo) -> DeviceFault {
        if block.guarded {
            DeviceFault::Remote
        } else if block.recent_cpu_faults >= 3 {
            DeviceFault::Guard(Duration::from_millis(150))
        } else {
            DeviceFault::Migrate
        }
    }
    fn thrash_window(&self) -> Duration {
        Duration::from_millis(1)
    }
}

type Setter = fn();

const POLICIES: [(&str, Setter); 3] = [
    ("strict", || tieralloc::set_policy(Strict)),
    ("evict", || tieralloc::set_policy(Evict)),
    ("adaptive", || tieralloc::set_policy(Adaptive::default())),
];

/// CPU/device ping-pong over a hot set: `rounds` times, a kernel on device 0 updates the first
/// `hot` bytes of a 32 MiB buffer and the CPU then updates them too; the cold rest stays
/// where it is. Checks the result.
fn hot_set_ping_pong(hot: usize, rounds: usize) -> PolicyRun {
    let mut v = vec![0u64; 32 * MIB / 8];
    tieralloc::migrate(v.as_ptr().cast(), v.len() * 8, Tier::Device(0)).unwrap();
    let dev = tieralloc::device(0).unwrap();
    let n = hot / 8;
    let run = measure(|| {
        for _ in 0..rounds {
            dev.run(&mut v[..n], |h| h.iter_mut().for_each(|x| *x += 1))
                .unwrap();
            v[..n].iter_mut().step_by(512).for_each(|x| *x += 1);
        }
        0
    });
    assert!(v[..n].iter().step_by(512).all(|&x| x == 2 * rounds as u64));
    run
}

fn median_run(mut runs: Vec<PolicyRun>) -> PolicyRun {
    runs.sort_by(|a, b| a.ms.partial_cmp(&b.ms).unwrap());
    runs[runs.len() / 2].clone()
}

fn main() -> Result<(), tieralloc::Error> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let svg_path = args
        .iter()
        .position(|a| a == "--svg")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "docs/oversubscription.svg".into());
    let (passes, rounds) = if quick { (1, 1) } else { (5, 5) };
    // Device 0 is the one the working sets oversubscribe; device 1 holds every working set.
    tieralloc::set_devices(&[("small", SMALL), ("large", 4 * SMALL)])?;
    println!(
        "Streaming kernel: buffers of {} MiB, each summed by a kernel in turn, {passes} passes; \
         device 0 holds {} MiB. \"fits\": the same work on device 1 ({} MiB), same policy. \
         Median of {rounds} runs.\n",
        EACH / MIB,
        SMALL / MIB,
        4 * SMALL / MIB,
    );
    println!("| working set | policy | time ms | fits ms | slowdown | to device | to host | evictions | device faults | failed launches |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut curve: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for (name, set) in POLICIES {
        set();
        let mut points = Vec::new();
        for r in RATIOS {
            let buffers = (r * (SMALL / EACH) as f64).round() as usize;
            let fits = median_run(
                (0..rounds)
                    .map(|_| scan_on(1, buffers, EACH, passes))
                    .collect(),
            );
            let over = median_run(
                (0..rounds)
                    .map(|_| scan_on(0, buffers, EACH, passes))
                    .collect(),
            );
            let slowdown = over.ms / fits.ms;
            println!(
                "| {r}× ({} MiB) | {name} | {:.1} | {:.1} | {} | {} MiB | {} MiB | {} | {} | {} |",
                buffers * EACH / MIB,
                over.ms,
                fits.ms,
                if over.failed_launches > 0 {
                    "-".to_string()
                } else {
                    format!("{slowdown:.2}×")
                },
                over.to_device >> 20,
                over.to_host >> 20,
                over.evictions,
                over.device_faults,
                over.failed_launches
            );
            if over.failed_launches == 0 {
                points.push((r, slowdown));
            }
        }
        curve.push((name, points));
    }
    if let Err(e) = std::fs::write(&svg_path, svg(&curve)) {
        println!("\n(could not write {svg_path}: {e})");
    } else {
        println!("\nslowdown curve written to {svg_path}");
    }

    println!(
        "\nPing-pong over a hot set: a kernel on device 0 updates the first 4 MiB of a 32 MiB \
         buffer, then the CPU updates them, 40 rounds. Median of {rounds} runs.\n"
    );
    println!(
        "| thrash guard | time ms | to device | to host | CPU faults | device faults | guards |"
    );
    println!("|---|---|---|---|---|---|---|");
    let guards: [(&str, Setter); 3] = [
        ("none (evict)", || tieralloc::set_policy(Evict)),
        ("adaptive: 3 in 1 s, 500 ms", || {
            tieralloc::set_policy(Adaptive::default())
        }),
        ("nvidia-like: 3 in 1 ms, 150 ms", || {
            tieralloc::set_policy(NvidiaLike)
        }),
    ];
    for (name, set) in guards {
        set();
        let r = median_run(
            (0..rounds)
                .map(|_| hot_set_ping_pong(4 * MIB, 40))
                .collect(),
        );
        println!(
            "| {name} | {:.1} | {} MiB | {} MiB | {} | {} | {} |",
            r.ms,
            r.to_device >> 20,
            r.to_host >> 20,
            r.cpu_faults,
            r.device_faults,
            r.guards
        );
    }
    println!("\nfault backend: {}", tieralloc::stats().fault_backend);
    Ok(())
}

/// A small line plot of slowdown against working set / capacity, one line per policy.
fn svg(curve: &[(&str, Vec<(f64, f64)>)]) -> String {
    let (w, h, left, bottom, top, right) = (560.0, 320.0, 60.0, 40.0, 20.0, 170.0);
    let max_y = curve
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1.0f64, f64::max)
        .ceil();
    let x_of = |r: f64| left + (r - 1.0) / 2.0 * (w - left - right);
    let y_of = |s: f64| h - bottom - (s - 1.0) / (max_y - 1.0).max(0.5) * (h - bottom - top);
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n"
    );
    out += &format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for r in [1.0, 1.25, 1.5, 2.0, 3.0] {
        out += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{r}×</text>\n",
            x_of(r),
            h - bottom + 16.0
        );
    }
    let steps = (max_y - 1.0).max(1.0) as usize;
    for k in 0..=steps {
        let s = 1.0 + k as f64 * (max_y - 1.0) / steps as f64;
        out += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{s:.0}×</text>\n",
            left - 6.0,
            y_of(s) + 4.0
        );
    }
    out += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">working set / device capacity</text>\n\
         <text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">\
         slowdown vs fitting</text>\n",
        (left + w - right) / 2.0,
        h - 6.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    for (i, (name, points)) in curve.iter().enumerate() {
        let c = colours[i % colours.len()];
        let path: Vec<String> = std::iter::once((1.0, 1.0))
            .chain(points.iter().copied())
            .map(|(r, s)| format!("{:.1},{:.1}", x_of(r), y_of(s)))
            .collect();
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}{}</text>\n",
            path.join(" "),
            w - right + 10.0,
            top + 16.0 + 18.0 * i as f64,
            if points.is_empty() {
                " (launches fail)"
            } else {
                ""
            }
        );
    }
    out + "</svg>\n"
}
