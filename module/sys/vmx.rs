// SPDX-License-Identifier: GPL-2.0

//! The VMX instructions, wrapped so that using them wrongly is hard.
//!
//! - [`VmxOn`] is VMX operation on this CPU (CR4.VMXE, then VMXON); it ends
//!   with VMXOFF when dropped.
//! - [`CurrentVmcs`] is a VMCS made current and active on this CPU by
//!   VMPTRLD; dropping it VMCLEARs it, which writes it back to memory and
//!   leaves it inactive, so that it may next be loaded on any CPU. Field
//!   access ([`CurrentVmcs::read`], [`CurrentVmcs::write`]) and the world
//!   switch ([`CurrentVmcs::launch`]) exist only on it.
//!
//! Every VMX instruction reports failure in RFLAGS: CF set is VMfailInvalid
//! (no current VMCS), ZF set is VMfailValid with an error number in the
//! current VMCS's VM-instruction error field. Both become a [`VmxError`].
//! SDM Vol. 3C 31.2 (conventions) and 31.4 (error numbers).
//!
//! Why VMX is on only around one guest entry (and not, like SVM, from
//! module load to unload) is explained in `vmx/mod.rs`.

use super::spec::{
    after_exit_and_pop_flags, rkvm_clear_bhb, rkvm_untrain_ret_vm, EntryFlags, VERW_SELECTOR,
};
use crate::vmx::vmcs::{self, Field, Width};
use core::arch::asm;
use core::fmt;
use core::mem::offset_of;

pub(crate) use super::gprs::GuestGprs;

/// Executes the VMX instruction in `$template` with the given `asm!`
/// operands, and returns what RFLAGS says about it: (failed, invalid), that
/// is CF or ZF set, and CF set (SDM Vol. 3C 31.2). Expands to `asm!`, so it
/// must be used inside an `unsafe` block that justifies the instruction.
macro_rules! vmx_insn {
    ($template:literal, $($operands:tt)*) => {{
        let (failed, invalid): (u8, u8);
        asm!(
            $template,
            "setbe {failed}",
            "setc {invalid}",
            $($operands)*
            failed = out(reg_byte) failed,
            invalid = out(reg_byte) invalid,
            options(nostack),
        );
        (failed != 0, invalid != 0)
    }};
}

/// CR4.VMXE: VMX may be entered. SDM Vol. 3C 24.7.
pub(crate) const CR4_VMXE: u64 = 1 << 13;

/// A failed VMX instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmxError {
    /// VMfailInvalid: there was no current VMCS to hold an error number.
    Invalid,
    /// VMfailValid with the VM-instruction error number (SDM Vol. 3C 31.4,
    /// Table 31-1: 7 and 8 are invalid control and host-state fields at
    /// VM entry, 12 an unsupported field, 13 a write to a read-only one).
    Valid(u32),
}

impl kernel::fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmxError::Invalid => write!(f, "VMfailInvalid"),
            VmxError::Valid(n) => write!(f, "VMfailValid, VM-instruction error {}", n),
        }
    }
}

/// Turns the flags a VMX instruction left into a result: `failed` is
/// CF|ZF, `invalid` CF. A VMfailValid's error number is read from the
/// current VMCS.
fn check(failed: bool, invalid: bool) -> Result<(), VmxError> {
    if !failed {
        Ok(())
    } else if invalid {
        Err(VmxError::Invalid)
    } else {
        // SAFETY: VMfailValid means there is a current VMCS; reading its error field is
        // defined and changes nothing.
        let n = unsafe { vmread_raw(vmcs::VM_INSTRUCTION_ERROR.encoding()) }.unwrap_or(0);
        Err(VmxError::Valid(n as u32))
    }
}

