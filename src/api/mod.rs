//! Layer 9, the tier API built on tiering: device kernels ([`kernel`]), asynchronous prefetch
//! ([`prefetch`]), advice ([`advice`]) and residency queries ([`residency`]).

pub mod advice;
pub mod chaos;
pub mod kernel;
pub mod prefetch;
pub mod residency;
