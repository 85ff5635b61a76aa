// SPDX-License-Identifier: GPL-2.0

//! Hyper-V's IPI hypercalls (TLFS "Virtual Processor Management":
//! `HvCallSendSyntheticClusterIpi` and `HvCallSendSyntheticClusterIpiEx`):
//! one hypercall sends a fixed interrupt to a set of virtual processors
//! named by their VP index, where a guest on an APIC would write the ICR
//! once per destination (or once per logical cluster).
//!
//! The set comes as a 64-bit mask of VP indices 0–63 (`SEND_IPI`), or as
//! a "sparse" set (`SEND_IPI_EX`): a mask of which 64-index banks are
//! present, followed by one 64-bit mask per present bank, or "all". The
//! parameters are in guest memory at the input GPA (a slow call) or in
//! registers (a fast call: RDX and R8, then, for `SEND_IPI_EX`, the XMM
//! registers two 64-bit halves at a time). This file decodes and checks
//! them in KVM's order (`kvm_hv_send_ipi`, `kvm_get_sparse_vp_set`);
//! run/hyperv.rs delivers.

use super::{status, Call};

/// The call codes (TLFS "Hypercall Codes").
pub(crate) const SEND_IPI: u16 = 0x000b;
pub(crate) const SEND_IPI_EX: u16 = 0x0015;

/// The lowest and highest vector a Hyper-V IPI may carry.
const LOW_VECTOR: u32 = 0x10;
const HIGH_VECTOR: u32 = 0xff;

/// `vp_set.format` for every processor (0 is a sparse set of banks; KVM
/// takes any other value as sparse too).
const FORMAT_ALL: u64 = 1;

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

/// The processors an IPI goes to: all, or a sparse set, where bank `b`
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

/// An IPI to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ipi {
    pub(crate) vector: u8,
    pub(crate) to: VpSet,
}

/// Decodes an IPI hypercall (`call.code()` is [`SEND_IPI`] or
/// [`SEND_IPI_EX`], its rep fields checked by [`Call::outcome`]). `xmm`
/// holds the XMM halves (read only for a fast `SEND_IPI_EX`); `read(gpa,
/// buf)` reads guest memory, false if it cannot. `Ok(None)` is a success
/// that sends nothing (an empty sparse set); `Err` is the status for the
/// guest.
pub(crate) fn decode(
    call: &Call,
    xmm: &[u64; XMM_HALVES],
    mut read: impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<Option<Ipi>, u64> {
    use status::INVALID_HYPERCALL_INPUT as INVALID;
    let mut word = |gpa: u64| -> Result<u64, u64> {
        let mut b = [0u8; 8];
        if read(gpa, &mut b) {
            Ok(u64::from_le_bytes(b))
        } else {
            Err(INVALID)
        }
    };
    let mut banks = [0u64; MAX_BANKS];
    let (vector, to) = if call.code() == SEND_IPI {
        // struct hv_send_ipi: vector (32 bits), reserved, cpu_mask.
        let (vector, mask) = if call.fast() {
            // The reserved half of the first register must be 0.
            if call.input >> 32 != 0 {
                return Err(INVALID);
            }
            (call.input as u32, call.output)
        } else {
            (word(call.input)? as u32, word(call.input.wrapping_add(8))?)
        };
        banks[0] = mask;
        (vector, VpSet::sparse(1, banks))
    } else {
        // struct hv_send_ipi_ex: vector, reserved, then the set's format
        // and valid-bank mask, then the banks.
        let (vector, format, valid) = if call.fast() {
            (call.input as u32, call.output, xmm[0])
        } else {
            let gpa = call.input;
            (
                word(gpa)? as u32,
                word(gpa.wrapping_add(8))?,
                word(gpa.wrapping_add(16))?,
            )
        };
        let count = call.var_count();
        if count != u64::from(valid.count_ones()) {
            return Err(INVALID);
        }
        if format == FORMAT_ALL {
            (vector, VpSet::all())
        } else {
            // An empty set is nothing to do, before the vector is looked
            // at (as KVM).
            if count == 0 {
                return Ok(None);
            }
            let count = count as usize;
            if call.fast() {
                // The banks follow the valid mask in XMM0's high half.
                let from = xmm.get(1..1 + count).ok_or(INVALID)?;
                banks[..count].copy_from_slice(from);
            } else {
                // `count` is at most 64 here: it is a popcount.
                let read = count.min(READ_BANKS as usize);
                for (i, bank) in banks[..read].iter_mut().enumerate() {
                    *bank = word(call.input.wrapping_add(24 + 8 * i as u64))?;
                }
            }
            (vector, VpSet::sparse(valid, banks))
        }
    };
    if !(LOW_VECTOR..=HIGH_VECTOR).contains(&vector) {
        return Err(INVALID);
    }
    Ok(Some(Ipi {
        vector: vector as u8,
        to,
    }))
}
