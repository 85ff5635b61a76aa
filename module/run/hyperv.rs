// SPDX-License-Identifier: GPL-2.0

//! Hyper-V, the kernel's side (hyperv/ has the rules and the layouts): the
//! Hyper-V MSRs, read and written by the guest or the VMM, the hypercalls,
//! and the reference TSC page in guest memory.
//!
//! - A guest whose CPUID says "Hv#1" may use the MSRs; the VMM always may
//!   (`KVM_GET/SET_MSRS`, as KVM's `host_initiated`). The partition-wide
//!   ones live in the VM (`Vm::with_hyperv`).
//! - Writing the hypercall MSR with its enable bit fills the page it
//!   names with this vendor's hypercall instruction and RET.
//! - Once the guest has set its OS identity, VMCALL/VMMCALL is a Hyper-V
//!   hypercall: the call's input value in RCX, its input and output in RDX
//!   and R8 (in 64-bit mode; EDX:EAX, EBX:ECX, EDI:ESI otherwise), the
//!   status back in RAX (EDX:EAX). The IPI calls go to the in-kernel
//!   APICs of the vCPUs with the VP indices they name (each APIC keeps a
//!   copy of its vCPU's index for that). Extended calls exit to user space with
//!   `KVM_EXIT_HYPERV`; the next `KVM_RUN` gives the guest
//!   `kvm_run.hyperv.u.hcall.result` and moves past the instruction.
//! - The reference TSC page is written before an entry after the guest
//!   enabled it or the VM's clock moved (`KVM_SET_CLOCK`), from the same
//!   kvmclock reference as the guest's kvmclock (x86/pvclock.rs), as KVM
//!   derives it from its own clock. Sequence 0 first, so that a guest
//!   reading it meanwhile falls back to the counter MSR.

use super::apic::IrqLink;
use super::insn::{code_size, next_rip, skip_or_fail};
use super::{exit_reason, raise, set_pending, Next, Pending, UD_VECTOR, UNION};
use crate::abi::{self, kvm_hyperv_exit, kvm_hyperv_exit__bindgen_ty_1__bindgen_ty_2 as Hcall};
use crate::backend::ExitInfo;
use crate::hyperv::{
    self as hv, ipi, msr, params, tlb, Call, Outcome, TscPage, TscStatus, Write, TSC_PAGE_SIZE,
};
use crate::irq::lapic;
use crate::memslot::Space;
use crate::sys::cpu;
use crate::sys::mem::SharedPage;
use crate::vcpu::{ArchState, MAX_VCPUS};
use crate::vm::Vm;
use crate::x86::cpuid::GuestFeatures;
use crate::x86::decode::CodeSize;
use core::mem::offset_of;
use kernel::prelude::*;

/// CR0.PE. SDM Vol. 3A 2.5.
const CR0_PE: u64 = 1;

/// What a Hyper-V MSR access needs of the vCPU's state.
pub(crate) struct VcpuHv<'a> {
    /// Its CPUID features (whether they say "Hv#1").
    pub(crate) features: &'a GuestFeatures,
    /// Its TSC offset.
    pub(crate) tsc_offset: u64,
    /// The rate its guest is told its TSC runs at (`KVM_SET_TSC_KHZ`).
    pub(crate) tsc_khz: u32,
    /// Its VP index.
    pub(crate) vp_index: &'a mut u32,
    /// Its link to the in-kernel irqchip, if there is one.
    pub(crate) irq: Option<&'a mut IrqLink>,
    /// The memory it sees (SMM's or not): where the hypercall page goes,
    /// as KVM's `kvm_vcpu_write_guest`.
    pub(crate) space: Space,
}

/// A read (`write` false) or write of MSR `index` when it is a Hyper-V
/// one: `None` if it is not; otherwise whether the access succeeded, a
/// read's value in `value`. `host` is an access by the VMM.
pub(crate) fn msr(
    vm: &Vm,
    vcpu: VcpuHv<'_>,
    index: u32,
    value: &mut u64,
    write: bool,
    host: bool,
) -> Option<bool> {
    if !msr::is_hyperv(index) {
        return None;
    }
    if !host && !vcpu.features.hyperv {
        return Some(false);
    }
    if index == msr::VP_INDEX {
        if !write {
            *value = u64::from(*vcpu.vp_index);
            return Some(true);
        }
        let Some(i) = hv::vp_index_write(*value, host, MAX_VCPUS as u32) else {
            return Some(false);
        };
        set_vp_index(vcpu.vp_index, vcpu.irq.as_deref(), i);
        return Some(true);
    }
    if let Some(offset) = apic_register(index) {
        let result = super::apic::hv_msr(vcpu.irq, offset, write.then_some(*value));
        return Some(result.map(|v| *value = v).is_ok());
    }
    let tsc_offset = vcpu.tsc_offset;
    if write {
        return Some(write_msr(vm, vcpu.space, index, *value, host));
    }
    let read = match index {
        msr::TIME_REF_COUNT => {
            let host_tsc = cpu::rdtsc();
            let clock_ns = vm.kvmclock().at(host_tsc, cpu::tsc_khz());
            let guest_tsc = host_tsc.wrapping_add(tsc_offset);
            Some(vm.with_hyperv(|p| p.reference_time(guest_tsc, clock_ns / 100)))
        }
        // The guest's TSC runs at the host's rate (no TSC scaling).
        msr::TSC_FREQUENCY => Some(u64::from(vcpu.tsc_khz) * 1000),
        msr::APIC_FREQUENCY => Some(1_000_000_000 / vm.apic_bus_cycle_ns().max(1)),
        _ => vm.with_hyperv(|p| p.read(index)),
    };
    Some(read.map(|v| *value = v).is_some())
}

