// SPDX-License-Identifier: GPL-2.0

//! The virtual-machine control structure's fields, typed by width.
//!
//! Unlike SVM's VMCB, the VMCS has no architectural layout in memory: each
//! field is named by a 32-bit encoding and reached only with VMREAD and
//! VMWRITE (SDM Vol. 3C 25.11.2). The encoding carries the field's width in
//! bits 14:13 (0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural width) and
//! its kind in bits 11:10 (0 control, 1 read-only exit information, 2 guest
//! state, 3 host state). SDM Vol. 3C Appendix B lists every field.
//!
//! Here each field is a [`Field<W>`] whose width `W` is checked against its
//! encoding when the constant is compiled, and whose value type follows
//! from `W`: writing a `u32` to a 16-bit field, or reading a 64-bit one into
//! a `u16`, does not compile.

use core::marker::PhantomData;

/// A field width: the encoding's bits 14:13 and the Rust type of a value.
pub(crate) trait Width {
    /// The value's type.
    type Value: Copy + PartialEq;
    /// Bits 14:13 of every encoding of this width.
    const CODE: u32;
    /// The value as VMWRITE's 64-bit operand.
    fn to_raw(v: Self::Value) -> u64;
    /// The value from VMREAD's 64-bit result (upper bits are zero).
    fn from_raw(v: u64) -> Self::Value;
}

/// 16-bit fields (selectors, VPID).
pub(crate) enum W16 {}
/// 64-bit fields (physical addresses, MSR values).
pub(crate) enum W64 {}
/// 32-bit fields (controls, limits, access rights, exit information).
pub(crate) enum W32 {}
/// Natural-width fields: 64 bits on a 64-bit host (CRs, bases, RIP).
pub(crate) enum Natural {}

impl Width for W16 {
    type Value = u16;
    const CODE: u32 = 0;
    fn to_raw(v: u16) -> u64 {
        v.into()
    }
    fn from_raw(v: u64) -> u16 {
        v as u16
    }
}

impl Width for W64 {
    type Value = u64;
    const CODE: u32 = 1;
    fn to_raw(v: u64) -> u64 {
        v
    }
    fn from_raw(v: u64) -> u64 {
        v
    }
}

impl Width for W32 {
    type Value = u32;
    const CODE: u32 = 2;
    fn to_raw(v: u32) -> u64 {
        v.into()
    }
    fn from_raw(v: u64) -> u32 {
        v as u32
    }
}

impl Width for Natural {
    type Value = u64;
    const CODE: u32 = 3;
    fn to_raw(v: u64) -> u64 {
        v
    }
    fn from_raw(v: u64) -> u64 {
        v
    }
}

/// One VMCS field of width `W`.
pub(crate) struct Field<W: Width> {
    encoding: u32,
    _width: PhantomData<W>,
}

impl<W: Width> Clone for Field<W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W: Width> Copy for Field<W> {}

impl<W: Width> Field<W> {
    /// The field with `encoding`; compilation fails if the encoding's width
    /// bits are not `W`'s (every constant below is checked this way).
    pub(crate) const fn new(encoding: u32) -> Self {
        assert!(
            (encoding >> 13) & 3 == W::CODE,
            "VMCS field width does not match its encoding"
        );
        // Bit 0 is the "high" access type, for 32-bit VMMs only; bits 31:15 are reserved.
        assert!(
            encoding & 1 == 0 || W::CODE != 1,
            "high half of a 64-bit field"
        );
        assert!(encoding >> 15 == 0, "reserved encoding bits");
        Self {
            encoding,
            _width: PhantomData,
        }
    }

    /// The encoding, VMREAD's and VMWRITE's field operand.
    pub(crate) const fn encoding(self) -> u32 {
        self.encoding
    }
}

const fn f16(e: u32) -> Field<W16> {
    Field::new(e)
}
const fn f32(e: u32) -> Field<W32> {
    Field::new(e)
}
const fn f64(e: u32) -> Field<W64> {
    Field::new(e)
}
const fn nat(e: u32) -> Field<Natural> {
    Field::new(e)
}

// 16-bit control field. SDM Vol. 3C B.1.1.
pub(crate) const VIRTUAL_PROCESSOR_ID: Field<W16> = f16(0x0000);

