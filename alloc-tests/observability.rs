//! Configuration and observability, seen from outside: every `TIERALLOC_*` variable is read
//! once, a bad value (or a misspelt name) is reported on stderr and the default kept; good
//! values take effect; `TIERALLOC_STATS=1` prints the table at exit; `TIERALLOC_TRACE` writes
//! a trace that `trace::timeline_svg` draws; `residency_map` shows where pages live and how
//! hot they are.
//!
//! Each configuration runs in a child process (`ALLOC_TEST_CONFIG_CHILD` names the body), since
//! the variables are read once per process.

use std::process::Command;
use tieralloc::{PageState, Tier, TierAlloc};

mod common;
use common::*;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

/// Runs the body `name` in a child with `vars`; returns (success, stderr).
fn child(name: &str, vars: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_body", "--nocapture", "--test-threads=1"])
        .env("ALLOC_TEST_CONFIG_CHILD", name);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stdout.contains("1 passed"),
        "child {name} did not run its body:\n{stdout}\n{stderr}"
    );
    (out.status.success(), stderr)
}

/// The bodies run by the children (a no-op in the parent process).
#[test]
fn child_body() {
    let Ok(name) = std::env::var("ALLOC_TEST_CONFIG_CHILD") else {
        return;
    };
    match name.as_str() {
        "work" => {
            // Some of everything: migrate, fault back, device-tier allocation, free.
            let v = pattern(1, MIB);
            let (p, n) = bytes_of(&v);
            tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
            check(&v, 1);
            let d = tieralloc::with_tier(Tier::Device(0), || vec![0u8; 4 * MIB]);
            tieralloc::migrate(p, n, Tier::Device(0)).unwrap();
            drop(v);
            drop(d);
            println!("policy={} backend={}", tieralloc::policy_name(), backend());
        }
        "report" => {
            let v = pattern(2, 1024);
            tieralloc::migrate(v.as_ptr().cast(), 8192, Tier::Device(0)).unwrap();
            eprintln!("policy={}", tieralloc::policy_name());
            eprintln!("devices={}", tieralloc::devices().unwrap().len());
            eprintln!("link0={:?}", tieralloc::link(0).unwrap());
            eprintln!("backend={}", backend());
            eprintln!("arena={}", tieralloc::stats().arena_requested);
        }
        other => panic!("unknown child body {other}"),
    }
}

#[test]
fn bad_values_are_reported_once_and_the_defaults_kept() {
    const BAD: [(&str, &str); 6] = [
        ("TIERALLOC_POLICY", "lru"),
        ("TIERALLOC_LINK", "warp9"),
        ("TIERALLOC_FAULT", "fastest"),
        ("TIERALLOC_DEVICES", "lots"),
        ("TIERALLOC_ARENA", "huge"),
        ("TIERALLOC_STATS", "maybe"),
    ];
    let mut vars = BAD.to_vec();
    vars.push(("TIERALLOC_DEVICE", "2x1GiB")); // misspelt
    let (ok, err) = child("report", &vars);
    assert!(ok, "the program ran on defaults:\n{err}");
    for (name, value) in BAD {
        let line = format!("tieralloc: ignoring {name}={value}:");
        assert_eq!(err.matches(&line).count(), 1, "{line} once in:\n{err}");
    }
    assert_eq!(
        err.matches("unknown variable TIERALLOC_DEVICE ").count(),
        1,
        "{err}"
    );
    assert!(err.contains("policy=adaptive"), "{err}");
    assert!(err.contains("devices=1"), "{err}");
    assert!(
        err.contains("backend=uffd"),
        "auto picks uffd as root:\n{err}"
    );
    assert!(err.contains(&format!("arena={}", 64usize << 30)), "{err}");
    assert!(err.contains("link0=(Link"), "{err}");
    assert!(!err.contains("tieralloc stats"), "stats stay off:\n{err}");
}