/// Sets the vCPU's VP index, in its run state and, for Hyper-V IPIs sent
/// by other vCPUs, in its in-kernel APIC.
pub(crate) fn set_vp_index(vp_index: &mut u32, irq: Option<&IrqLink>, index: u32) {
    *vp_index = index;
    if let Some(link) = irq {
        link.apic.set_hv_vp_index(index);
    }
}

/// The local APIC register an APIC-access MSR stands for.
fn apic_register(index: u32) -> Option<u32> {
    match index {
        msr::EOI => Some(lapic::reg::EOI),
        msr::ICR => Some(lapic::reg::ICR_LOW),
        msr::TPR => Some(lapic::reg::TPR),
        _ => None,
    }
}

/// Writes a Hyper-V MSR; false is #GP (or the VMM's error).
fn write_msr(vm: &Vm, space: Space, index: u32, value: u64, host: bool) -> bool {
    vm.with_hyperv(|p| match p.write(index, value, host) {
        Write::Done => true,
        Write::Refused => false,
        Write::HypercallPage(gpa) => {
            let code = hv::hypercall_page(vm.shared.backend.hypercall_insn());
            let written = vm.write_guest_in(space, gpa, &code).is_some();
            if written {
                p.hypercall_page_written(value);
            }
            written
        }
    })
}

/// Whether [`update_tsc_page`] has work for a vCPU whose TSC offset is
/// `tsc_offset` (read without the VM's Hyper-V lock).
pub(super) fn tsc_page_stale(vm: &Vm, tsc_offset: u64) -> bool {
    vm.hyperv_tsc_page_due() || vm.hyperv_tsc_page_offset().is_some_and(|o| o != tsc_offset)
}

/// Before an entry: writes the reference TSC page if it is due, or if it
/// was written for another TSC offset than this vCPU's (its TSC was set
/// meanwhile). The VM's Hyper-V lock is taken only then.
pub(super) fn update_tsc_page(vm: &Vm, state: &ArchState) {
    let tsc_offset = state.msrs.tsc_offset;
    if !tsc_page_stale(vm, tsc_offset) {
        return;
    }
    vm.with_hyperv(|p| {
        p.tsc_offset_seen(tsc_offset);
        let Some(gpa) = p.tsc_page_due() else {
            return;
        };
        p.tsc = match write_tsc_page(vm, state, p, gpa) {
            Some(page) => TscStatus::Set { page, tsc_offset },
            None => TscStatus::Broken,
        };
    });
}

/// Writes the page at `gpa` (or adopts the guest's, if it froze it);
/// `None` if guest memory refused or the clock cannot be expressed.
fn write_tsc_page(vm: &Vm, state: &ArchState, p: &mut hv::Partition, gpa: u64) -> Option<TscPage> {
    let mut bytes = [0u8; TSC_PAGE_SIZE];
    vm.read_guest(gpa, &mut bytes)?;
    let current = TscPage::from_bytes(&bytes);
    if p.adopt_frozen(current, state.msrs.tsc_offset) {
        return Some(current);
    }
    vm.write_guest(gpa, &0u32.to_le_bytes())?;
    let clock = vm
        .kvmclock()
        .time_info(state.msrs.tsc_offset, cpu::tsc_khz());
    let page = TscPage::from_clock(&clock, current.sequence)?;
    // The reserved word too, as KVM writes the whole structure.
    vm.write_guest(gpa + 4, &page.to_bytes()[4..])?;
    vm.write_guest(gpa, &page.sequence.to_le_bytes())?;
    Some(page)
}

/// Whether a VMCALL/VMMCALL is a Hyper-V hypercall: the guest's CPUID
/// offers Hyper-V and the guest has set its OS identity (KVM's
/// `kvm_hv_hypercall_enabled`).
pub(super) fn owns_hypercall(vm: &Vm, state: &ArchState) -> bool {
    state.features.hyperv && vm.with_hyperv(|p| p.hypercalls_enabled())
}

