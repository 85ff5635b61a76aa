// SPDX-License-Identifier: GPL-2.0

//! KVM's userspace ABI, exactly.
//!
//! The structs and constants are generated at build time by bindgen from the
//! kernel's own `include/uapi/linux/kvm.h` (see `scripts/gen-uapi.sh`), so
//! their layout is KVM's by construction; the generated file also asserts
//! every size and offset at compile time. The ioctl numbers are function-like
//! macros in C, which bindgen cannot evaluate: they are computed here with
//! the kernel's `_IO*` helpers from the same generated struct types.

#[allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::restriction
)]
pub(crate) mod uapi {
    include!(env!("RKVM_UAPI_RS"));
}

pub(crate) use uapi::*;

use kernel::ioctl::{_IO, _IOR, _IOW, _IOWR};
use kernel::transmute::{AsBytes, FromBytes};

/// The ioctl type byte of every KVM ioctl (`KVMIO` in `linux/kvm.h`).
const KVMIO: u32 = 0xAE;

// System ioctls (on the device fd).
pub(crate) const KVM_GET_API_VERSION: u32 = _IO(KVMIO, 0x00);
pub(crate) const KVM_CREATE_VM: u32 = _IO(KVMIO, 0x01);
pub(crate) const KVM_GET_MSR_INDEX_LIST: u32 = _IOWR::<kvm_msr_list>(KVMIO, 0x02);
pub(crate) const KVM_CHECK_EXTENSION: u32 = _IO(KVMIO, 0x03);
pub(crate) const KVM_GET_VCPU_MMAP_SIZE: u32 = _IO(KVMIO, 0x04);
pub(crate) const KVM_GET_SUPPORTED_CPUID: u32 = _IOWR::<kvm_cpuid2>(KVMIO, 0x05);
pub(crate) const KVM_GET_MSR_FEATURE_INDEX_LIST: u32 = _IOWR::<kvm_msr_list>(KVMIO, 0x0a);
// Also a vCPU ioctl.
pub(crate) const KVM_GET_SUPPORTED_HV_CPUID: u32 = _IOWR::<kvm_cpuid2>(KVMIO, 0xc1);

// VM ioctls.
pub(crate) const KVM_CREATE_VCPU: u32 = _IO(KVMIO, 0x41);
pub(crate) const KVM_SET_NR_MMU_PAGES: u32 = _IO(KVMIO, 0x44);
pub(crate) const KVM_SET_USER_MEMORY_REGION: u32 = _IOW::<kvm_userspace_memory_region>(KVMIO, 0x46);
pub(crate) const KVM_SET_TSS_ADDR: u32 = _IO(KVMIO, 0x47);
pub(crate) const KVM_SET_IDENTITY_MAP_ADDR: u32 = _IOW::<u64>(KVMIO, 0x48);
pub(crate) const KVM_SET_USER_MEMORY_REGION2: u32 =
    _IOW::<kvm_userspace_memory_region2>(KVMIO, 0x49);
