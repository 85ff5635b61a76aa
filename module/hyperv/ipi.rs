// SPDX-License-Identifier: GPL-2.0

//! Hyper-V's IPI hypercalls (TLFS "Virtual Processor Management":
//! `HvCallSendSyntheticClusterIpi` and `HvCallSendSyntheticClusterIpiEx`):
//! one hypercall sends a fixed interrupt to a set of virtual processors
//! named by their VP index, where a guest on an APIC would write the ICR
//! once per destination (or once per logical cluster).
//!
//! The set comes as a 64-bit mask of VP indices 0–63 (`SEND_IPI`), or as
//! a processor set (`SEND_IPI_EX`: all, or sparse; params.rs reads it).
//! The parameters are in guest memory at the input GPA (a slow call) or
//! in registers (a fast call: RDX and R8, then, for `SEND_IPI_EX`, the XMM
//! registers). This file decodes and checks them in KVM's order
//! (`kvm_hv_send_ipi`); run/hyperv.rs delivers.

use super::params::{Params, VpSet, XMM_HALVES};
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

/// An IPI to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ipi {
    pub(crate) vector: u8,
    pub(crate) to: VpSet,
}

/// Decodes an IPI hypercall (`call.code()` is [`SEND_IPI`] or
/// [`SEND_IPI_EX`], its rep fields checked by [`Call::outcome`]). `xmm`
/// holds the XMM halves (read only for a fast `SEND_IPI_EX`); `read(gpa,
/// buf)` reads guest memory, false if it cannot (see [`Params`]).
/// `Ok(None)` is a success that sends nothing (an empty sparse set);
/// `Err` is the status for the guest.
pub(crate) fn decode(
    call: &Call,
    xmm: &[u64; XMM_HALVES],
    read: impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<Option<Ipi>, u64> {
    use status::INVALID_HYPERCALL_INPUT as INVALID;
    let mut params = Params::new(call, xmm, read);
    let (vector, to) = if call.code() == SEND_IPI {
        // struct hv_send_ipi: vector (32 bits), reserved, cpu_mask. In
        // registers, the reserved half of the first must be 0.
        let first = params.word(0)?;
        if call.fast() && first >> 32 != 0 {
            return Err(INVALID);
        }
        (first as u32, VpSet::first_bank(params.word(1)?))
    } else {
        // struct hv_send_ipi_ex: vector, reserved, then the set's format,
        // valid-bank mask and banks. An empty set is nothing to do, before
        // the vector is looked at (as KVM).
        let vector = params.word(0)? as u32;
        let all = params.word(1)? == FORMAT_ALL;
        match params.vp_set(2, all)? {
            Some(to) => (vector, to),
            None => return Ok(None),
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
