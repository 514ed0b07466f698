//! Configuration from `TIERALLOC_*` environment variables.
//!
//! Each variable is read once, when the part it configures starts (the heap at the first
//! allocation, the devices and fault backend at the first device operation), with `getenv(3)`,
//! and parsed without allocating (the allocator may not be usable yet). A bad value prints one
//! line on stderr and the default is kept: a typo must never crash a program inside its
//! allocator. A `TIERALLOC_*` variable tieralloc does not know (a misspelling) is reported
//! once, at the first allocation ([`check_unknown`]).
//!
//! | variable | values | default |
//! |---|---|---|
//! | `TIERALLOC_ARENA` | size of the managed range, e.g. `64GiB` | `64GiB` |
//! | `TIERALLOC_DEVICES` | `2x1GiB` or `gpu0=1GiB,gpu1=512MiB` | one device of 1 GiB |
//! | `TIERALLOC_FAULT` | `auto`, `uffd`, `uffd-fast`, `signal` | `auto` |
//! | `TIERALLOC_POLICY` | `adaptive`, `evict`, `strict` | `adaptive` |
//! | `TIERALLOC_LINK` | `pcie4x16`, `0=nvlink;1=25GB/s,2us`, ... | counted, not enforced |
//! | `TIERALLOC_PURGE_DELAY` | how long freed pages stay mapped for reuse: `100ms`, `1s`, `0` (at once) | `1s` |
//! | `TIERALLOC_HUGE_PAGES` | `0` keeps transparent huge pages out of the managed range until devices start | `1` |
//! | `TIERALLOC_STATS` | `1` prints the stats table at exit | off |
//! | `TIERALLOC_TRACE` | path of a CSV event trace | off |
//! | `TIERALLOC_CHAOS` | chaos migration: every interval, a share of the live heap moves to random devices: `20ms`, `20ms,10%` | off; share `5%` |

use crate::pal::sys;

pub use crate::pal::process::getenv;

