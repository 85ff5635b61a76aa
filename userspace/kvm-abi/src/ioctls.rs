//! Every KVM ioctl request number that an x86-64 host can answer.
//!
//! `include/uapi/linux/kvm.h` defines the numbers with the function-like
//! macros `_IO`, `_IOR`, `_IOW` and `_IOWR` of `include/uapi/asm-generic/ioctl.h`,
//! which bindgen cannot translate. They are computed here with const fns from
//! the same encoding and the sizes of the generated structs, so a change of a
//! struct in the regenerated bindings changes the request number with it.
//!
//! Requests that only other architectures (s390, powerpc, arm64) implement are
//! left out; an x86 kernel answers them like any unknown request.
//!
//! The names keep the kernel's spelling so that they can be grepped for in
//! both trees.

use core::mem::size_of;

use crate::sys::{
    kvm_clear_dirty_log, kvm_clock_data, kvm_coalesced_mmio_zone, kvm_cpuid, kvm_cpuid2,
    kvm_create_device, kvm_create_guest_memfd, kvm_debugregs, kvm_device_attr, kvm_dirty_log,
    kvm_enable_cap, kvm_enc_region, kvm_fpu, kvm_guest_debug, kvm_hyperv_eventfd, kvm_interrupt,
    kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irq_routing_xen_evtchn, kvm_irqchip,
    kvm_irqfd, kvm_lapic_state, kvm_memory_attributes, kvm_mp_state, kvm_msi, kvm_msr_filter,
    kvm_msr_list, kvm_msrs, kvm_nested_state, kvm_one_reg, kvm_pit_config, kvm_pit_state,
    kvm_pit_state2, kvm_pmu_event_filter, kvm_pre_fault_memory, kvm_reg_list, kvm_regs,
    kvm_signal_mask, kvm_sregs, kvm_sregs2, kvm_tpr_access_ctl, kvm_translation,
    kvm_userspace_memory_region, kvm_userspace_memory_region2, kvm_vapic_addr, kvm_vcpu_events,
    kvm_x86_mce, kvm_xcrs, kvm_xen_hvm_attr, kvm_xen_hvm_config, kvm_xen_vcpu_attr, kvm_xsave,
};

/// An ioctl request number, as the kernel's `unsigned int cmd` sees it.
pub type Request = u32;

// include/uapi/asm-generic/ioctl.h: the field widths and positions.
const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// Direction bits: no data is transferred.
pub const IOC_NONE: u32 = 0;
/// Direction bits: userspace writes, the kernel reads the argument.
pub const IOC_WRITE: u32 = 1;
/// Direction bits: the kernel writes the argument for userspace to read.
pub const IOC_READ: u32 = 2;

/// The ioctl type ("magic") byte of every KVM request.
pub const KVMIO: u32 = 0xAE;

/// `_IOC(dir, type, nr, size)`.
///
/// Fails at compile time (in a `const`) when a field does not fit its width.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> Request {
    assert!(dir < (1 << 2), "ioctl direction is two bits wide");
    assert!(ty < (1 << IOC_TYPEBITS), "ioctl type is one byte wide");
    assert!(nr < (1 << IOC_NRBITS), "ioctl number is one byte wide");
    assert!(
        size < (1 << IOC_SIZEBITS),
        "ioctl argument size is 14 bits wide"
    );
    #[allow(
        clippy::cast_possible_truncation,
        reason = "size < 2^14 was asserted just above"
    )]
    let size = size as u32;
    (dir << IOC_DIRSHIFT) | (ty << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT) | (size << IOC_SIZESHIFT)
}

/// `_IO(type, nr)`: a request without a data argument (an integer may be passed).
pub const fn io(ty: u32, nr: u32) -> Request {
    ioc(IOC_NONE, ty, nr, 0)
}

/// `_IOR(type, nr, T)`: the kernel writes a `T` to the argument.
pub const fn ior<T>(ty: u32, nr: u32) -> Request {
    ioc(IOC_READ, ty, nr, size_of::<T>())
}

/// `_IOW(type, nr, T)`: the kernel reads a `T` from the argument.
pub const fn iow<T>(ty: u32, nr: u32) -> Request {
    ioc(IOC_WRITE, ty, nr, size_of::<T>())
}

/// `_IOWR(type, nr, T)`: the kernel reads and writes a `T` at the argument.
pub const fn iowr<T>(ty: u32, nr: u32) -> Request {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size_of::<T>())
}

/// `_IOC_DIR(req)`.
pub const fn dir(req: Request) -> u32 {
    (req >> IOC_DIRSHIFT) & 0x3
}

/// `_IOC_TYPE(req)`.
pub const fn ty(req: Request) -> u32 {
    (req >> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1)
}

