// SPDX-License-Identifier: GPL-2.0

//! The exits that read or write a register the guest may not reach
//! directly: CPUID (from the vCPU's table), RDMSR/WRMSR, MOV to and from
//! the debug registers (a software copy) and MOV to and from CR0, CR4 and
//! CR8, each checked as KVM checks it; refused is #GP (or #UD).

use super::insn::{code_size, emulation_failed, fetch};
use super::{raise, Next, DR6_RESET, DR7_RESET, GP_VECTOR, UD_VECTOR};
use crate::abi::{self, kvm_cpuid_entry2, kvm_regs, kvm_sregs};
use crate::backend::ExitInfo;
use crate::sys::cpu;
use crate::sys::mem::SharedPage;
use crate::vcpu::ArchState;
use crate::vm::Vm;
use crate::x86::cpuid::{self, Leaf};
use crate::x86::decode::{self, is_prefix, Gpr, MAX_INSN_LEN};
use crate::x86::emulate::{self, PagingRegs};
use crate::x86::msr::{self, MsrContext, SharedRegs};
use crate::x86::xsave;
use kernel::prelude::*;

/// CPUID.1:ECX bit 27 (OSXSAVE) and CPUID.1:EDX bit 9 (APIC): bits KVM
/// computes from the guest's CR4 and APIC_BASE at run time.
const CPUID1_ECX_OSXSAVE: u32 = 1 << 27;

const CPUID1_EDX_APIC: u32 = 1 << 9;

/// CR4.OSXSAVE. SDM Vol. 3A 2.5.
const CR4_OSXSAVE: u64 = 1 << 18;

/// CPUID.(EAX=0DH,ECX=1):EAX bit 1: XSAVEC.
const D1_EAX_XSAVEC: u32 = 1 << 1;

/// CPUID from the vCPU's table (`KVM_SET_CPUID2`); a leaf the table lacks
/// reads as zeros (docs/abi.md: KVM's out-of-range rule for Intel guests is
/// not copied). The bits KVM keeps up to date at run time come from the
/// vCPU's state ([`with_runtime_bits`]).
pub(super) fn answer_cpuid(state: &mut ArchState) {
    let xcr0 = state.run.fpu().xcr0();
    cpuid_into(&mut state.regs, &state.sregs, &state.cpuid, xcr0);
}

/// [`answer_cpuid`] from the parts of the vCPU's state it reads: the
/// registers, the table and the guest's XCR0 (the fast path has no
/// `ArchState` to give: its FPU image is loaded).
pub(super) fn cpuid_into(
    regs: &mut kvm_regs,
    sregs: &kvm_sregs,
    table: &[kvm_cpuid_entry2],
    xcr0: u64,
) {
    let function = regs.rax as u32;
    let index = regs.rcx as u32;
    let e = cpuid::lookup(table, Leaf { function, index })
        .map(|e| runtime_bits(e, sregs, xcr0))
        .unwrap_or_default();
    // CPUID writes 32-bit registers: the upper halves are cleared. SDM Vol. 2A CPUID.
    regs.rax = u64::from(e.eax);
    regs.rbx = u64::from(e.ebx);
    regs.rcx = u64::from(e.ecx);
    regs.rdx = u64::from(e.edx);
}

/// An entry of the vCPU's CPUID table with the bits KVM updates as the
/// vCPU runs (`kvm_update_cpuid_runtime`), as the guest's CPUID and
/// `KVM_GET_CPUID2` see them: OSXSAVE follows CR4, the APIC bit is clear
/// while APIC_BASE disables the APIC, and leaf 0xD's area sizes (sub-leaf
/// 0's EBX; sub-leaf 1's where it offers XSAVEC) follow the guest's XCR0.
pub(crate) fn with_runtime_bits(state: &ArchState, e: &kvm_cpuid_entry2) -> kvm_cpuid_entry2 {
    runtime_bits(e, &state.sregs, state.run.fpu().xcr0())
}

