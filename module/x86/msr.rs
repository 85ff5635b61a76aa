// SPDX-License-Identifier: GPL-2.0

//! The model-specific registers rkvm virtualises, as seen through
//! `KVM_GET_MSRS` / `KVM_SET_MSRS` (host-initiated accesses).
//!
//! MSR numbers: SDM Vol. 4 Table 2-2 and APM Vol. 2 Appendix A.

use crate::x86::cpuid::GuestFeatures;
use crate::x86::regs::{self, HostLimits};

/// MSR indices.
pub(crate) mod index {
    pub(crate) const TSC: u32 = 0x10;
    pub(crate) const TSC_ADJUST: u32 = 0x3b;
    pub(crate) const APIC_BASE: u32 = 0x1b;
    pub(crate) const SYSENTER_CS: u32 = 0x174;
    pub(crate) const SYSENTER_ESP: u32 = 0x175;
    pub(crate) const SYSENTER_EIP: u32 = 0x176;
    pub(crate) const MTRRCAP: u32 = 0xfe;
    /// IA32_SMBASE: where system management mode keeps its state
    /// (x86/smm.rs). Only the VMM reads and writes it, as in KVM: a real
    /// processor has it only in its SMRAM state-save area.
    pub(crate) const SMBASE: u32 = 0x9e;
    /// Intel's MSR_PLATFORM_INFO; KVM offers it on every vendor for its
    /// "CPUID faulting supported" bit (31). SDM Vol. 4 Table 2-12.
    pub(crate) const PLATFORM_INFO: u32 = 0xce;
    /// MSR_MISC_FEATURES_ENABLES: bit 0 turns CPUID faulting on. SDM
    /// Vol. 4 Table 2-12.
    pub(crate) const MISC_FEATURES_ENABLES: u32 = 0x140;
    /// IA32_POWER_CTL: power-management controls, kept and not acted on,
    /// as KVM keeps them.
    pub(crate) const POWER_CTL: u32 = 0x1fc;
    pub(crate) const MISC_ENABLE: u32 = 0x1a0;
    /// MTRRphysBase0 (even) and MTRRphysMask0 (odd) to ...7.
    pub(crate) const MTRR_PHYS_FIRST: u32 = 0x200;
    pub(crate) const MTRR_PHYS_LAST: u32 = 0x20f;
    pub(crate) const MTRR_FIX_64K: u32 = 0x250;
    pub(crate) const MTRR_FIX_16K_80000: u32 = 0x258;
    pub(crate) const MTRR_FIX_16K_A0000: u32 = 0x259;
    pub(crate) const MTRR_FIX_4K_FIRST: u32 = 0x268;
    pub(crate) const MTRR_FIX_4K_LAST: u32 = 0x26f;
    pub(crate) const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub(crate) const PAT: u32 = 0x277;
    pub(crate) const EFER: u32 = 0xc000_0080;
    pub(crate) const STAR: u32 = 0xc000_0081;
    pub(crate) const LSTAR: u32 = 0xc000_0082;
    pub(crate) const CSTAR: u32 = 0xc000_0083;
    pub(crate) const SFMASK: u32 = 0xc000_0084;
    /// FS.base and GS.base: segment state, not in `MsrFile`.
    pub(crate) const FS_BASE: u32 = 0xc000_0100;
    pub(crate) const GS_BASE: u32 = 0xc000_0101;
    pub(crate) const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// KVM's first paravirtual clock MSRs ("kvmclock", before the
    /// 0x4b564dxx numbers): the guest-physical address of the wall-clock
    /// structure, and of the per-vCPU time structure plus an enable bit.
    /// `Documentation/virt/kvm/x86/msr.rst`.
    pub(crate) const KVM_WALL_CLOCK: u32 = 0x11;
    pub(crate) const KVM_SYSTEM_TIME: u32 = 0x12;
    /// The same two at KVM's own numbers (KVM_FEATURE_CLOCKSOURCE2).
    pub(crate) const KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
    pub(crate) const KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
    /// Where the vCPU's steal-time structure is (KVM_FEATURE_STEAL_TIME).
    pub(crate) const KVM_STEAL_TIME: u32 = 0x4b56_4d03;
    /// AMD's hardware configuration register. APM Vol. 2 Appendix A.
    pub(crate) const HWCR: u32 = 0xc001_0015;
    // Host-only MSRs of SVM. APM Vol. 2 15.30.
    pub(crate) const VM_CR: u32 = 0xc001_0114;
    pub(crate) const VM_HSAVE_PA: u32 = 0xc001_0117;
}

