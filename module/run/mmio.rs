// SPDX-License-Identifier: GPL-2.0

//! MMIO exits: a guest access to guest-physical memory no slot backs is
//! decoded (`x86::decode`) and handed to user space as `KVM_EXIT_MMIO`; a
//! load completes on the next `KVM_RUN`.

use super::insn::{code_size, emulation_failed, fetch};
use super::{exit_reason, set_pending, Next, Pending, UNION};
use crate::abi::{self, kvm_run__bindgen_ty_1__bindgen_ty_6 as MmioRun};
use crate::backend::InsnBytes;
use crate::eventfd::ioeventfd::Bus;
use crate::sys::mem::SharedPage;
use crate::vcpu::ArchState;
use crate::vm::Vm;
use crate::x86::decode::{self, MmioInsn, MAX_INSN_LEN};
use core::mem::offset_of;
use kernel::prelude::*;

/// A guest access to guest-physical memory no slot backs: decode the
/// instruction and hand the access to user space as `KVM_EXIT_MMIO`.
pub(super) fn mmio(
    vm: &Vm,
    state: &mut ArchState,
    page: &SharedPage<'_>,
    gpa: u64,
    fetched: Option<InsnBytes>,
) -> Result<Next> {
    let mut bytes = [0u8; MAX_INSN_LEN];
    // The bytes the hardware fetched (decode assists), else our own fetch.
    let n = match fetched {
        Some(insn) => {
            bytes[..insn.len].copy_from_slice(&insn.bytes[..insn.len]);
            vm.stats.mmio_insn_from_cpu.add(1);
            insn.len
        }
        None => fetch(vm, state, &mut bytes),
    };
    let insn = match decode::decode(&bytes[..n], code_size(state)) {
        Ok(insn) => insn,
        Err(_) => {
            return emulation_failed(vm, state, page, &bytes[..n]);
        }
    };
    let next_rip = insn.next_rip(state.regs.rip);
    // The local APIC's page and the IOAPIC's window, with an in-kernel irqchip.
    if super::apic::mmio(state, gpa, &insn, next_rip).is_some() {
        return Ok(Next::Enter);
    }
    if let Some(value) = insn.store_value(&state.regs) {
        // A store an ioeventfd matches signals it and is done; one a
        // coalesced-MMIO zone takes goes into its ring (coalesced/).
        let len = u32::from(insn.width.bytes());
        if vm.ioeventfd_write(Bus::Mmio, gpa, len, value)
            || vm.coalesced.write(false, gpa, len, value)
        {
            state.regs.rip = next_rip;
            state.run.interrupt_shadow = false;
            return Ok(Next::Enter);
        }
        page.write(UNION + offset_of!(MmioRun, data), &value.to_le_bytes())?;
        // A store is complete once user space has the data: RIP moves on now, as in KVM.
        state.regs.rip = next_rip;
    } else {
        // For a load, KVM leaves `data` as it was: user space fills it.
        set_pending(state, Pending::MmioLoad { insn, next_rip });
    }
    // Field by field: the struct has trailing padding.
    page.write(UNION + offset_of!(MmioRun, phys_addr), &gpa)?;
    page.write(
        UNION + offset_of!(MmioRun, len),
        &u32::from(insn.width.bytes()),
    )?;
    page.write(
        UNION + offset_of!(MmioRun, is_write),
        &u8::from(insn.is_write()),
    )?;
    vm.stats.mmio_exits.add(1);
    state.run.stats.mmio_exits.add(1);
    exit_reason(page, abi::KVM_EXIT_MMIO)
}

/// Finishes an MMIO load on the next `KVM_RUN`: `kvm_run.mmio.data` goes
/// to the destination register, and RIP moves past the instruction.
pub(super) fn complete_load(
    state: &mut ArchState,
    page: &SharedPage<'_>,
    insn: MmioInsn,
    next_rip: u64,
) -> Result {
    let data: [u8; 8] = page.read(UNION + offset_of!(MmioRun, data))?;
    let value = u64::from_le_bytes(data);
    insn.complete_load(&mut state.regs, insn.width.truncate(value));
    state.regs.rip = next_rip;
    Ok(())
}
