// SPDX-License-Identifier: GPL-2.0

//! Speculative-execution hygiene around guest entry and exit: which of
//! the host kernel's mitigations rkvm must carry out itself, because a
//! guest's code ran on this CPU in between.
//!
//! The host decides, rkvm follows: at load, `sys::spec` reads the host's
//! mitigation state (`X86_FEATURE_*` set by `arch/x86/kernel/cpu/bugs.c`,
//! `X86_BUG_*`, `mitigations=`) into [`host`] bits, and [`Plan::new`]
//! turns them into the steps the backends take, the way KVM's
//! `vmenter.S` and `svm.c`/`vmx.c` key the same steps on the same
//! features. Pure logic: unit-tested on the host.
//!
//! Each step and the advisory it answers:
//! - **RSB filling after VM exit** (Spectre v2 / RSB underflow and
//!   poisoning, Intel SA-00088, AMD "Software Techniques for Managing
//!   Speculation"; `X86_FEATURE_RSB_VMEXIT`): the guest's return-stack
//!   entries must not steer the host's first `ret`s, so 32 benign entries
//!   are pushed before any. **PBRSB** (Intel SA-00706,
//!   `X86_FEATURE_RSB_VMEXIT_LITE`, VMX only): with eIBRS one call must
//!   retire before the first `ret`.
//! - **VERW before entry** (MDS SA-00233, TAA SA-00270, MMIO stale data
//!   SA-00615, AMD TSA AMD-SB-7029; `X86_FEATURE_CLEAR_CPU_BUF_VM`): CPU
//!   buffers are cleared right before VMRUN or VMLAUNCH so the guest cannot
//!   sample the host's data.
//! - **L1D flush before entry** (L1TF / Foreshadow-VMM, SA-00161;
//!   `X86_BUG_L1TF`, VMX only): the L1 data cache is flushed before every
//!   entry (KVM's `l1tf=flush` mode, unconditionally; KVM's default
//!   flushes only after some exits), through IA32_FLUSH_CMD where the CPU
//!   has it, else in software by reading a 64 KiB buffer, twice the L1D of
//!   every affected CPU, line by line (`L1dFlush::Software`, as KVM).
//! - **IBPB between guests** (Spectre v2 user, SA-00088; `X86_FEATURE_IBPB`
//!   unless `mitigations=off`): a CPU that switches from one guest's VMCB
//!   or VMCS to another's flushes branch predictions (`LastGuest`).
//! - **IBPB after every exit** (AMD SRSO, AMD-SB-7005;
//!   `X86_FEATURE_IBPB_ON_VMEXIT`): the host's chosen SRSO mitigation for
//!   guests.
//! - **IBPB before returning to user space** (VMSCAPE, AMD-SB-7046 /
//!   Intel SA-01250; `X86_FEATURE_IBPB_EXIT_TO_USER`): after a guest ran,
//!   the kernel flushes predictions before the VMM's user space runs
//!   (`x86_ibpb_exit_to_user`).
//! - **Branch history clearing after exit** (Branch History Injection,
//!   SA-00598; `X86_FEATURE_CLEAR_BHB_VMEXIT`, VMX only): where the host
//!   clears the branch history with a software sequence instead of
//!   setting `BHI_DIS_S`, rkvm runs Intel's published sequence
//!   (`rkvm_clear_bhb` in `vmexit.S`; the kernel's own is exported to the
//!   KVM modules only). With `BHI_DIS_S` the host's SPEC_CTRL keeps it set
//!   in the guest too (see SPEC_CTRL below).
//! - **Return untraining and call-depth reset after exit** (Retbleed
//!   SA-00702 / AMD-SB-1037, SRSO AMD-SB-7005; `X86_FEATURE_UNRET`,
//!   `X86_FEATURE_SRSO_ALIAS`, `X86_FEATURE_CALL_DEPTH`): before the first
//!   unbalanced `ret` after the guest ran, the host's return-thunk
//!   predictions are untrained with the kernel's exported untraining
//!   sequence and its call-depth counter is reset, as KVM's `vmenter.S`
//!   does (`rkvm_untrain_ret_vm` in `vmexit.S`, built from the kernel's
//!   own alternatives, so the host's boot-time choice applies).
//! - **SPEC_CTRL** (IBRS, STIBP, SSBD, BHI_DIS_S): a guest can neither
//!   read nor write it (every MSR is intercepted and rkvm does not offer
//!   it), so the host's value stays in force while the guest runs. On AMD
//!   CPUs with V_SPEC_CTRL, VMRUN loads the guest's value from the VMCB
//!   and #VMEXIT restores the host's: the guest runs with its own value,
//!   0 as at reset since it cannot write it. That is KVM's behaviour for a
//!   guest that has not written SPEC_CTRL, so nothing is missing.

