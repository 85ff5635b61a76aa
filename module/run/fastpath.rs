// SPDX-License-Identifier: GPL-2.0

//! The fast path: exits answered without leaving the guest's context.
//!
//! Going once round the run loop costs more than many exits' own work.
//! Before an entry the loop looks at signals, the scheduler, INIT and
//! SIPI, the TPR, kvmclock, SMIs, NMIs and interrupts; around the entry
//! `enter` loads the guest's FPU state and turns interrupts off, and after
//! it turns them on and saves the guest's FPU state again. A CPUID exit
//! changes none of what those steps look at: it only writes four
//! registers and moves RIP. So such an exit is answered right after it,
//! inside the FPU section with interrupts still off, and the guest is
//! entered again at once, as KVM's `vcpu_enter_guest` re-enters for an
//! exit its vendor code calls `EXIT_FASTPATH_REENTER_GUEST`. (KVM takes
//! that path for some WRMSRs, HLT and INVD; CPUID goes its long way, which
//! is short for KVM since its guest FPU state stays loaded across exits,
//! something a module cannot do: README, "Benchmarks".)
//!
//! The backend asks: after each exit its `run` calls
//! [`FastPath::after_exit`] ([`Reenter`](crate::backend::Reenter)) before undoing anything
//! of the entry, so that VMX stays in VMX operation with the vCPU's VMCS
//! current, and resumes it (VMRESUME) instead of VMXON, VMPTRLD and
//! VMLAUNCH again; SVM just runs VMRUN again.
//!
//! An exit is answered here only if nothing the long way would do before
//! the next entry is due. [`allowed`] decides that once per `enter`, for
//! what only the vCPU's own thread changes: nothing is being injected, no
//! interrupt, NMI or user-space window is asked for, the VMM is not
//! debugging the guest, no NMI or SMI waits, and no virtual-APIC word needs
//! syncing. [`FastPath::answer`] decides it per exit: the exit is one the fast path
//! knows (CPUID, unless CPUID faulting makes it #GP; INVD and WBINVD,
//! which rkvm only skips), the CPU gave the next RIP (no fetch from guest
//! memory, which may sleep), no event's delivery was interrupted, the
//! guest's TF is clear (its #DB after the instruction is the long way's),
//! the guest did not change CR8 under the APIC, and neither kvmclock nor
//! the Hyper-V TSC page waits to be written. What other threads change
//! (an interrupt, INIT or NMI for this vCPU, a slot removed, a signal, the
//! scheduler's request) `enter` checks again before every re-entry,
//! exactly as before the first; anything arriving later interrupts the
//! guest, whose exit then goes the long way.
//!
//! Every exit answered here is counted as the long way counts it, and in
//! rkvm's own `fastpath_exits`.

use super::{hyperv, kvmclock, regs, IrqLink, RunState, RFLAGS_TF};
use crate::abi::kvm_cpuid_entry2;
use crate::backend::{Entry, Event, Exit, ExitInfo, GuestRegs};
use crate::stats::VcpuStats;
use crate::sys::cpu::{self, IrqsDisabled};
use crate::vm::Vm;

/// Whether the exits of the entry about to be made may be answered on the
/// fast path: nothing is injected (`inject`), no window is asked for
/// (`windows`: the interrupt or NMI window the entry requests, or user
/// space's `request_interrupt_window`), and nothing else waits that only
/// the vCPU's own thread could change.
pub(super) fn allowed(run: &RunState, inject: Option<Event>, windows: bool) -> bool {
    let debug = &run.guest_debug;
    inject.is_none()
        && !windows
        && !debug.single_step
        && !debug.sw_breakpoints
        && !debug.block_irq
        && debug.hw.is_none()
        && !run.step_done
        && run.nmi.quiet()
        && !run.smm.pending
        && run.irq.as_ref().is_none_or(|l| !l.has_vapic())
}

