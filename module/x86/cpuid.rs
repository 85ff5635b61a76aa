// SPDX-License-Identifier: GPL-2.0

//! CPUID: the table a guest sees, and the table rkvm can support.
//!
//! Leaf and bit numbers: SDM Vol. 2A "CPUID", APM Vol. 3 Appendix E.

use crate::abi::kvm_cpuid_entry2;
use crate::x86::xsave;

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (sic, as in `asm/kvm.h`): the entry
/// applies to one sub-leaf (`index`) only.
pub(crate) const FLAG_SIGNIFICANT_INDEX: u32 = 1 << 0;

/// A CPUID leaf and sub-leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub(crate) function: u32,
    pub(crate) index: u32,
}

/// Finds the entry a guest's CPUID(function, index) would use: an entry
/// for the function whose index matches, or whose index does not matter.
pub(crate) fn lookup(table: &[kvm_cpuid_entry2], leaf: Leaf) -> Option<&kvm_cpuid_entry2> {
    table.iter().find(|e| {
        e.function == leaf.function
            && (e.flags & FLAG_SIGNIFICANT_INDEX == 0 || e.index == leaf.index)
    })
}

/// Bit numbers of the features below, named by leaf and register: `ECX1`
/// is CPUID.1:ECX, `EBX7` is CPUID.(EAX=7,ECX=0):EBX, `EDX81` is
/// CPUID.8000_0001h:EDX.
pub(crate) mod bit {
    pub(crate) const ECX1_X2APIC: u32 = 21;
    pub(crate) const ECX1_XSAVE: u32 = 26;
    pub(crate) const ECX1_OSXSAVE: u32 = 27;
    pub(crate) const EBX7_FSGSBASE: u32 = 0;
    pub(crate) const EBX7_TSC_ADJUST: u32 = 1;
    pub(crate) const EBX7_SMEP: u32 = 7;
    pub(crate) const EBX7_SMAP: u32 = 20;
    pub(crate) const EDX81_NX: u32 = 20;
    pub(crate) const EDX81_LM: u32 = 29;
}

fn has(reg: u32, bit: u32) -> bool {
    reg & (1 << bit) != 0
}

/// The features a guest's CPUID table advertises that change which register
/// values rkvm accepts. All false, and a 36-bit physical address width,
/// until `KVM_SET_CPUID2`, as in KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestFeatures {
    pub(crate) long_mode: bool,
    pub(crate) nx: bool,
    pub(crate) x2apic: bool,
    pub(crate) fsgsbase: bool,
    pub(crate) smep: bool,
    pub(crate) smap: bool,
    /// IA32_TSC_ADJUST exists (`x86/msr.rs`).
    pub(crate) tsc_adjust: bool,
    /// CPUID.8000_0008h:EAX[7:0], or 36 without that leaf. SDM Vol. 3A 4.1.4.
    pub(crate) phys_bits: u8,
    /// KVM_FEATURE_CLOCKSOURCE (leaf 0x4000_0001 EAX bit 0): the first
    /// kvmclock MSRs (0x11, 0x12) exist. `Documentation/virt/kvm/x86/cpuid.rst`.
    pub(crate) kvm_clocksource: bool,
    /// KVM_FEATURE_CLOCKSOURCE2 (bit 3): the kvmclock MSRs at 0x4b564d00
    /// and 0x4b564d01 exist.
    pub(crate) kvm_clocksource2: bool,
    /// KVM_FEATURE_STEAL_TIME (bit 5): MSR_KVM_STEAL_TIME exists.
    pub(crate) kvm_steal_time: bool,
    /// KVM_FEATURE_PV_SCHED_YIELD (bit 13): the KVM_HC_SCHED_YIELD
    /// hypercall (only looked at when the VMM enforces the CPUID).
    pub(crate) kvm_sched_yield: bool,
    /// Leaf 0x4000_0001 says "Hv#1": the guest may use the Hyper-V
    /// interface (hyperv/), as KVM's `kvm_hv_set_cpuid` decides.
    pub(crate) hyperv: bool,
    /// XSAVE (CPUID.1:ECX bit 26): the guest may set CR4.OSXSAVE.
    pub(crate) xsave: bool,
    /// The XCR0 components leaf 0xD offers (CPUID.(EAX=0DH,ECX=0):EDX:EAX),
    /// before the device's own limit is applied (`FpuImage::set_xcr0`).
    pub(crate) xcr0: u64,
}

impl Default for GuestFeatures {
    fn default() -> Self {
        Self::from_table(&[])
    }
}

