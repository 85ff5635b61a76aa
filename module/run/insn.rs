// SPDX-License-Identifier: GPL-2.0

//! The guest's instruction at RIP, for the exits that must look at it:
//! its code size, fetching its bytes through the guest's own page tables,
//! skipping it when the hardware gave no next RIP, and the
//! emulation-failure exit when its bytes are not what the exit said.

use super::{Next, RFLAGS_VM, UNION};
use crate::abi::{
    self, kvm_run, kvm_run__bindgen_ty_1__bindgen_ty_14 as EmulationFailure,
    kvm_run__bindgen_ty_1__bindgen_ty_14__bindgen_ty_1 as InsnUnion,
    kvm_run__bindgen_ty_1__bindgen_ty_14__bindgen_ty_1__bindgen_ty_1 as FailureInsn, kvm_segment,
};
use crate::backend::ExitInfo;
use crate::sys::mem::SharedPage;
use crate::vcpu::ArchState;
use crate::vm::{GuestReader, Vm};
use crate::x86::decode::{is_prefix, CodeSize, MAX_INSN_LEN};
use crate::x86::emulate;
use crate::x86::walk::{Access, Paging, Translation, WalkError};
use core::mem::offset_of;
use kernel::prelude::*;

/// The guest's code size, from CR0.PE, EFER.LMA, CS.L, CS.D and RFLAGS.VM.
pub(super) fn code_size(state: &ArchState) -> CodeSize {
    CodeSize::from_state(
        state.sregs.cr0,
        state.sregs.efer,
        state.sregs.cs.l != 0,
        state.sregs.cs.db != 0,
        state.regs.rflags & RFLAGS_VM != 0,
    )
}

/// Translates a guest linear address to guest-physical through the
/// guest's own page tables.
pub(super) fn translate(
    vm: &Vm,
    state: &ArchState,
    linear: u64,
    access: Access,
) -> core::result::Result<Translation, WalkError> {
    translate_with(
        &mut vm.guest_reader(state.run.smm.space()),
        state,
        linear,
        access,
    )
}

/// [`translate`], reading the tables through `reader`.
fn translate_with(
    reader: &mut GuestReader<'_>,
    state: &ArchState,
    linear: u64,
    access: Access,
) -> core::result::Result<Translation, WalkError> {
    let s = &state.sregs;
    let paging = Paging::new(s.cr0, s.cr3, s.cr4, s.efer);
    let mut read = |gpa: u64, size: usize| -> Option<u64> {
        let mut buf = [0u8; 8];
        reader.read(gpa, &mut buf[..size])?;
        Some(u64::from_le_bytes(buf))
    };
    paging.translate(linear, access, &mut read)
}

/// The base of a segment as the guest's addressing uses it now
/// ([`emulate::segment_base`]).
pub(super) fn seg_base(state: &ArchState, segment: &kvm_segment, fs_or_gs: bool) -> u64 {
    emulate::segment_base(code_size(state), segment.base, fs_or_gs)
}

/// The linear address of `offset` from `base` in the guest's code size now
/// ([`emulate::linear_address`]).
pub(super) fn linear(state: &ArchState, base: u64, offset: u64) -> u64 {
    emulate::linear_address(code_size(state), base, offset)
}

/// Fetches up to [`MAX_INSN_LEN`] bytes at CS:RIP; returns how many could
/// be read (they stop at the first unreadable page).
pub(super) fn fetch(vm: &Vm, state: &ArchState, buf: &mut [u8; MAX_INSN_LEN]) -> usize {
    // One reader for the walks and the bytes: usually one slot lookup.
    let mut reader = vm.guest_reader(state.run.smm.space());
    let mut done = 0;
    while done < buf.len() {
        let la = linear(
            state,
            seg_base(state, &state.sregs.cs, false),
            state.regs.rip.wrapping_add(done as u64),
        );
        let fetch = Access {
            fetch: true,
            user: state.sregs.cs.dpl == 3,
            write: false,
        };
        let Ok(t) = translate_with(&mut reader, state, la, fetch) else {
            break;
        };
        let gpa = t.gpa;
        // Stay inside the guest page and inside one 4 KiB host page of a slot.
        let in_page = t.bytes_to_page_end().min(0x1000 - (gpa & 0xfff)) as usize;
        let n = in_page.min(buf.len() - done);
        if reader.read(gpa, &mut buf[done..done + n]).is_none() {
            break;
        }
        done += n;
    }
    done
}

