//! A real workload under the allocator: maps of 1M strings, queried, and 1M strings sorted.

use std::collections::{BTreeMap, HashMap};
use tieralloc::TierAlloc;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

const N: u64 = 1_000_000;

/// A deterministic scramble so keys arrive in no particular order.
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

fn key(i: u64) -> String {
    format!("key-{:016x}-{}", mix(i), i)
}

#[test]
fn hashmap_of_a_million_strings() {
    let mut m: HashMap<String, String> = HashMap::new();
    for i in 0..N {
        m.insert(key(i), format!("value {i}"));
    }
    assert_eq!(m.len(), N as usize);
    for i in (0..N).step_by(7) {
        assert_eq!(
            m.get(&key(i)).map(String::as_str),
            Some(format!("value {i}").as_str())
        );
    }
    assert!(!m.contains_key("key-missing"));
    // Remove every other entry and check the rest are intact.
    for i in (0..N).step_by(2) {
        assert!(m.remove(&key(i)).is_some());
    }
    for i in (1..N).step_by(2).take(100_000) {
        assert_eq!(m[&key(i)], format!("value {i}"));
    }
}

#[test]
fn btreemap_of_a_million_strings_in_order() {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..N {
        m.insert(key(i), i);
    }
    assert_eq!(m.len(), N as usize);
    let mut prev: Option<&String> = None;
    let mut sum = 0u64;
    for (k, v) in &m {
        if let Some(p) = prev {
            assert!(p < k);
        }
        assert_eq!(*k, key(*v));
        sum += v;
        prev = Some(k);
    }
    assert_eq!(sum, N * (N - 1) / 2);
    let range: Vec<_> = m.range("key-8".to_string().."key-9".to_string()).collect();
    assert!(range.iter().all(|(k, _)| k.starts_with("key-8")));
    assert!(!range.is_empty());
}

#[test]
fn sort_a_million_strings() {
    let mut v: Vec<String> = (0..N).map(key).collect();
    v.sort_unstable();
    assert!(v.windows(2).all(|w| w[0] < w[1]));
    let mut w: Vec<String> = (0..N).map(|i| format!("{:x}", mix(i))).collect();
    w.sort();
    assert!(w.windows(2).all(|p| p[0] <= p[1]));
    assert_eq!(w.len(), N as usize);
}
