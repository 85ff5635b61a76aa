// SPDX-License-Identifier: GPL-2.0

//! CPUID: the table a guest sees, and the table rkvm can support.
//!
//! Leaf and bit numbers: SDM Vol. 2A "CPUID", APM Vol. 3 Appendix E.

use crate::abi::kvm_cpuid_entry2;

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

/// Feature bits. Each is (leaf, sub-leaf, register, bit).
mod bit {
    /// CPUID.1:ECX.
    pub(super) const ECX1_PCID: u32 = 17;
    pub(super) const ECX1_X2APIC: u32 = 21;
    pub(super) const ECX1_XSAVE: u32 = 26;
    /// CPUID.(EAX=7,ECX=0):EBX and ECX.
    pub(super) const EBX7_FSGSBASE: u32 = 0;
    pub(super) const EBX7_SMEP: u32 = 7;
    pub(super) const EBX7_SMAP: u32 = 20;
    pub(super) const ECX7_UMIP: u32 = 2;
    /// CPUID.8000_0001h:EDX.
    pub(super) const EDX81_NX: u32 = 20;
    pub(super) const EDX81_LM: u32 = 29;
}

fn has(reg: u32, bit: u32) -> bool {
    reg & (1 << bit) != 0
}

/// The features a guest's CPUID table advertises that change which register
/// values rkvm accepts. All false until `KVM_SET_CPUID2`, as in KVM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestFeatures {
    pub(crate) long_mode: bool,
    pub(crate) nx: bool,
    pub(crate) pcid: bool,
    pub(crate) x2apic: bool,
    pub(crate) xsave: bool,
    pub(crate) fsgsbase: bool,
    pub(crate) smep: bool,
    pub(crate) smap: bool,
    pub(crate) umip: bool,
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
        let (_, ebx7, ecx7, _) = get(7, 0);
        let (_, _, _, edx81) = get(0x8000_0001, 0);
        Self {
            long_mode: has(edx81, bit::EDX81_LM),
            nx: has(edx81, bit::EDX81_NX),
            pcid: has(ecx1, bit::ECX1_PCID),
            x2apic: has(ecx1, bit::ECX1_X2APIC),
            xsave: has(ecx1, bit::ECX1_XSAVE),
            fsgsbase: has(ebx7, bit::EBX7_FSGSBASE),
            smep: has(ebx7, bit::EBX7_SMEP),
            smap: has(ebx7, bit::EBX7_SMAP),
            umip: has(ecx7, bit::ECX7_UMIP),
        }
    }
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
/// more than the CPU (XSAVE state switching, PMU, nested SVM, an in-kernel
/// APIC timer) is left out until rkvm virtualises it.
struct Mask {
    function: u32,
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
}

const PASS: u32 = !0;

const MASKS: &[Mask] = &[
    // Leaf 0: highest basic leaf and vendor string (clamped below).
    Mask {
        function: 0,
        eax: PASS,
        ebx: PASS,
        ecx: PASS,
        edx: PASS,
    },
    // Leaf 1: signature and brand/APIC-id word as the host's; features:
    // ECX: SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1, SSE4.2, MOVBE, POPCNT, AES, RDRAND.
    // EDX: FPU VME DE PSE TSC MSR PAE MCE CX8 APIC SEP MTRR PGE MCA CMOV PAT PSE36
    //      CLFSH MMX FXSR SSE SSE2.
    Mask {
        function: 1,
        eax: PASS,
        ebx: 0x0000_ffff,
        ecx: (1 << 0)
            | (1 << 1)
            | (1 << 9)
            | (1 << 13)
            | (1 << 19)
            | (1 << 20)
            | (1 << 22)
            | (1 << 23)
            | (1 << 25)
            | (1 << 30),
        edx: 0x0783_fbff,
    },
    // Leaf 7.0: FSGSBASE, BMI1, SMEP, BMI2, ERMS, SMAP, ADX (EBX); UMIP is
    // emulated by neither backend yet, so not offered.
    Mask {
        function: 7,
        eax: 0,
        ebx: (1 << 0) | (1 << 3) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 19) | (1 << 20),
        ecx: 0,
        edx: 0,
    },
    // 0x8000_0000: highest extended leaf (clamped below).
    Mask {
        function: 0x8000_0000,
        eax: PASS,
        ebx: 0,
        ecx: 0,
        edx: 0,
    },
    // 0x8000_0001: LAHF/SAHF, ABM/LZCNT, PREFETCHW (ECX); SYSCALL, NX, 1 GiB
    // pages, RDTSCP, LM (EDX).
    Mask {
        function: 0x8000_0001,
        eax: PASS,
        ebx: 0,
        ecx: (1 << 0) | (1 << 5) | (1 << 8),
        edx: (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29),
    },
    // 0x8000_0002..4: the brand string.
    Mask {
        function: 0x8000_0002,
        eax: PASS,
        ebx: PASS,
        ecx: PASS,
        edx: PASS,
    },
    Mask {
        function: 0x8000_0003,
        eax: PASS,
        ebx: PASS,
        ecx: PASS,
        edx: PASS,
    },
    Mask {
        function: 0x8000_0004,
        eax: PASS,
        ebx: PASS,
        ecx: PASS,
        edx: PASS,
    },
    // 0x8000_0008: physical and linear address widths (EAX[15:0]).
    Mask {
        function: 0x8000_0008,
        eax: 0xffff,
        ebx: 0,
        ecx: 0,
        edx: 0,
    },
];

/// The highest basic and extended leaves rkvm describes.
const MAX_BASIC: u32 = 7;
const MAX_EXTENDED: u32 = 0x8000_0008;

/// Bit 31 of CPUID.1:ECX: "running under a hypervisor". SDM Vol. 2A Table 3-10.
const ECX1_HYPERVISOR: u32 = 1 << 31;

/// Builds the table `KVM_GET_SUPPORTED_CPUID` reports, from the host's
/// CPUID (`host(function, index) -> (eax, ebx, ecx, edx)`) and the masks
/// above. Leaves the host does not have are left out. Returns the number of
/// entries written to `out`, or `None` if `out` is too small.
pub(crate) fn supported(
    host: impl Fn(u32, u32) -> (u32, u32, u32, u32),
    out: &mut [kvm_cpuid_entry2],
) -> Option<usize> {
    let (host_max_basic, ..) = host(0, 0);
    let (host_max_ext, ..) = host(0x8000_0000, 0);
    let max_basic = host_max_basic.min(MAX_BASIC);
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
        let (mut eax, ebx, mut ecx, edx) = host(m.function, 0);
        match m.function {
            0 => eax = max_basic,
            0x8000_0000 => eax = max_ext,
            1 => ecx |= ECX1_HYPERVISOR,
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
            ebx: ebx & m.ebx,
            ecx: ecx & (m.ecx | if m.function == 1 { ECX1_HYPERVISOR } else { 0 }),
            edx: edx & m.edx,
            ..Default::default()
        };
        n += 1;
    }
    Some(n)
}