// 16-bit guest-state fields. B.1.2.
pub(crate) const GUEST_ES_SELECTOR: Field<W16> = f16(0x0800);
pub(crate) const GUEST_CS_SELECTOR: Field<W16> = f16(0x0802);
pub(crate) const GUEST_SS_SELECTOR: Field<W16> = f16(0x0804);
pub(crate) const GUEST_DS_SELECTOR: Field<W16> = f16(0x0806);
pub(crate) const GUEST_FS_SELECTOR: Field<W16> = f16(0x0808);
pub(crate) const GUEST_GS_SELECTOR: Field<W16> = f16(0x080a);
pub(crate) const GUEST_LDTR_SELECTOR: Field<W16> = f16(0x080c);
pub(crate) const GUEST_TR_SELECTOR: Field<W16> = f16(0x080e);

// 16-bit host-state fields. B.1.3.
pub(crate) const HOST_ES_SELECTOR: Field<W16> = f16(0x0c00);
pub(crate) const HOST_CS_SELECTOR: Field<W16> = f16(0x0c02);
pub(crate) const HOST_SS_SELECTOR: Field<W16> = f16(0x0c04);
pub(crate) const HOST_DS_SELECTOR: Field<W16> = f16(0x0c06);
pub(crate) const HOST_FS_SELECTOR: Field<W16> = f16(0x0c08);
pub(crate) const HOST_GS_SELECTOR: Field<W16> = f16(0x0c0a);
pub(crate) const HOST_TR_SELECTOR: Field<W16> = f16(0x0c0c);

// 64-bit control fields. B.2.1.
pub(crate) const MSR_BITMAP: Field<W64> = f64(0x2004);
pub(crate) const VM_EXIT_MSR_STORE_ADDR: Field<W64> = f64(0x2006);
pub(crate) const VM_EXIT_MSR_LOAD_ADDR: Field<W64> = f64(0x2008);
pub(crate) const VM_ENTRY_MSR_LOAD_ADDR: Field<W64> = f64(0x200a);
pub(crate) const TSC_OFFSET: Field<W64> = f64(0x2010);
pub(crate) const EPT_POINTER: Field<W64> = f64(0x201a);

// 64-bit read-only data field. B.2.2.
pub(crate) const GUEST_PHYSICAL_ADDRESS: Field<W64> = f64(0x2400);

// 64-bit guest-state fields. B.2.3.
pub(crate) const VMCS_LINK_POINTER: Field<W64> = f64(0x2800);
pub(crate) const GUEST_IA32_DEBUGCTL: Field<W64> = f64(0x2802);
pub(crate) const GUEST_IA32_PAT: Field<W64> = f64(0x2804);
pub(crate) const GUEST_IA32_EFER: Field<W64> = f64(0x2806);
/// The four PAE page-directory-pointer entries (with EPT, VM entry loads
/// them from here, not from CR3). SDM Vol. 3C 27.3.2.4.
pub(crate) const GUEST_PDPTE: [Field<W64>; 4] =
    [f64(0x280a), f64(0x280c), f64(0x280e), f64(0x2810)];

// 64-bit host-state fields. B.2.4.
pub(crate) const HOST_IA32_PAT: Field<W64> = f64(0x2c00);
pub(crate) const HOST_IA32_EFER: Field<W64> = f64(0x2c02);

// 32-bit control fields. B.3.1.
pub(crate) const PIN_BASED_VM_EXEC_CONTROL: Field<W32> = f32(0x4000);
pub(crate) const CPU_BASED_VM_EXEC_CONTROL: Field<W32> = f32(0x4002);
pub(crate) const EXCEPTION_BITMAP: Field<W32> = f32(0x4004);
pub(crate) const CR3_TARGET_COUNT: Field<W32> = f32(0x400a);
pub(crate) const VM_EXIT_CONTROLS: Field<W32> = f32(0x400c);
pub(crate) const VM_EXIT_MSR_STORE_COUNT: Field<W32> = f32(0x400e);
pub(crate) const VM_EXIT_MSR_LOAD_COUNT: Field<W32> = f32(0x4010);
pub(crate) const VM_ENTRY_CONTROLS: Field<W32> = f32(0x4012);
pub(crate) const VM_ENTRY_MSR_LOAD_COUNT: Field<W32> = f32(0x4014);
pub(crate) const VM_ENTRY_INTR_INFO: Field<W32> = f32(0x4016);
pub(crate) const VM_ENTRY_EXCEPTION_ERROR_CODE: Field<W32> = f32(0x4018);
pub(crate) const SECONDARY_VM_EXEC_CONTROL: Field<W32> = f32(0x401e);