pub(crate) const KVM_CREATE_IRQCHIP: u32 = _IO(KVMIO, 0x60);
pub(crate) const KVM_CREATE_GUEST_MEMFD: u32 = _IOWR::<kvm_create_guest_memfd>(KVMIO, 0xd4);
pub(crate) const KVM_IRQ_LINE: u32 = _IOW::<kvm_irq_level>(KVMIO, 0x61);
pub(crate) const KVM_IRQ_LINE_STATUS: u32 = _IOWR::<kvm_irq_level>(KVMIO, 0x67);
pub(crate) const KVM_GET_IRQCHIP: u32 = _IOWR::<kvm_irqchip>(KVMIO, 0x62);
// KVM's header declares KVM_SET_IRQCHIP with _IOR although it reads the struct.
pub(crate) const KVM_SET_IRQCHIP: u32 = _IOR::<kvm_irqchip>(KVMIO, 0x63);
pub(crate) const KVM_SET_GSI_ROUTING: u32 = _IOW::<kvm_irq_routing>(KVMIO, 0x6a);
pub(crate) const KVM_ENABLE_CAP: u32 = _IOW::<kvm_enable_cap>(KVMIO, 0xa3);
/// On VM and vCPU fds: a binary statistics fd.
pub(crate) const KVM_GET_STATS_FD: u32 = _IO(KVMIO, 0xce);
pub(crate) const KVM_SIGNAL_MSI: u32 = _IOW::<kvm_msi>(KVMIO, 0xa5);
pub(crate) const KVM_IRQFD: u32 = _IOW::<kvm_irqfd>(KVMIO, 0x76);
pub(crate) const KVM_CREATE_PIT: u32 = _IO(KVMIO, 0x64);
pub(crate) const KVM_GET_PIT: u32 = _IOWR::<kvm_pit_state>(KVMIO, 0x65);
// KVM's header declares KVM_SET_PIT with _IOR although it reads the struct.
pub(crate) const KVM_SET_PIT: u32 = _IOR::<kvm_pit_state>(KVMIO, 0x66);
// An _IO number that takes a pointer to `struct kvm_reinject_control`.
pub(crate) const KVM_REINJECT_CONTROL: u32 = _IO(KVMIO, 0x71);
pub(crate) const KVM_SET_BOOT_CPU_ID: u32 = _IO(KVMIO, 0x78);
pub(crate) const KVM_CREATE_PIT2: u32 = _IOW::<kvm_pit_config>(KVMIO, 0x77);
pub(crate) const KVM_GET_PIT2: u32 = _IOR::<kvm_pit_state2>(KVMIO, 0x9f);
pub(crate) const KVM_SET_PIT2: u32 = _IOW::<kvm_pit_state2>(KVMIO, 0xa0);
pub(crate) const KVM_IOEVENTFD: u32 = _IOW::<kvm_ioeventfd>(KVMIO, 0x79);
pub(crate) const KVM_SET_CLOCK: u32 = _IOW::<kvm_clock_data>(KVMIO, 0x7b);
pub(crate) const KVM_X86_SET_MSR_FILTER: u32 = _IOW::<kvm_msr_filter>(KVMIO, 0xc6);
pub(crate) const KVM_GET_CLOCK: u32 = _IOR::<kvm_clock_data>(KVMIO, 0x7c);
pub(crate) const KVM_GET_DIRTY_LOG: u32 = _IOW::<kvm_dirty_log>(KVMIO, 0x42);
pub(crate) const KVM_CLEAR_DIRTY_LOG: u32 = _IOWR::<kvm_clear_dirty_log>(KVMIO, 0xc0);
pub(crate) const KVM_REGISTER_COALESCED_MMIO: u32 = _IOW::<kvm_coalesced_mmio_zone>(KVMIO, 0x67);
pub(crate) const KVM_UNREGISTER_COALESCED_MMIO: u32 = _IOW::<kvm_coalesced_mmio_zone>(KVMIO, 0x68);

