// SPDX-License-Identifier: GPL-2.0

//! Keeping the guest's FPU and extended (SSE/AVX...) state apart from the
//! host's.
//!
//! VMRUN switches none of the x87/SSE/AVX registers. rkvm keeps the
//! guest's register image in memory ([`FpuImage`]) and only loads it
//! inside a kernel FPU section ([`FpuSection`]): `kernel_fpu_begin` saves
//! the calling task's user state (it is restored on the way back to user
//! space) and stops anyone else on this CPU from using the FPU; inside,
//! the guest image is loaded, the guest runs, and the image is saved again
//! before `kernel_fpu_end`. The host never sees guest values, and the
//! guest never sees host values: the image is saved with every component
//! the host's XCR0 enables (XSAVE), or the x87/SSE state (FXSAVE) on CPUs
//! without XSAVE. SDM Vol. 1 13.4 (XSAVE area), 10.5 (FXSAVE).
//!
//! PKRU is the exception: the kernel restores it to user space separately
//! from the rest of the FPU state (it is not part of what
//! `kernel_fpu_begin` saves), so it is left out of the XSAVE mask and
//! switched by hand with RDPKRU/WRPKRU, as KVM does. SDM Vol. 3A 4.6.2.
//!
//! XCR0 is the guest's own too once it turns XSAVE on (CR4.OSXSAVE) and
//! runs XSETBV (an exit: run/regs.rs `xsetbv`): [`FpuImage::set_xcr0`]
//! keeps it, and [`FpuSection::load_guest_xfeatures`] loads it for each
//! entry only, with interrupts off, as KVM's `kvm_load_xfeatures`. The
//! image is always saved and restored under the host's XCR0, so it holds
//! the AVX registers whatever the guest's XCR0 says. SDM Vol. 1 13.3.
//!
//! IA32_XSS, the supervisor components XSAVES and XRSTORS add to XCR0's,
//! is 0 for the guest: rkvm offers none (no XSAVES in CPUID), but SVM
//! cannot intercept XSAVES/XRSTORS, so a guest with CR4.OSXSAVE could run
//! them anyway, and with the host's XSS they would read and write the
//! host's supervisor state (CET shadow-stack pointers, for one). KVM
//! switches XSS for the same reason. SDM Vol. 1 13.11.

use crate::sys::cpu::{self, cpuid, IrqsDisabled};
use crate::x86::xsave::{
    self, XsaveRefusal, FCW_INIT, LEGACY_SIZE, MXCSR_INIT, XFEATURE_FP, XFEATURE_FPSSE,
    XFEATURE_OFFERABLE, XFEATURE_SSE, YMM_AT, YMM_SIZE,
};
use core::arch::asm;
use core::marker::PhantomData;
use kernel::prelude::*;

extern "C" {
    fn rkvm_kernel_fpu_begin();
    fn rkvm_kernel_fpu_end();
}

/// CPUID.1:ECX bit 27: OSXSAVE, the OS has enabled XSAVE (CR4.OSXSAVE).
/// SDM Vol. 2A CPUID.
const CPUID1_ECX_OSXSAVE: u32 = 1 << 27;
/// CR4.PKE: protection keys for user pages are on. SDM Vol. 3A 2.5.
const CR4_PKE: u64 = 1 << 22;
/// XCR0 bit 9: the PKRU state component. SDM Vol. 1 13.1.
const XFEATURE_PKRU: u64 = 1 << 9;
/// XSAVE header offset: XSTATE_BV is its first quadword. SDM Vol. 1 13.4.2.
const XSAVE_HEADER: usize = 512;
/// CPUID.(EAX=0DH,ECX=1):EAX bit 3: XSAVES/XRSTORS and IA32_XSS exist.
const D1_EAX_XSAVES: u32 = 1 << 3;
/// IA32_XSS. SDM Vol. 4 Table 2-2.
const MSR_IA32_XSS: u32 = 0xda0;

/// 64 bytes, 64-byte aligned: XSAVE needs its area aligned so.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Chunk([u8; 64]);

