// SPDX-License-Identifier: GPL-2.0

//! What the instructions the run loop finishes by hand do to the guest's
//! registers: the address arithmetic of a code size, MOV to CR0 (entering
//! and leaving long mode), WRMSR to EFER, MOV to and from the debug
//! registers, and the register updates of port I/O (IN, INS, OUTS, REP).
//!
//! The run loop (`module/run/`) reads guest memory and fills `kvm_run`;
//! every rule it applies to the registers is here, as a function of plain
//! values, so the host unit tests check it against the manuals.

use super::decode::CodeSize;
use super::regs::{cr0, cr4, efer};

/// An instruction pointer wraps at the code size. SDM Vol. 1 3.6.
pub(crate) fn wrap_ip(ip: u64, code: CodeSize) -> u64 {
    match code {
        CodeSize::Bits16 => ip & 0xffff,
        CodeSize::Bits32 => ip & 0xffff_ffff,
        CodeSize::Bits64 => ip,
    }
}

/// The mask of an address size in bytes (2, 4 or 8): the bits of RSI, RDI
/// and RCX a string instruction uses and changes. SDM Vol. 1 3.6.
pub(crate) fn address_mask(address_size: u8) -> u64 {
    match address_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// The operand of MOV to or from a control or debug register: 64 bits in
/// 64-bit code, else 32 (the operand-size prefix is ignored). SDM Vol. 2B
/// MOV (control registers), MOV (debug registers).
pub(crate) fn special_operand_mask(code: CodeSize) -> u64 {
    if code == CodeSize::Bits64 {
        u64::MAX
    } else {
        0xffff_ffff
    }
}

/// The base of a segment as addressing uses it: in 64-bit code only FS and
/// GS have one. SDM Vol. 3A 3.2.4.
pub(crate) fn segment_base(code: CodeSize, base: u64, fs_or_gs: bool) -> u64 {
    if code == CodeSize::Bits64 && !fs_or_gs {
        0
    } else {
        base
    }
}

/// The linear address of `offset` from a segment base, truncated to 32
/// bits outside 64-bit code. SDM Vol. 3A 3.4.
pub(crate) fn linear_address(code: CodeSize, base: u64, offset: u64) -> u64 {
    let addr = base.wrapping_add(offset);
    if code == CodeSize::Bits64 {
        addr
    } else {
        addr & 0xffff_ffff
    }
}

/// The control registers MOV to CR0 reads besides CR0 itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PagingRegs {
    pub(crate) cr0: u64,
    pub(crate) cr4: u64,
    pub(crate) efer: u64,
    /// CS.L: the guest runs 64-bit code.
    pub(crate) cs_l: bool,
}

/// What an accepted MOV to CR0 leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cr0Write {
    pub(crate) cr0: u64,
    /// EFER, with LMA set or cleared if paging was turned on or off with
    /// LME set.
    pub(crate) efer: u64,
    /// PG, PE, WP, CD or NW changed: cached translations and the PAE
    /// PDPTEs are stale.
    pub(crate) translations_stale: bool,
}

/// MOV to CR0, as KVM's `kvm_set_cr0`: `None` for a value that is #GP.
/// Refused: bits 63:32 set, PG without PE, NW without CD, turning paging
/// on with LME but without PAE or from a 64-bit code segment, turning it
/// off from 64-bit code. Turning paging on with LME activates long mode
/// (LMA); turning it off deactivates it. ET reads as 1. SDM Vol. 2B MOV
/// (control registers), Vol. 3A 2.5, 9.8.5.
pub(crate) fn cr0_write(old: PagingRegs, value: u64) -> Option<Cr0Write> {
    if value >> 32 != 0
        || (value & cr0::PG != 0 && value & cr0::PE == 0)
        || (value & cr0::NW != 0 && value & cr0::CD == 0)
    {
        return None;
    }
    let mut new_efer = old.efer;
    if (old.cr0 ^ value) & cr0::PG != 0 {
        if value & cr0::PG != 0 && old.efer & efer::LME != 0 {
            if old.cr4 & cr4::PAE == 0 || old.cs_l {
                return None;
            }
            new_efer |= efer::LMA;
        } else if value & cr0::PG == 0 && old.efer & efer::LMA != 0 {
            if old.cs_l {
                return None;
            }
            new_efer &= !efer::LMA;
        }
    }
    Some(Cr0Write {
        cr0: value | cr0::ET,
        efer: new_efer,
        translations_stale: (old.cr0 ^ value) & (cr0::PG | cr0::PE | cr0::WP | cr0::CD | cr0::NW)
            != 0,
    })
}