// 32-bit read-only data fields. B.3.2.
pub(crate) const VM_INSTRUCTION_ERROR: Field<W32> = f32(0x4400);
pub(crate) const VM_EXIT_REASON: Field<W32> = f32(0x4402);
pub(crate) const VM_EXIT_INTR_INFO: Field<W32> = f32(0x4404);
pub(crate) const VM_EXIT_INTR_ERROR_CODE: Field<W32> = f32(0x4406);
pub(crate) const IDT_VECTORING_INFO: Field<W32> = f32(0x4408);
pub(crate) const IDT_VECTORING_ERROR_CODE: Field<W32> = f32(0x440a);
pub(crate) const VM_EXIT_INSTRUCTION_LEN: Field<W32> = f32(0x440c);
pub(crate) const VMX_INSTRUCTION_INFO: Field<W32> = f32(0x440e);

// 32-bit guest-state fields. B.3.3.
pub(crate) const GUEST_ES_LIMIT: Field<W32> = f32(0x4800);
pub(crate) const GUEST_CS_LIMIT: Field<W32> = f32(0x4802);
pub(crate) const GUEST_SS_LIMIT: Field<W32> = f32(0x4804);
pub(crate) const GUEST_DS_LIMIT: Field<W32> = f32(0x4806);
pub(crate) const GUEST_FS_LIMIT: Field<W32> = f32(0x4808);
pub(crate) const GUEST_GS_LIMIT: Field<W32> = f32(0x480a);
pub(crate) const GUEST_LDTR_LIMIT: Field<W32> = f32(0x480c);
pub(crate) const GUEST_TR_LIMIT: Field<W32> = f32(0x480e);
pub(crate) const GUEST_GDTR_LIMIT: Field<W32> = f32(0x4810);
pub(crate) const GUEST_IDTR_LIMIT: Field<W32> = f32(0x4812);
pub(crate) const GUEST_ES_AR_BYTES: Field<W32> = f32(0x4814);
pub(crate) const GUEST_CS_AR_BYTES: Field<W32> = f32(0x4816);
pub(crate) const GUEST_SS_AR_BYTES: Field<W32> = f32(0x4818);
pub(crate) const GUEST_DS_AR_BYTES: Field<W32> = f32(0x481a);
pub(crate) const GUEST_FS_AR_BYTES: Field<W32> = f32(0x481c);
pub(crate) const GUEST_GS_AR_BYTES: Field<W32> = f32(0x481e);
pub(crate) const GUEST_LDTR_AR_BYTES: Field<W32> = f32(0x4820);
pub(crate) const GUEST_TR_AR_BYTES: Field<W32> = f32(0x4822);
pub(crate) const GUEST_INTERRUPTIBILITY_INFO: Field<W32> = f32(0x4824);
pub(crate) const GUEST_ACTIVITY_STATE: Field<W32> = f32(0x4826);
pub(crate) const GUEST_SYSENTER_CS: Field<W32> = f32(0x482a);

// 32-bit host-state field. B.3.4.
pub(crate) const HOST_IA32_SYSENTER_CS: Field<W32> = f32(0x4c00);

// Natural-width control fields. B.4.1.
pub(crate) const CR0_GUEST_HOST_MASK: Field<Natural> = nat(0x6000);
pub(crate) const CR4_GUEST_HOST_MASK: Field<Natural> = nat(0x6002);
pub(crate) const CR0_READ_SHADOW: Field<Natural> = nat(0x6004);
pub(crate) const CR4_READ_SHADOW: Field<Natural> = nat(0x6006);

// Natural-width read-only data field. B.4.2.
pub(crate) const EXIT_QUALIFICATION: Field<Natural> = nat(0x6400);