/// [`with_runtime_bits`] from CR4, APIC_BASE and XCR0.
fn runtime_bits(e: &kvm_cpuid_entry2, sregs: &kvm_sregs, xcr0: u64) -> kvm_cpuid_entry2 {
    let mut e = *e;
    match (e.function, e.index) {
        (1, _) => {
            e.ecx &= !CPUID1_ECX_OSXSAVE;
            if sregs.cr4 & CR4_OSXSAVE != 0 {
                e.ecx |= CPUID1_ECX_OSXSAVE;
            }
            if sregs.apic_base & crate::x86::regs::apic_base::ENABLE == 0 {
                e.edx &= !CPUID1_EDX_APIC;
            }
        }
        (0xd, 0) => e.ebx = xsave::required_size(xcr0, false, cpu::cpuid_tuple),
        (0xd, 1) if e.eax & D1_EAX_XSAVEC != 0 => {
            e.ebx = xsave::required_size(xcr0, true, cpu::cpuid_tuple)
        }
        _ => {}
    }
    e
}

/// RDMSR/WRMSR from the guest: the MSR in ECX, the value in EDX:EAX.
/// Returns false for #GP. SDM Vol. 2B RDMSR, WRMSR.
pub(super) fn guest_msr(vm: &Vm, state: &mut ArchState, write: bool) -> bool {
    let index = state.regs.rcx as u32;
    // A write's value (EDX:EAX), read once for every kind of MSR below.
    let value = (state.regs.rdx << 32) | (state.regs.rax & 0xffff_ffff);
    let mut hv_value = value;
    let hv_vcpu = super::hyperv::VcpuHv {
        features: &state.features,
        tsc_offset: state.msrs.tsc_offset,
        tsc_khz: state.tsc_khz,
        vp_index: &mut state.run.hv_vp_index,
        irq: state.run.irq.as_mut(),
        space: state.run.smm.space(),
    };
    if let Some(ok) = super::hyperv::msr(vm, hv_vcpu, index, &mut hv_value, write, false) {
        if ok && !write {
            state.regs.rax = hv_value & 0xffff_ffff;
            state.regs.rdx = hv_value >> 32;
        }
        return ok;
    }
    let host = vm.shared.backend.host_limits();
    let ArchState { regs, sregs, .. } = state;
    // FS.base and GS.base are the segments' own bases. SDM Vol. 3A 3.4.4.
    if index == msr::index::FS_BASE || index == msr::index::GS_BASE {
        let base = if index == msr::index::FS_BASE {
            &mut sregs.fs.base
        } else {
            &mut sregs.gs.base
        };
        if write {
            if !msr::is_canonical(value) {
                return false;
            }
            *base = value;
        } else {
            regs.rax = *base & 0xffff_ffff;
            regs.rdx = *base >> 32;
        }
        return true;
    }
    // The x2APIC and TSC-deadline MSRs, with an in-kernel APIC.
    let write_value = write.then_some(value);
    if let Some(result) = super::apic::msr(state, index, write_value) {
        let Ok(value) = result else {
            return false;
        };
        if !write {
            state.regs.rax = value & 0xffff_ffff;
            state.regs.rdx = value >> 32;
        }
        return true;
    }
    if write && index == msr::index::APIC_BASE {
        let value = write_value.unwrap_or(0);
        if !super::apic::apic_base_write_allowed(state, value) {
            return false;
        }
    }
    let pv_cpuid_enforced = state.run.pv_cpuid_enforced;
    let ArchState {
        regs,
        sregs,
        msrs,
        features,
        ..
    } = state;
    if write {
        let value = match index {
            msr::index::EFER => {
                let Some(value) = emulate::guest_efer_write(sregs.cr0, sregs.efer, value) else {
                    return false;
                };
                // And only bits its CPUID offers. SDM Vol. 3A 2.2.1.
                if !crate::x86::regs::check_efer(&host, features, value) {
                    return false;
                }
                value
            }
            _ => value,
        };
        let ctx = MsrContext {
            host: &host,
            guest: features,
            host_tsc: cpu::rdtsc(),
            host_initiated: false,
            vm_tsc_offset: msrs.tsc_offset,
            platform_info_readable: vm.platform_info_readable(),
            pv_cpuid_enforced,
        };
        let mut shared = SharedRegs {
            efer: &mut sregs.efer,
            apic_base: &mut sregs.apic_base,
        };
        let ok = msr::set(msrs, &mut shared, &ctx, index, value);
        if ok && index == msr::index::APIC_BASE {
            super::apic::apic_base_changed(state);
        }
        if ok {
            super::kvmclock::msr_written(vm, index, value);
        }
        ok
    } else {
        let ctx = MsrContext {
            host: &host,
            guest: features,
            host_tsc: cpu::rdtsc(),
            host_initiated: false,
            vm_tsc_offset: msrs.tsc_offset,
            platform_info_readable: vm.platform_info_readable(),
            pv_cpuid_enforced,
        };
        let shared = SharedRegs {
            efer: &mut sregs.efer,
            apic_base: &mut sregs.apic_base,
        };
        let value = msr::get(msrs, &shared, &ctx, index);
        match value {
            Some(v) => {
                regs.rax = v & 0xffff_ffff;
                regs.rdx = v >> 32;
                true
            }
            None => false,
        }
    }
}