/// VMREAD of `encoding` from the current VMCS.
///
/// # Safety
///
/// This CPU is in VMX operation.
unsafe fn vmread_raw(encoding: u32) -> Result<u64, VmxError> {
    let value: u64;
    // SAFETY: In VMX operation VMREAD only reads the current VMCS (or fails).
    let (failed, invalid) = unsafe {
        vmx_insn!(
            "vmread {value}, {enc}",
            enc = in(reg) u64::from(encoding),
            value = out(reg) value,
        )
    };
    if failed {
        // The error number cannot be read through ourselves without recursing forever.
        return Err(if invalid {
            VmxError::Invalid
        } else {
            VmxError::Valid(0)
        });
    }
    Ok(value)
}

/// Writes CR4.
///
/// # Safety
///
/// `value` differs from the current CR4 at most in VMXE.
unsafe fn write_cr4(value: u64) {
    // SAFETY: The caller changes only VMXE, which no kernel code depends on.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// Why VMX operation could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmxOnError {
    /// CR4.VMXE is already set: another hypervisor (kvm_intel) is in VMX
    /// operation on this CPU.
    Busy,
    /// VMXON failed.
    Failed(VmxError),
}

/// VMX operation on this CPU, from [`VmxOn::enter`] until dropped.
///
/// # Invariants
///
/// While it lives this CPU is in VMX root operation, entered by us, with
/// interrupts disabled (so it stays this CPU's and nothing else runs
/// here); `cr4` is CR4 before we set VMXE.
pub(crate) struct VmxOn {
    cr4: u64,
}

impl VmxOn {
    /// Sets CR4.VMXE and executes VMXON with the VMXON region at
    /// `region_pa`; refuses if CR4.VMXE was already set.
    ///
    /// # Safety
    ///
    /// Interrupts are disabled until the result is dropped. The CPU
    /// supports VMX, IA32_FEATURE_CONTROL allows VMXON outside SMX, CR0 and
    /// CR4 satisfy the VMX fixed-bit MSRs (`vmx/mod.rs` checks all three),
    /// and `region_pa` is a 4 KiB page this CPU owns, starting with the
    /// VMCS revision id (SDM Vol. 3C 25.11.5).
    pub(crate) unsafe fn enter(region_pa: u64) -> Result<Self, VmxOnError> {
        let cr4 = crate::sys::cpu::read_cr4();
        if cr4 & CR4_VMXE != 0 {
            return Err(VmxOnError::Busy);
        }
        // SAFETY: Only VMXE changes.
        unsafe { write_cr4(cr4 | CR4_VMXE) };
        // SAFETY: The caller guarantees VMXON's preconditions; its operand is a memory
        // location holding the region's physical address.
        let (failed, _) = unsafe { vmx_insn!("vmxon [{pa}]", pa = in(reg) &region_pa,) };
        if failed {
            // SAFETY: Not in VMX operation, so VMXE may be cleared again.
            unsafe { write_cr4(cr4) };
            // VMXON has no current VMCS to hold an error number: VMfailInvalid it is.
            return Err(VmxOnError::Failed(VmxError::Invalid));
        }
        // INVARIANT: VMXON succeeded; `cr4` is the value before.
        Ok(Self { cr4 })
    }

