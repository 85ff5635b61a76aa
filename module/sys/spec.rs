// SPDX-License-Identifier: GPL-2.0

//! The host's speculation mitigations (read once), and the steps of
//! `crate::spec::Plan` that are not part of the world-switch assembly
//! (`sys::svm::vmrun`, `sys::vmx::CurrentVmcs::launch` take the rest as
//! [`EntryFlags`]).

use super::cpu::wrmsr;
use crate::spec::{Plan, RsbFill};

extern "C" {
    fn rkvm_host_spec_bits() -> u32;
    fn rkvm_ibpb_before_user();
}

/// IA32_PRED_CMD and its IBPB bit. SDM Vol. 4 Table 2-2.
const MSR_PRED_CMD: u32 = 0x49;
const PRED_CMD_IBPB: u64 = 1;
/// IA32_FLUSH_CMD and its L1D_FLUSH bit. SDM Vol. 4 Table 2-2.
const MSR_FLUSH_CMD: u32 = 0x10b;
const FLUSH_CMD_L1D: u64 = 1;

/// The host's mitigation state as `crate::spec::host` bits.
pub(crate) fn host_bits() -> u32 {
    // SAFETY: Reads boot CPU feature bits and the mitigations= setting; no preconditions.
    unsafe { rkvm_host_spec_bits() }
}

/// An indirect branch prediction barrier on this CPU. Only called where
/// the plan asks for one, which it does only if the CPU has IBPB.
pub(crate) fn ibpb() {
    // SAFETY: PRED_CMD.IBPB only discards branch predictions; a CPU without it refuses
    // the write (#GP, caught).
    let _ = unsafe { wrmsr(MSR_PRED_CMD, PRED_CMD_IBPB) };
}

/// Writes back and invalidates this CPU's L1 data cache (L1TF). Only
/// called where the plan asks for it, which it does only if the CPU has
/// IA32_FLUSH_CMD.
pub(crate) fn l1d_flush() {
    // SAFETY: FLUSH_CMD.L1D_FLUSH only flushes the L1 data cache; a CPU without the MSR
    // refuses the write (#GP, caught).
    let _ = unsafe { wrmsr(MSR_FLUSH_CMD, FLUSH_CMD_L1D) };
}

/// VMSCAPE: the kernel flushes branch predictions before this CPU next
/// returns to user space (a guest ran on it).
pub(crate) fn ibpb_before_user() {
    // SAFETY: Sets this CPU's flag for the exit-to-user path; the caller runs with
    // interrupts off, on the CPU the guest ran on.
    unsafe { rkvm_ibpb_before_user() };
}

/// The steps of a plan that the world-switch assembly takes, as bits it
/// tests on its stack.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EntryFlags(pub(crate) u64);

impl EntryFlags {
    /// VERW right before VMRUN or VMLAUNCH.
    pub(crate) const VERW: u64 = 1 << 0;
    /// Overwrite all 32 RSB entries after the exit.
    pub(crate) const RSB_FULL: u64 = 1 << 1;
    /// Overwrite one RSB entry after the exit (PBRSB).
    pub(crate) const RSB_ONE: u64 = 1 << 2;

    pub(crate) fn of(plan: &Plan) -> Self {
        let mut f = 0;
        if plan.verw_before_entry {
            f |= Self::VERW;
        }
        f |= match plan.rsb_fill {
            RsbFill::Full => Self::RSB_FULL,
            RsbFill::One => Self::RSB_ONE,
            RsbFill::None => 0,
        };
        EntryFlags(f)
    }
}

/// A selector for VERW's memory operand: any valid writable data segment
/// works, the kernel's data segment is the fastest (`__KERNEL_DS`, GDT
/// entry 3). Only the memory-operand form clears the buffers.
pub(crate) static VERW_SELECTOR: u16 = 3 * 8;

/// The end of both world switches, with the entry flags at `[rsp]`: if
/// `{rsb_full}` is set, overwrite all 32 return-stack entries with
/// harmless ones (16 rounds of two calls, each return address leading to
/// an `int3` speculation trap, the stack put back after each round); if
/// `{rsb_one}` is set, one such entry, with an LFENCE so that the call
/// retires before any `ret`. Then the flags are popped. Runs before the
/// first `ret` after the guest ran: until then the RSB holds the guest's
/// entries. Each call is marked as intra-function for objtool, as the
/// kernel's own `__FILL_RETURN_SLOT` is. Uses RCX.
macro_rules! fill_rsb_and_pop_flags {
    () => {
        concat!(
            "test qword ptr [rsp], {rsb_full}\n",
            "jz 75f\n",
            "mov ecx, 16\n",
            "70:\n",
            "711:\n",
            "call 71f\n",
            ".pushsection .discard.annotate_insn, \"M\", @progbits, 8\n",
            ".long 711b - ., 7\n",
            ".popsection\n",
            "int3\n",
            "71:\n",
            "721:\n",
            "call 72f\n",
            ".pushsection .discard.annotate_insn, \"M\", @progbits, 8\n",
            ".long 721b - ., 7\n",
            ".popsection\n",
            "int3\n",
            "72:\n",
            "add rsp, 16\n",
            "dec ecx\n",
            "jnz 70b\n",
            "lfence\n",
            "75:\n",
            "test qword ptr [rsp], {rsb_one}\n",
            "jz 76f\n",
            "731:\n",
            "call 73f\n",
            ".pushsection .discard.annotate_insn, \"M\", @progbits, 8\n",
            ".long 731b - ., 7\n",
            ".popsection\n",
            "int3\n",
            "73:\n",
            "add rsp, 8\n",
            "lfence\n",
            "76:\n",
            "add rsp, 8\n",
        )
    };
}
pub(crate) use fill_rsb_and_pop_flags;
