//! Real programs under `libtieralloc.so`: each runs once under the system allocator and once
//! with the library preloaded, in fresh directories, and must print the same output and exit
//! the same way. The preloaded run prints tieralloc's stats at exit (`TIERALLOC_STATS=1`),
//! which shows the library really served it.
//!
//! Each program also runs under chaos migration (`TIERALLOC_CHAOS`, with the transparent `uffd`
//! backend under which system calls on device memory work): a share of its live heap moves to
//! devices every few milliseconds and comes back when touched, and its output must still be
//! the same.
//!
//! A program the machine lacks is skipped with a message on stderr (`.ci/run` installs them),
//! and so are the chaos runs where the `uffd` backend is refused (not root).
//! Every run has a watchdog: a hang fails the test instead of stalling it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The library under test: cargo builds it next to this test binary (`target/<profile>/deps`).
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let so = exe.parent().unwrap().join("libtieralloc.so");
    assert!(so.exists(), "{} was not built", so.display());
    so
}

/// The test programs' sources.
fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// A fresh, empty directory for one run.
fn fresh_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "programs-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// True if `program` runs here; otherwise says on stderr that `test` is skipped.
fn have(program: &str, test: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED {test}: `{program}` is not installed on this machine");
    }
    ok
}

/// Runs `cmd` to completion with `stdin` fed from a file, killing it after `limit`.
fn run_with_watchdog(mut cmd: Command, stdin: Option<&Path>, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(match stdin {
        Some(f) => Stdio::from(std::fs::File::open(f).unwrap()),
        None => Stdio::null(),
    });
    let what = format!("{cmd:?}");
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let start = Instant::now();
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the child's pid; it has not been reaped (its waiter is blocked).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} hung: killed after {:?}", start.elapsed());
        }
    }
}

/// How a program is run: a command built in a given directory, with optional stdin.
struct Program<'a> {
    name: &'a str,
    command: &'a dyn Fn(&Path) -> Command,
    stdin: Option<PathBuf>,
}

/// Runs `p` plain and preloaded (with `env` added to the preloaded run) and checks that both
/// print the same and exit the same way, and that tieralloc served the preloaded one.
/// Returns the preloaded run's stderr.
fn same_under_tieralloc(p: &Program, env: &[(&str, &str)]) -> String {
    let limit = Duration::from_secs(300);
    let plain = run_with_watchdog((p.command)(&fresh_dir(p.name)), p.stdin.as_deref(), limit);
    assert!(
        plain.status.success(),
        "{}: fails even without tieralloc: {}",
        p.name,
        String::from_utf8_lossy(&plain.stderr)
    );
    let mut cmd = (p.command)(&fresh_dir(p.name));
    cmd.env("LD_PRELOAD", library()).env("TIERALLOC_STATS", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let tier = run_with_watchdog(cmd, p.stdin.as_deref(), limit);
    let err = String::from_utf8_lossy(&tier.stderr).into_owned();
    assert_eq!(
        tier.status.code(),
        plain.status.code(),
        "{}: exit status differs under tieralloc ({:?}); stderr:\n{err}",
        p.name,
        tier.status
    );
    assert!(
        tier.stdout == plain.stdout,
        "{}: output differs under tieralloc.\n--- system allocator:\n{}\n--- tieralloc:\n{}",
        p.name,
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&tier.stdout)
    );
    assert!(
        err.contains("tieralloc stats"),
        "{}: the library did not serve the run (no stats at exit); stderr:\n{err}",
        p.name
    );
    err
}

/// Chaos migration for the tests: every 5 ms, 10% of the live heap.
const CHAOS: &[(&str, &str)] = &[("TIERALLOC_CHAOS", "5ms,10%"), ("TIERALLOC_FAULT", "uffd")];

/// Runs `p` plain, preloaded, and preloaded under chaos migration: the same output each time,
/// and the chaos run moved pages (at least one process of it printed a chaos line).
fn same_plain_and_under_chaos(p: &Program) {
    same_under_tieralloc(p, &[]);
    let err = same_under_tieralloc(p, CHAOS);
    if err.contains("chaos not started") {
        eprintln!(
            "SKIPPED {} under chaos: the uffd backend is not available here",
            p.name
        );
        return;
    }
    assert!(
        err.lines().any(|l| l.trim_start().starts_with("chaos ")),
        "{}: chaos migration moved nothing; stderr:\n{err}",
        p.name
    );
}

/// Compiles `source` with `compiler` (under the system allocator) into `dir`; the binary.
fn compile(compiler: &str, source: &str, flags: &[&str], dir: &Path) -> PathBuf {
    let out = dir.join(source.split('.').next().unwrap());
    let status = Command::new(compiler)
        .args(["-O2", "-pthread", "-Wno-alloc-size-larger-than", "-o"])
        .arg(&out)
        .arg(sources().join(source))
        .args(flags)
        .status()
        .unwrap();
    assert!(status.success(), "{compiler} could not build {source}");
    out
}

#[test]
fn malloc_family_keeps_glibc_semantics() {
    if !have("gcc", "malloc_family_keeps_glibc_semantics") {
        return;
    }
    let exe = compile(
        "gcc",
        "semantics.c",
        &["-ldl"],
        &fresh_dir("semantics-build"),
    );
    let cmd = |_: &Path| Command::new(&exe);
    let p = Program {
        name: "semantics",
        command: &cmd,
        stdin: None,
    };
    same_plain_and_under_chaos(&p);
}

