// SPDX-License-Identifier: GPL-2.0

//! `KVM_SET_GUEST_DEBUG`: the VMM debugging its guest (a gdbstub), as KVM
//! defines it (`Documentation/virt/kvm/api.rst`, 4.52): single-stepping,
//! software breakpoints (the guest's INT3 exits to the VMM instead of
//! reaching the guest), and injecting #DB or #BP into the guest; each stop
//! is a `KVM_EXIT_DEBUG` with the vector and the linear address of the
//! instruction (`kvm_run.debug.arch`).
//!
//! Single-stepping sets RFLAGS.TF for every entry (the guest does not see
//! it: it is cleared again at every exit), so the processor traps with
//! #DB after one instruction, which rkvm intercepts (SDM Vol. 3B 18.3.1.4;
//! APM Vol. 2 13.1.3). An instruction rkvm emulates instead of the
//! processor (CPUID, an MSR, port I/O...) raises no trap: rkvm reports the
//! step itself once it has moved the guest past it, with DR6.BS, as KVM's
//! `kvm_skip_emulated_instruction`.
//!
//! Hardware breakpoints (`KVM_GUESTDBG_USE_HW_BP`: the VMM's DR0-DR3 and
//! DR7 loaded for the guest) are not implemented: refused with `EINVAL`,
//! and not among the flags `KVM_CAP_SET_GUEST_DEBUG2` lists, which is how
//! KVM tells a VMM what it can use.

use crate::abi;

/// The flags rkvm implements (`KVM_CAP_SET_GUEST_DEBUG2`'s answer). KVM's
/// `KVM_GUESTDBG_VALID_MASK` also has `KVM_GUESTDBG_USE_HW_BP`.
pub(crate) const SUPPORTED: u32 = abi::KVM_GUESTDBG_ENABLE
    | abi::KVM_GUESTDBG_SINGLESTEP
    | abi::KVM_GUESTDBG_USE_SW_BP
    | abi::KVM_GUESTDBG_INJECT_DB
    | abi::KVM_GUESTDBG_INJECT_BP
    | abi::KVM_GUESTDBG_BLOCKIRQ;

/// DR6 bits that read as 1 when no debug condition is recorded (KVM's
/// `DR6_ACTIVE_LOW`; RTM's bit 16 is active-low too). SDM Vol. 3B 18.2.3.
pub(crate) const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
/// DR6.BS: the #DB is a single-step trap.
pub(crate) const DR6_BS: u64 = 1 << 14;

/// What the VMM asked for, as the run loop uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestDebug {
    /// Trap after every instruction (`KVM_GUESTDBG_SINGLESTEP`).
    pub(crate) single_step: bool,
    /// The guest's #BP exits (`KVM_GUESTDBG_USE_SW_BP`).
    pub(crate) sw_breakpoints: bool,
    /// No new interrupt or NMI is injected while this is on
    /// (`KVM_GUESTDBG_BLOCKIRQ`), as KVM's `kvm_check_and_inject_events`:
    /// a single step does not land in a handler.
    pub(crate) block_irq: bool,
}

/// What to inject along with the new setting (`KVM_GUESTDBG_INJECT_DB`,
/// `KVM_GUESTDBG_INJECT_BP`; #DB wins if both, as KVM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inject {
    Debug,
    Breakpoint,
}

/// Reads `kvm_guest_debug.control` as KVM's
/// `kvm_arch_vcpu_ioctl_set_guest_debug`: without `KVM_GUESTDBG_ENABLE`
/// nothing is on (but an injection still happens); bits KVM does not
/// know are ignored, as KVM ignores them. `None` (`EINVAL`) for
/// `KVM_GUESTDBG_USE_HW_BP` with `KVM_GUESTDBG_ENABLE`, which rkvm does
/// not implement.
pub(crate) fn parse(control: u32) -> Option<(GuestDebug, Option<Inject>)> {
    let enable = control & abi::KVM_GUESTDBG_ENABLE != 0;
    if enable && control & abi::KVM_GUESTDBG_USE_HW_BP != 0 {
        return None;
    }
    let inject = if control & abi::KVM_GUESTDBG_INJECT_DB != 0 {
        Some(Inject::Debug)
    } else if control & abi::KVM_GUESTDBG_INJECT_BP != 0 {
        Some(Inject::Breakpoint)
    } else {
        None
    };
    let on = |flag: u32| enable && control & flag != 0;
    let debug = GuestDebug {
        single_step: on(abi::KVM_GUESTDBG_SINGLESTEP),
        sw_breakpoints: on(abi::KVM_GUESTDBG_USE_SW_BP),
        block_irq: on(abi::KVM_GUESTDBG_BLOCKIRQ),
    };
    Some((debug, inject))
}
