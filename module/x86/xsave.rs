// SPDX-License-Identifier: GPL-2.0

//! KVM's XSAVE ABI: `struct kvm_xsave`, the 4096 bytes `KVM_GET_XSAVE`,
//! `KVM_GET_XSAVE2` and `KVM_SET_XSAVE` carry.
//!
//! The region is the XSAVE area in its standard (non-compacted) format,
//! SDM Vol. 1 13.4: the 512-byte legacy region FXSAVE also writes, the
//! 64-byte XSAVE header at byte 512 (XSTATE_BV, then XCOMP_BV, then 48
//! reserved bytes), then each extended component at the offset CPUID leaf
//! 0xD gives. KVM fills it the way the kernel's ptrace and signal code do
//! (`__copy_xstate_to_uabi_buf`, `copy_uabi_to_xstate` in
//! arch/x86/kernel/fpu/xstate.c); these are the same rules, for the
//! components rkvm offers a guest: x87, SSE and, where the host has it,
//! AVX. A component the region says is in its initial state (its
//! XSTATE_BV bit clear) is reported with its initial values and is not
//! taken from the region on a set.
//!
//! The file also has XCR0's rules ([`xcr0_valid`]) and the sizes CPUID
//! leaf 0xD reports for a set of components ([`required_size`]).
//!
//! Two differences a reader may notice against KVM's bytes: the
//! software-reserved bytes 464..512 of the legacy region are zero (the
//! kernel writes its signal-frame description there, which has no meaning
//! for a vCPU), and a host without XSAVE is handled as KVM does, by the
//! FXSAVE image plus an XSTATE_BV of x87|SSE.

/// The size of `struct kvm_xsave` (`KVM_CAP_XSAVE2` is never smaller).
pub(crate) const KVM_XSAVE_SIZE: usize = 4096;
/// The legacy region's size. SDM Vol. 1 10.5.1.
pub(crate) const LEGACY_SIZE: usize = 512;

/// XSTATE_BV bits of the state components. SDM Vol. 1 13.1.
pub(crate) const XFEATURE_FP: u64 = 1 << 0;
pub(crate) const XFEATURE_SSE: u64 = 1 << 1;
pub(crate) const XFEATURE_YMM: u64 = 1 << 2;
/// The components every vCPU has, XSAVE or not.
pub(crate) const XFEATURE_FPSSE: u64 = XFEATURE_FP | XFEATURE_SSE;
/// The components rkvm can give a guest, where the host's XCR0 has them:
/// x87, SSE and AVX (the upper halves of YMM0-15). KVM also offers MPX,
/// AVX-512, PKRU and AMX, each a component to switch, check and convert;
/// docs/abi.md says so.
pub(crate) const XFEATURE_OFFERABLE: u64 = XFEATURE_FPSSE | XFEATURE_YMM;

/// Where the AVX component lies in the standard format: right after the
/// header, 16 bytes for each of YMM0-15's upper halves. Fixed by the
/// architecture (CPUID.(EAX=0DH,ECX=2) reports 256 bytes at 576 on every
/// processor with AVX). SDM Vol. 1 13.4.3, 13.5.3.
pub(crate) const YMM_AT: core::ops::Range<usize> = 576..832;
/// The size of the AVX component.
pub(crate) const YMM_SIZE: usize = 256;
/// The legacy region and the header: the least an XSAVE area holds.
const LEGACY_AND_HEADER: u32 = 576;

/// MXCSR after reset. SDM Vol. 1 10.2.3.
pub(crate) const MXCSR_INIT: u32 = 0x1f80;
/// The x87 control word after FNINIT. SDM Vol. 1 8.1.5.
pub(crate) const FCW_INIT: u16 = 0x37f;

/// Byte ranges of the legacy region (SDM Vol. 1 Table 10-2) and header.
mod at {
    use core::ops::Range;
    /// FCW, FSW, FTW, FOP, FIP, FDP: the x87 part before MXCSR.
    pub(super) const X87_CONTROL: Range<usize> = 0..24;
    /// MXCSR and MXCSR_MASK.
    pub(super) const MXCSR: Range<usize> = 24..32;
    /// ST0-ST7 (MM0-MM7), 16 bytes each.
    pub(super) const ST: Range<usize> = 32..160;
    /// XMM0-XMM15, 16 bytes each.
    pub(super) const XMM: Range<usize> = 160..416;
    /// The x87 component as XRSTOR loads it: everything up to XMM0.
    pub(super) const X87: Range<usize> = 0..160;
    pub(super) const XSTATE_BV: Range<usize> = 512..520;
    pub(super) const XCOMP_BV: Range<usize> = 520..528;
    pub(super) const HEADER_RESERVED: Range<usize> = 528..576;
}

