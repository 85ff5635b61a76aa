// SPDX-License-Identifier: GPL-2.0

//! The processor's breakpoint registers, lent to a guest for one entry.
//!
//! DR0-DR3 hold the linear addresses of up to four breakpoints and DR7
//! enables them (SDM Vol. 3B 18.2). Neither vendor switches DR0-DR3 at
//! VMRUN or VM entry, only DR7 (from the VMCB, or the VMCS's guest-state
//! area): a hypervisor that gives a guest breakpoints loads DR0-DR3 itself
//! and puts the host's back afterwards. rkvm does so only for the VMM's
//! own breakpoints (`KVM_GUESTDBG_USE_HW_BP`, x86/guest_debug.rs).
//!
//! The host may be using them (ptrace, perf): its DR7 is switched off
//! before DR0-DR3 take the guest's addresses, so that no host breakpoint
//! ever matches one of them, and DR0-DR3 and DR7 are restored once the
//! guest has left. KVM restores through the kernel's own record of the
//! host's breakpoints (`hw_breakpoint_restore`, exported to KVM only);
//! rkvm reads the registers before it lends them.

use super::cpu::IrqsDisabled;
use core::arch::asm;
use core::marker::PhantomData;

/// DR7 with every breakpoint disabled (bit 10 is reserved, always 1).
const DR7_INIT: u64 = 0x400;
/// DR6 with no debug condition recorded (its active-low bits set). SDM
/// Vol. 3B 18.2.3.
const DR6_INIT: u64 = 0xffff_0ff0;

macro_rules! read_dr {
    ($n:literal) => {{
        let value: u64;
        // SAFETY: Reading a debug register at CPL 0 has no side effects.
        unsafe {
            asm!(concat!("mov {}, dr", $n), out(reg) value, options(nomem, nostack))
        };
        value
    }};
}

macro_rules! write_dr {
    ($n:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: The callers below write DR0-DR3 only while DR7 disables every
        // breakpoint, DR6 with its reset value and DR7 only with a value it
        // held before or with every breakpoint off; a linear address in DR0-DR3
        // is never refused (SDM Vol. 2B MOV to DR: only DR6's and DR7's upper
        // halves fault). MOV DR leaves the arithmetic flags undefined: they are
        // not preserved.
        unsafe {
            asm!(concat!("mov dr", $n, ", {}"), in(reg) value, options(nomem, nostack))
        };
    }};
}

/// The guest's DR0-DR3 are loaded while this lives; the host's DR0-DR3 and
/// DR7 come back when it is dropped. It borrows the interrupts-off guard:
/// nothing on this CPU (an interrupt handler, a context switch) runs with
/// the guest's addresses in the registers.
pub(crate) struct GuestBreakpoints<'i> {
    host: [u64; 4],
    host_dr7: u64,
    _during: PhantomData<&'i IrqsDisabled>,
}

impl<'i> GuestBreakpoints<'i> {
    /// Switches the host's breakpoints off and loads `addr` into DR0-DR3.
    /// The guest's DR7, which enables them, is the backend's to load (it is
    /// in the VMCB or VMCS).
    pub(crate) fn load(_irqs: &'i IrqsDisabled, addr: &[u64; 4]) -> Self {
        let host_dr7 = read_dr!("7");
        if host_dr7 != DR7_INIT {
            write_dr!("7", DR7_INIT);
        }
        let host = [read_dr!("0"), read_dr!("1"), read_dr!("2"), read_dr!("3")];
        write_dr!("0", addr[0]);
        write_dr!("1", addr[1]);
        write_dr!("2", addr[2]);
        write_dr!("3", addr[3]);
        GuestBreakpoints {
            host,
            host_dr7,
            _during: PhantomData,
        }
    }
}

impl Drop for GuestBreakpoints<'_> {
    fn drop(&mut self) {
        // The exit left DR7 with every breakpoint off (APM Vol. 2 15.7.2; SDM
        // Vol. 3C 28.5.1: every VM exit sets it to 0x400); make sure.
        write_dr!("7", DR7_INIT);
        // SVM's VMRUN loaded the guest's DR6 and #VMEXIT does not put the
        // host's back: a breakpoint's B0-B3 left there would read, at the
        // host's next #DB, as a hit of the host's own (KVM's
        // `hw_breakpoint_restore` resets it the same way).
        write_dr!("6", DR6_INIT);
        write_dr!("0", self.host[0]);
        write_dr!("1", self.host[1]);
        write_dr!("2", self.host[2]);
        write_dr!("3", self.host[3]);
        if self.host_dr7 != DR7_INIT {
            write_dr!("7", self.host_dr7);
        }
    }
}
