// SPDX-License-Identifier: GPL-2.0

//! A virtual machine: its memory slots, its vCPUs, and the VM fd.
//!
//! # Lifetimes
//!
//! A VM is an `Arc<Vm>` held by its VM fd and by every vCPU fd, so the fds
//! can be closed in any order; the VM (and with it every vCPU) is freed when
//! the last one closes. The VM owns its vCPUs; a vCPU holds no reference to
//! its VM (its fd does), so there is no cycle. Every open fd also pins the
//! module, so `rmmod` is refused while any VM exists.
//!
//! # Locking
//!
//! `Vm::inner` (a mutex) guards the slots, the vCPU list and the VM-wide
//! addresses. Lock order: `Vm::inner` before any `Vcpu::state`; never the
//! other way round. No spinlocks. Arguments are copied from user memory
//! before a lock is taken, and results copied back after it is dropped,
//! except where KVM's check order needs the copy under the lock (a mutex
//! may sleep; rkvm's page-fault path takes none of these locks).

use crate::abi::{self, kvm_userspace_memory_region, kvm_userspace_memory_region2};
use crate::dev::{check_extension, Shared};
use crate::memslot::{Request, SlotError, SlotTable};
use crate::stats::{Kind, Live};
use crate::sys::file::{new_anon_fd, FileObject, FileOps};
use crate::sys::mem::{user_range_ok, OwnerMm};
use crate::user;
use crate::vcpu::{Vcpu, VcpuFd, MAX_VCPUS, MAX_VCPU_IDS, VCPU_FOPS};
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex};

/// The file operations of VM fds.
pub(crate) static VM_FOPS: FileOps<Vm> = FileOps::new();

/// The state behind `Vm::inner`.
struct VmInner {
    slots: SlotTable,
    /// vCPU ids in use, one bit per id below [`MAX_VCPU_IDS`]. An id stays
    /// used for the VM's lifetime, as in KVM.
    vcpu_ids: [u64; MAX_VCPU_IDS / 64],
    vcpus: KVec<Arc<Vcpu>>,
    /// `KVM_SET_TSS_ADDR`: three pages the VMX backend may use for real mode.
    tss_addr: Option<u64>,
    /// `KVM_SET_IDENTITY_MAP_ADDR`: one page for VMX's real-mode page table.
    identity_map_addr: Option<u64>,
}

/// A virtual machine.
#[pin_data]
pub(crate) struct Vm {
    pub(crate) shared: Arc<Shared>,
    /// The address space of the process that created the VM. Guest memory
    /// is that process's memory, so, as in KVM, only it may use the VM (a
    /// forked child gets `EIO`).
    mm: OwnerMm,
    #[pin]
    inner: Mutex<VmInner>,
    _live: Live,
}