    /// VMPTRLD: makes the VMCS at `vmcs_pa` current and active on this CPU.
    /// It is VMCLEARed first, so that its launch state is "clear" and its
    /// contents are in memory whatever happened before.
    ///
    /// # Safety
    ///
    /// `vmcs_pa` is a 4 KiB page owned by the caller for as long as the
    /// result lives, starting with the VMCS revision id, and not active on
    /// any other CPU (rkvm VMCLEARs every VMCS before it leaves the CPU).
    pub(crate) unsafe fn load(&self, vmcs_pa: u64) -> Result<CurrentVmcs<'_>, VmxError> {
        // SAFETY: In VMX operation (`self`); the caller guarantees the page.
        unsafe { vmclear(vmcs_pa)? };
        // SAFETY: As above.
        let (failed, invalid) = unsafe { vmx_insn!("vmptrld [{pa}]", pa = in(reg) &vmcs_pa,) };
        check(failed, invalid)?;
        Ok(CurrentVmcs {
            pa: vmcs_pa,
            _on: self,
        })
    }

    /// INVEPT: forgets the guest-physical (and combined) translations the
    /// CPU cached for the EPT at `eptp` (`single`), or for every EPT.
    /// SDM Vol. 3C 31.3 INVEPT, 29.4.3.
    pub(crate) fn invept(&self, single: bool, eptp: u64) -> Result<(), VmxError> {
        let descriptor: [u64; 2] = [eptp, 0];
        let kind: u64 = if single { 1 } else { 2 };
        // SAFETY: In VMX root operation (`self`); INVEPT only drops cached translations.
        let (failed, invalid) = unsafe {
            vmx_insn!("invept {kind}, [{desc}]", kind = in(reg) kind, desc = in(reg) &descriptor,)
        };
        check(failed, invalid)
    }

    /// INVVPID: forgets the linear (and combined) translations the CPU
    /// cached for `vpid` (`single`), or for every VPID but the host's.
    /// SDM Vol. 3C 31.3 INVVPID.
    pub(crate) fn invvpid(&self, single: bool, vpid: u16) -> Result<(), VmxError> {
        let descriptor: [u64; 2] = [u64::from(vpid), 0];
        let kind: u64 = if single { 1 } else { 2 };
        // SAFETY: In VMX root operation (`self`); INVVPID only drops cached translations.
        let (failed, invalid) = unsafe {
            vmx_insn!("invvpid {kind}, [{desc}]", kind = in(reg) kind, desc = in(reg) &descriptor,)
        };
        check(failed, invalid)
    }
}

impl Drop for VmxOn {
    fn drop(&mut self) {
        // SAFETY: We are in VMX root operation (the type invariant) and no VMCS we loaded
        // is still active (each `CurrentVmcs` borrows `self` and VMCLEARs on drop). VMXOFF
        // leaves VMX operation; then VMXE may be cleared, restoring CR4. SDM Vol. 3C 24.7.
        unsafe {
            asm!("vmxoff", options(nostack));
            write_cr4(self.cr4);
        }
    }
}

/// VMCLEAR of the VMCS at `pa`.
///
/// # Safety
///
/// In VMX operation; `pa` is a VMCS page the caller owns.
unsafe fn vmclear(pa: u64) -> Result<(), VmxError> {
    // SAFETY: The caller guarantees the preconditions.
    let (failed, invalid) = unsafe { vmx_insn!("vmclear [{pa}]", pa = in(reg) &pa,) };
    check(failed, invalid)
}

/// The current VMCS on this CPU (VMPTRLD'ed by [`VmxOn::load`]).
///
/// # Invariants
///
/// The VMCS at `pa` is current and active on this CPU, which is in VMX
/// operation for at least as long (`_on`).
pub(crate) struct CurrentVmcs<'a> {
    pa: u64,
    _on: &'a VmxOn,
}