use crate::hyperv::msr as hv;

/// Every MSR a `KVM_GET_MSRS`/`KVM_SET_MSRS` may name, in the order
/// `KVM_GET_MSR_INDEX_LIST` reports them.
pub(crate) const SUPPORTED: &[u32] = &[
    index::TSC,
    index::TSC_ADJUST,
    index::APIC_BASE,
    index::SYSENTER_CS,
    index::SYSENTER_ESP,
    index::SYSENTER_EIP,
    index::MISC_ENABLE,
    index::PAT,
    index::EFER,
    index::STAR,
    index::LSTAR,
    index::CSTAR,
    index::SFMASK,
    index::KERNEL_GS_BASE,
    index::HWCR,
    index::PLATFORM_INFO,
    index::MISC_FEATURES_ENABLES,
    index::POWER_CTL,
    index::SMBASE,
    index::KVM_WALL_CLOCK,
    index::KVM_SYSTEM_TIME,
    index::KVM_WALL_CLOCK_NEW,
    index::KVM_SYSTEM_TIME_NEW,
    index::KVM_STEAL_TIME,
    // Hyper-V's (hyperv/; run/hyperv.rs handles them), the OS identity
    // before the hypercall page, which needs it.
    hv::GUEST_OS_ID,
    hv::HYPERCALL,
    hv::VP_INDEX,
    hv::TIME_REF_COUNT,
    hv::REFERENCE_TSC,
    hv::TSC_FREQUENCY,
    hv::APIC_FREQUENCY,
    hv::REENLIGHTENMENT_CONTROL,
    hv::TSC_EMULATION_CONTROL,
    hv::TSC_EMULATION_STATUS,
];

/// The kvmclock enable bit of `MSR_KVM_SYSTEM_TIME(_NEW)`: the rest of the
/// value is the guest-physical address of the vCPU's time structure. The
/// same bit enables steal time.
pub(crate) const KVM_SYSTEM_TIME_ENABLE: u64 = 1;
/// `MSR_KVM_STEAL_TIME`'s reserved bits: 5:1 (the structure is 64-byte
/// aligned; bit 0 enables). KVM's `KVM_STEAL_RESERVED_MASK`.
pub(crate) const KVM_STEAL_RESERVED: u64 = 0x3e;

/// The MSRs that describe features rather than hold state, which
/// `KVM_GET_MSR_FEATURE_INDEX_LIST` reports and the device fd's
/// `KVM_GET_MSRS` reads ([`feature_value`]): KVM's
/// `msr_based_features`, of those rkvm has.
pub(crate) const FEATURES: &[u32] = &[index::PLATFORM_INFO];

/// What rkvm can offer in feature MSR `msr` (a vCPU starts with it, as
/// KVM's "stuff feature MSRs" quirk has it), or `None` if it is not one.
pub(crate) fn feature_value(msr: u32) -> Option<u64> {
    match msr {
        index::PLATFORM_INFO => Some(PLATFORM_INFO_CPUID_FAULT),
        _ => None,
    }
}

/// Whether the VMM may no longer change `msr` once the vCPU has run (it
/// may still write the value it has), as KVM's
/// `kvm_is_immutable_feature_msr`: the feature MSRs define the vCPU model.
pub(crate) fn immutable_after_run(msr: u32) -> bool {
    FEATURES.contains(&msr)
}

