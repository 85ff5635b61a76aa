//! The device fd: `/dev/kvm` or `/dev/rkvm`.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::fam::{CpuidEntries, MsrEntries, MsrIndexList};
use crate::ioctls::{
    KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_GET_API_VERSION, KVM_GET_EMULATED_CPUID,
    KVM_GET_MSR_FEATURE_INDEX_LIST, KVM_GET_MSR_INDEX_LIST, KVM_GET_MSRS, KVM_GET_SUPPORTED_CPUID,
    KVM_GET_SUPPORTED_HV_CPUID, KVM_GET_VCPU_MMAP_SIZE,
};
use crate::raw::{ioctl_mut, ioctl_val};
use crate::vm::Vm;

/// KVM's device node.
pub const DEFAULT_DEVICE: &str = "/dev/kvm";

/// An open KVM-compatible device.
#[derive(Debug)]
pub struct System {
    fd: OwnedFd,
}

impl System {
    /// Opens the device at `path` read-write, close-on-exec.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path.as_ref())
            .map_err(|e| {
                Error::new(
                    "open KVM device",
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                )
            })?;
        Ok(Self {
            fd: OwnedFd::from(file),
        })
    }

    /// Opens [`DEFAULT_DEVICE`].
    pub fn open_default() -> Result<Self> {
        Self::open(DEFAULT_DEVICE)
    }

    /// KVM_GET_API_VERSION.
    pub fn api_version(&self) -> Result<i32> {
        // SAFETY: KVM_GET_API_VERSION takes no pointer.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_GET_API_VERSION, 0) }
            .map_err(|e| Error::new("KVM_GET_API_VERSION", e))
    }

    /// KVM_CHECK_EXTENSION: 0 if `cap` is absent, else a cap-specific value.
    pub fn check_extension(&self, cap: u32) -> Result<i32> {
        // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_CHECK_EXTENSION, u64::from(cap)) }
            .map_err(|e| Error::new("KVM_CHECK_EXTENSION", e))
    }

    /// KVM_GET_VCPU_MMAP_SIZE, in bytes.
    pub fn vcpu_mmap_size(&self) -> Result<usize> {
        const OP: &str = "KVM_GET_VCPU_MMAP_SIZE";
        // SAFETY: KVM_GET_VCPU_MMAP_SIZE takes no pointer.
        let n = unsafe { ioctl_val(self.fd.as_fd(), KVM_GET_VCPU_MMAP_SIZE, 0) }
            .map_err(|e| Error::new(OP, e))?;
        usize::try_from(n).map_err(|_| Error::new(OP, Errno::ERANGE))
    }

    /// KVM_CREATE_VM with machine type `ty` (0 for a default x86 VM).
    pub fn create_vm(&self, ty: u64) -> Result<Vm> {
        // SAFETY: KVM_CREATE_VM takes the machine type by value.
        let fd = unsafe { ioctl_val(self.fd.as_fd(), KVM_CREATE_VM, ty) }
            .map_err(|e| Error::new("KVM_CREATE_VM", e))?;
        // SAFETY: on success KVM_CREATE_VM returns a new fd that nothing else owns.
        Ok(Vm::new(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// KVM_GET_SUPPORTED_CPUID into `cpuid`, whose `nent` is the room offered.
    pub fn get_supported_cpuid(&self, cpuid: &mut CpuidEntries) -> Result<()> {
        self.get_cpuid(KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", cpuid)
    }

    /// KVM_GET_SUPPORTED_HV_CPUID into `cpuid`, whose `nent` is the room
    /// offered: the Hyper-V leaves (`KVM_CAP_SYS_HYPERV_CPUID`).
    pub fn get_supported_hv_cpuid(&self, cpuid: &mut CpuidEntries) -> Result<()> {
        self.get_cpuid(
            KVM_GET_SUPPORTED_HV_CPUID,
            "KVM_GET_SUPPORTED_HV_CPUID",
            cpuid,
        )
    }

    /// KVM_GET_EMULATED_CPUID into `cpuid`, whose `nent` is the room offered.
    pub fn get_emulated_cpuid(&self, cpuid: &mut CpuidEntries) -> Result<()> {
        self.get_cpuid(KVM_GET_EMULATED_CPUID, "KVM_GET_EMULATED_CPUID", cpuid)
    }

    fn get_cpuid(&self, req: u32, op: &'static str, cpuid: &mut CpuidEntries) -> Result<()> {
        // SAFETY: the kernel reads the header and writes at most `nent`
        // entries, which fit in the buffer (CpuidEntries invariant), plus
        // `nent`; the entries are plain integers.
        let r = unsafe { ioctl_mut(self.fd.as_fd(), req, cpuid.as_mut_ptr()) };
        cpuid.clamp();
        r.map(drop).map_err(|e| Error::new(op, e))
    }

    /// KVM_GET_MSR_INDEX_LIST into `list`; on `E2BIG` its `nmsrs` is the
    /// number needed.
    pub fn get_msr_index_list(&self, list: &mut MsrIndexList) -> Result<()> {
        list.offer_full_capacity();
        // SAFETY: the kernel reads nmsrs (just set to the capacity), writes
        // it back, and writes at most that many u32 indices, which fit.
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_MSR_INDEX_LIST, list.as_mut_ptr()) }
            .map(drop)
            .map_err(|e| Error::new("KVM_GET_MSR_INDEX_LIST", e))
    }

    /// KVM_GET_MSR_FEATURE_INDEX_LIST into `list`; on `E2BIG` its `nmsrs`
    /// is the number needed.
    pub fn get_msr_feature_index_list(&self, list: &mut MsrIndexList) -> Result<()> {
        list.offer_full_capacity();
        // SAFETY: as for KVM_GET_MSR_INDEX_LIST.
        unsafe {
            ioctl_mut(
                self.fd.as_fd(),
                KVM_GET_MSR_FEATURE_INDEX_LIST,
                list.as_mut_ptr(),
            )
        }
        .map(drop)
        .map_err(|e| Error::new("KVM_GET_MSR_FEATURE_INDEX_LIST", e))
    }

    /// KVM_GET_MSRS on the device fd: what the hypervisor offers in the
    /// feature MSRs named; returns how many were read (it stops at the
    /// first that is not one).
    pub fn get_feature_msrs(&self, msrs: &mut MsrEntries) -> Result<usize> {
        // SAFETY: the kernel reads `nmsrs` entries and writes their data
        // back, all inside the buffer (MsrEntries invariant).
        let r = unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_MSRS, msrs.as_mut_ptr()) };
        msrs.clamp();
        let n = r.map_err(|e| Error::new("KVM_GET_MSRS", e))?;
        usize::try_from(n).map_err(|_| Error::new("KVM_GET_MSRS", Errno::ERANGE))
    }
}

impl AsFd for System {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<System> for OwnedFd {
    fn from(s: System) -> Self {
        s.fd
    }
}
