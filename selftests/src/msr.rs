//! Architectural MSR indices the selftests use. SDM Vol. 4 2.1 and
//! Table 2-2; APM Vol. 2 Appendix A.

/// `TSC`.
pub const MSR_TSC: u32 = 0x10;
/// KVM's first paravirtual clock MSRs (`Documentation/virt/kvm/x86/msr.rst`).
pub const MSR_KVM_WALL_CLOCK: u32 = 0x11;
/// See [`MSR_KVM_WALL_CLOCK`].
pub const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
/// The same two at KVM's own numbers (KVM_FEATURE_CLOCKSOURCE2).
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// See [`MSR_KVM_WALL_CLOCK_NEW`].
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// KVM's steal-time structure's address (KVM_FEATURE_STEAL_TIME).
pub const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
/// `TSC_ADJUST`.
pub const MSR_TSC_ADJUST: u32 = 0x3b;
/// `APIC_BASE`.
pub const MSR_APIC_BASE: u32 = 0x1b;
/// `MTRRCAP`.
pub const MSR_MTRRCAP: u32 = 0xfe;
/// `SYSENTER_CS`.
pub const MSR_SYSENTER_CS: u32 = 0x174;
/// `SYSENTER_ESP`.
pub const MSR_SYSENTER_ESP: u32 = 0x175;
/// `SYSENTER_EIP`.
pub const MSR_SYSENTER_EIP: u32 = 0x176;
/// `MISC_ENABLE`.
pub const MSR_MISC_ENABLE: u32 = 0x1a0;
/// `PAT`.
pub const MSR_PAT: u32 = 0x277;
/// `EFER`.
pub const MSR_EFER: u32 = 0xc000_0080;
/// `STAR`.
pub const MSR_STAR: u32 = 0xc000_0081;
/// `LSTAR`.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// `CSTAR`.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// `SFMASK`.
pub const MSR_SFMASK: u32 = 0xc000_0084;
/// AMD's `HWCR`.
pub const MSR_HWCR: u32 = 0xc001_0015;
/// `KERNEL_GS_BASE`.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
