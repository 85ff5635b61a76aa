// SPDX-License-Identifier: GPL-2.0

//! System management mode, the run loop's half: when an SMI is taken,
//! what entering SMM and RSM do to the vCPU, and which memory it sees. The
//! state-save layout is x86/smm.rs's.
//!
//! An SMI comes from `KVM_SMI`, from `KVM_SET_VCPU_EVENTS` (`smi.pending`),
//! or from an APIC message with delivery mode SMI (an IPI, an IOAPIC pin,
//! an MSI), which the irqchip latches for the vCPU as it latches NMIs. It
//! waits ([`SmmState::pending`]) until nothing else is being delivered and
//! the vCPU is not in SMM already, and then goes before any NMI or
//! interrupt, as KVM's `kvm_check_and_inject_events` orders them ([`take`]).
//!
//! Inside SMM the vCPU sees the VM's second address space (memslot.rs
//! [`Space::Smm`]; a VMM maps SMRAM, and usually the rest of memory too,
//! with slot numbers that have bit 16 set), through its own second-level
//! table: a vCPU in SMM enters with that table's root. NMIs are blocked
//! (unless the handler executes IRET), INIT is latched until RSM, and
//! `kvm_run.flags` has `KVM_RUN_X86_SMM`.
//!
//! RSM is not an instruction the processor executes outside real SMM: a
//! guest's RSM faults with #UD on both vendors, which rkvm intercepts
//! anyway (run/mod.rs `undefined_opcode`). In SMM it is emulated here
//! ([`rsm`]); outside, the guest gets its #UD, as from KVM's emulator.

use super::{exit_reason, Next, Pages};
use crate::abi;
use crate::memslot::Space;
use crate::vcpu::ArchState;
use crate::vm::Vm;
use crate::x86::regs::check_sregs;
use crate::x86::smm::{self, SavedState, SAVE_AREA, SAVE_AREA_BYTES};
use kernel::prelude::*;

/// A vCPU's system-management state (KVM's `HF_SMM_MASK`,
/// `HF_SMM_INSIDE_NMI_MASK` and `smi_pending`). SMBASE is an MSR
/// (`MsrFile::smbase`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SmmState {
    /// The vCPU is in SMM.
    pub(crate) active: bool,
    /// NMIs were already blocked when the SMI came: RSM leaves them so.
    pub(crate) inside_nmi: bool,
    /// An SMI waits to be taken.
    pub(crate) pending: bool,
}

impl SmmState {
    /// The address space the vCPU sees.
    pub(crate) fn space(&self) -> Space {
        Space::of_vcpu(self.active)
    }
}

/// Before an entry: takes an SMI the APIC latched, and enters SMM if one
/// waits and may go in now (the vCPU is not in SMM, nothing is being
/// delivered, the VMM's debugger does not block events). `EIO` if the
/// state-save area cannot be written (no writable SMM memory at
/// SMBASE + 0xFE00): KVM kills the VM then (`kvm_vm_dead`), after which
/// every `KVM_RUN` is `EIO`; rkvm leaves the vCPU as it was, with the SMI
/// still pending, so every `KVM_RUN` of it is `EIO` until the VMM maps
/// the memory.
pub(super) fn take(vm: &Vm, state: &mut ArchState) -> Result {
    if let Some(link) = state.run.irq.as_ref() {
        if link.apic.take_smi() {
            state.run.smm.pending = true;
        }
    }
    let run = &state.run;
    if !run.smm.pending
        || run.smm.active
        || run.event.is_some()
        || run.queued_irq.is_some()
        || run.guest_debug.block_irq
    {
        return Ok(());
    }
    enter(vm, state)
}

/// The SMI: the state goes into the save area, the vCPU into SMM at
/// SMBASE + 0x8000 (KVM's `enter_smm`).
fn enter(vm: &Vm, state: &mut ArchState) -> Result {
    let long_mode = state.features.long_mode;
    let saved = SavedState {
        regs: state.regs,
        sregs: state.sregs,
        dr6: state.run.dr6,
        dr7: state.run.dr7,
        smbase: state.msrs.smbase,
        interrupt_shadow: state.run.interrupt_shadow,
    };
    let area = smm::save(&saved, long_mode);
    // KVM switches to SMM's memory first, then writes.
    let at = saved.smbase.wrapping_add(SAVE_AREA);
    vm.write_guest_in(Space::Smm, at, &area).ok_or(EIO)?;
    let run = &mut state.run;
    run.smm.pending = false;
    run.smm.active = true;
    // Whether NMIs are blocked now: on SVM an IRET the guest has executed
    // since the last entry unblocked them.
    run.nmi.settle(saved.regs.rip);
    run.smm.inside_nmi = run.nmi.blocked;
    run.nmi.set_blocked(true);
    let (regs, sregs, dr7) = smm::handler_entry(&saved, long_mode);
    state.regs = regs;
    state.sregs = sregs;
    run.dr7 = dr7;
    run.interrupt_shadow = false;
    // Another root, no paging: nothing cached stays valid.
    run.sregs_changed(true);
    Ok(())
}

/// RSM in SMM (KVM's `emulator_leave_smm`): the state comes back from the
/// save area, SMBASE as the handler left it there, NMIs unblocked unless
/// they were blocked before the SMI. A save area RSM cannot load (no SMM
/// memory there, reserved bits in DR6 or DR7, registers
/// `KVM_SET_SREGS` would refuse, such as CR4.PCIDE, which rkvm does not
/// offer) is a shutdown, as KVM's `em_rsm` makes it: `KVM_EXIT_SHUTDOWN`,
/// with the vCPU out of SMM and its registers as the handler left them
/// (KVM's are partly loaded by then).
pub(super) fn rsm(vm: &Vm, state: &mut ArchState, pages: &Pages<'_>) -> Result<Next> {
    let smbase = state.msrs.smbase;
    let mut area = [0u8; SAVE_AREA_BYTES];
    // No save area to read: shutdown, still in SMM (KVM fails before it
    // leaves SMM).
    if vm
        .read_guest_in(Space::Smm, smbase.wrapping_add(SAVE_AREA), &mut area)
        .is_none()
    {
        return exit_reason(pages.run, abi::KVM_EXIT_SHUTDOWN);
    }
    let run = &mut state.run;
    if !run.smm.inside_nmi {
        run.nmi.set_blocked(false);
    }
    run.smm.active = false;
    run.smm.inside_nmi = false;
    run.sregs_changed(true);
    let host = vm.shared.backend.host_limits();
    let restored = smm::restore(&area, state.features.long_mode, &state.regs, &state.sregs)
        .ok()
        .filter(|r| check_sregs(&host, &state.features, &r.sregs).is_ok());
    let Some(r) = restored else {
        return exit_reason(pages.run, abi::KVM_EXIT_SHUTDOWN);
    };
    state.regs = r.regs;
    state.sregs = r.sregs;
    state.run.dr6 = r.dr6;
    state.run.dr7 = r.dr7;
    state.msrs.smbase = r.smbase;
    state.run.interrupt_shadow = r.interrupt_shadow;
    Ok(Next::Enter)
}

/// `KVM_SMI`: an SMI for the vCPU, taken at its next entry that allows one
/// (KVM's `kvm_inject_smi`). Always 0.
pub(crate) fn inject(state: &mut ArchState) {
    state.run.smm.pending = true;
}
