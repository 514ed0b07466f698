//! A thread heap's own spans: where its small objects come from and where its own frees go,
//! with plain loads and stores, no lock and no locked instruction.
//!
//! A heap ([`Local`]) owns, per size class, a current span it allocates from, a list of spans
//! with free objects (avail) and a list of spans with none (full). Allocating takes the first
//! free bit of the current span's local bitmap ([`take`]); when it has none the heap takes an
//! avail span, then merges the remote frees other threads sent it ([`super::span::Pending`]),
//! then adopts a span no heap owns, and only then carves a fresh one ([`take_slow`]). A free of
//! an object of one of its spans sets the bit back ([`free_local`]); a span that becomes free
//! while another avail span exists goes back to the page runs.
//!
//! Why owned spans: before, spans had no owner and every freed object went through a thread
//! cache and back to its span under the bin lock, with a locked instruction at every free (the
//! freed bit, [`super::cached`], shared by objects of several threads). A batch of 100k 16-byte
//! objects freed in scrambled order took 22-25 ns an allocation and free against mimalloc's
//! 9 (2026-12-02): the free, the flush to the spans and the refill from them were a third each.
//!
//! Double frees are still caught at the free: the owner's free finds the object's local bit
//! set (free in its span) or its freed bit set (waiting in another thread's buffer or remote
//! bitmap); another thread's free finds its freed bit set or its local bit set. Two frees of one
//! object at the same moment, one by its owner and one by another thread, can both pass; the
//! merge then finds the object free twice and stops the process, unless the owner handed it out
//! again in between.

use super::size_class::{self, NCLASSES};
use super::span::{self, desc, ld, link, linked, push, remove, st, Link, Pending, State};
use super::{cached, Hooks};
use crate::mem::arena;
use crate::mem::scope::TierIndex;
use core::sync::atomic::{AtomicU64, Ordering};

/// A heap's spans, one tier's. All zeroes is a heap with no span (its id still to be set).
pub struct Local {
    /// The heap's id ([`span::register`]), the `owner` of its spans.
    pub id: u32,
    /// The tier of its spans.
    pub tier: TierIndex,
    /// The managed range's first byte and length, and the descriptor table, read once
    /// ([`set_up`]): the fast paths then load them from the heap's own cache line, not each
    /// from its global through the GOT.
    arena_base: usize,
    arena_size: usize,
    descs: *const span::Span,
    /// Per class: the span it allocates from.
    cur: [Cur; NCLASSES],
    /// Per class: owned spans with local free objects.
    avail: [Link; NCLASSES],
    /// Per class: owned spans without.
    full: [Link; NCLASSES],
}

/// Readies heap `l` (its id set) for its thread, once the heap is initialised.
pub fn set_up(l: &mut Local) {
    l.arena_base = arena::base();
    l.arena_size = arena::size();
    l.descs = span::table();
}

