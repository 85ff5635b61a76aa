// SPDX-License-Identifier: GPL-2.0

//! Hyper-V's TLB-flush hypercalls (TLFS "Virtual Processor Management":
//! `HvFlushVirtualAddressSpace`, `HvFlushVirtualAddressList` and their
//! `Ex` forms): one hypercall asks that a set of virtual processors forget
//! their translations (all of them, or those of a list of virtual
//! addresses, given as a rep call), where a guest on bare metal would send
//! each processor an IPI and have it flush itself.
//!
//! The parameters: an address space and flags, then the processors (a
//! 64-bit mask, or for `Ex` a sparse set as the IPI calls' [`super::ipi`]),
//! then, for the list calls, one entry per rep. They are in guest memory
//! at the input GPA (slow) or in RDX, R8 and the XMM registers (fast). As
//! KVM, rkvm reads and checks them all, then flushes more than asked: every
//! translation of every vCPU (KVM: of the named vCPUs, without looking at
//! the address space or the list), which the TLFS allows, since flushing
//! is never wrong. The caller ([`Flush::any`]) flushes before the call
//! returns: every vCPU flushes before its next entry, and those in the
//! guest are made to leave it. The status says all reps were completed.

use super::ipi::{READ_BANKS, XMM_HALVES};
use super::{status, Call};

/// The call codes (TLFS "Hypercall Codes").
pub(crate) const FLUSH_SPACE: u16 = 0x0002;
pub(crate) const FLUSH_LIST: u16 = 0x0003;
pub(crate) const FLUSH_SPACE_EX: u16 = 0x0013;
pub(crate) const FLUSH_LIST_EX: u16 = 0x0014;

/// Whether `code` is one of them.
pub(crate) fn is_flush(code: u16) -> bool {
    matches!(
        code,
        FLUSH_SPACE | FLUSH_LIST | FLUSH_SPACE_EX | FLUSH_LIST_EX
    )
}

/// `vp_set.format` for a sparse set (KVM takes any other value as all).
const FORMAT_SPARSE_4K: u64 = 0;

/// KVM reads a list of at most this many entries (its flush queue's size
/// less one); a longer list is a flush of everything, its entries unread.
const MAX_LIST: u64 = 15;

/// An accepted flush: whether anything is to be flushed (an empty sparse
/// set is not), and the value for the guest's RAX (success, with the rep
/// count as the reps completed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flush {
    pub(crate) any: bool,
    pub(crate) result: u64,
}

/// Decodes and checks a flush hypercall (`call.code()` one of the four,
/// its rep and header fields checked by [`Call::outcome`]) as KVM's
/// `kvm_hv_flush_tlb`: `xmm` holds the XMM halves (for a fast call),
/// `read(gpa, buf)` reads guest memory (false if it cannot). `Err` is the
/// status for the guest.
pub(crate) fn decode(
    call: &Call,
    xmm: &[u64; XMM_HALVES],
    mut read: impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<Flush, u64> {
    use status::INVALID_HYPERCALL_INPUT as INVALID;
    let code = call.code();
    let ex = matches!(code, FLUSH_SPACE_EX | FLUSH_LIST_EX);
    let result = status::SUCCESS | (call.rep_count() << 32);
    // The fixed header: address space, flags, and the processor mask
    // (fast: RDX, R8, XMM0's low half) or the set's format and valid mask
    // (fast: RDX, R8, XMM0).
    let (header, fixed_halves) = if ex { (32, 2) } else { (24, 1) };
    let mut data = if call.fast() {
        8 * fixed_halves
    } else {
        header
    };
    if ex {
        let (format, valid) = if call.fast() {
            (xmm[0], xmm[1])
        } else {
            let mut b = [0u8; 32];
            if !read(call.input, &mut b) {
                return Err(INVALID);
            }
            let word = |at: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&b[at..at + 8]);
                u64::from_le_bytes(w)
            };
            (word(16), word(24))
        };
        let count = call.var_count();
        if count != u64::from(valid.count_ones()) {
            return Err(INVALID);
        }
        if format == FORMAT_SPARSE_4K {
            if count == 0 {
                return Ok(Flush { any: false, result });
            }
            // A fast call's banks must fit the registers; a slow call's
            // are read up to the last that can hold a VP index.
            let n = if call.fast() {
                count
            } else {
                count.min(READ_BANKS)
            };
            words(call, &mut read, data, n)?;
        }
        // The banks come before the list even for "all".
        data += 8 * count;
    } else if !call.fast() {
        let mut b = [0u8; 24];
        if !read(call.input, &mut b) {
            return Err(INVALID);
        }
    }
    let list = matches!(code, FLUSH_LIST | FLUSH_LIST_EX);
    if list && call.rep_count() <= MAX_LIST {
        words(call, &mut read, data, call.rep_count())?;
    }
    Ok(Flush { any: true, result })
}

/// Checks that `n` parameter words at `offset` bytes into the parameters
/// can be had: read from a slow call's input in guest memory, or, for a
/// fast call, within the XMM halves (from half `offset / 8`, after RDX
/// and R8). KVM's `kvm_hv_get_hc_data`; rkvm needs only that they are
/// there, as it flushes everything.
fn words(
    call: &Call,
    read: &mut impl FnMut(u64, &mut [u8]) -> bool,
    offset: u64,
    n: u64,
) -> Result<(), u64> {
    use status::INVALID_HYPERCALL_INPUT as INVALID;
    if call.fast() {
        let end = (offset / 8).checked_add(n).ok_or(INVALID)?;
        return if end <= XMM_HALVES as u64 {
            Ok(())
        } else {
            Err(INVALID)
        };
    }
    for i in 0..n {
        let mut b = [0u8; 8];
        if !read(call.input.wrapping_add(offset + 8 * i), &mut b) {
            return Err(INVALID);
        }
    }
    Ok(())
}
