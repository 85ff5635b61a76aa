// SPDX-License-Identifier: GPL-2.0

//! Port I/O exits (IN, OUT, INS, OUTS, with REP): `kvm_run.io` and the
//! data page for user space, and the completion on the next `KVM_RUN`, as
//! KVM's `kernel_pio`-less path (`emulator_pio_in_out`,
//! `complete_emulated_pio`). The register arithmetic is
//! `x86::emulate`'s.

use super::insn::{code_size, fetch, linear, seg_base, translate};
use super::{
    exit_reason, raise, set_pending, Next, Pages, Pending, StringIo, GP_VECTOR, PF_VECTOR,
    PIO_OFFSET, RFLAGS_DF, UNION,
};
use crate::abi::{self, kvm_run__bindgen_ty_1__bindgen_ty_4 as IoRun};
use crate::backend::IoExit;
use crate::eventfd::ioeventfd::Bus;
use crate::sys::mem::SharedPage;
use crate::vcpu::ArchState;
use crate::vm::Vm;
use crate::x86::decode::{is_prefix, MAX_INSN_LEN};
use crate::x86::emulate;
use crate::x86::walk::{Access, WalkError};
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

/// Port I/O: fills `kvm_run.io` and, for OUT, the data; the instruction
/// completes on the next `KVM_RUN` ([`complete`]).
pub(super) fn port_io(
    vm: &Vm,
    state: &mut ArchState,
    pages: &Pages<'_>,
    io: IoExit,
    next_rip: Option<u64>,
) -> Result<Next> {
    let page = pages.run;
    // SVM always reports the next RIP for IOIO; VMX gives the length.
    let Some(next_rip) = next_rip else {
        return Ok(Next::Fail(EFAULT));
    };
    let size = u64::from(io.size);
    if !matches!(io.size, 1 | 2 | 4) {
        return Ok(Next::Fail(EIO));
    }
    // Ports the kernel answers (not string I/O, which goes to user space):
    // - the in-kernel PIT's, any size: a read gives one byte (or nothing, for
    //   port 0x43), a write uses the low byte, as KVM's `pit_ioport_*`;
    // - the in-kernel PIC's, byte accesses only, as KVM's `picdev_*`: a wider
    //   IN reads 0 and leaves the PIC alone (a poll read would acknowledge an
    //   interrupt), a wider OUT is dropped;
    // - an OUT an ioeventfd matches signals it;
    // - an OUT a coalesced-I/O zone takes goes into its ring (coalesced/).
    if !io.string {
        let wide_pic =
            size != 1 && state.run.irq.is_some() && crate::irq::pic::claims_port(io.port);
        let done = if io.input {
            let value = vm.pit_port_in(io.port).or_else(|| {
                if size == 1 {
                    super::apic::port_in(state, io.port).map(Some)
                } else {
                    wide_pic.then_some(Some(0))
                }
            });
            if let Some(Some(value)) = value {
                state.regs.rax = emulate::in_result(state.regs.rax, u64::from(value), size);
            }
            value.is_some()
        } else {
            let byte = state.regs.rax as u8;
            vm.pit_port_out(io.port, byte)
                || (size == 1 && super::apic::port_out(state, io.port, byte))
                || wide_pic
                || vm.ioeventfd_write(
                    Bus::Pio,
                    u64::from(io.port),
                    u32::from(io.size),
                    state.regs.rax,
                )
                || vm
                    .coalesced
                    .write(true, u64::from(io.port), u32::from(io.size), state.regs.rax)
        };
        if done {
            state.regs.rip = next_rip;
            state.run.interrupt_shadow = false;
            return Ok(Next::Enter);
        }
    }
    let mut transfer = StringIo {
        io,
        count: 1,
        next_rip,
        gpa: 0,
        backwards: state.regs.rflags & RFLAGS_DF != 0,
    };
    if io.string {
        let amask = emulate::address_mask(io.address_size);
        let rcx = state.regs.rcx & amask;
        if io.rep && rcx == 0 {
            state.regs.rip = next_rip;
            return Ok(Next::Enter);
        }
        // OUTS reads DS:RSI (or a segment override); INS writes ES:RDI. SDM Vol. 2B.
        let (base, offset) = if io.input {
            (
                seg_base(state, &state.sregs.es, false),
                state.regs.rdi & amask,
            )
        } else {
            (outs_segment_base(vm, state), state.regs.rsi & amask)
        };
        let la = linear(state, base, offset);
        let backwards = transfer.backwards;
        // One exit moves what fits in the guest page and the I/O page.
        let want = if io.rep { rcx } else { 1 };
        let count = emulate::string_io_count(la, size, backwards, want, PAGE_SIZE as u64);
        let access = Access {
            write: io.input,
            user: state.sregs.ss.dpl == 3,
            fetch: false,
        };
        let gpa = match translate(vm, state, la, access) {
            Ok(t) => t.gpa,
            Err(WalkError::NonCanonical) => {
                raise(state, GP_VECTOR, Some(0));
                return Ok(Next::Enter);
            }
            Err(e) => {
                // The guest's page tables do not allow the access: #PF with CR2 = the address
                // and the error code's P, W and U/S bits. SDM Vol. 3A 4.7.
                state.sregs.cr2 = la;
                let error = u32::from(e == WalkError::Protection)
                    | u32::from(access.write) << 1
                    | u32::from(access.user) << 2;
                raise(state, PF_VECTOR, Some(error));
                return Ok(Next::Enter);
            }
        };
        transfer.count = count as u32;
        transfer.gpa = gpa;
        if !io.input {
            // Copy the elements, in the order the instruction reads them.
            for k in 0..count {
                let mut elem = [0u8; 4];
                let a = emulate::string_element(gpa, k, size, backwards);
                if vm
                    .read_guest_in(state.run.smm.space(), a, &mut elem[..size as usize])
                    .is_none()
                {
                    return Ok(Next::Fail(EFAULT));
                }
                pages
                    .pio
                    .write_bytes((k * size) as usize, &elem[..size as usize])?;
            }
        }
    } else if !io.input {
        let data = state.regs.rax.to_le_bytes();
        pages.pio.write_bytes(0, &data[..size as usize])?;
    }
    if io.input {
        // Like KVM, the buffer an IN fills starts zeroed (no stale data from earlier exits).
        let zero = [0u8; 4];
        for k in 0..u64::from(transfer.count) {
            pages
                .pio
                .write_bytes((k * size) as usize, &zero[..size as usize])?;
        }
    }
    let run_io = IoRun {
        direction: if io.input {
            abi::KVM_EXIT_IO_IN as u8
        } else {
            abi::KVM_EXIT_IO_OUT as u8
        },
        size: io.size,
        port: io.port,
        count: transfer.count,
        data_offset: PIO_OFFSET as u64,
    };
    page.write(UNION, &run_io)?;
    vm.stats.io_exits.add(1);
    state.run.stats.io_exits.add(1);
    set_pending(
        state,
        if io.input {
            Pending::In(transfer)
        } else {
            Pending::Out(transfer)
        },
    );
    exit_reason(page, abi::KVM_EXIT_IO)
}

