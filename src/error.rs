//! The one error type of tieralloc's public API.

use core::fmt;

/// Everything a tieralloc call can refuse, with a message a user can act on.
///
/// ```
/// let e = tieralloc::Error::NotManaged { addr: 0x1000 };
/// assert!(e.to_string().contains("not inside tieralloc's managed range"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The address does not belong to tieralloc's managed range (stack, static, another allocator).
    NotManaged {
        /// The first offending address.
        addr: usize,
    },
    /// A zero-length range was passed where at least one byte is needed.
    ZeroLength,
    /// `ptr + len` overflows the address space.
    RangeOverflow {
        /// Start of the range.
        addr: usize,
        /// Its length.
        len: usize,
    },
    /// The managed range could not be reserved (see `TIERALLOC_ARENA`).
    ArenaUnavailable {
        /// The size that was asked for, in bytes.
        requested: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotManaged { addr } => write!(
                f,
                "address {addr:#x} is not inside tieralloc's managed range \
                 (only memory allocated through TierAlloc can be managed)"
            ),
            Error::ZeroLength => write!(f, "the range is empty: pass a length of at least 1 byte"),
            Error::RangeOverflow { addr, len } => {
                write!(
                    f,
                    "range {addr:#x} + {len} bytes overflows the address space"
                )
            }
            Error::ArenaUnavailable { requested } => write!(
                f,
                "could not reserve the managed range of {requested} bytes; \
                 set TIERALLOC_ARENA to a smaller size (e.g. TIERALLOC_ARENA=8GiB)"
            ),
        }
    }
}

impl std::error::Error for Error {}