#[test]
fn good_values_take_effect() {
    let (ok, err) = child(
        "report",
        &[
            ("TIERALLOC_POLICY", "Strict"),
            ("TIERALLOC_LINK", "0=pcie3x16"),
            ("TIERALLOC_FAULT", "signal"),
            ("TIERALLOC_DEVICES", "a=64MiB,b=32MiB,c=16MiB"),
            ("TIERALLOC_ARENA", "8GiB"),
        ],
    );
    assert!(ok, "{err}");
    assert!(!err.contains("tieralloc: ignoring"), "{err}");
    assert!(err.contains("policy=strict"), "{err}");
    assert!(err.contains("devices=3"), "{err}");
    assert!(err.contains("backend=signal"), "{err}");
    assert!(err.contains(&format!("arena={}", 8usize << 30)), "{err}");
    let want = format!("link0=({:?}, true)", tieralloc::Link::PCIE3_X16);
    assert!(err.contains(&want), "{want} in:\n{err}");
}

#[test]
fn stats_at_exit_and_a_trace_that_draws() {
    let dir = std::env::temp_dir().join(format!("tieralloc-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.csv");
    let (ok, err) = child(
        "work",
        &[
            ("TIERALLOC_STATS", "1"),
            ("TIERALLOC_TRACE", path.to_str().unwrap()),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(err.matches("tieralloc stats").count(), 1, "{err}");
    assert!(err.contains("cpu faults"), "{err}");
    let csv = std::fs::read_to_string(&path).unwrap();
    assert!(
        csv.starts_with("time_us,addr,bytes,from,to,cause\n"),
        "{csv}"
    );
    for cause in [
        ",host,dev0,migrate",
        ",dev0,host,fault",
        ",none,dev0,place",
        ",dev0,none,free",
    ] {
        assert!(csv.contains(cause), "{cause} in:\n{csv}");
    }
    // Times only go up (one writer here), and each line parses.
    let times: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{csv}");
    let svg = tieralloc::trace::timeline_svg(&csv).unwrap();
    assert!(svg.contains("device 0") && svg.contains(">host<"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_trace_path_is_reported() {
    let (ok, err) = child("work", &[("TIERALLOC_TRACE", "/nonexistent-dir/trace.csv")]);
    assert!(ok, "{err}");
    assert!(
        err.contains("ignoring TIERALLOC_TRACE=/nonexistent-dir/trace.csv: cannot create"),
        "{err}"
    );
}

#[test]
fn residency_map_shows_tiers_and_heat() {
    let v = pattern(3, 64 * 1024); // 512 KiB = 128 pages
    let (p, n) = bytes_of(&v);
    let half = n / 2;
    tieralloc::migrate(v[..half / 8].as_ptr().cast(), half, Tier::Device(0)).unwrap();
    // A kernel reads the first 64 KiB block 3 times: it becomes the hottest.
    let dev = tieralloc::device(0).unwrap();
    for _ in 0..3 {
        dev.run(&v[..8192], |x| assert_eq!(x.len(), 8192)).unwrap();
    }
    let map = tieralloc::residency_map(p, n).unwrap();
    assert_eq!(map.pages_per_cell(), 1);
    let cells = map.cells();
    assert_eq!(
        cells.len(),
        n.div_ceil(PAGE) + usize::from(p as usize % PAGE != 0)
    );
    let on0 = cells
        .iter()
        .filter(|c| c.state == PageState::Device(0))
        .count();
    assert!((63..=65).contains(&on0), "{on0} device cells");
    assert!(cells[cells.len() - 1].state == PageState::Host);
    assert!(cells[0].heat > 0.99, "the kernel's block is the hottest");
    assert!(
        cells[cells.len() - 1].heat < 0.01,
        "untouched host block is cold"
    );
    let text = map.text();
    assert!(text.contains(&"0".repeat(60)), "{text}");
    assert!(text.contains(&"h".repeat(60)), "{text}");
    assert!(
        text.contains('@'),
        "hot cells use the top of the ramp:\n{text}"
    );
    let svg = map.svg();
    assert!(svg.contains("device 0") && svg.contains(">host<"));
    // Background, legend (2), and at least one bar per row of 64 cells.
    let rects = svg.matches("<rect").count();
    assert!(
        rects >= 3 + cells.len() / 64 && rects <= 3 + cells.len(),
        "{rects}"
    );
    check(&v, 3);
}