/// The segment base OUTS reads from: DS, or the last segment-override
/// prefix of the instruction. SDM Vol. 2B OUTS.
pub(super) fn outs_segment_base(vm: &Vm, state: &ArchState) -> u64 {
    let mut bytes = [0u8; MAX_INSN_LEN];
    let n = fetch(vm, state, &mut bytes);
    let s = &state.sregs;
    let mut base = seg_base(state, &s.ds, false);
    for &b in bytes[..n]
        .iter()
        .take_while(|&&b| is_prefix(b, code_size(state)))
    {
        base = match b {
            0x26 => seg_base(state, &s.es, false),
            0x2e => seg_base(state, &s.cs, false),
            0x36 => seg_base(state, &s.ss, false),
            0x3e => seg_base(state, &s.ds, false),
            0x64 => seg_base(state, &s.fs, true),
            0x65 => seg_base(state, &s.gs, true),
            _ => base,
        };
    }
    base
}

/// Finishes port I/O on the next `KVM_RUN`: for IN, the data user space
/// left in the I/O page goes to RAX (INS: to guest memory); RSI, RDI and
/// RCX move for a string instruction, and RIP moves past the instruction
/// unless a REP has elements left (it then runs again). A REP whose RCX
/// user space lowered during the exit takes only that many elements
/// ([`emulate::string_io_done`]).
pub(super) fn complete(
    vm: &Vm,
    state: &mut ArchState,
    pio: &SharedPage<'_>,
    t: StringIo,
    input: bool,
) -> Result {
    let size = u64::from(t.io.size);
    if !t.io.string {
        if input {
            let mut data = [0u8; 8];
            pio.read_bytes(0, &mut data[..size as usize])?;
            state.regs.rax = emulate::in_result(state.regs.rax, u64::from_le_bytes(data), size);
        }
        state.regs.rip = t.next_rip;
        return Ok(());
    }
    let backwards = t.backwards;
    let index = if input {
        &mut state.regs.rdi
    } else {
        &mut state.regs.rsi
    };
    let done = emulate::string_io_done(
        *index,
        state.regs.rcx,
        t.count,
        size,
        backwards,
        t.io.rep,
        t.io.address_size,
    );
    if input {
        for k in 0..u64::from(done.used) {
            let mut elem = [0u8; 4];
            pio.read_bytes((k * size) as usize, &mut elem[..size as usize])?;
            let a = emulate::string_element(t.gpa, k, size, backwards);
            // A slot deleted meanwhile: the data has nowhere to go, as on hardware
            // writing to nothing.
            let _ = vm.write_guest_in(state.run.smm.space(), a, &elem[..size as usize]);
        }
    }
    *index = done.index;
    state.regs.rcx = done.rcx;
    if done.finished {
        state.regs.rip = t.next_rip;
    }
    Ok(())
}
