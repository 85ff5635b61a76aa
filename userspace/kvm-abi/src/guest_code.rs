//! Guest machine code assembled into the test program itself.
//!
//! A test writes the code its guest runs next to the host code that checks
//! it, as `global_asm!` text; [`guest_code!`](crate::guest_code) puts it
//! between two labels in its own section and defines a function that
//! returns those bytes, which the test copies into guest memory.
//!
//! The bytes run at whatever guest address they are copied to, not where
//! the host linked them, so the code must be position-independent (relative
//! jumps and calls, RIP-relative data in 64-bit code) or use only absolute
//! addresses that are valid in the guest (constants, never its own labels).

/// Defines `fn $name() -> &'static [u8]`: the machine code assembled from
/// the `global_asm!` template pieces, followed after a `;` by the operands
/// and options of `global_asm!` (e.g. `x = const 1, options(att_syntax)`).
///
/// The code starts 64-byte aligned; the assembler's mode is reset to
/// `.code64` after it, so the template may switch to `.code16`/`.code32`.
///
/// ```ignore
/// kvm_abi::guest_code! {
///     /// Halts.
///     pub fn halt; ".code32", "hlt"; options(att_syntax)
/// }
/// ```
#[macro_export]
macro_rules! guest_code {
    ($(#[$meta:meta])* $vis:vis fn $name:ident; $($tmpl:expr),+ ; $($operands:tt)*) => {
        ::core::arch::global_asm!(
            concat!(
                ".pushsection .text.rkvm_guest_code, \"ax\", @progbits\n",
                ".balign 64\n",
                ".globl rkvm_guest_", stringify!($name), "_start\n",
                ".hidden rkvm_guest_", stringify!($name), "_start\n",
                "rkvm_guest_", stringify!($name), "_start:\n",
            ),
            $($tmpl),+,
            concat!(
                "\n.globl rkvm_guest_", stringify!($name), "_end\n",
                ".hidden rkvm_guest_", stringify!($name), "_end\n",
                "rkvm_guest_", stringify!($name), "_end:\n",
                ".code64\n",
                ".popsection\n",
            ),
            $($operands)*
        );

        $(#[$meta])*
        $vis fn $name() -> &'static [u8] {
            unsafe extern "C" {
                #[link_name = concat!("rkvm_guest_", stringify!($name), "_start")]
                static START: u8;
                #[link_name = concat!("rkvm_guest_", stringify!($name), "_end")]
                static END: u8;
            }
            let start = &raw const START;
            let end = &raw const END;
            // SAFETY: the two labels are defined by the global_asm! block
            // above, in this order, in one read-only code section of this
            // program, so `start..end` is initialised memory that lives (and
            // never changes) for the whole program.
            unsafe { $crate::guest_code::bytes_between(start, end) }
        }
    };
}

/// The bytes from `start` up to `end`.
///
/// # Safety
///
/// `start..end` must be one initialised, immutable range of memory that
/// lives for the rest of the program, with `start <= end`.
#[doc(hidden)]
pub unsafe fn bytes_between(start: *const u8, end: *const u8) -> &'static [u8] {
    let len = end.addr().saturating_sub(start.addr());
    // SAFETY: the caller guarantees the range is initialised, immutable
    // and 'static; `len` is its length.
    unsafe { core::slice::from_raw_parts(start, len) }
}
