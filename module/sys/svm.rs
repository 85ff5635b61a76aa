// SPDX-License-Identifier: GPL-2.0

//! The SVM instructions: CLGI, STGI, and the world switch around VMRUN.
//!
//! The world switch is one `asm!` block, because between loading the
//! guest's segment state (VMLOAD) and getting the host's back, the CPU's
//! GS base is the guest's: no compiled code may run there (it could touch
//! per-CPU data through GS). APM Vol. 2 15.5 (VMRUN), 15.5.2 (VMLOAD and
//! VMSAVE), 15.17 (the global interrupt flag).

use super::spec::{
    after_exit_and_pop_flags, rkvm_clear_bhb, rkvm_untrain_ret_vm, EntryFlags, VERW_SELECTOR,
};
use core::arch::asm;
use core::mem::offset_of;

pub(crate) use super::gprs::GuestGprs;

/// Clears the global interrupt flag: from here until [`stgi`], no
/// interrupt, NMI or SMI is taken on this CPU. APM Vol. 2 15.17.
///
/// # Safety
///
/// SVM must be enabled on this CPU (EFER.SVME), and the caller must call
/// [`stgi`] before anything that needs interrupts.
#[inline(always)]
pub(crate) unsafe fn clgi() {
    // SAFETY: By the caller's guarantee SVM is on, so CLGI is defined; it only masks events.
    unsafe { asm!("clgi", options(nostack, nomem)) };
}

/// Sets the global interrupt flag again. APM Vol. 2 15.17.
///
/// # Safety
///
/// SVM must be enabled on this CPU (EFER.SVME).
#[inline(always)]
pub(crate) unsafe fn stgi() {
    // SAFETY: By the caller's guarantee SVM is on, so STGI is defined.
    unsafe { asm!("stgi", options(nostack, nomem)) };
}

