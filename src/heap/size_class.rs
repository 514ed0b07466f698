//! Size classes for small objects.
//!
//! A small object (at most [`SMALL_MAX`] bytes, alignment at most [`SMALL_MAX`]) is served from
//! a span of [`span_size`] bytes (64 or 128 KiB) holding objects of one class. The class is a
//! pure function of the `Layout` (size and alignment), so `dealloc`, which Rust hands the same
//! layout, finds the class without reading any metadata. Object `i` of a span lives at
//! `span + i * size`; spans are aligned to their size, so a class guarantees the largest power
//! of two dividing its size.

/// Bytes per span slot (16 pages): the side tables (descriptors, classes, tiers) have one
/// entry per slot, and a span is one slot or two ([`span_slots`]), aligned to its own size.
pub const SLOT_SIZE: usize = 64 << 10;
/// `log2(SLOT_SIZE)`.
pub const SLOT_SHIFT: u32 = 16;
/// Objects above this size live in spans of two slots (128 KiB), the rest in spans of one.
///
/// Why: a thread that keeps about as many live objects of a class as a span holds finds a
/// free's object outside the class's current span at random, and that branch mispredicts.
/// In the larson-like churn each thread keeps about 127 live objects of each of the classes
/// 768, 896 and 1024, and a 64 KiB span holds 85, 73 and 64: the branch mispredicted 0.31
/// times a replacement (`valgrind --branch-sim`, 2026-12-04), which took 7.8-8.0 ns against
/// mimalloc's 4.8-5.2. With 128 KiB spans for every class it took 5.7-6.4 ns, but a program
/// that frees everything and sleeps (`alloc_purge`) kept 1.29 MiB above its starting RSS
/// against 892 KiB, as every span of its small classes doubled; with 256 KiB spans a race
/// test's fault count changed. Only the classes above 512 bytes hold fewer than 128 objects in
/// a slot, so only theirs are two slots: a replacement now mispredicts 0.12 branches in all
/// (0.50 before, mimalloc 0.17), and the report's churn went from 1.44× to 0.99× mimalloc.
pub const TWO_SLOTS_ABOVE: usize = 512;
/// The largest span: two slots.
pub const MAX_SPAN_SIZE: usize = 2 * SLOT_SIZE;
// The reciprocals below find an object's index exactly for offsets below 2^32 / size.
const _: () = assert!(MAX_SPAN_SIZE < (1 << 32) / SMALL_MAX);
/// Largest small object; anything bigger is a page run.
pub const SMALL_MAX: usize = 8192;

/// Object sizes of the classes, ascending: 8, 16, 24, 32, then steps of 16 up to 128, then four
/// classes per doubling up to 8 KiB (at most 25% internal fragmentation).
pub const SIZES: [u32; NCLASSES] = [
    8, 16, 24, 32, 48, 64, 80, 96, 112, 128, // tiny
    160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, // small
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, // medium
];
/// Number of classes.
pub const NCLASSES: usize = 34;

// The lookup tables below are `const`, not `static`: a `static` used by the inlined fast path
// in the program's crate is reached through the GOT (rustc emits `R_X86_64_GOTPCREL`, which
// the linker does not relax), one more dependent load per lookup; a `const` becomes a private
// copy addressed with `lea`. A 16-byte pair took 6.82 ns against 6.93 with `static`s (12
// alternated runs of 10^8 pairs each, 2026-12-03).

/// `class of size` for sizes up to 1024, indexed by `(size + 7) / 8`, plus 256 for alignment 16
/// (the C library's): entries `0..=128` for alignments up to 8, `256..=384` the smallest class
/// whose size is a multiple of 16. The alignment picks its half with an `and` and a shift, no
/// compare (see [`class_of`]).
const BY_8: [u8; 385] = {
    let (a, b) = (build_table::<129>(8, 8), build_table::<129>(8, 16));
    let mut t = [0u8; 385];
    let mut i = 0;
    while i < 129 {
        t[i] = a[i];
        t[256 + i] = b[i];
        i += 1;
    }
    t
};
/// `class of size` for sizes from 1025 to 8192, indexed by `(size + 127) / 128` (every class
/// above 1024 bytes is a multiple of 256, so one table serves alignments up to 16).
const BY_128: [u8; 65] = build_table::<65>(128, 8);