/// Parses a byte size: a decimal number with an optional unit `K`, `M`, `G`, `T` (powers of
/// 1024), optionally followed by `iB` or `B`, case-insensitive, e.g. `64GiB`, `512m`, `4096`.
pub fn parse_size(s: &[u8]) -> Option<usize> {
    let s = trim(s);
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: usize = 0;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    let unit = trim(&s[digits..]);
    let shift = match unit.first().map(|b| b.to_ascii_lowercase()) {
        None => return Some(n),
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        Some(b'b') if unit.len() == 1 => 0,
        _ => return None,
    };
    let suffix = &unit[1..];
    let ok = suffix.is_empty()
        || suffix.eq_ignore_ascii_case(b"b")
        || suffix.eq_ignore_ascii_case(b"ib");
    if !ok {
        return None;
    }
    n.checked_mul(1usize << shift)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Prints `tieralloc: ignoring NAME=value: why; using default` on stderr.
pub fn warn_bad(name: &str, value: &[u8], why: &str) {
    sys::write_stderr(&[
        b"tieralloc: ignoring ",
        name.as_bytes(),
        b"=",
        value,
        b": ",
        why.as_bytes(),
        b"\n",
    ]);
}

/// Size of the managed range: `TIERALLOC_ARENA`, else [`DEFAULT_ARENA`].
pub fn arena_size() -> usize {
    let Some(v) = getenv(c"TIERALLOC_ARENA") else {
        return DEFAULT_ARENA;
    };
    match parse_size(v) {
        Some(n) if n >= MIN_ARENA => n,
        Some(_) => {
            warn_bad(
                "TIERALLOC_ARENA",
                v,
                "below the 64MiB minimum; using the default 64GiB",
            );
            DEFAULT_ARENA
        }
        None => {
            warn_bad(
                "TIERALLOC_ARENA",
                v,
                "not a size like 64GiB or 512MiB; using the default 64GiB",
            );
            DEFAULT_ARENA
        }
    }
}

use crate::base::consts::NAME_MAX;
pub use crate::base::consts::{DEFAULT_ARENA, DEFAULT_PURGE_DELAY_MS, MIN_ARENA};

/// One device spec: name bytes, name length, capacity in bytes.
pub type DeviceSpec = ([u8; NAME_MAX], usize, usize);

fn default_devices(out: &mut [DeviceSpec; crate::base::consts::MAX_DEVICES]) -> usize {
    out[0] = (name_of(b"dev0"), 4, crate::base::consts::DEFAULT_CAPACITY);
    1
}

/// A device name as stored: the first [`NAME_MAX`] bytes of `s`, zero-padded.
pub fn name_of(s: &[u8]) -> [u8; NAME_MAX] {
    let mut n = [0u8; NAME_MAX];
    let len = s.len().min(NAME_MAX);
    n[..len].copy_from_slice(&s[..len]);
    n
}

/// `devN` for device `i`.
fn numbered(i: usize) -> ([u8; NAME_MAX], usize) {
    let mut buf = [0u8; 20];
    let digits = sys::fmt_u64(i as u64, &mut buf);
    let mut n = [0u8; NAME_MAX];
    n[..3].copy_from_slice(b"dev");
    n[3..3 + digits.len()].copy_from_slice(digits);
    (n, 3 + digits.len())
}

/// Parses a device list: `2x1GiB` (two devices of 1 GiB), `gpu0=1GiB,gpu1=512MiB` (named), or
/// `1GiB,256MiB` (numbered). Returns how many specs were written, or `None` if malformed.
pub fn parse_devices(
    s: &[u8],
    out: &mut [DeviceSpec; crate::base::consts::MAX_DEVICES],
) -> Option<usize> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    // `NxSIZE`
    if let Some(x) = s.iter().position(|&b| b == b'x' || b == b'X') {
        let count = trim(&s[..x]);
        if !count.is_empty() && count.iter().all(u8::is_ascii_digit) {
            let n = parse_size(count)?;
            let cap = parse_size(&s[x + 1..])?;
            if n == 0 || n > out.len() || cap < sys::PAGE_SIZE {
                return None;
            }
            for (i, slot) in out.iter_mut().enumerate().take(n) {
                let (name, len) = numbered(i);
                *slot = (name, len, cap);
            }
            return Some(n);
        }
    }
    let mut n = 0;
    for item in s.split(|&b| b == b',') {
        if n == out.len() {
            return None;
        }
        let (name, len, size) = match item.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let name = trim(&item[..eq]);
                if name.is_empty() || name.len() > NAME_MAX {
                    return None;
                }
                (name_of(name), name.len(), &item[eq + 1..])
            }
            None => {
                let (name, len) = numbered(n);
                (name, len, item)
            }
        };
        let cap = parse_size(size)?;
        if cap < sys::PAGE_SIZE {
            return None;
        }
        out[n] = (name, len, cap);
        n += 1;
    }
    Some(n)
}

/// The devices to create: `TIERALLOC_DEVICES`, else one device `dev0` of 1 GiB.
pub fn devices(out: &mut [DeviceSpec; crate::base::consts::MAX_DEVICES]) -> usize {
    let Some(v) = getenv(c"TIERALLOC_DEVICES") else {
        return default_devices(out);
    };
    match parse_devices(v, out) {
        Some(n) => n,
        None => {
            warn_bad(
                "TIERALLOC_DEVICES",
                v,
                "expected e.g. 2x1GiB or gpu0=1GiB,gpu1=512MiB (at most 16 devices of at least 4KiB); using one device of 1GiB",
            );
            default_devices(out)
        }
    }
}

/// Which fault backend `TIERALLOC_FAULT` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// The best this process may use.
    Auto,
    /// userfaultfd with a handler thread (syscalls on device memory work).
    Uffd,
    /// userfaultfd in SIGBUS mode (the faulting thread resolves its own fault).
    UffdFast,
    /// mprotect + SIGSEGV.
    Signal,
}

/// `TIERALLOC_FAULT`: `auto` (default), `uffd`, `uffd-fast` or `signal`.
pub fn fault_mode() -> FaultMode {
    let Some(v) = getenv(c"TIERALLOC_FAULT") else {
        return FaultMode::Auto;
    };
    match trim(v) {
        b"auto" | b"" => FaultMode::Auto,
        b"uffd" => FaultMode::Uffd,
        b"uffd-fast" => FaultMode::UffdFast,
        b"signal" => FaultMode::Signal,
        _ => {
            warn_bad(
                "TIERALLOC_FAULT",
                v,
                "expected auto, uffd, uffd-fast or signal; using auto",
            );
            FaultMode::Auto
        }
    }
}

