//! The object each thread last handed out from the freed part of its cache, per class, whose
//! freed bit ([`super::cached`]) is still set: the record that lets an alloc+free pair take no
//! atomic read-modify-write at all.
//!
//! Why: popping a freed object used to clear its bit and pushing it again set it, two locked
//! instructions per pair that took 53% of a 16-byte pair's samples under `perf` (2026-12-02).
//! Now a pop of a freed object leaves the bit set and records the object in the thread's
//! *slot* for its class; the next free of that object by the same thread finds it there, empties
//! the slot with a plain store, and keeps the bit set. The slot, not the bit, tells a pending
//! object from a freed one.
//!
//! Slot states and who writes them (one `AtomicUsize` per thread and class):
//! - `0`: nothing pending. Only the owner writes a value into an empty slot.
//! - `p`: `p` is live and its bit is set. The owner empties it when it frees `p`, or retires it
//!   (below) when it hands out another freed object. Another thread that frees `p` claims it
//!   with a compare-and-swap `p -> 0`, after which `p` is that thread's freed object.
//! - `p | 1`: the owner is retiring `p` (clearing its bit, then storing the new object). A
//!   thread that frees `p` meanwhile waits until the bit is clear and then frees as usual.
//!
//! Invariant, for every object `p` of a span: `bit(p) = 1 <=> p is freed (in a cache or its span)
//! or p is in some slot` (tagged or not), outside the few instructions that move it between
//! the two. A free that finds the bit set and `p` in no slot is a double free.
//!
//! What this gives up against a bit cleared on every pop, all in programs that free an object
//! twice with the two frees racing each other:
//! - the owner's free of its pending object and another thread's free of the same object,
//!   unordered, both succeed (the owner's store and the other's compare-and-swap do not
//!   exclude each other);
//! - an object freed by another thread just as its owner retires it keeps a clear bit while it
//!   waits in that thread's cache, so a second free of it there is not caught.
//!
//! A thread without a slot (more than [`MAX_THREADS`] at once, or tieralloc's second cache)
//! clears bits on every pop as before.

use super::size_class::NCLASSES;
use crate::pal::thread;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Threads that can hold a slot at once; later ones go without (bits cleared on each pop).
pub const MAX_THREADS: usize = 256;

/// One thread's slots, one per size class.
pub type Slots = [AtomicUsize; NCLASSES];

/// The slots; statics outside the managed range (the pages of unused ones are never touched).
static SLOTS: [Slots; MAX_THREADS] =
    [const { [const { AtomicUsize::new(0) }; NCLASSES] }; MAX_THREADS];
static TAKEN: [AtomicBool; MAX_THREADS] = [const { AtomicBool::new(false) }; MAX_THREADS];
/// One past the highest slot index ever taken: scans stop there.
static HIGH: AtomicUsize = AtomicUsize::new(0);

/// A free slot for the calling thread, or `None` when all are taken.
pub fn acquire() -> Option<&'static Slots> {
    for (i, t) in TAKEN.iter().enumerate() {
        if !t.load(Ordering::Relaxed)
            && t.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            HIGH.fetch_max(i + 1, Ordering::AcqRel);
            return Some(&SLOTS[i]);
        }
    }
    None
}

/// Retires every pending object of `slots` (they stay live, with their bits cleared) and gives
/// the slot up. Called by its thread at exit.
pub fn release(slots: &'static Slots) {
    for s in slots {
        retire(s, s.load(Ordering::Relaxed));
    }
    TAKEN[index_of(slots)].store(false, Ordering::Release);
}

fn index_of(slots: &'static Slots) -> usize {
    (slots as *const Slots as usize - SLOTS.as_ptr() as usize) / core::mem::size_of::<Slots>()
}

/// Records `p`, a freed object just popped with its bit still set, in the owner's
/// slot `s`; a previously pending object is retired first.
#[inline(always)]
pub fn hand_out(s: &AtomicUsize, p: *mut u8) {
    let old = s.load(Ordering::Relaxed);
    if old != 0 {
        retire(s, old);
    }
    // Release: a thread that reads `p` here also sees the previous object's bit cleared.
    s.store(p as usize, Ordering::Release);
}

/// Takes `old` (the value the owner last stored in slot `s`, or 0) out of the
/// slot: tags it, clears its bit (it stays live), empties the slot. If another thread claimed
/// it in between, the bit cleared here is that thread's freed object's: its second free is then
/// not caught (see the module's note), nothing worse. Out of line: it keeps the pop that
/// calls [`hand_out`] small enough for the thread-local access around it to inline.
#[cold]
#[inline(never)]
fn retire(s: &AtomicUsize, old: usize) {
    if old == 0 {
        return;
    }
    s.store(old | 1, Ordering::Relaxed);
    super::cached::clear(old as *mut u8);
    s.store(0, Ordering::Release);
}

/// The owner's free of `p`: true if `p` is its pending object, which is then freed (the slot
/// empties, the bit stays set).
#[inline(always)]
pub fn take_own(s: &AtomicUsize, p: *mut u8) -> bool {
    if s.load(Ordering::Relaxed) == p as usize {
        s.store(0, Ordering::Relaxed);
        return true;
    }
    false
}

/// What a free of `p` (class `c`) that found its bit set learns from the slots.
pub enum Claim {
    /// `p` was pending in a slot and is now the caller's freed object (bit set).
    Taken,
    /// `p`'s bit was cleared meanwhile (retired by its owner): free it as usual.
    Cleared,
    /// `p` is in no slot and its bit is set: it is freed already.
    DoubleFree,
}

/// Finds `p` in the slots of class `c` of every thread (`own`: the caller's, if it has one).
/// `bit_set` reads `p`'s bit. Waits (spinning, then yielding) while `p`'s owner retires it.
#[cold]
pub fn claim(
    own: Option<&'static Slots>,
    c: usize,
    p: *mut u8,
    bit_set: impl Fn() -> bool,
) -> Claim {
    let want = p as usize;
    let mut waits = 0u32;
    loop {
        let mut retiring = false;
        for slots in &SLOTS[..HIGH.load(Ordering::Acquire)] {
            let s = &slots[c];
            let v = s.load(Ordering::Acquire);
            if v == want {
                if s.compare_exchange(want, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Claim::Taken;
                }
                retiring = true;
            } else if v == want | 1 {
                if own.is_some_and(|o| core::ptr::eq(o, slots)) {
                    // This thread is retiring `p` itself: a signal handler that interrupted the
                    // retirement frees it. Clearing the bit now is what the retirement would do.
                    super::cached::clear(p);
                    return Claim::Cleared;
                }
                retiring = true;
            }
        }
        if !bit_set() {
            return Claim::Cleared;
        }
        if !retiring {
            return Claim::DoubleFree;
        }
        waits += 1;
        if waits < 64 {
            core::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

/// In a fork child: every other thread's slots are retired and given up (their threads are
/// gone; their pending objects stay live in the child with their bits cleared). `own` is the
/// calling thread's slot, kept.
pub fn forget_other_threads(own: Option<&'static Slots>) {
    for (i, slots) in SLOTS[..HIGH.load(Ordering::Acquire)].iter().enumerate() {
        if own.is_some_and(|o| core::ptr::eq(o, slots)) || !TAKEN[i].load(Ordering::Relaxed) {
            continue;
        }
        for s in slots {
            retire(s, s.load(Ordering::Relaxed) & !1);
        }
        TAKEN[i].store(false, Ordering::Release);
    }
}
