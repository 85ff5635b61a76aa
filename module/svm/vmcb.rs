// SPDX-License-Identifier: GPL-2.0

//! The virtual machine control block: one 4 KiB page per vCPU, the control
//! area at offset 0 (what to intercept, how to run, why it exited) and the
//! state save area at 0x400 (the guest's registers). APM Vol. 2
//! Appendix B, Tables B-1 (control area) and B-2 (save area); the offsets
//! in the comments are from the start of the VMCB.

use crate::abi::{kvm_dtable, kvm_segment};
use core::mem::{offset_of, size_of};
use kernel::prelude::*;

/// A segment register as the VMCB holds it. APM Vol. 2 Table B-2.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Zeroable)]
pub(crate) struct Segment {
    pub(crate) selector: u16,
    /// The descriptor's attribute bits packed into 12 bits: type (3:0),
    /// S (4), DPL (6:5), P (7), AVL (8), L (9), D/B (10), G (11).
    pub(crate) attrib: u16,
    pub(crate) limit: u32,
    pub(crate) base: u64,
}

/// The control area (0x000–0x3ff).
#[repr(C)]
#[derive(Clone, Copy, Zeroable)]
pub(crate) struct Control {
    /// +0x000: intercept CR reads (15:0) and writes (31:16).
    pub(crate) intercept_cr: u32,
    /// +0x004: intercept DR reads (15:0) and writes (31:16).
    pub(crate) intercept_dr: u32,
    /// +0x008: intercept exception vector n (bit n).
    pub(crate) intercept_exceptions: u32,
    /// +0x00c: the first word of instruction intercepts ([`intercept1`]).
    pub(crate) intercept1: u32,
    /// +0x010: the second word ([`intercept2`]).
    pub(crate) intercept2: u32,
    /// +0x014: the third word (INVLPGB, INVPCID, MCOMMIT, TLBSYNC...).
    pub(crate) intercept3: u32,
    _reserved_018: [u8; 0x3c - 0x18],
    /// +0x03c
    pub(crate) pause_filter_threshold: u16,
    /// +0x03e
    pub(crate) pause_filter_count: u16,
    /// +0x040: physical address of the I/O permission map (12 KiB).
    pub(crate) iopm_base_pa: u64,
    /// +0x048: physical address of the MSR permission map (8 KiB).
    pub(crate) msrpm_base_pa: u64,
    /// +0x050: added to the host TSC for the guest's RDTSC and TSC MSR.
    pub(crate) tsc_offset: u64,
    /// +0x058: the guest's address-space id, never 0 (that is the host's).
    pub(crate) asid: u32,
    /// +0x05c: TLB_CONTROL ([`tlb_control`]).
    pub(crate) tlb_control: u8,
    _reserved_05d: [u8; 3],
    /// +0x060: virtual interrupt control ([`int_ctl`]).
    pub(crate) int_ctl: u32,
    /// +0x064: the vector of a virtual interrupt (V_IRQ).
    pub(crate) int_vector: u32,
    /// +0x068: bit 0: the guest is in an interrupt shadow (after STI or
    /// MOV SS).
    pub(crate) int_state: u32,
    _reserved_06c: [u8; 4],
    /// +0x070: why the guest exited ([`exit`]); -1 for invalid state.
    pub(crate) exit_code: u64,
    /// +0x078
    pub(crate) exit_info1: u64,
    /// +0x080
    pub(crate) exit_info2: u64,
    /// +0x088: an event that was being delivered when the exit happened
    /// ([`event`] format), to be injected again.
    pub(crate) exit_int_info: u32,
    /// +0x08c
    pub(crate) exit_int_info_err: u32,
    /// +0x090: bit 0: nested paging enabled.
    pub(crate) misc_ctl: u64,
    /// +0x098
    pub(crate) avic_apic_bar: u64,
    /// +0x0a0
    pub(crate) ghcb_gpa: u64,
    /// +0x0a8: an event to inject at VMRUN ([`event`] format).
    pub(crate) event_inj: u32,
    /// +0x0ac
    pub(crate) event_inj_err: u32,
    /// +0x0b0: the nested page table root (the guest-physical to host-physical map).
    pub(crate) nested_cr3: u64,
    /// +0x0b8: LBR virtualisation and friends.
    pub(crate) misc_ctl2: u64,
    /// +0x0c0: VMCB clean bits: set bits let the CPU skip reloading state
    /// it has cached. rkvm writes the whole state before every VMRUN and
    /// always leaves this 0. APM Vol. 2 15.15.
    pub(crate) clean: u32,
    _reserved_0c4: u32,
    /// +0x0c8: the RIP after the intercepted instruction (CPUs with NRIPS).
    pub(crate) next_rip: u64,
    /// +0x0d0: bytes fetched for a nested page fault (decode assists).
    pub(crate) insn_len: u8,
    /// +0x0d1
    pub(crate) insn_bytes: [u8; 15],
    _reserved_0e0: [u8; 0x400 - 0xe0],
}