/// A heap's current span of one class, with what the fast path needs of it at hand (two
/// dependent loads fewer per allocation than through the descriptor table), and free objects
/// of it set aside for the next allocations: the ones this heap freed last (`last` and a small
/// stack), and the rest of a bitmap word (`wbits`).
///
/// Why the object freed last is handed out first: an allocation that takes it needs no scan
/// of the bitmap, and the pointer it returns does not wait for the bitmap. Without it, a
/// 16-byte allocate+free pair took 13 ns (7 before owned spans) though it ran about as many
/// instructions: the scan's load of the bitmap word waited for the free's store to it, whose
/// address the free computes from the pointer (its index in the span), so each pair waited
/// for the one before (2026-12-02).
///
/// Why a stack behind it and a word beside it: with a single slot for the object freed last,
/// random frees and allocations of mixed sizes (the larson-like churn) found it full or empty
/// at random, and its two branches mispredicted at 49% and 48%: 0.85 of the 1.3 mispredicted
/// branches per replacement under `valgrind --branch-sim`, which took 22 ns against glibc's
/// 15 (2026-12-03). Now a free into the current span always puts its object in `last` and
/// pushes the one there before; an allocation takes `last` and refills it from the stack;
/// when `last` is empty it takes the next object of `wbits` and moves the following ones to
/// `last` and the stack, and only when `wbits` is empty too does it scan the bitmap for the
/// next word with free objects ([`take_word`]). None of this branches on the stack's count.
/// Measured with one thread replacing random objects of 16-1024 bytes in a table of 1000:
/// 22.3 → 14.0 ns a replacement (glibc 15, mimalloc 8.4); two threads (the report's larson-like
/// churn) 11.9 → 7.9 ns (glibc 8.0); a 16-byte pair 6.6 → 7.0 ns; a 16-byte batch 10.0 →
/// 9.5 ns (medians of 5 processes each, 2026-12-03).
///
/// What was tried and not kept: a free that did not branch on whether the span is current (it
/// mispredicts about 0.3 times a replacement in the churn), writing a non-current span's
/// object into a spare `Cur` instead: 12.3 ns a replacement, but 7.9 ns a pair, as the
/// store of the pointer then waited for the load of the span's state. Refilling `last` and
/// the stack straight from the bitmap at each scan, without `wbits`: a 16-byte batch took
/// 10.6 ns.
///
/// Invariants: `last`, the stack's objects and `wbits`' objects are distinct free objects of
/// the span (their local bits are set: a second free of one is caught); `last == 0` implies
/// `count == 0`; the bitmap is scanned only when `last` and `wbits` are empty, so the scan never
/// hands out an object held here. All of it is emptied when the span stops being current.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Cur {
    /// Its descriptor; null for none.
    sp: *const span::Span,
    /// Its bitmap.
    bits: *const AtomicU64,
    /// Its first byte.
    base: usize,
    /// Objects held in `last` and on the stack (`slots[1..count]`), at most `STACK + 1`.
    count: u32,
    /// The span's length in bytes; 0 for none (so no pointer is inside it).
    len: u32,
    /// The object of the span freed last, 0 for none.
    last: usize,
    /// Free objects of bitmap word `wword` (as bits; their local bits are still set), taken
    /// from the bitmap by [`take_word`]; the word's object 0 is at `wbase`.
    wbits: u64,
    wword: *const AtomicU64,
    wbase: usize,
    /// `slots[0]` is always 0; `slots[1..count]` is the stack of objects freed before `last`,
    /// the latest on top. With the 0 below the stack, taking the next `last` off it needs no
    /// branch on the count (LLVM turned a select on it into a branch that mispredicted one
    /// batch allocation in nine, 2026-12-03). An object pushed onto a full stack takes the top
    /// entry's place, which stays free in the bitmap only.
    slots: [usize; STACK + 1],
}

/// Entries of a [`Cur`]'s stack: with the 0 below it, a power of two (indices are masked),
/// and with the rest of a `Cur`, two cache lines.
const STACK: usize = 7;
const _: () = assert!(core::mem::size_of::<Cur>() == 128);

impl Cur {
    const NONE: Cur = Cur {
        sp: core::ptr::null(),
        bits: core::ptr::null(),
        base: 0,
        count: 0,
        len: 0,
        last: 0,
        wbits: 0,
        wword: core::ptr::null(),
        wbase: 0,
        slots: [0; STACK + 1],
    };
    fn of(si: u32, c: usize) -> Cur {
        let sp = desc(si);
        Cur {
            sp,
            bits: sp.bits.load(Ordering::Relaxed),
            base: span::span_addr(si),
            len: size_class::span_size(c) as u32,
            ..Cur::NONE
        }
    }
    fn get(&self) -> Option<u32> {
        (!self.sp.is_null()).then(|| span::slot_of(self.base))
    }
}

/// Allocates an object of class `c` from heap `l`'s current span; null if it has none free
/// (the caller takes [`take_slow`]).
#[inline(always)]
pub fn take(l: &mut Local, c: usize) -> *mut u8 {
    take_class(l, c).0
}

