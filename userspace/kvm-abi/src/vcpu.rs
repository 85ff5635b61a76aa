//! The vCPU fd.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fam::{CpuidEntries, MsrEntries};
use crate::ioctls::{
    KVM_ENABLE_CAP, KVM_GET_CPUID2, KVM_GET_DEBUGREGS, KVM_GET_DEVICE_ATTR, KVM_GET_FPU,
    KVM_GET_LAPIC, KVM_GET_MP_STATE, KVM_GET_MSRS, KVM_GET_REGS, KVM_GET_SREGS,
    KVM_GET_SUPPORTED_HV_CPUID, KVM_GET_TSC_KHZ, KVM_GET_XCRS, KVM_GET_XSAVE, KVM_GET_XSAVE2,
    KVM_HAS_DEVICE_ATTR, KVM_INTERRUPT, KVM_NMI, KVM_RUN, KVM_SET_CPUID2, KVM_SET_DEBUGREGS,
    KVM_SET_DEVICE_ATTR, KVM_SET_FPU, KVM_SET_LAPIC, KVM_SET_MP_STATE, KVM_SET_MSRS, KVM_SET_REGS,
    KVM_SET_SREGS, KVM_SET_VAPIC_ADDR, KVM_SET_XCRS, KVM_SET_XSAVE, KVM_SMI,
};
use crate::ioctls::{KVM_PRE_FAULT_MEMORY, KVM_SET_GUEST_DEBUG, KVM_SET_TSC_KHZ, Request};
use crate::mem::{RunMapping, VcpuMapping};
use crate::raw::{ioctl_mut, ioctl_ref, ioctl_val};
use crate::sys::{
    kvm_debugregs, kvm_device_attr, kvm_enable_cap, kvm_fpu, kvm_interrupt, kvm_mp_state, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs,
};
use crate::sys::{kvm_guest_debug, kvm_guest_debug_arch, kvm_pre_fault_memory};
use crate::vm::MemoryKeepAlive;

/// The size of `struct kvm_xsave`.
pub const XSAVE_SIZE: usize = 4096;

/// A vCPU. It keeps working after its VM's fd is closed.
#[derive(Debug)]
pub struct Vcpu {
    fd: OwnedFd,
    id: u64,
    /// Memory of the VM's slots, kept mapped while this vCPU (and with it
    /// the VM) lives.
    memory: MemoryKeepAlive,
}

impl Vcpu {
    pub(crate) fn new(fd: OwnedFd, id: u64, memory: MemoryKeepAlive) -> Self {
        Self { fd, id, memory }
    }

    /// The id it was created with.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Maps `len` bytes (KVM_GET_VCPU_MMAP_SIZE) at offset 0: `kvm_run` and
    /// the pages after it.
    pub fn map_run(&self, len: usize) -> Result<RunMapping> {
        RunMapping::new(self.fd.as_fd(), len, Arc::clone(&self.memory))
    }

    /// Maps `len` bytes at byte `offset` of the vCPU fd.
    pub fn map(&self, offset: u64, len: usize) -> Result<VcpuMapping> {
        VcpuMapping::new(self.fd.as_fd(), offset, len, Arc::clone(&self.memory))
    }

    /// KVM_RUN: runs the guest until it exits to userspace. Why it exited is
    /// in the `kvm_run` page ([`RunMapping::exit`]); the error is the errno,
    /// e.g. `EINTR` when a signal or `immediate_exit` stopped it.
    pub fn run(&self) -> Result<()> {
        // SAFETY: KVM_RUN takes no argument. Besides its own pages, the
        // kernel writes only guest memory (GuestMemory hands out no
        // references and the VM keeps it mapped) and the kvm_run mapping,
        // which the accessors only touch with volatile accesses.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_RUN, 0) }
            .map(drop)
            .map_err(|e| Error::new("KVM_RUN", e))
    }

    /// KVM_INTERRUPT: queues external interrupt `irq` (the vector) for a
    /// VM without an in-kernel interrupt controller.
    pub fn interrupt(&self, irq: u32) -> Result<()> {
        let arg = kvm_interrupt { irq };
        // SAFETY: the kernel reads one kvm_interrupt.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_INTERRUPT, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_INTERRUPT", e))
    }