/// The state save area (0x400–0xfff).
#[repr(C)]
#[derive(Clone, Copy, Zeroable)]
pub(crate) struct Save {
    /// +0x400
    pub(crate) es: Segment,
    /// +0x410
    pub(crate) cs: Segment,
    /// +0x420
    pub(crate) ss: Segment,
    /// +0x430
    pub(crate) ds: Segment,
    /// +0x440
    pub(crate) fs: Segment,
    /// +0x450
    pub(crate) gs: Segment,
    /// +0x460: only limit and base are used.
    pub(crate) gdtr: Segment,
    /// +0x470
    pub(crate) ldtr: Segment,
    /// +0x480: only limit and base are used.
    pub(crate) idtr: Segment,
    /// +0x490
    pub(crate) tr: Segment,
    _reserved_4a0: [u8; 0x4cb - 0x4a0],
    /// +0x4cb: the current privilege level; must equal SS.DPL.
    pub(crate) cpl: u8,
    _reserved_4cc: [u8; 4],
    /// +0x4d0
    pub(crate) efer: u64,
    _reserved_4d8: [u8; 0x548 - 0x4d8],
    /// +0x548
    pub(crate) cr4: u64,
    /// +0x550
    pub(crate) cr3: u64,
    /// +0x558
    pub(crate) cr0: u64,
    /// +0x560
    pub(crate) dr7: u64,
    /// +0x568
    pub(crate) dr6: u64,
    /// +0x570
    pub(crate) rflags: u64,
    /// +0x578
    pub(crate) rip: u64,
    _reserved_580: [u8; 0x5d8 - 0x580],
    /// +0x5d8
    pub(crate) rsp: u64,
    /// +0x5e0
    pub(crate) s_cet: u64,
    /// +0x5e8
    pub(crate) ssp: u64,
    /// +0x5f0
    pub(crate) isst_addr: u64,
    /// +0x5f8
    pub(crate) rax: u64,
    /// +0x600
    pub(crate) star: u64,
    /// +0x608
    pub(crate) lstar: u64,
    /// +0x610
    pub(crate) cstar: u64,
    /// +0x618
    pub(crate) sfmask: u64,
    /// +0x620
    pub(crate) kernel_gs_base: u64,
    /// +0x628
    pub(crate) sysenter_cs: u64,
    /// +0x630
    pub(crate) sysenter_esp: u64,
    /// +0x638
    pub(crate) sysenter_eip: u64,
    /// +0x640
    pub(crate) cr2: u64,
    _reserved_648: [u8; 0x668 - 0x648],
    /// +0x668: the guest's PAT, used for nested paging.
    pub(crate) g_pat: u64,
    /// +0x670
    pub(crate) dbgctl: u64,
    _reserved_678: [u8; 0x1000 - 0x678],
}

/// A VMCB. The CPU needs it 4 KiB aligned; a `KBox<Vmcb>` is (kmalloc
/// aligns power-of-two sizes naturally, and the type asks for it).
#[repr(C, align(4096))]
#[derive(Zeroable)]
pub(crate) struct Vmcb {
    pub(crate) control: Control,
    pub(crate) save: Save,
}

