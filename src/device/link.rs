//! The link model: how long moving data to and from a device would take over a real link.
//!
//! Every device has a link (PCIe 4.0 x16 unless told otherwise), and every transfer adds the
//! time it would take on it (`latency + bytes / bandwidth`) to `stats().simulated_transfer_ns`.
//! With the model **enforced** (off by default; `TIERALLOC_LINK` or [`set_link`]), migrations
//! and fault-backs also take that long (the mover sleeps), so a program sees the costs a
//! discrete GPU would give it. Atomics and `nanosleep` only: the fault path uses it.

use crate::base::error::Error;
use crate::device::MAX_DEVICES;
use crate::mem::counters::COUNTERS;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A device link: bandwidth and latency of one transfer.
///
/// ```
/// use tieralloc::Link;
/// let l = Link::parse("pcie4x16").unwrap();
/// assert_eq!(l, Link::PCIE4_X16);
/// assert_eq!(l.transfer_time(0), l.latency);
/// assert!(Link::parse("25GB/s,2us").is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Bytes per second.
    pub bandwidth: u64,
    /// Fixed cost of one transfer.
    pub latency: Duration,
}

impl Link {
    /// PCIe 3.0 x16: ~12 GB/s usable, ~1.5 µs.
    ///
    /// ```
    /// let l = tieralloc::Link::PCIE3_X16;
    /// println!("64 MiB over {l:?}: {:?}", l.transfer_time(64 << 20));
    /// ```
    pub const PCIE3_X16: Link = Link::new(12_000_000_000, 1500);
    /// PCIe 4.0 x16: ~25 GB/s usable, ~1.2 µs.
    ///
    /// ```
    /// let l = tieralloc::Link::PCIE4_X16;
    /// println!("64 MiB over {l:?}: {:?}", l.transfer_time(64 << 20));
    /// ```
    pub const PCIE4_X16: Link = Link::new(25_000_000_000, 1200);
    /// PCIe 5.0 x16: ~50 GB/s usable, ~1 µs.
    ///
    /// ```
    /// let l = tieralloc::Link::PCIE5_X16;
    /// println!("64 MiB over {l:?}: {:?}", l.transfer_time(64 << 20));
    /// ```
    pub const PCIE5_X16: Link = Link::new(50_000_000_000, 1000);
    /// NVLink-C2C class: ~400 GB/s, ~0.5 µs.
    ///
    /// ```
    /// let l = tieralloc::Link::NVLINK;
    /// println!("64 MiB over {l:?}: {:?}", l.transfer_time(64 << 20));
    /// ```
    pub const NVLINK: Link = Link::new(400_000_000_000, 500);

    const fn new(bandwidth: u64, latency_ns: u64) -> Link {
        Link {
            bandwidth,
            latency: Duration::from_nanos(latency_ns),
        }
    }

    /// Parses a preset (`pcie3x16`, `pcie4x16`, `pcie5x16`, `nvlink`) or `<N>GB/s,<M>us`.
    ///
    /// ```
    /// use tieralloc::Link;
    /// assert_eq!(Link::parse("pcie4x16"), Some(Link::PCIE4_X16));
    /// assert_eq!(Link::parse("25GB/s,2us").unwrap().bandwidth, 25_000_000_000);
    /// assert_eq!(Link::parse("warp9"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Link> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pcie3x16" | "pcie3" => Some(Link::PCIE3_X16),
            "pcie4x16" | "pcie4" => Some(Link::PCIE4_X16),
            "pcie5x16" | "pcie5" => Some(Link::PCIE5_X16),
            "nvlink" => Some(Link::NVLINK),
            other => {
                let (bw, lat) = other.split_once(',')?;
                let gbs: f64 = bw.trim().strip_suffix("gb/s")?.trim().parse().ok()?;
                let us: f64 = lat.trim().strip_suffix("us")?.trim().parse().ok()?;
                (gbs > 0.0 && us >= 0.0).then(|| Link {
                    bandwidth: (gbs * 1e9) as u64,
                    latency: Duration::from_nanos((us * 1e3) as u64),
                })
            }
        }
    }

    /// How long `bytes` take over this link.
    ///
    /// ```
    /// let t = tieralloc::Link::PCIE4_X16.transfer_time(25_000_000);
    /// assert!(t > std::time::Duration::from_micros(1000)); // 1 ms plus the latency
    /// ```
    pub fn transfer_time(&self, bytes: usize) -> Duration {
        Duration::from_nanos(self.ns(bytes))
    }

    fn ns(&self, bytes: usize) -> u64 {
        self.latency.as_nanos() as u64
            + (bytes as u128 * 1_000_000_000 / self.bandwidth.max(1) as u128) as u64
    }
}

struct Slot {
    bandwidth: AtomicU64,
    latency_ns: AtomicU64,
    enforced: AtomicBool,
}

static LINKS: [Slot; MAX_DEVICES] = [const {
    Slot {
        bandwidth: AtomicU64::new(25_000_000_000),
        latency_ns: AtomicU64::new(1200),
        enforced: AtomicBool::new(false),
    }
}; MAX_DEVICES];