#[test]
fn cpp_threads_hand_objects_to_each_other() {
    if !have("g++", "cpp_threads_hand_objects_to_each_other") {
        return;
    }
    let exe = compile("g++", "handoff.cpp", &[], &fresh_dir("handoff-build"));
    let cmd = |_: &Path| Command::new(&exe);
    let p = Program {
        name: "handoff",
        command: &cmd,
        stdin: None,
    };
    same_plain_and_under_chaos(&p);
}

#[test]
fn sqlite3_builds_updates_queries_and_checks_a_database() {
    if !have(
        "sqlite3",
        "sqlite3_builds_updates_queries_and_checks_a_database",
    ) {
        return;
    }
    let cmd = |dir: &Path| {
        let mut c = Command::new("sqlite3");
        c.arg(dir.join("books.db"));
        c
    };
    let p = Program {
        name: "sqlite3",
        command: &cmd,
        stdin: Some(sources().join("script.sql")),
    };
    same_plain_and_under_chaos(&p);
}

#[test]
fn perl_hashes_strings_and_regexes() {
    if !have("perl", "perl_hashes_strings_and_regexes") {
        return;
    }
    let cmd = |_: &Path| {
        let mut c = Command::new("perl");
        c.arg(sources().join("script.pl"));
        c
    };
    let p = Program {
        name: "perl",
        command: &cmd,
        stdin: None,
    };
    same_plain_and_under_chaos(&p);
}

#[test]
fn gcc_compiles_a_multi_file_program_that_then_runs() {
    if !have("gcc", "gcc_compiles_a_multi_file_program_that_then_runs") {
        return;
    }
    // Both runs compile (gcc, cc1, as and ld inherit the preload) and run the result.
    let cmd = |dir: &Path| {
        let cc = sources().join("cc");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"gcc -O2 -Wall -o "$1/words" "$2/main.c" "$2/list.c" && "$1/words""#)
            .arg("sh")
            .arg(dir)
            .arg(cc);
        c
    };
    let p = Program {
        name: "gcc",
        command: &cmd,
        stdin: None,
    };
    same_plain_and_under_chaos(&p);
}

#[test]
fn git_commits_many_files_logs_and_collects_garbage() {
    if !have("git", "git_commits_many_files_logs_and_collects_garbage") {
        return;
    }
    // Fixed names and dates make the commit ids, and so the output, reproducible.
    let script = r#"
        set -e
        cd "$1"
        git init -q -b main repo && cd repo
        for round in 1 2 3 4; do
            i=0
            while [ $i -lt 150 ]; do
                mkdir -p "d$((i % 10))"
                printf 'file %s round %s\n%0200d\n' $i $round $((i * round)) > "d$((i % 10))/f$i.txt"
                i=$((i + 1))
            done
            git add -A
            git commit -q -m "round $round"
        done
        git rm -q -r d3
        git commit -q -m "drop d3"
        git log --stat --format='%H %s' | head -40
        git gc -q --aggressive
        git fsck --no-progress --full
        git count-objects -v | grep -E '^(count|in-pack|packs):'
        git log --format='%H' | wc -l
    "#;
    let cmd = |dir: &Path| {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).arg("sh").arg(dir);
        c.env("HOME", dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
        c
    };
    let p = Program {
        name: "git",
        command: &cmd,
        stdin: None,
    };
    same_plain_and_under_chaos(&p);
}

#[test]
fn chaos_under_a_backend_without_system_calls_says_so_and_stays_off() {
    if !have(
        "perl",
        "chaos_under_a_backend_without_system_calls_says_so_and_stays_off",
    ) {
        return;
    }
    let cmd = |_: &Path| {
        let mut c = Command::new("perl");
        c.arg(sources().join("script.pl"));
        c
    };
    let p = Program {
        name: "perl-signal",
        command: &cmd,
        stdin: None,
    };
    let err = same_under_tieralloc(
        &p,
        &[("TIERALLOC_CHAOS", "5ms"), ("TIERALLOC_FAULT", "signal")],
    );
    let said: Vec<&str> = err.lines().filter(|l| l.contains("chaos")).collect();
    assert_eq!(
        said.len(),
        1,
        "one line says chaos is off, and the stats show no chaos; stderr:\n{err}"
    );
    assert!(
        said[0].contains("uses signal: chaos not started"),
        "{}",
        said[0]
    );
}

#[test]
fn the_c_example_moves_a_malloc_buffer_and_reads_errors_through_the_header() {
    if !have(
        "gcc",
        "the_c_example_moves_a_malloc_buffer_and_reads_errors_through_the_header",
    ) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library();
    let libdir = lib.parent().unwrap();
    let exe = fresh_dir("tiers").join("tiers");
    let status = Command::new("gcc")
        .args(["-O2", "-Wall", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg(root.join("examples/tiers.c"))
        .arg("-L")
        .arg(libdir)
        .arg("-ltieralloc")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the C example does not build against tieralloc.h"
    );
    let out = run_with_watchdog(Command::new(&exe), None, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the C example failed:\n{text}");
    assert!(
        text.contains("moved 2048 pages: 0 MiB on the host, 8 MiB on device 0")
            && text.contains("after the CPU read it (sum 14336): 8 MiB on the host")
            && text.contains("code 4, \"there is no device 99"),
        "unexpected output:\n{text}"
    );
}