/// XSETBV (`0F 01 D1`): the guest sets XCR0, as KVM's
/// `kvm_emulate_xsetbv`. #UD without CR4.OSXSAVE (which both vendors check
/// before they exit, but a stale exit costs nothing to check); #GP(0)
/// outside ring 0, for an XCR other than XCR0 and for a value XCR0's
/// rules refuse for this guest's CPUID (x86/xsave.rs `xcr0_valid`); else
/// the value is the guest's from the next entry on (sys/fpu.rs). SDM
/// Vol. 2C XSETBV.
pub(super) fn xsetbv(
    vm: &Vm,
    state: &mut ArchState,
    info: &ExitInfo,
    page: &SharedPage<'_>,
) -> Result<Next> {
    if state.sregs.cr4 & CR4_OSXSAVE == 0 {
        raise(state, UD_VECTOR, None);
        return Ok(Next::Enter);
    }
    let value = (state.regs.rdx << 32) | (state.regs.rax & 0xffff_ffff);
    let guest_supported = state.features.xcr0;
    if state.sregs.ss.dpl != 0
        || state.regs.rcx as u32 != abi::XCR_XFEATURE_ENABLED_MASK
        || !state.run.fpu_mut().set_xcr0(value, guest_supported)
    {
        raise(state, GP_VECTOR, Some(0));
        return Ok(Next::Enter);
    }
    super::insn::skip_or_fail(vm, state, info, &[0x0f, 0x01, 0xd1], page)
}

/// MOV to or from a debug register (0F 21 /r reads, 0F 23 /r writes), on
/// the guest's software copy. SDM Vol. 2B MOV (debug registers).
pub(super) fn debug_register(
    vm: &Vm,
    state: &mut ArchState,
    page: &SharedPage<'_>,
) -> Result<Next> {
    let mut bytes = [0u8; MAX_INSN_LEN];
    let n = fetch(vm, state, &mut bytes);
    let code = code_size(state);
    let Some(mov) = decode::decode_mov_special(&bytes[..n], code, &[0x21, 0x23]) else {
        return emulation_failed(vm, state, page, &bytes[..n]);
    };
    let write = mov.opcode == 0x23;
    let gpr = mov.gpr;
    let Some(dr) = emulate::debug_register_alias(mov.special, state.sregs.cr4) else {
        raise(state, UD_VECTOR, None);
        return Ok(Next::Enter);
    };
    let mask = emulate::special_operand_mask(code);
    if write {
        let value = gpr.get(&state.regs) & mask;
        match dr {
            0..=3 => state.run.dr[dr as usize] = value,
            6 => state.run.dr6 = value | DR6_RESET,
            _ => state.run.dr7 = value | DR7_RESET,
        }
    } else {
        let value = match dr {
            0..=3 => state.run.dr[dr as usize],
            6 => state.run.dr6,
            _ => state.run.dr7,
        };
        *gpr.get_mut(&mut state.regs) = value & mask;
    }
    state.regs.rip = emulate::wrap_ip(state.regs.rip.wrapping_add(mov.len as u64), code);
    state.run.interrupt_shadow = false;
    Ok(Next::Enter)
}