/// How this CPU saves extended state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FpuLayout {
    /// The XCR0 mask to save and restore, or `None` to use FXSAVE.
    xsave_mask: Option<u64>,
    /// Bytes of the save area.
    size: usize,
    /// Whether the host has protection keys on (PKRU must be switched).
    pkru: bool,
    /// The MXCSR bits this processor supports (a set of a bit outside
    /// them makes FXRSTOR and XRSTOR fault). SDM Vol. 1 11.6.6.
    mxcsr_mask: u32,
    /// The processor has IA32_XSS (XSAVES).
    xss: bool,
}

impl FpuLayout {
    /// Reads the layout from CPUID and XCR0 on the current CPU.
    pub(crate) fn probe() -> Self {
        let cr4: u64;
        // SAFETY: Reading CR4 at CPL 0 has no side effects.
        unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags)) };
        let pkru = cr4 & CR4_PKE != 0;
        let mxcsr_mask = probe_mxcsr_mask();
        if !host_has_xsave() {
            return Self {
                xsave_mask: None,
                size: LEGACY_SIZE,
                pkru,
                mxcsr_mask,
                xss: false,
            };
        }
        Self {
            xsave_mask: Some(xgetbv0() & !XFEATURE_PKRU),
            // CPUID.(EAX=0DH,ECX=0):EBX: the size for the features XCR0 enables.
            size: cpuid(0xd, 0).ebx as usize,
            pkru,
            mxcsr_mask,
            xss: cpuid(0xd, 1).eax & D1_EAX_XSAVES != 0,
        }
    }
}

/// Whether the host saves extended state with XSAVE (the kernel has
/// CR4.OSXSAVE on), which KVM reports as `KVM_CAP_XSAVE` and
/// `KVM_CAP_XCRS`.
pub(crate) fn host_has_xsave() -> bool {
    cpuid(1, 0).ecx & CPUID1_ECX_OSXSAVE != 0
}

/// Reads XCR0. Only with CR4.OSXSAVE set. SDM Vol. 2C XGETBV.
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: Callers check CR4.OSXSAVE (`host_has_xsave`); XGETBV with ECX=0 only reads XCR0.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
             options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// The XSAVE components rkvm can give guests on this host: those of
/// [`XFEATURE_OFFERABLE`] the host's XCR0 has (the kernel sets XCR0 once,
/// at boot, on every CPU alike), and none on a host without XSAVE, as
/// KVM's `kvm_caps.supported_xcr0`.
pub(crate) fn offered_xcr0() -> u64 {
    if host_has_xsave() {
        xgetbv0() & XFEATURE_OFFERABLE
    } else {
        0
    }
}

/// The processor's MXCSR_MASK, as SDM Vol. 1 11.6.6 finds it: FXSAVE
/// writes it at bytes 28..32 of its image; 0 there means the default
/// 0xFFBF (no DAZ).
fn probe_mxcsr_mask() -> u32 {
    #[repr(C, align(16))]
    struct Fxsave([u8; LEGACY_SIZE]);
    let mut image = Fxsave([0; LEGACY_SIZE]);
    // SAFETY: Called from process context; ended below.
    unsafe { rkvm_kernel_fpu_begin() };
    // SAFETY: The image is 512 bytes and 16-byte aligned; FXSAVE only writes it, inside a
    // kernel FPU section.
    unsafe { asm!("fxsave64 [{0}]", in(reg) image.0.as_mut_ptr(), options(nostack)) };
    // SAFETY: Ends the section begun above.
    unsafe { rkvm_kernel_fpu_end() };
    match u32::from_le_bytes([image.0[28], image.0[29], image.0[30], image.0[31]]) {
        0 => 0xffbf,
        mask => mask,
    }
}

/// A guest's FPU and extended register state, in memory.
pub(crate) struct FpuImage {
    layout: FpuLayout,
    area: KVec<Chunk>,
    /// The guest's PKRU (0 at reset).
    pkru: u32,
    /// The guest's XCR0: x87 (1) at reset; only ever a value
    /// [`xsave::xcr0_valid`] accepts within [`FpuImage::offered`], so
    /// XSETBV takes it on this host.
    xcr0: u64,
}

