// SPDX-License-Identifier: GPL-2.0

//! System management mode (SMM): the processor state an SMI saves and RSM
//! restores, in the layout KVM uses. SDM Vol. 3C chapter 32 ("System
//! Management Mode"), APM Vol. 2 10 ("System-Management Mode").
//!
//! # What happens at an SMI
//!
//! Firmware owns SMM: it sets up SMRAM, a memory range only visible in SMM,
//! and the processor's SMBASE (0x30000 after RESET). An SMI (from an APIC
//! message with delivery mode SMI, or from the VMM) makes the processor:
//!
//! 1. write its state into the *state-save area*, the 512 bytes at
//!    SMBASE + 0xFE00 ([`save`]);
//! 2. enter a flat real-address-like mode: CS base SMBASE, every segment
//!    limit 4 GiB, paging and protection off, IF clear, NMIs blocked
//!    ([`handler_entry`]);
//! 3. run the handler at SMBASE + 0x8000 ([`HANDLER`]).
//!
//! The handler ends with RSM, which loads the state back from the save
//! area ([`restore`]), including a new SMBASE if the handler changed it
//! there (SMBASE relocation), and resumes the interrupted program. A
//! state RSM cannot load (reserved bits, an inconsistent paging mode) is a
//! shutdown.
//!
//! # Whose layout
//!
//! Real processors each have their own save-area format, and no
//! architecture manual fixes one that covers everything a hypervisor
//! needs. KVM defines its own (`arch/x86/kvm/smm.h`): Intel's P6 layout
//! for vCPUs without long mode, AMD64's layout for those with it, plus the
//! interrupt shadow in a reserved byte. rkvm writes and reads the same
//! bytes, so that firmware written for KVM (SeaBIOS, OVMF) and a state
//! saved on one device and restored on the other agree. The offsets below
//! are from SMBASE + 0xFE00.
//!
//! Pure logic: the kernel glue (run/smm.rs) moves the bytes to and from
//! the SMM address space and decides when an SMI is taken.

use crate::abi::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};
use crate::x86::regs::{cr0, efer};

/// SMBASE after RESET. SDM Vol. 3C 32.4 ("SMRAM"), APM Vol. 2 10.2.1.
pub(crate) const SMBASE_RESET: u64 = 0x3_0000;
/// Where the handler starts, from SMBASE. SDM Vol. 3C 32.5.1.
pub(crate) const HANDLER: u64 = 0x8000;
/// Where the state-save area starts, from SMBASE. SDM Vol. 3C 32.4.1.
pub(crate) const SAVE_AREA: u64 = 0xfe00;
/// The save area's size: it runs to SMBASE + 0xFFFF.
pub(crate) const SAVE_AREA_BYTES: usize = 512;

/// The revision identifiers KVM writes (bit 17: SMBASE relocation
/// supported; the low bits name the format).
const REVISION_32: u32 = 0x0002_0000;
const REVISION_64: u32 = 0x0002_0064;

/// The processor state an SMI saves and RSM restores.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SavedState {
    pub(crate) regs: kvm_regs,
    pub(crate) sregs: kvm_sregs,
    pub(crate) dr6: u64,
    pub(crate) dr7: u64,
    /// SMBASE: at an SMI the current one; at RSM the one to use from then
    /// on (the handler may have moved it).
    pub(crate) smbase: u64,
    /// The SMI came between STI or MOV SS and the next instruction.
    pub(crate) interrupt_shadow: bool,
}

/// Why RSM cannot resume: the processor shuts down instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RsmError {
    /// DR6 or DR7 with bits in their reserved upper half.
    DebugRegister,
}

// ---- the segment attributes -------------------------------------------

/// A segment's attributes as the save area holds them: descriptor bits
/// 8-23 of the second word (type, S, DPL, P, AVL, L, D/B, G), KVM's
/// `enter_smm_get_segment_flags`. SDM Vol. 3A 3.4.5. An unusable segment
/// is saved not present, whatever its P bit says (VMX leaves the other
/// attributes of an unusable segment undefined; KVM's `vmx_get_segment`
/// reports it not present), so that RSM brings it back unusable.
fn attributes(s: &kvm_segment) -> u32 {
    let present = s.present & 1 != 0 && s.unusable == 0;
    u32::from(s.type_ & 0xf) << 8
        | u32::from(s.s & 1) << 12
        | u32::from(s.dpl & 3) << 13
        | u32::from(present) << 15
        | u32::from(s.avl & 1) << 20
        | u32::from(s.l & 1) << 21
        | u32::from(s.db & 1) << 22
        | u32::from(s.g & 1) << 23
}