impl CurrentVmcs<'_> {
    /// Reads field `f`.
    pub(crate) fn read<W: Width>(&self, f: Field<W>) -> Result<W::Value, VmxError> {
        // SAFETY: In VMX operation with a current VMCS (the type invariant).
        let raw = unsafe { vmread_raw(f.encoding()) }.map_err(|e| match e {
            // Read the real error number now that the recursion question is moot.
            VmxError::Valid(_) => VmxError::Valid(
                // SAFETY: As above.
                unsafe { vmread_raw(vmcs::VM_INSTRUCTION_ERROR.encoding()) }.unwrap_or(0) as u32,
            ),
            e => e,
        })?;
        Ok(W::from_raw(raw))
    }

    /// Reads the fields `encodings` names, in order, into `values`: one
    /// VMREAD each and a single check at the end, for the dozens of fields
    /// read back after every exit. All or nothing: if any VMREAD failed,
    /// the error is VMfailInvalid if one was, else the last failure's
    /// (VMREAD fails only for a field the CPU does not have).
    pub(crate) fn read_raw_many<const N: usize>(
        &self,
        encodings: &[u32; N],
        values: &mut [u64; N],
    ) -> Result<(), VmxError> {
        let (mut failed, mut invalid) = (false, false);
        for i in 0..N {
            let raw: u64;
            // SAFETY: In VMX operation with a current VMCS (the type invariant); VMREAD
            // only reads it.
            let (bad, no_vmcs) = unsafe {
                vmx_insn!(
                    "vmread {value}, {enc}",
                    enc = in(reg) u64::from(encodings[i]),
                    value = out(reg) raw,
                )
            };
            values[i] = raw;
            failed |= bad;
            invalid |= no_vmcs;
        }
        if invalid {
            return Err(VmxError::Invalid);
        }
        if failed {
            // SAFETY: As above.
            let n = unsafe { vmread_raw(vmcs::VM_INSTRUCTION_ERROR.encoding()) }.unwrap_or(0);
            return Err(VmxError::Valid(n as u32));
        }
        Ok(())
    }

    /// Writes field `f`. A value the guest state cannot have is not refused
    /// here but by VM entry (an entry failure); VMWRITE itself fails only
    /// for a field the CPU does not have or that is read-only.
    pub(crate) fn write<W: Width>(&mut self, f: Field<W>, value: W::Value) -> Result<(), VmxError> {
        // SAFETY: In VMX operation with a current VMCS (the type invariant); VMWRITE only
        // changes that VMCS.
        let (failed, invalid) = unsafe {
            vmx_insn!(
                "vmwrite {enc}, {value}",
                enc = in(reg) u64::from(f.encoding()),
                value = in(reg) W::to_raw(value),
            )
        };
        check(failed, invalid)
    }

    /// Enters the guest with VMLAUNCH, or VMRESUME if `flags` has
    /// [`EntryFlags::RESUME`], and returns at its next VM exit (`Ok`), or at
    /// once if the instruction failed (`Err`: an invalid control or
    /// host-state field, or a launch state that does not fit the
    /// instruction; invalid *guest* state is a VM exit with bit 31 of the
    /// exit reason set, and so `Ok`).
    ///
    /// A VMCS is launched at its first entry after VMPTRLD, since rkvm
    /// VMCLEARs it when it leaves VMX operation (see `vmx/mod.rs`), which
    /// makes its launch state "clear"; it is resumed only by entries that
    /// follow an exit without leaving VMX operation (the fast path,
    /// run/fastpath.rs). SDM Vol. 3C 25.11.3, 31.3.
    /// The block writes HOST_RSP and HOST_RIP itself, since only it knows
    /// the stack pointer at the entry and the address where exits land.
    /// A VM exit loads the host's CR0/3/4, RSP, RIP, segment selectors,
    /// FS/GS/TR/GDTR/IDTR bases, SYSENTER MSRs, EFER and PAT from the host
    /// fields; everything else it leaves to the caller (SDM Vol. 3C 28.5).
    ///
    /// # Safety
    ///
    /// Interrupts are disabled; every host-state field but RSP and RIP
    /// holds this CPU's current state; the controls intercept everything
    /// that reaches host state, and the EPT maps only memory the guest may
    /// use.
    ///
    /// `flags` adds the speculation steps of `crate::spec::Plan` that belong
    /// inside the switch: VERW right before the entry, and the RSB fill,
    /// return untraining and branch history clearing before the first `ret`
    /// after the exit ([`after_exit_and_pop_flags`]).
    pub(crate) unsafe fn launch(
        &mut self,
        gprs: &mut GuestGprs,
        flags: EntryFlags,
    ) -> Result<(), VmxError> {
        let gprs: *mut GuestGprs = gprs;
        let failed: u64;
        // SAFETY: The caller guarantees the preconditions of VMLAUNCH. RBX and RBP (which
        // `asm!` may not name) are saved on the stack with the GPR pointer; every other
        // register is clobbered. At a VM exit the CPU resumes at label 2 with RSP as
        // written to HOST_RSP, which is the stack as it is right before VMLAUNCH.
        unsafe {
            asm!(
                // The entry flags, at [rsp + 24] until VMLAUNCH and at [rsp] at the end.
                "push rcx",
                "push rbp",
                "push rbx",
                "push rdi",
                // HOST_RSP: this stack; HOST_RIP: label 2.
                "mov rax, {host_rsp}",
                "vmwrite rax, rsp",
                "jbe 3f",
                "lea rdx, [rip + 2f]",
                "mov rax, {host_rip}",
                "vmwrite rax, rdx",
                "jbe 3f",
                "mov rax, [rdi + {cr2}]",
                "mov cr2, rax",
                "mov rax, [rdi + {rax}]",
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
                // Clear CPU buffers as late as possible (memory-operand VERW). Which
                // instruction enters goes into CF first: BT leaves ZF from the TEST, and
                // VERW changes only ZF.
                "test qword ptr [rsp + 24], {verw}",
                "bt qword ptr [rsp + 24], {resume_bit}",
                "jz 5f",
                "verw word ptr [rip + {verw_sel}]",
                "5:",
                "jnc 6f",
                "vmresume",
                // VMRESUME fell through: it failed, and nothing ran.
                "jmp 3f",
                "6:",
                "vmlaunch",
                // VMLAUNCH fell through: it failed, with CF (VMfailInvalid) or ZF
                // (VMfailValid) set, and nothing ran. The jump is conditional so that the
                // exit path below stays reachable for objtool, which cannot know that the
                // CPU enters it at label 2 (after a failure it is always taken).
                "jbe 3f",
                // VM exit: the guest's registers are live; the GPR pointer is on the stack.
                "2:",
                "push rdi",
                "mov rdi, [rsp + 8]",
                "mov [rdi + {rax}], rax",
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
                "mov rax, cr2",
                "mov [rdi + {cr2}], rax",
                "xor eax, eax",
                "jmp 4f",
                // VMWRITE or VMLAUNCH failed.
                "3:",
                "mov eax, 1",
                "4:",
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
                "pop rdi",
                "pop rbx",
                "pop rbp",
                after_exit_and_pop_flags!(),
                verw = const EntryFlags::VERW,
                resume_bit = const EntryFlags::RESUME.trailing_zeros(),
                rsb_full = const EntryFlags::RSB_FULL,
                rsb_one = const EntryFlags::RSB_ONE,
                untrain_ret = const EntryFlags::UNTRAIN_RET,
                clear_bhb = const EntryFlags::CLEAR_BHB,
                untrain = sym rkvm_untrain_ret_vm,
                bhb = sym rkvm_clear_bhb,
                verw_sel = sym VERW_SELECTOR,
                host_rsp = const vmcs::HOST_RSP.encoding(),
                host_rip = const vmcs::HOST_RIP.encoding(),
                rax = const offset_of!(GuestGprs, rax),
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
                cr2 = const offset_of!(GuestGprs, cr2),
                inout("rdi") gprs => _,
                out("rax") failed,
                inout("rcx") flags.0 => _,
                out("rdx") _,
                out("rsi") _,
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
        if failed != 0 {
            // SAFETY: The VMCS is still current; the error field says why.
            let n = unsafe { vmread_raw(vmcs::VM_INSTRUCTION_ERROR.encoding()) };
            return Err(match n {
                Ok(n) if n != 0 => VmxError::Valid(n as u32),
                _ => VmxError::Invalid,
            });
        }
        Ok(())
    }
}

impl Drop for CurrentVmcs<'_> {
    fn drop(&mut self) {
        // SAFETY: In VMX operation (the type invariant); the page is the caller's. VMCLEAR
        // writes the VMCS back and makes it inactive, so it may be loaded on another CPU
        // next time.
        if let Err(e) = unsafe { vmclear(self.pa) } {
            kernel::pr_err!("VMCLEAR failed ({}): the VMCS may still be active\n", e);
        }
    }
}

