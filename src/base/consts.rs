//! Every size and limit constant, in one place.

/// Size of a base page on every platform tieralloc supports (x86-64, aarch64 4K kernels).
pub const PAGE_SIZE: usize = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;
/// Most devices one process can configure.
pub const MAX_DEVICES: usize = 16;
/// Longest device name kept (longer names are cut).
pub const NAME_MAX: usize = 24;
/// Capacity of the default device (one device, `dev0`).
pub const DEFAULT_CAPACITY: usize = 1 << 30;
/// Default size of the managed range: 64 GiB of address space, reserved with `MAP_NORESERVE`,
/// so only pages that are touched cost memory. Covers all memory of a 24 GiB machine with room
/// for fragmentation.
pub const DEFAULT_ARENA: usize = 64 << 30;
/// Smallest managed range accepted from `TIERALLOC_ARENA`.
pub const MIN_ARENA: usize = 64 << 20;
