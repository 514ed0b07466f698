//! Model-based property test: random sequences of API calls against a reference model of every
//! live object's bytes, including bad input (foreign and stack pointers, freed memory, zero and
//! huge lengths, unknown devices, misaligned and overlapping ranges).
//!
//! After each call: the object bytes equal the model (checked at random and at the end), a
//! successful migration left its whole range on the target tier, a refused one (`DeviceFull`)
//! moved nothing, bad input got the right typed error, and `residency` totals equal the queried
//! length. `PROPTEST_CASES` bounds the run (default 48 sequences of up to 40 calls).

// Bad-input cases need heap (managed) buffers: an array would be a stack pointer.
#![allow(clippy::useless_vec)]

use proptest::prelude::*;
use std::sync::MutexGuard;
use tieralloc::policy::{Adaptive, Strict};
use tieralloc::{Advice, Error, PageState, Tier, TierAlloc};

mod common;
use common::*;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

/// Device 1 is small, so that strict-mode migrations get refused.
const SMALL: usize = 4 * MIB;

fn setup() -> MutexGuard<'static, ()> {
    serial_with_devices(&[("dev0", 64 * MIB), ("dev1", SMALL)])
}

const SLOTS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        slot: usize,
        size: usize,
        device_scope: Option<u16>,
    },
    Free {
        slot: usize,
    },
    Write {
        slot: usize,
        seed: u8,
    },
    Read {
        slot: usize,
    },
    /// Migrate `[start, start+len)` of the object, in per-mille of its length.
    Migrate {
        slot: usize,
        from: u16,
        to: u16,
        tier: u16,
    },
    Kernel {
        slot: usize,
        device: u16,
        add: u8,
    },
    Prefetch {
        slot: usize,
        tier: u16,
    },
    Advise {
        slot: usize,
        read_mostly: bool,
    },
    Bad {
        kind: u8,
    },
    SetStrict {
        strict: bool,
    },
}

fn tier(t: u16) -> Tier {
    match t % 4 {
        0 => Tier::Host,
        1 => Tier::Device(0),
        2 => Tier::Device(1),
        _ => Tier::Device(7), // does not exist
    }
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        3 => (slot.clone(), prop_oneof![1usize..600, 600usize..20_000, 20_000usize..3_000_000],
              prop::option::of(0u16..2))
            .prop_map(|(slot, size, device_scope)| Op::Alloc { slot, size, device_scope }),
        1 => slot.clone().prop_map(|slot| Op::Free { slot }),
        2 => (slot.clone(), any::<u8>()).prop_map(|(slot, seed)| Op::Write { slot, seed }),
        2 => slot.clone().prop_map(|slot| Op::Read { slot }),
        4 => (slot.clone(), 0u16..1000, 0u16..1000, any::<u16>())
            .prop_map(|(slot, from, to, tier)| Op::Migrate { slot, from, to, tier }),
        1 => (slot.clone(), 0u16..3, any::<u8>())
            .prop_map(|(slot, device, add)| Op::Kernel { slot, device, add }),
        1 => (slot.clone(), any::<u16>()).prop_map(|(slot, tier)| Op::Prefetch { slot, tier }),
        1 => (slot.clone(), any::<bool>())
            .prop_map(|(slot, read_mostly)| Op::Advise { slot, read_mostly }),
        1 => (0u8..7).prop_map(|kind| Op::Bad { kind }),
        1 => any::<bool>().prop_map(|strict| Op::SetStrict { strict }),
    ]
}

/// One live object and its model: byte `i` is `seed + i` (mod 256).
struct Obj {
    buf: Vec<u8>,
    seed: u8,
}

fn expected(seed: u8, i: usize) -> u8 {
    seed.wrapping_add(i as u8)
}

fn fill(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = expected(seed, i);
    }
}

fn verify(o: &Obj) -> Result<(), TestCaseError> {
    if let Some(i) = (0..o.buf.len()).find(|&i| o.buf[i] != expected(o.seed, i)) {
        return Err(TestCaseError::fail(format!(
            "byte {i} of {} is {}, the model says {}",
            o.buf.len(),
            o.buf[i],
            expected(o.seed, i)
        )));
    }
    Ok(())
}

