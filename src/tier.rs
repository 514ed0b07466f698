//! Tiers: where a page can live.

/// Where pages live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Host memory (the CPU's).
    Host,
    /// The pool of emulated device `n` (see [`crate::devices`]).
    Device(u16),
}

impl Tier {
    /// The device number, or `None` for the host.
    pub fn device(self) -> Option<u16> {
        match self {
            Tier::Host => None,
            Tier::Device(d) => Some(d),
        }
    }
}