/// `_IOC_NR(req)`.
pub const fn nr(req: Request) -> u32 {
    (req >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}

/// `_IOC_SIZE(req)`.
pub const fn size(req: Request) -> u32 {
    (req >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)
}

// ---- System ioctls (on the /dev/kvm fd). ----

/// Returns the API version, 12.
pub const KVM_GET_API_VERSION: Request = io(KVMIO, 0x00);
/// Creates a VM; the argument is the machine type; returns a VM fd.
pub const KVM_CREATE_VM: Request = io(KVMIO, 0x01);
/// Lists the MSRs that KVM_GET_MSRS/KVM_SET_MSRS support.
pub const KVM_GET_MSR_INDEX_LIST: Request = iowr::<kvm_msr_list>(KVMIO, 0x02);
/// Asks about a capability (also on a VM fd); 0 means absent.
pub const KVM_CHECK_EXTENSION: Request = io(KVMIO, 0x03);
/// Returns the size in bytes of the vCPU fd's mmap area.
pub const KVM_GET_VCPU_MMAP_SIZE: Request = io(KVMIO, 0x04);
/// Reports the CPUID entries KVM can expose to a guest.
pub const KVM_GET_SUPPORTED_CPUID: Request = iowr::<kvm_cpuid2>(KVMIO, 0x05);
/// Reports the CPUID entries KVM emulates.
pub const KVM_GET_EMULATED_CPUID: Request = iowr::<kvm_cpuid2>(KVMIO, 0x09);
/// Lists the feature MSRs readable with KVM_GET_MSRS on the system fd.
pub const KVM_GET_MSR_FEATURE_INDEX_LIST: Request = iowr::<kvm_msr_list>(KVMIO, 0x0a);

// ---- VM ioctls. ----

/// Creates a vCPU; the argument is the vCPU id; returns a vCPU fd.
pub const KVM_CREATE_VCPU: Request = io(KVMIO, 0x41);
/// Copies a memory slot's dirty bitmap out.
pub const KVM_GET_DIRTY_LOG: Request = iow::<kvm_dirty_log>(KVMIO, 0x42);
/// Sets the number of shadow MMU pages.
pub const KVM_SET_NR_MMU_PAGES: Request = io(KVMIO, 0x44);
/// Reads the number of shadow MMU pages (deprecated).
pub const KVM_GET_NR_MMU_PAGES: Request = io(KVMIO, 0x45);
/// Creates, moves, changes or deletes a memory slot.
pub const KVM_SET_USER_MEMORY_REGION: Request = iow::<kvm_userspace_memory_region>(KVMIO, 0x46);
/// Sets the guest-physical address of the three-page TSS region (VMX real mode).
pub const KVM_SET_TSS_ADDR: Request = io(KVMIO, 0x47);
/// Sets the guest-physical address of the identity-map page table (VMX real mode).
pub const KVM_SET_IDENTITY_MAP_ADDR: Request = iow::<u64>(KVMIO, 0x48);
/// KVM_SET_USER_MEMORY_REGION with guest_memfd fields.
pub const KVM_SET_USER_MEMORY_REGION2: Request = iow::<kvm_userspace_memory_region2>(KVMIO, 0x49);
/// Creates the in-kernel PIC, IOAPIC and local APICs.
pub const KVM_CREATE_IRQCHIP: Request = io(KVMIO, 0x60);
/// Sets an interrupt line level.
pub const KVM_IRQ_LINE: Request = iow::<kvm_irq_level>(KVMIO, 0x61);
/// Reads an in-kernel interrupt controller's state.
pub const KVM_GET_IRQCHIP: Request = iowr::<kvm_irqchip>(KVMIO, 0x62);
/// Writes an in-kernel interrupt controller's state.
pub const KVM_SET_IRQCHIP: Request = ior::<kvm_irqchip>(KVMIO, 0x63);
/// Creates the in-kernel PIT (legacy).
pub const KVM_CREATE_PIT: Request = io(KVMIO, 0x64);
/// Reads the PIT state.
pub const KVM_GET_PIT: Request = iowr::<kvm_pit_state>(KVMIO, 0x65);
/// Writes the PIT state.
pub const KVM_SET_PIT: Request = ior::<kvm_pit_state>(KVMIO, 0x66);
/// Sets an interrupt line level and returns its status.
pub const KVM_IRQ_LINE_STATUS: Request = iowr::<kvm_irq_level>(KVMIO, 0x67);
/// Registers a coalesced MMIO zone.
pub const KVM_REGISTER_COALESCED_MMIO: Request = iow::<kvm_coalesced_mmio_zone>(KVMIO, 0x67);
/// Unregisters a coalesced MMIO zone.
pub const KVM_UNREGISTER_COALESCED_MMIO: Request = iow::<kvm_coalesced_mmio_zone>(KVMIO, 0x68);
/// Sets the GSI routing table.
pub const KVM_SET_GSI_ROUTING: Request = iow::<kvm_irq_routing>(KVMIO, 0x6a);
/// Sets the PIT interrupt reinjection policy.
pub const KVM_REINJECT_CONTROL: Request = io(KVMIO, 0x71);
/// Binds an eventfd to a GSI.
pub const KVM_IRQFD: Request = iow::<kvm_irqfd>(KVMIO, 0x76);
/// Creates the in-kernel PIT with flags.
pub const KVM_CREATE_PIT2: Request = iow::<kvm_pit_config>(KVMIO, 0x77);
/// Chooses the bootstrap processor's vCPU id.
pub const KVM_SET_BOOT_CPU_ID: Request = io(KVMIO, 0x78);
/// Binds an eventfd to a guest PIO/MMIO address.
pub const KVM_IOEVENTFD: Request = iow::<kvm_ioeventfd>(KVMIO, 0x79);
/// Configures Xen HVM emulation.
pub const KVM_XEN_HVM_CONFIG: Request = iow::<kvm_xen_hvm_config>(KVMIO, 0x7a);
/// Sets the kvmclock.
pub const KVM_SET_CLOCK: Request = iow::<kvm_clock_data>(KVMIO, 0x7b);
/// Reads the kvmclock.
pub const KVM_GET_CLOCK: Request = ior::<kvm_clock_data>(KVMIO, 0x7c);
/// Reads the PIT state with flags.
pub const KVM_GET_PIT2: Request = ior::<kvm_pit_state2>(KVMIO, 0x9f);
/// Writes the PIT state with flags.
pub const KVM_SET_PIT2: Request = iow::<kvm_pit_state2>(KVMIO, 0xa0);
/// Sets the guest TSC frequency (VM or vCPU fd).
pub const KVM_SET_TSC_KHZ: Request = io(KVMIO, 0xa2);
/// Reads the guest TSC frequency (VM or vCPU fd).
pub const KVM_GET_TSC_KHZ: Request = io(KVMIO, 0xa3);
/// Injects an MSI.
pub const KVM_SIGNAL_MSI: Request = iow::<kvm_msi>(KVMIO, 0xa5);
/// Sets the PMU event filter.
pub const KVM_SET_PMU_EVENT_FILTER: Request = iow::<kvm_pmu_event_filter>(KVMIO, 0xb2);
/// Creates an emulated device; returns a device fd.
pub const KVM_CREATE_DEVICE: Request = iowr::<kvm_create_device>(KVMIO, 0xe0);
/// Sets a device attribute (device, VM, vCPU or system fd).
pub const KVM_SET_DEVICE_ATTR: Request = iow::<kvm_device_attr>(KVMIO, 0xe1);
/// Reads a device attribute.
pub const KVM_GET_DEVICE_ATTR: Request = iow::<kvm_device_attr>(KVMIO, 0xe2);
/// Asks whether a device attribute exists.
pub const KVM_HAS_DEVICE_ATTR: Request = iow::<kvm_device_attr>(KVMIO, 0xe3);
/// Enables a capability (VM or vCPU fd).
pub const KVM_ENABLE_CAP: Request = iow::<kvm_enable_cap>(KVMIO, 0xa3);
/// Issues a memory-encryption (SEV/TDX) command.
pub const KVM_MEMORY_ENCRYPT_OP: Request = iowr::<libc::c_ulong>(KVMIO, 0xba);
/// Registers an encrypted memory region.
pub const KVM_MEMORY_ENCRYPT_REG_REGION: Request = ior::<kvm_enc_region>(KVMIO, 0xbb);
/// Unregisters an encrypted memory region.
pub const KVM_MEMORY_ENCRYPT_UNREG_REGION: Request = ior::<kvm_enc_region>(KVMIO, 0xbc);
/// Binds an eventfd to a Hyper-V connection id.
pub const KVM_HYPERV_EVENTFD: Request = iow::<kvm_hyperv_eventfd>(KVMIO, 0xbd);
/// Clears part of a memory slot's dirty bitmap.
pub const KVM_CLEAR_DIRTY_LOG: Request = iowr::<kvm_clear_dirty_log>(KVMIO, 0xc0);
/// Installs an MSR filter.
pub const KVM_X86_SET_MSR_FILTER: Request = iow::<kvm_msr_filter>(KVMIO, 0xc6);
/// Resets the dirty rings of all vCPUs.
pub const KVM_RESET_DIRTY_RINGS: Request = io(KVMIO, 0xc7);
/// Reads a Xen HVM attribute.
pub const KVM_XEN_HVM_GET_ATTR: Request = iowr::<kvm_xen_hvm_attr>(KVMIO, 0xc8);
/// Writes a Xen HVM attribute.
pub const KVM_XEN_HVM_SET_ATTR: Request = iow::<kvm_xen_hvm_attr>(KVMIO, 0xc9);
/// Sends a Xen event channel event.
pub const KVM_XEN_HVM_EVTCHN_SEND: Request = iow::<kvm_irq_routing_xen_evtchn>(KVMIO, 0xd0);
/// Returns a binary statistics fd (VM or vCPU fd).
pub const KVM_GET_STATS_FD: Request = io(KVMIO, 0xce);
/// Sets attributes (e.g. private) on a guest-physical range.
pub const KVM_SET_MEMORY_ATTRIBUTES: Request = iow::<kvm_memory_attributes>(KVMIO, 0xd2);
/// Creates a guest_memfd; returns its fd.
pub const KVM_CREATE_GUEST_MEMFD: Request = iowr::<kvm_create_guest_memfd>(KVMIO, 0xd4);

// ---- vCPU ioctls. ----

/// Runs the vCPU until an exit that userspace must handle.
pub const KVM_RUN: Request = io(KVMIO, 0x80);
/// Reads the general-purpose registers.
pub const KVM_GET_REGS: Request = ior::<kvm_regs>(KVMIO, 0x81);
/// Writes the general-purpose registers.
pub const KVM_SET_REGS: Request = iow::<kvm_regs>(KVMIO, 0x82);
/// Reads the special registers (segments, control registers, EFER).
pub const KVM_GET_SREGS: Request = ior::<kvm_sregs>(KVMIO, 0x83);
/// Writes the special registers.
pub const KVM_SET_SREGS: Request = iow::<kvm_sregs>(KVMIO, 0x84);
/// Translates a guest-virtual address.
pub const KVM_TRANSLATE: Request = iowr::<kvm_translation>(KVMIO, 0x85);
/// Queues an external interrupt (no in-kernel irqchip).
pub const KVM_INTERRUPT: Request = iow::<kvm_interrupt>(KVMIO, 0x86);
/// Reads MSRs (vCPU fd) or feature MSRs (system fd).
pub const KVM_GET_MSRS: Request = iowr::<kvm_msrs>(KVMIO, 0x88);
/// Writes MSRs.
pub const KVM_SET_MSRS: Request = iow::<kvm_msrs>(KVMIO, 0x89);
/// Sets the guest CPUID (legacy layout).
pub const KVM_SET_CPUID: Request = iow::<kvm_cpuid>(KVMIO, 0x8a);
/// Sets the signal mask used during KVM_RUN.
pub const KVM_SET_SIGNAL_MASK: Request = iow::<kvm_signal_mask>(KVMIO, 0x8b);
/// Reads the FPU state.
pub const KVM_GET_FPU: Request = ior::<kvm_fpu>(KVMIO, 0x8c);
/// Writes the FPU state.
pub const KVM_SET_FPU: Request = iow::<kvm_fpu>(KVMIO, 0x8d);
/// Reads the local APIC registers.
pub const KVM_GET_LAPIC: Request = ior::<kvm_lapic_state>(KVMIO, 0x8e);
/// Writes the local APIC registers.
pub const KVM_SET_LAPIC: Request = iow::<kvm_lapic_state>(KVMIO, 0x8f);
/// Sets the guest CPUID.
pub const KVM_SET_CPUID2: Request = iow::<kvm_cpuid2>(KVMIO, 0x90);
/// Reads back the guest CPUID.
pub const KVM_GET_CPUID2: Request = iowr::<kvm_cpuid2>(KVMIO, 0x91);
/// Enables TPR access reporting.
pub const KVM_TPR_ACCESS_REPORTING: Request = iowr::<kvm_tpr_access_ctl>(KVMIO, 0x92);
/// Sets the virtual APIC address.
pub const KVM_SET_VAPIC_ADDR: Request = iow::<kvm_vapic_addr>(KVMIO, 0x93);
/// Reads the multiprocessing state.
pub const KVM_GET_MP_STATE: Request = ior::<kvm_mp_state>(KVMIO, 0x98);
/// Writes the multiprocessing state.
pub const KVM_SET_MP_STATE: Request = iow::<kvm_mp_state>(KVMIO, 0x99);
/// Injects an NMI.
pub const KVM_NMI: Request = io(KVMIO, 0x9a);
/// Configures guest debugging.
pub const KVM_SET_GUEST_DEBUG: Request = iow::<kvm_guest_debug>(KVMIO, 0x9b);
/// Sets up machine-check emulation.
pub const KVM_X86_SETUP_MCE: Request = iow::<u64>(KVMIO, 0x9c);
/// Reads the supported MCE capabilities (system fd).
pub const KVM_X86_GET_MCE_CAP_SUPPORTED: Request = ior::<u64>(KVMIO, 0x9d);
/// Injects a machine check.
pub const KVM_X86_SET_MCE: Request = iow::<kvm_x86_mce>(KVMIO, 0x9e);
/// Reads pending exceptions, interrupts and NMIs.
pub const KVM_GET_VCPU_EVENTS: Request = ior::<kvm_vcpu_events>(KVMIO, 0x9f);
/// Writes pending exceptions, interrupts and NMIs.
pub const KVM_SET_VCPU_EVENTS: Request = iow::<kvm_vcpu_events>(KVMIO, 0xa0);
/// Reads the debug registers.
pub const KVM_GET_DEBUGREGS: Request = ior::<kvm_debugregs>(KVMIO, 0xa1);
/// Writes the debug registers.
pub const KVM_SET_DEBUGREGS: Request = iow::<kvm_debugregs>(KVMIO, 0xa2);
/// Reads the XSAVE area.
pub const KVM_GET_XSAVE: Request = ior::<kvm_xsave>(KVMIO, 0xa4);
/// Writes the XSAVE area.
pub const KVM_SET_XSAVE: Request = iow::<kvm_xsave>(KVMIO, 0xa5);
/// Reads the extended control registers.
pub const KVM_GET_XCRS: Request = ior::<kvm_xcrs>(KVMIO, 0xa6);
/// Writes the extended control registers.
pub const KVM_SET_XCRS: Request = iow::<kvm_xcrs>(KVMIO, 0xa7);
/// Reads one register by id.
pub const KVM_GET_ONE_REG: Request = iow::<kvm_one_reg>(KVMIO, 0xab);
/// Writes one register by id.
pub const KVM_SET_ONE_REG: Request = iow::<kvm_one_reg>(KVMIO, 0xac);
/// Tells the guest's kvmclock that the VM was paused.
pub const KVM_KVMCLOCK_CTRL: Request = io(KVMIO, 0xad);
/// Lists the register ids KVM_GET_ONE_REG accepts.
pub const KVM_GET_REG_LIST: Request = iowr::<kvm_reg_list>(KVMIO, 0xb0);
/// Injects an SMI.
pub const KVM_SMI: Request = io(KVMIO, 0xb7);
/// Reads nested virtualization state.
pub const KVM_GET_NESTED_STATE: Request = iowr::<kvm_nested_state>(KVMIO, 0xbe);
/// Writes nested virtualization state.
pub const KVM_SET_NESTED_STATE: Request = iow::<kvm_nested_state>(KVMIO, 0xbf);
/// Reports the Hyper-V CPUID leaves (system or vCPU fd).
pub const KVM_GET_SUPPORTED_HV_CPUID: Request = iowr::<kvm_cpuid2>(KVMIO, 0xc1);
/// Reads a Xen vCPU attribute.
pub const KVM_XEN_VCPU_GET_ATTR: Request = iowr::<kvm_xen_vcpu_attr>(KVMIO, 0xca);
/// Writes a Xen vCPU attribute.
pub const KVM_XEN_VCPU_SET_ATTR: Request = iow::<kvm_xen_vcpu_attr>(KVMIO, 0xcb);
/// Reads the special registers including the PDPTRs.
pub const KVM_GET_SREGS2: Request = ior::<kvm_sregs2>(KVMIO, 0xcc);
/// Writes the special registers including the PDPTRs.
pub const KVM_SET_SREGS2: Request = iow::<kvm_sregs2>(KVMIO, 0xcd);
/// Reads an XSAVE area larger than 4 KiB.
pub const KVM_GET_XSAVE2: Request = ior::<kvm_xsave>(KVMIO, 0xcf);
/// Pre-faults guest memory into the stage-2 page tables.
pub const KVM_PRE_FAULT_MEMORY: Request = iowr::<kvm_pre_fault_memory>(KVMIO, 0xd5);

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by a C program that includes <linux/kvm.h>; they pin the
    /// encoding and the struct sizes bindgen produced.
    #[test]
    fn known_request_numbers() {
        assert_eq!(KVM_GET_API_VERSION, 0xAE00);
        assert_eq!(KVM_CREATE_VM, 0xAE01);
        assert_eq!(KVM_CHECK_EXTENSION, 0xAE03);
        assert_eq!(KVM_GET_VCPU_MMAP_SIZE, 0xAE04);
        assert_eq!(KVM_CREATE_VCPU, 0xAE41);
        assert_eq!(KVM_RUN, 0xAE80);
        assert_eq!(KVM_GET_REGS, 0x8090_AE81);
        assert_eq!(KVM_SET_REGS, 0x4090_AE82);
        assert_eq!(KVM_GET_SREGS, 0x8138_AE83);
        assert_eq!(KVM_SET_SREGS, 0x4138_AE84);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_AE46);
        assert_eq!(KVM_SET_USER_MEMORY_REGION2, 0x40A0_AE49);
        assert_eq!(KVM_SET_IDENTITY_MAP_ADDR, 0x4008_AE48);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xC008_AE05);
        assert_eq!(KVM_SET_CPUID2, 0x4008_AE90);
        assert_eq!(KVM_GET_CPUID2, 0xC008_AE91);
        assert_eq!(KVM_GET_MSRS, 0xC008_AE88);
        assert_eq!(KVM_SET_MSRS, 0x4008_AE89);
        assert_eq!(KVM_GET_MSR_INDEX_LIST, 0xC004_AE02);
    }

    #[test]
    fn decoding_inverts_encoding() {
        let req = iowr::<kvm_cpuid2>(KVMIO, 0x05);
        assert_eq!(dir(req), IOC_READ | IOC_WRITE);
        assert_eq!(ty(req), KVMIO);
        assert_eq!(nr(req), 0x05);
        assert_eq!(size(req), 8);
        assert_eq!(dir(KVM_RUN), IOC_NONE);
        assert_eq!(size(KVM_RUN), 0);
    }

    /// Every request above, against the value `_IO*()` gives in C for the
    /// same name (printed once from the kernel's exported <linux/kvm.h>).
    #[test]
    fn every_request_matches_linux_kvm_h() {
        let table: [(&str, Request, Request); 107] = [
            ("KVM_GET_API_VERSION", KVM_GET_API_VERSION, 0x0000AE00),
            ("KVM_CREATE_VM", KVM_CREATE_VM, 0x0000AE01),
            ("KVM_GET_MSR_INDEX_LIST", KVM_GET_MSR_INDEX_LIST, 0xC004AE02),
            ("KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION, 0x0000AE03),
            ("KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE, 0x0000AE04),
            (
                "KVM_GET_SUPPORTED_CPUID",
                KVM_GET_SUPPORTED_CPUID,
                0xC008AE05,
            ),
            ("KVM_GET_EMULATED_CPUID", KVM_GET_EMULATED_CPUID, 0xC008AE09),
            (
                "KVM_GET_MSR_FEATURE_INDEX_LIST",
                KVM_GET_MSR_FEATURE_INDEX_LIST,
                0xC004AE0A,
            ),
            ("KVM_CREATE_VCPU", KVM_CREATE_VCPU, 0x0000AE41),
            ("KVM_GET_DIRTY_LOG", KVM_GET_DIRTY_LOG, 0x4010AE42),
            ("KVM_SET_NR_MMU_PAGES", KVM_SET_NR_MMU_PAGES, 0x0000AE44),
            ("KVM_GET_NR_MMU_PAGES", KVM_GET_NR_MMU_PAGES, 0x0000AE45),
            (
                "KVM_SET_USER_MEMORY_REGION",
                KVM_SET_USER_MEMORY_REGION,
                0x4020AE46,
            ),
            ("KVM_SET_TSS_ADDR", KVM_SET_TSS_ADDR, 0x0000AE47),
            (
                "KVM_SET_IDENTITY_MAP_ADDR",
                KVM_SET_IDENTITY_MAP_ADDR,
                0x4008AE48,
            ),
            (
                "KVM_SET_USER_MEMORY_REGION2",
                KVM_SET_USER_MEMORY_REGION2,
                0x40A0AE49,
            ),
            ("KVM_CREATE_IRQCHIP", KVM_CREATE_IRQCHIP, 0x0000AE60),
            ("KVM_IRQ_LINE", KVM_IRQ_LINE, 0x4008AE61),
            ("KVM_GET_IRQCHIP", KVM_GET_IRQCHIP, 0xC208AE62),
            ("KVM_SET_IRQCHIP", KVM_SET_IRQCHIP, 0x8208AE63),
            ("KVM_CREATE_PIT", KVM_CREATE_PIT, 0x0000AE64),
            ("KVM_GET_PIT", KVM_GET_PIT, 0xC048AE65),
            ("KVM_SET_PIT", KVM_SET_PIT, 0x8048AE66),
            ("KVM_IRQ_LINE_STATUS", KVM_IRQ_LINE_STATUS, 0xC008AE67),
            (
                "KVM_REGISTER_COALESCED_MMIO",
                KVM_REGISTER_COALESCED_MMIO,
                0x4010AE67,
            ),
            (
                "KVM_UNREGISTER_COALESCED_MMIO",
                KVM_UNREGISTER_COALESCED_MMIO,
                0x4010AE68,
            ),
            ("KVM_SET_GSI_ROUTING", KVM_SET_GSI_ROUTING, 0x4008AE6A),
            ("KVM_REINJECT_CONTROL", KVM_REINJECT_CONTROL, 0x0000AE71),
            ("KVM_IRQFD", KVM_IRQFD, 0x4020AE76),
            ("KVM_CREATE_PIT2", KVM_CREATE_PIT2, 0x4040AE77),
            ("KVM_SET_BOOT_CPU_ID", KVM_SET_BOOT_CPU_ID, 0x0000AE78),
            ("KVM_IOEVENTFD", KVM_IOEVENTFD, 0x4040AE79),
            ("KVM_XEN_HVM_CONFIG", KVM_XEN_HVM_CONFIG, 0x4038AE7A),
            ("KVM_SET_CLOCK", KVM_SET_CLOCK, 0x4030AE7B),
            ("KVM_GET_CLOCK", KVM_GET_CLOCK, 0x8030AE7C),
            ("KVM_GET_PIT2", KVM_GET_PIT2, 0x8070AE9F),
            ("KVM_SET_PIT2", KVM_SET_PIT2, 0x4070AEA0),
            ("KVM_SET_TSC_KHZ", KVM_SET_TSC_KHZ, 0x0000AEA2),
            ("KVM_GET_TSC_KHZ", KVM_GET_TSC_KHZ, 0x0000AEA3),
            ("KVM_SIGNAL_MSI", KVM_SIGNAL_MSI, 0x4020AEA5),
            (
                "KVM_SET_PMU_EVENT_FILTER",
                KVM_SET_PMU_EVENT_FILTER,
                0x4020AEB2,
            ),
            ("KVM_CREATE_DEVICE", KVM_CREATE_DEVICE, 0xC00CAEE0),
            ("KVM_SET_DEVICE_ATTR", KVM_SET_DEVICE_ATTR, 0x4018AEE1),
            ("KVM_GET_DEVICE_ATTR", KVM_GET_DEVICE_ATTR, 0x4018AEE2),
            ("KVM_HAS_DEVICE_ATTR", KVM_HAS_DEVICE_ATTR, 0x4018AEE3),
            ("KVM_ENABLE_CAP", KVM_ENABLE_CAP, 0x4068AEA3),
            ("KVM_MEMORY_ENCRYPT_OP", KVM_MEMORY_ENCRYPT_OP, 0xC008AEBA),
            (
                "KVM_MEMORY_ENCRYPT_REG_REGION",
                KVM_MEMORY_ENCRYPT_REG_REGION,
                0x8010AEBB,
            ),
            (
                "KVM_MEMORY_ENCRYPT_UNREG_REGION",
                KVM_MEMORY_ENCRYPT_UNREG_REGION,
                0x8010AEBC,
            ),
            ("KVM_HYPERV_EVENTFD", KVM_HYPERV_EVENTFD, 0x4018AEBD),
            ("KVM_CLEAR_DIRTY_LOG", KVM_CLEAR_DIRTY_LOG, 0xC018AEC0),
            ("KVM_X86_SET_MSR_FILTER", KVM_X86_SET_MSR_FILTER, 0x4188AEC6),
            ("KVM_RESET_DIRTY_RINGS", KVM_RESET_DIRTY_RINGS, 0x0000AEC7),
            ("KVM_XEN_HVM_GET_ATTR", KVM_XEN_HVM_GET_ATTR, 0xC048AEC8),
            ("KVM_XEN_HVM_SET_ATTR", KVM_XEN_HVM_SET_ATTR, 0x4048AEC9),
            (
                "KVM_XEN_HVM_EVTCHN_SEND",
                KVM_XEN_HVM_EVTCHN_SEND,
                0x400CAED0,
            ),
            ("KVM_GET_STATS_FD", KVM_GET_STATS_FD, 0x0000AECE),
            (
                "KVM_SET_MEMORY_ATTRIBUTES",
                KVM_SET_MEMORY_ATTRIBUTES,
                0x4020AED2,
            ),
            ("KVM_CREATE_GUEST_MEMFD", KVM_CREATE_GUEST_MEMFD, 0xC040AED4),
            ("KVM_RUN", KVM_RUN, 0x0000AE80),
            ("KVM_GET_REGS", KVM_GET_REGS, 0x8090AE81),
            ("KVM_SET_REGS", KVM_SET_REGS, 0x4090AE82),
            ("KVM_GET_SREGS", KVM_GET_SREGS, 0x8138AE83),
            ("KVM_SET_SREGS", KVM_SET_SREGS, 0x4138AE84),
            ("KVM_TRANSLATE", KVM_TRANSLATE, 0xC018AE85),
            ("KVM_INTERRUPT", KVM_INTERRUPT, 0x4004AE86),
            ("KVM_GET_MSRS", KVM_GET_MSRS, 0xC008AE88),
            ("KVM_SET_MSRS", KVM_SET_MSRS, 0x4008AE89),
            ("KVM_SET_CPUID", KVM_SET_CPUID, 0x4008AE8A),
            ("KVM_SET_SIGNAL_MASK", KVM_SET_SIGNAL_MASK, 0x4004AE8B),
            ("KVM_GET_FPU", KVM_GET_FPU, 0x81A0AE8C),
            ("KVM_SET_FPU", KVM_SET_FPU, 0x41A0AE8D),
            ("KVM_GET_LAPIC", KVM_GET_LAPIC, 0x8400AE8E),
            ("KVM_SET_LAPIC", KVM_SET_LAPIC, 0x4400AE8F),
            ("KVM_SET_CPUID2", KVM_SET_CPUID2, 0x4008AE90),
            ("KVM_GET_CPUID2", KVM_GET_CPUID2, 0xC008AE91),
            (
                "KVM_TPR_ACCESS_REPORTING",
                KVM_TPR_ACCESS_REPORTING,
                0xC028AE92,
            ),
            ("KVM_SET_VAPIC_ADDR", KVM_SET_VAPIC_ADDR, 0x4008AE93),
            ("KVM_GET_MP_STATE", KVM_GET_MP_STATE, 0x8004AE98),
            ("KVM_SET_MP_STATE", KVM_SET_MP_STATE, 0x4004AE99),
            ("KVM_NMI", KVM_NMI, 0x0000AE9A),
            ("KVM_SET_GUEST_DEBUG", KVM_SET_GUEST_DEBUG, 0x4048AE9B),
            ("KVM_X86_SETUP_MCE", KVM_X86_SETUP_MCE, 0x4008AE9C),
            (
                "KVM_X86_GET_MCE_CAP_SUPPORTED",
                KVM_X86_GET_MCE_CAP_SUPPORTED,
                0x8008AE9D,
            ),
            ("KVM_X86_SET_MCE", KVM_X86_SET_MCE, 0x4040AE9E),
            ("KVM_GET_VCPU_EVENTS", KVM_GET_VCPU_EVENTS, 0x8040AE9F),
            ("KVM_SET_VCPU_EVENTS", KVM_SET_VCPU_EVENTS, 0x4040AEA0),
            ("KVM_GET_DEBUGREGS", KVM_GET_DEBUGREGS, 0x8080AEA1),
            ("KVM_SET_DEBUGREGS", KVM_SET_DEBUGREGS, 0x4080AEA2),
            ("KVM_GET_XSAVE", KVM_GET_XSAVE, 0x9000AEA4),
            ("KVM_SET_XSAVE", KVM_SET_XSAVE, 0x5000AEA5),
            ("KVM_GET_XCRS", KVM_GET_XCRS, 0x8188AEA6),
            ("KVM_SET_XCRS", KVM_SET_XCRS, 0x4188AEA7),
            ("KVM_GET_ONE_REG", KVM_GET_ONE_REG, 0x4010AEAB),
            ("KVM_SET_ONE_REG", KVM_SET_ONE_REG, 0x4010AEAC),
            ("KVM_KVMCLOCK_CTRL", KVM_KVMCLOCK_CTRL, 0x0000AEAD),
            ("KVM_GET_REG_LIST", KVM_GET_REG_LIST, 0xC008AEB0),
            ("KVM_SMI", KVM_SMI, 0x0000AEB7),
            ("KVM_GET_NESTED_STATE", KVM_GET_NESTED_STATE, 0xC080AEBE),
            ("KVM_SET_NESTED_STATE", KVM_SET_NESTED_STATE, 0x4080AEBF),
            (
                "KVM_GET_SUPPORTED_HV_CPUID",
                KVM_GET_SUPPORTED_HV_CPUID,
                0xC008AEC1,
            ),
            ("KVM_XEN_VCPU_GET_ATTR", KVM_XEN_VCPU_GET_ATTR, 0xC048AECA),
            ("KVM_XEN_VCPU_SET_ATTR", KVM_XEN_VCPU_SET_ATTR, 0x4048AECB),
            ("KVM_GET_SREGS2", KVM_GET_SREGS2, 0x8140AECC),
            ("KVM_SET_SREGS2", KVM_SET_SREGS2, 0x4140AECD),
            ("KVM_GET_XSAVE2", KVM_GET_XSAVE2, 0x9000AECF),
            ("KVM_PRE_FAULT_MEMORY", KVM_PRE_FAULT_MEMORY, 0xC040AED5),
        ];
        for (name, ours, c) in table {
            assert_eq!(
                ours, c,
                "{name}: computed {ours:#010x}, <linux/kvm.h> says {c:#010x}"
            );
        }
    }
}