/// [`take`], with `c` handed back beside the object (see [`super::tcache::pop_host`]).
#[inline(always)]
pub fn take_class(l: &mut Local, c: usize) -> (*mut u8, usize) {
    let p = take_last(l, c);
    if p.is_null() {
        return take_word(&mut l.cur[c], c);
    }
    (p, c)
}

/// [`take`] from the current span's object freed last and the stack below it only; null if
/// both are empty (the caller goes on to the bitmap through [`take`] or [`take_class`]).
#[inline(always)]
pub fn take_last(l: &mut Local, c: usize) -> *mut u8 {
    // `get_mut`, not an index: a class out of range goes to the caller's slow path, which
    // panics there, and this path makes no call (see [`free_current`]).
    let Some(cur) = l.cur.get_mut(c) else {
        return core::ptr::null_mut();
    };
    let p = cur.last;
    if p == 0 {
        return core::ptr::null_mut();
    }
    // Refilled from the stack without a branch: with an empty stack, from the 0 below it.
    // `count >= 1` since `last` is not 0.
    let n = cur.count.wrapping_sub(1);
    cur.last = cur.slots[n as usize & STACK];
    cur.count = n;
    let i = size_class::index_of(c, p - cur.base);
    // SAFETY: `bits` is the current span's bitmap and `p` an object of it, so
    // `i / 64 < words(c)`; metadata memory is never unmapped.
    let word = unsafe { &*cur.bits.add(i / 64) };
    word.store(
        word.load(Ordering::Relaxed) & !(1u64 << (i % 64)),
        Ordering::Relaxed,
    );
    p as *mut u8
}

/// [`take`] when `last` is empty (so is the stack): the first object of `wbits` (after a scan
/// for the next bitmap word with free objects if it is empty), with the next ones moved to
/// `last` and the stack; null if the span has no free object or `cur` no span.
#[inline(never)]
fn take_word(cur: &mut Cur, c: usize) -> (*mut u8, usize) {
    let mut v = cur.wbits;
    if v == 0 {
        if cur.sp.is_null() {
            return (core::ptr::null_mut(), c);
        }
        // SAFETY: a non-null `sp` points into the descriptor table, which is never unmapped.
        let sp = unsafe { &*cur.sp };
        let Some((w, word)) = span::first_free_word(sp, cur.bits, c) else {
            return (core::ptr::null_mut(), c);
        };
        // SAFETY: `w < words(c)` (first_free_word); metadata memory is never unmapped.
        cur.wword = unsafe { cur.bits.add(w) };
        cur.wbase = cur.base + w * 64 * size_class::size_of(c);
        v = word;
    }
    let size = size_class::size_of(c);
    // SAFETY: `wword` is the bitmap word `wbits` came from, in metadata memory that is never
    // unmapped.
    let word = unsafe { &*cur.wword };
    word.store(
        word.load(Ordering::Relaxed) & !(v & v.wrapping_neg()),
        Ordering::Relaxed,
    );
    let p = cur.wbase + v.trailing_zeros() as usize * size;
    v &= v - 1;
    // The next ones, lowest first: `last`, then the stack from the top down.
    let mut objs = [0usize; STACK + 1];
    let mut m = 0;
    while v != 0 && m < objs.len() {
        objs[m] = cur.wbase + v.trailing_zeros() as usize * size;
        v &= v - 1;
        m += 1;
    }
    if m > 0 {
        cur.last = objs[0];
        for (j, &o) in objs[1..m].iter().rev().enumerate() {
            cur.slots[j + 1] = o;
        }
        cur.count = m as u32;
    }
    cur.wbits = v;
    (p as *mut u8, c)
}