/// The PAT value at reset: WB, WT, UC-, UC repeated. SDM Vol. 3A 13.12.4.
pub(crate) const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// IA32_MISC_ENABLE at reset as KVM has it: only "BTS unavailable" (bit 11)
/// and "PEBS unavailable" (bit 12) set. SDM Vol. 4 Table 2-2.
pub(crate) const MISC_ENABLE_RESET: u64 = (1 << 11) | (1 << 12);
/// IA32_MISC_ENABLE's read-only bits for the guest, as KVM has them: BTS
/// and PEBS unavailable (11, 12); a guest write changing them is #GP.
const MISC_ENABLE_GUEST_RO: u64 = (1 << 11) | (1 << 12);
/// IA32_MISC_ENABLE's "performance monitoring available" (7): a guest
/// write leaves it as it is.
const MISC_ENABLE_EMON: u64 = 1 << 7;

/// HWCR bits a write may set, as KVM allows them: McStatusWrEn (18, MCi_STATUS
/// writable) and TscFreqSel (24, which Linux guests expect on some models).
/// APM Vol. 2 Appendix A.
const HWCR_VALID: u64 = (1 << 18) | (1 << 24);
/// HWCR bits a write may set but that read back as 0, as KVM: TLB cache
/// disable (3), flush filter disable (6), IGNNE emulation (8).
const HWCR_IGNORED: u64 = (1 << 3) | (1 << 6) | (1 << 8);

/// MSR_PLATFORM_INFO bit 31: CPUID faulting is supported, the value a
/// vCPU starts with (as KVM's `kvm_arch_vcpu_create`).
pub(crate) const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
/// MSR_MISC_FEATURES_ENABLES bit 0: CPUID at CPL > 0 raises #GP(0).
pub(crate) const MISC_FEATURES_CPUID_FAULT: u64 = 1 << 0;

/// MTRRcap as rkvm (and KVM) reports it: 8 variable ranges (VCNT), fixed
/// ranges (bit 8), write combining (bit 10), no SMRR. SDM Vol. 3A 13.11.1.
pub(crate) const MTRRCAP: u64 = 0x500 | VARIABLE_MTRRS as u64;
/// Variable-range MTRR pairs.
const VARIABLE_MTRRS: usize = 8;

/// The memory-type range registers. SDM Vol. 3A 13.11.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mtrrs {
    /// MTRRphysBase0, MTRRphysMask0, ... MTRRphysMask7.
    pub(crate) variable: [u64; 2 * VARIABLE_MTRRS],
    /// fix64K_00000, fix16K_80000, fix16K_A0000, fix4K_C0000 ... fix4K_F8000.
    pub(crate) fixed: [u64; 11],
    pub(crate) def_type: u64,
}

