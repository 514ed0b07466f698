//! Layer 4, the memory model: the managed range ([`arena`]), one entry per page saying where it
//! lives and who holds it ([`pagemap`]), per-block access counters ([`blocks`]), the global
//! counters ([`counters`]), the fork gate ([`gate`]), the thread's tier scope ([`scope`]) and the
//! event recorder ([`trace`]). Everything here is plain data with atomics: the fault path, the
//! heap and the tiering code all read and write it, and none of it calls up.

pub mod arena;
pub mod blocks;
pub mod counters;
pub mod gate;
pub mod pagemap;
pub mod scope;
pub mod trace;

/// Whether [`ensure_init`] succeeded (run once; racing callers yield until it is done).
static READY: spin::once::Once<bool, spin::relax::Yield> = spin::once::Once::new();

/// Reserves the managed range and maps the page map and the block counters, once. Everything
/// above (devices, the fault backend, the heap) starts on top of this. Allocates nothing.
pub fn ensure_init() -> bool {
    *READY.call_once(|| {
        arena::init(crate::config::arena_size()) && {
            let pages = arena::pages();
            pagemap::init(pages) && blocks::init(pages)
        }
    })
}
