//! Prints the migration and fault-back table: for each fault backend, measured in this run,
//! the fault-back cost of a 4 KiB page against the bare SIGSEGV+mprotect floor, sequential CPU
//! read of 256 MiB of device-resident data and explicit bulk migration both ways against
//! memcpy, and a million pages of alternating residency. It also measures the kernel's
//! userfaultfd mechanisms bare (`raw_uffd.rs`), so tieralloc's own share of a fault-back can be
//! told from what the kernel and the VM take.
//!
//! `cargo run --release -p tieralloc-bench --example fault_report` (about a minute). The backend is fixed per
//! process, so the report runs itself once per backend (`fault_report child`).
//! `-- --quick` (one round, 32 MiB buffers, 64k alternating pages) checks that every part runs;
//! CI uses it. Its figures are not the ones to quote.

use std::process::Command;
use tieralloc::{Tier, TierAlloc};

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

#[path = "../common/fault_workloads.rs"]
mod fault_workloads;
use fault_workloads::*;
#[path = "../common/raw_uffd.rs"]
mod raw_uffd;

const BACKENDS: [&str; 3] = ["uffd", "uffd-fast", "signal"];
const MIB: usize = 1 << 20;

/// Rounds per figure (the median is printed), buffer size and alternating pages.
#[derive(Clone, Copy)]
struct Size {
    rounds: usize,
    mib: usize,
    alternating: usize,
}