/// MOV to a control register that exits: CR4 (intercepted on both
/// vendors) is checked as KVM's `kvm_set_cr4` does against the guest's
/// CPUID, #GP if refused, and a change flushes the guest's cached
/// translations; CR0 ([`cr0_write`]) and CR8 exit on VMX only. The source
/// register comes from the hardware (decode assists, VMX) or from decoding
/// `0F 22 /r`. SDM Vol. 2B MOV (control registers).
pub(super) fn cr_write(
    vm: &Vm,
    state: &mut ArchState,
    page: &SharedPage<'_>,
    info: &ExitInfo,
    cr: u8,
    gpr: Option<u8>,
) -> Result<Next> {
    let code = code_size(state);
    let (gpr, len) = match gpr {
        Some(n) => (Gpr::from_number(n), None),
        None => {
            let mut bytes = [0u8; MAX_INSN_LEN];
            let n = fetch(vm, state, &mut bytes);
            match decode::decode_mov_special(&bytes[..n], code, &[0x22]) {
                Some(mov) if mov.special == cr => (mov.gpr, Some(mov.len)),
                _ => {
                    return emulation_failed(vm, state, page, &bytes[..n]);
                }
            }
        }
    };
    let value = gpr.get(&state.regs) & emulate::special_operand_mask(code);
    let before = (state.sregs.cr0, state.sregs.cr4, state.sregs.efer);
    let flush_before = state.run.flush_tlb;
    let accepted = match cr {
        0 => cr0_write(state, value),
        4 => {
            let host = vm.shared.backend.host_limits();
            let old = state.sregs.cr4;
            let ok = crate::x86::regs::cr4_write_ok(
                &host,
                &state.features,
                old,
                value,
                state.sregs.efer,
            );
            if ok && value != old {
                state.sregs.cr4 = value;
                state.run.flush_tlb = true;
            }
            ok
        }
        // CR8 is the task priority (bits 3:0); user space owns it without an in-kernel
        // APIC, through `kvm_run.cr8`; with one it is the TPR's bits 7:4 at once (KVM's
        // `kvm_set_cr8`). SDM Vol. 3A 11.8.6.
        8 => {
            if value >> 4 == 0 {
                state.sregs.cr8 = value;
                if let Some(link) = state.run.irq.as_mut() {
                    link.set_cr8(value);
                }
            }
            value >> 4 == 0
        }
        // Not intercepted, so not reached; refuse rather than guess.
        _ => return Ok(Next::Fail(EIO)),
    };
    // Only a change that makes the CPU load PAE's PDPTEs reads them again
    // (the CPU keeps the copies it has otherwise, even if the table in
    // memory changed since); and it is #GP, with every register and flag
    // as before, when one of them is invalid or CR3's page is not the
    // guest's memory, as the CPU refuses and KVM's `load_pdptrs` fails:
    // entering with them would fail the entry instead.
    let after = (state.sregs.cr0, state.sregs.cr4);
    if accepted && crate::x86::regs::loads_pdptes((before.0, before.1), after, state.sregs.efer) {
        if !pdptes_loadable(vm, state) {
            (state.sregs.cr0, state.sregs.cr4, state.sregs.efer) = before;
            state.run.flush_tlb = flush_before;
            raise(state, GP_VECTOR, Some(0));
            return Ok(Next::Enter);
        }
        state.run.reload_pdptrs = true;
    }
    if !accepted {
        raise(state, GP_VECTOR, Some(0));
        return Ok(Next::Enter);
    }
    state.run.interrupt_shadow = false;
    state.regs.rip = match (info.next_rip, len) {
        (Some(next), _) => next,
        (None, Some(len)) => emulate::wrap_ip(state.regs.rip.wrapping_add(len as u64), code),
        // Decode assists without NRIPS: the instruction is MOV CR4, 0F 22 /r plus
        // prefixes; fetch to measure it.
        (None, None) => {
            let mut bytes = [0u8; MAX_INSN_LEN];
            let n = fetch(vm, state, &mut bytes);
            let prefixes = bytes[..n]
                .iter()
                .take_while(|&&b| is_prefix(b, code))
                .count();
            emulate::wrap_ip(state.regs.rip.wrapping_add(prefixes as u64 + 3), code)
        }
    };
    Ok(Next::Enter)
}

