// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the run loop, in common code.
//!
//! One `KVM_RUN` first completes what the previous exit to user space left
//! open (an IN's data, an MMIO read's value), then loops: enter the guest
//! through the vendor vCPU, look at the vendor-neutral [`Exit`], and either
//! handle it here (CPUID, MSRs, a page to map, an event to re-deliver) and
//! go round again, or fill in `kvm_run` and return to user space (port I/O,
//! MMIO, HLT, shutdown...). A pending signal ends the loop with `EINTR`
//! and `KVM_EXIT_INTR`; the scheduler gets the CPU whenever it asks.
//! docs/run-loop.md walks through one trip with the code and the manuals.
//!
//! Semantics are KVM's without an in-kernel irqchip (`arch/x86/kvm/x86.c`):
//! port I/O and MMIO reads complete on the next `KVM_RUN`, HLT exits to
//! user space, interrupts come from `KVM_INTERRUPT`.

use crate::abi::{
    self, kvm_run, kvm_run__bindgen_ty_1__bindgen_ty_13 as InternalError,
    kvm_run__bindgen_ty_1__bindgen_ty_14 as EmulationFailure,
    kvm_run__bindgen_ty_1__bindgen_ty_14__bindgen_ty_1 as InsnUnion,
    kvm_run__bindgen_ty_1__bindgen_ty_14__bindgen_ty_1__bindgen_ty_1 as FailureInsn,
    kvm_run__bindgen_ty_1__bindgen_ty_2 as FailEntry, kvm_run__bindgen_ty_1__bindgen_ty_4 as IoRun,
    kvm_run__bindgen_ty_1__bindgen_ty_6 as MmioRun,
};
use crate::backend::{Entry, Event, Exit, ExitInfo, GuestRegs, InsnBytes, IoExit, VendorVcpu};
use crate::sys::cpu::{self, IrqsDisabled};
use crate::sys::fpu::{FpuImage, FpuLayout, FpuSection};
use crate::sys::mem::SharedPage;
use crate::vcpu::{ArchState, Vcpu};
use crate::vm::{Backing, Vm};
use crate::x86::cpuid::{self, Leaf};
use crate::x86::decode::{self, is_prefix, CodeSize, Gpr, MmioInsn, MAX_INSN_LEN};
use crate::x86::msr::{self, MsrContext, SharedRegs};
use crate::x86::regs::{cr0, cr4, efer};
use crate::x86::walk::{Access, Paging, Translation, WalkError};
use core::mem::offset_of;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

/// Where the exit-specific union starts in `struct kvm_run`.
const UNION: usize = offset_of!(kvm_run, __bindgen_anon_1);
/// Where port I/O data goes: the second page of the vCPU mapping (the
/// offset user space sees in `kvm_run.io.data_offset`).
const PIO_OFFSET: usize = abi::KVM_PIO_PAGE_OFFSET as usize * PAGE_SIZE;

/// RFLAGS bits. SDM Vol. 1 3.4.3.
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_DF: u64 = 1 << 10;
const RFLAGS_VM: u64 = 1 << 17;

/// Exception vectors. SDM Vol. 3A 6.3.1.
const UD_VECTOR: u8 = 6;
const GP_VECTOR: u8 = 13;
const PF_VECTOR: u8 = 14;

/// CPUID.1:ECX bit 27 (OSXSAVE) and CPUID.1:EDX bit 9 (APIC): bits KVM
/// computes from the guest's CR4 and APIC_BASE at run time.
const CPUID1_ECX_OSXSAVE: u32 = 1 << 27;
const CPUID1_EDX_APIC: u32 = 1 << 9;
/// CR4.OSXSAVE. SDM Vol. 3A 2.5.
const CR4_OSXSAVE: u64 = 1 << 18;

/// DR6 and DR7 at reset. SDM Vol. 3B 19.2.
const DR6_RESET: u64 = 0xffff_0ff0;
const DR7_RESET: u64 = 0x400;

/// The run-time state of a vCPU beyond its registers.
pub(crate) struct RunState {
    hw: KBox<dyn VendorVcpu>,
    fpu: FpuImage,
    /// What the next `KVM_RUN` must finish before entering.
    pending: Option<PendingAt>,
    /// The interrupt `KVM_INTERRUPT` queued.
    queued_irq: Option<u8>,
    /// An event to deliver at the next entry (an exception rkvm raises, or
    /// one whose delivery an exit interrupted).
    event: Option<Event>,
    interrupt_shadow: bool,
    /// Flush the guest's cached translations at the next entry.
    flush_tlb: bool,
    /// The PAE PDPTEs must be read from guest memory again before the next
    /// entry ([`Entry::pdptrs`]).
    reload_pdptrs: bool,
    /// DR0–DR3, DR6 and DR7 as the guest sees them. They are never loaded
    /// into the hardware: guest breakpoints do not fire (docs/abi.md).
    dr: [u64; 4],
    dr6: u64,
    dr7: u64,
}

