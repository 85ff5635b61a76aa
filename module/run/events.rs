// SPDX-License-Identifier: GPL-2.0

//! `KVM_GET_VCPU_EVENTS` and `KVM_SET_VCPU_EVENTS`: the events a vCPU has
//! between instructions, as `struct kvm_vcpu_events` carries them
//! (`Documentation/virt/kvm/api.rst`), for a VMM to save and restore.
//!
//! rkvm keeps them as the run loop needs them: one event being delivered
//! (`RunState::event`: an exception, NMI or interrupt whose injection is
//! under way or was cut short by an exit), the interrupt `KVM_INTERRUPT`
//! queued (`queued_irq`), the NMIs waiting and whether NMIs are blocked
//! (`nmi`), the interrupt shadow, and with an in-kernel APIC a latched INIT.
//! Without `KVM_CAP_EXCEPTION_PAYLOAD` KVM reports a pending exception as
//! injected; rkvm has only injected ones, which is the same to user space.
//! The SMM state is run/smm.rs's: in SMM or not, an SMI waiting, and
//! whether NMIs were blocked when the SMI came.

use super::RunState;
use crate::abi::{self, kvm_vcpu_events};
use crate::backend::Event;
use kernel::prelude::*;

/// NMI's vector: not an exception `KVM_SET_VCPU_EVENTS` may inject.
const NMI_VECTOR: u8 = 2;

/// Software exceptions (#BP from INT3, #OF from INTO): KVM does not report
/// them as injected, since the ABI has no instruction length for them;
/// the guest executes the instruction again.
fn is_soft_exception(vector: u8) -> bool {
    matches!(vector, 3 | 4)
}

/// The flags `KVM_SET_VCPU_EVENTS` may have, as KVM's (the payload and
/// triple-fault flags only once their capabilities are enabled, which
/// rkvm does not offer).
const SETTABLE: u32 = abi::KVM_VCPUEVENT_VALID_NMI_PENDING
    | abi::KVM_VCPUEVENT_VALID_SIPI_VECTOR
    | abi::KVM_VCPUEVENT_VALID_SHADOW
    | abi::KVM_VCPUEVENT_VALID_SMM;

impl RunState {
    /// `KVM_GET_VCPU_EVENTS`. NMIs the in-kernel APIC received are
    /// counted in first, as KVM's `process_nmi`.
    pub(crate) fn vcpu_events(&mut self) -> kvm_vcpu_events {
        if let Some(n) = self.irq.as_ref().map(|l| l.apic.take_nmis()) {
            self.nmi.queue(n);
        }
        // So is an SMI (KVM's `process_smi`).
        if self.irq.as_ref().is_some_and(|l| l.apic.take_smi()) {
            self.smm.pending = true;
        }
        let mut ev = kvm_vcpu_events::default();
        match self.event {
            Some(Event::Exception { vector, error_code }) => {
                ev.exception.injected = u8::from(!is_soft_exception(vector));
                ev.exception.nr = vector;
                ev.exception.has_error_code = u8::from(error_code.is_some());
                ev.exception.error_code = error_code.unwrap_or(0);
            }
            Some(Event::Nmi) => ev.nmi.injected = 1,
            Some(Event::Interrupt(vector)) => {
                ev.interrupt.injected = 1;
                ev.interrupt.nr = vector;
            }
            None => {}
        }
        // An interrupt KVM_INTERRUPT queued is KVM's injected interrupt
        // too (`kvm_queue_interrupt`), when the slot above is free.
        if ev.interrupt.injected == 0 {
            if let Some(vector) = self.queued_irq {
                ev.interrupt.injected = 1;
                ev.interrupt.nr = vector;
            }
        }
        // SVM cannot tell the two shadows apart, and KVM on SVM reports
        // both; rkvm does so on both vendors.
        if self.interrupt_shadow {
            ev.interrupt.shadow =
                (abi::KVM_X86_SHADOW_INT_MOV_SS | abi::KVM_X86_SHADOW_INT_STI) as u8;
        }
        ev.nmi.pending = self.nmi.pending();
        ev.nmi.masked = u8::from(self.nmi.blocked);
        ev.smi.smm = u8::from(self.smm.active);
        ev.smi.pending = u8::from(self.smm.pending);
        ev.smi.smm_inside_nmi = u8::from(self.smm.inside_nmi);
        ev.smi.latched_init = u8::from(self.irq.as_ref().is_some_and(|l| l.apic.has_init()));
        ev.flags = abi::KVM_VCPUEVENT_VALID_NMI_PENDING
            | abi::KVM_VCPUEVENT_VALID_SHADOW
            | abi::KVM_VCPUEVENT_VALID_SMM;
        ev
    }

