//! Layer 2, the platform: every system call tieralloc makes, on `nix` (with `libc` only where
//! `nix` lacks the call, said at each place).
//! - [`sys`]: mappings, protections, page tables (`mincore`, `/proc/self/pagemap`), `errno`,
//!   messages;
//! - [`uffd`]: the userfaultfd and its ioctls;
//! - [`signal`]: signal masks, the fault handler's installation and chaining;
//! - [`thread`]: tieralloc's raw threads, affinity, thread-exit keys, yielding, sleeping, clock;
//! - [`process`]: ids, environment, `fork` and exit callbacks;
//! - [`tls`]: the thread-local words the fast path reads, without a call;
//! - [`file`]: `/proc` reads and the `/proc/self/mem` descriptor;
//! - [`lock`]: the lock every layer uses; [`inject`]: fault injection for the tests.
//!
//! What the fault path may call is async-signal-safe and allocates nothing; RELIABILITY.md's
//! signal-safety audit names each call.

pub mod file;
pub mod inject;
pub mod lock;
pub mod process;
pub mod signal;
pub mod sys;
pub mod thread;
pub mod tls;
pub mod uffd;