/// Which built-in policy `TIERALLOC_POLICY` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChoice {
    /// Eviction, thrash guard, auto-migration, density fault-around.
    Adaptive,
    /// On-demand migration with eviction.
    Evict,
    /// No eviction: a full device fails the migration.
    Strict,
}

/// Parses a `TIERALLOC_POLICY` value (case-insensitive; empty means the default).
pub fn parse_policy(v: &[u8]) -> Option<PolicyChoice> {
    let v = trim(v);
    if v.is_empty() || v.eq_ignore_ascii_case(b"adaptive") {
        Some(PolicyChoice::Adaptive)
    } else if v.eq_ignore_ascii_case(b"evict") {
        Some(PolicyChoice::Evict)
    } else if v.eq_ignore_ascii_case(b"strict") {
        Some(PolicyChoice::Strict)
    } else {
        None
    }
}

/// `TIERALLOC_POLICY`: `adaptive` (default), `evict` or `strict`.
pub fn policy() -> PolicyChoice {
    let Some(v) = getenv(c"TIERALLOC_POLICY") else {
        return PolicyChoice::Adaptive;
    };
    parse_policy(v).unwrap_or_else(|| {
        warn_bad(
            "TIERALLOC_POLICY",
            v,
            "expected adaptive, evict or strict; using adaptive",
        );
        PolicyChoice::Adaptive
    })
}

/// Parses an on/off value: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, empty.
pub fn parse_flag(v: &[u8]) -> Option<bool> {
    let v = trim(v);
    let any = |words: &[&[u8]]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
    if any(&[b"1", b"true", b"yes", b"on"]) {
        Some(true)
    } else if v.is_empty() || any(&[b"0", b"false", b"no", b"off"]) {
        Some(false)
    } else {
        None
    }
}

/// Parses a delay: a decimal number with a unit `ms` or `s` (a bare number is milliseconds),
/// e.g. `100ms`, `1s`, `0`. Returns milliseconds.
pub fn parse_delay_ms(s: &[u8]) -> Option<u32> {
    let s = trim(s);
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = core::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
    // Compared without allocating: this runs while the heap starts.
    let unit = &s[digits..];
    let scale = if unit.is_empty() || unit.eq_ignore_ascii_case(b"ms") {
        1
    } else if unit.eq_ignore_ascii_case(b"s") {
        1000
    } else {
        return None;
    };
    u32::try_from(n.checked_mul(scale)?).ok()
}

/// `TIERALLOC_PURGE_DELAY`: how long freed pages stay mapped for reuse before they go back to
/// the OS. Default [`DEFAULT_PURGE_DELAY_MS`]; `0` gives them back at once.
pub fn purge_delay_ms() -> u32 {
    let Some(v) = getenv(c"TIERALLOC_PURGE_DELAY") else {
        return DEFAULT_PURGE_DELAY_MS;
    };
    parse_delay_ms(v).unwrap_or_else(|| {
        warn_bad(
            "TIERALLOC_PURGE_DELAY",
            v,
            "not a delay like 100ms or 1s; using the default 1s",
        );
        DEFAULT_PURGE_DELAY_MS
    })
}

/// `TIERALLOC_HUGE_PAGES`: whether the managed range asks for transparent huge pages until
/// devices start (`crate::mem::arena`). Default on.
pub fn huge_pages() -> bool {
    flag(
        c"TIERALLOC_HUGE_PAGES",
        true,
        "expected 1 or 0; using huge pages",
    )
}

/// `TIERALLOC_STATS`: print the stats table on stderr at exit.
pub fn stats_at_exit() -> bool {
    flag(
        c"TIERALLOC_STATS",
        false,
        "expected 1 or 0; not printing stats",
    )
}

/// The on/off variable `name` ([`parse_flag`]); `default` when it is not set, or is bad (a
/// line on stderr saying `why` then).
fn flag(name: &core::ffi::CStr, default: bool, why: &str) -> bool {
    let Some(v) = getenv(name) else {
        return default;
    };
    parse_flag(v).unwrap_or_else(|| {
        warn_bad(name.to_str().unwrap_or("TIERALLOC_?"), v, why);
        default
    })
}