/// WRMSR to EFER from the guest, before the CPUID check of the bits
/// themselves: the guest cannot write LMA (the CPU keeps it), nor change
/// LME while paging is on (#GP: `None`). SDM Vol. 3A 9.8.5, 2.2.1.
pub(crate) fn guest_efer_write(cr0: u64, old_efer: u64, value: u64) -> Option<u64> {
    let value = (value & !efer::LMA) | (old_efer & efer::LMA);
    if cr0 & cr0::PG != 0 && (value ^ old_efer) & efer::LME != 0 {
        None
    } else {
        Some(value)
    }
}

/// The debug register a MOV names, with DR4 and DR5 aliased to DR6 and DR7
/// unless CR4.DE is set, when they are #UD (`None`). SDM Vol. 3B 19.2.2.
pub(crate) fn debug_register_alias(dr: u8, cr4: u64) -> Option<u8> {
    match dr & 7 {
        4 | 5 if cr4 & cr4::DE != 0 => None,
        4 => Some(6),
        5 => Some(7),
        d => Some(d),
    }
}

/// How many elements of `size` bytes one port-I/O exit of a string
/// instruction moves: what is `wanted` (RCX for REP, else 1), at most what
/// fits before the guest page ends in the direction of travel (so one
/// translation covers them all) and in the `buffer` bytes user space sees,
/// at least 1 (a misaligned element that crosses the page moves alone).
/// KVM's `emulator_pio_in_out` moves a page at a time the same way.
pub(crate) fn string_io_count(
    linear: u64,
    size: u64,
    backwards: bool,
    wanted: u64,
    buffer: u64,
) -> u64 {
    // Elements are 1, 2 or 4 bytes; the floor also spares the kernel build
    // a division-by-zero panic path.
    let size = size.max(1);
    let in_page = if backwards {
        (linear & 0xfff) / size + 1
    } else {
        (0x1000 - (linear & 0xfff)) / size
    };
    wanted.min(in_page).min(buffer / size).max(1)
}

/// The guest-physical address of element `k` of a string transfer whose
/// first element is at `first`: up with DF clear, down with DF set.
pub(crate) fn string_element(first: u64, k: u64, size: u64, backwards: bool) -> u64 {
    if backwards {
        first.wrapping_sub(k * size)
    } else {
        first.wrapping_add(k * size)
    }
}

/// The registers a string I/O instruction changes, after `count` elements
/// of `size` bytes moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StringIoDone {
    /// How many of the exit's elements the instruction takes: all of
    /// them, or fewer if user space lowered RCX during the exit.
    pub(crate) used: u32,
    /// RSI (OUTS) or RDI (INS).
    pub(crate) index: u64,
    pub(crate) rcx: u64,
    /// The instruction is finished (not REP, or RCX reached 0): RIP moves
    /// past it. Otherwise it runs again from the same RIP.
    pub(crate) finished: bool,
}

/// The registers after a string I/O exit of `count` elements of `size`
/// bytes: RSI or RDI move by the elements used (down with DF set), RCX
/// counts down for REP; only the bits of the address size change, the
/// others are kept. SDM Vol. 2B INS, OUTS, REP.
///
/// `rcx` is read when the exit completes, and user space may have changed
/// it meanwhile. As KVM's emulator (`pio_in_emulated` takes
/// `min(RCX, the exit's count)`), a REP takes no more elements than RCX
/// now asks for, and RCX raised only makes it run again. Never more than
/// the exit carried, and RCX never wraps (which would run the REP on
/// through the guest's memory). RCX lowered to 0 ends the instruction
/// with nothing moved: rkvm's choice, where KVM keeps exiting for the same
/// instruction (docs/abi.md; not ABI).
pub(crate) fn string_io_done(
    index: u64,
    rcx: u64,
    count: u32,
    size: u64,
    backwards: bool,
    rep: bool,
    address_size: u8,
) -> StringIoDone {
    let mask = address_mask(address_size);
    let used = if rep {
        // `count` fits in u32, so the minimum does too.
        (rcx & mask).min(u64::from(count)) as u32
    } else {
        count
    };
    let delta = u64::from(used) * size;
    let moved = if backwards {
        index.wrapping_sub(delta)
    } else {
        index.wrapping_add(delta)
    };
    let index = (index & !mask) | (moved & mask);
    if !rep {
        return StringIoDone {
            used,
            index,
            rcx,
            finished: true,
        };
    }
    let left = (rcx & mask) - u64::from(used);
    StringIoDone {
        used,
        index,
        rcx: (rcx & !mask) | left,
        finished: left == 0,
    }
}

/// RAX after IN of `size` bytes: IN AL and IN AX merge into the low bits,
/// IN EAX zero-extends into RAX. SDM Vol. 1 3.4.1.1.
pub(crate) fn in_result(rax: u64, value: u64, size: u64) -> u64 {
    match size {
        1 => (rax & !0xff) | (value & 0xff),
        2 => (rax & !0xffff) | (value & 0xffff),
        _ => value & 0xffff_ffff,
    }
}
