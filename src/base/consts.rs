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
/// How long freed pages stay mapped for reuse before they go back to the OS, by default (ms;
/// `TIERALLOC_PURGE_DELAY`). Long enough that a program which frees a working set and builds it
/// again (a request loop, an image pipeline, the allocator report's batches, whose gaps between
/// rounds reach about a second) reuses warm pages instead of having the kernel zero fresh ones;
/// short enough that memory a program is done with leaves soon. A 100 ms delay left the report's
/// batch workloads 3.3–5.6× mimalloc, 1 s 0.8–3.2×. mimalloc uses 10 ms (purged lazily, on
/// later allocator calls), jemalloc 10 s.
pub const DEFAULT_PURGE_DELAY_MS: u32 = 1000;
/// Freed pages kept mapped at most, whatever their age (1 GiB): the bound on what the delay
/// keeps when a program frees faster than the delay passes.
pub const RETAIN_MAX_PAGES: usize = 1 << 18;
/// A freed run at least this long (256 MiB) goes back to the OS at once: reusing it is rare,
/// and zeroing it again costs little next to using it. (At 64 MiB, a program growing a 64 MiB
/// buffer again and again by `realloc` paid the kernel's zeroing every time: 3.9× mimalloc,
/// which keeps it for its purge delay.)
pub const HUGE_RUN_PAGES: usize = 1 << 16;
