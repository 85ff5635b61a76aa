// SPDX-License-Identifier: GPL-2.0

//! The guest registers a world switch loads and stores itself: the
//! general-purpose registers other than RSP (which the VMCB and the VMCS
//! hold), and CR2. Both world switches (`svm.rs`, `vmx.rs`) address this
//! block by field offset from their `asm!`.
//!
//! SVM keeps RAX and CR2 in the VMCB too (APM Vol. 2 15.5.1), so its world
//! switch leaves those two fields alone; VMX holds neither, so its world
//! switch loads and stores all of them.

use crate::abi::kvm_regs;

/// A guest's registers as the world switch sees them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GuestGprs {
    pub(crate) rax: u64,
    pub(crate) rbx: u64,
    pub(crate) rcx: u64,
    pub(crate) rdx: u64,
    pub(crate) rsi: u64,
    pub(crate) rdi: u64,
    pub(crate) rbp: u64,
    pub(crate) r8: u64,
    pub(crate) r9: u64,
    pub(crate) r10: u64,
    pub(crate) r11: u64,
    pub(crate) r12: u64,
    pub(crate) r13: u64,
    pub(crate) r14: u64,
    pub(crate) r15: u64,
    pub(crate) cr2: u64,
}

impl GuestGprs {
    /// The block for `regs` (all but RSP, RIP and RFLAGS) and `cr2`.
    pub(crate) fn from_kvm(r: &kvm_regs, cr2: u64) -> Self {
        Self {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            cr2,
        }
    }

    /// Writes the block's general-purpose registers back into `regs` (RSP,
    /// RIP and RFLAGS are left alone; CR2 is the caller's).
    pub(crate) fn write_into(&self, r: &mut kvm_regs) {
        r.rax = self.rax;
        r.rbx = self.rbx;
        r.rcx = self.rcx;
        r.rdx = self.rdx;
        r.rsi = self.rsi;
        r.rdi = self.rdi;
        r.rbp = self.rbp;
        r.r8 = self.r8;
        r.r9 = self.r9;
        r.r10 = self.r10;
        r.r11 = self.r11;
        r.r12 = self.r12;
        r.r13 = self.r13;
        r.r14 = self.r14;
        r.r15 = self.r15;
    }
}
