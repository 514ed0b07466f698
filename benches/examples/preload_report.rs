//! Real programs under each allocator, preloaded: wall time and peak RSS of the programs of
//! `preload/tests/programs` (sqlite3, perl, gcc, git, a threaded C++ program, the malloc-family
//! checks) under the system allocator (glibc), mimalloc and jemalloc (each built as an
//! `LD_PRELOAD` library from its crate's sources: `benches/preload-peers`), and tieralloc
//! (`libtieralloc.so`), plain and under chaos migration at its default share.
//!
//! ```sh
//! cargo run --release -p tieralloc-bench --example preload_report     # ROUNDS=n (default 5)
//! ```
//!
//! It builds the three libraries first. Runs are interleaved (each round runs every allocator
//! once per program) and the median is printed; ratios are against mimalloc, in the same run.
//! A last table times malloc+free alone through the C ABI (`benches/c/malloc_loop.c`, built
//! with `cc`, preloaded the same way).

#[path = "../../preload/tests/common/mod.rs"]
mod programs;

use programs::{chaos_bytes, chaos_share_per_s, fresh_dir, run, Program, Ran};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The chaos interval of the report's chaos runs (the share is the default, 2%).
const CHAOS_INTERVAL: &str = "20ms";

struct Allocator {
    name: &'static str,
    env: Vec<(&'static str, String)>,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let libs = build_libraries(root);
    let lib = |name: &str| libs.join(name).to_string_lossy().into_owned();
    let allocators = [
        Allocator {
            name: "glibc",
            env: vec![],
        },
        Allocator {
            name: "mimalloc",
            env: vec![("LD_PRELOAD", lib("libmimalloc_preload.so"))],
        },
        Allocator {
            name: "jemalloc",
            env: vec![("LD_PRELOAD", lib("libjemalloc_preload.so"))],
        },
        Allocator {
            name: "tieralloc",
            env: vec![("LD_PRELOAD", lib("libtieralloc.so"))],
        },
        Allocator {
            name: "tieralloc+chaos",
            env: vec![
                ("LD_PRELOAD", lib("libtieralloc.so")),
                ("TIERALLOC_CHAOS", CHAOS_INTERVAL.into()),
                ("TIERALLOC_FAULT", "uffd".into()),
                ("TIERALLOC_STATS", "1".into()),
            ],
        },
    ];
    let sources = root.join("preload/tests/programs");
    let tmp = std::env::temp_dir().join("tieralloc-preload-report");
    let build = tmp.join("build");
    std::fs::create_dir_all(&build).unwrap();
    println!(
        "preload_report: {rounds} rounds, median wall time (ms) and peak RSS (MiB); \
         chaos every {CHAOS_INTERVAL}, default share\n"
    );
    println!(
        "| program | glibc | mimalloc | jemalloc | tieralloc | tieralloc / mimalloc | \
         RSS glibc | RSS mimalloc | RSS jemalloc | RSS tieralloc | RSS tieralloc / mimalloc | \
         chaos / tieralloc | chaos moved/s (share of peak RSS) | share of the heap per s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for name in programs::REAL_PROGRAMS {
        let p = Program {
            name,
            sources: &sources,
        };
        if !p.runs_here() {
            continue;
        }
        // The build directory is filled by a first, untimed run.
        let _ = run(p.command(&fresh_dir(&tmp, name), &build), LIMIT);
        let mut runs: Vec<Vec<Ran>> = allocators.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (a, out) in allocators.iter().zip(runs.iter_mut()) {
                let mut cmd = p.command(&fresh_dir(&tmp, name), &build);
                cmd.envs(a.env.iter().map(|(k, v)| (*k, v.as_str())));
                let r = run(cmd, LIMIT);
                assert!(
                    r.status.success(),
                    "{name} failed under {}: {}",
                    a.name,
                    r.stderr
                );
                out.push(r);
            }
        }
        let wall: Vec<f64> = runs
            .iter()
            .map(|r| median(r.iter().map(|x| x.wall.as_secs_f64() * 1e3)))
            .collect();
        let rss: Vec<f64> = runs
            .iter()
            .map(|r| median(r.iter().map(|x| x.max_rss_kib as f64 / 1024.0)))
            .collect();
        let chaos = &runs[4];
        let moved_per_s = median(
            chaos
                .iter()
                .map(|r| chaos_bytes(&r.stderr) as f64 / r.wall.as_secs_f64()),
        );
        let share = moved_per_s / (rss[4] * 1024.0 * 1024.0) * 100.0;
        // The issue's measure: the share of the live heap moved per second. Each process's
        // heap high-water mark stands for its live heap (live blocks and the free runs between
        // them, so the share is if anything understated), weighed by how long chaos ran in
        // it; peak RSS also counts code, libraries and stacks.
        let shares: Vec<f64> = chaos
            .iter()
            .filter_map(|r| chaos_share_per_s(&r.stderr))
            .collect();
        let heap_share = if shares.is_empty() {
            "-".into()
        } else {
            format!("{:.0}%", median(shares.into_iter()) * 100.0)
        };
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.1} | {:.1} | {:.1} | {:.1} | \
             {:.2}× | {:.2}× | {:.1} MiB/s ({share:.0}%) | {heap_share} |",
            wall[0],
            wall[1],
            wall[2],
            wall[3],
            wall[3] / wall[1],
            rss[0],
            rss[1],
            rss[2],
            rss[3],
            rss[3] / rss[1],
            wall[4] / wall[3],
            moved_per_s / (1024.0 * 1024.0),
        );
    }
    malloc_loop(root, &allocators[..4], rounds, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `benches/c/malloc_loop.c` under each allocator, preloaded: malloc+free through the C ABI,
/// the path every unmodified program takes, without the program around it.
fn malloc_loop(root: &Path, allocators: &[Allocator], rounds: usize, tmp: &Path) {
    let bin = tmp.join("malloc_loop");
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(root.join("benches/c/malloc_loop.c"))
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        println!("\nmalloc_loop skipped: no C compiler (cc)");
        return;
    }
    let mut figures: Vec<Vec<(f64, f64)>> = allocators.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (a, out) in allocators.iter().zip(figures.iter_mut()) {
            let o = Command::new(&bin)
                .envs(a.env.iter().map(|(k, v)| (*k, v.as_str())))
                .output()
                .unwrap();
            assert!(o.status.success(), "malloc_loop failed under {}", a.name);
            let s = String::from_utf8_lossy(&o.stdout);
            let mut f = s.split_whitespace().map(|x| x.parse::<f64>().unwrap());
            out.push((f.next().unwrap(), f.next().unwrap()));
        }
    }
    println!("\nmalloc+free through the C ABI (benches/c/malloc_loop.c, preloaded), median ns per pair\n");
    println!("| loop | glibc | mimalloc | jemalloc | tieralloc | tieralloc / mimalloc | tieralloc / glibc |");
    println!("|---|---|---|---|---|---|---|");
    for (name, pick) in [
        (
            "pairs, 16-128 B",
            (|f: &(f64, f64)| f.0) as fn(&(f64, f64)) -> f64,
        ),
        ("batch of 10,000, 16-128 B, scrambled free", |f| f.1),
    ] {
        let m: Vec<f64> = figures.iter().map(|v| median(v.iter().map(pick))).collect();
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× | {:.2}× |",
            m[0],
            m[1],
            m[2],
            m[3],
            m[3] / m[1],
            m[3] / m[0]
        );
    }
}

const LIMIT: Duration = Duration::from_secs(600);

/// Builds `libtieralloc.so` and the two peers; returns the directory they are in.
fn build_libraries(root: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-q"])
        .args(["-p", "tieralloc-preload"])
        .args(["-p", "preload-mimalloc", "-p", "preload-jemalloc"])
        .status()
        .expect("cargo");
    assert!(status.success(), "building the preload libraries failed");
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    target.join("release")
}

fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