/// The segment those attributes describe; a segment that is not present
/// is unusable, as RSM loads it (KVM's `rsm_set_desc_flags`).
fn segment(selector: u16, base: u64, limit: u32, flags: u32) -> kvm_segment {
    let bit = |n: u32| ((flags >> n) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((flags >> 8) & 0xf) as u8,
        s: bit(12),
        dpl: ((flags >> 13) & 3) as u8,
        present: bit(15),
        avl: bit(20),
        l: bit(21),
        db: bit(22),
        g: bit(23),
        unusable: 1 - bit(15),
        padding: 0,
    }
}

// ---- little-endian fields ----------------------------------------------

struct Area<'a>(&'a mut [u8; SAVE_AREA_BYTES]);

impl Area<'_> {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn u16(&mut self, at: usize, v: u16) {
        self.put(at, &v.to_le_bytes());
    }
    fn u32(&mut self, at: usize, v: u32) {
        self.put(at, &v.to_le_bytes());
    }
    fn u64(&mut self, at: usize, v: u64) {
        self.put(at, &v.to_le_bytes());
    }
}

fn get<const N: usize>(area: &[u8; SAVE_AREA_BYTES], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&area[at..at + N]);
    out
}
fn get_u16(area: &[u8; SAVE_AREA_BYTES], at: usize) -> u16 {
    u16::from_le_bytes(get(area, at))
}
fn get_u32(area: &[u8; SAVE_AREA_BYTES], at: usize) -> u32 {
    u32::from_le_bytes(get(area, at))
}
fn get_u64(area: &[u8; SAVE_AREA_BYTES], at: usize) -> u64 {
    u64::from_le_bytes(get(area, at))
}

/// The general-purpose registers in the processor's own numbering (RAX,
/// RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15), which both layouts use.
fn gprs(r: &kvm_regs) -> [u64; 16] {
    [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ]
}

fn set_gprs(r: &mut kvm_regs, g: [u64; 16]) {
    [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ] = g;
}

// ---- the 64-bit layout (AMD64's; vCPUs with long mode) -------------------

/// Offsets of the 64-bit layout (KVM's `struct kvm_smram_state_64`, after
/// APM Vol. 2 Table 10-2). Each segment is 16 bytes: selector (2),
/// attributes >> 8 (2), limit (4), base (8).
mod l64 {
    pub(super) const ES: usize = 0x00;
    pub(super) const CS: usize = 0x10;
    pub(super) const SS: usize = 0x20;
    pub(super) const DS: usize = 0x30;
    pub(super) const FS: usize = 0x40;
    pub(super) const GS: usize = 0x50;
    pub(super) const GDTR: usize = 0x60;
    pub(super) const LDTR: usize = 0x70;
    pub(super) const IDTR: usize = 0x80;
    pub(super) const TR: usize = 0x90;
    /// KVM's extension: the interrupt shadow (a byte AMD reserves).
    pub(super) const INT_SHADOW: usize = 0xcb;
    pub(super) const EFER: usize = 0xd0;
    pub(super) const REVISION: usize = 0xfc;
    pub(super) const SMBASE: usize = 0x100;
    pub(super) const CR4: usize = 0x148;
    pub(super) const CR3: usize = 0x150;
    pub(super) const CR0: usize = 0x158;
    pub(super) const DR7: usize = 0x160;
    pub(super) const DR6: usize = 0x168;
    pub(super) const RFLAGS: usize = 0x170;
    pub(super) const RIP: usize = 0x178;
    /// R15 first, down to RAX last.
    pub(super) const GPRS: usize = 0x180;
}

fn put_seg64(a: &mut Area<'_>, at: usize, s: &kvm_segment) {
    a.u16(at, s.selector);
    a.u16(at + 2, (attributes(s) >> 8) as u16);
    a.u32(at + 4, s.limit);
    a.u64(at + 8, s.base);
}

fn put_table64(a: &mut Area<'_>, at: usize, t: &kvm_dtable) {
    a.u32(at + 4, u32::from(t.limit));
    a.u64(at + 8, t.base);
}

fn seg64(area: &[u8; SAVE_AREA_BYTES], at: usize) -> kvm_segment {
    segment(
        get_u16(area, at),
        get_u64(area, at + 8),
        get_u32(area, at + 4),
        u32::from(get_u16(area, at + 2)) << 8,
    )
}