// vCPU ioctls.
pub(crate) const KVM_RUN: u32 = _IO(KVMIO, 0x80);
pub(crate) const KVM_INTERRUPT: u32 = _IOW::<kvm_interrupt>(KVMIO, 0x86);
pub(crate) const KVM_GET_REGS: u32 = _IOR::<kvm_regs>(KVMIO, 0x81);
pub(crate) const KVM_SET_REGS: u32 = _IOW::<kvm_regs>(KVMIO, 0x82);
pub(crate) const KVM_GET_SREGS: u32 = _IOR::<kvm_sregs>(KVMIO, 0x83);
pub(crate) const KVM_SET_SREGS: u32 = _IOW::<kvm_sregs>(KVMIO, 0x84);
pub(crate) const KVM_GET_MSRS: u32 = _IOWR::<kvm_msrs>(KVMIO, 0x88);
pub(crate) const KVM_SET_MSRS: u32 = _IOW::<kvm_msrs>(KVMIO, 0x89);
pub(crate) const KVM_SET_CPUID2: u32 = _IOW::<kvm_cpuid2>(KVMIO, 0x90);
pub(crate) const KVM_GET_CPUID2: u32 = _IOWR::<kvm_cpuid2>(KVMIO, 0x91);
pub(crate) const KVM_GET_FPU: u32 = _IOR::<kvm_fpu>(KVMIO, 0x8c);
pub(crate) const KVM_SET_FPU: u32 = _IOW::<kvm_fpu>(KVMIO, 0x8d);
pub(crate) const KVM_GET_MP_STATE: u32 = _IOR::<kvm_mp_state>(KVMIO, 0x98);
pub(crate) const KVM_SET_MP_STATE: u32 = _IOW::<kvm_mp_state>(KVMIO, 0x99);
pub(crate) const KVM_SET_GUEST_DEBUG: u32 = _IOW::<kvm_guest_debug>(KVMIO, 0x9b);
pub(crate) const KVM_SET_TSC_KHZ: u32 = _IO(KVMIO, 0xa2);
pub(crate) const KVM_GET_TSC_KHZ: u32 = _IO(KVMIO, 0xa3);
pub(crate) const KVM_GET_LAPIC: u32 = _IOR::<kvm_lapic_state>(KVMIO, 0x8e);
pub(crate) const KVM_SET_LAPIC: u32 = _IOW::<kvm_lapic_state>(KVMIO, 0x8f);
pub(crate) const KVM_NMI: u32 = _IO(KVMIO, 0x9a);
pub(crate) const KVM_SMI: u32 = _IO(KVMIO, 0xb7);
pub(crate) const KVM_GET_VCPU_EVENTS: u32 = _IOR::<kvm_vcpu_events>(KVMIO, 0x9f);
pub(crate) const KVM_SET_VCPU_EVENTS: u32 = _IOW::<kvm_vcpu_events>(KVMIO, 0xa0);
pub(crate) const KVM_SET_VAPIC_ADDR: u32 = _IOW::<kvm_vapic_addr>(KVMIO, 0x93);
pub(crate) const KVM_GET_DEBUGREGS: u32 = _IOR::<kvm_debugregs>(KVMIO, 0xa1);
pub(crate) const KVM_SET_DEBUGREGS: u32 = _IOW::<kvm_debugregs>(KVMIO, 0xa2);
pub(crate) const KVM_GET_XSAVE: u32 = _IOR::<kvm_xsave>(KVMIO, 0xa4);
pub(crate) const KVM_SET_XSAVE: u32 = _IOW::<kvm_xsave>(KVMIO, 0xa5);
pub(crate) const KVM_GET_XCRS: u32 = _IOR::<kvm_xcrs>(KVMIO, 0xa6);
pub(crate) const KVM_SET_XCRS: u32 = _IOW::<kvm_xcrs>(KVMIO, 0xa7);
/// `KVM_GET_XSAVE` for areas larger than 4096 bytes (`KVM_CAP_XSAVE2`
/// gives the size); the number encodes the 4096-byte struct all the same.
pub(crate) const KVM_GET_XSAVE2: u32 = _IOR::<kvm_xsave>(KVMIO, 0xcf);
pub(crate) const KVM_PRE_FAULT_MEMORY: u32 = _IOWR::<kvm_pre_fault_memory>(KVMIO, 0xd5);
// Device attributes; on a vCPU fd, KVM_VCPU_TSC_CTRL's. (All three are _IOW
// in KVM's header: GET writes through the address inside the struct.)
pub(crate) const KVM_SET_DEVICE_ATTR: u32 = _IOW::<kvm_device_attr>(KVMIO, 0xe1);
pub(crate) const KVM_GET_DEVICE_ATTR: u32 = _IOW::<kvm_device_attr>(KVMIO, 0xe2);
pub(crate) const KVM_HAS_DEVICE_ATTR: u32 = _IOW::<kvm_device_attr>(KVMIO, 0xe3);

// Well-known values, as a cross-check of the computation above.
const _: () = assert!(KVM_CREATE_VM == 0xAE01);
const _: () = assert!(KVM_GET_REGS == 0x8090_AE81);
const _: () = assert!(KVM_SET_USER_MEMORY_REGION == 0x4020_AE46);
const _: () = assert!(KVM_GET_SUPPORTED_CPUID == 0xC008_AE05);
const _: () = assert!(KVM_GET_SUPPORTED_HV_CPUID == 0xC008_AEC1);
const _: () = assert!(KVM_CREATE_GUEST_MEMFD == 0xC040_AED4);
const _: () = assert!(KVM_GET_FPU == 0x81A0_AE8C);
const _: () = assert!(KVM_SET_GSI_ROUTING == 0x4008_AE6A);
const _: () = assert!(KVM_HAS_DEVICE_ATTR == 0x4018_AEE3);
const _: () = assert!(KVM_GET_VCPU_EVENTS == 0x8040_AE9F);
// No implicit padding: 8 + 4 * 5 + 1 + 26 + 1 bytes, then the u64 payload.
const _: () = assert!(core::mem::size_of::<kvm_vcpu_events>() == 56 + 8);
const _: () = assert!(KVM_ENABLE_CAP == 0x4068_AEA3);
const _: () = assert!(KVM_GET_MP_STATE == 0x8004_AE98);
const _: () = assert!(KVM_IRQ_LINE == 0x4008_AE61);
const _: () = assert!(KVM_SIGNAL_MSI == 0x4020_AEA5);
const _: () = assert!(KVM_GET_IRQCHIP == 0xC208_AE62);
const _: () = assert!(KVM_SET_IRQCHIP == 0x8208_AE63);
const _: () = assert!(KVM_GET_LAPIC == 0x8400_AE8E);
const _: () = assert!(KVM_IRQFD == 0x4020_AE76);
const _: () = assert!(KVM_CREATE_PIT2 == 0x4040_AE77);
const _: () = assert!(KVM_GET_PIT2 == 0x8070_AE9F);
const _: () = assert!(KVM_GET_PIT == 0xC048_AE65);
const _: () = assert!(KVM_IOEVENTFD == 0x4040_AE79);
const _: () = assert!(KVM_GET_XSAVE == 0x9000_AEA4);
const _: () = assert!(KVM_REGISTER_COALESCED_MMIO == 0x4010_AE67);
const _: () = assert!(KVM_PRE_FAULT_MEMORY == 0xC040_AED5);
const _: () = assert!(KVM_GET_CLOCK == 0x8030_AE7C);
const _: () = assert!(KVM_X86_SET_MSR_FILTER == 0x4188_AEC6);
// `struct kvm_msr_filter`: flags (and padding), then 16 ranges of 24 bytes.
const _: () = assert!(core::mem::size_of::<kvm_msr_filter>() == 8 + 24 * 16);
const _: () = assert!(KVM_GET_XSAVE2 == 0x9000_AECF);
const _: () = assert!(KVM_SET_GUEST_DEBUG == 0x4048_AE9B);
const _: () = assert!(KVM_SET_TSC_KHZ == 0xAEA2);
const _: () = assert!(KVM_GET_XCRS == 0x8188_AEA6);
const _: () = assert!(KVM_GET_DEBUGREGS == 0x8080_AEA1);
const _: () = assert!(KVM_GET_DIRTY_LOG == 0x4010_AE42);
const _: () = assert!(KVM_CLEAR_DIRTY_LOG == 0xC018_AEC0);