impl GuestFeatures {
    /// Reads the features from a guest CPUID table.
    pub(crate) fn from_table(table: &[kvm_cpuid_entry2]) -> Self {
        let get = |function, index| {
            lookup(table, Leaf { function, index })
                .map(|e| (e.eax, e.ebx, e.ecx, e.edx))
                .unwrap_or_default()
        };
        let (_, _, ecx1, _) = get(1, 0);
        let (xcr0_lo, _, _, xcr0_hi) = get(0xd, 0);
        let (_, ebx7, _, _) = get(7, 0);
        let (_, _, _, edx81) = get(0x8000_0001, 0);
        // KVM's paravirtual features: EAX of the leaf after the first
        // 0x4000_0000 + n * 0x100 that says "KVMKVMKVM" (0x4000_0100 when a
        // VMM puts Hyper-V's leaves first), none without the signature,
        // as KVM's `kvm_get_hypervisor_cpuid`.
        let kvm_base = (0..0x100)
            .map(|n| KVM_CPUID_SIGNATURE + n * 0x100)
            .find(|&base| {
                let (_, b, c, d) = get(base, 0);
                [b, c, d] == KVM_SIGNATURE
            });
        let pv = kvm_base.map_or(0, |base| get(base + 1, 0).0);
        let (hv_interface, ..) = get(crate::hyperv::HV_INTERFACE_LEAF, 0);
        let phys_bits = lookup(
            table,
            Leaf {
                function: 0x8000_0008,
                index: 0,
            },
        )
        .map_or(36, |e| (e.eax & 0xff) as u8);
        Self {
            long_mode: has(edx81, bit::EDX81_LM),
            nx: has(edx81, bit::EDX81_NX),
            x2apic: has(ecx1, bit::ECX1_X2APIC),
            fsgsbase: has(ebx7, bit::EBX7_FSGSBASE),
            smep: has(ebx7, bit::EBX7_SMEP),
            smap: has(ebx7, bit::EBX7_SMAP),
            tsc_adjust: has(ebx7, bit::EBX7_TSC_ADJUST),
            phys_bits,
            kvm_clocksource: pv & KVM_FEATURE_CLOCKSOURCE != 0,
            kvm_clocksource2: pv & KVM_FEATURE_CLOCKSOURCE2 != 0,
            kvm_steal_time: pv & KVM_FEATURE_STEAL_TIME != 0,
            kvm_sched_yield: pv & KVM_FEATURE_PV_SCHED_YIELD != 0,
            hyperv: hv_interface == crate::hyperv::INTERFACE_SIGNATURE,
            xsave: has(ecx1, bit::ECX1_XSAVE),
            xcr0: u64::from(xcr0_hi) << 32 | u64::from(xcr0_lo),
        }
    }
}

/// The checks `KVM_SET_CPUID2` makes on a table (`kvm_check_cpuid`): the
/// linear address width in CPUID.8000_0008h:EAX[15:8], if given, must be
/// 48 or 57 bits (4- or 5-level paging) or 0.
pub(crate) fn table_is_valid(table: &[kvm_cpuid_entry2]) -> bool {
    lookup(
        table,
        Leaf {
            function: 0x8000_0008,
            index: 0,
        },
    )
    .is_none_or(|e| matches!((e.eax >> 8) & 0xff, 0 | 48 | 57))
}

/// Whether two CPUID tables are the same, entry by entry in order (what
/// `KVM_SET_CPUID2` requires once the vCPU ran: KVM's
/// `kvm_cpuid_check_equal`).
pub(crate) fn tables_equal(a: &[kvm_cpuid_entry2], b: &[kvm_cpuid_entry2]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (x.function, x.index, x.flags, x.eax, x.ebx, x.ecx, x.edx)
                == (y.function, y.index, y.flags, y.eax, y.ebx, y.ecx, y.edx)
        })
}

/// The processor signature for RDX at reset: CPUID.1:EAX of the guest's
/// table, or 0x600 (family 6) when it has none, as KVM does.
pub(crate) fn reset_signature(table: &[kvm_cpuid_entry2]) -> u32 {
    lookup(
        table,
        Leaf {
            function: 1,
            index: 0,
        },
    )
    .map_or(0x600, |e| e.eax)
}

/// Which host features rkvm passes through to a guest, per register. A bit
/// is offered only if it is set here and on the host. Anything that needs
/// more than the CPU (PMU, nested SVM, an in-kernel APIC timer, MSRs rkvm
/// does not virtualise such as the MTRRs, the machine-check banks and
/// TSC_AUX, state components beyond AVX) is left out until rkvm supports
/// it. XSAVE and the AVX family are offered only where the host's XCR0
/// has their state (see [`supported`]).
struct Mask {
    function: u32,
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
}

