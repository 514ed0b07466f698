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
    /// Part of the range is managed but not allocated (freed, or never handed out).
    NotAllocated {
        /// The first page address that is not part of a live allocation.
        addr: usize,
    },
    /// No device has this number.
    UnknownDevice {
        /// The device asked for.
        device: u16,
        /// How many devices exist (`0..devices` are valid).
        devices: u16,
    },
    /// The device cannot hold the pages; nothing was moved.
    DeviceFull {
        /// The device.
        device: u16,
        /// Bytes that had to move there.
        needed: usize,
        /// Bytes it had free.
        free: usize,
    },
    /// The signal backend would pass the kernel's limit on memory mappings
    /// (`vm.max_map_count`); nothing was moved.
    MapCountLimit {
        /// The kernel's limit.
        limit: usize,
    },
    /// A system call tieralloc needs failed.
    Sys {
        /// What was being done.
        what: &'static str,
        /// The `errno` it failed with.
        errno: i32,
    },
    /// The device list given to `set_devices` is not usable.
    BadDeviceConfig {
        /// What is wrong with it.
        why: &'static str,
    },
    /// Devices can only be configured before the first device is used.
    DevicesAlreadyInUse,
    /// A device kernel panicked (its panic message went to stderr); its pages are unpinned
    /// and intact up to what it wrote.
    KernelPanicked {
        /// The device it ran on.
        device: u16,
    },
    /// The installed [`crate::tiering::policy::Policy`] panicked while tieralloc asked it something
    /// (its panic message went to stderr). Nothing was left locked or pinned; the device's
    /// worker carries on.
    PolicyPanicked,
    /// The fault backend asked for with `TIERALLOC_FAULT` cannot be used by this process.
    BackendUnavailable {
        /// The backend asked for.
        backend: &'static str,
        /// Why not.
        why: &'static str,
    },
    /// Chaos migration ([`crate::chaos`]) needs the transparent `uffd` fault backend, under
    /// which system calls on device-resident memory work; this process uses another one.
    ChaosNeedsUffd {
        /// The backend in use.
        backend: &'static str,
    },
    /// A trace file (`TIERALLOC_TRACE`) could not be read.
    BadTrace {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
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
            Error::NotAllocated { addr } => write!(
                f,
                "page {addr:#x} is not part of a live allocation (freed or never allocated); \
                 only memory that is allocated can be migrated"
            ),
            Error::UnknownDevice { device, devices } => write!(
                f,
                "there is no device {device}: {devices} device(s) are configured \
                 (see TIERALLOC_DEVICES)"
            ),
            Error::DeviceFull {
                device,
                needed,
                free,
            } => write!(
                f,
                "device {device} is full: {needed} bytes must move there but only {free} are \
                 free; nothing was moved"
            ),
            Error::MapCountLimit { limit } => write!(
                f,
                "the signal fault backend would pass the kernel's limit of {limit} memory \
                 mappings (vm.max_map_count); nothing was moved. Migrate larger contiguous \
                 ranges, raise vm.max_map_count, or use TIERALLOC_FAULT=uffd"
            ),
            Error::Sys { what, errno } => write!(
                f,
                "{what} failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Error::BadDeviceConfig { why } => write!(f, "bad device configuration: {why}"),
            Error::DevicesAlreadyInUse => write!(
                f,
                "devices are already in use; set_devices must be called before the first \
                 device operation"
            ),
            Error::KernelPanicked { device } => write!(
                f,
                "a kernel on device {device} panicked (see the panic message above)"
            ),
            Error::PolicyPanicked => write!(
                f,
                "the placement policy panicked (see the panic message above)"
            ),
            Error::BackendUnavailable { backend, why } => write!(
                f,
                "the {backend} fault backend cannot be used here: {why} \
                 (set TIERALLOC_FAULT=auto to pick one that works)"
            ),
            Error::ChaosNeedsUffd { backend } => write!(
                f,
                "chaos migration needs the uffd fault backend (system calls on device memory \
                 work only there), and this process uses {backend}: chaos not started \
                 (TIERALLOC_FAULT=uffd needs root or vm.unprivileged_userfaultfd=1)"
            ),
            Error::BadTrace { line, why } => write!(
                f,
                "line {line} of the trace is not an event (time_us,addr,bytes,from,to,cause): \
                 {why}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// A broken internal invariant, as [`crate::check_invariants`] reports it: which one (a
/// formula or a sentence) and where (a page number; a span slot for span invariants).
///
/// ```
/// let bad = tieralloc::Invalid { what: "nfree == the bits set in the bitmap", at: 7 };
/// assert_eq!(bad.to_string(), "invariant broken at 7: nfree == the bits set in the bitmap");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid {
    /// The invariant.
    pub what: &'static str,
    /// Where it failed: a page number (a span slot for span invariants, `tier * 256 + class`
    /// for a bin).
    pub at: usize,
}

impl core::fmt::Display for Invalid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "invariant broken at {}: {}", self.at, self.what)
    }
}

impl std::error::Error for Invalid {}