impl RunState {
    pub(crate) fn new(hw: KBox<dyn VendorVcpu>) -> Result<Self> {
        Ok(Self {
            hw,
            fpu: FpuImage::new(FpuLayout::probe())?,
            pending: None,
            queued_irq: None,
            event: None,
            interrupt_shadow: false,
            flush_tlb: false,
            reload_pdptrs: true,
            dr: [0; 4],
            dr6: DR6_RESET,
            dr7: DR7_RESET,
        })
    }

    /// The control registers were set from outside (`KVM_SET_SREGS`): the
    /// PAE PDPTEs are read again from the new CR3 before the next entry, as
    /// KVM's `__set_sregs` loads them, and if CR0, CR3, CR4 or EFER changed
    /// (`paging_changed`) the guest's cached translations go, as KVM resets
    /// its MMU context then: the guest did not flush them itself, since it
    /// did not load CR3.
    pub(crate) fn sregs_changed(&mut self, paging_changed: bool) {
        self.reload_pdptrs = true;
        self.flush_tlb |= paging_changed;
    }

    /// The guest's FPU and extended register image (`KVM_GET_FPU`).
    pub(crate) fn fpu(&self) -> &FpuImage {
        &self.fpu
    }

    /// The guest's FPU image, to change (`KVM_SET_FPU`).
    pub(crate) fn fpu_mut(&mut self) -> &mut FpuImage {
        &mut self.fpu
    }

    /// `KVM_INTERRUPT` without an in-kernel irqchip: queues vector `irq`
    /// for the next entry, replacing one queued before (user space is
    /// expected to wait for `ready_for_interrupt_injection`). A vector
    /// above 255 is `EINVAL`. As KVM's `kvm_vcpu_ioctl_interrupt`.
    pub(crate) fn queue_interrupt(&mut self, irq: u32) -> Result {
        let irq = u8::try_from(irq).map_err(|_| EINVAL)?;
        self.queued_irq = Some(irq);
        Ok(())
    }
}

/// An exit to user space that the next `KVM_RUN` completes, unless user
/// space has moved the vCPU elsewhere meanwhile (`KVM_SET_REGS` or
/// `KVM_SET_SREGS` changed CS.base + RIP), as KVM's
/// `complete_fast_pio_*` check.
#[derive(Clone, Copy)]
struct PendingAt {
    what: Pending,
    /// CS.base + RIP when the exit happened.
    linear_rip: u64,
}

/// What an exit to user space left to finish.
#[derive(Clone, Copy)]
enum Pending {
    /// IN or INS: the data user space left in the I/O page goes to RAX or
    /// to guest memory.
    In(StringIo),
    /// OUT or OUTS: only RIP (and for OUTS, RSI/RCX) move on.
    Out(StringIo),
    /// An MMIO load: `kvm_run.mmio.data` goes to the register.
    MmioLoad { insn: MmioInsn, next_rip: u64 },
}

/// One port-I/O exit's transfer.
#[derive(Clone, Copy)]
struct StringIo {
    io: IoExit,
    /// Elements transferred by this exit.
    count: u32,
    next_rip: u64,
    /// For INS: the guest-physical address of the first element.
    gpa: u64,
}

/// How an exit is handled.
enum Next {
    /// Enter the guest again.
    Enter,
    /// Return to user space with this exit reason (the union is filled).
    User,
    /// Return to user space with an error.
    Fail(Error),
}

/// The `kvm_run` header fields `KVM_RUN` reads.
struct Request {
    interrupt_window: bool,
    immediate_exit: bool,
}

/// `KVM_RUN`.
pub(crate) fn run(vm: &Vm, vcpu: &Vcpu, state: &mut ArchState) -> Result<isize> {
    let page = SharedPage(vcpu.run_page());
    let pio = SharedPage(vcpu.pio_page());
    let pages = Pages {
        run: &page,
        pio: &pio,
    };
    let result = run_loop(vm, vcpu, state, &pages);
    // Like KVM's `post_kvm_run_save`, on every return.
    let ready = ready_for_interrupt(state);
    page.write(
        offset_of!(kvm_run, if_flag),
        &u8::from(state.regs.rflags & RFLAGS_IF != 0),
    )?;
    page.write(
        offset_of!(kvm_run, ready_for_interrupt_injection),
        &u8::from(ready),
    )?;
    page.write(offset_of!(kvm_run, flags), &0u16)?;
    page.write(offset_of!(kvm_run, cr8), &state.sregs.cr8)?;
    page.write(offset_of!(kvm_run, apic_base), &state.sregs.apic_base)?;
    result
}

