// SPDX-License-Identifier: GPL-2.0

//! The fast path: exits answered without leaving the guest's context.
//!
//! Going once round the run loop costs more than many exits' own work.
//! Before an entry the loop looks at signals, the scheduler, INIT and
//! SIPI, the TPR, kvmclock, SMIs, NMIs and interrupts; around the entry
//! `enter` loads the guest's FPU state and turns interrupts off, and after
//! it turns them on and saves the guest's FPU state again. A CPUID exit
//! changes none of what those steps look at: it only writes four
//! registers and moves RIP. So `enter` answers such an exit itself,
//! inside the FPU section with interrupts still off, and enters the guest
//! again at once, as KVM's `vcpu_enter_guest` re-enters for an exit its
//! vendor code calls `EXIT_FASTPATH_REENTER_GUEST`. (KVM takes that path
//! for some WRMSRs, HLT and INVD; CPUID goes its long way, which is short
//! for KVM since its guest FPU state stays loaded across exits, something
//! a module cannot do: README, "Benchmarks".)
//!
//! An exit is answered here only if nothing the long way would do before
//! the next entry is due. [`allowed`] decides that once per `enter`, for
//! what only the vCPU's own thread changes: nothing is being injected, no
//! interrupt, NMI or user-space window is asked for, the VMM is not
//! debugging the guest, no NMI or SMI waits, and no virtual-APIC word needs
//! syncing. [`answer`] decides it per exit: the exit is one the fast path
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

use super::{kvmclock, regs, IrqLink, RunState, RFLAGS_TF};
use crate::abi::{kvm_cpuid_entry2, kvm_regs, kvm_sregs};
use crate::backend::{Event, Exit, ExitInfo};
use crate::vm::Vm;
use crate::x86::msr::MsrFile;

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

/// The vCPU's state that an exit answered on the fast path reads and
/// writes: all but the FPU image, which `enter` holds loaded.
pub(super) struct Parts<'a> {
    pub(super) regs: &'a mut kvm_regs,
    pub(super) sregs: &'a kvm_sregs,
    pub(super) msrs: &'a MsrFile,
    pub(super) cpuid: &'a [kvm_cpuid_entry2],
    /// The guest's XCR0 (CPUID leaf 0xD's sizes follow it).
    pub(super) xcr0: u64,
    pub(super) irq: Option<&'a IrqLink>,
    /// What the guest's kvmclock structure was last written from.
    pub(super) kvmclock_written: Option<kvmclock::Written>,
}

/// Answers the exit `info` here if it may be (see the module
/// documentation) and says whether it did. If it did not, nothing has
/// changed and the exit goes the long way.
pub(super) fn answer(vm: &Vm, p: Parts<'_>, info: &ExitInfo) -> bool {
    let Some(next_rip) = info.next_rip else {
        return false;
    };
    if info.interrupted_event.is_some()
        || p.regs.rflags & RFLAGS_TF != 0
        || housekeeping_due(vm, &p)
    {
        return false;
    }
    match info.exit {
        // CPUID faulting (the long way raises #GP outside the guest's kernel).
        Exit::Cpuid if p.msrs.cpuid_faults() && p.sregs.ss.dpl != 0 => return false,
        Exit::Cpuid => regs::cpuid_into(p.regs, p.sregs, p.cpuid, p.xcr0),
        Exit::CacheFlush { .. } => {}
        _ => return false,
    }
    p.regs.rip = next_rip;
    true
}

/// Whether something the top of the run loop updates before every entry
/// is due: a CR8 the guest wrote without an exit (the APIC's TPR must take
/// it), the guest's kvmclock structure after `KVM_SET_CLOCK`, or the
/// Hyper-V reference TSC page.
fn housekeeping_due(vm: &Vm, p: &Parts<'_>) -> bool {
    p.irq.is_some_and(|l| l.cr8_changed(p.sregs.cr8))
        || kvmclock::stale(vm, p.msrs, p.kvmclock_written)
        || vm.hyperv_tsc_page_due()
}
