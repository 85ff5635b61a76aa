// SPDX-License-Identifier: GPL-2.0

//! The run loop's side of the in-kernel irqchip (`irq/`), for a VM that
//! called `KVM_CREATE_IRQCHIP`:
//! - before each entry, the interrupt the guest takes next comes from its
//!   local APIC (or, through LINT0, from the PIC), acknowledged only when
//!   the guest can take it, else an interrupt window is requested
//!   ([`pick_interrupt`]); CR8 and the APIC's TPR are kept the same
//!   ([`sync_tpr`]);
//! - HLT is finished in the kernel: the vCPU sleeps until its APIC has an
//!   interrupt for it, or a signal comes ([`halt`]);
//! - the APIC's page, the IOAPIC's window, the x2APIC and TSC-deadline
//!   MSRs and the PIC's ports are emulated here instead of exiting to user
//!   space ([`mmio`], [`msr`], [`port_in`], [`port_out`]).

use super::Next;
use crate::abi;
use crate::backend::Event;
use crate::irq::chip::{Irqchip, TimerHandle, VcpuApic};
use crate::irq::lapic::{self, Gp};
use crate::irq::pic;
use crate::sys::cpu;
use crate::sys::mem::SharedPage;
use crate::vcpu::ArchState;
use crate::vm::Vm;
use crate::x86::decode::MmioInsn;
use crate::x86::regs::apic_base;
use kernel::prelude::*;
use kernel::sync::Arc;

/// RFLAGS.IF. SDM Vol. 1 3.4.3.
const RFLAGS_IF: u64 = 1 << 9;

/// The multiprocessing state of a vCPU with an in-kernel APIC (KVM's
/// `mp_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MpState {
    Runnable,
    /// In HLT, until an interrupt it can take.
    Halted,
    /// An application processor after RESET: waits for INIT.
    Uninitialized,
    /// After INIT: waits for a SIPI (SDM Vol. 3A 9.4.4, "wait-for-SIPI").
    InitReceived,
}

/// A vCPU's link to the in-kernel irqchip, in its run state.
pub(crate) struct IrqLink {
    pub(crate) chip: Arc<Irqchip>,
    pub(crate) apic: Arc<VcpuApic>,
    /// The armed APIC timer (dropping it cancels the timer).
    pub(crate) timer: Option<TimerHandle>,
    /// CR8 as last set from the TPR: a different value means the guest
    /// (or `KVM_SET_SREGS`) wrote CR8 since.
    cr8_seen: u64,
    /// Runnable, halted (HLT, waiting for an interrupt), or an application
    /// processor waiting for INIT and SIPI. A signal ends `KVM_RUN`
    /// without ending a wait.
    pub(crate) mp: MpState,
    /// This is the bootstrap processor (vCPU 0 unless `KVM_SET_BOOT_CPU_ID`
    /// chose another), which takes the PIC's interrupts (LINT0).
    bsp: bool,
    /// `KVM_SET_VAPIC_ADDR`: the guest-physical address of the word that
    /// mirrors the APIC's TPR, in-service class and highest request, and
    /// whether it was written since (its TPR is read back after an exit
    /// only then).
    vapic: Option<u64>,
    vapic_written: bool,
    /// Split irqchip: the vector of the user-space PIC's interrupt
    /// `KVM_INTERRUPT` left for this vCPU (KVM's `pending_external_vector`),
    /// taken as ExtINT through LINT0.
    extint: Option<u8>,
    /// Split irqchip: the vector of an EOI user space's IOAPIC must hear
    /// of; `KVM_RUN` returns `KVM_EXIT_IOAPIC_EOI` before the next entry.
    pub(crate) eoi_exit: Option<u8>,
}

impl IrqLink {
    /// Whether the guest has a virtual-APIC word (`KVM_SET_VAPIC_ADDR`),
    /// synced around every entry.
    pub(super) fn has_vapic(&self) -> bool {
        self.vapic.is_some()
    }

    /// Whether CR8 (`cr8`, as the last exit left it) differs from what
    /// the TPR last set it to: the guest wrote it without an exit.
    pub(super) fn cr8_changed(&self, cr8: u64) -> bool {
        cr8 & 0xf != self.cr8_seen
    }