/// The two shared pages: `struct kvm_run`, and the port-I/O data page.
struct Pages<'a> {
    run: &'a SharedPage<'a>,
    pio: &'a SharedPage<'a>,
}

fn run_loop(vm: &Vm, vcpu: &Vcpu, state: &mut ArchState, pages: &Pages<'_>) -> Result<isize> {
    let page = pages.run;
    let req = Request {
        interrupt_window: page.read::<u8>(offset_of!(kvm_run, request_interrupt_window))? != 0,
        immediate_exit: page.read::<u8>(offset_of!(kvm_run, immediate_exit))? != 0,
    };
    // rkvm has no KVM_CAP_SYNC_REGS: asking for it is EINVAL, as on a KVM without it.
    if page.read::<u64>(offset_of!(kvm_run, kvm_valid_regs))? != 0
        || page.read::<u64>(offset_of!(kvm_run, kvm_dirty_regs))? != 0
    {
        return Err(EINVAL);
    }
    // Without an in-kernel APIC, user space owns CR8 through kvm_run (`kvm_set_cr8`).
    let cr8 = page.read::<u64>(offset_of!(kvm_run, cr8))?;
    if cr8 >> 4 != 0 {
        return Err(EINVAL);
    }
    state.sregs.cr8 = cr8;

    if let Some(pending) = state.run.pending.take() {
        if pending.linear_rip == state.sregs.cs.base.wrapping_add(state.regs.rip) {
            complete(vm, state, pages, pending.what)?;
        }
    }
    if req.immediate_exit {
        return Err(EINTR);
    }

    loop {
        if cpu::signal_pending() {
            vm.stats.signal_exits.add(1);
            page.write(offset_of!(kvm_run, exit_reason), &abi::KVM_EXIT_INTR)?;
            return Err(EINTR);
        }
        cpu::cond_resched();

        let inject = state
            .run
            .event
            .or(state.run.queued_irq.map(Event::Interrupt));
        let Some(info) = enter(vm, vcpu, state, inject, req.interrupt_window) else {
            // A signal or the scheduler came first: go round.
            continue;
        };
        let entered = !matches!(info.exit, Exit::InvalidState(_) | Exit::Busy);
        if entered {
            state.run.flush_tlb = false;
        }
        // Whatever was injected was delivered, unless the exit says otherwise (or the
        // guest never ran).
        if inject.is_some() && entered {
            if state.run.event.is_some() {
                state.run.event = None;
            } else {
                state.run.queued_irq = None;
            }
        }
        state.run.interrupt_shadow = info.interrupt_shadow;
        if let Some(ev) = info.interrupted_event {
            state.run.event = Some(ev);
        }
        vm.stats.count_exit(&info.exit);

        match handle(vm, state, pages, &info)? {
            Next::Enter => {}
            Next::User => return Ok(0),
            Next::Fail(e) => return Err(e),
        }
        // KVM: once the guest can take the interrupt user space is waiting to give it.
        if req.interrupt_window && ready_for_interrupt(state) {
            vm.stats.request_irq_exits.add(1);
            page.write(
                offset_of!(kvm_run, exit_reason),
                &abi::KVM_EXIT_IRQ_WINDOW_OPEN,
            )?;
            return Ok(0);
        }
    }
}

/// Enters the guest once. `None` if it did not enter because a signal or
/// the scheduler is waiting (checked with interrupts off, so that nothing
/// arriving later is missed: it interrupts the guest).
fn enter(
    vm: &Vm,
    vcpu: &Vcpu,
    state: &mut ArchState,
    inject: Option<Event>,
    interrupt_window: bool,
) -> Option<ExitInfo> {
    // Read from guest memory, which may fault: before interrupts are disabled.
    let pdptrs = if state.run.reload_pdptrs {
        pae_pdptrs(vm, state)
    } else {
        None
    };
    let ArchState {
        regs,
        sregs,
        msrs,
        run,
        ..
    } = state;
    let _fpu = FpuSection::enter(&mut run.fpu);
    let irqs = IrqsDisabled::new();
    // Pairs with `Vm::unmap`: publish that we are in the guest before reading the
    // generation (both sequentially consistent).
    vcpu.set_running_on(Some(cpu::this_cpu()));
    let entry = Entry {
        inject,
        interrupt_window,
        slat_root: vm.slat_root,
        mapping_generation: vm
            .mapping_generation
            .load(core::sync::atomic::Ordering::SeqCst),
        flush_tlb: run.flush_tlb,
        interrupt_shadow: run.interrupt_shadow,
        pdptrs,
    };
    let info = if cpu::signal_pending() || cpu::need_resched() {
        None
    } else {
        cpu::guest_enter_rcu_quiescent(&irqs);
        Some(run.hw.run(GuestRegs { regs, sregs, msrs }, &entry))
    };
    vcpu.set_running_on(None);
    if info.is_some() {
        run.reload_pdptrs = false;
    }
    info
}

