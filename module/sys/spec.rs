// SPDX-License-Identifier: GPL-2.0

//! The host's speculation mitigations (read once), and the steps of
//! `crate::spec::Plan` that are not part of the world-switch assembly
//! (`sys::svm::vmrun`, `sys::vmx::CurrentVmcs::launch` take the rest as
//! [`EntryFlags`]).

use super::cpu::wrmsr;
use crate::spec::{L1dFlush, Plan, RsbFill};
use kernel::alloc::{flags::GFP_KERNEL, KBox};

extern "C" {
    fn rkvm_host_spec_bits() -> u32;
    fn rkvm_ibpb_before_user();
    /// `vmexit.S`: the host's return untraining and call-depth reset.
    /// Called from the world-switch assembly only; clobbers RAX.
    pub(crate) fn rkvm_untrain_ret_vm();
    /// `vmexit.S`: Intel's branch history clearing sequence. Called from
    /// the world-switch assembly only; clobbers RAX and RCX.
    pub(crate) fn rkvm_clear_bhb();
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

/// The size of the software L1D flush: twice the 32 KiB L1 data cache of
/// every CPU affected by L1TF, so that every line of it is replaced.
const L1D_FLUSH_BYTES: usize = 64 * 1024;

/// The buffer a software L1D flush reads (L1TF on a CPU without
/// IA32_FLUSH_CMD). Physically contiguous (kmalloc of this size comes from
/// the page allocator), so that it covers every cache set evenly; shared
/// by every CPU, as it is only read.
pub(crate) struct L1dFlushBuffer(KBox<[u8; L1D_FLUSH_BYTES]>);

impl L1dFlushBuffer {
    /// The buffer, if `plan` flushes in software.
    pub(crate) fn for_plan(plan: &Plan) -> Result<Option<Self>, kernel::alloc::AllocError> {
        if plan.l1d_flush != L1dFlush::Software {
            return Ok(None);
        }
        Ok(Some(L1dFlushBuffer(KBox::zeroed(GFP_KERNEL)?)))
    }

    /// Replaces the contents of this CPU's L1 data cache with the buffer:
    /// first one read per page, so that the second pass takes no TLB miss
    /// half-way, then a serializing CPUID, then one read per 64-byte line,
    /// then LFENCE so that the guest does not start before the last read.
    pub(crate) fn flush(&self) {
        const PAGE: usize = 4096;
        const LINE: usize = 64;
        let base = self.0.as_ptr();
        for offset in (0..L1D_FLUSH_BYTES).step_by(PAGE) {
            // SAFETY: `offset` is inside the buffer; a volatile read is never elided.
            unsafe { core::ptr::read_volatile(base.add(offset)) };
        }
        super::cpu::cpuid(0, 0);
        for offset in (0..L1D_FLUSH_BYTES).step_by(LINE) {
            // SAFETY: As above.
            unsafe { core::ptr::read_volatile(base.add(offset)) };
        }
        // SAFETY: LFENCE only orders execution.
        unsafe { core::arch::asm!("lfence", options(nostack, preserves_flags)) };
    }
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
    /// Call `rkvm_untrain_ret_vm` after the exit (Retbleed, SRSO).
    pub(crate) const UNTRAIN_RET: u64 = 1 << 3;
    /// Call `rkvm_clear_bhb` after the exit (BHI).
    pub(crate) const CLEAR_BHB: u64 = 1 << 4;
    /// VMX only: enter with VMRESUME, not VMLAUNCH (the VMCS was launched
    /// and has not been cleared since). Not a speculation step: the world
    /// switch reads it from the same word.
    pub(crate) const RESUME: u64 = 1 << 5;

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
        if plan.untrain_ret_after_exit {
            f |= Self::UNTRAIN_RET;
        }
        if plan.bhb_clear_after_exit {
            f |= Self::CLEAR_BHB;
        }
        EntryFlags(f)
    }

    /// These flags, entering with VMRESUME if `resume`.
    pub(crate) fn resuming(self, resume: bool) -> Self {
        if resume {
            EntryFlags(self.0 | Self::RESUME)
        } else {
            self
        }
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
/// retires before any `ret`. Then, if `{untrain_ret}` is set, the call to
/// `{untrain}` (return untraining, call-depth reset), and if `{clear_bhb}`
/// is set, the call to `{bhb}` (branch history clearing). Then the flags
/// are popped. Runs before the first `ret` after the guest ran: until then
/// the RSB holds the guest's entries. Each call into the fill is marked as
/// intra-function for objtool, as the kernel's own `__FILL_RETURN_SLOT`
/// is. Uses RCX; RAX is kept (VMX returns its result in it).
macro_rules! after_exit_and_pop_flags {
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
            "push rax\n",
            "test qword ptr [rsp + 8], {untrain_ret}\n",
            "jz 77f\n",
            "call {untrain}\n",
            "77:\n",
            "test qword ptr [rsp + 8], {clear_bhb}\n",
            "jz 78f\n",
            "call {bhb}\n",
            "78:\n",
            "pop rax\n",
            "add rsp, 8\n",
        )
    };
}
pub(crate) use after_exit_and_pop_flags;
