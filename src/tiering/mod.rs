//! Layer 8, tiering: the migration protocol and the decisions around it. [`migrate`] moves pages
//! (write-protect, copy, switch, release); [`fault_back`] brings them back on a CPU fault; [`evict`] makes
//! room; [`duplicate`] keeps read-mostly copies; [`policy`] decides; [`placement`] creates
//! device-tier allocations on their device; [`relocate`] copies a block that `realloc` moves
//! without faulting either side. The heap (a lower layer) reaches placement, relocation and
//! take-back only through its `Hooks` trait, which `init` implements with these functions.

pub mod check;
pub mod duplicate;
pub mod evict;
pub mod fault_back;
pub mod freed;
pub mod migrate;
pub mod placement;
pub mod policy;
#[cfg(test)]
pub mod protocol_model;
pub mod relocate;
