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
//! Hardware breakpoints (`KVM_GUESTDBG_USE_HW_BP`) are the VMM's: its
//! DR0-DR3 and DR7 (`kvm_guest_debug.arch.debugreg`) are what the
//! processor holds while the guest runs, in place of the guest's own
//! (which rkvm never loads: docs/abi.md), so an instruction fetch or a
//! data access matching one raises #DB, which exits to the VMM with DR6
//! saying which (B0-B3). SDM Vol. 3B 18.2, 18.3.1.

use crate::abi;

/// The flags rkvm implements (`KVM_CAP_SET_GUEST_DEBUG2`'s answer): KVM's
/// `KVM_GUESTDBG_VALID_MASK`.
pub(crate) const SUPPORTED: u32 = abi::KVM_GUESTDBG_ENABLE
    | abi::KVM_GUESTDBG_SINGLESTEP
    | abi::KVM_GUESTDBG_USE_SW_BP
    | abi::KVM_GUESTDBG_USE_HW_BP
    | abi::KVM_GUESTDBG_INJECT_DB
    | abi::KVM_GUESTDBG_INJECT_BP
    | abi::KVM_GUESTDBG_BLOCKIRQ;

/// DR7's enable bits for the four breakpoints (L0, G0 ... L3, G3). SDM
/// Vol. 3B 18.2.4.
const DR7_ENABLES: u64 = 0xff;
/// DR7's bit 10, reserved and always 1.
pub(crate) const DR7_FIXED: u64 = 1 << 10;

/// The VMM's hardware breakpoints: DR0-DR3 and the DR7 that enables them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HwBreakpoints {
    pub(crate) addr: [u64; 4],
    pub(crate) dr7: u64,
}

impl HwBreakpoints {
    /// Whether any breakpoint is enabled: only then are DR0-DR3 loaded for
    /// the guest (KVM's `KVM_DEBUGREG_BP_ENABLED`).
    pub(crate) fn any_enabled(&self) -> bool {
        self.dr7 & DR7_ENABLES != 0
    }
}

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
    /// The VMM's breakpoints (`KVM_GUESTDBG_USE_HW_BP`): every #DB then
    /// exits to it.
    pub(crate) hw: Option<HwBreakpoints>,
}

impl GuestDebug {
    /// Whether the guest's #DB goes to the VMM (single steps and hardware
    /// breakpoints), as KVM's `db_interception` decides.
    pub(crate) fn owns_debug_exceptions(&self) -> bool {
        self.single_step || self.hw.is_some()
    }
}

/// What to inject along with the new setting (`KVM_GUESTDBG_INJECT_DB`,
/// `KVM_GUESTDBG_INJECT_BP`; #DB wins if both, as KVM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inject {
    Debug,
    Breakpoint,
}

/// Reads `kvm_guest_debug` (its `control` and `arch.debugreg`) as KVM's
/// `kvm_arch_vcpu_ioctl_set_guest_debug`: without `KVM_GUESTDBG_ENABLE`
/// nothing is on (but an injection still happens); bits KVM does not
/// know are ignored, as KVM ignores them; with `KVM_GUESTDBG_USE_HW_BP`,
/// DR0-DR3 are `debugreg[0..4]` and DR7 `debugreg[7]` (5 and 6 unused).
/// `None` (`EINVAL`) for a DR7 with bits in its upper half, which no
/// processor takes (MOV to DR7 would #GP, and VMRUN or VM entry fail
/// with it); KVM does not check and then fails the entry.
pub(crate) fn parse(control: u32, debugreg: &[u64; 8]) -> Option<(GuestDebug, Option<Inject>)> {
    let enable = control & abi::KVM_GUESTDBG_ENABLE != 0;
    let hw = (enable && control & abi::KVM_GUESTDBG_USE_HW_BP != 0).then(|| HwBreakpoints {
        addr: [debugreg[0], debugreg[1], debugreg[2], debugreg[3]],
        dr7: debugreg[7] | DR7_FIXED,
    });
    if hw.is_some_and(|h| h.dr7 >> 32 != 0) {
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
        hw,
    };
    Some((debug, inject))
}