/// Whether `t` is a memory type an MTRR may hold: UC, WC, WT, WP, WB.
/// SDM Vol. 3A 13.11.2.
fn mtrr_type_valid(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

impl Mtrrs {
    /// The register `msr`, if it is an MTRR rkvm keeps.
    fn slot(&mut self, msr: u32) -> Option<&mut u64> {
        match msr {
            index::MTRR_PHYS_FIRST..=index::MTRR_PHYS_LAST => self
                .variable
                .get_mut((msr - index::MTRR_PHYS_FIRST) as usize),
            index::MTRR_FIX_64K => self.fixed.get_mut(0),
            index::MTRR_FIX_16K_80000 | index::MTRR_FIX_16K_A0000 => self
                .fixed
                .get_mut((1 + msr - index::MTRR_FIX_16K_80000) as usize),
            index::MTRR_FIX_4K_FIRST..=index::MTRR_FIX_4K_LAST => self
                .fixed
                .get_mut((3 + msr - index::MTRR_FIX_4K_FIRST) as usize),
            index::MTRR_DEF_TYPE => Some(&mut self.def_type),
            _ => None,
        }
    }

    /// Whether `value` is valid for `msr`: known memory types, no reserved
    /// bits (above the guest's physical-address width for the variable
    /// ranges). SDM Vol. 3A 13.11.2.1, 13.11.2.2, 13.11.2.3.
    fn valid(msr: u32, value: u64, phys_bits: u8) -> bool {
        match msr {
            index::MTRR_DEF_TYPE => value & !0xcff == 0 && mtrr_type_valid(value & 0xff),
            index::MTRR_PHYS_FIRST..=index::MTRR_PHYS_LAST => {
                let above = if phys_bits >= 64 {
                    0
                } else {
                    !0u64 << phys_bits
                };
                if msr % 2 == 0 {
                    value & (above | 0xf00) == 0 && mtrr_type_valid(value & 0xff)
                } else {
                    value & (above | 0x7ff) == 0
                }
            }
            _ => value
                .to_le_bytes()
                .iter()
                .all(|&t| mtrr_type_valid(u64::from(t))),
        }
    }
}

/// The guest's MSR values that are not part of `kvm_sregs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MsrFile {
    pub(crate) sysenter_cs: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    pub(crate) misc_enable: u64,
    pub(crate) pat: u64,
    pub(crate) star: u64,
    pub(crate) lstar: u64,
    pub(crate) cstar: u64,
    pub(crate) sfmask: u64,
    pub(crate) kernel_gs_base: u64,
    /// HWCR: only the bits of [`HWCR_VALID`].
    pub(crate) hwcr: u64,
    /// Guest TSC = host TSC + `tsc_offset` (wrapping).
    pub(crate) tsc_offset: u64,
    /// IA32_TSC_ADJUST: how far the guest's own writes moved its TSC.
    /// SDM Vol. 3B 18.17.3.
    pub(crate) tsc_adjust: u64,
    /// MSR_PLATFORM_INFO: what the host last set (the guest only reads it).
    pub(crate) platform_info: u64,
    /// MSR_MISC_FEATURES_ENABLES: [`MISC_FEATURES_CPUID_FAULT`] or 0.
    pub(crate) misc_features_enables: u64,
    /// IA32_POWER_CTL: any value, as KVM.
    pub(crate) power_ctl: u64,
    /// `MSR_KVM_SYSTEM_TIME(_NEW)`: the vCPU's kvmclock structure's
    /// address and [`KVM_SYSTEM_TIME_ENABLE`] (run/kvmclock.rs).
    pub(crate) kvm_system_time: u64,
    /// `MSR_KVM_WALL_CLOCK(_NEW)`: where the wall clock was last written.
    pub(crate) kvm_wall_clock: u64,
    /// `MSR_KVM_STEAL_TIME`: the steal-time structure's address and the
    /// enable bit (run/steal_time.rs).
    pub(crate) kvm_steal_time: u64,
    /// IA32_SMBASE (0x30000 after RESET; an INIT keeps it).
    pub(crate) smbase: u64,
    pub(crate) mtrrs: Mtrrs,
}

impl MsrFile {
    /// The values after RESET.
    pub(crate) fn reset() -> Self {
        Self {
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            misc_enable: MISC_ENABLE_RESET,
            pat: PAT_RESET,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            hwcr: 0,
            tsc_offset: 0,
            tsc_adjust: 0,
            platform_info: PLATFORM_INFO_CPUID_FAULT,
            misc_features_enables: 0,
            power_ctl: 0,
            kvm_system_time: 0,
            kvm_wall_clock: 0,
            kvm_steal_time: 0,
            smbase: crate::x86::smm::SMBASE_RESET,
            mtrrs: Mtrrs::default(),
        }
    }

    /// Whether CPUID faults at CPL > 0 (KVM's `cpuid_fault_enabled`).
    pub(crate) fn cpuid_faults(&self) -> bool {
        self.misc_features_enables & MISC_FEATURES_CPUID_FAULT != 0
    }
}

/// A canonical 48-bit linear address: bits 63:47 all equal. SDM Vol. 1 3.3.7.1.
pub(crate) fn is_canonical(addr: u64) -> bool {
    let top = (addr as i64) >> 47;
    top == 0 || top == -1
}