fn table64(area: &[u8; SAVE_AREA_BYTES], at: usize) -> kvm_dtable {
    kvm_dtable {
        base: get_u64(area, at + 8),
        limit: get_u32(area, at + 4) as u16,
        padding: [0; 3],
    }
}

// ---- the 32-bit layout (Intel P6's; vCPUs without long mode) -------------

/// Offsets of the 32-bit layout (KVM's `struct kvm_smram_state_32`, after
/// the P6's). Each segment is 12 bytes: attributes (4), limit (4), base
/// (4); the selectors are kept apart.
mod l32 {
    pub(super) const SMBASE: usize = 0xf8;
    pub(super) const REVISION: usize = 0xfc;
    pub(super) const CR4: usize = 0x114;
    /// KVM's extension: the interrupt shadow (a reserved byte).
    pub(super) const INT_SHADOW: usize = 0x11a;
    pub(super) const DS: usize = 0x12c;
    pub(super) const FS: usize = 0x138;
    pub(super) const GS: usize = 0x144;
    pub(super) const IDTR: usize = 0x150;
    pub(super) const TR: usize = 0x15c;
    pub(super) const GDTR: usize = 0x16c;
    pub(super) const LDTR: usize = 0x178;
    pub(super) const ES: usize = 0x184;
    pub(super) const CS: usize = 0x190;
    pub(super) const SS: usize = 0x19c;
    pub(super) const ES_SEL: usize = 0x1a8;
    pub(super) const CS_SEL: usize = 0x1ac;
    pub(super) const SS_SEL: usize = 0x1b0;
    pub(super) const DS_SEL: usize = 0x1b4;
    pub(super) const FS_SEL: usize = 0x1b8;
    pub(super) const GS_SEL: usize = 0x1bc;
    pub(super) const LDTR_SEL: usize = 0x1c0;
    pub(super) const TR_SEL: usize = 0x1c4;
    pub(super) const DR7: usize = 0x1c8;
    pub(super) const DR6: usize = 0x1cc;
    /// EAX first, up to EDI.
    pub(super) const GPRS: usize = 0x1d0;
    pub(super) const EIP: usize = 0x1f0;
    pub(super) const EFLAGS: usize = 0x1f4;
    pub(super) const CR3: usize = 0x1f8;
    pub(super) const CR0: usize = 0x1fc;
}

fn put_seg32(a: &mut Area<'_>, at: usize, sel_at: usize, s: &kvm_segment) {
    a.u32(at, attributes(s));
    a.u32(at + 4, s.limit);
    a.u32(at + 8, s.base as u32);
    a.u32(sel_at, u32::from(s.selector));
}

fn put_table32(a: &mut Area<'_>, at: usize, t: &kvm_dtable) {
    a.u32(at + 4, u32::from(t.limit));
    a.u32(at + 8, t.base as u32);
}

fn seg32(area: &[u8; SAVE_AREA_BYTES], at: usize, sel_at: usize) -> kvm_segment {
    segment(
        get_u32(area, sel_at) as u16,
        u64::from(get_u32(area, at + 8)),
        get_u32(area, at + 4),
        get_u32(area, at),
    )
}

fn table32(area: &[u8; SAVE_AREA_BYTES], at: usize) -> kvm_dtable {
    kvm_dtable {
        base: u64::from(get_u32(area, at + 8)),
        limit: get_u32(area, at + 4) as u16,
        padding: [0; 3],
    }
}

// ---- SMI and RSM ---------------------------------------------------------

