//! `#[tieralloc::tier(...)]` (feature `macros`): the annotated function's allocations land on
//! the named tier, the scope ends with the function, and it nests with other scopes.

use tieralloc::{Tier, TierAlloc};

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

const MIB: usize = 1 << 20;

#[tieralloc::tier(device = 0)]
fn on_device(n: usize) -> Vec<u8> {
    assert_eq!(tieralloc::current_tier(), Tier::Device(0));
    vec![0; n]
}

#[tieralloc::tier(host)]
fn on_host(n: usize) -> Vec<u8> {
    vec![0; n]
}

#[tieralloc::tier(device = 0)]
fn early_return(n: usize) -> Option<Vec<u8>> {
    if n == 0 {
        return None;
    }
    Some(on_host(n))
}

fn where_is(v: &[u8]) -> (usize, usize) {
    let r = tieralloc::residency(v.as_ptr(), v.len()).unwrap();
    (r.host_bytes(), r.device_bytes(0))
}

#[test]
fn annotated_functions_allocate_on_their_tier() {
    let d = on_device(4 * MIB);
    assert_eq!(where_is(&d), (0, 4 * MIB));
    assert_eq!(tieralloc::current_tier(), Tier::Host, "the scope ended");
    // The innermost annotation wins, and the outer scope comes back after it.
    let h = tieralloc::with_tier(Tier::Device(0), || {
        let h = on_host(MIB);
        assert_eq!(tieralloc::current_tier(), Tier::Device(0));
        h
    });
    assert_eq!(where_is(&h), (MIB, 0));
    assert_eq!(early_return(0), None);
    let nested = early_return(MIB).unwrap();
    assert_eq!(where_is(&nested), (MIB, 0));
    assert_eq!(tieralloc::current_tier(), Tier::Host);
}
