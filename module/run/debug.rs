// SPDX-License-Identifier: GPL-2.0

//! The VMM debugging its guest (`KVM_SET_GUEST_DEBUG`): the run loop's
//! side of x86/guest_debug.rs. The setting decides what each entry
//! intercepts and whether RFLAGS.TF is set for it (`enter`); an
//! intercepted #DB or #BP, and a step rkvm completed by emulating the
//! instruction, end `KVM_RUN` with `KVM_EXIT_DEBUG`.

use super::insn::fetch;
use super::{raise, ArchState, Next, DB_VECTOR, RFLAGS_TF, UNION};
use crate::abi::{self, kvm_debug_exit_arch, kvm_run};
use crate::backend::Event;
use crate::sys::mem::SharedPage;
use crate::vm::Vm;
use crate::x86::decode::MAX_INSN_LEN;
use crate::x86::guest_debug::{self, Inject, DR6_ACTIVE_LOW, DR6_BS};
use core::mem::offset_of;
use kernel::prelude::*;

/// #BP's vector.
pub(super) const BP_VECTOR: u8 = 3;

/// `KVM_SET_GUEST_DEBUG`, as KVM's `kvm_arch_vcpu_ioctl_set_guest_debug`:
/// `EINVAL` for a DR7 no processor takes (x86/guest_debug.rs `parse`),
/// `EBUSY` for an injection while an exception waits to be delivered
/// (and, where KVM would keep both, while an interrupt or NMI rkvm
/// already took from the APIC waits in the same slot). Otherwise the
/// setting replaces the last, and a #DB or #BP to inject is queued (a
/// #BP at the INT3 the last breakpoint stop was at is delivered past it:
/// [`reinject_past_int3`]).
pub(crate) fn set(state: &mut ArchState, control: u32, debugreg: &[u64; 8]) -> Result {
    let (debug, inject) = guest_debug::parse(control, debugreg).ok_or(EINVAL)?;
    if inject.is_some() && state.run.event.is_some() {
        return Err(EBUSY);
    }
    match inject {
        Some(Inject::Debug) => raise(state, DB_VECTOR, None),
        Some(Inject::Breakpoint) => raise(state, BP_VECTOR, None),
        None => {}
    }
    state.run.guest_debug = debug;
    state.run.step_done = false;
    Ok(())
}

/// Clears the TF `enter` set for a single step: the guest's RFLAGS, as
/// `KVM_GET_REGS` and the guest's next entry see them, never has it while
/// the VMM single-steps (KVM's `kvm_get_rflags` hides it the same way).
pub(super) fn after_entry(state: &mut ArchState) {
    if state.run.guest_debug.single_step {
        state.regs.rflags &= !RFLAGS_TF;
    }
}

/// The guest's linear RIP (CS.base + RIP), which `kvm_run.debug.arch.pc`
/// reports.
pub(super) fn linear_rip(state: &ArchState) -> u64 {
    state.sregs.cs.base.wrapping_add(state.regs.rip)
}

/// The guest's linear RIP and RFLAGS.TF before rkvm handles an exit or
/// finishes what user space completed, for [`note_emulated`].
pub(super) fn before_emulation(state: &ArchState) -> (u64, bool) {
    (linear_rip(state), state.regs.rflags & RFLAGS_TF != 0)
}

/// After rkvm handled an exit or finished what user space completed: an
/// instruction rkvm emulated (the guest moved on from where
/// [`before_emulation`] saw it, with no exception to deliver) took no
/// single-step trap. The VMM's single step is reported before the next
/// entry ([`report_step`]); the guest's own TF (set before the
/// instruction) becomes its #DB with DR6.BS, as KVM's
/// `kvm_skip_emulated_instruction`. SDM Vol. 3B 18.3.1.4.
pub(super) fn note_emulated(state: &mut ArchState, (rip_before, tf_before): (u64, bool)) {
    if linear_rip(state) == rip_before || state.run.event.is_some() {
        return;
    }
    // The VMM's step, or the guest's own while the VMM has hardware
    // breakpoints (every #DB is the VMM's then), ends KVM_RUN, as KVM's
    // `kvm_inject_emulated_db`.
    let debug = &state.run.guest_debug;
    if debug.single_step || (debug.hw.is_some() && tf_before) {
        state.run.step_done = true;
    } else if tf_before {
        state.run.dr6 |= DR6_BS;
        raise(state, DB_VECTOR, None);
    }
}

