//! Thread-local words the allocator's fast path reads, with the initial-exec TLS model.
//!
//! Why by hand: rustc compiles a library crate as position-independent code, and a
//! `thread_local!` read in tieralloc's own (not inlined) functions is then a general-dynamic
//! access, a call to `__tls_get_addr` as far as the compiler knows. The linker of an executable
//! rewrites that call into a load from `%fs`, but the compiler had already kept the function's
//! arguments in registers a call preserves, and saved and restored them: `tcache::pop_host`
//! pushed one register, `heap::alloc_other` and `tcache::free_on_tier` three (2026-12-03). In
//! `libtieralloc.so` the call stays a call. Stable Rust has no way to choose a thread-local's
//! model (`-Z tls-model` and `#[thread_local]` are unstable) and no crate of the allowed set
//! offers one, so on x86-64 the words are defined here in `.tbss` and read and written by
//! `asm!` with `@gottpoff`: one load of the offset from the GOT, one `%fs`-relative access, no
//! call. Initial-exec is what glibc's own `malloc` uses for its thread cache: a library loaded
//! at start (or preloaded) gets its block in the static TLS area; one `dlopen`ed later takes
//! it from glibc's reserve for that (these are 16 bytes).
//!
//! Other architectures use `thread_local!`. Each word is 0 in a new thread; a forked child's
//! thread has the values of the thread that forked.
//!
//! Async-signal-safe: a read or write is one instruction on the thread's own block.

/// Declares a thread-local word `$name`: `$name::get()` and `$name::set(v)`.
macro_rules! tls_word {
    ($(#[$doc:meta])* $name:ident, $sym:literal) => {
        $(#[$doc])*
        pub mod $name {
            #[cfg(target_arch = "x86_64")]
            core::arch::global_asm!(
                ".pushsection .tbss,\"awT\",@nobits",
                ".p2align 3",
                concat!(".globl ", $sym),
                concat!(".hidden ", $sym),
                concat!(".type ", $sym, ",@tls_object"),
                concat!(".size ", $sym, ",8"),
                concat!($sym, ":"),
                ".zero 8",
                ".popsection",
            );

            /// This thread's value (0 until the thread sets one).
            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            pub fn get() -> usize {
                let v: usize;
                // SAFETY: reads the calling thread's own 8-byte word of the static TLS block
                // (defined above, 8-aligned, zero in a new thread); any value is a valid
                // `usize`. Touches no other memory and no stack.
                unsafe {
                    core::arch::asm!(
                        concat!("movq ", $sym, "@gottpoff(%rip), {off}"),
                        "movq %fs:({off}), {v}",
                        off = out(reg) _,
                        v = lateout(reg) v,
                        options(att_syntax, nostack, readonly, preserves_flags, pure),
                    );
                }
                v
            }

            /// Sets this thread's value. The offset's load is written again rather than shared
            /// with [`get`]: an address computed once in Rust would cost a load of `%fs:0` more.
            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            pub fn set(v: usize) {
                // SAFETY: writes the calling thread's own 8-byte word of the static TLS block
                // (defined above), which no other thread reaches and no reference borrows.
                unsafe {
                    core::arch::asm!(
                        concat!("movq ", $sym, "@gottpoff(%rip), {off}"),
                        "movq {v}, %fs:({off})",
                        off = out(reg) _,
                        v = in(reg) v,
                        options(att_syntax, nostack, preserves_flags),
                    );
                }
            }

            #[cfg(not(target_arch = "x86_64"))]
            std::thread_local! {
                static WORD: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
            }

            /// This thread's value (0 until the thread sets one).
            #[cfg(not(target_arch = "x86_64"))]
            #[inline(always)]
            pub fn get() -> usize {
                WORD.with(core::cell::Cell::get)
            }

            /// Sets this thread's value.
            #[cfg(not(target_arch = "x86_64"))]
            #[inline(always)]
            pub fn set(v: usize) {
                WORD.with(|w| w.set(v))
            }
        }
    };
}

tls_word!(
    /// The thread's pair of heaps (`heap::tcache`): 0 before its first allocation.
    heaps,
    "tieralloc_tls_heaps_v0"
);

tls_word!(
    /// The thread's scope tier, a heap index (`mem::scope`): 0, the host, outside any scope.
    scope,
    "tieralloc_tls_scope_v0"
);

#[cfg(test)]
mod tests {
    use super::scope;

    #[test]
    fn a_word_is_zero_in_a_new_thread_and_belongs_to_its_thread() {
        // The scope word: the test harness's threads never open a tier scope of their own.
        let before = scope::get();
        scope::set(before ^ 0x5a);
        assert_eq!(scope::get(), before ^ 0x5a);
        let other = std::thread::spawn(|| {
            let fresh = scope::get();
            scope::set(7);
            (fresh, scope::get())
        })
        .join()
        .unwrap();
        assert_eq!(
            other,
            (0, 7),
            "a new thread starts at 0 and sees only its own writes"
        );
        assert_eq!(
            scope::get(),
            before ^ 0x5a,
            "another thread's write is not seen here"
        );
        scope::set(before);
    }
}