const fn build_table<const N: usize>(step: usize, align: usize) -> [u8; N] {
    let mut t = [0u8; N];
    let mut i = 0;
    while i < N {
        let size = i * step;
        let mut c = 0;
        while c < NCLASSES && ((SIZES[c] as usize) < size || SIZES[c] as usize % align != 0) {
            c += 1;
        }
        t[i] = if c < NCLASSES {
            c as u8
        } else {
            (NCLASSES - 1) as u8
        };
        i += 1;
    }
    t
}

/// The size class of a `size`-byte request aligned to `align`, or `None` if it is a page run.
///
/// Alignments up to 16 (Rust's usual ones, and `malloc`'s) take two compares and a table read
/// (it was 16 instructions, run at every allocation and free, 2026-12-03; then 14, with a
/// compare choosing the table's row; now 11); larger ones an out-of-line walk.
#[inline(always)]
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    if align > 16 {
        return class_aligned(size, align);
    }
    class_of_16(size, align)
}

/// [`class_of`] for an alignment of at most 16 only (the class of a larger one may not honour
/// it). The fast paths send larger alignments elsewhere first, with a jump: with the call to
/// [`class_aligned`] on their path, the compiler saved and restored registers at every
/// allocation and free.
#[inline(always)]
pub fn class_of_16(size: usize, align: usize) -> Option<usize> {
    debug_assert!(align <= 16);
    if size <= 1024 {
        // `align & 16` is 16 for alignment 16 and 0 below it (a power of two up to 16), and
        // `(size + 7) >> 3 <= 128`: the `or` adds 256 for alignment 16.
        let i = ((size + 7) >> 3) | ((align & 16) << 4);
        debug_assert!(i < BY_8.len());
        // SAFETY: `i <= 128 | 256 = 384 < 385`, as above (the compiler cannot see it, and
        // checked the bound: 2 more instructions).
        Some(unsafe { *BY_8.get_unchecked(i) } as usize)
    } else if size <= SMALL_MAX {
        Some(BY_128[(size + 127) >> 7] as usize)
    } else {
        None
    }
}

/// [`class_of`] for alignments above 16.
#[inline(never)]
fn class_aligned(size: usize, align: usize) -> Option<usize> {
    if size > SMALL_MAX || align > SMALL_MAX {
        return None;
    }
    let mut c = class_of(size, 16)?;
    // Walk up to the first class whose size is a multiple of the alignment; the powers of
    // two in SIZES guarantee one exists at or below SMALL_MAX.
    while SIZES[c] as usize & (align - 1) != 0 {
        c += 1;
    }
    Some(c)
}

/// What the fast paths need of a class, in one 16-byte entry: one table load finds an
/// object's index and checks it (before, three tables were read through three addresses).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Info {
    /// Multiplier that turns a byte offset inside a span into an object index without
    /// dividing: `index = (offset * recip) >> 32`, with `recip = 2^32 / size + 1`.
    recip: u64,
    /// The object size.
    size: u32,
    /// Objects per span (the division it replaces was the one `div` on the path that returns
    /// objects to their spans: 2% of a 16-byte batch's samples).
    per_span: u32,
}

const INFO: [Info; NCLASSES] = {
    let mut t = [Info {
        recip: 0,
        size: 0,
        per_span: 0,
    }; NCLASSES];
    let mut c = 0;
    while c < NCLASSES {
        t[c] = Info {
            recip: (1u64 << 32) / SIZES[c] as u64 + 1,
            size: SIZES[c],
            per_span: (span_bytes(SIZES[c] as usize) / SIZES[c] as usize) as u32,
        };
        c += 1;
    }
    t
};

/// Object size of class `c`.
#[inline(always)]
pub fn size_of(c: usize) -> usize {
    INFO[c].size as usize
}

/// Local bitmap words of a span of class `c` (64 objects a word), from a table.
#[inline(always)]
pub fn words_per_span(c: usize) -> usize {
    WORDS[c] as usize
}