/// The four PDPTEs at CR3 when the guest uses PAE paging (CR0.PG, CR4.PAE,
/// not long mode); an unreadable one is 0 (not present). SDM Vol. 3A 4.4.1.
fn pae_pdptrs(vm: &Vm, state: &ArchState) -> Option<[u64; 4]> {
    let s = &state.sregs;
    if s.cr0 & cr0::PG == 0 || s.cr4 & cr4::PAE == 0 || s.efer & efer::LMA != 0 {
        return None;
    }
    let base = s.cr3 & 0xffff_ffe0;
    let mut pdptes = [0u64; 4];
    for (i, pdpte) in pdptes.iter_mut().enumerate() {
        let mut bytes = [0u8; 8];
        if vm.read_guest(base + 8 * i as u64, &mut bytes).is_some() {
            *pdpte = u64::from_le_bytes(bytes);
        }
    }
    Some(pdptes)
}

/// Whether user space may inject an interrupt now: the guest has IF set,
/// is not in an interrupt shadow, and nothing is waiting to be delivered.
fn ready_for_interrupt(state: &ArchState) -> bool {
    state.regs.rflags & RFLAGS_IF != 0
        && !state.run.interrupt_shadow
        && state.run.event.is_none()
        && state.run.queued_irq.is_none()
}

/// Handles one exit.
fn handle(vm: &Vm, state: &mut ArchState, pages: &Pages<'_>, info: &ExitInfo) -> Result<Next> {
    let page = pages.run;
    match info.exit {
        Exit::HostInterrupt | Exit::InterruptWindow => Ok(Next::Enter),
        Exit::Io(io) => port_io(vm, state, pages, io, info.next_rip),
        Exit::Hlt => {
            if !skip(vm, state, info, &[0xf4], page)? {
                return Ok(Next::User);
            }
            vm.stats.halt_exits.add(1);
            exit_reason(page, abi::KVM_EXIT_HLT)
        }
        Exit::Cpuid => {
            answer_cpuid(state);
            skip_or_fail(vm, state, info, &[0x0f, 0xa2], page)
        }
        Exit::Msr { write } => {
            if guest_msr(vm, state, write) {
                let opcode = if write { [0x0f, 0x30] } else { [0x0f, 0x32] };
                skip_or_fail(vm, state, info, &opcode, page)
            } else {
                raise(state, GP_VECTOR, Some(0));
                Ok(Next::Enter)
            }
        }
        Exit::DebugRegister => debug_register(vm, state, page),
        Exit::CrWrite { cr, gpr } => cr_write(vm, state, page, info, cr, gpr),
        Exit::CrRead { cr, gpr } => cr_read(state, info, cr, gpr),
        // Another hypervisor holds VMX on this CPU (vmx/mod.rs): refuse, as at load.
        Exit::Busy => Ok(Next::Fail(EBUSY)),
        Exit::SlatFault {
            gpa,
            write,
            page_walk,
            ..
        } => match vm.map_gpa(gpa, write) {
            Ok(Backing::Mapped) => Ok(Next::Enter),
            // The guest keeps its page tables where it has no memory: nothing an MMIO exit
            // could express (KVM's emulator fails the same way).
            Ok(Backing::None | Backing::ReadOnly) if page_walk => {
                let mut bytes = [0u8; MAX_INSN_LEN];
                let n = fetch(vm, state, &mut bytes);
                emulation_failure(page, &bytes[..n])?;
                Ok(Next::User)
            }
            Ok(Backing::None | Backing::ReadOnly) => mmio(vm, state, page, gpa, info.insn),
            Err(e) => Ok(Next::Fail(e)),
        },
        Exit::Shutdown => {
            // The VMCB is undefined after a shutdown intercept; KVM puts the vCPU through
            // INIT. APM Vol. 2 15.8 (shutdown intercept).
            let apic_base = state.sregs.apic_base;
            state.reset_after_shutdown();
            // The VMCB is undefined too: start from a new one if memory allows (the old one
            // is rewritten in full at every entry anyway).
            if let Ok(hw) = vm.shared.backend.create_vcpu() {
                state.run.hw = hw;
            }
            state.sregs.apic_base = apic_base;
            state.run.reload_pdptrs = true;
            state.run.event = None;
            state.run.queued_irq = None;
            exit_reason(page, abi::KVM_EXIT_SHUTDOWN)
        }
        Exit::Exception { vector, error_code } => {
            raise(state, vector, error_code);
            Ok(Next::Enter)
        }
        Exit::Undefined => {
            raise(state, UD_VECTOR, None);
            Ok(Next::Enter)
        }
        // INVD is 0F 08, WBINVD 0F 09 (WBNOINVD: F3 0F 09). SDM Vol. 2A.
        Exit::CacheFlush { writeback } => {
            let opcode = if writeback {
                [0x0f, 0x09]
            } else {
                [0x0f, 0x08]
            };
            skip_or_fail(vm, state, info, &opcode, page)
        }
        Exit::InvalidState(code) => {
            // Field by field: the struct has trailing padding.
            page.write(
                UNION + offset_of!(FailEntry, hardware_entry_failure_reason),
                &code,
            )?;
            page.write(UNION + offset_of!(FailEntry, cpu), &cpu::this_cpu())?;
            exit_reason(page, abi::KVM_EXIT_FAIL_ENTRY)
        }
        Exit::Unhandled(code) => {
            // KVM's `kvm_prepare_unexpected_reason_exit`: the exit code, then the CPU.
            let mut err = InternalError {
                suberror: abi::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
                ndata: 2,
                data: [0; 16],
            };
            err.data[0] = code;
            err.data[1] = u64::from(cpu::this_cpu());
            page.write(UNION, &err)?;
            exit_reason(page, abi::KVM_EXIT_INTERNAL_ERROR)
        }
    }
}

