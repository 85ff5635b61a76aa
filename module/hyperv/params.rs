// SPDX-License-Identifier: GPL-2.0

//! A hypercall's parameters, and the processor sets the IPI and TLB-flush
//! calls name.
//!
//! Parameters are 64-bit words. A slow call has them in guest memory, word
//! `i` at byte `8 * i` of the input GPA; a fast call in registers: RDX and
//! R8, then, for the calls that allow it ("XMM fast"), XMM0–XMM5, low half
//! first (TLFS "Hypercall Inputs"). [`Params`] numbers them the same way
//! in both cases, so a call's decoder reads word 3 without asking where it
//! is: KVM's `kvm_hv_get_hc_data` does the same job.
//!
//! A processor set is "all", or sparse (TLFS "HV_VP_SET"): a mask of
//! which 64-index banks are present (`valid`), then one 64-bit mask per
//! present bank, in bank order. [`Params::vp_set`] reads one with KVM's
//! checks (`kvm_get_sparse_vp_set`).

use super::{status, Call};

/// The XMM registers a fast call may pass parameters in (XMM0–XMM5),
/// as 64-bit halves: low half of XMM0 first.
pub(crate) const XMM_HALVES: usize = 12;

/// A sparse set has at most 64 banks of 64 VP indices.
const MAX_BANKS: usize = 64;

/// The banks that can hold a VP index rkvm gives (below 1024,
/// `vp_index_write`): the first 16. Banks past them are not read from
/// guest memory, as KVM reads no more than its
/// `KVM_HV_MAX_SPARSE_VCPU_SET_BITS` (16 with 1024 vCPUs).
pub(crate) const READ_BANKS: u64 = 16;

/// The status for parameters that are not there or not right.
const INVALID: u64 = status::INVALID_HYPERCALL_INPUT;

/// A call's parameter words: see the module's documentation.
pub(crate) struct Params<'a, R> {
    call: &'a Call,
    xmm: &'a [u64; XMM_HALVES],
    read: R,
}

impl<'a, R: FnMut(u64, &mut [u8]) -> bool> Params<'a, R> {
    /// The parameters of `call`: `xmm` holds the XMM halves (looked at only
    /// for a fast call), `read(gpa, buf)` reads guest memory (false if it
    /// cannot; used only for a slow call).
    pub(crate) fn new(call: &'a Call, xmm: &'a [u64; XMM_HALVES], read: R) -> Self {
        Self { call, xmm, read }
    }

    /// Word `i`; `Err` with the guest's status where there is none (past
    /// the XMM registers, or guest memory that cannot be read).
    pub(crate) fn word(&mut self, i: u64) -> Result<u64, u64> {
        if self.call.fast() {
            return match i {
                0 => Ok(self.call.input),
                1 => Ok(self.call.output),
                _ => usize::try_from(i - 2)
                    .ok()
                    .and_then(|h| self.xmm.get(h).copied())
                    .ok_or(INVALID),
            };
        }
        let gpa = i
            .checked_mul(8)
            .map(|offset| self.call.input.wrapping_add(offset))
            .ok_or(INVALID)?;
        let mut b = [0u8; 8];
        if (self.read)(gpa, &mut b) {
            Ok(u64::from_le_bytes(b))
        } else {
            Err(INVALID)
        }
    }

    /// Whether words `from` to `from + n - 1` are all there (rkvm needs
    /// some only to check them, as KVM reads them).
    pub(crate) fn check(&mut self, from: u64, n: u64) -> Result<(), u64> {
        for i in 0..n {
            self.word(from.checked_add(i).ok_or(INVALID)?)?;
        }
        Ok(())
    }

    /// The processor set whose valid-bank mask is word `valid_at` (its
    /// banks in the words after it), as KVM checks it: the call's variable
    /// header must be exactly one word per present bank (else `Err`); for
    /// `all` (the call's format word said so) the banks are not read;
    /// `None` is an empty sparse set. A fast call's banks must all fit the
    /// registers; a slow call's are read up to the last that can hold a VP
    /// index ([`READ_BANKS`]).
    pub(crate) fn vp_set(&mut self, valid_at: u64, all: bool) -> Result<Option<VpSet>, u64> {
        let valid = self.word(valid_at)?;
        let count = self.call.var_count();
        if count != u64::from(valid.count_ones()) {
            return Err(INVALID);
        }
        if all {
            return Ok(Some(VpSet::all()));
        }
        if count == 0 {
            return Ok(None);
        }
        let mut banks = [0u64; MAX_BANKS];
        let n = if self.call.fast() {
            count
        } else {
            count.min(READ_BANKS)
        };
        // `count` is a popcount of 64 bits: `n` <= 64, `banks`' length.
        for (i, bank) in banks[..n as usize].iter_mut().enumerate() {
            *bank = self.word(valid_at + 1 + i as u64)?;
        }
        Ok(Some(VpSet::sparse(valid, banks)))
    }
}

/// The processors a call names: all, or a sparse set, where bank `b`
/// (VP indices `64 * b` to `64 * b + 63`) is present if bit `b` of `valid`
/// is set, and the present banks' masks follow in `banks`, in bank order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VpSet {
    all: bool,
    valid: u64,
    banks: [u64; MAX_BANKS],
}

impl VpSet {
    /// Every processor.
    pub(crate) const fn all() -> Self {
        Self {
            all: true,
            valid: 0,
            banks: [0; MAX_BANKS],
        }
    }

    /// The sparse set of `valid` and `banks`.
    pub(crate) const fn sparse(valid: u64, banks: [u64; MAX_BANKS]) -> Self {
        Self {
            all: false,
            valid,
            banks,
        }
    }

    /// VP indices 0–63 as one mask (bank 0 alone).
    pub(crate) const fn first_bank(mask: u64) -> Self {
        let mut banks = [0; MAX_BANKS];
        banks[0] = mask;
        Self::sparse(1, banks)
    }

    /// Whether VP index `vp` is in the set (KVM's `hv_is_vp_in_sparse_set`).
    pub(crate) fn contains(&self, vp: u32) -> bool {
        if self.all {
            return true;
        }
        let (valid, banks) = (self.valid, &self.banks);
        let bank = vp / 64;
        if bank >= 64 || valid & (1 << bank) == 0 {
            return false;
        }
        // The bank's mask is after one for each present bank below it.
        let index = (valid & ((1u64 << bank) - 1)).count_ones() as usize;
        banks[index] & (1 << (vp % 64)) != 0
    }
}