const WORDS: [u32; NCLASSES] = {
    let mut t = [0u32; NCLASSES];
    let mut c = 0;
    while c < NCLASSES {
        t[c] = (span_bytes(SIZES[c] as usize) / SIZES[c] as usize).div_ceil(64) as u32;
        c += 1;
    }
    t
};

/// Bytes of a span of objects of `size` bytes.
const fn span_bytes(size: usize) -> usize {
    if size > TWO_SLOTS_ABOVE {
        2 * SLOT_SIZE
    } else {
        SLOT_SIZE
    }
}

/// Bytes of a span of class `c` (a multiple of [`SLOT_SIZE`], the span aligned to it).
#[inline(always)]
pub fn span_size(c: usize) -> usize {
    span_bytes(size_of(c))
}

/// Slots of a span of class `c`: 1 or 2.
#[inline(always)]
pub fn span_slots(c: usize) -> usize {
    span_size(c) >> SLOT_SHIFT
}

/// Objects per span for class `c`.
#[inline(always)]
pub fn objects_per_span(c: usize) -> usize {
    INFO[c].per_span as usize
}

/// Index of the object at byte `offset` (below [`span_size`]) of a span of class `c`, exact
/// for every offset inside an object (checked by the `reciprocal_is_exact` test).
#[inline(always)]
pub fn index_of(c: usize, offset: usize) -> usize {
    ((offset as u64 * INFO[c].recip) >> 32) as usize
}

/// Index of the object that starts at byte `offset` (below [`span_size`]) of a span of class
/// `c`, or `None` if no object of the span starts there (the middle of one, or the tail of
/// the span that holds no whole object).
///
/// The start test without a multiply back: with `offset = i * size + r` and
/// `recip = (2^32 + e) / size` (`0 < e <= size`), the low 32 bits of `offset * recip` are
/// `i * e + r * recip`; `i * e <= MAX_SPAN_SIZE < recip` (as `size <= SMALL_MAX`), so they are
/// below `recip` exactly when `r == 0` (checked for every offset by `start_test_is_exact`).
#[inline(always)]
pub fn start_index(c: usize, offset: usize) -> Option<usize> {
    let info = &INFO[c];
    let m = offset as u64 * info.recip;
    let i = (m >> 32) as usize;
    ((m as u32 as u64) < info.recip && i < info.per_span as usize).then_some(i)
}

/// How many objects a thread keeps cached for class `c`: up to 64, at most ~128 KiB worth.
pub fn tcache_capacity(c: usize) -> u32 {
    ((128 << 10) / size_of(c)).clamp(8, 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_and_alignment_gets_a_fitting_class() {
        for size in 1..=SMALL_MAX {
            for shift in 0..=13 {
                let align = 1usize << shift;
                let c = class_of(size, align).expect("small request must have a class");
                assert!(size_of(c) >= size, "class too small for {size}");
                assert_eq!(
                    size_of(c) % align.min(SLOT_SIZE),
                    0,
                    "class misaligns {size}/{align}"
                );
                // The smallest fitting class is chosen.
                if c > 0 && size_of(c - 1) % align == 0 {
                    assert!(
                        size_of(c - 1) < size,
                        "{size}/{align} skipped class {}",
                        c - 1
                    );
                }
            }
        }
        assert_eq!(class_of(SMALL_MAX + 1, 8), None);
        assert_eq!(class_of(64, SMALL_MAX * 2), None);
    }

    #[test]
    fn reciprocal_is_exact() {
        for c in 0..NCLASSES {
            for i in 0..objects_per_span(c) {
                let base = i * size_of(c);
                assert_eq!(index_of(c, base), i, "class {c} object {i}");
                assert_eq!(
                    index_of(c, base + size_of(c) - 1),
                    i,
                    "class {c} interior {i}"
                );
            }
        }
    }

    #[test]
    fn start_test_is_exact() {
        for c in 0..NCLASSES {
            let size = size_of(c);
            for off in 0..span_size(c) {
                let whole = off / size < objects_per_span(c);
                let want = (off % size == 0 && whole).then_some(off / size);
                assert_eq!(start_index(c, off), want, "class {c} offset {off}");
            }
        }
    }

    #[test]
    fn sizes_ascend() {
        assert!(SIZES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*SIZES.last().unwrap() as usize, SMALL_MAX);
    }
}
