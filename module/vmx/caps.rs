// SPDX-License-Identifier: GPL-2.0

//! What this CPU's VMX can do, and the controls rkvm runs guests with.
//!
//! Pure logic over the values of the VMX capability MSRs (read by
//! `vmx/mod.rs`), so that the host unit tests (`userspace/module-logic`)
//! check it with made-up CPUs. SDM Vol. 3D Appendix A.
//!
//! Each control field has a capability MSR whose low 32 bits are the
//! allowed-0 settings (a 1 there: the control must be 1) and whose high 32
//! bits are the allowed-1 settings (a 0 there: the control must be 0).
//! Some controls are "default-1": older CPUs force them to 1 and say so in
//! the plain MSRs; when IA32_VMX_BASIC bit 55 is set, the TRUE_* MSRs tell
//! which of them may really be 0 (CR3-load and CR3-store exiting among
//! them, which a guest with EPT must be free of). SDM Vol. 3D A.2.

use super::vmcs::{entry_ctl, exit_ctl, pin, proc1, proc2};

/// IA32_VMX_BASIC bits. SDM Vol. 3D A.1.
pub(crate) mod basic {
    /// Bits 30:0: the VMCS revision identifier.
    pub(crate) const REVISION_MASK: u64 = 0x7fff_ffff;
    /// Bit 48: VMX structures must be below 4 GiB.
    pub(crate) const ADDR_32BIT: u64 = 1 << 48;
    /// Bits 53:50: the memory type of VMX structures (6 = write-back).
    pub(crate) const MEMTYPE_SHIFT: u64 = 50;
    /// Bit 54: INS/OUTS exits report their address size.
    pub(crate) const INS_OUTS_INFO: u64 = 1 << 54;
    /// Bit 55: the TRUE_* control MSRs exist.
    pub(crate) const TRUE_CTLS: u64 = 1 << 55;
}

/// IA32_VMX_EPT_VPID_CAP bits. SDM Vol. 3D A.10.
pub(crate) mod ept_cap {
    pub(crate) const WALK_4: u64 = 1 << 6;
    pub(crate) const WB: u64 = 1 << 14;
    pub(crate) const PAGE_2M: u64 = 1 << 16;
    pub(crate) const INVEPT: u64 = 1 << 20;
    pub(crate) const INVEPT_SINGLE: u64 = 1 << 25;
    pub(crate) const INVEPT_ALL: u64 = 1 << 26;
    pub(crate) const INVVPID: u64 = 1 << 32;
    pub(crate) const INVVPID_SINGLE: u64 = 1 << 41;
    pub(crate) const INVVPID_ALL: u64 = 1 << 42;
}

/// CR0.PE and CR0.PG: with unrestricted guest the guest may clear them
/// even though CR0_FIXED0 says they are fixed to 1. SDM Vol. 3D A.7.
pub(crate) const CR0_PE_PG: u64 = 1 | 1 << 31;

/// The capability MSRs as read (the TRUE_* variants where they exist).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CapMsrs {
    pub(crate) basic: u64,
    pub(crate) pin: u64,
    pub(crate) proc1: u64,
    pub(crate) proc2: u64,
    pub(crate) exit: u64,
    pub(crate) entry: u64,
    pub(crate) ept_vpid: u64,
    pub(crate) cr0_fixed0: u64,
    pub(crate) cr0_fixed1: u64,
    pub(crate) cr4_fixed0: u64,
    pub(crate) cr4_fixed1: u64,
}

/// The VM-execution, exit and entry controls every guest runs with
/// (interrupt-window exiting and the IA-32e-mode entry control are added
/// per entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Controls {
    pub(crate) pin: u32,
    pub(crate) proc1: u32,
    pub(crate) proc2: u32,
    pub(crate) exit: u32,
    pub(crate) entry: u32,
}

/// What rkvm will use of this CPU's VMX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) revision: u32,
    pub(crate) controls: Controls,
    /// CR0 bits fixed to 1 in VMX operation, less PE and PG.
    pub(crate) cr0_fixed0: u64,
    pub(crate) cr0_fixed1: u64,
    pub(crate) cr4_fixed0: u64,
    pub(crate) cr4_fixed1: u64,
    pub(crate) vpid: bool,
    pub(crate) invept_single: bool,
    pub(crate) invvpid_single: bool,
    pub(crate) large_pages: bool,
    pub(crate) ins_outs_info: bool,
}

/// Adjusts `want` to a capability MSR: returns the control value (what
/// rkvm wants plus what the CPU forces), or the wanted bits the CPU cannot
/// set. SDM Vol. 3D A.3-A.5.
pub(crate) fn adjust(cap: u64, want: u32) -> Result<u32, u32> {
    let must = cap as u32;
    let may = (cap >> 32) as u32;
    if want & !may != 0 {
        return Err(want & !may);
    }
    Ok(want | must)
}