fn states(p: *const u8, n: usize) -> Vec<(std::ops::Range<usize>, PageState)> {
    tieralloc::residency(p, n).unwrap().runs().to_vec()
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut slots: Vec<Option<Obj>> = (0..SLOTS).map(|_| None).collect();
    let mut freed: Option<(usize, usize)> = None; // a large freed range, for bad input
    let mut strict = false;
    for op in ops {
        match op.clone() {
            Op::Alloc {
                slot,
                size,
                device_scope,
            } => {
                let mut buf = match device_scope {
                    Some(d) => tieralloc::with_tier(Tier::Device(d), || vec![0u8; size]),
                    None => vec![0u8; size],
                };
                prop_assert!(buf.iter().all(|&b| b == 0), "fresh memory is zero");
                let seed = size as u8;
                fill(&mut buf, seed);
                slots[slot] = Some(Obj { buf, seed });
            }
            Op::Free { slot } => {
                if let Some(o) = slots[slot].take() {
                    verify(&o)?;
                    if o.buf.len() >= 2 * MIB {
                        freed = Some((o.buf.as_ptr() as usize, o.buf.len()));
                    }
                }
            }
            Op::Write { slot, seed } => {
                if let Some(o) = slots[slot].as_mut() {
                    o.seed = seed;
                    fill(&mut o.buf, seed);
                }
            }
            Op::Read { slot } => {
                if let Some(o) = slots[slot].as_ref() {
                    verify(o)?;
                }
            }
            Op::Migrate {
                slot,
                from,
                to,
                tier: t,
            } => {
                let Some(o) = slots[slot].as_ref() else {
                    continue;
                };
                let n = o.buf.len();
                let (a, b) = ((from as usize * n) / 1000, (to as usize * n) / 1000);
                let (start, len) = (a.min(b), a.max(b) - a.min(b));
                let p = o.buf[start..].as_ptr();
                let target = tier(t);
                let before = (len > 0).then(|| states(p, len));
                let faults = tieralloc::stats().cpu_faults;
                let r = tieralloc::migrate(p, len, target);
                match (r, target) {
                    (Err(Error::ZeroLength), _) => prop_assert_eq!(len, 0),
                    (Err(Error::UnknownDevice { device: 7, .. }), Tier::Device(7)) => {}
                    (Err(Error::DeviceFull { .. }), Tier::Device(_)) => {
                        prop_assert!(strict, "only strict mode refuses");
                        prop_assert_eq!(Some(states(p, len)), before, "nothing moved");
                    }
                    (Ok(m), target) => {
                        prop_assert!(len > 0);
                        // CI saw the page of a small object "migrating" right after `migrate`
                        // returned (signal backend, once in ~400 cases; not reproduced here):
                        // another thread held its lock for a moment. Where it ends is checked.
                        let r = settled_residency(p, len);
                        prop_assert_eq!(r.total(), len);
                        let on = match target {
                            Tier::Host => r.host_bytes(),
                            Tier::Device(d) => r.device_bytes(d) + r.duplicated_bytes(d),
                        };
                        // A small object shares its page: the check's own allocations (the
                        // residency runs, the stats) may land on that page and write it, and
                        // the page comes back by a CPU fault (signal backend, CI, about once
                        // in 400 cases). Host bytes short of the target are fine only then.
                        let brought_back = len < PAGE
                            && target != Tier::Host
                            && r.host_bytes() == len - on
                            && tieralloc::stats().cpu_faults > faults;
                        prop_assert!(
                            on == len || brought_back,
                            "{:?} after {:?}: {on} of {len} B on {:?}",
                            r.runs(),
                            m,
                            target
                        );
                    }
                    (r, target) => prop_assert!(false, "migrate {len} B to {target:?}: {r:?}"),
                }
            }
            Op::Kernel { slot, device, add } => {
                let Some(o) = slots[slot].as_mut() else {
                    continue;
                };
                let seed = o.seed;
                let r = tieralloc::device(device).map(|d| {
                    d.run(&mut o.buf[..], move |b| {
                        for (i, x) in b.iter_mut().enumerate() {
                            *x = expected(seed.wrapping_add(add), i);
                        }
                    })
                });
                match r {
                    Ok(Ok(_)) => o.seed = seed.wrapping_add(add),
                    Ok(Err(Error::DeviceFull { .. })) => prop_assert!(strict),
                    Err(Error::UnknownDevice { device: 2, .. }) => {}
                    other => prop_assert!(false, "kernel on {device}: {other:?}"),
                }
                verify(o)?;
            }
            Op::Prefetch { slot, tier: t } => {
                let Some(o) = slots[slot].as_ref() else {
                    continue;
                };
                let r = tieralloc::prefetch(o.buf.as_ptr(), o.buf.len(), tier(t));
                match (r, tier(t)) {
                    (Err(Error::UnknownDevice { .. }), Tier::Device(7)) => {}
                    (Ok(p), _) => match p.wait() {
                        Ok(_) => {}
                        Err(Error::DeviceFull { .. }) => prop_assert!(strict),
                        Err(e) => prop_assert!(false, "prefetch: {e}"),
                    },
                    (Err(e), _) => prop_assert!(false, "prefetch: {e}"),
                }
            }
            Op::Advise { slot, read_mostly } => {
                let Some(o) = slots[slot].as_ref() else {
                    continue;
                };
                let a = if read_mostly {
                    Advice::ReadMostly
                } else {
                    Advice::Reset
                };
                tieralloc::advise(o.buf.as_ptr(), o.buf.len(), a).unwrap();
            }
            Op::Bad { kind } => {
                let local = [7u8; 64];
                let r = match kind {
                    0 => tieralloc::migrate(local.as_ptr(), 64, Tier::Device(0)),
                    1 => tieralloc::migrate(c"static".as_ptr().cast(), 6, Tier::Host),
                    2 => tieralloc::migrate(std::ptr::null(), 1, Tier::Host),
                    3 => {
                        let v = vec![1u8; 100];
                        tieralloc::migrate(v.as_ptr(), usize::MAX, Tier::Device(0))
                    }
                    4 => {
                        let v = vec![1u8; 100];
                        tieralloc::migrate(v.as_ptr(), 0, Tier::Device(0))
                    }
                    5 => {
                        let v = vec![1u8; 100];
                        tieralloc::migrate(v.as_ptr(), 100, Tier::Device(9))
                    }
                    _ => match freed {
                        Some((p, n)) => tieralloc::migrate(p as *const u8, n, Tier::Device(0)),
                        None => continue,
                    },
                };
                match (kind, &r) {
                    (0..=2, Err(Error::NotManaged { .. })) => {}
                    (3, Err(Error::RangeOverflow { .. } | Error::NotManaged { .. })) => {}
                    (4, Err(Error::ZeroLength)) => {}
                    (5, Err(Error::UnknownDevice { device: 9, .. })) => {}
                    // Freed memory: refused, unless something was allocated there since.
                    (6, Err(Error::NotAllocated { .. })) => {}
                    (6, Ok(_)) | (6, Err(Error::DeviceFull { .. })) => {}
                    _ => prop_assert!(false, "bad input {kind}: {r:?}"),
                }
                if let Err(e) = &r {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Op::SetStrict { strict: s } => {
                strict = s;
                if s {
                    tieralloc::set_policy(Strict);
                } else {
                    tieralloc::set_policy(Adaptive::default());
                }
            }
        }
        // Between steps every internal invariant holds (heap, page map, devices).
        prop_assert_eq!(settled_invariants(), Ok(()), "after {:?}", op);
    }
    tieralloc::set_policy(Adaptive::default());
    for o in slots.iter().flatten() {
        verify(o)?;
        let r = tieralloc::residency(o.buf.as_ptr(), o.buf.len()).unwrap();
        prop_assert_eq!(r.total(), o.buf.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn api_calls_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let _g = setup();
        run(&ops)?;
    }
}

#[test]
fn each_backend() {
    common::each_backend("ALLOC_TEST_MODEL_CHILD", "model test");
}