    pub(crate) fn new(chip: Arc<Irqchip>, apic: Arc<VcpuApic>, bsp: bool) -> Self {
        IrqLink {
            chip,
            apic,
            timer: None,
            cr8_seen: 0,
            // With an in-kernel APIC only the BSP runs from RESET; the others wait for
            // INIT and SIPI, as KVM's `kvm_arch_vcpu_create`.
            mp: if bsp {
                MpState::Runnable
            } else {
                MpState::Uninitialized
            },
            bsp,
            vapic: None,
            vapic_written: false,
            extint: None,
            eoi_exit: None,
        }
    }

    /// `KVM_INTERRUPT` with an in-kernel APIC (KVM's
    /// `kvm_vcpu_ioctl_interrupt`): only a split irqchip takes it, as the
    /// user-space PIC's ExtINT vector (`ENXIO` with the in-kernel PIC), and
    /// only one at a time (`EEXIST` until the guest took the last).
    pub(crate) fn queue_extint(&mut self, vector: u8) -> Result {
        if !self.chip.is_split() {
            return Err(ENXIO);
        }
        if self.extint.is_some() {
            return Err(EEXIST);
        }
        self.extint = Some(vector);
        Ok(())
    }

    /// A PIC interrupt waits for this vCPU and LINT0 takes it (KVM's
    /// `kvm_cpu_has_extint`): the in-kernel PIC's output, for the BSP, or
    /// the vector `KVM_INTERRUPT` left with a split irqchip. Without the
    /// APIC's lock (its [`Summary`](crate::irq::lapic::Summary)).
    fn extint_waits(&self) -> bool {
        self.extint_waits_if(self.apic.summary().accepts_pic)
    }

    /// [`Self::extint_waits`], given whether LINT0 takes the PIC's
    /// interrupts (`accepts_pic`, read under the lock by a caller holding
    /// it).
    fn extint_waits_if(&self, accepts_pic: bool) -> bool {
        accepts_pic
            && if self.chip.is_split() {
                self.extint.is_some()
            } else {
                self.bsp && self.chip.pic_output()
            }
    }

    /// The CPU acknowledges the ExtINT: its vector, if one still waits.
    fn take_extint(&mut self) -> Option<u8> {
        if self.chip.is_split() {
            self.extint.take()
        } else {
            self.chip.pic_acknowledge()
        }
    }

    /// Split irqchip: whether user space may inject the next ExtINT now
    /// (`kvm_run.ready_for_interrupt_injection`, with the guest able to
    /// take an interrupt): none waits, and LINT0 takes one (KVM's
    /// `kvm_cpu_accept_dm_intr`). A full irqchip never takes one.
    pub(crate) fn accepts_extint(&self) -> bool {
        self.chip.is_split()
            && self.extint.is_none()
            && self.apic.with(|l| l.accepts_pic_interrupts())
    }

    /// `KVM_SET_VAPIC_ADDR` (0 turns the mirror off).
    pub(crate) fn set_vapic(&mut self, gpa: u64) {
        self.vapic = (gpa != 0).then_some(gpa);
        self.vapic_written = false;
    }

    /// `KVM_GET_MP_STATE`.
    pub(crate) fn mp_state(&self) -> u32 {
        match self.mp {
            MpState::Runnable => abi::KVM_MP_STATE_RUNNABLE,
            MpState::Halted => abi::KVM_MP_STATE_HALTED,
            MpState::Uninitialized => abi::KVM_MP_STATE_UNINITIALIZED,
            MpState::InitReceived => abi::KVM_MP_STATE_INIT_RECEIVED,
        }
    }

    /// `KVM_SET_MP_STATE`, with KVM's x86 states; `SIPI_RECEIVED` (old
    /// user space's) is `INIT_RECEIVED` with the SIPI latched, vector 0
    /// unless one was, as KVM. Others are `EINVAL`.
    pub(crate) fn set_mp_state(&mut self, state: u32) -> Result {
        self.mp = match state {
            abi::KVM_MP_STATE_RUNNABLE => MpState::Runnable,
            abi::KVM_MP_STATE_HALTED => MpState::Halted,
            abi::KVM_MP_STATE_UNINITIALIZED => MpState::Uninitialized,
            abi::KVM_MP_STATE_INIT_RECEIVED => MpState::InitReceived,
            abi::KVM_MP_STATE_SIPI_RECEIVED => {
                self.apic.latch_sipi_if_none();
                MpState::InitReceived
            }
            _ => return Err(EINVAL),
        };
        self.apic.kick();
        Ok(())
    }

