//! Layer 2, the platform: every system call tieralloc makes ([`sys`]: memory mappings, page
//! tables, signals, `/proc`; [`uffd`]: the userfaultfd ioctls), the lock every layer uses
//! ([`lock`]) and fault injection for the tests ([`inject`]). What the fault path may call is
//! async-signal-safe and allocates nothing; RELIABILITY.md's signal-safety audit names each call.

pub mod inject;
pub mod lock;
pub mod sys;
pub mod uffd;
