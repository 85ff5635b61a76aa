// SPDX-License-Identifier: GPL-2.0

//! Control registers, EFER and segments: reset state and the consistency
//! rules `KVM_SET_SREGS` enforces.

use crate::abi::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};
use crate::x86::cpuid::{self, GuestFeatures};

/// CR0 bits. SDM Vol. 3A 2.5, APM Vol. 2 3.1.1.
pub(crate) mod cr0 {
    /// Protection enable.
    pub(crate) const PE: u64 = 1 << 0;
    /// Extension type (hard-wired to 1 on modern CPUs).
    pub(crate) const ET: u64 = 1 << 4;
    /// Write protect: supervisor writes honour read-only pages.
    pub(crate) const WP: u64 = 1 << 16;
    /// Not write-through.
    pub(crate) const NW: u64 = 1 << 29;
    /// Cache disable.
    pub(crate) const CD: u64 = 1 << 30;
    /// Paging.
    pub(crate) const PG: u64 = 1 << 31;
}

/// CR4 bits. SDM Vol. 3A 2.5, APM Vol. 2 3.1.3.
pub(crate) mod cr4 {
    pub(crate) const VME: u64 = 1 << 0;
    pub(crate) const PVI: u64 = 1 << 1;
    pub(crate) const TSD: u64 = 1 << 2;
    pub(crate) const DE: u64 = 1 << 3;
    pub(crate) const PSE: u64 = 1 << 4;
    pub(crate) const PAE: u64 = 1 << 5;
    pub(crate) const MCE: u64 = 1 << 6;
    pub(crate) const PGE: u64 = 1 << 7;
    pub(crate) const PCE: u64 = 1 << 8;
    pub(crate) const OSFXSR: u64 = 1 << 9;
    pub(crate) const OSXMMEXCPT: u64 = 1 << 10;
    /// 57-bit linear addresses (5-level paging).
    pub(crate) const LA57: u64 = 1 << 12;
    pub(crate) const FSGSBASE: u64 = 1 << 16;
    /// XSAVE and the extended state components XCR0 enables.
    pub(crate) const OSXSAVE: u64 = 1 << 18;
    pub(crate) const SMEP: u64 = 1 << 20;
    pub(crate) const SMAP: u64 = 1 << 21;

    /// Bits a guest may always set: the features every x86_64 CPU has.
    pub(crate) const BASE: u64 =
        VME | PVI | TSD | DE | PSE | PAE | MCE | PGE | PCE | OSFXSR | OSXMMEXCPT;
}

/// EFER bits. SDM Vol. 3A 2.2.1, APM Vol. 2 3.1.7.
pub(crate) mod efer {
    /// System-call extensions (SYSCALL/SYSRET).
    pub(crate) const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub(crate) const LME: u64 = 1 << 8;
    /// Long mode active.
    pub(crate) const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub(crate) const NXE: u64 = 1 << 11;
    /// Secure virtual machine enable (host use only in rkvm: no nesting).
    pub(crate) const SVME: u64 = 1 << 12;

    /// The EFER bits rkvm lets a guest have, before CPUID is consulted.
    pub(crate) const SUPPORTED: u64 = SCE | LME | LMA | NXE;
}

/// The IA32_APIC_BASE MSR. SDM Vol. 3A 11.4.4.
pub(crate) mod apic_base {
    /// The xAPIC's default physical base. SDM Vol. 3A 11.4.1.
    pub(crate) const DEFAULT_BASE: u64 = 0xfee0_0000;
    /// This is the bootstrap processor.
    pub(crate) const BSP: u64 = 1 << 8;
    /// x2APIC mode enable.
    pub(crate) const EXTD: u64 = 1 << 10;
    /// xAPIC global enable.
    pub(crate) const ENABLE: u64 = 1 << 11;
    /// Bits 7:0 and 9 are reserved.
    pub(crate) const RESERVED_LOW: u64 = 0x2ff;
}

/// The general-purpose registers after RESET, as KVM reports them before
/// the guest's CPUID is set: RIP 0xfff0, RFLAGS with only the reserved bit
/// 1 set, and RDX holding the processor signature (KVM's default 0x600 when
/// the CPUID table has no leaf 1). SDM Vol. 3A 10.1.1 Table 10-1.
pub(crate) fn reset_regs(signature: u32) -> kvm_regs {
    kvm_regs {
        rip: 0xfff0,
        rflags: 0x2,
        rdx: u64::from(signature),
        ..Default::default()
    }
}