/// Decides whether rkvm can run guests with this VMX, and with which
/// controls; an error is the reason, for the load failure message.
pub(crate) fn negotiate(m: &CapMsrs) -> Result<Caps, &'static str> {
    if m.basic & basic::ADDR_32BIT != 0 {
        return Err("VMX limits its structures to 32-bit addresses, which rkvm does not support");
    }
    if (m.basic >> basic::MEMTYPE_SHIFT) & 0xf != 6 {
        return Err("VMX wants its structures in memory that is not write-back");
    }
    let pin = adjust(
        m.pin,
        pin::EXT_INTR_EXITING | pin::NMI_EXITING | pin::VIRTUAL_NMIS,
    )
    .map_err(|_| "VMX cannot make external interrupts and NMIs exit, or has no virtual NMIs")?;
    // NMI-window exiting is set per entry; it must be allowed (it is
    // wherever virtual NMIs are, SDM Vol. 3C 26.2.1.1).
    if (m.proc1 >> 32) as u32 & proc1::NMI_WINDOW_EXITING == 0 {
        return Err("VMX has no NMI-window exiting");
    }
    // Every exit the host needs: HLT, MWAIT/MONITOR, RDPMC, CR8 (which is
    // otherwise the host's task priority), MOV DR, every I/O instruction,
    // every MSR (an all-ones bitmap); the TSC offset; the secondary controls.
    let proc1 = adjust(
        m.proc1,
        proc1::HLT_EXITING
            | proc1::MWAIT_EXITING
            | proc1::RDPMC_EXITING
            | proc1::USE_TSC_OFFSETTING
            | proc1::CR8_LOAD_EXITING
            | proc1::CR8_STORE_EXITING
            | proc1::MOV_DR_EXITING
            | proc1::UNCOND_IO_EXITING
            | proc1::USE_MSR_BITMAPS
            | proc1::MONITOR_EXITING
            | proc1::ACTIVATE_SECONDARY,
    )
    .map_err(|_| {
        "VMX lacks a required processor-based control (HLT, CR8, MOV DR, I/O or MSR-bitmap \
         exiting, or secondary controls)"
    })?;
    // With EPT the guest owns CR3: its loads and stores must not exit.
    if proc1 & (proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING) != 0 {
        return Err("VMX forces CR3 exiting (no TRUE control MSRs), which rkvm does not handle");
    }
    if adjust(m.proc1, proc1::INTR_WINDOW_EXITING).is_err() {
        return Err("VMX has no interrupt-window exiting");
    }
    let required2 = proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST | proc2::WBINVD_EXITING;
    let mut proc2 = adjust(m.proc2, required2).map_err(|missing| {
        if missing & proc2::ENABLE_EPT != 0 {
            "VMX without EPT is not supported"
        } else if missing & proc2::UNRESTRICTED_GUEST != 0 {
            "VMX without unrestricted guest is not supported (real mode would need an emulator)"
        } else {
            "VMX without WBINVD exiting is not supported"
        }
    })?;
    let exit = adjust(
        m.exit,
        exit_ctl::HOST_ADDR_SPACE_SIZE
            | exit_ctl::SAVE_DEBUG_CONTROLS
            | exit_ctl::SAVE_IA32_PAT
            | exit_ctl::LOAD_IA32_PAT
            | exit_ctl::SAVE_IA32_EFER
            | exit_ctl::LOAD_IA32_EFER,
    )
    .map_err(|_| "VMX cannot switch EFER, PAT and the debug controls at VM exit")?;
    // Acknowledging interrupts at exit would take them from the host.
    if exit & exit_ctl::ACK_INTR_ON_EXIT != 0 {
        return Err("VMX forces acknowledge-interrupt-on-exit");
    }
    // The debug controls: DR7 and DEBUGCTL are the guest's while it runs,
    // never the host's (KVM requires them too).
    let entry = adjust(
        m.entry,
        entry_ctl::LOAD_DEBUG_CONTROLS | entry_ctl::LOAD_IA32_PAT | entry_ctl::LOAD_IA32_EFER,
    )
    .map_err(|_| "VMX cannot load EFER, PAT and the debug controls at VM entry")?;
    if adjust(m.entry, entry_ctl::IA32E_MODE).is_err() {
        return Err("VMX cannot run 64-bit guests");
    }
    let e = m.ept_vpid;
    if e & ept_cap::WALK_4 == 0 || e & ept_cap::WB == 0 {
        return Err("EPT without 4-level walks in write-back memory is not supported");
    }
    if e & ept_cap::INVEPT == 0 || e & (ept_cap::INVEPT_SINGLE | ept_cap::INVEPT_ALL) == 0 {
        return Err("EPT without INVEPT is not supported");
    }
    // VPID is optional: without it (or INVVPID), VPID 0 flushes at every entry and exit.
    let vpid = adjust(m.proc2, proc2::ENABLE_VPID).is_ok()
        && e & ept_cap::INVVPID != 0
        && e & (ept_cap::INVVPID_SINGLE | ept_cap::INVVPID_ALL) != 0;
    if vpid {
        proc2 |= proc2::ENABLE_VPID;
    }
    Ok(Caps {
        revision: (m.basic & basic::REVISION_MASK) as u32,
        controls: Controls {
            pin,
            proc1,
            proc2,
            exit,
            entry,
        },
        cr0_fixed0: m.cr0_fixed0 & !CR0_PE_PG,
        cr0_fixed1: m.cr0_fixed1,
        cr4_fixed0: m.cr4_fixed0,
        cr4_fixed1: m.cr4_fixed1,
        vpid,
        invept_single: e & ept_cap::INVEPT_SINGLE != 0,
        invvpid_single: e & ept_cap::INVVPID_SINGLE != 0,
        large_pages: e & ept_cap::PAGE_2M != 0,
        ins_outs_info: m.basic & basic::INS_OUTS_INFO != 0,
    })
}