/// `addr` made canonical: bit 47 copied into bits 63:48.
pub(crate) fn canonicalize(addr: u64) -> u64 {
    (((addr << 16) as i64) >> 16) as u64
}

/// Each byte of the PAT must name a valid memory type (0, 1, 4, 5, 6, 7).
/// SDM Vol. 3A 13.12.2.
pub(crate) fn pat_valid(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Everything an MSR access may need besides the MSR file itself.
pub(crate) struct MsrContext<'a> {
    pub(crate) host: &'a HostLimits,
    pub(crate) guest: &'a GuestFeatures,
    /// The host's TSC now.
    pub(crate) host_tsc: u64,
    /// `KVM_SET_MSRS` (true) or the guest's WRMSR (false): they differ for
    /// the TSC and TSC_ADJUST, as in KVM.
    pub(crate) host_initiated: bool,
    /// The offset the VM's vCPUs share (see `set`'s TSC arm); for a host
    /// write of 0 to the TSC.
    pub(crate) vm_tsc_offset: u64,
    /// Whether the guest may read MSR_PLATFORM_INFO: the VM's
    /// `KVM_ENABLE_CAP(KVM_CAP_MSR_PLATFORM_INFO)`, true until turned off.
    pub(crate) platform_info_readable: bool,
    /// The vCPU's `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`: the guest's use of a
    /// paravirtual MSR its CPUID does not offer faults.
    pub(crate) pv_cpuid_enforced: bool,
}

impl MsrContext<'_> {
    /// Whether the guest is refused paravirtual MSR `msr` (kvmclock's,
    /// steal time's): the VMM enforces the guest's CPUID and it lacks the
    /// feature that names the MSR (KVM_FEATURE_CLOCKSOURCE for 0x11 and
    /// 0x12, ..._CLOCKSOURCE2 for KVM's own numbers, ..._STEAL_TIME), as
    /// KVM's `guest_pv_has`.
    fn pv_msr_refused(&self, msr: u32) -> bool {
        let offered = match msr {
            index::KVM_WALL_CLOCK | index::KVM_SYSTEM_TIME => self.guest.kvm_clocksource,
            index::KVM_STEAL_TIME => self.guest.kvm_steal_time,
            _ => self.guest.kvm_clocksource2,
        };
        !self.host_initiated && self.pv_cpuid_enforced && !offered
    }
}

/// The registers MSR accesses share with `kvm_sregs`.
pub(crate) struct SharedRegs<'a> {
    pub(crate) efer: &'a mut u64,
    pub(crate) apic_base: &'a mut u64,
}

/// Whether rkvm virtualises MSR `msr` at all, so that a refused access
/// is a refused value or access (KVM's `KVM_MSR_EXIT_REASON_INVAL`) and not
/// an MSR it does not know (`KVM_MSR_EXIT_REASON_UNKNOWN`): those
/// `KVM_GET_MSR_INDEX_LIST` lists, FS.base and GS.base, MTRRcap and the
/// MTRRs. (The x2APIC MSRs are the in-kernel APIC's: run/apic.rs.)
pub(crate) fn exists(msr: u32) -> bool {
    SUPPORTED.contains(&msr)
        || matches!(msr, index::FS_BASE | index::GS_BASE | index::MTRRCAP)
        || Mtrrs::default().slot(msr).is_some()
}