/// Whether the four PDPTEs at the guest's CR3 can be loaded: CR3's page
/// (bits 31:5 locate the entries) is guest memory and no present entry has
/// a reserved bit ([`crate::x86::regs::pdptes_valid`]).
fn pdptes_loadable(vm: &Vm, state: &ArchState) -> bool {
    let mut bytes = [0u8; 32];
    let base = state.sregs.cr3 & 0xffff_ffe0;
    if vm
        .read_guest_in(state.run.smm.space(), base, &mut bytes)
        .is_none()
    {
        return false;
    }
    let entry = |i: usize| {
        let mut le = [0u8; 8];
        le.copy_from_slice(&bytes[8 * i..8 * i + 8]);
        u64::from_le_bytes(le)
    };
    let pdptes = [entry(0), entry(1), entry(2), entry(3)];
    crate::x86::regs::pdptes_valid(&pdptes, state.features.phys_bits)
}

/// LMSW when it exits (on VMX, when it sets PE, which rkvm owns): the
/// machine status word into CR0's bits 3:0, PE set but never cleared
/// (SDM Vol. 2A LMSW), through [`cr0_write`] as KVM's `kvm_lmsw`. The
/// hardware gave the operand and the instruction's length.
pub(super) fn lmsw(state: &mut ArchState, info: &ExitInfo, source: u16) -> Result<Next> {
    let Some(next) = info.next_rip else {
        return Ok(Next::Fail(EIO));
    };
    let value = (state.sregs.cr0 & !0xe) | (u64::from(source) & 0xf);
    if !cr0_write(state, value) {
        raise(state, GP_VECTOR, Some(0));
        return Ok(Next::Enter);
    }
    state.run.interrupt_shadow = false;
    state.regs.rip = next;
    Ok(Next::Enter)
}

/// MOV to CR0 when it exits (on VMX, when the guest changes a bit the CPU
/// forces on in VMX operation, such as NE): [`emulate::cr0_write`]'s
/// rules, KVM's `kvm_set_cr0`. Returns false (and changes nothing) for a
/// value that is #GP. The PAE PDPTEs are [`cr_write`]'s to check and load
/// (LMSW cannot change a bit that loads them).
pub(super) fn cr0_write(state: &mut ArchState, value: u64) -> bool {
    let s = &state.sregs;
    let old = PagingRegs {
        cr0: s.cr0,
        cr4: s.cr4,
        efer: s.efer,
        cs_l: s.cs.l != 0,
    };
    let Some(new) = emulate::cr0_write(old, value) else {
        return false;
    };
    state.sregs.cr0 = new.cr0;
    state.sregs.efer = new.efer;
    if new.translations_stale {
        state.run.flush_tlb = true;
    }
    true
}

/// MOV from a control register when it exits: on VMX only CR8, which
/// reads the task priority user space last set. The hardware named the
/// destination register and the instruction's length.
pub(super) fn cr_read(
    state: &mut ArchState,
    info: &ExitInfo,
    cr: u8,
    gpr: Option<u8>,
) -> Result<Next> {
    let (Some(n), Some(next), 8) = (gpr, info.next_rip, cr) else {
        // Not intercepted without those, so not reached; refuse rather than guess.
        return Ok(Next::Fail(EIO));
    };
    *Gpr::from_number(n).get_mut(&mut state.regs) = state.sregs.cr8;
    state.run.interrupt_shadow = false;
    state.regs.rip = next;
    Ok(Next::Enter)
}
