//! The real programs of `tests/programs` and how to run them, shared by the tests
//! (`tests/programs.rs`) and `tieralloc-bench`'s `preload_report` (which includes this file).
//!
//! A program is a script `tests/programs/<name>.sh`, run by `sh` with three arguments: a fresh
//! work directory, the sources directory and a build directory (kept between runs, for the
//! programs it compiles once). Its `# needs:` line names the commands it runs.

#![allow(dead_code)] // each includer uses its own part

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The real programs, in the order reports list them (`semantics` checks tieralloc's own
/// handling of foreign pointers, which the peers do not have).
pub const REAL_PROGRAMS: [&str; 5] = ["sqlite3", "perl", "gcc", "git", "cpp-handoff"];

/// One program script.
pub struct Program<'a> {
    /// The script's name without `.sh`.
    pub name: &'a str,
    /// The directory of the scripts and their sources (`preload/tests/programs`).
    pub sources: &'a Path,
}

impl Program<'_> {
    /// The commands the script needs that this machine lacks.
    pub fn missing(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.script()).unwrap();
        let needs = text
            .lines()
            .find_map(|l| l.strip_prefix("# needs:"))
            .unwrap_or_else(|| panic!("{}.sh has no `# needs:` line", self.name));
        needs
            .split_whitespace()
            .filter(|c| {
                !Command::new(c)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .map(String::from)
            .collect()
    }

    /// True if the machine has what the script needs; otherwise says on stderr that it is
    /// skipped.
    pub fn runs_here(&self) -> bool {
        let missing = self.missing();
        if !missing.is_empty() {
            eprintln!(
                "SKIPPED {}: {} not installed on this machine",
                self.name,
                missing.join(", ")
            );
        }
        missing.is_empty()
    }

    fn script(&self) -> PathBuf {
        self.sources.join(format!("{}.sh", self.name))
    }

    /// The command that runs the program in `work` (which it may fill), building into `build`.
    pub fn command(&self, work: &Path, build: &Path) -> Command {
        let mut c = Command::new("sh");
        c.arg(self.script()).arg(work).arg(self.sources).arg(build);
        c
    }
}

/// A fresh, empty directory `<base>/<name>-<pid>-<n>`.
pub fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = base.join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What a run printed and cost.
pub struct Ran {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// The largest resident set of the process or any descendant it waited for, in KiB.
    pub max_rss_kib: u64,
}

/// Runs `cmd` (stdin empty) to completion; kills it and panics after `limit`, so a hang fails
/// instead of stalling.
pub fn run(mut cmd: Command, limit: Duration) -> Ran {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let what = format!("{cmd:?}");
    let start = Instant::now();
    // Reaped with wait4(2) below, which also gives its peak RSS (std's wait does not).
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id() as libc::pid_t;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our unreaped child; both out-pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let _ = tx.send((r, status, usage.ru_maxrss, start.elapsed()));
    });
    match rx.recv_timeout(limit) {
        Ok((r, status, rss, wall)) => {
            assert_eq!(r, pid, "{what}: wait4 failed");
            Ran {
                status: ExitStatus::from_raw(status),
                stdout: out.join().unwrap(),
                stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
                wall,
                max_rss_kib: rss as u64,
            }
        }
        Err(_) => {
            // SAFETY: kill(2) on our child, not reaped yet (its waiter is still blocked).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{what} hung: killed after {:?}", start.elapsed());
        }
    }
}

/// Bytes chaos migration moved, summed over the `chaos` lines of the stats tables in `stderr`
/// (one per process that printed its stats).
pub fn chaos_bytes(stderr: &str) -> u64 {
    stats_bytes(stderr, "chaos").sum()
}

/// Chaos migration's rate over the processes of a run: the bytes it moved, summed, over the
/// heap it had to work on, summed as each process's heap high-water mark times how long chaos
/// ran in it (the `in … ms` of its `chaos` line). Their ratio is the share of the heap moved
/// per second, with each process weighed by its heap and its life: a run of many short
/// processes is not measured against the wall time of the whole run, most of which no heap
/// existed for (a shell forking `git` again and again). `None` when no process ran chaos.
pub fn chaos_share_per_s(stderr: &str) -> Option<f64> {
    let (mut moved, mut heap_s) = (0.0, 0.0);
    for table in stderr.split("tieralloc stats").skip(1) {
        let heap = stats_bytes(table, "used (high)").next().unwrap_or(0) as f64;
        let Some(line) = table.lines().find(|l| l.trim_start().starts_with("chaos ")) else {
            continue;
        };
        let ms: f64 = line
            .split(" in ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        moved += stats_bytes(line, "chaos").next().unwrap_or(0) as f64;
        heap_s += heap * ms / 1e3;
    }
    (heap_s > 0.0).then(|| moved / heap_s)
}

/// The byte counts that open the stats lines labelled `label` (`412.0 KiB ...`).
fn stats_bytes<'a>(stderr: &'a str, label: &'a str) -> impl Iterator<Item = u64> + 'a {
    stderr
        .lines()
        .filter_map(move |l| l.trim_start().strip_prefix(label))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let n: f64 = words.next()?.parse().ok()?;
            let unit = match words.next()? {
                "B" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1024.0 * 1024.0,
                "GiB" => 1024.0 * 1024.0 * 1024.0,
                _ => return None,
            };
            Some((n * unit) as u64)
        })
}
