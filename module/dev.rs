// SPDX-License-Identifier: GPL-2.0

//! `/dev/rkvm`: the system fd, and the capabilities rkvm reports.
//!
//! System ioctls (`Documentation/virt/kvm/api.rst` section 4): API version,
//! VM creation, capability checks, the vCPU mapping size, and the CPUID and
//! MSR lists a client builds its guest's view from.

use crate::abi::{self, kvm_cpuid2, kvm_cpuid_entry2, kvm_msr_list};
use crate::backend::Backend;
use crate::hyperv;
use crate::memslot::NR_MEMSLOTS;
use crate::stats::Stats;
use crate::sys::debugfs::DebugParent;
use crate::sys::file::{new_anon_fd_then, DeviceFile, FileObject, FileOps};
use crate::sys::{cpu, fpu};
use crate::user;
use crate::vcpu::{MAX_VCPUS, MAX_VCPU_IDS, VCPU_MMAP_PAGES};
use crate::vm::{Vm, VM_FOPS};
use crate::x86::{cpuid, guest_debug, msr, xsave};
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};

/// What every open of `/dev/rkvm`, and every VM, shares.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) stats: Arc<Stats>,
    /// `/sys/kernel/debug/rkvm`, where each VM gets its directory.
    pub(crate) debugfs: DebugParent,
    /// Counts VMs whose debugfs name was taken (`Vm::add_debugfs`), so that
    /// each gets a name of its own.
    pub(crate) renamed_vms: core::sync::atomic::AtomicU64,
}

/// One open of `/dev/rkvm`.
pub(crate) struct System {
    shared: Arc<Shared>,
}

/// The file operations of `/dev/rkvm`.
pub(crate) static DEVICE_FOPS: FileOps<System> = FileOps::new_device();

impl DeviceFile for System {
    type Context = Arc<Shared>;

