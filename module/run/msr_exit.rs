// SPDX-License-Identifier: GPL-2.0

//! A guest's RDMSR or WRMSR, with the VMM's say (KVM's
//! `kvm_emulate_rdmsr`/`kvm_emulate_wrmsr` and `kvm_msr_user_space`).
//!
//! The VM's MSR filter (`KVM_X86_SET_MSR_FILTER`, x86/msr_filter.rs) is
//! asked first; an allowed access goes to the kernel's MSRs
//! (`regs::guest_msr`). An access that is refused — by the filter
//! (`KVM_MSR_EXIT_REASON_FILTER`), because rkvm does not know the MSR
//! (`..._UNKNOWN`), or because the value or access is invalid
//! (`..._INVAL`) — is #GP, unless the VMM asked for that reason with
//! `KVM_CAP_X86_USER_SPACE_MSR`: then `KVM_RUN` returns
//! `KVM_EXIT_X86_RDMSR` or `KVM_EXIT_X86_WRMSR` with `kvm_run.msr` (the
//! reason, the index, the value written), and the next `KVM_RUN` finishes
//! the instruction from what user space left there: `error` non-zero is
//! #GP for the guest, otherwise a read's `data` lands in EDX:EAX and RIP
//! moves past the instruction.

use super::insn::{next_rip, skip_or_fail};
use super::{exit_reason, raise, regs::guest_msr, set_pending, Next, Pending, GP_VECTOR, UNION};
use crate::abi::{self, kvm_run__bindgen_ty_1__bindgen_ty_23 as MsrRun};
use crate::backend::ExitInfo;
use crate::sys::mem::SharedPage;
use crate::vcpu::ArchState;
use crate::vm::Vm;
use crate::x86::msr;
use core::mem::offset_of;
use kernel::prelude::*;

const RDMSR: [u8; 2] = [0x0f, 0x32];
const WRMSR: [u8; 2] = [0x0f, 0x30];

/// The exit for a guest RDMSR (`write` false) or WRMSR.
pub(super) fn access(
    vm: &Vm,
    state: &mut ArchState,
    info: &ExitInfo,
    page: &SharedPage<'_>,
    write: bool,
) -> Result<Next> {
    let index = state.regs.rcx as u32;
    let opcode = if write { &WRMSR } else { &RDMSR };
    let reason = if !vm.msr_allowed(index, write) {
        abi::KVM_MSR_EXIT_REASON_FILTER
    } else if guest_msr(vm, state, write) {
        return skip_or_fail(vm, state, info, opcode, page);
    } else if msr::exists(index) || (0x800..=0x8ff).contains(&index) {
        abi::KVM_MSR_EXIT_REASON_INVAL
    } else {
        abi::KVM_MSR_EXIT_REASON_UNKNOWN
    };
    if !vm.msr_exits_to_user(reason) {
        raise(state, GP_VECTOR, Some(0));
        return Ok(Next::Enter);
    }
    // Where the guest goes on once user space has answered; RIP stays
    // until then.
    let Some(next_rip) = next_rip(vm, state, info, opcode, page)? else {
        return Ok(Next::User);
    };
    let exit = MsrRun {
        error: 0,
        pad: [0; 7],
        reason,
        index,
        data: if write {
            (state.regs.rdx << 32) | (state.regs.rax & 0xffff_ffff)
        } else {
            0
        },
    };
    page.write(UNION, &exit)?;
    set_pending(state, Pending::Msr { write, next_rip });
    exit_reason(
        page,
        if write {
            abi::KVM_EXIT_X86_WRMSR
        } else {
            abi::KVM_EXIT_X86_RDMSR
        },
    )
    .map(|_| Next::User)
}

/// The next `KVM_RUN` after such an exit: user space's `error` is #GP,
/// else a read's `data` goes to EDX:EAX and the instruction is done.
pub(super) fn complete(
    state: &mut ArchState,
    page: &SharedPage<'_>,
    write: bool,
    next_rip: u64,
) -> Result {
    let error: u8 = page.read(UNION + offset_of!(MsrRun, error))?;
    if error != 0 {
        raise(state, GP_VECTOR, Some(0));
        return Ok(());
    }
    if !write {
        let data: u64 = page.read(UNION + offset_of!(MsrRun, data))?;
        state.regs.rax = data & 0xffff_ffff;
        state.regs.rdx = data >> 32;
    }
    state.regs.rip = next_rip;
    state.run.interrupt_shadow = false;
    Ok(())
}