/// Before an entry that delivers #BP: if the guest stands at the INT3 of
/// the last breakpoint stop (the VMM is passing the guest's own INT3 back
/// to it, with `KVM_GUESTDBG_INJECT_BP` or `KVM_SET_VCPU_EVENTS`), RIP
/// moves past the INT3 first, so that the guest's handler returns after
/// it as from an INT3 it ran itself. KVM delivers such a #BP as the
/// software exception of the last exit's instruction for the same effect.
pub(super) fn reinject_past_int3(state: &mut ArchState, inject: Option<Event>) {
    let Some((at, len)) = state.run.int3_stop.take() else {
        return;
    };
    let bp = matches!(
        inject,
        Some(Event::Exception {
            vector: BP_VECTOR,
            ..
        })
    );
    if bp && linear_rip(state) == at {
        state.regs.rip = state.regs.rip.wrapping_add(len);
    }
}

/// Ends `KVM_RUN` with the step [`note_emulated`] recorded, if any.
pub(super) fn report_step(state: &mut ArchState, page: &SharedPage<'_>) -> Result<bool> {
    if !core::mem::take(&mut state.run.step_done) {
        return Ok(false);
    }
    write_exit(state, page, DB_VECTOR, DR6_ACTIVE_LOW | DR6_BS)?;
    Ok(true)
}

/// An intercepted #DB: while the VMM single-steps or has hardware
/// breakpoints, every #DB ends `KVM_RUN` (a step, a breakpoint's match
/// with its B0-B3 in DR6, and the guest's own TF or ICEBP alike, as KVM's
/// `db_interception`); otherwise (not reached: #DB is intercepted only
/// then) it is the guest's, with DR6 recording why.
pub(super) fn debug_exception(
    state: &mut ArchState,
    page: &SharedPage<'_>,
    dr6: u64,
) -> Result<Next> {
    if state.run.guest_debug.owns_debug_exceptions() {
        state.run.step_done = false;
        write_exit(state, page, DB_VECTOR, dr6)?;
        return Ok(Next::User);
    }
    state.run.dr6 = (state.run.dr6 & !0xf) | (dr6 & !DR6_ACTIVE_LOW) | DR6_ACTIVE_LOW;
    raise(state, DB_VECTOR, None);
    Ok(Next::Enter)
}

/// An intercepted #BP (the VMM's software breakpoints): `KVM_RUN` ends
/// with RIP at the INT3, which the VMM moves past or replaces, or passes
/// back to the guest ([`reinject_past_int3`]). The instruction is INT3
/// (`CC`) or INT 3 (`CD 03`).
pub(super) fn breakpoint(vm: &Vm, state: &mut ArchState, page: &SharedPage<'_>) -> Result<Next> {
    let mut bytes = [0u8; MAX_INSN_LEN];
    let len = if fetch(vm, state, &mut bytes) > 0 && bytes[0] == 0xcd {
        2
    } else {
        1
    };
    state.run.int3_stop = Some((linear_rip(state), len));
    let dr6 = state.run.dr6;
    write_exit(state, page, BP_VECTOR, dr6)?;
    Ok(Next::User)
}

/// `KVM_EXIT_DEBUG` with `kvm_run.debug.arch`: the vector, the linear
/// RIP, DR6 as given and DR7 as the guest ran with it (as KVM reports the
/// VMCB's or VMCS's): the VMM's with hardware breakpoints, else the
/// guest's.
fn write_exit(state: &ArchState, page: &SharedPage<'_>, vector: u8, dr6: u64) -> Result {
    let exit = kvm_debug_exit_arch {
        exception: u32::from(vector),
        pad: 0,
        pc: linear_rip(state),
        dr6,
        dr7: state.run.guest_debug.hw.map_or(state.run.dr7, |h| h.dr7),
    };
    page.write(UNION, &exit)?;
    page.write(offset_of!(kvm_run, exit_reason), &abi::KVM_EXIT_DEBUG)?;
    Ok(())
}