fn exit_reason(page: &SharedPage<'_>, reason: u32) -> Result<Next> {
    page.write(offset_of!(kvm_run, exit_reason), &reason)?;
    Ok(Next::User)
}

/// Queues an exception for the next entry.
fn raise(state: &mut ArchState, vector: u8, error_code: Option<u32>) {
    state.run.event = Some(Event::Exception { vector, error_code });
}

/// The guest's code size, from CR0.PE, EFER.LMA, CS.L, CS.D and RFLAGS.VM.
fn code_size(state: &ArchState) -> CodeSize {
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
fn translate(
    vm: &Vm,
    state: &ArchState,
    linear: u64,
    access: Access,
) -> core::result::Result<Translation, WalkError> {
    let s = &state.sregs;
    let paging = Paging::new(s.cr0, s.cr3, s.cr4, s.efer);
    let mut read = |gpa: u64, size: usize| -> Option<u64> {
        let mut buf = [0u8; 8];
        vm.read_guest(gpa, &mut buf[..size])?;
        Some(u64::from_le_bytes(buf))
    };
    paging.translate(linear, access, &mut read)
}

/// The base of a segment as addressing uses it: in 64-bit code only FS and
/// GS have one. SDM Vol. 3A 3.2.4.
fn seg_base(state: &ArchState, segment: &crate::abi::kvm_segment, fs_or_gs: bool) -> u64 {
    if code_size(state) == CodeSize::Bits64 && !fs_or_gs {
        0
    } else {
        segment.base
    }
}

/// The linear address of `offset` from a segment base (truncated to 32
/// bits outside 64-bit code). SDM Vol. 3A 3.4.
fn linear(state: &ArchState, base: u64, offset: u64) -> u64 {
    let addr = base.wrapping_add(offset);
    if code_size(state) == CodeSize::Bits64 {
        addr
    } else {
        addr & 0xffff_ffff
    }
}

/// Fetches up to [`MAX_INSN_LEN`] bytes at CS:RIP; returns how many could
/// be read (they stop at the first unreadable page).
fn fetch(vm: &Vm, state: &ArchState, buf: &mut [u8; MAX_INSN_LEN]) -> usize {
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
        let Ok(t) = translate(vm, state, la, fetch) else {
            break;
        };
        let gpa = t.gpa;
        // Stay inside the guest page and inside one 4 KiB host page of a slot.
        let in_page = t.bytes_to_page_end().min(0x1000 - (gpa & 0xfff)) as usize;
        let n = in_page.min(buf.len() - done);
        if vm.read_guest(gpa, &mut buf[done..done + n]).is_none() {
            break;
        }
        done += n;
    }
    done
}

/// Sets RIP past the intercepted instruction whose opcode is `opcode`:
/// from the hardware's next-RIP if it gave one, else by fetching the
/// instruction and skipping its prefixes (QEMU's SVM has no NRIPS).
/// Returns false, with an emulation-failure exit filled in, if the bytes
/// at RIP are not that instruction.
fn skip(
    vm: &Vm,
    state: &mut ArchState,
    info: &ExitInfo,
    opcode: &[u8],
    page: &SharedPage<'_>,
) -> Result<bool> {
    // Emulating an instruction ends an interrupt shadow (as KVM's
    // `skip_emulated_instruction`).
    state.run.interrupt_shadow = false;
    if let Some(next) = info.next_rip {
        state.regs.rip = next;
        return Ok(true);
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
        state.regs.rip = wrap_ip(next, code);
        Ok(true)
    } else {
        emulation_failure(page, &bytes[..n])?;
        Ok(false)
    }
}

