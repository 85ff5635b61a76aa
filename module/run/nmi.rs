// SPDX-License-Identifier: GPL-2.0

//! NMIs: from `KVM_NMI`, and from the in-kernel APICs (an ICR, MSI or
//! IOAPIC message with delivery mode NMI), into the guest, as KVM's
//! `process_nmi` and `inject_pending_event` do it.
//!
//! An NMI cannot be masked by IF, but it blocks further NMIs from its
//! delivery until the handler's IRET (SDM Vol. 3A 6.7.1). At most two
//! wait: one more may arrive while one is being handled, and further ones
//! merge (KVM's limit of `nmi_pending`). One waiting NMI goes in before
//! any external interrupt, once nothing else is being delivered, NMIs are
//! not blocked and the guest is not in an interrupt shadow.
//!
//! Who knows that NMIs are blocked differs per vendor:
//! - VMX with virtual NMIs keeps it in the guest's interruptibility state:
//!   an injected NMI sets it, the guest's IRET clears it, each exit reports
//!   it, and NMI-window exiting ends the guest when an NMI may go in;
//! - SVM keeps nothing: rkvm marks NMIs blocked when it injects one and
//!   intercepts IRET; after that IRET exit the guest runs the IRET without
//!   the intercept, and NMIs are allowed again at the first exit where RIP
//!   has moved past it (KVM's `awaiting_iret_completion`). SVM has no NMI
//!   window: an NMI waiting behind a blocked one goes in at the next exit
//!   (KVM single-steps the IRET instead; docs/abi.md).

use super::Event;

/// The most NMIs that wait: one being handled and one latched.
const MAX_PENDING: u8 = 2;

/// One vCPU's NMIs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NmiState {
    /// NMIs waiting to go in.
    pending: u8,
    /// An NMI was delivered and its handler has not executed IRET.
    pub(super) blocked: bool,
    /// SVM: the guest's IRET was intercepted at this RIP; NMIs are
    /// allowed again once the guest is seen past it.
    iret_at: Option<u64>,
}

impl NmiState {
    /// Another NMI arrived: it waits, unless two already wait (or one
    /// waits behind a blocked one), as KVM's `process_nmi` limits them.
    pub(crate) fn queue(&mut self, n: u32) {
        let limit = if self.blocked { 1 } else { MAX_PENDING };
        let n = u8::try_from(n).unwrap_or(u8::MAX);
        self.pending = self.pending.saturating_add(n).min(limit);
    }

    /// How many NMIs wait (`KVM_GET_VCPU_EVENTS`).
    pub(super) fn pending(&self) -> u8 {
        self.pending
    }

    /// Sets how many NMIs wait (`KVM_SET_VCPU_EVENTS`), within the same
    /// limits as [`NmiState::queue`].
    pub(super) fn set_pending(&mut self, n: u32) {
        self.pending = 0;
        self.queue(n);
    }

    /// Nothing to do: no NMI waits, none is being handled, and (SVM) no
    /// IRET is being watched for. An exit leaves it so unless it
    /// interrupted an NMI's delivery.
    pub(super) fn quiet(&self) -> bool {
        self.pending == 0 && !self.blocked && self.iret_at.is_none()
    }

    /// Whether an NMI waits (it wakes a halted vCPU, whatever IF says).
    pub(crate) fn waiting(&self) -> bool {
        self.pending > 0
    }

    /// Before an entry: if an NMI may go in now (`event` free, not blocked,
    /// no interrupt shadow), it becomes `event`. `rip` is where the guest
    /// resumes. Returns whether an NMI still waits (the caller asks for an
    /// NMI window).
    pub(super) fn pick(&mut self, event: &mut Option<Event>, shadow: bool, rip: u64) -> bool {
        self.settle(rip);
        if self.pending == 0 {
            return false;
        }
        if event.is_none() && !self.blocked && !shadow {
            *event = Some(Event::Nmi);
            self.pending -= 1;
        }
        self.pending > 0
    }

    /// What the next entry tells the hardware: whether NMIs are blocked
    /// (never while an NMI is being injected: VMX refuses that entry), and
    /// whether to intercept IRET (SVM).
    pub(super) fn entry_flags(&self, inject: Option<Event>) -> (bool, bool) {
        let injecting = matches!(inject, Some(Event::Nmi));
        let blocked = self.blocked && !injecting;
        (
            blocked,
            (self.blocked || injecting) && self.iret_at.is_none(),
        )
    }

    /// After an exit: an NMI `injected` by the entry blocks NMIs (rkvm's
    /// view, for SVM); the hardware's view of the blocking replaces it
    /// where there is one (VMX); an NMI whose delivery the exit interrupted
    /// is not blocking yet (it is injected again).
    pub(super) fn exited(
        &mut self,
        injected: Option<Event>,
        hw_blocked: Option<bool>,
        interrupted: Option<Event>,
    ) {
        if matches!(injected, Some(Event::Nmi)) {
            self.blocked = true;
        }
        // The hardware's view counts only where it can differ from rkvm's:
        // NMIs were blocked (an IRET may have unblocked them) or one was just
        // delivered. Entered unblocked with no NMI, nothing in the guest can
        // block them (with virtual NMIs only an NMI's delivery does), as
        // KVM's `nmi_known_unmasked` assumes; Bochs's VMX was seen reporting
        // them blocked after an entry that unblocked them (after RSM).
        if let Some(b) = hw_blocked.filter(|_| self.blocked) {
            self.blocked = b;
        }
        if matches!(interrupted, Some(Event::Nmi)) {
            self.blocked = false;
            self.iret_at = None;
        }
    }

    /// SVM: NMIs are unblocked once the guest is seen past the IRET whose
    /// exit was at `iret_at` (`rip` is where it resumes now).
    pub(super) fn settle(&mut self, rip: u64) {
        if self.iret_at.is_some_and(|at| at != rip) {
            self.iret_at = None;
            self.blocked = false;
        }
    }

    /// SVM's IRET exit at `rip`: the guest runs it next without the
    /// intercept.
    pub(super) fn iret_seen(&mut self, rip: u64) {
        self.iret_at = Some(rip);
    }

    /// Blocks or unblocks NMIs, as entering SMM and RSM do (KVM's
    /// `set_nmi_mask`).
    pub(super) fn set_blocked(&mut self, blocked: bool) {
        self.blocked = blocked;
        self.iret_at = None;
    }

    /// INIT: nothing waits, nothing blocks (KVM's `kvm_vcpu_reset`).
    pub(super) fn reset(&mut self) {
        *self = NmiState::default();
    }
}
