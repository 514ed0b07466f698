//! Tiers: where a page can live.

/// Where pages live.
///
/// ```
/// # #[global_allocator]
/// # static A: tieralloc::TierAlloc = tieralloc::TierAlloc::new();
/// use tieralloc::Tier;
/// let v = vec![0u8; 1 << 16];
/// tieralloc::migrate(v.as_ptr(), v.len(), Tier::Device(0))?;
/// tieralloc::migrate(v.as_ptr(), v.len(), Tier::Host)?;
/// # Ok::<(), tieralloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Host memory (the CPU's).
    Host,
    /// The pool of emulated device `n` (see [`crate::devices`]).
    Device(u16),
}

impl Tier {
    /// The device number, or `None` for the host.
    ///
    /// ```
    /// use tieralloc::Tier;
    /// assert_eq!(Tier::Device(2).device(), Some(2));
    /// assert_eq!(Tier::Host.device(), None);
    /// ```
    pub fn device(self) -> Option<u16> {
        match self {
            Tier::Host => None,
            Tier::Device(d) => Some(d),
        }
    }
}