fn skip_or_fail(
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

/// An instruction pointer wraps at the code size.
fn wrap_ip(ip: u64, code: CodeSize) -> u64 {
    match code {
        CodeSize::Bits16 => ip & 0xffff,
        CodeSize::Bits32 => ip & 0xffff_ffff,
        CodeSize::Bits64 => ip,
    }
}

/// `KVM_EXIT_INTERNAL_ERROR` with suberror `KVM_INTERNAL_ERROR_EMULATION`
/// and the instruction bytes, as KVM's `prepare_emulation_failure_exit`.
fn emulation_failure(page: &SharedPage<'_>, bytes: &[u8]) -> Result {
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

/// CPUID from the vCPU's table (`KVM_SET_CPUID2`); a leaf the table lacks
/// reads as zeros (docs/abi.md: KVM's out-of-range rule for Intel guests is
/// not copied). OSXSAVE and the APIC bit follow CR4 and APIC_BASE, as KVM
/// updates them at run time.
fn answer_cpuid(state: &mut ArchState) {
    let function = state.regs.rax as u32;
    let index = state.regs.rcx as u32;
    let (a, b, mut c, mut d) = match cpuid::lookup(&state.cpuid, Leaf { function, index }) {
        Some(e) => (e.eax, e.ebx, e.ecx, e.edx),
        None => (0, 0, 0, 0),
    };
    if function == 1 {
        c &= !CPUID1_ECX_OSXSAVE;
        if state.sregs.cr4 & CR4_OSXSAVE != 0 {
            c |= CPUID1_ECX_OSXSAVE;
        }
        if state.sregs.apic_base & crate::x86::regs::apic_base::ENABLE == 0 {
            d &= !CPUID1_EDX_APIC;
        }
    }
    // CPUID writes 32-bit registers: the upper halves are cleared. SDM Vol. 2A CPUID.
    state.regs.rax = u64::from(a);
    state.regs.rbx = u64::from(b);
    state.regs.rcx = u64::from(c);
    state.regs.rdx = u64::from(d);
}

/// RDMSR/WRMSR from the guest: the MSR in ECX, the value in EDX:EAX.
/// Returns false for #GP. SDM Vol. 2B RDMSR, WRMSR.
fn guest_msr(vm: &Vm, state: &mut ArchState, write: bool) -> bool {
    let index = state.regs.rcx as u32;
    let host = vm.shared.backend.host_limits();
    let ArchState {
        regs,
        sregs,
        msrs,
        features,
        ..
    } = state;
    // FS.base and GS.base are the segments' own bases. SDM Vol. 3A 3.4.4.
    if index == msr::index::FS_BASE || index == msr::index::GS_BASE {
        let base = if index == msr::index::FS_BASE {
            &mut sregs.fs.base
        } else {
            &mut sregs.gs.base
        };
        if write {
            let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
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
    if write {
        let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
        let value = match index {
            msr::index::EFER => {
                // The guest cannot write LMA (the CPU sets it), nor change LME with paging
                // on. SDM Vol. 3A 10.8.5.
                let value = (value & !efer::LMA) | (sregs.efer & efer::LMA);
                if sregs.cr0 & cr0::PG != 0 && (value ^ sregs.efer) & efer::LME != 0 {
                    return false;
                }
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
        };
        let mut shared = SharedRegs {
            efer: &mut sregs.efer,
            apic_base: &mut sregs.apic_base,
        };
        msr::set(msrs, &mut shared, &ctx, index, value)
    } else {
        let ctx = MsrContext {
            host: &host,
            guest: features,
            host_tsc: cpu::rdtsc(),
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

/// MOV to or from a debug register (0F 21 /r reads, 0F 23 /r writes), on
/// the guest's software copy. SDM Vol. 2B MOV (debug registers).
fn debug_register(vm: &Vm, state: &mut ArchState, page: &SharedPage<'_>) -> Result<Next> {
    let mut bytes = [0u8; MAX_INSN_LEN];
    let n = fetch(vm, state, &mut bytes);
    let code = code_size(state);
    let Some(mov) = decode::decode_mov_special(&bytes[..n], code, &[0x21, 0x23]) else {
        emulation_failure(page, &bytes[..n])?;
        return Ok(Next::User);
    };
    let write = mov.opcode == 0x23;
    let gpr = mov.gpr;
    let dr = mov.special & 7;
    // DR4 and DR5 are DR6 and DR7 unless CR4.DE makes them undefined.
    let dr = match dr {
        4 | 5 if state.sregs.cr4 & crate::x86::regs::cr4::DE != 0 => {
            raise(state, UD_VECTOR, None);
            return Ok(Next::Enter);
        }
        4 => 6,
        5 => 7,
        d => d,
    };
    let mask = if code == CodeSize::Bits64 {
        u64::MAX
    } else {
        0xffff_ffff
    };
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
    state.regs.rip = wrap_ip(state.regs.rip.wrapping_add(mov.len as u64), code);
    state.run.interrupt_shadow = false;
    Ok(Next::Enter)
}

/// MOV to a control register that exits: CR4 (intercepted on both
/// vendors) is checked as KVM's `kvm_set_cr4` does against the guest's
/// CPUID, #GP if refused, and a change flushes the guest's cached
/// translations; CR0 ([`cr0_write`]) and CR8 exit on VMX only. The source
/// register comes from the hardware (decode assists, VMX) or from decoding
/// `0F 22 /r`. SDM Vol. 2B MOV (control registers).
fn cr_write(
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
                    emulation_failure(page, &bytes[..n])?;
                    return Ok(Next::User);
                }
            }
        }
    };
    let mask = if code == CodeSize::Bits64 {
        u64::MAX
    } else {
        0xffff_ffff
    };
    let value = gpr.get(&state.regs) & mask;
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
                state.run.reload_pdptrs = true;
            }
            ok
        }
        // CR8 is the task priority (bits 3:0); user space owns it without an in-kernel
        // APIC, through `kvm_run.cr8`. SDM Vol. 3A 11.8.6.
        8 => {
            if value >> 4 == 0 {
                state.sregs.cr8 = value;
            }
            value >> 4 == 0
        }
        // Not intercepted, so not reached; refuse rather than guess.
        _ => return Ok(Next::Fail(EIO)),
    };
    if !accepted {
        raise(state, GP_VECTOR, Some(0));
        return Ok(Next::Enter);
    }
    state.run.interrupt_shadow = false;
    state.regs.rip = match (info.next_rip, len) {
        (Some(next), _) => next,
        (None, Some(len)) => wrap_ip(state.regs.rip.wrapping_add(len as u64), code),
        // Decode assists without NRIPS: the instruction is MOV CR4, 0F 22 /r plus
        // prefixes; fetch to measure it.
        (None, None) => {
            let mut bytes = [0u8; MAX_INSN_LEN];
            let n = fetch(vm, state, &mut bytes);
            let prefixes = bytes[..n]
                .iter()
                .take_while(|&&b| is_prefix(b, code))
                .count();
            wrap_ip(state.regs.rip.wrapping_add(prefixes as u64 + 3), code)
        }
    };
    Ok(Next::Enter)
}

/// MOV to CR0 when it exits (on VMX, when the guest changes a bit the CPU
/// forces on in VMX operation, such as NE): checked and applied as KVM's
/// `kvm_set_cr0`, including entering and leaving long mode. Returns false
/// (and changes nothing) for a value that is #GP. SDM Vol. 2B MOV (control
/// registers), Vol. 3A 9.8.5.
fn cr0_write(state: &mut ArchState, value: u64) -> bool {
    let old = state.sregs.cr0;
    if value >> 32 != 0
        || (value & cr0::PG != 0 && value & cr0::PE == 0)
        || (value & cr0::NW != 0 && value & cr0::CD == 0)
    {
        return false;
    }
    let s = &mut state.sregs;
    let mut new_efer = s.efer;
    if (old ^ value) & cr0::PG != 0 {
        if value & cr0::PG != 0 && s.efer & efer::LME != 0 {
            // Activating long mode needs PAE and must not start in a 64-bit code segment.
            if s.cr4 & cr4::PAE == 0 || s.cs.l != 0 {
                return false;
            }
            new_efer |= efer::LMA;
        } else if value & cr0::PG == 0 && s.efer & efer::LMA != 0 {
            // Paging cannot be turned off from 64-bit code.
            if s.cs.l != 0 {
                return false;
            }
            new_efer &= !efer::LMA;
        }
    }
    s.efer = new_efer;
    // ET is hard-wired to 1. SDM Vol. 3A 2.5.
    s.cr0 = value | cr0::ET;
    if (old ^ value) & (cr0::PG | cr0::PE | cr0::WP | cr0::CD | cr0::NW) != 0 {
        state.run.flush_tlb = true;
        state.run.reload_pdptrs = true;
    }
    true
}

/// MOV from a control register when it exits: on VMX only CR8, which
/// reads the task priority user space last set. The hardware named the
/// destination register and the instruction's length.
fn cr_read(state: &mut ArchState, info: &ExitInfo, cr: u8, gpr: Option<u8>) -> Result<Next> {
    let (Some(n), Some(next), 8) = (gpr, info.next_rip, cr) else {
        // Not intercepted without those, so not reached; refuse rather than guess.
        return Ok(Next::Fail(EIO));
    };
    *Gpr::from_number(n).get_mut(&mut state.regs) = state.sregs.cr8;
    state.run.interrupt_shadow = false;
    state.regs.rip = next;
    Ok(Next::Enter)
}

/// Port I/O: fills `kvm_run.io` and, for OUT, the data; the instruction
/// completes on the next `KVM_RUN` ([`complete`]).
fn port_io(
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
    let mut transfer = StringIo {
        io,
        count: 1,
        next_rip,
        gpa: 0,
    };
    if io.string {
        let amask = address_mask(io.address_size);
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
        let backwards = state.regs.rflags & RFLAGS_DF != 0;
        // One exit moves what fits in the guest page and the I/O page.
        let in_page = if backwards {
            (la & 0xfff) / size + 1
        } else {
            (0x1000 - (la & 0xfff)) / size
        };
        let want = if io.rep { rcx } else { 1 };
        let count = want.min(in_page).min(PAGE_SIZE as u64 / size).max(1);
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
                let a = element_gpa(gpa, k, size, backwards);
                if vm.read_guest(a, &mut elem[..size as usize]).is_none() {
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

/// The guest-physical address of element `k` of a string transfer.
fn element_gpa(first: u64, k: u64, size: u64, backwards: bool) -> u64 {
    if backwards {
        first.wrapping_sub(k * size)
    } else {
        first + k * size
    }
}

fn address_mask(address_size: u8) -> u64 {
    match address_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// The segment base OUTS reads from: DS, or the last segment-override
/// prefix of the instruction. SDM Vol. 2B OUTS.
fn outs_segment_base(vm: &Vm, state: &ArchState) -> u64 {
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

/// Records what the next `KVM_RUN` finishes, and where the vCPU is now.
fn set_pending(state: &mut ArchState, what: Pending) {
    state.run.pending = Some(PendingAt {
        what,
        linear_rip: state.sregs.cs.base.wrapping_add(state.regs.rip),
    });
}

/// Finishes what the last exit to user space started.
fn complete(vm: &Vm, state: &mut ArchState, pages: &Pages<'_>, pending: Pending) -> Result {
    match pending {
        Pending::In(t) | Pending::Out(t) => {
            let input = matches!(pending, Pending::In(_));
            let size = u64::from(t.io.size);
            if !t.io.string {
                if input {
                    let mut data = [0u8; 8];
                    pages.pio.read_bytes(0, &mut data[..size as usize])?;
                    let value = u64::from_le_bytes(data);
                    // IN AL/AX merge; IN EAX zero-extends into RAX. SDM Vol. 1 3.4.1.1.
                    state.regs.rax = match size {
                        1 => (state.regs.rax & !0xff) | value,
                        2 => (state.regs.rax & !0xffff) | value,
                        _ => value,
                    };
                }
                state.regs.rip = t.next_rip;
                return Ok(());
            }
            let backwards = state.regs.rflags & RFLAGS_DF != 0;
            if input {
                for k in 0..u64::from(t.count) {
                    let mut elem = [0u8; 4];
                    pages
                        .pio
                        .read_bytes((k * size) as usize, &mut elem[..size as usize])?;
                    let a = element_gpa(t.gpa, k, size, backwards);
                    // A slot deleted meanwhile: the data has nowhere to go, as on hardware
                    // writing to nothing.
                    let _ = vm.write_guest(a, &elem[..size as usize]);
                }
            }
            let amask = address_mask(t.io.address_size);
            let delta = u64::from(t.count) * size;
            let step = |reg: u64| {
                let moved = if backwards {
                    reg.wrapping_sub(delta)
                } else {
                    reg.wrapping_add(delta)
                };
                (reg & !amask) | (moved & amask)
            };
            if input {
                state.regs.rdi = step(state.regs.rdi);
            } else {
                state.regs.rsi = step(state.regs.rsi);
            }
            let mut done = true;
            if t.io.rep {
                let rcx = (state.regs.rcx & amask).wrapping_sub(u64::from(t.count)) & amask;
                state.regs.rcx = (state.regs.rcx & !amask) | rcx;
                done = rcx == 0;
            }
            if done {
                state.regs.rip = t.next_rip;
            }
            Ok(())
        }
        Pending::MmioLoad { insn, next_rip } => {
            let data: [u8; 8] = pages.run.read(UNION + offset_of!(MmioRun, data))?;
            let value = u64::from_le_bytes(data);
            insn.complete_load(&mut state.regs, insn.width.truncate(value));
            state.regs.rip = next_rip;
            Ok(())
        }
    }
}

/// A guest access to guest-physical memory no slot backs: decode the
/// instruction and hand the access to user space as `KVM_EXIT_MMIO`.
fn mmio(
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
            emulation_failure(page, &bytes[..n])?;
            return Ok(Next::User);
        }
    };
    let next_rip = insn.next_rip(state.regs.rip);
    if let Some(value) = insn.store_value(&state.regs) {
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
    exit_reason(page, abi::KVM_EXIT_MMIO)
}
