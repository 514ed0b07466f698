//! Device workloads shared by `benches/device.rs` (Criterion), `benches/examples/policy_report.rs`
//! (the table) and `examples/oversubscribe.rs`. The includer installs `TierAlloc` and
//! configures the devices.

#![allow(dead_code)]
// each includer uses a different subset
// Kernel arguments must be heap (managed) memory: a stack array would be refused.
#![allow(clippy::useless_vec)]

use std::time::Instant;
use tieralloc::{Advice, Tier};

pub const PAGE: usize = 4096;
pub const BLOCK: usize = 64 << 10;

/// A buffer of `bytes` with every page written.
pub fn filled(bytes: usize) -> Vec<u64> {
    (0..bytes / 8).map(|i| i as u64).collect()
}

/// Device-fault cost (ns per 64 KiB block): a kernel on device 0 reads `buf`, which is on the
/// host, so every block faults over; the kernel itself only touches one word per page.
pub fn device_fault_per_block(buf: &[u64]) -> f64 {
    tieralloc::migrate(buf.as_ptr().cast(), buf.len() * 8, Tier::Host).unwrap();
    let mut out = vec![0u64; 1];
    let dev = tieralloc::device(0).unwrap();
    let t = Instant::now();
    let r = dev
        .run((buf, &mut out[..]), |(b, o)| {
            o[0] = b.iter().step_by(PAGE / 8).sum()
        })
        .unwrap();
    let ns = t.elapsed().as_nanos() as f64;
    assert!(r.device_faults >= buf.len() * 8 / BLOCK);
    ns / r.device_faults as f64
}

/// Prefetch throughput (bytes/s): `buf` host → device 0 on the background worker, waited for.
pub fn prefetch_throughput(buf: &[u64]) -> f64 {
    let bytes = buf.len() * 8;
    tieralloc::migrate(buf.as_ptr().cast(), bytes, Tier::Host).unwrap();
    let t = Instant::now();
    let m = tieralloc::prefetch(buf.as_ptr().cast(), bytes, Tier::Device(0))
        .unwrap()
        .wait()
        .unwrap();
    let s = t.elapsed().as_secs_f64();
    assert_eq!(m.moved * PAGE, bytes);
    bytes as f64 / s
}

/// CPU read of `buf` after a migration to device 0 (bytes/s): with `ReadMostly` the host copy
/// stays and reads hit it; without, every page faults back.
pub fn read_after_migrate(buf: &[u64], read_mostly: bool) -> f64 {
    let (p, bytes) = (buf.as_ptr().cast::<u8>(), buf.len() * 8);
    tieralloc::advise(p, bytes, Advice::Reset).unwrap();
    tieralloc::migrate(p, bytes, Tier::Host).unwrap();
    if read_mostly {
        tieralloc::advise(p, bytes, Advice::ReadMostly).unwrap();
    }
    tieralloc::migrate(p, bytes, Tier::Device(0)).unwrap();
    let t = Instant::now();
    let s: u64 = buf.iter().fold(0, |a, x| a.wrapping_add(*x));
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(s);
    tieralloc::advise(p, bytes, Advice::Reset).unwrap();
    bytes as f64 / secs
}

/// What one policy run did.
#[derive(Debug, Clone, Default)]
pub struct PolicyRun {
    pub ms: f64,
    pub to_device: u64,
    pub to_host: u64,
    pub cpu_faults: u64,
    pub device_faults: u64,
    pub evictions: u64,
    pub guards: u64,
    pub failed_launches: usize,
}

/// Runs `f` (which returns its failed launches) and what it cost: time and the counters' change.
pub fn measure(f: impl FnOnce() -> usize) -> PolicyRun {
    let a = tieralloc::stats();
    let t = Instant::now();
    let failed = f();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let b = tieralloc::stats();
    PolicyRun {
        ms,
        to_device: b.bytes_to_device - a.bytes_to_device,
        to_host: b.bytes_to_host - a.bytes_to_host,
        cpu_faults: b.cpu_faults - a.cpu_faults,
        device_faults: b.device_faults - a.device_faults,
        evictions: b.evictions - a.evictions,
        guards: b.thrash_guards - a.thrash_guards,
        failed_launches: failed,
    }
}

/// Ping-pong: `rounds` times, a kernel on device 0 updates a 1 MiB buffer, then the CPU
/// updates it. Checks the final contents.
pub fn ping_pong(rounds: usize) -> PolicyRun {
    let mut v = vec![0u64; 1 << 17];
    tieralloc::migrate(v.as_ptr().cast(), v.len() * 8, Tier::Host).unwrap();
    let dev = tieralloc::device(0).unwrap();
    let run = measure(|| {
        for _ in 0..rounds {
            dev.run(&mut v[..], |v| v.iter_mut().for_each(|x| *x += 1))
                .unwrap();
            v.iter_mut().for_each(|x| *x += 1);
        }
        0
    });
    assert!(
        v.iter().all(|&x| x == 2 * rounds as u64),
        "ping-pong lost an update"
    );
    run
}

/// Oversubscribed scan: `buffers` buffers of `each` bytes (together larger than device 0),
/// each scanned by a kernel in turn, `passes` times. Launches that fail (strict mode:
/// `DeviceFull`) are counted. Checks every kernel's result.
pub fn oversubscribed_scan(buffers: usize, each: usize, passes: usize) -> PolicyRun {
    scan_on(0, buffers, each, passes)
}

/// [`oversubscribed_scan`] with the kernels on `device`; the buffers start on the host.
pub fn scan_on(device: u16, buffers: usize, each: usize, passes: usize) -> PolicyRun {
    let bufs: Vec<Vec<u64>> = (0..buffers)
        .map(|k| (0..each / 8).map(|i| i as u64 ^ k as u64).collect())
        .collect();
    let want: Vec<u64> = bufs
        .iter()
        .map(|b| b.iter().fold(0, |a: u64, x| a.wrapping_add(*x)))
        .collect();
    let mut sums = vec![0u64; buffers];
    let dev = tieralloc::device(device).unwrap();
    measure(|| {
        let mut failed = 0;
        for _ in 0..passes {
            for (k, b) in bufs.iter().enumerate() {
                match dev.run((&b[..], &mut sums[k..k + 1]), |(b, s)| {
                    s[0] = b.iter().fold(0, |a: u64, x| a.wrapping_add(*x))
                }) {
                    Ok(_) => assert_eq!(sums[k], want[k], "wrong sum"),
                    Err(tieralloc::Error::DeviceFull { .. }) => failed += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        failed
    })
}

/// memcpy bandwidth of `bytes` (bytes/s, best of three warm copies), for the ratios.
pub fn memcpy_bandwidth(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    bytes as f64 / best
}