/// The save area an SMI writes for state `s`: the 64-bit layout for a vCPU
/// whose CPUID has long mode (`long_mode`), the 32-bit one otherwise, as
/// KVM's `enter_smm_save_state_64`/`_32`. Fields KVM leaves 0 (I/O restart,
/// auto-HALT restart, the nested-SVM words) are 0.
pub(crate) fn save(s: &SavedState, long_mode: bool) -> [u8; SAVE_AREA_BYTES] {
    let mut bytes = [0u8; SAVE_AREA_BYTES];
    let mut a = Area(&mut bytes);
    let r = &s.regs;
    let sr = &s.sregs;
    if long_mode {
        for (i, v) in gprs(r).iter().enumerate() {
            a.u64(l64::GPRS + 8 * (15 - i), *v);
        }
        a.u64(l64::RIP, r.rip);
        a.u64(l64::RFLAGS, r.rflags);
        a.u64(l64::DR6, s.dr6);
        a.u64(l64::DR7, s.dr7);
        a.u64(l64::CR0, sr.cr0);
        a.u64(l64::CR3, sr.cr3);
        a.u64(l64::CR4, sr.cr4);
        a.u32(l64::SMBASE, s.smbase as u32);
        a.u32(l64::REVISION, REVISION_64);
        a.u64(l64::EFER, sr.efer);
        put_seg64(&mut a, l64::TR, &sr.tr);
        put_table64(&mut a, l64::IDTR, &sr.idt);
        put_seg64(&mut a, l64::LDTR, &sr.ldt);
        put_table64(&mut a, l64::GDTR, &sr.gdt);
        put_seg64(&mut a, l64::ES, &sr.es);
        put_seg64(&mut a, l64::CS, &sr.cs);
        put_seg64(&mut a, l64::SS, &sr.ss);
        put_seg64(&mut a, l64::DS, &sr.ds);
        put_seg64(&mut a, l64::FS, &sr.fs);
        put_seg64(&mut a, l64::GS, &sr.gs);
        a.put(l64::INT_SHADOW, &[u8::from(s.interrupt_shadow)]);
    } else {
        a.u32(l32::CR0, sr.cr0 as u32);
        a.u32(l32::CR3, sr.cr3 as u32);
        a.u32(l32::EFLAGS, r.rflags as u32);
        a.u32(l32::EIP, r.rip as u32);
        for (i, v) in gprs(r).iter().take(8).enumerate() {
            a.u32(l32::GPRS + 4 * i, *v as u32);
        }
        a.u32(l32::DR6, s.dr6 as u32);
        a.u32(l32::DR7, s.dr7 as u32);
        put_seg32(&mut a, l32::TR, l32::TR_SEL, &sr.tr);
        put_seg32(&mut a, l32::LDTR, l32::LDTR_SEL, &sr.ldt);
        put_table32(&mut a, l32::GDTR, &sr.gdt);
        put_table32(&mut a, l32::IDTR, &sr.idt);
        put_seg32(&mut a, l32::ES, l32::ES_SEL, &sr.es);
        put_seg32(&mut a, l32::CS, l32::CS_SEL, &sr.cs);
        put_seg32(&mut a, l32::SS, l32::SS_SEL, &sr.ss);
        put_seg32(&mut a, l32::DS, l32::DS_SEL, &sr.ds);
        put_seg32(&mut a, l32::FS, l32::FS_SEL, &sr.fs);
        put_seg32(&mut a, l32::GS, l32::GS_SEL, &sr.gs);
        a.u32(l32::CR4, sr.cr4 as u32);
        a.u32(l32::REVISION, REVISION_32);
        a.u32(l32::SMBASE, s.smbase as u32);
        a.put(l32::INT_SHADOW, &[u8::from(s.interrupt_shadow)]);
    }
    bytes
}

/// The state the handler starts in, from the state `s` the SMI
/// interrupted, as KVM's `enter_smm` sets it: RIP 0x8000 with CS base
/// SMBASE (selector SMBASE >> 4), every data segment flat with base 0, all
/// limits 4 GiB; RFLAGS only its fixed bit; CR0 without PE, EM, TS and
/// PG; CR4 0; EFER 0 on a vCPU with long mode; an empty IDT; DR7 at its
/// reset value (returned with the registers). The general-purpose
/// registers, GDTR, LDTR and TR stay. SDM Vol. 3C 32.5.1 Table 32-4.
pub(crate) fn handler_entry(s: &SavedState, long_mode: bool) -> (kvm_regs, kvm_sregs, u64) {
    /// DR7 after RESET. SDM Vol. 3B 19.2.4.
    const DR7_RESET: u64 = 0x400;
    /// CR0.EM (bit 2) and CR0.TS (bit 3). SDM Vol. 3A 2.5.
    const CR0_EM: u64 = 1 << 2;
    const CR0_TS: u64 = 1 << 3;
    let flat = |selector: u16, base: u64| kvm_segment {
        base,
        limit: 0xffff_ffff,
        selector,
        // Read/write data, accessed.
        type_: 3,
        present: 1,
        s: 1,
        g: 1,
        ..Default::default()
    };
    let data = flat(0, 0);
    let regs = kvm_regs {
        rip: HANDLER,
        rflags: 0x2,
        ..s.regs
    };
    let sregs = kvm_sregs {
        cs: flat((s.smbase >> 4) as u16, s.smbase),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        idt: kvm_dtable::default(),
        cr0: s.sregs.cr0 & !(cr0::PE | CR0_EM | CR0_TS | cr0::PG),
        cr4: 0,
        efer: if long_mode { 0 } else { s.sregs.efer },
        ..s.sregs
    };
    (regs, sregs, DR7_RESET)
}