/// Sets device `d`'s link. `enforce`: transfers really take the link's time (else the time is
/// only counted in `stats()`).
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// tieralloc::set_link(0, tieralloc::Link::PCIE5_X16, false).unwrap();
/// assert_eq!(tieralloc::link(0).unwrap().0, tieralloc::Link::PCIE5_X16);
/// ```
pub fn set_link(d: u16, link: Link, enforce: bool) -> Result<(), Error> {
    crate::device::ensure_init()?;
    crate::device::check(d)?;
    let s = &LINKS[d as usize];
    s.bandwidth.store(link.bandwidth.max(1), Ordering::Relaxed);
    s.latency_ns
        .store(link.latency.as_nanos() as u64, Ordering::Relaxed);
    s.enforced.store(enforce, Ordering::Relaxed);
    Ok(())
}

/// Device `d`'s link and whether it is enforced.
///
/// ```
/// let (link, enforced) = tieralloc::link(0)?;
/// println!("device 0: {link:?}, enforced: {enforced}");
/// # Ok::<(), tieralloc::Error>(())
/// ```
pub fn link(d: u16) -> Result<(Link, bool), Error> {
    crate::device::ensure_init()?;
    crate::device::check(d)?;
    let s = &LINKS[d as usize];
    Ok((
        Link {
            bandwidth: s.bandwidth.load(Ordering::Relaxed),
            latency: Duration::from_nanos(s.latency_ns.load(Ordering::Relaxed)),
        },
        s.enforced.load(Ordering::Relaxed),
    ))
}

/// Applies `TIERALLOC_LINK` (`pcie4x16` for every device, or `0=pcie4x16,1=nvlink`): the
/// named links are enforced. Called once when the devices come up.
pub(crate) fn from_env(devices: usize) {
    let Some(v) = crate::config::getenv(c"TIERALLOC_LINK") else {
        return;
    };
    let text = String::from_utf8_lossy(v);
    for part in text.split(';').flat_map(|p| p.split(' ')) {
        let part = part.trim();
        if part.is_empty() || part == "off" {
            continue;
        }
        match parse_part(part, devices) {
            Some((which, l)) => {
                for k in which {
                    let s = &LINKS[k];
                    s.bandwidth.store(l.bandwidth.max(1), Ordering::Relaxed);
                    s.latency_ns
                        .store(l.latency.as_nanos() as u64, Ordering::Relaxed);
                    s.enforced.store(true, Ordering::Relaxed);
                }
            }
            None => crate::config::warn_bad(
                "TIERALLOC_LINK",
                part.as_bytes(),
                "expected a link (pcie3x16, pcie4x16, pcie5x16, nvlink or <N>GB/s,<M>us), \
                 optionally as <device>=<link>, separated by ';'; ignoring it",
            ),
        }
    }
}

/// One `TIERALLOC_LINK` entry: `<link>` (every device) or `<device>=<link>`. Returns the
/// devices it applies to and the link, or `None` if it is malformed or names a device that
/// does not exist.
fn parse_part(part: &str, devices: usize) -> Option<(core::ops::Range<usize>, Link)> {
    let (which, spec) = match part.split_once('=') {
        Some((d, spec)) => {
            let d = d.trim().parse::<usize>().ok().filter(|&d| d < devices)?;
            (d..d + 1, spec)
        }
        None => (0..devices, part),
    };
    Some((which, Link::parse(spec)?))
}

/// Counts (and, when enforced, spends) the time of moving `bytes` over device `d`'s link.
/// Async-signal-safe.
pub(crate) fn transfer(d: u16, bytes: usize) {
    let s = &LINKS[d as usize % MAX_DEVICES];
    let link = Link {
        bandwidth: s.bandwidth.load(Ordering::Relaxed),
        latency: Duration::from_nanos(s.latency_ns.load(Ordering::Relaxed)),
    };
    let ns = link.ns(bytes);
    COUNTERS
        .simulated_transfer_ns
        .fetch_add(ns, Ordering::Relaxed);
    if s.enforced.load(Ordering::Relaxed) && ns > 0 {
        // An early return (a signal) only shortens the simulated delay.
        crate::pal::thread::sleep_ns(ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_custom_links_parse() {
        assert_eq!(Link::parse("pcie4x16"), Some(Link::PCIE4_X16));
        assert_eq!(Link::parse(" NVLink "), Some(Link::NVLINK));
        let l = Link::parse("25GB/s,2us").unwrap();
        assert_eq!(l.bandwidth, 25_000_000_000);
        assert_eq!(l.latency, Duration::from_micros(2));
        for bad in [
            "",
            "pcie9",
            "25GB/s",
            "25,2us",
            "-1GB/s,2us",
            "0GB/s,1us",
            "x GB/s,1us",
        ] {
            assert_eq!(Link::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn env_entries_name_existing_devices() {
        assert_eq!(parse_part("pcie3x16", 2), Some((0..2, Link::PCIE3_X16)));
        assert_eq!(parse_part("1=nvlink", 2), Some((1..2, Link::NVLINK)));
        assert_eq!(parse_part("2=nvlink", 2), None, "device 2 does not exist");
        assert_eq!(parse_part("x=nvlink", 2), None);
        assert_eq!(parse_part("0=", 2), None);
        let transfer = Link::PCIE4_X16.transfer_time(25 << 20);
        assert!(transfer > Duration::from_micros(500) && transfer < Duration::from_millis(5));
    }
}