// Natural-width guest-state fields. B.4.3.
pub(crate) const GUEST_CR0: Field<Natural> = nat(0x6800);
pub(crate) const GUEST_CR3: Field<Natural> = nat(0x6802);
pub(crate) const GUEST_CR4: Field<Natural> = nat(0x6804);
pub(crate) const GUEST_ES_BASE: Field<Natural> = nat(0x6806);
pub(crate) const GUEST_CS_BASE: Field<Natural> = nat(0x6808);
pub(crate) const GUEST_SS_BASE: Field<Natural> = nat(0x680a);
pub(crate) const GUEST_DS_BASE: Field<Natural> = nat(0x680c);
pub(crate) const GUEST_FS_BASE: Field<Natural> = nat(0x680e);
pub(crate) const GUEST_GS_BASE: Field<Natural> = nat(0x6810);
pub(crate) const GUEST_LDTR_BASE: Field<Natural> = nat(0x6812);
pub(crate) const GUEST_TR_BASE: Field<Natural> = nat(0x6814);
pub(crate) const GUEST_GDTR_BASE: Field<Natural> = nat(0x6816);
pub(crate) const GUEST_IDTR_BASE: Field<Natural> = nat(0x6818);
pub(crate) const GUEST_DR7: Field<Natural> = nat(0x681a);
pub(crate) const GUEST_RSP: Field<Natural> = nat(0x681c);
pub(crate) const GUEST_RIP: Field<Natural> = nat(0x681e);
pub(crate) const GUEST_RFLAGS: Field<Natural> = nat(0x6820);
pub(crate) const GUEST_PENDING_DBG_EXCEPTIONS: Field<Natural> = nat(0x6822);
pub(crate) const GUEST_SYSENTER_ESP: Field<Natural> = nat(0x6824);
pub(crate) const GUEST_SYSENTER_EIP: Field<Natural> = nat(0x6826);

// Natural-width host-state fields. B.4.4.
pub(crate) const HOST_CR0: Field<Natural> = nat(0x6c00);
pub(crate) const HOST_CR3: Field<Natural> = nat(0x6c02);
pub(crate) const HOST_CR4: Field<Natural> = nat(0x6c04);
pub(crate) const HOST_FS_BASE: Field<Natural> = nat(0x6c06);
pub(crate) const HOST_GS_BASE: Field<Natural> = nat(0x6c08);
pub(crate) const HOST_TR_BASE: Field<Natural> = nat(0x6c0a);
pub(crate) const HOST_GDTR_BASE: Field<Natural> = nat(0x6c0c);
pub(crate) const HOST_IDTR_BASE: Field<Natural> = nat(0x6c0e);
pub(crate) const HOST_IA32_SYSENTER_ESP: Field<Natural> = nat(0x6c10);
pub(crate) const HOST_IA32_SYSENTER_EIP: Field<Natural> = nat(0x6c12);
/// Written by the world switch itself (it is the stack pointer at VMLAUNCH).
pub(crate) const HOST_RSP: Field<Natural> = nat(0x6c14);
pub(crate) const HOST_RIP: Field<Natural> = nat(0x6c16);

/// The six data segments, LDTR and TR, each as its four guest fields.
pub(crate) struct SegmentFields {
    pub(crate) selector: Field<W16>,
    pub(crate) base: Field<Natural>,
    pub(crate) limit: Field<W32>,
    pub(crate) access_rights: Field<W32>,
}

const fn seg(
    selector: Field<W16>,
    base: Field<Natural>,
    limit: Field<W32>,
    access_rights: Field<W32>,
) -> SegmentFields {
    SegmentFields {
        selector,
        base,
        limit,
        access_rights,
    }
}

pub(crate) const ES: SegmentFields = seg(
    GUEST_ES_SELECTOR,
    GUEST_ES_BASE,
    GUEST_ES_LIMIT,
    GUEST_ES_AR_BYTES,
);
pub(crate) const CS: SegmentFields = seg(
    GUEST_CS_SELECTOR,
    GUEST_CS_BASE,
    GUEST_CS_LIMIT,
    GUEST_CS_AR_BYTES,
);
pub(crate) const SS: SegmentFields = seg(
    GUEST_SS_SELECTOR,
    GUEST_SS_BASE,
    GUEST_SS_LIMIT,
    GUEST_SS_AR_BYTES,
);
pub(crate) const DS: SegmentFields = seg(
    GUEST_DS_SELECTOR,
    GUEST_DS_BASE,
    GUEST_DS_LIMIT,
    GUEST_DS_AR_BYTES,
);
pub(crate) const FS: SegmentFields = seg(
    GUEST_FS_SELECTOR,
    GUEST_FS_BASE,
    GUEST_FS_LIMIT,
    GUEST_FS_AR_BYTES,
);
pub(crate) const GS: SegmentFields = seg(
    GUEST_GS_SELECTOR,
    GUEST_GS_BASE,
    GUEST_GS_LIMIT,
    GUEST_GS_AR_BYTES,
);
pub(crate) const LDTR: SegmentFields = seg(
    GUEST_LDTR_SELECTOR,
    GUEST_LDTR_BASE,
    GUEST_LDTR_LIMIT,
    GUEST_LDTR_AR_BYTES,
);
pub(crate) const TR: SegmentFields = seg(
    GUEST_TR_SELECTOR,
    GUEST_TR_BASE,
    GUEST_TR_LIMIT,
    GUEST_TR_AR_BYTES,
);