/// Reads an MSR; `None` if rkvm does not virtualise it.
pub(crate) fn get(
    file: &MsrFile,
    shared: &SharedRegs<'_>,
    ctx: &MsrContext<'_>,
    msr: u32,
) -> Option<u64> {
    Some(match msr {
        index::TSC => ctx.host_tsc.wrapping_add(file.tsc_offset),
        index::TSC_ADJUST => file.tsc_adjust,
        index::APIC_BASE => *shared.apic_base,
        index::SYSENTER_CS => file.sysenter_cs,
        index::SYSENTER_ESP => file.sysenter_esp,
        index::SYSENTER_EIP => file.sysenter_eip,
        index::MISC_ENABLE => file.misc_enable,
        index::PAT => file.pat,
        index::EFER => *shared.efer,
        index::STAR => file.star,
        index::LSTAR => file.lstar,
        index::CSTAR => file.cstar,
        index::SFMASK => file.sfmask,
        index::KERNEL_GS_BASE => file.kernel_gs_base,
        index::MTRRCAP => MTRRCAP,
        index::HWCR => file.hwcr,
        // The host always reads it; the guest unless the VMM turned that
        // off (a read that faults, as KVM).
        index::PLATFORM_INFO if ctx.host_initiated || ctx.platform_info_readable => {
            file.platform_info
        }
        index::PLATFORM_INFO => return None,
        index::MISC_FEATURES_ENABLES => file.misc_features_enables,
        index::POWER_CTL => file.power_ctl,
        // The guest's RDMSR faults, as KVM's.
        index::SMBASE if ctx.host_initiated => file.smbase,
        index::SMBASE => return None,
        // kvmclock: what was written (`set`).
        m @ (index::KVM_WALL_CLOCK
        | index::KVM_SYSTEM_TIME
        | index::KVM_WALL_CLOCK_NEW
        | index::KVM_SYSTEM_TIME_NEW)
            if ctx.pv_msr_refused(m) =>
        {
            return None
        }
        index::KVM_WALL_CLOCK | index::KVM_WALL_CLOCK_NEW => file.kvm_wall_clock,
        index::KVM_SYSTEM_TIME | index::KVM_SYSTEM_TIME_NEW => file.kvm_system_time,
        index::KVM_STEAL_TIME if ctx.pv_msr_refused(msr) => return None,
        index::KVM_STEAL_TIME => file.kvm_steal_time,
        other => {
            let mut mtrrs = file.mtrrs;
            return mtrrs.slot(other).map(|v| *v);
        }
    })
}