/// A data segment at reset: selector 0, base 0, limit 0xffff, read/write
/// accessed, present.
fn reset_data_segment() -> kvm_segment {
    kvm_segment {
        limit: 0xffff,
        type_: 3,
        present: 1,
        s: 1,
        ..Default::default()
    }
}

/// The system registers after RESET, matching what KVM reports on SVM:
/// CS 0xf000 with base 0xffff0000 (so the first fetch is at 0xfffffff0),
/// CR0 with CD, NW and ET, paging and protection off, EFER 0, an LDT and a
/// busy 16-bit TSS descriptor, and the APIC enabled at its default base,
/// with the BSP flag on the bootstrap processor (`bsp`: vCPU 0 unless
/// `KVM_SET_BOOT_CPU_ID` chose another, KVM's `bsp_vcpu_id`).
/// SDM Vol. 3A 10.1.1 Table 10-1 and 11.4.4, APM Vol. 2 14.1.3.
pub(crate) fn reset_sregs(bsp: bool) -> kvm_sregs {
    let data = reset_data_segment();
    let system = |type_: u8| kvm_segment {
        limit: 0xffff,
        type_,
        present: 1,
        ..Default::default()
    };
    kvm_sregs {
        cs: kvm_segment {
            selector: 0xf000,
            base: 0xffff_0000,
            type_: 0xb,
            ..data
        },
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        // LDT descriptor type 2; busy 16-bit TSS type 3. SDM Vol. 3A 3.5 Table 3-2.
        ldt: system(2),
        tr: system(3),
        gdt: kvm_dtable {
            limit: 0xffff,
            ..Default::default()
        },
        idt: kvm_dtable {
            limit: 0xffff,
            ..Default::default()
        },
        cr0: cr0::CD | cr0::NW | cr0::ET,
        apic_base: apic_base::DEFAULT_BASE
            | apic_base::ENABLE
            | if bsp { apic_base::BSP } else { 0 },
        ..Default::default()
    }
}

/// What the host CPU lets rkvm offer a guest, for register checks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HostLimits {
    /// CR4 bits beyond [`cr4::BASE`] that the host has and rkvm offers.
    pub(crate) cr4_optional: u64,
    /// Whether the host supports EFER.NXE.
    pub(crate) nx: bool,
    /// The host's physical address width (CPUID 0x8000_0008 EAX[7:0]):
    /// guest-physical memory must lie below it.
    pub(crate) phys_bits: u8,
}

/// Why a `KVM_SET_SREGS` was refused; every reason is `EINVAL` at the ioctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SregsError {
    /// CR0 bits 63:32 set, NW without CD, or PG without PE.
    Cr0,
    /// A CR4 bit that is reserved, or not offered to this guest.
    Cr4,
    /// An EFER bit that is reserved, or not offered to this guest.
    Efer,
    /// EFER.LME with CR0.PG but without CR4.PAE or EFER.LMA, or LMA (or a
    /// 64-bit CS) outside long mode.
    LongMode,
    /// CR3 has bits set above the physical address width in long mode.
    Cr3,
    /// Reserved APIC base bits, or x2APIC mode without xAPIC enable.
    ApicBase,
}

/// The CR4 bits this guest may set: the base set plus the optional features
/// that rkvm offers and the host has (`host.cr4_optional`) and the guest's
/// CPUID advertises. KVM's rule (`__kvm_is_valid_cr4`) over rkvm's smaller
/// feature set.
pub(crate) fn allowed_cr4(host: &HostLimits, guest: &GuestFeatures) -> u64 {
    let mut optional = 0;
    if guest.fsgsbase {
        optional |= cr4::FSGSBASE;
    }
    if guest.smep {
        optional |= cr4::SMEP;
    }
    if guest.smap {
        optional |= cr4::SMAP;
    }
    if guest.xsave {
        optional |= cr4::OSXSAVE;
    }
    cr4::BASE | (optional & host.cr4_optional)
}