    /// `KVM_SET_VCPU_EVENTS`, with KVM's checks: unknown or not enabled
    /// flags and an exception vector above 31 or NMI's are `EINVAL`, and
    /// then nothing changes. With `KVM_VCPUEVENT_VALID_SMM` the vCPU is put
    /// in or out of SMM as `smi.smm` says, without saving or loading any
    /// state (as KVM's `kvm_smm_changed`: a restore brings the registers
    /// the vCPU had in SMM), with `smi.pending` and `smi.smm_inside_nmi`. An injected exception goes in
    /// first at the next entry, then an NMI, then an interrupt (which waits
    /// as a `KVM_INTERRUPT` one if the slot is taken), as KVM orders them.
    /// The SIPI vector is ignored: rkvm latches a SIPI with its vector
    /// when the APIC takes it (`KVM_SET_MP_STATE` can latch one).
    pub(crate) fn set_vcpu_events(&mut self, ev: &kvm_vcpu_events) -> Result {
        if ev.flags & !SETTABLE != 0 {
            return Err(EINVAL);
        }
        // Without the payload flag, only "injected" counts.
        let exception = ev.exception.injected != 0;
        if exception && (ev.exception.nr > 31 || ev.exception.nr == NMI_VECTOR) {
            return Err(EINVAL);
        }
        let smm = ev.flags & abi::KVM_VCPUEVENT_VALID_SMM != 0;
        self.event = None;
        self.queued_irq = None;
        if exception {
            self.event = Some(Event::Exception {
                vector: ev.exception.nr,
                error_code: (ev.exception.has_error_code != 0).then_some(ev.exception.error_code),
            });
        } else if ev.nmi.injected != 0 {
            self.event = Some(Event::Nmi);
        }
        if ev.interrupt.injected != 0 {
            if self.event.is_none() {
                self.event = Some(Event::Interrupt(ev.interrupt.nr));
            } else {
                self.queued_irq = Some(ev.interrupt.nr);
            }
        }
        if ev.flags & abi::KVM_VCPUEVENT_VALID_SHADOW != 0 {
            self.interrupt_shadow = ev.interrupt.shadow != 0;
        }
        // An NMI both injected and behind an exception waits its turn.
        let nmi_behind = u32::from(exception && ev.nmi.injected != 0);
        if ev.flags & abi::KVM_VCPUEVENT_VALID_NMI_PENDING != 0 {
            self.nmi.set_pending(u32::from(ev.nmi.pending) + nmi_behind);
        } else if nmi_behind != 0 {
            self.nmi.queue(1);
        }
        self.nmi.blocked = ev.nmi.masked != 0;
        if smm {
            if self.smm.active != (ev.smi.smm != 0) {
                // The other address space: nothing cached stays valid, and
                // PAE's PDPTEs are read again from it (KVM's `kvm_smm_changed`).
                self.sregs_changed(true);
                self.smm.inside_nmi = false;
            }
            self.smm.active = ev.smi.smm != 0;
            self.smm.pending = ev.smi.pending != 0;
            if self.smm.active {
                self.smm.inside_nmi = ev.smi.smm_inside_nmi != 0;
            }
            if let Some(link) = self.irq.as_ref() {
                link.apic.set_init(ev.smi.latched_init != 0);
            }
        }
        Ok(())
    }
}