/// The fast path of one `enter`: what it reads of the vCPU besides the
/// registers (all but the FPU image, which `enter` holds loaded), and what
/// it did.
pub(super) struct FastPath<'a> {
    /// [`allowed`]'s answer for this entry.
    pub(super) enabled: bool,
    pub(super) vm: &'a Vm,
    pub(super) cpuid: &'a [kvm_cpuid_entry2],
    /// The guest's XCR0 (CPUID leaf 0xD's sizes follow it).
    pub(super) xcr0: u64,
    pub(super) irq: Option<&'a IrqLink>,
    /// What the guest's kvmclock structure was last written from.
    pub(super) kvmclock_written: Option<kvmclock::Written>,
    pub(super) stats: &'a VcpuStats,
    pub(super) irqs: &'a IrqsDisabled,
    /// The next entry: the first one's, less what that one consumed.
    pub(super) next: Entry,
    /// Some exit was answered.
    pub(super) answered_any: bool,
    /// The exit the backend returns was answered here: something waiting
    /// stopped the re-entry, and there is no exit left to handle.
    pub(super) answered_last: bool,
}

impl FastPath<'_> {
    /// The backend's question after an exit ([`Reenter`](crate::backend::Reenter)):
    /// answers the exit if it may, and returns the entry to make at once,
    /// unless something waits that the long way must see first (the same
    /// checks as before the first entry).
    pub(super) fn after_exit(
        &mut self,
        guest: &mut GuestRegs<'_>,
        info: &ExitInfo,
    ) -> Option<Entry> {
        self.answered_last = self.enabled && self.answer(guest, info);
        if !self.answered_last {
            return None;
        }
        // Counted as the long way counts it.
        self.vm.stats.count_exit(&info.exit);
        self.stats.count_exit(&info.exit);
        self.vm.stats.fastpath_exits.add(1);
        self.answered_any = true;
        if super::entry_cancelled(self.irq.is_some_and(|l| l.apic.kicked())) {
            return None;
        }
        // Nothing left to flush or load; the exit ended any interrupt
        // shadow; the mappings' generation is read again (`enter` still
        // publishes the CPU it runs on: see `Vm::unmap`).
        let next = &mut self.next;
        next.flush_tlb = false;
        next.interrupt_shadow = false;
        next.pdptrs = None;
        next.mapping_generation = self
            .vm
            .mapping_generation
            .load(core::sync::atomic::Ordering::SeqCst);
        cpu::guest_enter_rcu_quiescent(self.irqs);
        // The exit that ends this run is another: the backend may return
        // it without asking (an entry that failed, a host NMI), and then it
        // must go the long way.
        self.answered_last = false;
        Some(*next)
    }

    /// Answers the exit `info` here if it may be (see the module
    /// documentation) and says whether it did. If it did not, nothing has
    /// changed and the exit goes the long way.
    fn answer(&self, guest: &mut GuestRegs<'_>, info: &ExitInfo) -> bool {
        let Some(next_rip) = info.next_rip else {
            return false;
        };
        if info.interrupted_event.is_some()
            || guest.regs.rflags & RFLAGS_TF != 0
            || self.housekeeping_due(guest)
        {
            return false;
        }
        match info.exit {
            // CPUID faulting (the long way raises #GP outside the guest's kernel).
            Exit::Cpuid if guest.msrs.cpuid_faults() && guest.sregs.ss.dpl != 0 => return false,
            Exit::Cpuid => regs::cpuid_into(guest.regs, guest.sregs, self.cpuid, self.xcr0),
            Exit::CacheFlush { .. } => {}
            _ => return false,
        }
        guest.regs.rip = next_rip;
        true
    }

    /// Whether something the top of the run loop updates before every
    /// entry is due: a CR8 the guest wrote without an exit (the APIC's TPR
    /// must take it), the guest's kvmclock structure after `KVM_SET_CLOCK`,
    /// or the Hyper-V reference TSC page.
    fn housekeeping_due(&self, guest: &GuestRegs<'_>) -> bool {
        self.irq.is_some_and(|l| l.cr8_changed(guest.sregs.cr8))
            || kvmclock::stale(self.vm, guest.msrs, self.kvmclock_written)
            || hyperv::tsc_page_stale(self.vm, guest.msrs.tsc_offset)
    }
}