/// Whether a guest's MOV to CR4 from `old` to `new` is allowed (else
/// #GP): only bits this guest may set, and in long mode PAE stays set and
/// LA57 does not change. SDM Vol. 3A 2.5, 4.1.1; KVM's `kvm_set_cr4`.
pub(crate) fn cr4_write_ok(
    host: &HostLimits,
    guest: &GuestFeatures,
    old: u64,
    new: u64,
    efer_value: u64,
) -> bool {
    if new & !allowed_cr4(host, guest) != 0 {
        return false;
    }
    if efer_value & efer::LMA != 0 && (new & cr4::PAE == 0 || (old ^ new) & cr4::LA57 != 0) {
        return false;
    }
    true
}

/// Checks EFER against the bits rkvm supports and the guest's CPUID: LME
/// and LMA need long mode, NXE needs NX. Like KVM, SCE is not tied to
/// CPUID.
pub(crate) fn check_efer(host: &HostLimits, guest: &GuestFeatures, value: u64) -> bool {
    if value & !host.supported_efer() != 0 {
        return false;
    }
    if value & (efer::LME | efer::LMA) != 0 && !guest.long_mode {
        return false;
    }
    if value & efer::NXE != 0 && !guest.nx {
        return false;
    }
    true
}

/// Whether a guest with these CR0, CR4 and EFER uses PAE paging: paging
/// on, CR4.PAE, not IA-32e mode. Its top level is four PDPTEs the CPU
/// loads from CR3 when paging is set up (SDM Vol. 3A 4.4.1).
pub(crate) fn pae_paging(cr0_value: u64, cr4_value: u64, efer_value: u64) -> bool {
    cr0_value & cr0::PG != 0 && cr4_value & cr4::PAE != 0 && efer_value & efer::LMA == 0
}

/// Whether a MOV to CR0 or CR4 from `(old_cr0, old_cr4)` to
/// `(new_cr0, new_cr4)`, with EFER `efer_value` after it, makes the CPU
/// load the PDPTEs again: the guest is in PAE paging after it and changed
/// a bit that reloads them (CR0's CD, NW, PG; CR4's PGE, PSE, PAE, SMEP;
/// SDM Vol. 3A 4.4.1), as KVM's `kvm_set_cr0`/`kvm_set_cr4` call
/// `load_pdptrs` (`X86_CR0_PDPTR_BITS`, `X86_CR4_PDPTR_BITS`).
pub(crate) fn loads_pdptes(
    (old_cr0, old_cr4): (u64, u64),
    (new_cr0, new_cr4): (u64, u64),
    efer_value: u64,
) -> bool {
    const CR0_BITS: u64 = cr0::CD | cr0::NW | cr0::PG;
    const CR4_BITS: u64 = cr4::PGE | cr4::PSE | cr4::PAE | cr4::SMEP;
    pae_paging(new_cr0, new_cr4, efer_value)
        && ((old_cr0 ^ new_cr0) & CR0_BITS != 0 || (old_cr4 ^ new_cr4) & CR4_BITS != 0)
}

/// Whether PAE paging's four PDPTEs may be loaded: no present entry
/// (bit 0) has a reserved bit set, bits 2:1 and 8:5 or any bit at or
/// above the guest's physical-address width (SDM Vol. 3A 4.4.1, Table
/// 4-8; KVM's `load_pdptrs` and `pdptr_rsvd_bits`). The CPU refuses
/// others: a MOV to CR0, CR3 or CR4 that would load them is #GP(0).
pub(crate) fn pdptes_valid(pdptes: &[u64; 4], phys_bits: u8) -> bool {
    let above_phys = if phys_bits >= 64 {
        0
    } else {
        !0u64 << phys_bits
    };
    let reserved = above_phys | 0x1e6;
    pdptes.iter().all(|e| e & 1 == 0 || e & reserved == 0)
}

/// Checks an APIC base value as KVM does for a host-initiated write: no
/// reserved bits (including those above the guest's physical address
/// width), and not x2APIC mode without the xAPIC enabled.
pub(crate) fn check_apic_base(guest: &GuestFeatures, value: u64) -> bool {
    let above_phys = if guest.phys_bits >= 64 {
        0
    } else {
        !0u64 << guest.phys_bits
    };
    let mut reserved = apic_base::RESERVED_LOW | above_phys;
    if !guest.x2apic {
        reserved |= apic_base::EXTD;
    }
    if value & reserved != 0 {
        return false;
    }
    // x2APIC enabled with the xAPIC disabled is an invalid mode. SDM Vol. 3A 11.12.1.
    !(value & apic_base::EXTD != 0 && value & apic_base::ENABLE == 0)
}