/// Segment access rights as the VMCS holds them: the descriptor's type
/// (3:0), S (4), DPL (6:5), P (7), AVL (12), L (13), D/B (14), G (15), and
/// bit 16, "unusable" (a null selector was loaded). SDM Vol. 3C 25.4.1,
/// Table 25-2.
pub(crate) mod access {
    pub(crate) const S: u32 = 1 << 4;
    pub(crate) const DPL_SHIFT: u32 = 5;
    pub(crate) const P: u32 = 1 << 7;
    pub(crate) const AVL: u32 = 1 << 12;
    pub(crate) const L: u32 = 1 << 13;
    pub(crate) const DB: u32 = 1 << 14;
    pub(crate) const G: u32 = 1 << 15;
    pub(crate) const UNUSABLE: u32 = 1 << 16;
}

/// Pin-based VM-execution controls. SDM Vol. 3C 25.6.1, Table 25-5.
pub(crate) mod pin {
    /// External interrupts exit (they stay pending for the host).
    pub(crate) const EXT_INTR_EXITING: u32 = 1 << 0;
    /// NMIs exit.
    pub(crate) const NMI_EXITING: u32 = 1 << 3;
    /// The guest's NMI blocking is tracked in its interruptibility state
    /// (set by an injected NMI, cleared by IRET), and NMI-window exiting
    /// becomes available. 25.6.1, 26.7.1.2.
    pub(crate) const VIRTUAL_NMIS: u32 = 1 << 5;
}