const _: () = assert!(size_of::<Vmcb>() == 4096);
const _: () = assert!(offset_of!(Vmcb, save) == 0x400);
const _: () = assert!(offset_of!(Control, iopm_base_pa) == 0x40);
const _: () = assert!(offset_of!(Control, asid) == 0x58);
const _: () = assert!(offset_of!(Control, int_ctl) == 0x60);
const _: () = assert!(offset_of!(Control, exit_code) == 0x70);
const _: () = assert!(offset_of!(Control, exit_int_info) == 0x88);
const _: () = assert!(offset_of!(Control, misc_ctl) == 0x90);
const _: () = assert!(offset_of!(Control, event_inj) == 0xa8);
const _: () = assert!(offset_of!(Control, nested_cr3) == 0xb0);
const _: () = assert!(offset_of!(Control, clean) == 0xc0);
const _: () = assert!(offset_of!(Control, next_rip) == 0xc8);
const _: () = assert!(offset_of!(Control, insn_len) == 0xd0);
const _: () = assert!(0x400 + offset_of!(Save, tr) == 0x490);
const _: () = assert!(0x400 + offset_of!(Save, cpl) == 0x4cb);
const _: () = assert!(0x400 + offset_of!(Save, efer) == 0x4d0);
const _: () = assert!(0x400 + offset_of!(Save, cr4) == 0x548);
const _: () = assert!(0x400 + offset_of!(Save, rip) == 0x578);
const _: () = assert!(0x400 + offset_of!(Save, rsp) == 0x5d8);
const _: () = assert!(0x400 + offset_of!(Save, rax) == 0x5f8);
const _: () = assert!(0x400 + offset_of!(Save, star) == 0x600);
const _: () = assert!(0x400 + offset_of!(Save, cr2) == 0x640);
const _: () = assert!(0x400 + offset_of!(Save, g_pat) == 0x668);

/// Bits of [`Control::intercept1`] (VMCB +0x00c). APM Vol. 2 Table B-1.
pub(crate) mod intercept1 {
    pub(crate) const INTR: u32 = 1 << 0;
    pub(crate) const NMI: u32 = 1 << 1;
    pub(crate) const SMI: u32 = 1 << 2;
    pub(crate) const INIT: u32 = 1 << 3;
    pub(crate) const VINTR: u32 = 1 << 4;
    pub(crate) const RDPMC: u32 = 1 << 15;
    pub(crate) const CPUID: u32 = 1 << 18;
    pub(crate) const RSM: u32 = 1 << 19;
    pub(crate) const IRET: u32 = 1 << 20;
    pub(crate) const INVD: u32 = 1 << 22;
    pub(crate) const HLT: u32 = 1 << 24;
    pub(crate) const INVLPGA: u32 = 1 << 26;
    pub(crate) const IOIO_PROT: u32 = 1 << 27;
    pub(crate) const MSR_PROT: u32 = 1 << 28;
    pub(crate) const TASK_SWITCH: u32 = 1 << 29;
    pub(crate) const FERR_FREEZE: u32 = 1 << 30;
    pub(crate) const SHUTDOWN: u32 = 1 << 31;
}

/// Bits of [`Control::intercept2`] (VMCB +0x010). APM Vol. 2 Table B-1.
pub(crate) mod intercept2 {
    /// VMRUN must always be intercepted, or VMRUN fails. APM Vol. 2 15.5.1.
    pub(crate) const VMRUN: u32 = 1 << 0;
    pub(crate) const VMMCALL: u32 = 1 << 1;
    pub(crate) const VMLOAD: u32 = 1 << 2;
    pub(crate) const VMSAVE: u32 = 1 << 3;
    pub(crate) const STGI: u32 = 1 << 4;
    pub(crate) const CLGI: u32 = 1 << 5;
    pub(crate) const SKINIT: u32 = 1 << 6;
    pub(crate) const RDTSCP: u32 = 1 << 7;
    pub(crate) const ICEBP: u32 = 1 << 8;
    pub(crate) const WBINVD: u32 = 1 << 9;
    pub(crate) const MONITOR: u32 = 1 << 10;
    pub(crate) const MWAIT: u32 = 1 << 11;
    pub(crate) const MWAIT_COND: u32 = 1 << 12;
    pub(crate) const XSETBV: u32 = 1 << 13;
    pub(crate) const RDPRU: u32 = 1 << 14;
}

/// Bits of [`Control::intercept3`] (VMCB +0x014). APM Vol. 2 Table B-1.
pub(crate) mod intercept3 {
    pub(crate) const INVLPGB: u32 = 1 << 0;
    pub(crate) const INVLPGB_ILLEGAL: u32 = 1 << 1;
    pub(crate) const INVPCID: u32 = 1 << 2;
    pub(crate) const MCOMMIT: u32 = 1 << 3;
    pub(crate) const TLBSYNC: u32 = 1 << 4;
}

/// Values of [`Control::tlb_control`]. APM Vol. 2 15.16.1.
pub(crate) mod tlb_control {
    pub(crate) const NOTHING: u8 = 0;
    /// Flush every ASID's TLB entries at VMRUN.
    pub(crate) const FLUSH_ALL: u8 = 1;
    /// Flush this guest's ASID's TLB entries at VMRUN.
    pub(crate) const FLUSH_ASID: u8 = 3;
}