/// `struct kvm_dirty_log` as rkvm reads it: bindgen makes the bitmap
/// pointer a union with a `u64`, and reading a union field is unsafe, so
/// the same bytes are read as this plain struct, checked against bindgen's
/// layout below.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct DirtyLogArg {
    pub(crate) slot: u32,
    pub(crate) padding1: u32,
    /// The user address of the bitmap.
    pub(crate) dirty_bitmap: u64,
}

/// `struct kvm_clear_dirty_log`, read as [`DirtyLogArg`] is.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ClearDirtyLogArg {
    pub(crate) slot: u32,
    pub(crate) num_pages: u32,
    pub(crate) first_page: u64,
    /// The user address of the bitmap.
    pub(crate) dirty_bitmap: u64,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<DirtyLogArg>() == size_of::<kvm_dirty_log>());
    assert!(offset_of!(DirtyLogArg, slot) == offset_of!(kvm_dirty_log, slot));
    assert!(offset_of!(DirtyLogArg, dirty_bitmap) == offset_of!(kvm_dirty_log, __bindgen_anon_1));
    assert!(size_of::<ClearDirtyLogArg>() == size_of::<kvm_clear_dirty_log>());
    assert!(offset_of!(ClearDirtyLogArg, num_pages) == offset_of!(kvm_clear_dirty_log, num_pages));
    assert!(
        offset_of!(ClearDirtyLogArg, first_page) == offset_of!(kvm_clear_dirty_log, first_page)
    );
    assert!(
        offset_of!(ClearDirtyLogArg, dirty_bitmap)
            == offset_of!(kvm_clear_dirty_log, __bindgen_anon_1)
    );
};

/// Limits KVM x86 enforces on variable-length arguments, matched exactly.
/// `KVM_MAX_CPUID_ENTRIES` in `arch/x86/include/asm/kvm_host.h`.
pub(crate) const MAX_CPUID_ENTRIES: u32 = 256;
/// `KVM_MAX_IRQ_ROUTES` in `include/linux/kvm_host.h`: the most entries a
/// `KVM_SET_GSI_ROUTING` table may have, reported as `KVM_CAP_IRQ_ROUTING`.
pub(crate) const MAX_IRQ_ROUTES: isize = 4096;

/// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)`'s flags (`asm/kvm.h` defines them
/// with `_BITULL`, which bindgen does not expand).
pub(crate) const KVM_X2APIC_API_USE_32BIT_IDS: u64 = 1 << 0;
pub(crate) const KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK: u64 = 1 << 1;
/// `XCR_XFEATURE_ENABLED_MASK` (`asm/fpu/xcr.h`, not UAPI): XCR0's
/// index, the one XCR KVM has.
pub(crate) const XCR_XFEATURE_ENABLED_MASK: u32 = 0;
/// `MAX_IO_MSRS` in `arch/x86/kvm/msrs.c`: `nmsrs` must be below it.
pub(crate) const MAX_IO_MSRS: u32 = 256;