/// Why `KVM_SET_XSAVE` refuses a region (`EINVAL` for each, as KVM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XsaveRefusal {
    /// XSTATE_BV names a component the device does not offer.
    UnsupportedComponent,
    /// XCOMP_BV is not zero: user space must use the standard format.
    Compacted,
    /// A reserved byte of the XSAVE header is not zero.
    ReservedHeader,
    /// MXCSR has a bit the processor's MXCSR_MASK does not allow (XRSTOR
    /// would fault). SDM Vol. 1 11.6.6.
    ReservedMxcsr,
}

fn read_u64(bytes: &[u8], range: core::ops::Range<usize>) -> u64 {
    let mut q = [0; 8];
    q.copy_from_slice(&bytes[range]);
    u64::from_le_bytes(q)
}

/// The guest's state as XSAVE keeps it: the legacy region, the AVX
/// component, and which components hold values (XSTATE_BV; the others
/// are in their initial state: FCW 0x37F, MXCSR 0x1F80, everything else
/// zero).
pub(crate) struct Image<'a> {
    pub(crate) legacy: &'a [u8; LEGACY_SIZE],
    pub(crate) ymm: &'a [u8; YMM_SIZE],
    pub(crate) xstate_bv: u64,
}

/// Writes the region `KVM_GET_XSAVE` returns into `out` (at least
/// `KVM_XSAVE_SIZE` bytes, all zero on entry) from the guest's image.
/// `reported` is the components the region describes (x87, SSE and those
/// the guest's CPUID offers, as KVM's `guest_supported_xcr0 | FPSSE`):
/// XSTATE_BV lists the ones of them that hold values, and each is
/// written, with its initial values if it holds none. `mxcsr_mask` is the
/// processor's, reported with an initial MXCSR.
pub(crate) fn to_uabi(image: &Image<'_>, reported: u64, mxcsr_mask: u32, out: &mut [u8]) {
    let legacy = image.legacy;
    let present = image.xstate_bv & (reported | XFEATURE_FPSSE) & XFEATURE_OFFERABLE;
    if present & XFEATURE_FP != 0 {
        out[at::X87_CONTROL].copy_from_slice(&legacy[at::X87_CONTROL]);
        out[at::ST].copy_from_slice(&legacy[at::ST]);
    } else {
        out[0..2].copy_from_slice(&FCW_INIT.to_le_bytes());
    }
    // MXCSR belongs to both SSE and AVX state.
    if present & (XFEATURE_SSE | XFEATURE_YMM) != 0 {
        out[at::MXCSR].copy_from_slice(&legacy[at::MXCSR]);
    } else {
        out[24..28].copy_from_slice(&MXCSR_INIT.to_le_bytes());
        out[28..32].copy_from_slice(&mxcsr_mask.to_le_bytes());
    }
    if present & XFEATURE_SSE != 0 {
        out[at::XMM].copy_from_slice(&legacy[at::XMM]);
    }
    if present & XFEATURE_YMM != 0 {
        out[YMM_AT].copy_from_slice(image.ymm);
    }
    out[at::XSTATE_BV].copy_from_slice(&present.to_le_bytes());
}