/// Bits of [`Control::int_ctl`]. APM Vol. 2 15.21.
pub(crate) mod int_ctl {
    /// A virtual interrupt is pending.
    pub(crate) const V_IRQ: u32 = 1 << 8;
    /// The virtual interrupt's priority, bits 19:16.
    pub(crate) const V_INTR_PRIO_SHIFT: u32 = 16;
    /// The virtual interrupt ignores the guest's TPR.
    pub(crate) const V_IGN_TPR: u32 = 1 << 20;
    /// The guest's EFLAGS.IF and TPR only mask virtual interrupts; the
    /// host's IF masks physical ones.
    pub(crate) const V_INTR_MASKING: u32 = 1 << 24;
}

/// [`Control::misc_ctl`] bit 0: nested paging. APM Vol. 2 15.25.3.
pub(crate) const NP_ENABLE: u64 = 1 << 0;

/// [`Control::int_state`] bit 0: interrupt shadow. APM Vol. 2 15.21.5.
pub(crate) const INTERRUPT_SHADOW: u32 = 1 << 0;

/// EVENTINJ and EXITINTINFO: vector (7:0), type (10:8), error code valid
/// (11), valid (31). APM Vol. 2 15.20.
pub(crate) mod event {
    pub(crate) const VECTOR_MASK: u32 = 0xff;
    pub(crate) const TYPE_SHIFT: u32 = 8;
    pub(crate) const TYPE_MASK: u32 = 7 << TYPE_SHIFT;
    pub(crate) const TYPE_INTR: u32 = 0 << TYPE_SHIFT;
    pub(crate) const TYPE_NMI: u32 = 2 << TYPE_SHIFT;
    pub(crate) const TYPE_EXCEPTION: u32 = 3 << TYPE_SHIFT;
    pub(crate) const TYPE_SOFT_INT: u32 = 4 << TYPE_SHIFT;
    pub(crate) const ERROR_VALID: u32 = 1 << 11;
    pub(crate) const VALID: u32 = 1 << 31;
}

/// Exit codes. APM Vol. 2 Appendix C.
pub(crate) mod exit {
    /// MOV to CR0 (0x10) to MOV to CR15 (0x1f).
    pub(crate) const CR_WRITE_FIRST: u64 = 0x10;
    pub(crate) const CR_WRITE_LAST: u64 = 0x1f;
    /// MOV from DR0 (0x20) to MOV to DR15 (0x3f).
    pub(crate) const DR_FIRST: u64 = 0x20;
    pub(crate) const DR_LAST: u64 = 0x3f;
    pub(crate) const EXCP_BASE: u64 = 0x40;
    pub(crate) const EXCP_LAST: u64 = 0x5f;
    pub(crate) const INTR: u64 = 0x60;
    pub(crate) const NMI: u64 = 0x61;
    pub(crate) const SMI: u64 = 0x62;
    pub(crate) const INIT: u64 = 0x63;
    pub(crate) const VINTR: u64 = 0x64;
    pub(crate) const IRET: u64 = 0x74;
    pub(crate) const RDPMC: u64 = 0x6f;
    pub(crate) const CPUID: u64 = 0x72;
    pub(crate) const RSM: u64 = 0x73;
    pub(crate) const INVD: u64 = 0x76;
    pub(crate) const HLT: u64 = 0x78;
    pub(crate) const IOIO: u64 = 0x7b;
    pub(crate) const MSR: u64 = 0x7c;
    pub(crate) const SHUTDOWN: u64 = 0x7f;
    pub(crate) const VMRUN: u64 = 0x80;
    pub(crate) const VMMCALL: u64 = 0x81;
    pub(crate) const VMLOAD: u64 = 0x82;
    pub(crate) const VMSAVE: u64 = 0x83;
    pub(crate) const STGI: u64 = 0x84;
    pub(crate) const CLGI: u64 = 0x85;
    pub(crate) const SKINIT: u64 = 0x86;
    pub(crate) const RDTSCP: u64 = 0x87;
    pub(crate) const ICEBP: u64 = 0x88;
    pub(crate) const WBINVD: u64 = 0x89;
    pub(crate) const MONITOR: u64 = 0x8a;
    pub(crate) const MWAIT: u64 = 0x8b;
    pub(crate) const MWAIT_COND: u64 = 0x8c;
    pub(crate) const XSETBV: u64 = 0x8d;
    pub(crate) const RDPRU: u64 = 0x8e;
    pub(crate) const INVLPGB: u64 = 0xa0;
    pub(crate) const INVLPGB_ILLEGAL: u64 = 0xa1;
    pub(crate) const INVPCID: u64 = 0xa2;
    pub(crate) const MCOMMIT: u64 = 0xa3;
    pub(crate) const TLBSYNC: u64 = 0xa4;
    pub(crate) const NPF: u64 = 0x400;
    /// VMRUN found the guest state invalid. APM Vol. 2 15.5.1.
    pub(crate) const INVALID: u64 = u64::MAX;
    /// The same, as QEMU's emulation stores it (only the low 32 bits).
    pub(crate) const INVALID_32: u64 = 0xffff_ffff;
}