    /// CR8 as `KVM_GET_SREGS` reports it: the TPR's priority class.
    pub(crate) fn cr8(&self) -> u64 {
        u64::from(self.apic.with(|l| l.tpr()) >> 4)
    }

    /// `KVM_SET_SREGS`'s CR8 goes into the TPR, as KVM's `kvm_set_cr8`.
    pub(crate) fn set_cr8(&mut self, cr8: u64) {
        let cr8 = cr8 & 0xf;
        self.apic.with(|l| l.set_tpr((cr8 << 4) as u8));
        self.cr8_seen = cr8;
    }

    /// Whether the vCPU has an interrupt it would take with `if_set`: from
    /// its APIC, or from the PIC through LINT0.
    fn wakes(&self, l: &lapic::Lapic, if_set: bool) -> bool {
        if_set && (l.pending().is_some() || self.extint_waits_if(l.accepts_pic_interrupts()))
    }
}

/// CR8 is the TPR's bits 7:4 (SDM Vol. 3A 11.8.6). A CR8 that changed
/// since it was last set (a MOV to CR8, V_TPR on SVM, `KVM_SET_SREGS`)
/// goes into the TPR first; then CR8 is set from the TPR, which an MMIO or
/// x2APIC write may have changed.
pub(super) fn sync_tpr(vm: &Vm, state: &mut ArchState) {
    let Some(link) = state.run.irq.as_mut() else {
        return;
    };
    if let Some(gpa) = link.vapic {
        // KVM's `kvm_lapic_sync_to_vapic`: the guest sees the APIC's state.
        let word = link.apic.with(|l| l.vapic_word());
        link.vapic_written = vm.write_guest(gpa, &word.to_le_bytes()).is_some();
    }
    let cr8 = state.sregs.cr8 & 0xf;
    let changed = cr8 != link.cr8_seen;
    // Unchanged, the TPR is read without the APIC's lock.
    let tpr = if changed {
        link.apic.with(|l| {
            l.set_tpr((cr8 << 4) as u8);
            l.tpr()
        })
    } else {
        link.apic.summary().tpr
    };
    state.sregs.cr8 = u64::from(tpr >> 4);
    link.cr8_seen = state.sregs.cr8;
}

/// After an exit, before it is handled (KVM's `sync_cr8_to_lapic`): a CR8
/// the guest changed without an exit (a MOV to CR8; on SVM it writes
/// V_TPR) goes into the TPR now, so that a handler that reads or writes
/// the TPR (an MMIO, x2APIC or Hyper-V MSR access) sees the guest's value,
/// and a write it makes is not undone by [`sync_tpr`] before the entry.
pub(super) fn cr8_to_tpr(state: &mut ArchState) {
    let Some(link) = state.run.irq.as_mut() else {
        return;
    };
    let cr8 = state.sregs.cr8 & 0xf;
    if cr8 != link.cr8_seen {
        link.apic.with(|l| {
            let _ = l.set_tpr((cr8 << 4) as u8);
        });
        link.cr8_seen = cr8;
    }
}

/// After an exit, with `KVM_SET_VAPIC_ADDR`: the TPR the guest left in its
/// virtual-APIC word becomes the APIC's, before the exit is handled
/// (KVM's `kvm_lapic_sync_from_vapic`).
pub(super) fn sync_from_vapic(vm: &Vm, state: &mut ArchState) {
    let Some(link) = state.run.irq.as_mut() else {
        return;
    };
    let (Some(gpa), true) = (link.vapic, link.vapic_written) else {
        return;
    };
    let mut tpr = [0u8; 1];
    if vm.read_guest(gpa, &mut tpr).is_some() {
        let tpr = tpr[0];
        link.apic.with(|l| {
            if l.tpr() != tpr {
                let _ = l.set_tpr(tpr);
            }
        });
    }
}