/// A Hyper-V hypercall (TLFS "Hypercall Interface"). Outside ring 0 or
/// outside protected mode it is #UD.
pub(super) fn hypercall(
    vm: &Vm,
    state: &mut ArchState,
    info: &ExitInfo,
    page: &SharedPage<'_>,
    opcode: &[u8],
) -> Result<Next> {
    if state.sregs.ss.dpl != 0 || state.sregs.cr0 & CR0_PE == 0 {
        raise(state, UD_VECTOR, None);
        return Ok(Next::Enter);
    }
    let wide = code_size(state) == CodeSize::Bits64;
    let r = &state.regs;
    let pair = |high: u64, low: u64| (high << 32) | (low & 0xffff_ffff);
    let call = if wide {
        Call {
            control: r.rcx,
            input: r.rdx,
            output: r.r8,
        }
    } else {
        Call {
            control: pair(r.rdx, r.rax),
            input: pair(r.rbx, r.rcx),
            output: pair(r.rdi, r.rsi),
        }
    };
    let outcome = call.outcome();
    match outcome {
        Outcome::Done(status) => {
            set_result(state, status, wide);
            skip_or_fail(vm, state, info, opcode, page)
        }
        Outcome::SendIpi | Outcome::FlushTlb => {
            let xmm = xmm_halves(state, &call);
            let read = |gpa, buf: &mut [u8]| vm.read_guest(gpa, buf).is_some();
            let status = if outcome == Outcome::SendIpi {
                send_ipi(state, &call, &xmm, read)
            } else {
                match tlb::decode(&call, &xmm, read) {
                    Ok(flush) => {
                        if flush.any {
                            vm.flush_all_guest_tlbs();
                        }
                        flush.result
                    }
                    Err(status) => status,
                }
            };
            set_result(state, status, wide);
            skip_or_fail(vm, state, info, opcode, page)
        }
        Outcome::User => {
            let Some(next_rip) = next_rip(vm, state, info, opcode, page)? else {
                return Ok(Next::User);
            };
            let hcall = Hcall {
                input: call.control,
                result: 0,
                params: [call.input, call.output],
            };
            page.write(
                UNION + offset_of!(kvm_hyperv_exit, type_),
                &abi::KVM_EXIT_HYPERV_HCALL,
            )?;
            page.write(UNION + offset_of!(kvm_hyperv_exit, u), &hcall)?;
            set_pending(state, Pending::HypervCall { next_rip, wide });
            exit_reason(page, abi::KVM_EXIT_HYPERV)
        }
    }
}

/// XMM0-5 as 64-bit halves, from the vCPU's saved FPU state, for a fast
/// call that passes parameters in them (else zeros, unread).
fn xmm_halves(state: &ArchState, call: &Call) -> [u64; params::XMM_HALVES] {
    let mut xmm = [0u64; params::XMM_HALVES];
    if call.reads_xmm() {
        let saved = state.run.fpu().legacy().xmm;
        for (i, half) in xmm.iter_mut().enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&saved[i / 2][(i % 2) * 8..][..8]);
            *half = u64::from_le_bytes(bytes);
        }
    }
    xmm
}

/// `HvCallSendSyntheticClusterIpi(Ex)` (hyperv/ipi.rs): decodes the call
/// from guest memory (`read`) or registers (RDX, R8, and `xmm` for a fast
/// `Ex`) and sends the IPI; the status for the guest. Only with an
/// in-kernel APIC (KVM's `kvm_hv_send_ipi`).
fn send_ipi(
    state: &ArchState,
    call: &Call,
    xmm: &[u64; params::XMM_HALVES],
    read: impl FnMut(u64, &mut [u8]) -> bool,
) -> u64 {
    let Some(link) = state.run.irq.as_ref() else {
        return hv::status::INVALID_HYPERCALL_INPUT;
    };
    match ipi::decode(call, xmm, read) {
        Ok(Some(ipi)) => {
            link.chip.send_hv_ipi(ipi.vector, |vp| ipi.to.contains(vp));
            hv::status::SUCCESS
        }
        Ok(None) => hv::status::SUCCESS,
        Err(status) => status,
    }
}

/// The next `KVM_RUN` after a hypercall exit: user space's `result` is
/// the guest's status, and the instruction is done.
pub(super) fn complete(
    state: &mut ArchState,
    page: &SharedPage<'_>,
    next_rip: u64,
    wide: bool,
) -> Result {
    let at = UNION + offset_of!(kvm_hyperv_exit, u) + offset_of!(Hcall, result);
    let result: u64 = page.read(at)?;
    set_result(state, result, wide);
    state.regs.rip = next_rip;
    state.run.interrupt_shadow = false;
    Ok(())
}

/// The status in RAX, or in EDX:EAX outside 64-bit mode.
fn set_result(state: &mut ArchState, status: u64, wide: bool) {
    if wide {
        state.regs.rax = status;
    } else {
        state.regs.rax = status & 0xffff_ffff;
        state.regs.rdx = status >> 32;
    }
}