/// [`take`] when the current span has no free object: the next span with free objects becomes
/// current (see the module). Null when memory is exhausted.
#[cold]
#[inline(never)]
pub fn take_slow<H: Hooks>(l: &mut Local, pending: &Pending, c: usize) -> *mut u8 {
    if let Some(si) = l.cur[c].get() {
        l.cur[c] = Cur::NONE;
        span::recount(si, c);
        let sp = desc(si);
        if ld(&sp.nfree) > 0 {
            push(&mut l.avail[c], si, State::Avail);
        } else {
            push(&mut l.full[c], si, State::Full);
        }
    }
    if linked(l.avail[c]).is_none() && pending.any(c) {
        collect::<H>(l, pending, c);
    }
    let si = match linked(l.avail[c]) {
        Some(si) => {
            remove(&mut l.avail[c], si);
            si
        }
        None => match adopt_or_fresh::<H>(l, c) {
            Some(si) => si,
            None => return core::ptr::null_mut(),
        },
    };
    desc(si).set_state(State::Current);
    l.cur[c] = Cur::of(si, c);
    take(l, c)
}

/// A span for heap `l`'s class `c`: one no heap owns, or a fresh one.
fn adopt_or_fresh<H: Hooks>(l: &mut Local, c: usize) -> Option<u32> {
    let t = l.tier;
    if let Some(si) = span::adopt(&mut span::BINS[t as usize][c].lock(), c, l.id) {
        return Some(si);
    }
    // A fresh span's pages are handed out and placed with the bin unlocked: placing them on a
    // full device may evict, which waits for page locks.
    let page = span::fresh_pages::<H>(t, c)?;
    let mut bin = span::BINS[t as usize][c].lock();
    let si = span::install(&mut bin, page, t, c, l.id);
    if si.is_none() {
        drop(bin);
        span::give_back_span::<H>(page, c);
    }
    si
}

/// Merges the remote frees other threads sent heap `l` for class `c`: full spans that got
/// some become avail.
fn collect<H: Hooks>(l: &mut Local, pending: &Pending, c: usize) {
    let mut bin = span::BINS[l.tier as usize][c].lock();
    span::drain_pending(&mut bin, pending, c, |si| {
        let sp = desc(si);
        debug_assert_eq!(ld(&sp.owner), l.id);
        if sp.state() == State::Full && ld(&sp.nfree) > 0 {
            remove(&mut l.full[c], si);
            push(&mut l.avail[c], si, State::Avail);
        }
    });
}

/// Frees object `p` of class `c` into its span if heap `l` owns that span: true when done,
/// false when the caller must free it as another thread's. Aborts with a message on a double
/// free, a pointer into the middle of an object, or one of a span of another size.
#[inline(always)]
pub fn free_local<H: Hooks>(l: &mut Local, c: usize, p: *mut u8) -> bool {
    if free_current(l, c, p) {
        return true;
    }
    free_owned::<H>(l, c, p)
}

/// [`free_local`] into the class's current span only: false if `p` is not of that span, or
/// the span has remote frees (the caller goes on to [`free_local`]).
#[inline(always)]
pub fn free_current(l: &mut Local, c: usize, p: *mut u8) -> bool {
    // The class's current span first. An object inside it is of this heap and of class `c` (a
    // span is current in one heap, for its one class), so of the descriptor only
    // `remote_seen` is read. A 16-byte alloc+free pair ran 161 instructions through the table
    // of descriptors, 145 this way; a scrambled batch's free, which misses the current span,
    // 6 more (`valgrind --tool=callgrind`, 2026-12-03). The span's length is read from the
    // `Cur`: 0 for a `Cur` without a span (whose base is 0), so that a pointer below 64 KiB
    // reaches the general path and its message, not a null descriptor.
    // `get_mut`, not an index: with the index's panic on the path, the compiler kept the
    // arguments in registers it saved and restored at every call of `tcache::free_on_tier`.
    let Some(cur) = l.cur.get_mut(c) else {
        return false;
    };
    let in_cur = (p as usize).wrapping_sub(cur.base);
    if in_cur < cur.len as usize {
        // SAFETY: `len` is not 0, so `sp` is the current span's descriptor, in the table that
        // is never unmapped.
        let sp = unsafe { &*cur.sp };
        if !sp.remote_seen.load(Ordering::Relaxed) {
            let i = span::index_at(c, in_cur);
            // SAFETY: `bits` is the current span's bitmap and `i` an object of it, so
            // `i / 64 < words(c)`; metadata memory is never unmapped.
            let word = unsafe { &*cur.bits.add(i / 64) };
            set_free(sp, word, i);
            push_current(cur, p);
            return true;
        }
    }
    false
}