    /// KVM_GET_REGS.
    pub fn get_regs(&self) -> Result<kvm_regs> {
        let mut regs = kvm_regs::default();
        // SAFETY: the kernel writes one kvm_regs (plain integers).
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_REGS, &raw mut regs) }
            .map_err(|e| Error::new("KVM_GET_REGS", e))?;
        Ok(regs)
    }

    /// KVM_SET_REGS.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        // SAFETY: the kernel reads one kvm_regs.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_REGS, regs) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_REGS", e))
    }

    /// KVM_GET_SREGS.
    pub fn get_sregs(&self) -> Result<kvm_sregs> {
        let mut sregs = kvm_sregs::default();
        // SAFETY: the kernel writes one kvm_sregs (plain integers).
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_SREGS, &raw mut sregs) }
            .map_err(|e| Error::new("KVM_GET_SREGS", e))?;
        Ok(sregs)
    }

    /// KVM_SET_SREGS.
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        // SAFETY: the kernel reads one kvm_sregs.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_SREGS, sregs) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_SREGS", e))
    }

    /// KVM_GET_FPU: the x87 and SSE registers.
    pub fn get_fpu(&self) -> Result<kvm_fpu> {
        let mut fpu = kvm_fpu::default();
        // SAFETY: the kernel writes one kvm_fpu (plain integers).
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_FPU, &raw mut fpu) }
            .map_err(|e| Error::new("KVM_GET_FPU", e))?;
        Ok(fpu)
    }

    /// KVM_SET_FPU.
    pub fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()> {
        // SAFETY: the kernel reads one kvm_fpu.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_FPU, fpu) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_FPU", e))
    }

    /// KVM_GET_XSAVE: the x87, SSE and extended state in KVM's XSAVE
    /// layout (`struct kvm_xsave`, 4096 bytes).
    pub fn get_xsave(&self) -> Result<Vec<u8>> {
        self.get_xsave_with(KVM_GET_XSAVE, "KVM_GET_XSAVE", XSAVE_SIZE)
    }

    /// KVM_GET_XSAVE2: the same for an area of `size` bytes, the
    /// VM's `KVM_CAP_XSAVE2` (at least 4096).
    pub fn get_xsave2(&self, size: usize) -> Result<Vec<u8>> {
        self.get_xsave_with(KVM_GET_XSAVE2, "KVM_GET_XSAVE2", size.max(XSAVE_SIZE))
    }

    fn get_xsave_with(&self, req: Request, name: &'static str, size: usize) -> Result<Vec<u8>> {
        let mut area = vec![0u8; size];
        // SAFETY: the kernel writes at most `size` bytes: 4096 for
        // KVM_GET_XSAVE, KVM_CAP_XSAVE2's answer for KVM_GET_XSAVE2.
        unsafe { ioctl_mut(self.fd.as_fd(), req, area.as_mut_ptr()) }
            .map_err(|e| Error::new(name, e))?;
        Ok(area)
    }

    /// KVM_SET_XSAVE with a region of at least 4096 bytes.
    pub fn set_xsave(&self, region: &[u8]) -> Result<()> {
        assert!(
            region.len() >= XSAVE_SIZE,
            "a struct kvm_xsave is 4096 bytes"
        );
        // SAFETY: the kernel reads 4096 bytes, which `region` has.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_XSAVE, region.as_ptr()) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_XSAVE", e))
    }

    /// KVM_PRE_FAULT_MEMORY over `size` bytes at `gpa` (and `flags`):
    /// the result, and the range the kernel wrote back (what is left).
    pub fn pre_fault_memory(&self, gpa: u64, size: u64, flags: u64) -> (Result<()>, u64, u64) {
        let mut range = kvm_pre_fault_memory {
            gpa,
            size,
            flags,
            ..Default::default()
        };
        // SAFETY: the kernel reads and writes back one kvm_pre_fault_memory.
        let r = unsafe { ioctl_mut(self.fd.as_fd(), KVM_PRE_FAULT_MEMORY, &raw mut range) }
            .map(drop)
            .map_err(|e| Error::new("KVM_PRE_FAULT_MEMORY", e));
        (r, range.gpa, range.size)
    }

    /// KVM_GET_XCRS.
    pub fn get_xcrs(&self) -> Result<kvm_xcrs> {
        let mut xcrs = kvm_xcrs::default();
        // SAFETY: the kernel writes one kvm_xcrs (plain integers).
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_XCRS, &raw mut xcrs) }
            .map_err(|e| Error::new("KVM_GET_XCRS", e))?;
        Ok(xcrs)
    }

    /// KVM_SET_XCRS.
    pub fn set_xcrs(&self, xcrs: &kvm_xcrs) -> Result<()> {
        // SAFETY: the kernel reads one kvm_xcrs.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_XCRS, xcrs) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_XCRS", e))
    }

    /// KVM_GET_DEBUGREGS.
    pub fn get_debugregs(&self) -> Result<kvm_debugregs> {
        let mut regs = kvm_debugregs::default();
        // SAFETY: the kernel writes one kvm_debugregs (plain integers).
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_DEBUGREGS, &raw mut regs) }
            .map_err(|e| Error::new("KVM_GET_DEBUGREGS", e))?;
        Ok(regs)
    }

    /// KVM_SET_DEBUGREGS.
    pub fn set_debugregs(&self, regs: &kvm_debugregs) -> Result<()> {
        // SAFETY: the kernel reads one kvm_debugregs.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_DEBUGREGS, regs) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_DEBUGREGS", e))
    }

    /// KVM_GET_LAPIC: the local APIC's register page (1024 bytes).
    pub fn get_lapic(&self) -> Result<[u8; 1024]> {
        let mut regs = [0u8; 1024];
        // SAFETY: the kernel writes one 1024-byte kvm_lapic_state.
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_LAPIC, &raw mut regs) }
            .map_err(|e| Error::new("KVM_GET_LAPIC", e))?;
        Ok(regs)
    }

    /// KVM_NMI: an NMI for the guest.
    pub fn nmi(&self) -> Result<()> {
        // SAFETY: `_IO` request: no argument is read.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_NMI, 0) }
            .map(drop)
            .map_err(|e| Error::new("KVM_NMI", e))
    }

    /// KVM_SMI: a system management interrupt for the guest.
    pub fn smi(&self) -> Result<()> {
        // SAFETY: `_IO` request: no argument is read.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_SMI, 0) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SMI", e))
    }

    /// KVM_SET_VAPIC_ADDR: where the TPR mirror lives in guest memory (0:
    /// nowhere).
    pub fn set_vapic_addr(&self, gpa: u64) -> Result<()> {
        // SAFETY: the kernel reads one 8-byte kvm_vapic_addr.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_VAPIC_ADDR, &raw const gpa) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_VAPIC_ADDR", e))
    }

    /// KVM_SET_LAPIC.
    pub fn set_lapic(&self, regs: &[u8; 1024]) -> Result<()> {
        // SAFETY: the kernel reads one 1024-byte kvm_lapic_state.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_LAPIC, &raw const *regs) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_LAPIC", e))
    }

    /// KVM_GET_MP_STATE: the `KVM_MP_STATE_*` value.
    pub fn get_mp_state(&self) -> Result<u32> {
        let mut state = kvm_mp_state::default();
        // SAFETY: the kernel writes one kvm_mp_state.
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_MP_STATE, &raw mut state) }
            .map_err(|e| Error::new("KVM_GET_MP_STATE", e))?;
        Ok(state.mp_state)
    }

    /// KVM_SET_MP_STATE.
    pub fn set_mp_state(&self, mp_state: u32) -> Result<()> {
        let arg = kvm_mp_state { mp_state };
        // SAFETY: the kernel reads one kvm_mp_state.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_MP_STATE, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_MP_STATE", e))
    }

    /// KVM_GET_TSC_KHZ: the guest's TSC frequency in kHz.
    pub fn get_tsc_khz(&self) -> Result<u32> {
        // SAFETY: KVM_GET_TSC_KHZ takes no argument; the result is the return value.
        let r = unsafe { ioctl_val(self.fd.as_fd(), KVM_GET_TSC_KHZ, 0) }
            .map_err(|e| Error::new("KVM_GET_TSC_KHZ", e))?;
        u32::try_from(r).map_err(|_| Error::new("KVM_GET_TSC_KHZ", nix::errno::Errno::ERANGE))
    }

    /// KVM_SET_GUEST_DEBUG: `control` (`KVM_GUESTDBG_*`) and, for hardware
    /// breakpoints, DR0-DR3 and DR7 in `debugreg` (indices 0-3, 7).
    pub fn set_guest_debug(&self, control: u32, debugreg: [u64; 8]) -> Result<()> {
        let arg = kvm_guest_debug {
            control,
            pad: 0,
            arch: kvm_guest_debug_arch { debugreg },
        };
        // SAFETY: the kernel reads one kvm_guest_debug.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_GUEST_DEBUG, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_GUEST_DEBUG", e))
    }

    /// KVM_SET_TSC_KHZ: the rate the guest is told its TSC runs at (0: the
    /// host's).
    pub fn set_tsc_khz(&self, khz: u32) -> Result<()> {
        // SAFETY: KVM_SET_TSC_KHZ takes the rate as its argument, not a pointer.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_SET_TSC_KHZ, u64::from(khz)) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_TSC_KHZ", e))
    }

    /// KVM_GET_VCPU_EVENTS.
    pub fn get_vcpu_events(&self) -> Result<kvm_vcpu_events> {
        let mut events = kvm_vcpu_events::default();
        // SAFETY: the kernel writes one kvm_vcpu_events.
        unsafe {
            ioctl_mut(
                self.fd.as_fd(),
                crate::ioctls::KVM_GET_VCPU_EVENTS,
                &raw mut events,
            )
        }
        .map_err(|e| Error::new("KVM_GET_VCPU_EVENTS", e))?;
        Ok(events)
    }

    /// KVM_SET_VCPU_EVENTS.
    pub fn set_vcpu_events(&self, events: &kvm_vcpu_events) -> Result<()> {
        // SAFETY: the kernel reads one kvm_vcpu_events.
        unsafe {
            ioctl_ref(
                self.fd.as_fd(),
                crate::ioctls::KVM_SET_VCPU_EVENTS,
                std::ptr::from_ref(events),
            )
        }
        .map(drop)
        .map_err(|e| Error::new("KVM_SET_VCPU_EVENTS", e))
    }

    /// KVM_GET_STATS_FD: the vCPU's binary statistics.
    pub fn stats(&self) -> Result<crate::BinaryStats> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd.
        let fd = unsafe { ioctl_val(self.fd.as_fd(), crate::ioctls::KVM_GET_STATS_FD, 0) }
            .map_err(|e| Error::new("KVM_GET_STATS_FD (vCPU)", e))?;
        // SAFETY: on success it is a new fd nothing else owns.
        crate::BinaryStats::new(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }

    /// KVM_ENABLE_CAP on the vCPU: enables capability `cap` with `args`
    /// and `flags` (which KVM requires to be 0).
    pub fn enable_cap(&self, cap: u32, args: [u64; 4], flags: u32) -> Result<i32> {
        let arg = kvm_enable_cap {
            cap,
            flags,
            args,
            ..Default::default()
        };
        // SAFETY: the kernel reads one kvm_enable_cap.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_ENABLE_CAP, &raw const arg) }
            .map_err(|e| Error::new("KVM_ENABLE_CAP", e))
    }

    /// KVM_HAS_DEVICE_ATTR on the vCPU: whether attribute `attr` of
    /// `group` exists (`Ok`), else the errno (KVM: `ENXIO`).
    pub fn has_device_attr(&self, group: u32, attr: u64) -> Result<()> {
        let arg = kvm_device_attr {
            group,
            attr,
            ..Default::default()
        };
        // SAFETY: the kernel reads one kvm_device_attr.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_HAS_DEVICE_ATTR, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_HAS_DEVICE_ATTR", e))
    }

    /// KVM_GET_DEVICE_ATTR on the vCPU for a 64-bit attribute.
    pub fn get_device_attr_u64(&self, group: u32, attr: u64) -> Result<u64> {
        let mut value = 0u64;
        let arg = kvm_device_attr {
            group,
            attr,
            addr: (&raw mut value) as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads one kvm_device_attr and writes at most
        // the u64 at `addr`, which lives until the call returns.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_GET_DEVICE_ATTR, &raw const arg) }
            .map_err(|e| Error::new("KVM_GET_DEVICE_ATTR", e))?;
        Ok(value)
    }

    /// KVM_SET_DEVICE_ATTR on the vCPU for a 64-bit attribute.
    pub fn set_device_attr_u64(&self, group: u32, attr: u64, value: u64) -> Result<()> {
        let arg = kvm_device_attr {
            group,
            attr,
            addr: (&raw const value) as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads one kvm_device_attr and the u64 at
        // `addr`, which lives until the call returns.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_DEVICE_ATTR, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_DEVICE_ATTR", e))
    }

    /// KVM_SET_CPUID2 with the first `nent` entries of `cpuid`.
    pub fn set_cpuid2(&self, cpuid: &CpuidEntries) -> Result<()> {
        // SAFETY: the kernel reads the header and at most `nent` entries,
        // which are inside the buffer (CpuidEntries invariant).
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_CPUID2, cpuid.as_ptr()) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_CPUID2", e))
    }

    /// KVM_GET_CPUID2 into `cpuid`, whose `nent` is the room offered.
    pub fn get_cpuid2(&self, cpuid: &mut CpuidEntries) -> Result<()> {
        // SAFETY: the kernel writes `nent` and at most the offered `nent`
        // entries, which fit in the buffer.
        let r = unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_CPUID2, cpuid.as_mut_ptr()) };
        cpuid.clamp();
        r.map(drop).map_err(|e| Error::new("KVM_GET_CPUID2", e))
    }

    /// KVM_GET_SUPPORTED_HV_CPUID on the vCPU into `cpuid`, whose `nent` is
    /// the room offered (`KVM_CAP_HYPERV_CPUID`).
    pub fn get_supported_hv_cpuid(&self, cpuid: &mut CpuidEntries) -> Result<()> {
        // SAFETY: as KVM_GET_CPUID2: the kernel writes `nent` and at most the
        // offered `nent` entries, which fit in the buffer.
        let r = unsafe {
            ioctl_mut(
                self.fd.as_fd(),
                KVM_GET_SUPPORTED_HV_CPUID,
                cpuid.as_mut_ptr(),
            )
        };
        cpuid.clamp();
        r.map(drop)
            .map_err(|e| Error::new("KVM_GET_SUPPORTED_HV_CPUID", e))
    }

    /// KVM_GET_MSRS: reads the first `nmsrs` entries' MSRs into their data
    /// fields; returns how many were read (it stops at the first failure).
    pub fn get_msrs(&self, msrs: &mut MsrEntries) -> Result<usize> {
        // SAFETY: the kernel reads `nmsrs` entries and writes their data
        // back, all inside the buffer (MsrEntries invariant).
        let r = unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_MSRS, msrs.as_mut_ptr()) };
        msrs.clamp();
        let n = r.map_err(|e| Error::new("KVM_GET_MSRS", e))?;
        usize::try_from(n).map_err(|_| Error::new("KVM_GET_MSRS", nix::errno::Errno::ERANGE))
    }

    /// KVM_SET_MSRS: writes the first `nmsrs` entries; returns how many were
    /// written (it stops at the first failure).
    pub fn set_msrs(&self, msrs: &MsrEntries) -> Result<usize> {
        // SAFETY: the kernel reads `nmsrs` entries, inside the buffer.
        let n = unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_MSRS, msrs.as_ptr()) }
            .map_err(|e| Error::new("KVM_SET_MSRS", e))?;
        usize::try_from(n).map_err(|_| Error::new("KVM_SET_MSRS", nix::errno::Errno::ERANGE))
    }
}

impl AsFd for Vcpu {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