/// Checks the region `KVM_SET_XSAVE` was given and copies its state into
/// the guest's legacy region and AVX component; returns the XSTATE_BV the
/// guest's image must now have (components left out are initialised by
/// the next XRSTOR). `offered` is the components the device can give a
/// guest (x87, SSE and, where the host has it, AVX: what
/// `KVM_GET_SUPPORTED_CPUID`'s leaf 0xD lists); any other is refused, as
/// KVM refuses one its `supported_xcr0` lacks (whatever the guest's own
/// CPUID says, as KVM). `xsave_host` is whether the host saves state with
/// XSAVE: without it the region is taken as an FXSAVE image, as KVM's
/// `fpu_copy_uabi_to_guest_fpstate` does.
pub(crate) fn from_uabi(
    region: &[u8],
    xsave_host: bool,
    offered: u64,
    mxcsr_mask: u32,
    legacy: &mut [u8; LEGACY_SIZE],
    ymm: &mut [u8; YMM_SIZE],
) -> Result<u64, XsaveRefusal> {
    let xstate_bv = read_u64(region, at::XSTATE_BV);
    let mxcsr = read_u64(region, at::MXCSR) as u32;
    if !xsave_host {
        if xstate_bv & !XFEATURE_FPSSE != 0 {
            return Err(XsaveRefusal::UnsupportedComponent);
        }
        if mxcsr & !mxcsr_mask != 0 {
            return Err(XsaveRefusal::ReservedMxcsr);
        }
        legacy.copy_from_slice(&region[..LEGACY_SIZE]);
        return Ok(XFEATURE_FPSSE);
    }
    if xstate_bv & !(XFEATURE_FPSSE | (offered & XFEATURE_OFFERABLE)) != 0 {
        return Err(XsaveRefusal::UnsupportedComponent);
    }
    if read_u64(region, at::XCOMP_BV) != 0 {
        return Err(XsaveRefusal::Compacted);
    }
    if region[at::HEADER_RESERVED].iter().any(|&b| b != 0) {
        return Err(XsaveRefusal::ReservedHeader);
    }
    // MXCSR matters to XRSTOR whenever x87, SSE or AVX state is restored.
    if xstate_bv & (XFEATURE_FPSSE | XFEATURE_YMM) != 0 && mxcsr & !mxcsr_mask != 0 {
        return Err(XsaveRefusal::ReservedMxcsr);
    }
    if xstate_bv & XFEATURE_FP != 0 {
        legacy[at::X87].copy_from_slice(&region[at::X87]);
    } else if xstate_bv & (XFEATURE_SSE | XFEATURE_YMM) != 0 {
        // SSE and AVX need MXCSR even without the x87 component that holds it.
        legacy[at::MXCSR].copy_from_slice(&region[at::MXCSR]);
    }
    if xstate_bv & XFEATURE_SSE != 0 {
        legacy[at::XMM].copy_from_slice(&region[at::XMM]);
    }
    if xstate_bv & XFEATURE_YMM != 0 {
        ymm.copy_from_slice(&region[YMM_AT]);
    }
    Ok(xstate_bv)
}

/// XCR0's rules, for XSETBV in the guest and `KVM_SET_XCRS` alike, as
/// KVM's `__kvm_set_xcr`: x87 is always on, AVX needs SSE, and only
/// components the guest's CPUID offers and the device can give
/// (`guest_supported`) may be enabled. (KVM's further rules are for MPX,
/// AVX-512 and AMX, which rkvm never offers.) SDM Vol. 1 13.3.
pub(crate) fn xcr0_valid(xcr0: u64, guest_supported: u64) -> bool {
    xcr0 & XFEATURE_FP != 0
        && !(xcr0 & XFEATURE_YMM != 0 && xcr0 & XFEATURE_SSE == 0)
        && xcr0 & !(guest_supported | XFEATURE_FP) == 0
}

/// The bytes an XSAVE area needs for the components in `xcr0`, in the
/// standard format (`compacted` false: CPUID.(EAX=0DH,ECX=0):EBX for
/// that XCR0) or the compacted one XSAVEC writes (CPUID.(EAX=0DH,ECX=1):EBX),
/// from the processor's description of each component
/// (`host(0xd, i) -> (size, offset, flags, _)`, flags bit 1: 64-byte
/// aligned when compacted), as KVM's `xstate_required_size`. SDM Vol. 1
/// 13.4.3.
pub(crate) fn required_size(
    xcr0: u64,
    compacted: bool,
    host: impl Fn(u32, u32) -> (u32, u32, u32, u32),
) -> u32 {
    let mut size = LEGACY_AND_HEADER;
    for i in 2..64 {
        if xcr0 & (1 << i) == 0 {
            continue;
        }
        let (len, offset, flags, _) = host(0xd, i);
        let start = match (compacted, flags & 2 != 0) {
            (false, _) => offset,
            (true, true) => size.next_multiple_of(64),
            (true, false) => size,
        };
        size = size.max(start.saturating_add(len));
    }
    size
}