/// [`free_local`] past the current span: `p` goes back to its span if heap `l` owns it. Call it
/// only after [`free_current`] declined `p`: an object of the current span with `remote_seen`
/// clear is taken to be elsewhere.
#[inline(always)]
pub fn free_owned<H: Hooks>(l: &mut Local, c: usize, p: *mut u8) -> bool {
    let off = (p as usize).wrapping_sub(l.arena_base);
    if off >= l.arena_size {
        return false;
    }
    // The span a class-`c` object at `off` would be in: if `p` is of another class, its
    // slot's span is another one, which this heap either does not own (the caller's path
    // then checks the slot's class) or owns with another class (checked below).
    let si = span::head_slot((off >> size_class::SLOT_SHIFT) as u32, c);
    // SAFETY: `off` is inside the range, so `si` is a slot of the table (never unmapped),
    // whose descriptors are only ever shared.
    let sp = unsafe { &*l.descs.add(si as usize) };
    // Only this heap sets or clears its own id on a span, so the check cannot go stale; and
    // a span it owns is live, so its descriptor's class is its class.
    if ld(&sp.owner) != l.id {
        return false;
    }
    if sp.class.load(Ordering::Relaxed) as usize != c {
        span::wrong_size();
    }
    if sp.remote_seen.load(Ordering::Relaxed) {
        free_seen::<H>(l, sp, si, c, off, p);
    } else {
        // Not the current span: an object of that one, with `remote_seen` clear, took the
        // path above.
        put_back::<H, false>(l, sp, si, c, off, p);
    }
    true
}

/// [`free_local`] into a span that other threads freed objects of: the object must not also
/// wait in another thread's buffer or in the span's remote bitmap. Out of line: inlined, the
/// loads of that check took more registers in every free, which saved and restored five
/// (three this way; a 16-byte alloc+free pair ran 164 instructions, 162 this way, 2026-12-03).
#[inline(never)]
fn free_seen<H: Hooks>(l: &mut Local, sp: &span::Span, si: u32, c: usize, off: usize, p: *mut u8) {
    if cached::is_marked_at(off) {
        super::double_free();
    }
    put_back::<H, true>(l, sp, si, c, off, p);
}

/// Frees object `p` (at offset `off` of the managed range) into its span (`si`, descriptor
/// `sp`, class `c`), which heap `l` owns; aborts on a double free or a pointer into an object.
/// `MAYBE_CURRENT`: false when the caller knows the span is not its class's current one.
#[inline(always)]
fn put_back<H: Hooks, const MAYBE_CURRENT: bool>(
    l: &mut Local,
    sp: &span::Span,
    si: u32,
    c: usize,
    off: usize,
    p: *mut u8,
) {
    // The offset in the span from its first slot: two instructions, where the mask of
    // `index_in` computes the span's size from the class.
    let i = span::index_at(c, off - ((si as usize) << size_class::SLOT_SHIFT));
    set_free(sp, sp.local(i / 64), i);
    debug_assert!(MAYBE_CURRENT || !sp.is_current());
    if MAYBE_CURRENT && sp.is_current() {
        push_current(&mut l.cur[c], p);
    } else {
        let nfree = ld(&sp.nfree) + 1;
        st(&sp.nfree, nfree);
        if nfree == 1 || nfree as usize == size_class::objects_per_span(c) {
            moved::<H>(l, si, c, nfree);
        }
    }
}

