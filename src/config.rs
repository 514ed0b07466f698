//! Configuration from `TIERALLOC_*` environment variables.
//!
//! Variables are read once, at the first allocation, with `getenv(3)` and parsed without
//! allocating (the allocator may not be usable yet). A bad value prints one line on stderr and
//! the default is kept: a typo must never crash a program inside its allocator.

use crate::sys;

/// Default size of the managed range: 64 GiB of address space, reserved with `MAP_NORESERVE`,
/// so only pages that are touched cost memory. Covers all memory of a 24 GiB machine with room
/// for fragmentation.
pub const DEFAULT_ARENA: usize = 64 << 30;
/// Smallest managed range accepted from `TIERALLOC_ARENA`.
pub const MIN_ARENA: usize = 64 << 20;

/// Reads an environment variable as bytes without allocating.
pub fn getenv(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string that lives
    // as long as the environment is not modified (the same contract std relies on).
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a valid C string as above.
    Some(unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes())
}

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

#[cfg(test)]
mod tests {
    use super::parse_size;

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
