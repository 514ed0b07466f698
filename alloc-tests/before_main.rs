//! Allocation before `main` (in an ELF constructor) and from a thread-local destructor, when the
//! allocator's own per-thread cache may already be gone.

use std::cell::RefCell;
use tieralloc::TierAlloc;

#[global_allocator]
static A: TierAlloc = TierAlloc::new();

static mut EARLY: *mut Vec<String> = std::ptr::null_mut();

extern "C" fn allocate_before_main() {
    let v: Vec<String> = (0..1000).map(|i| format!("early {i}")).collect();
    // SAFETY: constructors run single-threaded before main; the test reads EARLY later.
    unsafe { EARLY = Box::into_raw(Box::new(v)) };
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = allocate_before_main;

#[test]
fn memory_allocated_before_main_is_managed_and_intact() {
    // SAFETY: set once by the constructor before main, never written again.
    let v = unsafe { &*EARLY };
    assert!(tieralloc::is_managed(v.as_ptr().cast()));
    assert!(v
        .iter()
        .enumerate()
        .all(|(i, s)| *s == format!("early {i}")));
}

struct AllocOnDrop(u64);

impl Drop for AllocOnDrop {
    fn drop(&mut self) {
        // Runs during thread exit, possibly after tieralloc's cache was flushed.
        let v: Vec<Box<u64>> = (0..1000).map(|i| Box::new(i ^ self.0)).collect();
        assert!(v.iter().enumerate().all(|(i, b)| **b == i as u64 ^ self.0));
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<AllocOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn thread_local_destructors_can_allocate() {
    for t in 0..20 {
        std::thread::spawn(move || {
            let _warm: Vec<u8> = vec![1; 100];
            ON_EXIT.with(|s| *s.borrow_mut() = Some(AllocOnDrop(t)));
        })
        .join()
        .expect("a thread whose TLS destructor allocates must exit cleanly");
    }
}