/// Before an entry: takes the interrupt the guest gets next into
/// `state.run.event`, if there is one and the guest can take it now (IF
/// set, no interrupt shadow, nothing else being delivered). The PIC's
/// (ExtINT, through vCPU 0's LINT0) comes before the APIC's, as KVM's
/// `kvm_cpu_get_interrupt` orders them. Returns whether an interrupt
/// still waits (one not taken now, or another behind the one taken): the
/// caller asks for an interrupt window then, so that it is delivered as
/// soon as the guest can take it, as KVM requests the window after an
/// injection.
pub(super) fn pick_interrupt(state: &mut ArchState) -> bool {
    let interruptible = state.regs.rflags & RFLAGS_IF != 0 && !state.run.interrupt_shadow;
    let busy = state.run.event.is_some();
    let Some(link) = state.run.irq.as_mut() else {
        return false;
    };
    let take = interruptible && !busy;
    // Without the APIC's lock, what is true before most entries: no vector
    // is requested, and no ExtINT waits.
    if !link.apic.summary().requests && !link.extint_waits() {
        return false;
    }
    if link.extint_waits() {
        if !take {
            return true;
        }
        if let Some(v) = link.take_extint() {
            link.chip.stats.irq_injections.add(1);
            state.run.event = Some(Event::Interrupt(v));
            return link.extint_waits() || link.apic.with(|l| l.pending().is_some());
        }
    }
    let (taken, still_waits) = link.apic.with(|l| {
        let taken = l.pending().filter(|_| take);
        if let Some(v) = taken {
            l.acknowledge(v);
        }
        (taken, l.pending().is_some())
    });
    if let Some(v) = taken {
        link.chip.stats.irq_injections.add(1);
        state.run.event = Some(Event::Interrupt(v));
    }
    still_waits || link.extint_waits()
}

/// HLT with an in-kernel APIC: the vCPU is halted, and [`events`] waits,
/// before the next entry, until it has an interrupt it can take. In
/// between, a split irqchip's VMM that asked for an interrupt window gets
/// `KVM_EXIT_IRQ_WINDOW_OPEN` instead (it has an ExtINT to give), as from
/// KVM's `vcpu_run` loop. `None` without an in-kernel APIC (the VMM gets
/// `KVM_EXIT_HLT`).
pub(super) fn halt(state: &mut ArchState) -> Option<Next> {
    let link = state.run.irq.as_mut()?;
    link.mp = MpState::Halted;
    Some(Next::Enter)
}

/// Before each entry, KVM's `kvm_apic_accept_events` and
/// `kvm_vcpu_block`: a latched INIT resets the vCPU (the BSP runs on from
/// the reset vector; an application processor waits for SIPI), a SIPI
/// starts a processor waiting for it in real mode at `vector << 12`; a
/// vCPU that is not runnable sleeps until an interrupt it can take (if
/// halted), an INIT or SIPI, or a signal (`EINTR`, `KVM_EXIT_INTR`; it
/// stays in its state for the next `KVM_RUN`). `None`: enter now.
///
/// An application processor still `UNINITIALIZED` is KVM's special case
/// (`kvm_arch_vcpu_ioctl_run`): it sleeps once, takes what woke it, and
/// `KVM_RUN` returns `EAGAIN` for user space to call it again.
pub(super) fn events(state: &mut ArchState, page: &SharedPage<'_>) -> Result<Option<Next>> {
    let Some(link) = state.run.irq.as_ref() else {
        return Ok(None);
    };
    let in_smm = state.run.smm.active;
    // A vCPU waiting for SIPI cannot be in SMM, which blocks SIPIs (a state
    // only a VMM can make): `EINVAL`, as KVM's `kvm_x86_vcpu_pre_run`.
    if in_smm && link.mp == MpState::InitReceived {
        return Ok(Some(Next::Fail(EINVAL)));
    }
    if link.mp == MpState::Uninitialized {
        if !link.apic.halt(|_| !in_smm && link.apic.has_init_or_sipi()) {
            return interrupted(page);
        }
        accept_init_sipi(state)?;
        return Ok(Some(Next::Fail(EAGAIN)));
    }
    accept_init_sipi(state)?;
    let if_set = state.regs.rflags & RFLAGS_IF != 0;
    // An NMI wakes a halted vCPU whatever IF says, unless NMIs are blocked
    // (in an NMI handler, or in SMM), where it waits without waking it, as
    // KVM's `kvm_vcpu_has_events` asks `nmi_allowed`; an SMI wakes it
    // outside SMM. In SMM, INIT stays latched.
    state.run.nmi.settle(state.regs.rip);
    let nmi_blocked = state.run.nmi.blocked;
    let nmi_waits = state.run.nmi.waiting() && !nmi_blocked;
    let smi_waits = state.run.smm.pending && !in_smm;
    let Some(link) = state.run.irq.as_mut() else {
        return Ok(None);
    };
    let mp = link.mp;
    let woke = match mp {
        MpState::Runnable => return Ok(None),
        MpState::Halted => link.apic.halt(|l| {
            nmi_waits
                || smi_waits
                || link.wakes(l, if_set)
                || (!in_smm && link.apic.has_init_or_sipi())
                || (!nmi_blocked && link.apic.has_nmi())
                || (!in_smm && link.apic.has_smi())
        }),
        MpState::Uninitialized | MpState::InitReceived => {
            link.apic.halt(|_| !in_smm && link.apic.has_init_or_sipi())
        }
    };
    if !woke {
        return interrupted(page);
    }
    if mp == MpState::Halted {
        link.mp = MpState::Runnable;
        link.chip.stats.halt_wakeup.add(1);
    }
    // Go round: the INIT or SIPI is taken, the interrupt picked, next time.
    Ok(Some(Next::Enter))
}