/// The share of the live heap chaos migration moves per interval when `TIERALLOC_CHAOS` names
/// none, in percent.
///
/// Why 5 and not 2: git's run of the preload report (30-odd processes of a few to 80 ms, plus
/// `gc`) moved 9-29% of its heap per second at 2%, near the 10% that chaos is meant to reach
/// at least; at 5% it moved 47-59%, and took as long (1.27-1.33× the run without chaos at
/// both shares, three runs each, 2026-12-02): its cost did not grow with the share.
pub const DEFAULT_CHAOS_SHARE: u32 = 5;

/// Parses `TIERALLOC_CHAOS`: an interval ([`parse_delay_ms`], at least 1 ms), optionally
/// followed by `,` and a share of 1 to 100 percent (`%` optional). Returns (ms, percent).
pub fn parse_chaos(s: &[u8]) -> Option<(u32, u32)> {
    let (interval, share) = match s.iter().position(|&b| b == b',') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let ms = parse_delay_ms(interval).filter(|&ms| ms > 0)?;
    let share = match share {
        None => DEFAULT_CHAOS_SHARE,
        Some(v) => {
            let v = trim(v);
            let v = v.strip_suffix(b"%").unwrap_or(v);
            let n: u32 = core::str::from_utf8(v).ok()?.parse().ok()?;
            (1..=100).contains(&n).then_some(n)?
        }
    };
    Some((ms, share))
}

/// `TIERALLOC_CHAOS`: chaos migration's interval and share, if asked for.
pub fn chaos() -> Option<(u32, u32)> {
    let v = getenv(c"TIERALLOC_CHAOS").filter(|v| !trim(v).is_empty())?;
    parse_chaos(v).or_else(|| {
        warn_bad(
            "TIERALLOC_CHAOS",
            v,
            "not an interval like 20ms or 20ms,5%; chaos migration stays off",
        );
        None
    })
}

/// `TIERALLOC_TRACE`: the path to write the event trace to, if set and not empty.
pub fn trace_path() -> Option<&'static [u8]> {
    getenv(c"TIERALLOC_TRACE").filter(|v| !trim(v).is_empty())
}

/// The variables tieralloc reads.
pub const KNOWN: [&str; 10] = [
    "TIERALLOC_ARENA",
    "TIERALLOC_PURGE_DELAY",
    "TIERALLOC_HUGE_PAGES",
    "TIERALLOC_DEVICES",
    "TIERALLOC_FAULT",
    "TIERALLOC_POLICY",
    "TIERALLOC_LINK",
    "TIERALLOC_STATS",
    "TIERALLOC_TRACE",
    "TIERALLOC_CHAOS",
];

/// If `entry` (`NAME=value` from the environment) is a `TIERALLOC_*` variable tieralloc does
/// not read, its name.
pub fn unknown_name(entry: &[u8]) -> Option<&[u8]> {
    let name = &entry[..entry.iter().position(|&b| b == b'=').unwrap_or(entry.len())];
    (name.starts_with(b"TIERALLOC_") && !KNOWN.iter().any(|k| k.as_bytes() == name)).then_some(name)
}

extern "C" {
    static environ: *const *const core::ffi::c_char;
}