/// The checks `KVM_SET_SREGS` makes before changing anything, in KVM's
/// order (`kvm_is_valid_sregs` in `arch/x86/kvm/regs.c`).
pub(crate) fn check_sregs(
    host: &HostLimits,
    guest: &GuestFeatures,
    s: &kvm_sregs,
) -> Result<(), SregsError> {
    if s.efer & efer::LME != 0 && s.cr0 & cr0::PG != 0 {
        // Long mode (maybe in a compatibility-mode code segment): PAE and LMA are required,
        // and CR3 must fit the physical address width. SDM Vol. 3A 10.8.5.
        if s.cr4 & cr4::PAE == 0 || s.efer & efer::LMA == 0 {
            return Err(SregsError::LongMode);
        }
        if guest.phys_bits < 64 && s.cr3 >> guest.phys_bits != 0 {
            return Err(SregsError::Cr3);
        }
    } else if s.efer & efer::LMA != 0 || s.cs.l != 0 {
        return Err(SregsError::LongMode);
    }
    if s.cr4 & !allowed_cr4(host, guest) != 0 {
        return Err(SregsError::Cr4);
    }
    if s.cr0 >> 32 != 0
        || (s.cr0 & cr0::NW != 0 && s.cr0 & cr0::CD == 0)
        || (s.cr0 & cr0::PG != 0 && s.cr0 & cr0::PE == 0)
    {
        return Err(SregsError::Cr0);
    }
    if !check_efer(host, guest, s.efer) {
        return Err(SregsError::Efer);
    }
    if !check_apic_base(guest, s.apic_base) {
        return Err(SregsError::ApicBase);
    }
    Ok(())
}

impl HostLimits {
    /// The EFER bits rkvm lets any guest have on this host: NXE only where
    /// the host has NX.
    pub(crate) fn supported_efer(&self) -> u64 {
        if self.nx {
            efer::SUPPORTED
        } else {
            efer::SUPPORTED & !efer::NXE
        }
    }

    /// Reads the limits from the host's CPUID
    /// (`host(function, index) -> (eax, ebx, ecx, edx)`).
    pub(crate) fn from_cpuid(host: impl Fn(u32, u32) -> (u32, u32, u32, u32)) -> Self {
        let (max_basic, ..) = host(0, 0);
        let (max_ext, ..) = host(0x8000_0000, 0);
        let (_, ebx7, _, _) = if max_basic >= 7 {
            host(7, 0)
        } else {
            (0, 0, 0, 0)
        };
        let (_, _, ecx1, _) = host(1, 0);
        let (_, _, _, edx81) = if max_ext >= 0x8000_0001 {
            host(0x8000_0001, 0)
        } else {
            (0, 0, 0, 0)
        };
        // Without leaf 0x8000_0008 the width is 36 bits. SDM Vol. 3A 4.1.4.
        let phys_bits = if max_ext >= 0x8000_0008 {
            (host(0x8000_0008, 0).0 & 0xff) as u8
        } else {
            36
        };
        let bit = |reg: u32, n: u32| reg & (1 << n) != 0;
        // The CR4 bits rkvm can offer: the host has the feature and rkvm's CPUID table
        // offers it to guests.
        let mut cr4_optional = 0;
        for (n, flag) in [
            (cpuid::bit::EBX7_FSGSBASE, cr4::FSGSBASE),
            (cpuid::bit::EBX7_SMEP, cr4::SMEP),
            (cpuid::bit::EBX7_SMAP, cr4::SMAP),
        ] {
            if bit(ebx7, n) && cpuid::offers_leaf7_ebx(n) {
                cr4_optional |= flag;
            }
        }
        // XSAVE is offered where the host kernel uses it (its CR4.OSXSAVE,
        // which CPUID.1:ECX reflects): rkvm switches XCR0 with XSETBV.
        if bit(ecx1, cpuid::bit::ECX1_OSXSAVE) {
            cr4_optional |= cr4::OSXSAVE;
        }
        Self {
            cr4_optional,
            nx: bit(edx81, cpuid::bit::EDX81_NX),
            phys_bits,
        }
    }
}