impl FpuImage {
    /// The state after RESET/INIT: x87 and SSE initialised (FCW 0x37F,
    /// MXCSR 0x1F80), everything else zero. SDM Vol. 3A 10.1.1 Table 10-1.
    pub(crate) fn new(layout: FpuLayout) -> Result<Self> {
        let chunks = layout.size.div_ceil(64).max((XSAVE_HEADER + 64) / 64);
        let mut area = KVec::with_capacity(chunks, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..chunks {
            area.push(Chunk([0; 64]), GFP_KERNEL_ACCOUNT)?;
        }
        // In the legacy region (its first 64 bytes are chunk 0).
        area[0].0[legacy::FCW..legacy::FCW + 2].copy_from_slice(&FCW_INIT.to_le_bytes());
        area[0].0[legacy::MXCSR..legacy::MXCSR + 4].copy_from_slice(&MXCSR_INIT.to_le_bytes());
        if layout.xsave_mask.is_some() {
            // XSTATE_BV: x87 and SSE come from the image (so FCW and MXCSR above are used),
            // every other component is in its initial state.
            area[XSAVE_HEADER / 64].0[0] = XFEATURE_FPSSE as u8;
        }
        Ok(Self {
            layout,
            area,
            pkru: 0,
            xcr0: XFEATURE_FP,
        })
    }

    /// The components this image can give the guest: x87 and SSE always,
    /// AVX where the host saves it (see [`offered_xcr0`]).
    pub(crate) fn offered(&self) -> u64 {
        XFEATURE_FPSSE | self.layout.xsave_mask.unwrap_or(0) & XFEATURE_OFFERABLE
    }

    /// The guest's XCR0.
    pub(crate) fn xcr0(&self) -> u64 {
        self.xcr0
    }

    /// Sets the guest's XCR0 (XSETBV, `KVM_SET_XCRS`) if XCR0's rules
    /// allow it for a guest whose CPUID offers `guest_supported`
    /// (CPUID.(EAX=0DH,ECX=0):EDX:EAX) and this host; returns false, and
    /// changes nothing, if not.
    pub(crate) fn set_xcr0(&mut self, value: u64, guest_supported: u64) -> bool {
        if self.layout.xsave_mask.is_none()
            || !xsave::xcr0_valid(value, guest_supported & self.offered())
        {
            return false;
        }
        self.xcr0 = value;
        true
    }

    /// Copies `out.len()` bytes of the area from byte `at` (inside it).
    fn read_bytes(&self, at: usize, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            let o = at + i;
            *byte = self.area[o / 64].0[o % 64];
        }
    }

    /// Copies `src` into the area at byte `at` (inside it).
    fn write_bytes(&mut self, at: usize, src: &[u8]) {
        for (i, &byte) in src.iter().enumerate() {
            let o = at + i;
            self.area[o / 64].0[o % 64] = byte;
        }
    }

    /// Whether the area holds the AVX component (the host saves it).
    fn has_ymm(&self) -> bool {
        self.offered() & xsave::XFEATURE_YMM != 0 && self.area.len() * 64 >= YMM_AT.end
    }
}

/// The x87 and SSE registers as `KVM_GET_FPU`/`KVM_SET_FPU` carry them:
/// the fields of the FXSAVE legacy region. SDM Vol. 1 Table 10-2.
pub(crate) struct LegacyFpu {
    pub(crate) fpr: [[u8; 16]; 8],
    pub(crate) fcw: u16,
    pub(crate) fsw: u16,
    /// The abridged tag word (one bit per register: 1 = not empty).
    pub(crate) ftw: u8,
    pub(crate) fop: u16,
    pub(crate) fip: u64,
    pub(crate) fdp: u64,
    pub(crate) xmm: [[u8; 16]; 16],
}

/// Offsets in the legacy region (64-bit format). SDM Vol. 1 Table 10-2.
mod legacy {
    pub(super) const FCW: usize = 0;
    pub(super) const FSW: usize = 2;
    pub(super) const FTW: usize = 4;
    pub(super) const FOP: usize = 6;
    pub(super) const FIP: usize = 8;
    pub(super) const FDP: usize = 16;
    pub(super) const MXCSR: usize = 24;
    pub(super) const ST0: usize = 32;
    pub(super) const XMM0: usize = 160;

    /// The 16 bytes of register `i` of a file starting at `base` (ST0 or
    /// XMM0): each register has a 16-byte slot.
    pub(super) fn slot(base: usize, i: usize) -> core::ops::Range<usize> {
        base + 16 * i..base + 16 * (i + 1)
    }
}