/// A signal ended a wait: `KVM_RUN` fails with `EINTR` and
/// `KVM_EXIT_INTR`.
fn interrupted(page: &SharedPage<'_>) -> Result<Option<Next>> {
    page.write(
        core::mem::offset_of!(abi::kvm_run, exit_reason),
        &abi::KVM_EXIT_INTR,
    )?;
    Ok(Some(Next::Fail(EINTR)))
}

/// Takes a latched INIT, then a latched SIPI (KVM's
/// `kvm_apic_accept_events`).
fn accept_init_sipi(state: &mut ArchState) -> Result {
    let Some(link) = state.run.irq.as_ref() else {
        return Ok(());
    };
    // In SMM an INIT waits for RSM and a SIPI is dropped, as KVM's
    // `kvm_apic_accept_events` (`kvm_apic_init_sipi_allowed`).
    if state.run.smm.active {
        let _ = link.apic.take_sipi();
        return Ok(());
    }
    if link.apic.take_init() {
        state.reset_for_init();
        let link = state.run.irq.as_mut().ok_or(EINVAL)?;
        // INIT clears the APIC too, its ID kept; its timer stops.
        link.apic.with(|l| l.init());
        link.timer = None;
        link.extint = None;
        link.mp = if link.bsp {
            MpState::Runnable
        } else {
            MpState::InitReceived
        };
    }
    let Some(link) = state.run.irq.as_mut() else {
        return Ok(());
    };
    if let Some(vector) = link.apic.take_sipi() {
        if link.mp == MpState::InitReceived {
            link.mp = MpState::Runnable;
            // SDM Vol. 3A 9.4.4: the AP starts at vector:0000 in real mode.
            state.sregs.cs.selector = u16::from(vector) << 8;
            state.sregs.cs.base = u64::from(vector) << 12;
            state.regs.rip = 0;
        }
    }
    Ok(())
}

/// An MMIO access at `gpa` the in-kernel irqchip may own: the local APIC's
/// page (xAPIC mode, at IA32_APIC_BASE) or the IOAPIC's window. Completes
/// the instruction and returns `Some`, or `None` for user space.
pub(super) fn mmio(state: &mut ArchState, gpa: u64, insn: &MmioInsn, next_rip: u64) -> Option<()> {
    let link = state.run.irq.as_mut()?;
    let base = state.sregs.apic_base;
    let apic_page = base & apic_base::ENABLE != 0
        && base & apic_base::EXTD == 0
        && gpa & !0xfff == base & !0xfff;
    let len = usize::from(insn.width.bytes());
    let store = insn.store_value(&state.regs);
    if apic_page {
        let offset = gpa & 0xfff;
        match store {
            Some(value) => {
                let now = cpu::now_ns();
                let effect = link
                    .apic
                    .with(|l| l.mmio_write(offset, len, value as u32, now));
                link.eoi_exit = link.apic.apply(&link.chip, effect, &mut link.timer);
            }
            None => {
                let value = link.apic.with(|l| l.mmio_read(offset, len, cpu::now_ns()));
                insn.complete_load(&mut state.regs, insn.width.truncate(value));
            }
        }
    } else if link.chip.ioapic_claims(gpa) {
        match store {
            Some(value) => link.chip.ioapic_write(gpa, len, value),
            None => {
                let value = link.chip.ioapic_read(gpa, len);
                insn.complete_load(&mut state.regs, insn.width.truncate(value));
            }
        }
    } else {
        return None;
    }
    state.regs.rip = next_rip;
    // A completed instruction ends an STI or MOV SS shadow.
    state.run.interrupt_shadow = false;
    Some(())
}