const FULL: Size = Size {
    rounds: 5,
    mib: 256,
    alternating: 1 << 20,
};
const QUICK: Size = Size {
    rounds: 1,
    mib: 32,
    alternating: 1 << 16,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One backend's figures, printed as `key value` lines by the child.
fn child(size: Size) {
    // Each round measures the kernel's bare mechanism for this backend, then tieralloc's
    // fault-back, in this process: both see the same machine and the same process (its
    // threads, its mappings). The bare SIGBUS measurement replaces tieralloc's handler for its
    // duration; nothing else touches device-resident memory meanwhile.
    let backend = std::env::var("TIERALLOC_FAULT").unwrap_or_default();
    for access in [Access::Write, Access::Read] {
        let (mut fault, mut mech, mut placed) = (vec![], vec![], vec![]);
        for _ in 0..size.rounds {
            let bare = match backend.as_str() {
                "uffd-fast" => raw_uffd::raw_sigbus_move(2000, access),
                "uffd" => raw_uffd::raw_handler_thread_move(2000, true, access),
                _ => None,
            };
            mech.extend(bare);
            if backend == "uffd" && access == Access::Write {
                placed.extend(raw_uffd::raw_handler_thread_move(2000, false, access));
            }
            fault.push(fault_back_per_page(&mut filled_pages(4000), access));
        }
        let a = access.name();
        println!("fault_{a}_ns {}", median(fault));
        if !mech.is_empty() {
            println!("mech_{a}_ns {}", median(mech));
        }
        if !placed.is_empty() {
            println!("mech_placed_ns {}", median(placed));
        }
    }
    spaced_faults(size);
    thread_scaling(&backend, size);
    let words: Vec<u64> = (0..(size.mib * MIB / 8) as u64).collect();
    let seq = median((0..size.rounds).map(|_| sequential_read(&words)).collect());
    println!("seq_read {seq}");
    drop(words);
    let buf = filled_pages(size.mib * MIB / PAGE);
    let (to_dev, to_host): (Vec<f64>, Vec<f64>) =
        (0..size.rounds).map(|_| bulk_migrate(&buf)).unzip();
    println!("to_device {}", median(to_dev));
    println!("to_host {}", median(to_host));
    drop(buf);
    alternating(size.alternating);
    println!("backend {}", tieralloc::stats().fault_backend);
}

/// Isolated and burst fault-backs of written pages (`fault_back_timed`), and what the
/// transparent handlers spent polling meanwhile, per fault they served; printed as
/// `isolated_ns`, `burst_ns`, `poll_isolated_ns`, `poll_burst_ns` and `poll_hits_burst`.
fn spaced_faults(size: Size) {
    let polled = || {
        let s = tieralloc::stats();
        (s.handler_poll_ns, s.handler_faults, s.handler_poll_hits)
    };
    for (name, spacing, pages) in [
        ("isolated", Spacing::Isolated, 400),
        ("burst", Spacing::Burst, 4000),
    ] {
        let (ns0, faults0, hits0) = polled();
        let cost = median(
            (0..size.rounds)
                .map(|_| fault_back_timed(&mut filled_pages(pages), Access::Write, spacing))
                .collect(),
        );
        let (ns1, faults1, hits1) = polled();
        println!("{name}_ns {cost}");
        if faults1 > faults0 {
            println!(
                "poll_{name}_ns {}",
                (ns1 - ns0) as f64 / (faults1 - faults0) as f64
            );
            println!(
                "poll_hits_{name} {}",
                (hits1 - hits0) as f64 / (faults1 - faults0) as f64
            );
        }
    }
}

/// Thread counts of the scaling table.
const THREADS: [usize; 4] = [1, 2, 4, 8];

/// Faults per second with 1, 2, 4 and 8 threads touching random device-resident pages of a
/// `size.mib` MiB buffer (`fault_throughput`), and the backend's bare mechanism with as many
/// threads, round by round; printed as `tput_<threads>` and `bare_<threads>` lines.
fn thread_scaling(backend: &str, size: Size) {
    let mut buf = filled_pages(size.mib * MIB / PAGE);
    for threads in THREADS {
        let (mut ours, mut bare) = (vec![], vec![]);
        for _ in 0..size.rounds.max(3) {
            bare.extend(match backend {
                "uffd-fast" => {
                    raw_uffd::raw_sigbus_move_threads(threads, 4000 / threads, Access::Write)
                }
                "uffd" => {
                    raw_uffd::raw_handler_threads_move(threads, 4000 / threads, Access::Write)
                }
                _ => Some(floor_sigsegv_mprotect_threads(threads, 4000 / threads)),
            });
            ours.push(fault_throughput(&mut buf, threads, Access::Write));
        }
        println!("tput_{threads} {}", median(ours));
        println!("bare_{threads} {}", median(bare));
    }
}

/// `pages` pages (a million: 4 GiB) with every other page on the device, each moved by its
/// own call; then every page is read back and checked.
fn alternating(pages: usize) {
    let buf = filled_pages(pages);
    let base = buf.as_ptr() as usize;
    let t = std::time::Instant::now();
    for p in (0..pages).step_by(2) {
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
        pages / 2,
        if ok { "intact" } else { "CORRUPT" },
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let size = if quick { QUICK } else { FULL };
    if args.get(1).map(String::as_str) == Some("child") {
        return child(size);
    }
    let floor = median(
        (0..size.rounds)
            .map(|_| floor_sigsegv_mprotect(4000))
            .collect(),
    );
    let src = filled_pages(size.mib * MIB / PAGE);
    let mut dst = filled_pages(size.mib * MIB / PAGE);
    let memcpy = median(
        (0..size.rounds)
            .map(|_| memcpy_bandwidth(&src, &mut dst))
            .collect(),
    );
    drop((src, dst));
    let mut cols = Vec::new();
    for b in BACKENDS {
        let out = Command::new(std::env::current_exe().unwrap())
            .arg("child")
            .args(quick.then_some("--quick"))
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
    let rounds = size.rounds;
    let mib = size.mib;
    println!("tieralloc fault report: median of {rounds} rounds, measured in this run\n");
    println!(
        "bare floor (SIGSEGV + mprotect RW round trip, private page): {:.2} us",
        floor / 1e3
    );
    println!("memcpy {mib} MiB: {:.1} GB/s\n", memcpy / 1e9);
    println!(
        "kernel mechanisms alone, no tieralloc code (one 4 KiB page moved back from a pool \
         mapping; measured in each backend's process, round by round with its fault-backs):"
    );
    let mech = |name: &str, col: usize, key: &str| {
        let ns = get(&cols[col], key);
        println!(
            "  {name:<67} {:>7.2} us {:>6.2}× floor",
            ns / 1e3,
            ns / floor
        )
    };
    for a in ["write", "read"] {
        let key = format!("mech_{a}_ns");
        mech(
            &format!("uffd-fast: SIGBUS + UFFDIO_MOVE in the faulting thread, {a}"),
            1,
            &key,
        );
        mech(
            &format!("uffd: handler thread + UFFDIO_MOVE, both pinned to one CPU, {a}"),
            0,
            &key,
        );
    }
    mech(
        "uffd: handler thread + UFFDIO_MOVE, placed by the scheduler, write",
        0,
        "mech_placed_ns",
    );
    println!();
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
    let vs_mech = |fault: &str, mech: &str| {
        let (fault, mech) = (fault.to_string(), mech.to_string());
        move |c: &str| {
            let ratio = get(c, &fault) / get(c, &mech);
            if ratio.is_nan() {
                "-".into()
            } else {
                format!("{ratio:.2}×")
            }
        }
    };
    for a in ["write", "read"] {
        let (fault, mech) = (format!("fault_{a}_ns"), format!("mech_{a}_ns"));
        row(
            &format!("fault-back, 4 KiB page, CPU {a}"),
            "back to back",
            &|c| format!("{:.2} us", get(c, &fault) / 1e3),
        );
        row("  vs bare floor", "", &|c| {
            format!("{:.2}×", get(c, &fault) / floor)
        });
        row(
            "  vs kernel mechanism alone",
            "fast ≤1.1×, uffd ≤1.5×",
            &vs_mech(&fault, &mech),
        );
    }
    for (name, label) in [
        ("isolated", "isolated (2 ms apart)"),
        ("burst", "burst (1-10 µs apart)"),
    ] {
        let key = format!("{name}_ns");
        row(&format!("fault-back, {label}"), "CPU write", &|c| {
            format!("{:.2} us", get(c, &key) / 1e3)
        });
        row(
            "  vs kernel mechanism alone",
            "fast ≤1.1×, uffd ≤1.5×",
            &vs_mech(&key, "mech_write_ns"),
        );
        let (poll, hits) = (format!("poll_{name}_ns"), format!("poll_hits_{name}"));
        row("  handler CPU polling per fault", "uffd only", &|c| {
            let ns = get(c, &poll);
            if ns.is_nan() {
                "-".into()
            } else {
                format!("{:.1} us", ns / 1e3)
            }
        });
        row("  faults found by polling", "", &|c| {
            let h = get(c, &hits);
            if h.is_nan() {
                "-".into()
            } else {
                format!("{:.0}%", h * 100.0)
            }
        });
    }
    row(&format!("sequential CPU read, {mib} MiB"), "", &|c| {
        format!("{:.1} GB/s", get(c, "seq_read") / 1e9)
    });
    row("  vs memcpy", "≥ 50% (signal ≥ 30%)", &|c| {
        format!("{:.0}%", get(c, "seq_read") / memcpy * 100.0)
    });
    row(&format!("migrate to device, {mib} MiB"), "", &|c| {
        format!("{:.1} GB/s", get(c, "to_device") / 1e9)
    });
    row("  vs memcpy", "≥ 70% (signal ≥ 50%)", &|c| {
        format!("{:.0}%", get(c, "to_device") / memcpy * 100.0)
    });
    row(&format!("migrate to host, {mib} MiB"), "", &|c| {
        format!("{:.1} GB/s", get(c, "to_host") / 1e9)
    });
    row("  vs memcpy", "≥ 70% (signal ≥ 50%)", &|c| {
        format!("{:.0}%", get(c, "to_host") / memcpy * 100.0)
    });
    println!();
    println!(
        "Fault throughput, thousands of faults per second: {mib} MiB on device 0, each thread \
         writes one random page in each of its own 64 KiB blocks (one fault per block, which \
         brings the block back), median of {} rounds. \"bare\": the backend's kernel mechanism \
         with as many threads (uffd-fast: SIGBUS + UFFDIO_MOVE of one page; uffd: one handler \
         thread per CPU + UFFDIO_MOVE; signal: mprotect NONE, write, SIGSEGV, mprotect RW).",
        rounds.max(3)
    );
    println!(
        "Targets: uffd-fast and signal, 2 threads ≥ 1.6× one thread; every backend, 8 \
         threads ≥ 90% of 2 threads.\n"
    );
    println!(
        "| {:<9} | {:>7} | {:>8} | {:>8} | {:>8} | {:>8} | {:>7} | {:>9} |",
        "backend", "threads", "faults/s", "vs 1 thr", "vs 2 thr", "bare", "bare/1", "ours/bare"
    );
    println!(
        "|{:-<11}|{:->9}|{:->10}|{:->10}|{:->10}|{:->10}|{:->9}|{:->11}|",
        "", "", "", "", "", "", "", ""
    );
    for (b, c) in BACKENDS.iter().zip(&cols) {
        let one = get(c, "tput_1");
        let two = get(c, "tput_2");
        let bare_one = get(c, "bare_1");
        for t in THREADS {
            let (ours, bare) = (get(c, &format!("tput_{t}")), get(c, &format!("bare_{t}")));
            println!(
                "| {:<9} | {:>7} | {:>7.0}k | {:>7.2}× | {:>7.2}× | {:>7.0}k | {:>6.2}× | {:>8.2}× |",
                b,
                t,
                ours / 1e3,
                ours / one,
                ours / two,
                bare / 1e3,
                bare / bare_one,
                ours / bare
            );
        }
    }
    println!();
    for (b, c) in BACKENDS.iter().zip(&cols) {
        let line = c
            .lines()
            .find_map(|l| l.strip_prefix("alternating "))
            .unwrap_or("no result");
        let pages = size.alternating;
        println!("{pages} pages, alternating residency, {b:<9}: {line}");
    }
}
