//! Layer 10, reports: the stats snapshot and its table ([`stats`]), and the residency map and
//! trace timeline drawings ([`render`]). Reads every layer below; nothing below reads it.

pub mod render;
pub mod stats;
