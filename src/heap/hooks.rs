//! What the heap needs from the layers above it, as a trait it is generic over: the tiering
//! layer implements it (`tiering::hooks::Tiering`) and the allocator façade names that type, so
//! every call is resolved at compile time (as snmalloc's `Allocator<Config>` and talc's
//! `Talc<S: Source>` do) and the heap imports nothing above itself.

use crate::mem::scope::TierIndex;

/// The heap's calls upward. Every method may be called with heap locks *not* held, and none
/// is called on the fault path.
pub trait Hooks {
    /// Readies tier `t` for an allocation: returns `t` when it is the host or a device that
    /// can take memory (starting devices and the fault backend if needed), else 0 (the host).
    /// Called before any heap lock is taken (it may allocate: nested requests go to the host).
    fn prepare(t: TierIndex) -> TierIndex;

    /// Creates the fresh pages `[page, page+n)`, just handed out and never touched, on device
    /// `d` without a copy. False when they stay on the host.
    fn place_fresh(page: usize, n: usize, d: u16) -> bool;

    /// True when `[p, p+len)` reads as zero without being written (device-resident, never
    /// touched), so zeroing it would only fault it back.
    fn reads_as_zero(p: usize, len: usize) -> bool;

    /// Takes back pages `[page, page+n)` that the heap is freeing: locks each page entry and
    /// releases its device frame or duplicate. Called with signals blocked and no heap lock.
    fn claim_freed(page: usize, n: usize);

    /// The tier a large run `[page, page+n)` that `realloc` moves follows: where most of its
    /// pages live (0 for the host).
    fn tier_of_run(page: usize, n: usize) -> TierIndex;

    /// Copies `len` bytes of the live block at `src` into the fresh block at `dst` wherever
    /// their pages live, without a CPU fault on device memory (`realloc`).
    fn copy_block(dst: usize, src: usize, len: usize);

    /// Runs once, when the heap has just been initialised (start-up registrations).
    fn started();
}