// The headers and entries of variable-length arguments, and the fixed-size
// structs, are read from and written to user memory as plain bytes. Each
// impl below is for a C struct of integer fields (and arrays of them) whose
// every bit pattern is valid and which has no implicit padding: bindgen's
// layout assertions pin the sizes, which equal the sums of the fields.
macro_rules! plain_old_data {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: A C struct of integers with explicit padding fields only (see above):
            // any bytes are a valid value.
            unsafe impl FromBytes for $t {}
            // SAFETY: As above: no implicit padding, so every byte is initialised.
            unsafe impl AsBytes for $t {}
        )*
    };
}

plain_old_data!(
    DirtyLogArg,
    ClearDirtyLogArg,
    kvm_interrupt,
    kvm_irqfd,
    kvm_ioeventfd,
    kvm_pit_config,
    kvm_run__bindgen_ty_1__bindgen_ty_4,
    kvm_run__bindgen_ty_1__bindgen_ty_13,
    kvm_run__bindgen_ty_1__bindgen_ty_14,
    kvm_run__bindgen_ty_1__bindgen_ty_23,
    kvm_hyperv_exit__bindgen_ty_1__bindgen_ty_2,
    kvm_regs,
    kvm_sregs,
    kvm_segment,
    kvm_dtable,
    kvm_userspace_memory_region,
    kvm_userspace_memory_region2,
    kvm_msrs,
    kvm_msr_entry,
    kvm_msr_list,
    kvm_cpuid2,
    kvm_cpuid_entry2,
    kvm_fpu,
    kvm_mp_state,
    kvm_enable_cap,
    kvm_device_attr,
    kvm_vcpu_events,
    kvm_debugregs,
    kvm_guest_debug,
    kvm_debug_exit_arch,
    kvm_xcr,
    kvm_xcrs,
    kvm_sync_regs,
    kvm_coalesced_mmio_zone,
    kvm_pre_fault_memory,
    kvm_clock_data,
    kvm_create_guest_memfd,
);

// No implicit padding, checked: the sizes are the sums of the fields.
const _: () = assert!(core::mem::size_of::<kvm_segment>() == 8 + 4 + 2 + 8 + 2);
const _: () = assert!(core::mem::size_of::<kvm_dtable>() == 8 + 2 + 3 * 2);
const _: () = assert!(core::mem::size_of::<kvm_sregs>() == 8 * 24 + 2 * 16 + 8 * 7 + 8 * 4);
const _: () = assert!(core::mem::size_of::<kvm_msr_entry>() == 16);
// `kvm_run.hyperv.u.hcall`: input, result, params[2].
const _: () = assert!(core::mem::size_of::<kvm_hyperv_exit__bindgen_ty_1__bindgen_ty_2>() == 4 * 8);
const _: () = assert!(core::mem::size_of::<kvm_device_attr>() == 4 + 4 + 8 + 8);
const _: () = assert!(core::mem::size_of::<kvm_msrs>() == 8);
const _: () = assert!(core::mem::size_of::<kvm_debugregs>() == 8 * 16);
const _: () = assert!(core::mem::size_of::<kvm_guest_debug>() == 4 + 4 + 8 * 8);
const _: () = assert!(core::mem::size_of::<kvm_debug_exit_arch>() == 4 + 4 + 8 * 3);
const _: () = assert!(core::mem::size_of::<kvm_coalesced_mmio_zone>() == 8 + 4 + 4);
const _: () = assert!(core::mem::size_of::<kvm_pre_fault_memory>() == 8 * 8);
const _: () = assert!(core::mem::size_of::<kvm_clock_data>() == 8 + 4 + 4 + 8 + 8 + 16);
const _: () = assert!(core::mem::size_of::<kvm_create_guest_memfd>() == 8 * 8);
const _: () = assert!(core::mem::size_of::<kvm_xcr>() == 16);
const _: () = assert!(core::mem::size_of::<kvm_xcrs>() == 8 + 16 * 16 + 8 * 16);
// kvm_regs, kvm_sregs and kvm_vcpu_events, each without padding (above).
const _: () = assert!(core::mem::size_of::<kvm_sync_regs>() == 144 + 312 + 64);
const _: () = assert!(core::mem::size_of::<kvm_cpuid_entry2>() == 40);
const _: () = assert!(core::mem::size_of::<kvm_cpuid2>() == 8);
const _: () = assert!(core::mem::size_of::<kvm_userspace_memory_region>() == 32);
const _: () =
    assert!(core::mem::size_of::<kvm_userspace_memory_region2>() == 32 + 8 + 4 + 4 + 8 * 14);