/// The host state a VM exit does not restore by itself, or restores only
/// partly, as `helpers.c` saves it before an entry and puts it back after.
/// Mirrors `struct rkvm_vmx_host` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HostState {
    pub(crate) cr0: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) fs_base: u64,
    pub(crate) gs_base: u64,
    pub(crate) tr_base: u64,
    pub(crate) gdt_base: u64,
    pub(crate) idt_base: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    pub(crate) kernel_gs_base: u64,
    pub(crate) debugctl: u64,
    pub(crate) dr7: u64,
    pub(crate) efer: u64,
    pub(crate) pat: u64,
    pub(crate) star: u64,
    pub(crate) lstar: u64,
    pub(crate) cstar: u64,
    pub(crate) sfmask: u64,
    pub(crate) sysenter_cs: u32,
    pub(crate) cs_sel: u16,
    pub(crate) ss_sel: u16,
    pub(crate) tr_sel: u16,
    pub(crate) fs_sel: u16,
    pub(crate) gs_sel: u16,
    pub(crate) ds_sel: u16,
    pub(crate) es_sel: u16,
    pub(crate) ldt_sel: u16,
}

extern "C" {
    fn rkvm_vmx_host_save(host: *mut HostState, per_cpu: bool);
    fn rkvm_vmx_host_restore(host: *const HostState);
    fn rkvm_raise_nmi();
}

