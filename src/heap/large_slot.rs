//! A thread's last freed large run, kept for its next allocation of that length.
//!
//! Why: through the shared run cache ([`super::run_cache`]) an allocate-free pair of a 16 KiB to
//! 4 MiB block took five locked instructions (the live-length swap, a slot's compare-exchange
//! and swap, the cached-pages counter twice), 27 ns against mimalloc's 21 and glibc's 25 on the
//! project machine (2026-12-02); through a slot of the thread's own it takes two.
//!
//! Its thread fills the slot with a plain store (only when empty) and takes the run with a
//! swap; the purger may take it too (a swap), once it stayed unused for a purger period, so a
//! program that frees and sleeps gets the run back to the OS.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// Bits of a slot value that hold the run's length in pages.
const LEN_BITS: u32 = 11;

/// Misses after which a freed run of another length takes the slot ([`LargeSlot::keep`]).
/// Evicting at every such free cost a two-thread churn of 16 B-64 KiB blocks 9% (80 -> 87 ns
/// a replacement, 2026-12-02): the swap and the shared cache's push each time.
const EVICT_AFTER_MISSES: u32 = 4;

/// One thread's slot. All zeroes is an empty slot.
pub struct LargeSlot {
    /// `(page + 1) << LEN_BITS | pages`, 0 when empty.
    run: AtomicUsize,
    /// Set by its thread at every use; cleared by the purger when it looks.
    used: AtomicBool,
    /// Large allocations of another length since the run came (its thread's, plain).
    misses: AtomicU32,
}

fn encode(h: usize, n: usize) -> usize {
    (h + 1) << LEN_BITS | n
}

/// The run (`page`, `pages`) of non-zero slot value `v`.
fn decode(v: usize) -> (usize, usize) {
    ((v >> LEN_BITS) - 1, v & ((1 << LEN_BITS) - 1))
}

impl LargeSlot {
    /// The run of `n` pages the slot holds, if it holds one of that length (its first page);
    /// its thread only.
    #[inline]
    pub fn take(&self, n: usize) -> Option<usize> {
        let v = self.run.load(Ordering::Relaxed);
        if v == 0 {
            return None;
        }
        if decode(v).1 != n {
            let m = self.misses.load(Ordering::Relaxed);
            self.misses.store(m.saturating_add(1), Ordering::Relaxed);
            return None;
        }
        if self.run.swap(0, Ordering::AcqRel) != v {
            return None; // the purger took it
        }
        self.mark_used();
        Some(decode(v).0)
    }

    /// Keeps the freed run of `n` pages at `h` (at most [`super::run_cache::MAX_PAGES`]);
    /// its thread only. Returns the run the caller must still free as any freed run: none if
    /// it was kept in an empty slot; the run of another length the slot held, if that one
    /// missed [`EVICT_AFTER_MISSES`] allocations (so that a program's pairs of one size are
    /// served here even after it used another size); else `(h, n)` itself.
    #[inline]
    pub fn keep(&self, h: usize, n: usize) -> Option<(usize, usize)> {
        debug_assert!(n <= super::run_cache::MAX_PAGES);
        let old = if self.run.load(Ordering::Relaxed) == 0 {
            // Only its thread fills the slot; the purger only empties it.
            self.run.store(encode(h, n), Ordering::Release);
            0
        } else if self.misses.load(Ordering::Relaxed) >= EVICT_AFTER_MISSES {
            self.run.swap(encode(h, n), Ordering::AcqRel)
        } else {
            return Some((h, n));
        };
        self.misses.store(0, Ordering::Relaxed);
        self.mark_used();
        (old != 0).then(|| decode(old))
    }

    /// Takes the run out of the slot, if any: all runs if `all`, else only one that stayed
    /// unused since the last such call (the purger's, every other tick).
    pub fn drain(&self, all: bool) -> Option<(usize, usize)> {
        if self.used.swap(false, Ordering::Relaxed) && !all {
            return None;
        }
        self.empty()
    }

    /// Takes the run out of the slot, if any.
    pub fn empty(&self) -> Option<(usize, usize)> {
        let v = self.run.swap(0, Ordering::AcqRel);
        (v != 0).then(|| decode(v))
    }

    fn mark_used(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }
}
