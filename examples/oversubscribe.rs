//! Oversubscription: a working set 3× a device's capacity scanned by kernels, once per
//! built-in policy. `strict` refuses what does not fit (`DeviceFull`); `evict` and `adaptive`
//! evict the coldest blocks to the host and every kernel runs, with every sum correct.
//!
//! `cargo run --release --example oversubscribe`

use tieralloc::policy::{Adaptive, Evict, Strict};
use tieralloc::TierAlloc;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

#[path = "../benches/common/device_workloads.rs"]
mod device_workloads;
use device_workloads::*;

const MIB: usize = 1 << 20;

fn main() -> Result<(), tieralloc::Error> {
    tieralloc::set_devices(&[("gpu0", 64 * MIB)])?;
    println!("device gpu0: 64 MiB; working set 12 × 16 MiB = 192 MiB (3×), 3 passes of kernels");
    for (name, set) in [
        ("strict", (|| tieralloc::set_policy(Strict)) as fn()),
        ("evict", || tieralloc::set_policy(Evict)),
        ("adaptive", || tieralloc::set_policy(Adaptive::default())),
    ] {
        set();
        let r = oversubscribed_scan(12, 16 * MIB, 3);
        let used = tieralloc::devices()?[0].used;
        println!(
            "{name:>8}: {:6.1} ms, {:4} MiB to device, {:4} MiB evicted to host, {:3} evictions, \
             {:2} launches refused (DeviceFull); device used now {} MiB of 64",
            r.ms,
            r.to_device >> 20,
            r.to_host >> 20,
            r.evictions,
            r.failed_launches,
            used >> 20
        );
        assert!(used <= 64 * MIB);
    }
    Ok(())
}