impl HostState {
    /// Saves this CPU's and this task's host state, as the host fields of
    /// the VMCS need it. The MSRs a CPU keeps from boot to offline
    /// (SYSENTER, EFER, PAT, the syscall MSRs) are read only if `per_cpu`;
    /// otherwise `self` holds what an earlier save on this same CPU read
    /// (the caller's vCPU has not run on another CPU since).
    ///
    /// # Safety
    ///
    /// Interrupts are disabled until [`HostState::restore`].
    pub(crate) unsafe fn save(&mut self, per_cpu: bool) {
        // SAFETY: `self` is a valid `struct rkvm_vmx_host`; the helper only reads CPU state.
        unsafe { rkvm_vmx_host_save(self, per_cpu) };
    }

    /// Puts back, after a VM exit, what the exit did not: the selectors
    /// of DS, ES, FS, GS and LDTR when they were not null (and
    /// KERNEL_GS_BASE, which reloading GS overwrites), the GDT limit, the
    /// TSS limit, DR7 and DEBUGCTL. The exit's MSR-load list has put back
    /// the syscall MSRs.
    ///
    /// # Safety
    ///
    /// Right after the VM exit that followed [`HostState::save`] on this
    /// CPU, interrupts still disabled.
    pub(crate) unsafe fn restore(&self) {
        // SAFETY: `self` was filled by `rkvm_vmx_host_save` on this CPU (the caller).
        unsafe { rkvm_vmx_host_restore(self) };
    }
}

/// Raises an NMI on this CPU's host handler: a VM exit for an NMI consumed
/// it, and the host must still see it, as KVM does. `int 2` on a host with
/// IDT event delivery; on a FRED host, where `int 2` is no NMI, a self-NMI
/// through the local APIC (`rkvm_raise_nmi` in helpers.c).
///
/// # Safety
///
/// Right after a VM exit caused by an NMI, out of VMX operation.
pub(crate) unsafe fn raise_nmi() {
    // SAFETY: The kernel's NMI entry handles a software `int 2` from kernel mode; a
    // self-NMI is an ordinary NMI.
    unsafe { rkvm_raise_nmi() };
}

// The C side's layout must match field for field.
const _: () = assert!(offset_of!(HostState, sysenter_cs) == 19 * 8);
const _: () = assert!(offset_of!(HostState, ldt_sel) == 19 * 8 + 4 + 7 * 2);
const _: () = assert!(core::mem::size_of::<HostState>() == 176);