/// RDMSR/WRMSR of the MSRs the in-kernel APIC owns: the x2APIC registers
/// and IA32_TSC_DEADLINE. `None` if `index` is not one of them (or there
/// is no in-kernel APIC); `Some(Err(Gp))` raises #GP.
pub(super) fn msr(
    state: &mut ArchState,
    index: u32,
    write: Option<u64>,
) -> Option<Result<u64, Gp>> {
    let tsc_offset = state.msrs.tsc_offset;
    let tsc_khz = state.tsc_khz;
    let link = state.run.irq.as_mut()?;
    let now = cpu::now_ns();
    if (lapic::X2APIC_MSR_FIRST..=lapic::X2APIC_MSR_LAST).contains(&index) {
        return Some(match write {
            None => link.apic.with(|l| l.msr_read(index, now)),
            Some(value) => link
                .apic
                .with(|l| l.msr_write(index, value, now))
                .map(|effect| {
                    link.eoi_exit = link.apic.apply(&link.chip, effect, &mut link.timer);
                    0
                }),
        });
    }
    if index == lapic::MSR_TSC_DEADLINE {
        return Some(Ok(match write {
            None => link.apic.with(|l| l.tsc_deadline()),
            Some(value) => {
                let guest_tsc = cpu::rdtsc().wrapping_add(tsc_offset);
                let at = lapic::tsc_deadline_ns(value, guest_tsc, now, tsc_khz);
                let effect = link.apic.with(|l| l.set_tsc_deadline(value, at));
                // A timer change: never an EOI.
                let _ = link.apic.apply(&link.chip, effect, &mut link.timer);
                0
            }
        }));
    }
    None
}

/// A Hyper-V APIC-access MSR on APIC register `offset` (lapic.rs,
/// `hv_msr_read`/`hv_msr_write`), read (`write` `None`) or written by the
/// guest or the VMM. Without an in-kernel APIC it is #GP (the VMM's error),
/// as KVM's `kvm_hv_vapic_msr_write`.
pub(crate) fn hv_msr(
    link: Option<&mut IrqLink>,
    offset: u32,
    write: Option<u64>,
) -> Result<u64, Gp> {
    let link = link.ok_or(Gp)?;
    let now = cpu::now_ns();
    match write {
        None => link.apic.with(|l| l.hv_msr_read(offset, now)),
        Some(value) => {
            let effect = link.apic.with(|l| l.hv_msr_write(offset, value, now))?;
            link.eoi_exit = link.apic.apply(&link.chip, effect, &mut link.timer);
            Ok(0)
        }
    }
}

/// A guest write of IA32_APIC_BASE: with an in-kernel APIC, moving from
/// x2APIC straight to xAPIC mode, or from disabled straight to x2APIC, is
/// #GP (SDM Vol. 3A 11.12.5). Returns false for those.
pub(super) fn apic_base_write_allowed(state: &ArchState, value: u64) -> bool {
    let Some(link) = state.run.irq.as_ref() else {
        return true;
    };
    let (en, x2) = (value & apic_base::ENABLE != 0, value & apic_base::EXTD != 0);
    link.apic.with(|l| l.base_transition_ok(en, x2))
}

/// IA32_APIC_BASE changed (a guest write, or `KVM_SET_SREGS`): the APIC
/// follows its enable and x2APIC bits.
pub(crate) fn apic_base_changed(state: &mut ArchState) {
    let value = state.sregs.apic_base;
    if let Some(link) = state.run.irq.as_ref() {
        link.apic
            .with(|l| l.set_base(value & apic_base::ENABLE != 0, value & apic_base::EXTD != 0));
    }
}

/// IN from a PIC port: `Some(byte)` if the in-kernel PIC owns it (not
/// with a split irqchip: user space's PIC does).
pub(super) fn port_in(state: &ArchState, port: u16) -> Option<u8> {
    let link = state.run.irq.as_ref()?;
    (pic::claims_port(port) && !link.chip.is_split()).then(|| link.chip.pic_read(port))
}

/// OUT to a PIC port: `true` if the in-kernel PIC took it.
pub(super) fn port_out(state: &ArchState, port: u16, value: u8) -> bool {
    let Some(link) = state.run.irq.as_ref() else {
        return false;
    };
    if !pic::claims_port(port) || link.chip.is_split() {
        return false;
    }
    link.chip.pic_write(port, value);
    true
}
