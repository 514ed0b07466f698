//! Prints the migration and fault-back table: for each fault backend, measured in this run,
//! the fault-back cost of a 4 KiB page against the bare SIGSEGV+mprotect floor, sequential CPU
//! read of 256 MiB of device-resident data and explicit bulk migration both ways against
//! memcpy, and a million pages of alternating residency.
//!
//! `cargo run --release --example fault_report` (about a minute). The backend is fixed per
//! process, so the report runs itself once per backend (`fault_report child`).

use std::process::Command;
use tieralloc::{Tier, TierAlloc};

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

#[path = "../benches/common/fault_workloads.rs"]
mod fault_workloads;
use fault_workloads::*;

const BACKENDS: [&str; 3] = ["uffd", "uffd-fast", "signal"];
const MIB: usize = 1 << 20;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One backend's figures, printed as `key value` lines by the child.
fn child() {
    let fault_ns = median(
        (0..ROUNDS)
            .map(|_| fault_back_per_page(&mut filled_pages(4000)))
            .collect(),
    );
    println!("fault_ns {fault_ns}");
    let words: Vec<u64> = (0..(256 * MIB / 8) as u64).collect();
    let seq = median((0..ROUNDS).map(|_| sequential_read(&words)).collect());
    println!("seq_read {seq}");
    drop(words);
    let buf = filled_pages(256 * MIB / PAGE);
    let (to_dev, to_host): (Vec<f64>, Vec<f64>) = (0..ROUNDS).map(|_| bulk_migrate(&buf)).unzip();
    println!("to_device {}", median(to_dev));
    println!("to_host {}", median(to_host));
    drop(buf);
    alternating_million();
    println!("backend {}", tieralloc::stats().fault_backend);
}

/// A million pages (4 GiB) with every other page on the device, each moved by its own call;
/// then every page is read back and checked.
fn alternating_million() {
    const PAGES: usize = 1 << 20;
    let buf = filled_pages(PAGES);
    let base = buf.as_ptr() as usize;
    let t = std::time::Instant::now();
    for p in (0..PAGES).step_by(2) {
        if let Err(e) = tieralloc::migrate((base + p * PAGE) as *const u8, PAGE, Tier::Device(0)) {
            println!("alternating refused after {} device pages: {e}", p / 2);
            return;
        }
    }
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count();
    let ok = buf
        .chunks(PAGE)
        .enumerate()
        .all(|(i, page)| page[0] == i as u8 && page[PAGE - 1] == 1);
    println!(
        "alternating {} pages on the device, {maps} kernel mappings, data {} ({:.1} s)",
        PAGES / 2,
        if ok { "intact" } else { "CORRUPT" },
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("child") {
        return child();
    }
    let floor = median((0..ROUNDS).map(|_| floor_sigsegv_mprotect(4000)).collect());
    let src = filled_pages(256 * MIB / PAGE);
    let mut dst = filled_pages(256 * MIB / PAGE);
    let memcpy = median(
        (0..ROUNDS)
            .map(|_| memcpy_bandwidth(&src, &mut dst))
            .collect(),
    );
    drop((src, dst));
    let mut cols = Vec::new();
    for b in BACKENDS {
        let out = Command::new(std::env::current_exe().unwrap())
            .arg("child")
            .env("TIERALLOC_FAULT", b)
            .env("TIERALLOC_DEVICES", "dev0=6GiB")
            .output()
            .expect("run the report's child");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{b} child failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cols.push(text);
    }
    let get = |text: &str, key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(f64::NAN)
    };
    println!("tieralloc fault report: median of {ROUNDS} rounds, measured in this run\n");
    println!(
        "bare floor (SIGSEGV + mprotect RW round trip, private page): {:.2} us",
        floor / 1e3
    );
    println!("memcpy 256 MiB: {:.1} GB/s\n", memcpy / 1e9);
    println!(
        "| {:<34} | {:>14} | {:>14} | {:>14} | {:<22} |",
        "measure", BACKENDS[0], BACKENDS[1], BACKENDS[2], "target"
    );
    println!(
        "|{:-<36}|{:->16}|{:->16}|{:->16}|{:-<24}|",
        "", "", "", "", ""
    );
    let row = |name: &str, target: &str, f: &dyn Fn(&str) -> String| {
        let v: Vec<String> = cols.iter().map(|c| f(c)).collect();
        println!(
            "| {:<34} | {:>14} | {:>14} | {:>14} | {:<22} |",
            name, v[0], v[1], v[2], target
        );
    };
    row("fault-back, 4 KiB page", "", &|c| {
        format!("{:.2} us", get(c, "fault_ns") / 1e3)
    });
    row("  vs bare floor", "fast ≤1.3×, uffd ≤2.5×", &|c| {
        format!("{:.2}×", get(c, "fault_ns") / floor)
    });
    row("sequential CPU read, 256 MiB", "", &|c| {
        format!("{:.1} GB/s", get(c, "seq_read") / 1e9)
    });
    row("  vs memcpy", "≥ 50%", &|c| {
        format!("{:.0}%", get(c, "seq_read") / memcpy * 100.0)
    });
    row("migrate to device, 256 MiB", "", &|c| {
        format!("{:.1} GB/s", get(c, "to_device") / 1e9)
    });
    row("  vs memcpy", "≥ 70%", &|c| {
        format!("{:.0}%", get(c, "to_device") / memcpy * 100.0)
    });
    row("migrate to host, 256 MiB", "", &|c| {
        format!("{:.1} GB/s", get(c, "to_host") / 1e9)
    });
    row("  vs memcpy", "≥ 70%", &|c| {
        format!("{:.0}%", get(c, "to_host") / memcpy * 100.0)
    });
    println!();
    for (b, c) in BACKENDS.iter().zip(&cols) {
        let line = c
            .lines()
            .find_map(|l| l.strip_prefix("alternating "))
            .unwrap_or("no result");
        println!("1M pages, alternating residency, {b:<9}: {line}");
    }
}
