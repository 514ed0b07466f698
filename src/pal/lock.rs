//! The lock for tieralloc's shared state (heap bins and page runs, device and worker tables,
//! the fault backend's start-up): `spin`'s mutex, waiting the way tieralloc needs.
//!
//! Held only for short, allocation-free critical sections (sending freed objects to their spans,
//! carving page runs). A waiter spins briefly (64 rounds, the holder is usually on another CPU
//! and about to release) and then yields the CPU at each try (`spin::relax::Yield`), which
//! matters on machines with few cores where the holder may have been descheduled. The fault
//! path never takes these locks. `fork` handlers take every lock before `fork` and release them
//! in both processes ([`Lock::lock_for_fork`]), so a child never inherits a lock held by a
//! thread that does not exist there.

use spin::mutex::{SpinMutex, SpinMutexGuard};
use spin::relax::Yield;

/// A lock protecting a `T`.
pub struct Lock<T>(SpinMutex<T, Yield>);

/// Proof that the lock is held; unlocks on drop.
pub type Guard<'a, T> = SpinMutexGuard<'a, T, Yield>;

impl<T> Lock<T> {
    /// A new, unlocked lock.
    pub const fn new(value: T) -> Self {
        Lock(SpinMutex::new(value))
    }

    /// Takes the lock: one attempt, then a short spin, then yielding until it is free.
    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        match self.0.try_lock_weak() {
            Some(g) => g,
            None => self.lock_slow(),
        }
    }

    #[cold]
    fn lock_slow(&self) -> Guard<'_, T> {
        for _ in 0..64 {
            core::hint::spin_loop();
            if !self.0.is_locked() {
                if let Some(g) = self.0.try_lock_weak() {
                    return g;
                }
            }
        }
        self.0.lock()
    }

    /// Takes the lock and keeps it held with no guard (for `fork` preparation).
    pub fn lock_for_fork(&self) {
        core::mem::forget(self.lock());
    }

    /// The value, while this thread holds the lock without a guard ([`Lock::lock_for_fork`]).
    ///
    /// # Safety
    /// This thread holds the lock through `lock_for_fork`, no guard exists, and the reference
    /// is gone before [`Lock::unlock_after_fork`].
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn held_value(&self) -> &mut T {
        // SAFETY: forwarded contract: the lock is held by this thread and nothing else refers
        // to the value.
        unsafe { &mut *self.0.as_mut_ptr() }
    }

    /// Releases a lock taken by [`Lock::lock_for_fork`].
    ///
    /// # Safety
    /// The lock must be held by a `lock_for_fork` call of this thread (or of the parent, in a
    /// child process), and no guard for it may exist.
    pub unsafe fn unlock_after_fork(&self) {
        // SAFETY: forwarded contract: the lock is held and nobody holds a guard.
        unsafe { self.0.force_unlock() }
    }
}
