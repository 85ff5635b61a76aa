// SPDX-License-Identifier: GPL-2.0

//! Hyper-V's TLB-flush hypercalls (TLFS "Virtual Processor Management":
//! `HvFlushVirtualAddressSpace`, `HvFlushVirtualAddressList` and their
//! `Ex` forms): one hypercall asks that a set of virtual processors forget
//! their translations (all of them, or those of a list of virtual
//! addresses, given as a rep call), where a guest on bare metal would send
//! each processor an IPI and have it flush itself.
//!
//! The parameters: an address space and flags, then the processors (a
//! 64-bit mask, or for `Ex` a processor set as the IPI calls', read by
//! params.rs),
//! then, for the list calls, one entry per rep. They are in guest memory
//! at the input GPA (slow) or in RDX, R8 and the XMM registers (fast). As
//! KVM, rkvm reads and checks them all, then flushes more than asked: every
//! translation of every vCPU (KVM: of the named vCPUs, without looking at
//! the address space or the list), which the TLFS allows, since flushing
//! is never wrong. The caller ([`Flush::any`]) flushes before the call
//! returns: every vCPU flushes before its next entry, and those in the
//! guest are made to leave it. The status says all reps were completed.

use super::params::{Params, XMM_HALVES};
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
/// `read(gpa, buf)` reads guest memory (false if it cannot; see
/// [`Params`]). `Err` is the status for the guest.
pub(crate) fn decode(
    call: &Call,
    xmm: &[u64; XMM_HALVES],
    read: impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<Flush, u64> {
    let code = call.code();
    let result = status::SUCCESS | (call.rep_count() << 32);
    let mut params = Params::new(call, xmm, read);
    // The fixed header: address space (word 0), flags (1), then the
    // processor mask (2), or for `Ex` the set's format (2), valid-bank
    // mask (3) and banks. In registers the first two are always there.
    params.check(0, 2)?;
    let list_at = if matches!(code, FLUSH_SPACE_EX | FLUSH_LIST_EX) {
        let all = params.word(2)? != FORMAT_SPARSE_4K;
        if params.vp_set(3, all)?.is_none() {
            return Ok(Flush { any: false, result });
        }
        // The banks come before the list even for "all".
        4 + call.var_count()
    } else {
        params.word(2)?;
        3
    };
    let list = matches!(code, FLUSH_LIST | FLUSH_LIST_EX);
    if list && call.rep_count() <= MAX_LIST {
        params.check(list_at, call.rep_count())?;
    }
    Ok(Flush { any: true, result })
}