impl Vm {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Arc<Self>> {
        // A kernel thread has no address space to back guest memory.
        let mm = OwnerMm::of_current().ok_or(EINVAL)?;
        let live = Live::new(&shared.stats, Kind::Vm);
        Arc::pin_init(
            pin_init!(Vm {
                shared,
                mm,
                inner <- new_mutex!(
                    VmInner {
                        slots: SlotTable::new(),
                        vcpu_ids: [0; MAX_VCPU_IDS / 64],
                        vcpus: KVec::new(),
                        tss_addr: None,
                        identity_map_addr: None,
                    },
                    "rkvm::Vm::inner"
                ),
                _live: live,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Refuses callers other than the process that created the VM, with
    /// `EIO` as KVM does, for VM and vCPU ioctls alike.
    pub(crate) fn check_caller(&self) -> Result {
        if self.mm.is_current() {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// `KVM_SET_USER_MEMORY_REGION` and `...2`, both as a `region2`.
    fn set_memory_region(&self, r: &kvm_userspace_memory_region2) -> Result<isize> {
        let req = Request {
            slot: r.slot,
            flags: r.flags,
            gpa: r.guest_phys_addr,
            size: r.memory_size,
            uaddr: r.userspace_addr,
        };
        let phys_bits = self.shared.backend.host_limits().phys_bits;
        let to_errno = |e| match e {
            SlotError::Invalid => EINVAL,
            SlotError::Overlap => EEXIST,
            SlotError::NoMemory => ENOMEM,
        };
        let mut inner = self.inner.lock();
        let change = inner
            .slots
            .plan(&req, user_range_ok, phys_bits)
            .map_err(to_errno)?;
        inner.slots.commit(change).map_err(to_errno)?;
        Ok(0)
    }

    /// `KVM_CREATE_VCPU`. Everything that can fail is done before the vCPU
    /// is entered in the VM, except creating the fd, which is undone if it
    /// fails: a vCPU is in the VM exactly when userspace has its fd.
    fn create_vcpu(this: ArcBorrow<'_, Self>, id: usize) -> Result<isize> {
        if id >= MAX_VCPU_IDS {
            return Err(EINVAL);
        }
        let (word, bit) = (id / 64, 1u64 << (id % 64));
        let vcpu = Vcpu::new(id as u32, &this.shared)?;
        let fd_object = VcpuFd::new(this.into(), vcpu.clone())?;
        {
            let mut inner = this.inner.lock();
            if inner.vcpus.len() >= MAX_VCPUS {
                return Err(EINVAL);
            }
            if inner.vcpu_ids[word] & bit != 0 {
                return Err(EEXIST);
            }
            inner.vcpus.push(vcpu.clone(), GFP_KERNEL_ACCOUNT)?;
            inner.vcpu_ids[word] |= bit;
        }
        new_anon_fd(c"rkvm-vcpu", &VCPU_FOPS, fd_object)
            .map(|fd| fd as isize)
            .inspect_err(|_| {
                // No fd: the vCPU never existed for userspace. Take it back out.
                let mut inner = this.inner.lock();
                inner.vcpus.retain(|v| !Arc::ptr_eq(v, &vcpu));
                inner.vcpu_ids[word] &= !bit;
            })
    }

    fn set_tss_addr(&self, addr: usize) -> Result<isize> {
        // The TSS takes three pages below 4 GiB: KVM refuses an address above
        // 0xffff_d000 (`kvm_vm_ioctl_set_tss_addr`).
        if addr > (u32::MAX as usize).wrapping_sub(3 * kernel::page::PAGE_SIZE - 1) {
            return Err(EINVAL);
        }
        self.inner.lock().tss_addr = Some(addr as u64);
        Ok(0)
    }

    fn set_identity_map_addr(&self, arg: usize) -> Result<isize> {
        // Like KVM: only before the first vCPU exists, checked before the argument is read,
        // all under the lock (the copy may sleep, which a mutex allows).
        let mut inner = self.inner.lock();
        if !inner.vcpus.is_empty() {
            return Err(EINVAL);
        }
        inner.identity_map_addr = Some(user::read(arg)?);
        Ok(0)
    }
}

impl FileObject for Vm {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.check_caller()?;
        match cmd {
            abi::KVM_CHECK_EXTENSION => Ok(check_extension(arg)),
            abi::KVM_CREATE_VCPU => Vm::create_vcpu(this, arg),
            abi::KVM_SET_USER_MEMORY_REGION => {
                let r: kvm_userspace_memory_region = user::read(arg)?;
                this.set_memory_region(&kvm_userspace_memory_region2 {
                    slot: r.slot,
                    flags: r.flags,
                    guest_phys_addr: r.guest_phys_addr,
                    memory_size: r.memory_size,
                    userspace_addr: r.userspace_addr,
                    ..Default::default()
                })
            }
            abi::KVM_SET_USER_MEMORY_REGION2 => {
                let r: kvm_userspace_memory_region2 = user::read(arg)?;
                this.set_memory_region(&r)
            }
            abi::KVM_SET_TSS_ADDR => this.set_tss_addr(arg),
            abi::KVM_SET_IDENTITY_MAP_ADDR => this.set_identity_map_addr(arg),
            // KVM answers unknown VM ioctls with ENOTTY (`kvm_arch_vm_ioctl`).
            _ => Err(ENOTTY),
        }
    }
}