/// Writes an MSR, from the host (`KVM_SET_MSRS`) or the guest as
/// `ctx.host_initiated` says; `false` if rkvm does not virtualise it or the
/// value is invalid for it (as KVM refuses). Values
/// are kept at full width; KVM on SVM keeps only the low half of
/// SYSENTER_ESP/EIP for a guest whose CPUID vendor is AMD (docs/abi.md).
pub(crate) fn set(
    file: &mut MsrFile,
    shared: &mut SharedRegs<'_>,
    ctx: &MsrContext<'_>,
    msr: u32,
    value: u64,
) -> bool {
    match msr {
        // The host sets the TSC without touching TSC_ADJUST; a write of 0
        // puts the vCPU on the offset its VM's vCPUs share (KVM's
        // `kvm_synchronize_tsc`: VMMs write 0 to every vCPU at reset, and
        // their TSCs must stay in step). The guest's write moves TSC_ADJUST
        // by as much as its TSC. SDM Vol. 3B 18.17.3.
        index::TSC if ctx.host_initiated => {
            file.tsc_offset = if value == 0 {
                ctx.vm_tsc_offset
            } else {
                value.wrapping_sub(ctx.host_tsc)
            };
        }
        index::TSC => {
            let step = value.wrapping_sub(ctx.host_tsc.wrapping_add(file.tsc_offset));
            file.tsc_offset = file.tsc_offset.wrapping_add(step);
            file.tsc_adjust = file.tsc_adjust.wrapping_add(step);
        }
        // Without the feature in the guest's CPUID a write is taken and
        // dropped, as KVM. The guest's write moves its TSC too; the host's
        // (a restore) only sets the register.
        index::TSC_ADJUST if ctx.guest.tsc_adjust => {
            if !ctx.host_initiated {
                let step = value.wrapping_sub(file.tsc_adjust);
                file.tsc_offset = file.tsc_offset.wrapping_add(step);
            }
            file.tsc_adjust = value;
        }
        index::TSC_ADJUST => {}
        index::APIC_BASE => {
            if !regs::check_apic_base(ctx.guest, value) {
                return false;
            }
            *shared.apic_base = value;
        }
        index::EFER => {
            // Host-initiated: only bits rkvm does not support at all are refused; LMA is
            // kept as the guest's current mode has it (KVM's `set_efer`).
            if value & !ctx.host.supported_efer() != 0 {
                return false;
            }
            let lma = *shared.efer & regs::efer::LMA;
            *shared.efer = (value & !regs::efer::LMA) | lma;
        }
        index::PAT if pat_valid(value) => file.pat = value,
        index::SYSENTER_CS => file.sysenter_cs = value,
        index::POWER_CTL => file.power_ctl = value,
        // Any value from the VMM; the guest's WRMSR faults, as KVM's.
        index::SMBASE if ctx.host_initiated => file.smbase = value,
        // Not refused when non-canonical (AMD ignores the upper half), but made canonical so
        // that something deterministic happens, as KVM does.
        index::SYSENTER_ESP => file.sysenter_esp = canonicalize(value),
        index::SYSENTER_EIP => file.sysenter_eip = canonicalize(value),
        // The VMM sets every bit; the guest neither BTS/PEBS unavailable
        // (#GP if it tries) nor EMON (kept), as KVM's `kvm_set_msr_common`.
        index::MISC_ENABLE if ctx.host_initiated => file.misc_enable = value,
        index::MISC_ENABLE => {
            if (file.misc_enable ^ value) & MISC_ENABLE_GUEST_RO != 0 {
                return false;
            }
            file.misc_enable = (value & !MISC_ENABLE_EMON) | (file.misc_enable & MISC_ENABLE_EMON);
        }
        index::STAR => file.star = value,
        index::LSTAR if is_canonical(value) => file.lstar = value,
        index::CSTAR if is_canonical(value) => file.cstar = value,
        index::SFMASK => file.sfmask = value,
        index::KERNEL_GS_BASE if is_canonical(value) => file.kernel_gs_base = value,
        // Guest and host writes alike, as KVM (`kvm_set_msr_common`).
        index::HWCR if value & !(HWCR_VALID | HWCR_IGNORED) == 0 => {
            file.hwcr = value & HWCR_VALID;
        }
        // Only the host sets MSR_PLATFORM_INFO, to any value, as KVM; the
        // guest's write faults.
        index::PLATFORM_INFO if ctx.host_initiated => file.platform_info = value,
        // CPUID faulting, and only where PLATFORM_INFO offers it.
        index::MISC_FEATURES_ENABLES
            if value & !MISC_FEATURES_CPUID_FAULT == 0
                && (value == 0 || file.platform_info & PLATFORM_INFO_CPUID_FAULT != 0) =>
        {
            file.misc_features_enables = value;
        }
        // kvmclock (run/kvmclock.rs keeps the guest's structures): any value,
        // as KVM. The old and new numbers share the state, as in KVM.
        m @ (index::KVM_WALL_CLOCK
        | index::KVM_SYSTEM_TIME
        | index::KVM_WALL_CLOCK_NEW
        | index::KVM_SYSTEM_TIME_NEW)
            if ctx.pv_msr_refused(m) =>
        {
            return false
        }
        index::KVM_WALL_CLOCK | index::KVM_WALL_CLOCK_NEW => file.kvm_wall_clock = value,
        index::KVM_SYSTEM_TIME | index::KVM_SYSTEM_TIME_NEW => file.kvm_system_time = value,
        // Steal time: the reserved bits must be clear, as KVM.
        index::KVM_STEAL_TIME if ctx.pv_msr_refused(msr) || value & KVM_STEAL_RESERVED != 0 => {
            return false
        }
        index::KVM_STEAL_TIME => file.kvm_steal_time = value,
        other if Mtrrs::valid(other, value, ctx.guest.phys_bits) => match file.mtrrs.slot(other) {
            Some(slot) => *slot = value,
            None => return false,
        },
        // Not virtualised, or (for the guarded arms above) an invalid value.
        _ => return false,
    }
    true
}