/// Sets object `i`'s bit in `word`, its word of span `sp`'s local bitmap (the owner's), and
/// moves the span's hint down to it; aborts if the bit was set (a double free).
#[inline(always)]
fn set_free(sp: &span::Span, word: &AtomicU64, i: usize) {
    let (v, b) = (word.load(Ordering::Relaxed), 1u64 << (i % 64));
    if v & b != 0 {
        super::double_free();
    }
    word.store(v | b, Ordering::Relaxed);
    if ((i / 64) as u16) < sp.hint.load(Ordering::Relaxed) {
        sp.hint.store((i / 64) as u16, Ordering::Relaxed);
    }
}

/// Puts `p`, an object of `cur`'s span just freed, in `last`; the one there goes on top of
/// the stack (with `last == 0`, `count == 0` and the 0 is written over the 0 below the stack),
/// and on a full stack it takes the top entry's place.
#[inline(always)]
fn push_current(cur: &mut Cur, p: *mut u8) {
    let count = cur.count;
    cur.slots[count.min(STACK as u32) as usize & STACK] = cur.last;
    cur.count = (count + 1).min(STACK as u32 + 1);
    cur.last = p as usize;
}

/// After a free made span `si`'s local free count `nfree` (its first, or all of its objects):
/// a full span becomes avail; an avail span that is all free goes back to the page runs if
/// another avail span is left.
#[cold]
fn moved<H: Hooks>(l: &mut Local, si: u32, c: usize, nfree: u32) {
    let sp = desc(si);
    match sp.state() {
        State::Full => {
            remove(&mut l.full[c], si);
            push(&mut l.avail[c], si, State::Avail);
            if nfree as usize == size_class::objects_per_span(c) {
                moved::<H>(l, si, c, nfree);
            }
        }
        State::Avail if nfree as usize == size_class::objects_per_span(c) => {
            if l.avail[c] == link(si) && ld(&sp.next) == 0 {
                return; // The only avail span: kept for the next allocations.
            }
            // Called from `free`'s fast path, which leaves `errno` alone: giving pages back
            // may start the purger.
            let errno = crate::pal::sys::errno();
            let page = {
                let mut bin = span::BINS[l.tier as usize][c].lock();
                if sp.queued.load(Ordering::Relaxed) {
                    return; // Remote frees wait for the merge: it is not all free.
                }
                remove(&mut l.avail[c], si);
                span::release_span(&mut bin, si)
            };
            span::give_back_span::<H>(page, c);
            crate::pal::sys::set_errno(errno);
        }
        _ => {}
    }
}

/// Lets go of every span heap `l` owns (its thread exits, or its tier changes), after merging
/// its pending remote frees: the bins keep them for the next heap that needs one, and the free
/// ones go back to the page runs.
pub fn abandon<H: Hooks>(l: &mut Local, pending: &Pending) {
    for c in 0..NCLASSES {
        if l.cur[c].sp.is_null() && l.avail[c] == 0 && l.full[c] == 0 && !pending.any(c) {
            continue;
        }
        let mut released = [0usize; 16];
        loop {
            let mut n = 0;
            {
                let mut bin = span::BINS[l.tier as usize][c].lock();
                span::drain_pending(&mut bin, pending, c, |_| {});
                while n < released.len() {
                    let Some(si) = next_owned(l, c) else { break };
                    if let Some(page) = span::disown(&mut bin, si, c) {
                        released[n] = page;
                        n += 1;
                    }
                }
            }
            for &page in &released[..n] {
                span::give_back_span::<H>(page, c);
            }
            if n < released.len() {
                break;
            }
        }
    }
}

/// Takes one span of class `c` off heap `l`'s current slot or lists.
fn next_owned(l: &mut Local, c: usize) -> Option<u32> {
    if let Some(si) = l.cur[c].get() {
        l.cur[c] = Cur::NONE;
        span::recount(si, c);
        return Some(si);
    }
    for head in [&mut l.avail[c], &mut l.full[c]] {
        if let Some(si) = linked(*head) {
            remove(head, si);
            return Some(si);
        }
    }
    None
}