/// Host mitigation state, as bits (read by `sys::spec::host_bits`).
pub(crate) mod host {
    /// `X86_FEATURE_RSB_VMEXIT`: fill the whole RSB after VM exit.
    pub(crate) const RSB_VMEXIT: u32 = 1 << 0;
    /// `X86_FEATURE_RSB_VMEXIT_LITE`: one RSB entry after exit (PBRSB).
    pub(crate) const RSB_VMEXIT_LITE: u32 = 1 << 1;
    /// `X86_FEATURE_CLEAR_CPU_BUF_VM`: VERW before entry.
    pub(crate) const CLEAR_CPU_BUF_VM: u32 = 1 << 2;
    /// `X86_FEATURE_CLEAR_BHB_VMEXIT`: clear branch history after exit.
    pub(crate) const CLEAR_BHB_VMEXIT: u32 = 1 << 3;
    /// `X86_FEATURE_IBPB_ON_VMEXIT`: IBPB after every exit (SRSO).
    pub(crate) const IBPB_ON_VMEXIT: u32 = 1 << 4;
    /// `X86_FEATURE_IBPB_EXIT_TO_USER`: IBPB before user space (VMSCAPE).
    pub(crate) const IBPB_EXIT_TO_USER: u32 = 1 << 5;
    /// `X86_BUG_L1TF`, and mitigations are not off.
    pub(crate) const L1TF: u32 = 1 << 6;
    /// `X86_FEATURE_FLUSH_L1D`: IA32_FLUSH_CMD exists.
    pub(crate) const FLUSH_L1D: u32 = 1 << 7;
    /// `X86_FEATURE_IBPB`, and mitigations are not off.
    pub(crate) const IBPB: u32 = 1 << 8;
    /// `X86_FEATURE_UNRET` or `X86_FEATURE_SRSO_ALIAS`: return-thunk
    /// untraining at kernel entries (Retbleed, SRSO).
    pub(crate) const UNRET: u32 = 1 << 9;
    /// `X86_FEATURE_CALL_DEPTH`: call-depth tracking (Retbleed, Intel).
    pub(crate) const CALL_DEPTH: u32 = 1 << 10;
}

/// How much of the return stack buffer to overwrite after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RsbFill {
    None,
    /// One entry, retired before the first `ret` (PBRSB).
    One,
    /// All 32 entries.
    Full,
}

/// How the L1 data cache is flushed before entry (L1TF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L1dFlush {
    None,
    /// One write to IA32_FLUSH_CMD.
    Msr,
    /// Reading a buffer twice the cache's size (the CPU has no FLUSH_CMD).
    Software,
}

/// The steps a backend takes around each entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) rsb_fill: RsbFill,
    pub(crate) verw_before_entry: bool,
    pub(crate) l1d_flush: L1dFlush,
    pub(crate) ibpb_between_guests: bool,
    pub(crate) ibpb_after_exit: bool,
    pub(crate) ibpb_before_user: bool,
    /// Branch history clearing sequence after exit (BHI).
    pub(crate) bhb_clear_after_exit: bool,
    /// Return untraining and call-depth reset after exit.
    pub(crate) untrain_ret_after_exit: bool,
}

impl Plan {
    /// The steps the host's mitigation state `bits` ([`host`]) asks for,
    /// for SVM (`vmx` false) or VMX.
    pub(crate) fn new(bits: u32, vmx: bool) -> Self {
        let has = |b| bits & b != 0;
        let rsb_fill = if has(host::RSB_VMEXIT) {
            RsbFill::Full
        } else if vmx && has(host::RSB_VMEXIT_LITE) {
            RsbFill::One
        } else {
            RsbFill::None
        };
        let l1d_flush = match (vmx && has(host::L1TF), has(host::FLUSH_L1D)) {
            (false, _) => L1dFlush::None,
            (true, true) => L1dFlush::Msr,
            (true, false) => L1dFlush::Software,
        };
        Plan {
            rsb_fill,
            verw_before_entry: has(host::CLEAR_CPU_BUF_VM),
            l1d_flush,
            ibpb_between_guests: has(host::IBPB),
            ibpb_after_exit: has(host::IBPB_ON_VMEXIT) && has(host::IBPB),
            ibpb_before_user: has(host::IBPB_EXIT_TO_USER),
            bhb_clear_after_exit: vmx && has(host::CLEAR_BHB_VMEXIT),
            untrain_ret_after_exit: has(host::UNRET) || has(host::CALL_DEPTH),
        }
    }

    /// Every step that needs no CPU feature, on top of what `bits` asks
    /// for: the full RSB fill, VERW, the call to the return untraining
    /// (whose body is the host's alternatives, empty on a host without
    /// them), and on VMX the branch history clearing and, unless the CPU
    /// flushes through the MSR, the software L1D flush. The test suite
    /// loads rkvm so once, because the test kernel runs without CPU
    /// mitigations and would otherwise never execute them
    /// (`rkvm.speculation_test=1`).
    pub(crate) fn with_every_sequence(self, vmx: bool) -> Self {
        Plan {
            rsb_fill: RsbFill::Full,
            verw_before_entry: true,
            untrain_ret_after_exit: true,
            bhb_clear_after_exit: vmx,
            l1d_flush: match self.l1d_flush {
                L1dFlush::None if vmx => L1dFlush::Software,
                other => other,
            },
            ..self
        }
    }

    /// The steps, for the load message: names separated by ", ", or
    /// "none".
    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.rsb_fill == RsbFill::Full, "RSB fill after exit"),
            (
                self.rsb_fill == RsbFill::One,
                "one RSB entry after exit (PBRSB)",
            ),
            (self.verw_before_entry, "VERW before entry"),
            (self.l1d_flush == L1dFlush::Msr, "L1D flush before entry"),
            (
                self.l1d_flush == L1dFlush::Software,
                "software L1D flush before entry",
            ),
            (self.ibpb_between_guests, "IBPB between guests"),
            (self.ibpb_after_exit, "IBPB after exit (SRSO)"),
            (self.ibpb_before_user, "IBPB before user space (VMSCAPE)"),
            (
                self.untrain_ret_after_exit,
                "return untraining after exit (Retbleed/SRSO)",
            ),
            (
                self.bhb_clear_after_exit,
                "branch history clearing after exit (BHI)",
            ),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }
}