impl FpuImage {
    /// The XSTATE_BV of the image: which components hold values (an
    /// FXSAVE image holds x87 and SSE, always).
    fn xstate_bv(&self) -> u64 {
        match self.layout.xsave_mask {
            Some(_) => {
                let mut q = [0; 8];
                q.copy_from_slice(&self.area[XSAVE_HEADER / 64].0[..8]);
                u64::from_le_bytes(q)
            }
            None => XFEATURE_FPSSE,
        }
    }

    /// `KVM_GET_XSAVE`: the guest's state in KVM's XSAVE layout (`out`:
    /// at least 4096 bytes, zeroed), with the components a guest whose
    /// CPUID offers `guest_supported` has. x86/xsave.rs has the rules.
    pub(crate) fn to_uabi(&self, guest_supported: u64, out: &mut [u8]) {
        let mut ymm = [0; YMM_SIZE];
        if self.has_ymm() {
            self.read_bytes(YMM_AT.start, &mut ymm);
        }
        let image = xsave::Image {
            legacy: &self.legacy_bytes(),
            ymm: &ymm,
            xstate_bv: self.xstate_bv(),
        };
        xsave::to_uabi(
            &image,
            guest_supported & self.offered(),
            self.layout.mxcsr_mask,
            out,
        );
    }

    /// `KVM_SET_XSAVE`: replaces the guest's state from a region in KVM's
    /// XSAVE layout, or changes nothing if it is refused.
    pub(crate) fn set_uabi(&mut self, region: &[u8]) -> Result<(), XsaveRefusal> {
        let mut legacy = self.legacy_bytes();
        let mut ymm = [0; YMM_SIZE];
        let xsave_host = self.layout.xsave_mask.is_some();
        let offered = if self.has_ymm() {
            self.offered()
        } else {
            XFEATURE_FPSSE
        };
        let xstate_bv = xsave::from_uabi(
            region,
            xsave_host,
            offered,
            self.layout.mxcsr_mask,
            &mut legacy,
            &mut ymm,
        )?;
        self.write_bytes(0, &legacy);
        if xstate_bv & xsave::XFEATURE_YMM != 0 {
            self.write_bytes(YMM_AT.start, &ymm);
        }
        if xsave_host {
            // Components left out of XSTATE_BV are initialised by the next XRSTOR.
            self.area[XSAVE_HEADER / 64].0[..8].copy_from_slice(&xstate_bv.to_le_bytes());
        }
        Ok(())
    }

    /// The 512-byte legacy region as bytes.
    fn legacy_bytes(&self) -> [u8; LEGACY_SIZE] {
        let mut bytes = [0; LEGACY_SIZE];
        self.read_bytes(0, &mut bytes);
        bytes
    }

    /// The x87 and SSE registers, as `KVM_GET_FPU` reports them. A
    /// component XSAVE recorded as in its initial state (its XSTATE_BV bit
    /// clear) was not written to the image: its initial values are
    /// reported (FCW 0x37F, everything else zero). SDM Vol. 1 13.6.
    pub(crate) fn legacy(&self) -> LegacyFpu {
        let b = self.legacy_bytes();
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u64_at = |o: usize| {
            let mut q = [0; 8];
            q.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(q)
        };
        let in_image = self.xstate_bv();
        let mut out = LegacyFpu {
            fpr: [[0; 16]; 8],
            fcw: FCW_INIT,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            xmm: [[0; 16]; 16],
        };
        if in_image & XFEATURE_FP != 0 {
            out.fcw = u16_at(legacy::FCW);
            out.fsw = u16_at(legacy::FSW);
            out.ftw = b[legacy::FTW];
            out.fop = u16_at(legacy::FOP);
            out.fip = u64_at(legacy::FIP);
            out.fdp = u64_at(legacy::FDP);
            for (i, st) in out.fpr.iter_mut().enumerate() {
                st.copy_from_slice(&b[legacy::slot(legacy::ST0, i)]);
            }
        }
        if in_image & XFEATURE_SSE != 0 {
            for (i, x) in out.xmm.iter_mut().enumerate() {
                x.copy_from_slice(&b[legacy::slot(legacy::XMM0, i)]);
            }
        }
        out
    }