/// Where the intercepted instruction whose opcode is `opcode` ends: the
/// hardware's next-RIP if it gave one, else found by fetching the
/// instruction and skipping its prefixes (QEMU's SVM has no NRIPS).
/// `None`, with an emulation-failure exit filled in, if the bytes at RIP
/// are not that instruction.
pub(super) fn next_rip(
    vm: &Vm,
    state: &ArchState,
    info: &ExitInfo,
    opcode: &[u8],
    page: &SharedPage<'_>,
) -> Result<Option<u64>> {
    if let Some(next) = info.next_rip {
        return Ok(Some(next));
    }
    let mut bytes = [0u8; MAX_INSN_LEN];
    let n = fetch(vm, state, &mut bytes);
    let code = code_size(state);
    let mut len = 0;
    while len < n && is_prefix(bytes[len], code) {
        len += 1;
    }
    if n >= len + opcode.len() && bytes[len..len + opcode.len()] == *opcode {
        let next = state.regs.rip.wrapping_add((len + opcode.len()) as u64);
        Ok(Some(emulate::wrap_ip(next, code)))
    } else {
        emulation_failure(page, &bytes[..n])?;
        Ok(None)
    }
}

/// Sets RIP past the intercepted instruction whose opcode is `opcode`
/// ([`next_rip`]). Returns false, with an emulation-failure exit filled
/// in, if the bytes at RIP are not that instruction.
pub(super) fn skip(
    vm: &Vm,
    state: &mut ArchState,
    info: &ExitInfo,
    opcode: &[u8],
    page: &SharedPage<'_>,
) -> Result<bool> {
    // Emulating an instruction ends an interrupt shadow (as KVM's
    // `skip_emulated_instruction`).
    state.run.interrupt_shadow = false;
    match next_rip(vm, state, info, opcode, page)? {
        Some(next) => {
            state.regs.rip = next;
            Ok(true)
        }
        None => Ok(false),
    }
}

pub(super) fn skip_or_fail(
    vm: &Vm,
    state: &mut ArchState,
    info: &ExitInfo,
    opcode: &[u8],
    page: &SharedPage<'_>,
) -> Result<Next> {
    if skip(vm, state, info, opcode, page)? {
        Ok(Next::Enter)
    } else {
        Ok(Next::User)
    }
}

/// An instruction rkvm had to emulate and could not (KVM's
/// `handle_emulation_failure`). With `KVM_CAP_EXIT_ON_EMULATION_FAILURE`
/// user space is told, whoever ran it. Without, the guest gets #UD, and
/// user space is told as well when the guest's kernel (CPL 0) ran it:
/// the #UD is delivered at the next `KVM_RUN` unless user space moves
/// the vCPU on. (An instruction rkvm only had to skip is another matter:
/// see [`skip`].)
pub(super) fn emulation_failed(
    vm: &Vm,
    state: &mut ArchState,
    page: &SharedPage<'_>,
    bytes: &[u8],
) -> Result<Next> {
    if !vm.exit_on_emulation_failure() {
        super::raise(state, super::UD_VECTOR, None);
        if state.sregs.ss.dpl != 0 {
            return Ok(Next::Enter);
        }
    }
    emulation_failure(page, bytes)?;
    Ok(Next::User)
}

/// `KVM_EXIT_INTERNAL_ERROR` with suberror `KVM_INTERNAL_ERROR_EMULATION`
/// and the instruction bytes, as KVM's `prepare_emulation_failure_exit`.
pub(super) fn emulation_failure(page: &SharedPage<'_>, bytes: &[u8]) -> Result {
    let mut fail = EmulationFailure {
        suberror: abi::KVM_INTERNAL_ERROR_EMULATION,
        // flags and the 16 instruction bytes: three 64-bit words.
        ndata: 3,
        flags: u64::from(abi::KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES),
        ..Default::default()
    };
    let n = bytes.len().min(15);
    let mut insn = FailureInsn {
        insn_size: n as u8,
        insn_bytes: [0; 15],
    };
    insn.insn_bytes[..n].copy_from_slice(&bytes[..n]);
    fail.__bindgen_anon_1 = InsnUnion {
        __bindgen_anon_1: insn,
    };
    page.write(UNION, &fail)?;
    page.write(
        offset_of!(kvm_run, exit_reason),
        &abi::KVM_EXIT_INTERNAL_ERROR,
    )
}