/// Primary processor-based VM-execution controls. 25.6.2, Table 25-6.
pub(crate) mod proc1 {
    pub(crate) const INTR_WINDOW_EXITING: u32 = 1 << 2;
    pub(crate) const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub(crate) const HLT_EXITING: u32 = 1 << 7;
    pub(crate) const MWAIT_EXITING: u32 = 1 << 10;
    pub(crate) const RDPMC_EXITING: u32 = 1 << 11;
    pub(crate) const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub(crate) const CR3_STORE_EXITING: u32 = 1 << 16;
    pub(crate) const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub(crate) const CR8_STORE_EXITING: u32 = 1 << 20;
    /// Exit when the guest can take an NMI (no virtual-NMI blocking).
    pub(crate) const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub(crate) const MOV_DR_EXITING: u32 = 1 << 23;
    pub(crate) const UNCOND_IO_EXITING: u32 = 1 << 24;
    pub(crate) const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub(crate) const MONITOR_EXITING: u32 = 1 << 29;
    pub(crate) const ACTIVATE_SECONDARY: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls. 25.6.2, Table 25-7.
pub(crate) mod proc2 {
    pub(crate) const ENABLE_EPT: u32 = 1 << 1;
    pub(crate) const ENABLE_VPID: u32 = 1 << 5;
    pub(crate) const WBINVD_EXITING: u32 = 1 << 6;
    pub(crate) const UNRESTRICTED_GUEST: u32 = 1 << 7;
}

/// VM-exit controls. 25.7.1, Table 25-13.
pub(crate) mod exit_ctl {
    /// The guest's DR7 and IA32_DEBUGCTL are saved (and the exit sets DR7
    /// to 0x400 and clears DEBUGCTL either way).
    pub(crate) const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The host runs in 64-bit mode after the exit.
    pub(crate) const HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    pub(crate) const ACK_INTR_ON_EXIT: u32 = 1 << 15;
    pub(crate) const SAVE_IA32_PAT: u32 = 1 << 18;
    pub(crate) const LOAD_IA32_PAT: u32 = 1 << 19;
    pub(crate) const SAVE_IA32_EFER: u32 = 1 << 20;
    pub(crate) const LOAD_IA32_EFER: u32 = 1 << 21;
}

/// VM-entry controls. 25.8.1, Table 25-15.
pub(crate) mod entry_ctl {
    /// DR7 and IA32_DEBUGCTL are loaded from the guest-state area: without
    /// it the guest runs with the host's (its breakpoints, its branch
    /// tracing).
    pub(crate) const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The guest is in IA-32e mode (EFER.LMA) after the entry.
    pub(crate) const IA32E_MODE: u32 = 1 << 9;
    pub(crate) const LOAD_IA32_PAT: u32 = 1 << 14;
    pub(crate) const LOAD_IA32_EFER: u32 = 1 << 15;
}

/// Interruption information, for events injected at VM entry and for
/// events reported by a VM exit (both the same format). SDM Vol. 3C
/// 25.8.3 Table 25-17, 25.9.2 Table 25-19.
pub(crate) mod intr_info {
    pub(crate) const VECTOR_MASK: u32 = 0xff;
    pub(crate) const TYPE_MASK: u32 = 7 << 8;
    pub(crate) const TYPE_EXT_INTR: u32 = 0 << 8;
    pub(crate) const TYPE_NMI: u32 = 2 << 8;
    pub(crate) const TYPE_HARD_EXCEPTION: u32 = 3 << 8;
    pub(crate) const ERROR_CODE_VALID: u32 = 1 << 11;
    pub(crate) const VALID: u32 = 1 << 31;
}

/// Guest interruptibility state. 25.4.2, Table 25-3.
pub(crate) mod interruptibility {
    pub(crate) const BLOCKING_BY_STI: u32 = 1 << 0;
    pub(crate) const BLOCKING_BY_MOV_SS: u32 = 1 << 1;
    /// NMIs are blocked (with virtual NMIs: until the guest's IRET).
    pub(crate) const BLOCKING_BY_NMI: u32 = 1 << 3;
}

/// Basic exit reasons (bits 15:0 of the exit reason). SDM Vol. 3D
/// Appendix C, Table C-1.
pub(crate) mod reason {
    pub(crate) const EXCEPTION_NMI: u16 = 0;
    pub(crate) const EXTERNAL_INTERRUPT: u16 = 1;
    pub(crate) const TRIPLE_FAULT: u16 = 2;
    pub(crate) const INIT: u16 = 3;
    pub(crate) const SIPI: u16 = 4;
    pub(crate) const IO_SMI: u16 = 5;
    pub(crate) const OTHER_SMI: u16 = 6;
    pub(crate) const INTERRUPT_WINDOW: u16 = 7;
    pub(crate) const NMI_WINDOW: u16 = 8;
    pub(crate) const CPUID: u16 = 10;
    pub(crate) const GETSEC: u16 = 11;
    pub(crate) const HLT: u16 = 12;
    pub(crate) const INVD: u16 = 13;
    pub(crate) const RDPMC: u16 = 15;
    pub(crate) const RSM: u16 = 17;
    pub(crate) const VMCALL: u16 = 18;
    pub(crate) const VMCLEAR: u16 = 19;
    pub(crate) const VMXON: u16 = 27;
    pub(crate) const CR_ACCESS: u16 = 28;
    pub(crate) const DR_ACCESS: u16 = 29;
    pub(crate) const IO_INSTRUCTION: u16 = 30;
    pub(crate) const MSR_READ: u16 = 31;
    pub(crate) const MSR_WRITE: u16 = 32;
    pub(crate) const MWAIT: u16 = 36;
    pub(crate) const MONITOR: u16 = 39;
    pub(crate) const EPT_VIOLATION: u16 = 48;
    pub(crate) const EPT_MISCONFIG: u16 = 49;
    pub(crate) const INVEPT: u16 = 50;
    pub(crate) const INVVPID: u16 = 53;
    pub(crate) const WBINVD: u16 = 54;
    pub(crate) const XSETBV: u16 = 55;
    pub(crate) const VMFUNC: u16 = 59;
    /// Bit 31 of the full exit reason: the VM entry failed (basic reason
    /// 33 invalid guest state, 34 MSR loading, 41 machine check).
    pub(crate) const FAILED_VMENTRY: u32 = 1 << 31;
}

/// EPT-violation exit qualification. SDM Vol. 3C 29.3.3.2, Table 29-7.
pub(crate) mod ept_violation {
    pub(crate) const WRITE: u64 = 1 << 1;
    pub(crate) const FETCH: u64 = 1 << 2;
    /// Bits 5:3: the entry allowed read, write, execute.
    pub(crate) const PERMISSIONS: u64 = 7 << 3;
    pub(crate) const LINEAR_VALID: u64 = 1 << 7;
    /// With [`LINEAR_VALID`]: the access was to the translated address (not
    /// to the guest's own paging structures).
    pub(crate) const TRANSLATED: u64 = 1 << 8;
    /// The access was by an IRET that unblocked NMIs (virtual NMIs): the
    /// blocking must be restored before the IRET runs again. 29.3.3.2,
    /// 28.2.3.
    pub(crate) const NMI_UNBLOCKED_BY_IRET: u64 = 1 << 12;
}