    /// Replaces the x87 and SSE registers (`KVM_SET_FPU`); MXCSR and
    /// every other component are kept. Any values are safe to load: FXRSTOR
    /// and XRSTOR only fault on a reserved MXCSR bit, which this does not
    /// touch, and a pending x87 exception in FSW is taken by the guest at
    /// its next x87 instruction. SDM Vol. 2B FXRSTOR.
    pub(crate) fn set_legacy(&mut self, fpu: &LegacyFpu) {
        let mut b = self.legacy_bytes();
        b[legacy::FCW..legacy::FCW + 2].copy_from_slice(&fpu.fcw.to_le_bytes());
        b[legacy::FSW..legacy::FSW + 2].copy_from_slice(&fpu.fsw.to_le_bytes());
        b[legacy::FTW] = fpu.ftw;
        b[legacy::FOP..legacy::FOP + 2].copy_from_slice(&fpu.fop.to_le_bytes());
        b[legacy::FIP..legacy::FIP + 8].copy_from_slice(&fpu.fip.to_le_bytes());
        b[legacy::FDP..legacy::FDP + 8].copy_from_slice(&fpu.fdp.to_le_bytes());
        for (i, st) in fpu.fpr.iter().enumerate() {
            b[legacy::slot(legacy::ST0, i)].copy_from_slice(st);
        }
        for (i, x) in fpu.xmm.iter().enumerate() {
            b[legacy::slot(legacy::XMM0, i)].copy_from_slice(x);
        }
        self.write_bytes(0, &b);
        if self.layout.xsave_mask.is_some() {
            // Both components now come from the image at the next XRSTOR.
            self.area[XSAVE_HEADER / 64].0[0] |= XFEATURE_FPSSE as u8;
        }
    }
}

/// A kernel FPU section with the guest's state loaded into the registers.
/// Preemption and softirqs are off while it lives; dropping it saves the
/// guest state back to its image and ends the section.
pub(crate) struct FpuSection<'a> {
    image: &'a mut FpuImage,
    /// The host's PKRU, to put back (when the host has protection keys).
    host_pkru: u32,
}

impl<'a> FpuSection<'a> {
    /// Begins a kernel FPU section and loads `image`.
    pub(crate) fn enter(image: &'a mut FpuImage) -> Self {
        // SAFETY: Called from process context (an ioctl); ended in `drop`.
        unsafe { rkvm_kernel_fpu_begin() };
        let ptr = image.area.as_ptr();
        match image.layout.xsave_mask {
            Some(mask) => {
                // SAFETY: The area is 64-byte aligned, `layout.size` bytes or more, and holds
                // a valid XSAVE image (initialised in `new`, since then written only by
                // XSAVE with the same mask); we are inside a kernel FPU section.
                unsafe {
                    asm!("xrstor64 [{0}]", in(reg) ptr, in("eax") mask as u32,
                         in("edx") (mask >> 32) as u32, options(nostack, readonly))
                };
            }
            None => {
                // SAFETY: As above, for the 512-byte FXSAVE image (16-byte alignment needed).
                unsafe { asm!("fxrstor64 [{0}]", in(reg) ptr, options(nostack, readonly)) };
            }
        }
        let mut host_pkru = 0;
        if image.layout.pkru {
            host_pkru = rdpkru();
            if host_pkru != image.pkru {
                // SAFETY: CR4.PKE is set (layout); any value is a valid PKRU, and only the
                // guest runs with it: `drop` puts the host's back before the section ends.
                unsafe { wrpkru(image.pkru) };
            }
        }
        Self { image, host_pkru }
    }

    /// Loads the guest's XCR0 (and an IA32_XSS of 0) for one entry, when
    /// the guest has XSAVE on (`guest_osxsave`: its CR4.OSXSAVE; without,
    /// neither means anything to it) and they differ from the host's; the
    /// guard puts the host's back. Interrupts are off (`_irqs`) from before
    /// this until after the guard is dropped, so no host code that saves
    /// or uses extended state runs under the guest's values, as in KVM's
    /// `kvm_load_xfeatures`.
    pub(crate) fn load_guest_xfeatures<'s>(
        &'s self,
        _irqs: &'s IrqsDisabled,
        guest_osxsave: bool,
    ) -> GuestXfeatures<'s> {
        let mut guard = GuestXfeatures {
            xcr0: None,
            xss: None,
            _during: PhantomData,
        };
        if !guest_osxsave || self.image.layout.xsave_mask.is_none() {
            return guard;
        }
        let host = xgetbv0();
        if host != self.image.xcr0 {
            // SAFETY: The guest's XCR0 is valid and a subset of what the host's XCR0
            // enables (`FpuImage::set_xcr0`'s invariant), so XSETBV takes it; the host's
            // comes back before interrupts are enabled again (`GuestXfeatures::drop`).
            unsafe { xsetbv0(self.image.xcr0) };
            guard.xcr0 = Some(host);
        }
        if self.image.layout.xss {
            if let Ok(host_xss) = cpu::rdmsr(MSR_IA32_XSS) {
                // SAFETY: 0 is always a valid IA32_XSS (no supervisor component); only the
                // guest runs with it, and the host's comes back before interrupts are on.
                if host_xss != 0 && unsafe { cpu::wrmsr(MSR_IA32_XSS, 0) }.is_ok() {
                    guard.xss = Some(host_xss);
                }
            }
        }
        guard
    }
}