const PASS: u32 = !0;

/// A register mask with the given bits set.
const fn bits(list: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

// CPUID.1:ECX. SDM Vol. 2A Table 3-10.
const SSE3: u32 = 0;
const PCLMULQDQ: u32 = 1;
const SSSE3: u32 = 9;
const FMA: u32 = 12;
const CX16: u32 = 13;
const SSE4_1: u32 = 19;
const SSE4_2: u32 = 20;
const MOVBE: u32 = 22;
const POPCNT: u32 = 23;
const AES: u32 = 25;
const AVX: u32 = 28;
const F16C: u32 = 29;
const RDRAND: u32 = 30;
/// Reserved for use by a hypervisor to say it is there. APM Vol. 3
/// Appendix E, CPUID Fn0000_0001_ECX bit 31.
const HYPERVISOR: u32 = 31;
// CPUID.1:EDX. SDM Vol. 2A Table 3-11.
const FPU: u32 = 0;
const VME: u32 = 1;
const DE: u32 = 2;
const PSE: u32 = 3;
const TSC: u32 = 4;
const MSR: u32 = 5;
const PAE: u32 = 6;
const CX8: u32 = 8;
const APIC: u32 = 9;
const SEP: u32 = 11;
const PGE: u32 = 13;
const CMOV: u32 = 15;
const PAT: u32 = 16;
const PSE36: u32 = 17;
const CLFSH: u32 = 19;
const MMX: u32 = 23;
const FXSR: u32 = 24;
const SSE: u32 = 25;
const SSE2: u32 = 26;
// CPUID.(EAX=7,ECX=0):EBX. SDM Vol. 2A Table 3-8.
const BMI1: u32 = 3;
const AVX2: u32 = 5;
const BMI2: u32 = 8;
const ERMS: u32 = 9;
const ADX: u32 = 19;
// CPUID.8000_0001h:ECX and EDX. APM Vol. 3 Appendix E.
const LAHF_SAHF: u32 = 0;
const ABM: u32 = 5;
const PREFETCHW: u32 = 8;
const SYSCALL: u32 = 11;
const PAGE1GB: u32 = 26;

// One row per leaf reads as a table; rustfmt would spread each over six lines.
#[rustfmt::skip]
const MASKS: &[Mask] = &[
    // Leaf 0: the highest basic leaf (clamped below) and the vendor string.
    Mask { function: 0, eax: PASS, ebx: PASS, ecx: PASS, edx: PASS },
    // Leaf 1: the host's signature; from EBX only the brand index and the
    // CLFLUSH line size (bits 15:0), not the host's APIC id and CPU count.
    Mask {
        function: 1,
        eax: PASS,
        ebx: 0x0000_ffff,
        ecx: bits(&[
            SSE3, PCLMULQDQ, SSSE3, FMA, CX16, SSE4_1, SSE4_2, MOVBE, POPCNT, AES, bit::ECX1_XSAVE,
            AVX, F16C, RDRAND,
        ]),
        edx: bits(&[
            FPU, VME, DE, PSE, TSC, MSR, PAE, CX8, APIC, SEP, PGE, CMOV, PAT, PSE36, CLFSH, MMX,
            FXSR, SSE, SSE2,
        ]),
    },
    // Leaf 7.0: the CR4-gated features rkvm accepts (FSGSBASE, SMEP, SMAP)
    // and plain instruction-set extensions.
    Mask {
        function: 7,
        eax: 0,
        ebx: bits(&[
            bit::EBX7_FSGSBASE, BMI1, AVX2, bit::EBX7_SMEP, BMI2, ERMS, ADX, bit::EBX7_SMAP,
        ]),
        ecx: 0,
        edx: 0,
    },
    // 0x8000_0000: the highest extended leaf (clamped below).
    Mask { function: 0x8000_0000, eax: PASS, ebx: 0, ecx: 0, edx: 0 },
    Mask {
        function: 0x8000_0001,
        eax: PASS,
        ebx: 0,
        ecx: bits(&[LAHF_SAHF, ABM, PREFETCHW]),
        edx: bits(&[SYSCALL, bit::EDX81_NX, PAGE1GB, bit::EDX81_LM]),
    },
    // 0x8000_0002..4: the brand string.
    Mask { function: 0x8000_0002, eax: PASS, ebx: PASS, ecx: PASS, edx: PASS },
    Mask { function: 0x8000_0003, eax: PASS, ebx: PASS, ecx: PASS, edx: PASS },
    Mask { function: 0x8000_0004, eax: PASS, ebx: PASS, ecx: PASS, edx: PASS },
    // 0x8000_0008: physical and linear address widths (EAX[15:0]).
    Mask { function: 0x8000_0008, eax: 0xffff, ebx: 0, ecx: 0, edx: 0 },
];

/// Whether the table above offers CPUID.(EAX=7,ECX=0):EBX bit `n`: the
/// CR4 bits tied to leaf 7 are accepted only for features rkvm offers.
pub(crate) const fn offers_leaf7_ebx(n: u32) -> bool {
    // MASKS[2] is leaf 7.
    MASKS[2].ebx & (1 << n) != 0
}
const _: () = assert!(MASKS[2].function == 7);

/// The highest basic and extended leaves rkvm describes: 0xD (XSAVE's
/// components) where XSAVE is offered, else 7.
const MAX_BASIC: u32 = 0xd;
const MAX_BASIC_WITHOUT_XSAVE: u32 = 7;
const MAX_EXTENDED: u32 = 0x8000_0008;

/// Leaf 1 ECX and leaf 7 EBX bits that need XSAVE (XSAVE itself) or the
/// AVX state in XCR0 (VEX-encoded instructions on XMM/YMM). SDM Vol. 1
/// 14.3.
const ECX1_NEEDS_XSAVE: u32 = 1 << bit::ECX1_XSAVE;
const ECX1_NEEDS_YMM: u32 = bits(&[FMA, AVX, F16C]);
const EBX7_NEEDS_YMM: u32 = 1 << AVX2;

// CPUID.(EAX=0DH,ECX=1):EAX. SDM Vol. 2A Table 3-8 (leaf 0DH).
const XSAVEOPT: u32 = 0;
const XSAVEC: u32 = 1;
const XGETBV1: u32 = 2;
/// The XSAVE variants a guest may use: all but XSAVES, which needs
/// IA32_XSS (supervisor state rkvm does not offer).
const D1_EAX: u32 = bits(&[XSAVEOPT, XSAVEC, XGETBV1]);

const ECX1_HYPERVISOR: u32 = 1 << HYPERVISOR;

/// Leaf 1 ECX bits offered whatever the host has: the hypervisor bit, and
/// x2APIC, which the in-kernel APIC emulates in software (as KVM offers it
/// irrespective of the host; a guest of a VM without an in-kernel APIC
/// that enables it gets #GP on the x2APIC MSRs, on KVM alike).
const ECX1_ALWAYS: u32 = ECX1_HYPERVISOR | (1 << bit::ECX1_X2APIC);

/// Leaf 7 EBX bits offered whatever the host has: IA32_TSC_ADJUST, which
/// rkvm keeps in software (`x86/msr.rs`), as KVM emulates it.
const EBX7_ALWAYS: u32 = 1 << bit::EBX7_TSC_ADJUST;

/// KVM's paravirtual leaves (`Documentation/virt/kvm/x86/cpuid.rst`):
/// 0x4000_0000 says "KVMKVMKVM" and names 0x4000_0001 the highest; there
/// rkvm offers kvmclock (EAX: both generations of its MSRs, and the
/// stable bit the guest may trust: run/kvmclock.rs) and steal time
/// (run/steal_time.rs), and no hint (EDX): no async page faults, PV EOI,
/// PV IPIs and the rest.
const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
const KVM_CPUID_FEATURES: u32 = KVM_CPUID_SIGNATURE + 1;
const KVM_FEATURE_CLOCKSOURCE: u32 = 1 << 0;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
const KVM_FEATURE_STEAL_TIME: u32 = 1 << 5;
const KVM_FEATURE_PV_SCHED_YIELD: u32 = 1 << 13;
const KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
/// The paravirtual features rkvm offers (leaf 0x4000_0001 EAX).
const KVM_FEATURES: u32 = KVM_FEATURE_CLOCKSOURCE
    | KVM_FEATURE_CLOCKSOURCE2
    | KVM_FEATURE_STEAL_TIME
    | KVM_FEATURE_CLOCKSOURCE_STABLE_BIT;
/// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// Builds the table `KVM_GET_SUPPORTED_CPUID` reports, from the host's
/// CPUID (`host(function, index) -> (eax, ebx, ecx, edx)`), the XSAVE
/// components the device can give (`xcr0`: 0 on a host without XSAVE,
/// else x87|SSE and AVX if the host's XCR0 has it) and the masks above.
/// Leaves the host does not have are left out. Returns the number of
/// entries written to `out`, or `None` if `out` is too small.
pub(crate) fn supported(
    host: impl Fn(u32, u32) -> (u32, u32, u32, u32),
    xcr0: u64,
    out: &mut [kvm_cpuid_entry2],
) -> Option<usize> {
    let (host_max_basic, ..) = host(0, 0);
    let (host_max_ext, ..) = host(0x8000_0000, 0);
    let xsave = xcr0 != 0 && host_max_basic >= 0xd;
    let ymm = xsave && xcr0 & xsave::XFEATURE_YMM != 0;
    let max_basic = host_max_basic.min(if xsave {
        MAX_BASIC
    } else {
        MAX_BASIC_WITHOUT_XSAVE
    });
    let max_ext = host_max_ext.min(MAX_EXTENDED);
    let mut n = 0;
    for m in MASKS {
        let in_range = if m.function >= 0x8000_0000 {
            m.function <= max_ext
        } else {
            m.function <= max_basic
        };
        if !in_range {
            continue;
        }
        if m.function == 0x8000_0000 && xsave {
            // Leaf 0xD, in its place after the basic leaves.
            for entry in xsave_leaves(&host, xcr0) {
                *out.get_mut(n)? = entry;
                n += 1;
            }
        }
        let (mut eax, mut ebx, mut ecx, edx) = host(m.function, 0);
        match m.function {
            0 => eax = max_basic,
            0x8000_0000 => eax = max_ext,
            1 => {
                if !xsave {
                    ecx &= !ECX1_NEEDS_XSAVE;
                }
                if !ymm {
                    ecx &= !ECX1_NEEDS_YMM;
                }
                ecx |= ECX1_ALWAYS;
            }
            7 => {
                if !ymm {
                    ebx &= !EBX7_NEEDS_YMM;
                }
                ebx |= EBX7_ALWAYS;
            }
            _ => {}
        }
        let entry = out.get_mut(n)?;
        *entry = kvm_cpuid_entry2 {
            function: m.function,
            index: 0,
            flags: if m.function == 7 {
                FLAG_SIGNIFICANT_INDEX
            } else {
                0
            },
            eax: eax & m.eax,
            ebx: ebx & (m.ebx | if m.function == 7 { EBX7_ALWAYS } else { 0 }),
            ecx: ecx & (m.ecx | if m.function == 1 { ECX1_ALWAYS } else { 0 }),
            edx: edx & m.edx,
            ..Default::default()
        };
        n += 1;
    }
    for (function, eax, [ebx, ecx, edx]) in [
        (KVM_CPUID_SIGNATURE, KVM_CPUID_FEATURES, KVM_SIGNATURE),
        (KVM_CPUID_FEATURES, KVM_FEATURES, [0; 3]),
    ] {
        *out.get_mut(n)? = kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        n += 1;
    }
    Some(n)
}

/// Leaf 0xD for the components in `xcr0` (x87, SSE, maybe AVX), as KVM
/// reports it: sub-leaf 0 the components and the standard format's size
/// for them (EBX, which changes with the guest's XCR0 when it runs, and
/// ECX, the most), sub-leaf 1 the XSAVE variants and, as XSAVEC is among
/// them, the compacted size, and a sub-leaf for AVX's size and offset
/// where it is offered. SDM Vol. 2A CPUID leaf 0DH.
fn xsave_leaves(
    host: &impl Fn(u32, u32) -> (u32, u32, u32, u32),
    xcr0: u64,
) -> impl Iterator<Item = kvm_cpuid_entry2> {
    let entry = |index, eax, ebx, ecx| kvm_cpuid_entry2 {
        function: 0xd,
        index,
        flags: FLAG_SIGNIFICANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: 0,
        ..Default::default()
    };
    let (host_eax, ..) = host(0xd, 0);
    let standard = xsave::required_size(xcr0, false, host);
    let (d1_eax, ..) = host(0xd, 1);
    let d1_eax = d1_eax & D1_EAX;
    let compacted = if d1_eax & (1 << XSAVEC) != 0 {
        xsave::required_size(xcr0, true, host)
    } else {
        0
    };
    let (ymm_size, ymm_offset, ymm_flags, _) = host(0xd, 2);
    let ymm = (xcr0 & xsave::XFEATURE_YMM != 0)
        // XFD (bit 2 of ECX) is not offered.
        .then(|| entry(2, ymm_size, ymm_offset, ymm_flags & !(1 << 2)));
    [
        Some(entry(0, host_eax & xcr0 as u32, standard, standard)),
        Some(entry(1, d1_eax, compacted, 0)),
        ymm,
    ]
    .into_iter()
    .flatten()
}