/// Runs the guest of the VMCB at `vmcb_pa` until its next #VMEXIT.
///
/// In order: VMSAVE the host's hidden segment and syscall state (FS, GS,
/// TR, LDTR, KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK, SYSENTER_*) to
/// `host_save_pa`; VMLOAD the guest's from the VMCB; load the guest GPRs;
/// set RFLAGS.IF so that the host's IF saved by VMRUN lets physical
/// interrupts cause #VMEXIT (they stay pending: GIF is 0); VMRUN; then
/// everything backwards, ending with interrupts disabled again. VMRUN
/// itself saves and restores the rest of the host state (RSP, RIP, RFLAGS,
/// CR0/3/4, EFER, GDTR/IDTR, CS/SS/DS/ES) through VM_HSAVE_PA.
///
/// # Safety
///
/// - SVM is on for this CPU, with VM_HSAVE_PA set; interrupts are
///   disabled and GIF is clear ([`clgi`]); the caller stays on this CPU.
/// - `vmcb_pa` is the physical address of a valid, page-aligned VMCB that
///   passes VMRUN's checks or fails them cleanly (an invalid VMCB exits
///   with VMEXIT_INVALID, which is safe), and whose nested page tables map
///   only memory the guest may use.
/// - `host_save_pa` is a page-aligned physical page this CPU owns.
///
/// `flags` adds the speculation steps of `crate::spec::Plan` that belong
/// inside the switch: VERW right before VMRUN, and the RSB fill, return
/// untraining and branch history clearing before the first `ret` after it
/// ([`after_exit_and_pop_flags`]).
#[inline(always)]
pub(crate) unsafe fn vmrun(
    vmcb_pa: u64,
    host_save_pa: u64,
    gprs: &mut GuestGprs,
    flags: EntryFlags,
) {
    // #VMEXIT leaves the host's DR7 at 0x400 (every breakpoint off); a host using hardware
    // breakpoints (ptrace, perf) gets its DR7 back below. APM Vol. 2 15.7.2.
    let host_dr7: u64;
    // SAFETY: Reading DR7 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, dr7", out(reg) host_dr7, options(nomem, nostack)) };
    if host_dr7 != DR7_INIT {
        // No host breakpoint may fire while the guest's GS base is loaded.
        // SAFETY: Disables breakpoints; restored below.
        unsafe { asm!("mov dr7, {}", in(reg) DR7_INIT, options(nomem, nostack)) };
    }
    let gprs: *mut GuestGprs = gprs;
    // SAFETY: The caller guarantees the preconditions of VMSAVE, VMLOAD and VMRUN above.
    // RBX and RBP (which `asm!` may not name as operands) are saved on the stack; every
    // other register is declared clobbered. The stack is balanced at the end. No code but
    // this block runs while the guest's GS base is loaded.
    unsafe {
        asm!(
            // IF=1 well before VMRUN: an STI shadow reaching VMRUN would leak into the
            // guest's interrupt state on some AMD CPUs. GIF=0 keeps interrupts masked.
            "sti",
            // The entry flags, at [rsp + 40] until VMRUN and at [rsp] at the end.
            "push rcx",
            "push rbp",
            "push rbx",
            "push rsi",
            "push rdi",
            "push rax",
            "mov rax, rsi",
            "vmsave rax",
            "mov rax, [rsp]",
            "vmload rax",
            "mov rbx, [rdi + {rbx}]",
            "mov rcx, [rdi + {rcx}]",
            "mov rdx, [rdi + {rdx}]",
            "mov rsi, [rdi + {rsi}]",
            "mov rbp, [rdi + {rbp}]",
            "mov r8, [rdi + {r8}]",
            "mov r9, [rdi + {r9}]",
            "mov r10, [rdi + {r10}]",
            "mov r11, [rdi + {r11}]",
            "mov r12, [rdi + {r12}]",
            "mov r13, [rdi + {r13}]",
            "mov r14, [rdi + {r14}]",
            "mov r15, [rdi + {r15}]",
            "mov rdi, [rdi + {rdi}]",
            // Clear CPU buffers as late as possible (memory-operand VERW).
            "test qword ptr [rsp + 40], {verw}",
            "jz 5f",
            "verw word ptr [rip + {verw_sel}]",
            "5:",
            "vmrun rax",
            "cli",
            "vmsave rax",
            // Stack: guest RDI (pushed next), VMCB pa, GPR pointer, host save pa, RBX, RBP.
            "push rdi",
            "mov rdi, [rsp + 16]",
            "mov [rdi + {rbx}], rbx",
            "mov [rdi + {rcx}], rcx",
            "mov [rdi + {rdx}], rdx",
            "mov [rdi + {rsi}], rsi",
            "mov [rdi + {rbp}], rbp",
            "mov [rdi + {r8}], r8",
            "mov [rdi + {r9}], r9",
            "mov [rdi + {r10}], r10",
            "mov [rdi + {r11}], r11",
            "mov [rdi + {r12}], r12",
            "mov [rdi + {r13}], r13",
            "mov [rdi + {r14}], r14",
            "mov [rdi + {r15}], r15",
            "pop rax",
            "mov [rdi + {rdi}], rax",
            // Leave no guest value in a register the host might speculate on.
            "xor ecx, ecx",
            "xor edx, edx",
            "xor esi, esi",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            "add rsp, 16",
            "pop rax",
            "vmload rax",
            "pop rbx",
            "pop rbp",
            after_exit_and_pop_flags!(),
            verw = const EntryFlags::VERW,
            rsb_full = const EntryFlags::RSB_FULL,
            rsb_one = const EntryFlags::RSB_ONE,
            untrain_ret = const EntryFlags::UNTRAIN_RET,
            clear_bhb = const EntryFlags::CLEAR_BHB,
            untrain = sym rkvm_untrain_ret_vm,
            bhb = sym rkvm_clear_bhb,
            verw_sel = sym VERW_SELECTOR,
            rbx = const offset_of!(GuestGprs, rbx),
            rcx = const offset_of!(GuestGprs, rcx),
            rdx = const offset_of!(GuestGprs, rdx),
            rsi = const offset_of!(GuestGprs, rsi),
            rdi = const offset_of!(GuestGprs, rdi),
            rbp = const offset_of!(GuestGprs, rbp),
            r8 = const offset_of!(GuestGprs, r8),
            r9 = const offset_of!(GuestGprs, r9),
            r10 = const offset_of!(GuestGprs, r10),
            r11 = const offset_of!(GuestGprs, r11),
            r12 = const offset_of!(GuestGprs, r12),
            r13 = const offset_of!(GuestGprs, r13),
            r14 = const offset_of!(GuestGprs, r14),
            r15 = const offset_of!(GuestGprs, r15),
            inout("rax") vmcb_pa => _,
            inout("rsi") host_save_pa => _,
            inout("rdi") gprs => _,
            inout("rcx") flags.0 => _,
            out("rdx") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
        );
    }
    if host_dr7 != DR7_INIT {
        // The host uses breakpoints: VMRUN loaded the guest's DR6, which #VMEXIT
        // leaves there; a stale B0-B3 would read as a hit of the host's at its next
        // #DB (KVM's `hw_breakpoint_restore` resets DR6 too).
        // SAFETY: DR6's reset value; then the value DR7 had before VMRUN.
        unsafe {
            asm!("mov dr6, {}", in(reg) DR6_INIT, options(nomem, nostack));
            asm!("mov dr7, {}", in(reg) host_dr7, options(nomem, nostack));
        };
    }
}

/// DR7 with every breakpoint disabled (bit 10 is reserved, always 1).
/// SDM Vol. 3B 19.2.4.
const DR7_INIT: u64 = 0x400;
/// DR6 with no debug condition recorded. SDM Vol. 3B 19.2.3.
const DR6_INIT: u64 = 0xffff_0ff0;