/// Writes XCR0. SDM Vol. 2C XSETBV.
///
/// # Safety
///
/// CR4.OSXSAVE is set, `value` is a valid XCR0 for this processor (else
/// #GP in the kernel), and the code that runs next is right to run with it.
unsafe fn xsetbv0(value: u64) {
    // SAFETY: As the caller guarantees.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack, preserves_flags))
    };
}

/// The guest's XCR0 and IA32_XSS are loaded while this lives (where they
/// differ from the host's): see [`FpuSection::load_guest_xfeatures`]. It
/// borrows the FPU section and the interrupts-off guard, so it ends
/// before either: the host's values are back before the image is saved
/// and before interrupts are on.
pub(crate) struct GuestXfeatures<'s> {
    /// The host's XCR0, to put back.
    xcr0: Option<u64>,
    /// The host's IA32_XSS, to put back.
    xss: Option<u64>,
    _during: PhantomData<&'s IrqsDisabled>,
}

impl Drop for GuestXfeatures<'_> {
    fn drop(&mut self) {
        if let Some(host) = self.xcr0 {
            // SAFETY: The value XGETBV read on this CPU before the entry (interrupts have been
            // off since, so this is the same CPU): the host's own XCR0.
            unsafe { xsetbv0(host) };
        }
        if let Some(host) = self.xss {
            // SAFETY: The value read on this CPU before the entry: the host's own IA32_XSS.
            // A failure cannot happen for a value the MSR held; there is nothing to do if it did.
            let _ = unsafe { cpu::wrmsr(MSR_IA32_XSS, host) };
        }
    }
}

/// Reads PKRU. Only with CR4.PKE set. SDM Vol. 2B RDPKRU.
fn rdpkru() -> u32 {
    let value: u32;
    // SAFETY: Callers check CR4.PKE; RDPKRU only reads the register.
    unsafe {
        asm!("rdpkru", in("ecx") 0u32, out("eax") value, out("edx") _,
             options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes PKRU. SDM Vol. 2B WRPKRU.
///
/// # Safety
///
/// CR4.PKE is set, and the value is right for the code that runs next.
unsafe fn wrpkru(value: u32) {
    // SAFETY: As the caller guarantees.
    unsafe {
        asm!("wrpkru", in("eax") value, in("ecx") 0u32, in("edx") 0u32,
             options(nostack, preserves_flags))
    };
}

impl Drop for FpuSection<'_> {
    fn drop(&mut self) {
        if self.image.layout.pkru {
            self.image.pkru = rdpkru();
            if self.image.pkru != self.host_pkru {
                // SAFETY: CR4.PKE is set; this is the value the host had.
                unsafe { wrpkru(self.host_pkru) };
            }
        }
        let ptr = self.image.area.as_mut_ptr();
        match self.image.layout.xsave_mask {
            Some(mask) => {
                // SAFETY: The area is aligned and large enough for this mask (see `enter`).
                unsafe {
                    asm!("xsave64 [{0}]", in(reg) ptr, in("eax") mask as u32,
                         in("edx") (mask >> 32) as u32, options(nostack))
                };
            }
            None => {
                // SAFETY: The area is 512 bytes or more and 16-byte aligned.
                unsafe { asm!("fxsave64 [{0}]", in(reg) ptr, options(nostack)) };
            }
        }
        // SAFETY: Ends the section `enter` began, on the same CPU (preemption is off).
        unsafe { rkvm_kernel_fpu_end() };
    }
}
