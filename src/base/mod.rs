//! Layer 1, the base: the public value types ([`tier::Tier`], [`error::Error`]) and every size
//! and limit constant ([`consts`]). Imports nothing from the crate.

pub mod consts;
pub mod error;
pub mod tier;