/// Warns on stderr about each `TIERALLOC_*` variable that tieralloc does not read (most likely
/// a misspelling, which would otherwise be silently ignored). Allocates nothing.
pub fn check_unknown() {
    // SAFETY: `environ` is the process's NULL-terminated array of C strings; it is read here
    // once, at heap initialisation, like getenv does.
    let mut p = unsafe { environ };
    if p.is_null() {
        return;
    }
    loop {
        // SAFETY: p points into the NULL-terminated array.
        let entry = unsafe { *p };
        if entry.is_null() {
            break;
        }
        // SAFETY: each entry is a NUL-terminated string.
        let bytes = unsafe { core::ffi::CStr::from_ptr(entry) }.to_bytes();
        if let Some(name) = unknown_name(bytes) {
            sys::write_stderr(&[
                b"tieralloc: ignoring unknown variable ",
                name,
                b" (known: TIERALLOC_ARENA, PURGE_DELAY, HUGE_PAGES, DEVICES, FAULT, POLICY, LINK, STATS, TRACE, CHAOS)\n",
            ]);
        }
        // SAFETY: not past the terminating NULL (checked above).
        p = unsafe { p.add(1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_in_ms_and_s() {
        assert_eq!(parse_delay_ms(b"100ms"), Some(100));
        assert_eq!(parse_delay_ms(b" 250 "), Some(250));
        assert_eq!(parse_delay_ms(b"2s"), Some(2000));
        assert_eq!(parse_delay_ms(b"0"), Some(0));
        assert_eq!(parse_delay_ms(b"1h"), None);
        assert_eq!(parse_delay_ms(b"ms"), None);
        assert_eq!(parse_delay_ms(b"99999999999s"), None);
    }

    #[test]
    fn chaos_parses_an_interval_and_a_share() {
        assert_eq!(parse_chaos(b"20ms"), Some((20, DEFAULT_CHAOS_SHARE)));
        assert_eq!(parse_chaos(b"1s,5%"), Some((1000, 5)));
        assert_eq!(parse_chaos(b"50, 10"), Some((50, 10)));
        assert_eq!(parse_chaos(b"0"), None);
        assert_eq!(parse_chaos(b"20ms,0%"), None);
        assert_eq!(parse_chaos(b"20ms,101%"), None);
        assert_eq!(parse_chaos(b"often"), None);
    }

    #[test]
    fn policies_parse() {
        assert_eq!(parse_policy(b"adaptive"), Some(PolicyChoice::Adaptive));
        assert_eq!(parse_policy(b""), Some(PolicyChoice::Adaptive));
        assert_eq!(parse_policy(b" Evict "), Some(PolicyChoice::Evict));
        assert_eq!(parse_policy(b"STRICT"), Some(PolicyChoice::Strict));
        for bad in [&b"lru"[..], b"strict,evict", b"evicts"] {
            assert_eq!(parse_policy(bad), None);
        }
    }

    #[test]
    fn flags_parse() {
        for on in [&b"1"[..], b"true", b"YES", b" on "] {
            assert_eq!(parse_flag(on), Some(true));
        }
        for off in [&b"0"[..], b"false", b"no", b"off", b""] {
            assert_eq!(parse_flag(off), Some(false));
        }
        assert_eq!(parse_flag(b"2"), None);
        assert_eq!(parse_flag(b"maybe"), None);
    }

    #[test]
    fn misspelt_variables_are_found() {
        assert_eq!(
            unknown_name(b"TIERALLOC_DEVICE=2x1GiB"),
            Some(&b"TIERALLOC_DEVICE"[..])
        );
        assert_eq!(unknown_name(b"TIERALLOC_DEVICES=2x1GiB"), None);
        assert_eq!(unknown_name(b"TIERALLOC_STATS"), None);
        assert_eq!(unknown_name(b"PATH=/bin"), None);
        assert_eq!(unknown_name(b"TIERALLOCX=1"), None);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"64GiB"), Some(64 << 30));
        assert_eq!(parse_size(b"512m"), Some(512 << 20));
        assert_eq!(parse_size(b" 2 G "), Some(2 << 30));
        assert_eq!(parse_size(b"1TB"), Some(1 << 40));
        assert_eq!(parse_size(b"10b"), Some(10));
    }

    #[test]
    fn device_lists_parse() {
        use super::parse_devices;
        let mut out =
            [([0u8; crate::base::consts::NAME_MAX], 0, 0); crate::base::consts::MAX_DEVICES];
        assert_eq!(parse_devices(b"2x1GiB", &mut out), Some(2));
        assert_eq!((&out[1].0[..out[1].1], out[1].2), (&b"dev1"[..], 1 << 30));
        assert_eq!(
            parse_devices(b"gpu0=1GiB, gpu1 = 512MiB", &mut out),
            Some(2)
        );
        assert_eq!((&out[1].0[..out[1].1], out[1].2), (&b"gpu1"[..], 512 << 20));
        assert_eq!(parse_devices(b"64MiB,128MiB", &mut out), Some(2));
        assert_eq!((&out[0].0[..out[0].1], out[0].2), (&b"dev0"[..], 64 << 20));
        for bad in [
            &b""[..],
            b"0x1GiB",
            b"17x1GiB",
            b"2xlots",
            b"gpu=",
            b"=1GiB",
            b"1GiB,,2GiB",
            b"100",
        ] {
            assert_eq!(
                parse_devices(bad, &mut out),
                None,
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for bad in [
            &b""[..],
            b"GiB",
            b"12x",
            b"1GiBs",
            b"-5",
            b"99999999999999999999999T",
        ] {
            assert_eq!(parse_size(bad), None, "{:?}", core::str::from_utf8(bad));
        }
    }
}