/// The state RSM loads from save area `area`, for a vCPU whose CPUID has
/// long mode or not, as KVM's `rsm_load_state_64`/`_32`: everything the
/// save area holds, RFLAGS with its fixed bit, EFER.LMA as CR0.PG and
/// EFER.LME make it (CR4.PCIDE and any other bit the guest may not set is
/// for the caller's register checks, which turn a refusal into shutdown).
/// What the area does not hold is as the handler left it (`regs`,
/// `sregs`): CR2, CR8, the APIC base, and on a vCPU without long mode
/// EFER and R8-R15.
pub(crate) fn restore(
    area: &[u8; SAVE_AREA_BYTES],
    long_mode: bool,
    regs: &kvm_regs,
    sregs: &kvm_sregs,
) -> Result<SavedState, RsmError> {
    let mut out = SavedState {
        regs: *regs,
        sregs: *sregs,
        ..Default::default()
    };
    let r = &mut out.regs;
    let sr = &mut out.sregs;
    if long_mode {
        let mut g = [0u64; 16];
        for (i, v) in g.iter_mut().enumerate() {
            *v = get_u64(area, l64::GPRS + 8 * (15 - i));
        }
        set_gprs(r, g);
        r.rip = get_u64(area, l64::RIP);
        r.rflags = get_u64(area, l64::RFLAGS) | 0x2;
        out.dr6 = get_u64(area, l64::DR6);
        out.dr7 = get_u64(area, l64::DR7);
        out.smbase = u64::from(get_u32(area, l64::SMBASE));
        sr.tr = seg64(area, l64::TR);
        sr.idt = table64(area, l64::IDTR);
        sr.ldt = seg64(area, l64::LDTR);
        sr.gdt = table64(area, l64::GDTR);
        sr.cr0 = get_u64(area, l64::CR0);
        sr.cr3 = get_u64(area, l64::CR3);
        sr.cr4 = get_u64(area, l64::CR4);
        let e = get_u64(area, l64::EFER) & !efer::LMA;
        let lma = if e & efer::LME != 0 && sr.cr0 & cr0::PG != 0 {
            efer::LMA
        } else {
            0
        };
        sr.efer = e | lma;
        sr.es = seg64(area, l64::ES);
        sr.cs = seg64(area, l64::CS);
        sr.ss = seg64(area, l64::SS);
        sr.ds = seg64(area, l64::DS);
        sr.fs = seg64(area, l64::FS);
        sr.gs = seg64(area, l64::GS);
        out.interrupt_shadow = area[l64::INT_SHADOW] != 0;
    } else {
        let mut g = gprs(r);
        for (i, v) in g.iter_mut().take(8).enumerate() {
            *v = u64::from(get_u32(area, l32::GPRS + 4 * i));
        }
        set_gprs(r, g);
        r.rip = u64::from(get_u32(area, l32::EIP));
        r.rflags = u64::from(get_u32(area, l32::EFLAGS)) | 0x2;
        out.dr6 = u64::from(get_u32(area, l32::DR6));
        out.dr7 = u64::from(get_u32(area, l32::DR7));
        sr.tr = seg32(area, l32::TR, l32::TR_SEL);
        sr.ldt = seg32(area, l32::LDTR, l32::LDTR_SEL);
        sr.gdt = table32(area, l32::GDTR);
        sr.idt = table32(area, l32::IDTR);
        sr.es = seg32(area, l32::ES, l32::ES_SEL);
        sr.cs = seg32(area, l32::CS, l32::CS_SEL);
        sr.ss = seg32(area, l32::SS, l32::SS_SEL);
        sr.ds = seg32(area, l32::DS, l32::DS_SEL);
        sr.fs = seg32(area, l32::FS, l32::FS_SEL);
        sr.gs = seg32(area, l32::GS, l32::GS_SEL);
        out.smbase = u64::from(get_u32(area, l32::SMBASE));
        sr.cr0 = u64::from(get_u32(area, l32::CR0));
        sr.cr3 = u64::from(get_u32(area, l32::CR3));
        sr.cr4 = u64::from(get_u32(area, l32::CR4));
        out.interrupt_shadow = area[l32::INT_SHADOW] != 0;
    }
    // KVM's `kvm_set_dr`: the upper halves of DR6 and DR7 are reserved.
    if out.dr6 >> 32 != 0 || out.dr7 >> 32 != 0 {
        return Err(RsmError::DebugRegister);
    }
    Ok(out)
}