    fn open(shared: &Arc<Shared>) -> Result<Arc<Self>> {
        Ok(Arc::new(
            System {
                shared: shared.clone(),
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }
}

/// The answer to `KVM_CHECK_EXTENSION` (on the device and on VM fds):
/// non-zero only for what rkvm implements.
pub(crate) fn check_extension(cap: usize) -> isize {
    let Ok(cap) = u32::try_from(cap) else {
        return 0;
    };
    match cap {
        abi::KVM_CAP_USER_MEMORY
        | abi::KVM_CAP_USER_MEMORY2
        | abi::KVM_CAP_DESTROY_MEMORY_REGION_WORKS
        // A historical fix (Linux 2.6.29) KVM always reports; rkvm never had
        // the bug: adjacent slots are independent.
        | abi::KVM_CAP_JOIN_MEMORY_REGIONS_WORKS
        // KVM_GET/SET_MP_STATE (always runnable without an in-kernel APIC).
        | abi::KVM_CAP_MP_STATE
        // KVM_GET_TSC_KHZ on vCPU fds.
        | abi::KVM_CAP_GET_TSC_KHZ
        // KVM_SET_NR_MMU_PAGES (vm.rs).
        | abi::KVM_CAP_MMU_SHADOW_CACHE_CONTROL
        | abi::KVM_CAP_SET_TSS_ADDR
        | abi::KVM_CAP_SET_IDENTITY_MAP_ADDR
        | abi::KVM_CAP_EXT_CPUID
        | abi::KVM_CAP_CHECK_EXTENSION_VM
        // `kvm_run.immediate_exit` is honoured (run/).
        | abi::KVM_CAP_IMMEDIATE_EXIT
        // `kvm_run.internal.ndata` says how much of `data` is valid.
        | abi::KVM_CAP_INTERNAL_ERROR_DATA
        // `KVM_MEM_READONLY` slots; guest writes to them exit as MMIO.
        | abi::KVM_CAP_READONLY_MEM
        // KVM_ENABLE_CAP(KVM_CAP_MSR_PLATFORM_INFO), and
        // (KVM_CAP_EXIT_ON_EMULATION_FAILURE) (vm.rs).
        | abi::KVM_CAP_MSR_PLATFORM_INFO
        | abi::KVM_CAP_EXIT_ON_EMULATION_FAILURE
        // KVM_ENABLE_CAP on VM fds (vm.rs) and on vCPU fds:
        // KVM_CAP_ENFORCE_PV_FEATURE_CPUID (vcpu.rs).
        | abi::KVM_CAP_ENABLE_CAP_VM
        | abi::KVM_CAP_ENABLE_CAP
        | abi::KVM_CAP_ENFORCE_PV_FEATURE_CPUID
        // KVM_GET/SET_VCPU_EVENTS (run/events.rs).
        | abi::KVM_CAP_VCPU_EVENTS
        // KVM_GET/SET_DEBUGREGS (vcpu.rs).
        | abi::KVM_CAP_DEBUGREGS
        // KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR) and
        // KVM_X86_SET_MSR_FILTER (vm.rs, run/).
        | abi::KVM_CAP_X86_USER_SPACE_MSR
        | abi::KVM_CAP_X86_MSR_FILTER
        // KVM_GET/SET_XSAVE (x86/xsave.rs), on every host, as KVM 7.3.
        | abi::KVM_CAP_XSAVE
        // KVM_GET_STATS_FD on VM and vCPU fds (stats/fd.rs).
        | abi::KVM_CAP_BINARY_STATS_FD
        // KVM_GET_MSR_FEATURE_INDEX_LIST and KVM_GET_MSRS on this fd.
        | abi::KVM_CAP_GET_MSR_FEATURES
        // KVM_HAS/GET/SET_DEVICE_ATTR on vCPU fds: the TSC offset (vcpu.rs).
        | abi::KVM_CAP_VCPU_ATTRIBUTES
        // KVM_ENABLE_CAP(KVM_CAP_X86_APIC_BUS_CYCLES_NS) (vm.rs); on a VM
        // fd the answer is the VM's bus cycle in ns.
        | abi::KVM_CAP_X86_APIC_BUS_CYCLES_NS
        // The in-kernel irqchip (irq/): KVM_CREATE_IRQCHIP and its state
        // ioctls, HLT handled in the kernel, KVM_IRQ_LINE_STATUS, the APIC's
        // TSC-deadline timer, and KVM_SIGNAL_MSI.
        | abi::KVM_CAP_IRQCHIP
        // KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP): the local APICs alone.
        | abi::KVM_CAP_SPLIT_IRQCHIP
        | abi::KVM_CAP_HLT
        | abi::KVM_CAP_IRQ_INJECT_STATUS
        | abi::KVM_CAP_TSC_DEADLINE_TIMER
        | abi::KVM_CAP_SIGNAL_MSI
        // KVM_NMI, and NMIs from the in-kernel APICs (run/nmi.rs).
        | abi::KVM_CAP_USER_NMI
        // System management mode: KVM_SMI, SMIs from the in-kernel APICs,
        // RSM, IA32_SMBASE, SMM in KVM_GET/SET_VCPU_EVENTS (run/smm.rs).
        | abi::KVM_CAP_X86_SMM
        // KVM_SET_BOOT_CPU_ID (vm.rs).
        | abi::KVM_CAP_SET_BOOT_CPU_ID
        // The in-kernel PIT (irq/pit_device.rs): KVM_CREATE_PIT and
        // KVM_CREATE_PIT2, KVM_GET/SET_PIT2, KVM_REINJECT_CONTROL.
        | abi::KVM_CAP_PIT
        | abi::KVM_CAP_PIT2
        // Hyper-V's interface (hyperv/): its OS identity and hypercall
        // MSRs, the reference counter and TSC page, and
        // KVM_GET_SUPPORTED_HV_CPUID on this fd and on vCPU fds.
        | abi::KVM_CAP_HYPERV
        | abi::KVM_CAP_HYPERV_TIME
        | abi::KVM_CAP_HYPERV_VP_INDEX
        // Hyper-V's IPI hypercalls (hyperv/ipi.rs), with an in-kernel APIC.
        | abi::KVM_CAP_HYPERV_SEND_IPI
        // ... and its TLB-flush hypercalls (hyperv/tlb.rs).
        | abi::KVM_CAP_HYPERV_TLBFLUSH
        | abi::KVM_CAP_HYPERV_CPUID
        | abi::KVM_CAP_SYS_HYPERV_CPUID
        | abi::KVM_CAP_PIT_STATE2
        | abi::KVM_CAP_REINJECT_CONTROL
        // Eventfds (eventfd/): irqfds with resampling, ioeventfds of any
        // length including 0.
        | abi::KVM_CAP_IRQFD
        | abi::KVM_CAP_IRQFD_RESAMPLE
        | abi::KVM_CAP_IOEVENTFD
        | abi::KVM_CAP_IOEVENTFD_NO_LENGTH
        | abi::KVM_CAP_IOEVENTFD_ANY_LENGTH => 1,
        // Dirty logging (dirty/): KVM_GET_DIRTY_LOG needs no capability;
        // manual protection and KVM_CLEAR_DIRTY_LOG do. No dirty ring.
        abi::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 => crate::dirty::MANUAL_CAPS as isize,
        // KVM_SET_GSI_ROUTING's table limit, as KVM reports it whatever the VM.
        abi::KVM_CAP_IRQ_ROUTING => abi::MAX_IRQ_ROUTES,
        // KVM_GET/SET_XCRS: XCR0 exists where the host uses XSAVE (as KVM).
        abi::KVM_CAP_XCRS => isize::from(fpu::host_has_xsave()),
        // KVM_SET_GUEST_DEBUG (x86/guest_debug.rs), and the flags it takes:
        // all of KVM's but hardware breakpoints.
        abi::KVM_CAP_SET_GUEST_DEBUG => 1,
        abi::KVM_CAP_SET_GUEST_DEBUG2 => guest_debug::SUPPORTED as isize,
        // KVM_GET_XSAVE2's size: KVM's XSAVE layout of the components a
        // guest can have (x87 and SSE), never less than `struct kvm_xsave`.
        abi::KVM_CAP_XSAVE2 => xsave::KVM_XSAVE_SIZE as isize,
        // Coalesced MMIO: the ring's page in the vCPU mapping (coalesced/);
        // coalesced port I/O too.
        abi::KVM_CAP_COALESCED_MMIO => abi::KVM_COALESCED_MMIO_PAGE_OFFSET as isize,
        abi::KVM_CAP_COALESCED_PIO => 1,
        // KVM_GET/SET_CLOCK's flags (vm.rs): the kvmclock is one for all
        // vCPUs and comes with the host's TSC and wall clock.
        abi::KVM_CAP_ADJUST_CLOCK => {
            (abi::KVM_CLOCK_TSC_STABLE | abi::KVM_CLOCK_REALTIME | abi::KVM_CLOCK_HOST_TSC) as isize
        }
        // KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2): the quirks a VMM may
        // turn off (vm.rs); the first version takes any bits.
        abi::KVM_CAP_DISABLE_QUIRKS => 1,
        abi::KVM_CAP_DISABLE_QUIRKS2 => crate::vm::QUIRKS as isize,
        // KVM_PRE_FAULT_MEMORY on vCPU fds (second-level paging only).
        abi::KVM_CAP_PRE_FAULT_MEMORY => 1,
        // KVM_CREATE_GUEST_MEMFD on VM fds and guest_memfd slots (gmem/),
        // with no creation flags: the files cannot be mapped.
        abi::KVM_CAP_GUEST_MEMFD => 1,
        abi::KVM_CAP_GUEST_MEMFD_FLAGS => crate::gmem::rules::SUPPORTED_FLAGS as isize,
        // The VM types KVM_CREATE_VM takes, one bit each: the default only.
        abi::KVM_CAP_VM_TYPES => 1 << abi::KVM_X86_DEFAULT_VM,
        // The register sets `kvm_run.s.regs` carries (run/sync.rs).
        abi::KVM_CAP_SYNC_REGS => abi::KVM_SYNC_X86_VALID_FIELDS as isize,
        // KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)'s flags (irq/chip.rs).
        abi::KVM_CAP_X2APIC_API => crate::irq::chip::ApicApi::FLAGS as isize,
        abi::KVM_CAP_NR_VCPUS => (cpu::num_online() as usize).min(MAX_VCPUS) as isize,
        abi::KVM_CAP_MAX_VCPUS => MAX_VCPUS as isize,
        abi::KVM_CAP_MAX_VCPU_ID => MAX_VCPU_IDS as isize,
        abi::KVM_CAP_NR_MEMSLOTS => NR_MEMSLOTS as isize,
        // Two address spaces: outside SMM and in it (memslot.rs `Space`).
        abi::KVM_CAP_MULTI_ADDRESS_SPACE => crate::memslot::NR_ADDRESS_SPACES as isize,
        _ => 0,
    }
}

impl System {
    fn create_vm(&self, vm_type: usize) -> Result<isize> {
        // Only the default VM type (`KVM_CAP_VM_TYPES` says so).
        if vm_type != abi::KVM_X86_DEFAULT_VM as usize {
            return Err(EINVAL);
        }
        let vm = Vm::new(self.shared.clone())?;
        let named = vm.clone();
        let fd = new_anon_fd_then(c"rkvm-vm", &VM_FOPS, vm, |fd| named.add_debugfs(fd))?;
        Ok(fd as isize)
    }

    /// `KVM_GET_SUPPORTED_CPUID`: like KVM, at least one entry must be
    /// offered, more than 256 are clamped to 256, and too few is `E2BIG`
    /// with nothing written back.
    fn get_supported_cpuid(arg: usize) -> Result<isize> {
        let mut header: kvm_cpuid2 = user::read(arg)?;
        if header.nent < 1 {
            return Err(E2BIG);
        }
        let room = header.nent.min(abi::MAX_CPUID_ENTRIES) as usize;
        let mut table = KVec::with_capacity(room, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..room {
            table.push(kvm_cpuid_entry2::default(), GFP_KERNEL_ACCOUNT)?;
        }
        let n = cpuid::supported(cpu::cpuid_tuple, fpu::offered_xcr0(), &mut table).ok_or(E2BIG)?;
        user::write_array(user::after::<kvm_cpuid2>(arg)?, &table[..n])?;
        header.nent = n as u32;
        user::write(arg, &header)?;
        Ok(0)
    }

    /// `KVM_GET_SUPPORTED_HV_CPUID`, on this fd and on vCPU fds: the ten
    /// Hyper-V leaves (hyperv/); fewer entries than that is `E2BIG`, with
    /// nothing written; more are set to ten, as KVM's `kvm_get_hv_cpuid`.
    /// `apic`: the device, or a vCPU with an in-kernel APIC.
    pub(crate) fn get_supported_hv_cpuid(arg: usize, apic: bool) -> Result<isize> {
        let mut header: kvm_cpuid2 = user::read(arg)?;
        if (header.nent as usize) < hyperv::LEAF_COUNT {
            return Err(E2BIG);
        }
        let mut table = [kvm_cpuid_entry2::default(); hyperv::LEAF_COUNT];
        let n = hyperv::supported(cpu::smt_possible(), MAX_VCPUS as u32, apic, &mut table)
            .ok_or(E2BIG)?;
        user::write_array(user::after::<kvm_cpuid2>(arg)?, &table[..n])?;
        header.nent = n as u32;
        user::write(arg, &header)?;
        Ok(0)
    }

    /// `KVM_GET_MSR_INDEX_LIST`: the count is always written back; too small
    /// a buffer is then `E2BIG`.
    fn get_msr_index_list(arg: usize, msrs: &[u32]) -> Result<isize> {
        let mut list: kvm_msr_list = user::read(arg)?;
        let room = list.nmsrs as usize;
        list.nmsrs = msrs.len() as u32;
        user::write(arg, &list)?;
        if room < msrs.len() {
            return Err(E2BIG);
        }
        user::write_array(user::after::<kvm_msr_list>(arg)?, msrs)?;
        Ok(0)
    }

    /// `KVM_GET_MSRS` on the device fd: what rkvm offers in the feature
    /// MSRs (`msr::FEATURES`), entry by entry; an MSR of the index list
    /// that is no feature MSR reads 0, as KVM answers a host read of an
    /// MSR it advertises but cannot read there, and any other MSR ends the
    /// batch. Returns the number read. `nmsrs` ≥ 256 is `E2BIG`, as KVM.
    fn get_feature_msrs(arg: usize) -> Result<isize> {
        let (entries_addr, mut entries) = user::read_msrs(arg)?;
        let mut done = 0;
        for e in entries.iter_mut() {
            let advertised = || msr::SUPPORTED.contains(&e.index).then_some(0);
            let Some(value) = msr::feature_value(e.index).or_else(advertised) else {
                break;
            };
            e.data = value;
            done += 1;
        }
        user::write_array(entries_addr, &entries)?;
        Ok(done)
    }
}

impl FileObject for System {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::KVM_GET_API_VERSION if arg == 0 => Ok(abi::KVM_API_VERSION as isize),
            abi::KVM_CREATE_VM => this.create_vm(arg),
            abi::KVM_CHECK_EXTENSION => Ok(check_extension(arg)),
            abi::KVM_GET_VCPU_MMAP_SIZE if arg == 0 => {
                Ok((VCPU_MMAP_PAGES * kernel::page::PAGE_SIZE) as isize)
            }
            abi::KVM_GET_SUPPORTED_CPUID => Self::get_supported_cpuid(arg),
            abi::KVM_GET_SUPPORTED_HV_CPUID => Self::get_supported_hv_cpuid(arg, true),
            abi::KVM_GET_MSR_INDEX_LIST => Self::get_msr_index_list(arg, msr::SUPPORTED),
            abi::KVM_GET_MSR_FEATURE_INDEX_LIST => Self::get_msr_index_list(arg, msr::FEATURES),
            abi::KVM_GET_MSRS => Self::get_feature_msrs(arg),
            // KVM answers an unknown system ioctl (or a known one with a bad argument) with
            // EINVAL on x86, not ENOTTY (`kvm_arch_dev_ioctl`).
            _ => Err(EINVAL),
        }
    }
}