/// EXITINFO1 of an IOIO exit. APM Vol. 2 15.10.2, Figure 15-2.
pub(crate) mod ioio {
    /// 1 = IN, 0 = OUT.
    pub(crate) const IN: u64 = 1 << 0;
    /// INS or OUTS.
    pub(crate) const STRING: u64 = 1 << 2;
    pub(crate) const REP: u64 = 1 << 3;
    /// Operand size: one of bits 4 (8-bit), 5 (16-bit), 6 (32-bit).
    pub(crate) const SIZE_SHIFT: u32 = 4;
    /// Address size: one of bits 7 (16-bit), 8 (32-bit), 9 (64-bit).
    pub(crate) const ADDR_SHIFT: u32 = 7;
    /// The effective segment of OUTS (bits 12:10), when decode assists
    /// say so; rkvm decodes the prefix itself.
    pub(crate) const PORT_SHIFT: u32 = 16;
}

/// EXITINFO1 of a nested page fault: the #PF error code bits, and which
/// access faulted. APM Vol. 2 15.25.6.
pub(crate) mod npf {
    pub(crate) const PRESENT: u64 = 1 << 0;
    pub(crate) const WRITE: u64 = 1 << 1;
    pub(crate) const FETCH: u64 = 1 << 4;
    /// The fault was on an access to the guest's own page tables.
    pub(crate) const GUEST_PAGE_TABLE: u64 = 1 << 33;
}

/// EXITINFO1 of a MOV CRx/DRx intercept with decode assists: bit 63 says
/// the instruction was a MOV, bits 3:0 name its GPR. APM Vol. 2 15.33.2.
pub(crate) mod mov_cr {
    pub(crate) const MOV: u64 = 1 << 63;
    pub(crate) const GPR_MASK: u64 = 0xf;
}

/// Converts a KVM segment to the VMCB's packed form. A segment KVM calls
/// unusable becomes not present, as on SVM there is no other way to say so.
pub(crate) fn segment_from_kvm(s: &kvm_segment) -> Segment {
    let present = s.present != 0 && s.unusable == 0;
    let attrib = u16::from(s.type_ & 0xf)
        | u16::from(s.s & 1) << 4
        | u16::from(s.dpl & 3) << 5
        | u16::from(present) << 7
        | u16::from(s.avl & 1) << 8
        | u16::from(s.l & 1) << 9
        | u16::from(s.db & 1) << 10
        | u16::from(s.g & 1) << 11;
    Segment {
        selector: s.selector,
        attrib,
        limit: s.limit,
        base: s.base,
    }
}

/// Converts a VMCB segment back to KVM's form; not present means unusable.
pub(crate) fn segment_to_kvm(s: &Segment) -> kvm_segment {
    let bit = |n: u16| ((s.attrib >> n) & 1) as u8;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (s.attrib & 0xf) as u8,
        s: bit(4),
        dpl: ((s.attrib >> 5) & 3) as u8,
        present: bit(7),
        avl: bit(8),
        l: bit(9),
        db: bit(10),
        g: bit(11),
        unusable: 1 - bit(7),
        padding: 0,
    }
}

/// A descriptor table register in the VMCB's segment slot.
pub(crate) fn dtable_from_kvm(d: &kvm_dtable) -> Segment {
    Segment {
        selector: 0,
        attrib: 0,
        limit: u32::from(d.limit),
        base: d.base,
    }
}

/// And back.
pub(crate) fn dtable_to_kvm(s: &Segment) -> kvm_dtable {
    kvm_dtable {
        base: s.base,
        limit: s.limit as u16,
        padding: [0; 3],
    }
}
