//! The VM fd.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::ioctls::{
    KVM_CHECK_EXTENSION, KVM_CLEAR_DIRTY_LOG, KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2, KVM_CREATE_VCPU,
    KVM_ENABLE_CAP, KVM_GET_CLOCK, KVM_GET_DIRTY_LOG, KVM_GET_IRQCHIP, KVM_GET_PIT2,
    KVM_GET_TSC_KHZ, KVM_IOEVENTFD, KVM_IRQ_LINE, KVM_IRQ_LINE_STATUS, KVM_IRQFD,
    KVM_REGISTER_COALESCED_MMIO, KVM_REINJECT_CONTROL, KVM_SET_BOOT_CPU_ID, KVM_SET_CLOCK,
    KVM_SET_GSI_ROUTING, KVM_SET_IDENTITY_MAP_ADDR, KVM_SET_IRQCHIP, KVM_SET_NR_MMU_PAGES,
    KVM_SET_PIT2, KVM_SET_TSC_KHZ, KVM_SET_TSS_ADDR, KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2, KVM_SIGNAL_MSI, KVM_UNREGISTER_COALESCED_MMIO,
    KVM_X86_SET_MSR_FILTER,
};
use crate::mem::GuestMemory;
use crate::raw::{ioctl_mut, ioctl_ref, ioctl_val};
use crate::sys::{kvm_enable_cap, kvm_userspace_memory_region, kvm_userspace_memory_region2};
use crate::vcpu::Vcpu;

/// Guest memory that memory slots have pointed at. KVM may write guest
/// memory through a slot as long as the VM exists, i.e. until its VM fd and
/// all vCPU fds are closed, so the VM and each vCPU hold this list.
pub(crate) type MemoryKeepAlive = Arc<Mutex<Vec<Arc<GuestMemory>>>>;

/// Where a memory slot's `userspace_addr` points.
#[derive(Clone, Copy, Debug)]
pub enum UserAddr<'a> {
    /// `offset` bytes into `mem`. The slot's `memory_size` must fit inside
    /// `mem`; the VM keeps `mem` mapped for as long as it lives.
    Memory {
        /// The backing mapping.
        mem: &'a Arc<GuestMemory>,
        /// Byte offset into it (need not be aligned: KVM must refuse that).
        offset: u64,
    },
    /// An address that can never be user memory of this process: at or above
    /// `0x8000_0000_0000_0000`, the kernel half on 4- and 5-level paging.
    Kernel(u64),
    /// Address 0, for deleting a slot (`memory_size` 0).
    None,
}

/// The arguments of KVM_SET_USER_MEMORY_REGION(2).
#[derive(Clone, Copy, Debug)]
pub struct MemoryRegion<'a> {
    /// Slot id in bits 0-15, address-space id in bits 16-31.
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Guest-physical start.
    pub guest_phys_addr: u64,
    /// Size in bytes; 0 deletes the slot.
    pub memory_size: u64,
    /// The user memory behind the slot.
    pub userspace: UserAddr<'a>,
    /// guest_memfd fd number (KVM_SET_USER_MEMORY_REGION2 only).
    pub guest_memfd: u32,
    /// Offset into the guest_memfd (KVM_SET_USER_MEMORY_REGION2 only).
    pub guest_memfd_offset: u64,
}

impl<'a> MemoryRegion<'a> {
    /// A slot of `mem.len()` bytes at `gpa` backed by all of `mem`.
    pub fn new(slot: u32, gpa: u64, mem: &'a Arc<GuestMemory>) -> Self {
        Self {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: mem.len() as u64,
            userspace: UserAddr::Memory { mem, offset: 0 },
            guest_memfd: 0,
            guest_memfd_offset: 0,
        }
    }

    /// The request that deletes `slot`.
    pub fn delete(slot: u32) -> Self {
        Self {
            slot,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: 0,
            userspace: UserAddr::None,
            guest_memfd: 0,
            guest_memfd_offset: 0,
        }
    }

    /// Checks that KVM can only reach memory of this process through the
    /// slot inside `mem`, and returns the `userspace_addr` value.
    fn user_address(&self, op: &'static str) -> Result<u64> {
        match self.userspace {
            UserAddr::Memory { mem, offset } => {
                let end = offset.checked_add(self.memory_size);
                if end.is_none_or(|end| end > mem.len() as u64) {
                    return Err(Error::new(op, Errno::ERANGE));
                }
                Ok(mem.addr() + offset)
            }
            UserAddr::Kernel(addr) if addr >= 0x8000_0000_0000_0000 => Ok(addr),
            UserAddr::None if self.memory_size == 0 => Ok(0),
            UserAddr::Kernel(_) | UserAddr::None => Err(Error::new(op, Errno::ERANGE)),
        }
    }
}

/// A VM.
#[derive(Debug)]
pub struct Vm {
    fd: OwnedFd,
    memory: MemoryKeepAlive,
}

impl Vm {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            memory: Arc::default(),
        }
    }

    /// KVM_CHECK_EXTENSION on the VM fd (answers for this VM).
    pub fn check_extension(&self, cap: u32) -> Result<i32> {
        // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_CHECK_EXTENSION, u64::from(cap)) }
            .map_err(|e| Error::new("KVM_CHECK_EXTENSION (VM)", e))
    }

    /// KVM_GET_TSC_KHZ on the VM fd: the TSC rate new vCPUs get.
    pub fn get_tsc_khz(&self) -> Result<u32> {
        // SAFETY: KVM_GET_TSC_KHZ takes no argument; the result is the return value.
        let r = unsafe { ioctl_val(self.fd.as_fd(), KVM_GET_TSC_KHZ, 0) }
            .map_err(|e| Error::new("KVM_GET_TSC_KHZ (VM)", e))?;
        u32::try_from(r).map_err(|_| Error::new("KVM_GET_TSC_KHZ (VM)", Errno::ERANGE))
    }

    /// KVM_SET_TSC_KHZ on the VM: the rate vCPUs created later are given.
    pub fn set_tsc_khz(&self, khz: u32) -> Result<()> {
        // SAFETY: KVM_SET_TSC_KHZ takes the rate as its argument, not a pointer.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_SET_TSC_KHZ, u64::from(khz)) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_TSC_KHZ (VM)", e))
    }

    /// KVM_GET_STATS_FD: the VM's binary statistics.
    pub fn stats(&self) -> Result<crate::BinaryStats> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd.
        let fd = unsafe { ioctl_val(self.fd.as_fd(), crate::ioctls::KVM_GET_STATS_FD, 0) }
            .map_err(|e| Error::new("KVM_GET_STATS_FD (VM)", e))?;
        // SAFETY: on success it is a new fd nothing else owns.
        crate::BinaryStats::new(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// KVM_CREATE_GUEST_MEMFD: a guest_memfd file of `size` bytes with
    /// `flags` (needs KVM_CAP_GUEST_MEMFD).
    pub fn create_guest_memfd(&self, size: u64, flags: u64) -> Result<OwnedFd> {
        let mut arg = crate::sys::kvm_create_guest_memfd {
            size,
            flags,
            ..Default::default()
        };
        // SAFETY: the kernel reads the struct (it is _IOWR, but writes nothing back); the
        // result is a new fd.
        let fd = unsafe {
            ioctl_mut(
                self.fd.as_fd(),
                crate::ioctls::KVM_CREATE_GUEST_MEMFD,
                &raw mut arg,
            )
        }
        .map_err(|e| Error::new("KVM_CREATE_GUEST_MEMFD", e))?;
        // SAFETY: on success it is a new fd nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// KVM_CREATE_VCPU with vCPU id `id`.
    pub fn create_vcpu(&self, id: u64) -> Result<Vcpu> {
        // SAFETY: KVM_CREATE_VCPU takes the vCPU id by value.
        let fd = unsafe { ioctl_val(self.fd.as_fd(), KVM_CREATE_VCPU, id) }
            .map_err(|e| Error::new("KVM_CREATE_VCPU", e))?;
        // SAFETY: on success KVM_CREATE_VCPU returns a new fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Vcpu::new(fd, id, Arc::clone(&self.memory)))
    }

    fn keep_alive(&self, region: &MemoryRegion<'_>) {
        if let UserAddr::Memory { mem, .. } = region.userspace {
            let mut list = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
            if !list.iter().any(|m| Arc::ptr_eq(m, mem)) {
                list.push(Arc::clone(mem));
            }
        }
    }

    /// KVM_SET_USER_MEMORY_REGION.
    ///
    /// Fails with `ERANGE`, without asking the kernel, if the slot would
    /// reach past its [`UserAddr`].
    pub fn set_user_memory_region(&self, region: &MemoryRegion<'_>) -> Result<()> {
        const OP: &str = "KVM_SET_USER_MEMORY_REGION";
        let arg = kvm_userspace_memory_region {
            slot: region.slot,
            flags: region.flags,
            guest_phys_addr: region.guest_phys_addr,
            memory_size: region.memory_size,
            userspace_addr: region.user_address(OP)?,
        };
        self.keep_alive(region);
        // SAFETY: the kernel reads the struct; through the slot it can only
        // reach memory inside a GuestMemory that the VM now keeps alive
        // (checked by `user_address`), whose contents nothing references.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_USER_MEMORY_REGION, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new(OP, e))
    }

    /// KVM_SET_USER_MEMORY_REGION2 (needs KVM_CAP_USER_MEMORY2).
    pub fn set_user_memory_region2(&self, region: &MemoryRegion<'_>) -> Result<()> {
        const OP: &str = "KVM_SET_USER_MEMORY_REGION2";
        let arg = kvm_userspace_memory_region2 {
            slot: region.slot,
            flags: region.flags,
            guest_phys_addr: region.guest_phys_addr,
            memory_size: region.memory_size,
            userspace_addr: region.user_address(OP)?,
            guest_memfd_offset: region.guest_memfd_offset,
            guest_memfd: region.guest_memfd,
            ..Default::default()
        };
        self.keep_alive(region);
        // SAFETY: as for KVM_SET_USER_MEMORY_REGION; the guest_memfd is an fd
        // number the kernel looks up, not memory.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_USER_MEMORY_REGION2, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new(OP, e))
    }

    /// KVM_SET_NR_MMU_PAGES: the VM's budget of shadow page-table pages.
    pub fn set_nr_mmu_pages(&self, pages: u64) -> Result<()> {
        // SAFETY: KVM_SET_NR_MMU_PAGES takes the count by value.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_SET_NR_MMU_PAGES, pages) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_NR_MMU_PAGES", e))
    }

    /// KVM_SET_TSS_ADDR: guest-physical address of the 3-page real-mode TSS.
    pub fn set_tss_addr(&self, addr: u64) -> Result<()> {
        // SAFETY: KVM_SET_TSS_ADDR takes the address by value.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_SET_TSS_ADDR, addr) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_TSS_ADDR", e))
    }

    /// KVM_SET_GSI_ROUTING with an empty table (`nr` 0, `flags` 0): the
    /// header alone, which is what a VM without an in-kernel irqchip is
    /// judged on.
    pub fn set_empty_gsi_routing(&self) -> Result<()> {
        // The kvm_irq_routing header: `nr`, `flags`, then no entries.
        let header = [0u32; 2];
        // SAFETY: the kernel reads the 8-byte header and, with `nr` 0, no entries.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_GSI_ROUTING, &raw const header) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_GSI_ROUTING", e))
    }

    /// KVM_ENABLE_CAP on the VM: enables capability `cap` with `args`.
    pub fn enable_cap(&self, cap: u32, args: [u64; 4]) -> Result<i32> {
        let arg = kvm_enable_cap {
            cap,
            args,
            ..Default::default()
        };
        // SAFETY: the kernel reads one kvm_enable_cap.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_ENABLE_CAP, &raw const arg) }
            .map_err(|e| Error::new("KVM_ENABLE_CAP", e))
    }

    /// KVM_CREATE_IRQCHIP: the in-kernel PIC, IOAPIC and local APICs.
    pub fn create_irqchip(&self) -> Result<()> {
        // SAFETY: KVM_CREATE_IRQCHIP takes no argument.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_CREATE_IRQCHIP, 0) }
            .map(drop)
            .map_err(|e| Error::new("KVM_CREATE_IRQCHIP", e))
    }

    /// KVM_IRQ_LINE: sets GSI `gsi` to `level`.
    pub fn irq_line(&self, gsi: u32, level: bool) -> Result<()> {
        // struct kvm_irq_level: the GSI (a union with the status), the level.
        let arg = [gsi, u32::from(level)];
        // SAFETY: the kernel reads one 8-byte kvm_irq_level.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_IRQ_LINE, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_IRQ_LINE", e))
    }

    /// KVM_IRQ_LINE_STATUS: sets GSI `gsi` to `level`; the status the
    /// kernel writes back (-1 not delivered, 0 coalesced, else how many
    /// targets took it).
    pub fn irq_line_status(&self, gsi: u32, level: bool) -> Result<i32> {
        let mut arg = [gsi, u32::from(level)];
        // SAFETY: the kernel reads and writes one 8-byte kvm_irq_level.
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_IRQ_LINE_STATUS, &raw mut arg) }
            .map_err(|e| Error::new("KVM_IRQ_LINE_STATUS", e))?;
        Ok(arg[0].cast_signed())
    }

    /// KVM_SET_GSI_ROUTING with `entries`, each a raw 48-byte
    /// `kvm_irq_routing_entry`, and the header's `flags`.
    pub fn set_gsi_routing(&self, entries: &[[u8; 48]], flags: u32) -> Result<()> {
        let nr = u32::try_from(entries.len())
            .map_err(|_| Error::new("KVM_SET_GSI_ROUTING", Errno::E2BIG))?;
        let mut buf = Vec::with_capacity(8 + 48 * entries.len());
        buf.extend_from_slice(&nr.to_le_bytes());
        buf.extend_from_slice(&flags.to_le_bytes());
        for e in entries {
            buf.extend_from_slice(e);
        }
        // SAFETY: the kernel reads the 8-byte header and `nr` 48-byte entries after it,
        // all in `buf`.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_GSI_ROUTING, buf.as_ptr()) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_GSI_ROUTING", e))
    }

    /// KVM_SET_BOOT_CPU_ID: vCPU `id` is the bootstrap processor.
    pub fn set_boot_cpu_id(&self, id: u64) -> Result<()> {
        // SAFETY: `_IO` request: the argument is an integer.
        unsafe { ioctl_val(self.fd.as_fd(), KVM_SET_BOOT_CPU_ID, id) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_BOOT_CPU_ID", e))
    }

    /// KVM_CREATE_PIT2 with `flags` (`KVM_PIT_SPEAKER_DUMMY`).
    pub fn create_pit2(&self, flags: u32) -> Result<()> {
        // struct kvm_pit_config: flags, pad[15].
        let mut arg = [0u32; 16];
        arg[0] = flags;
        // SAFETY: the kernel reads one 64-byte kvm_pit_config.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_CREATE_PIT2, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_CREATE_PIT2", e))
    }

    /// KVM_GET_PIT2: `struct kvm_pit_state2`'s 112 bytes.
    pub fn get_pit2(&self) -> Result<[u8; 112]> {
        let mut arg = [0u8; 112];
        // SAFETY: the kernel writes one 112-byte kvm_pit_state2.
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_PIT2, &raw mut arg) }
            .map_err(|e| Error::new("KVM_GET_PIT2", e))?;
        Ok(arg)
    }

    /// KVM_SET_PIT2 with `struct kvm_pit_state2`'s 112 bytes.
    pub fn set_pit2(&self, state: &[u8; 112]) -> Result<()> {
        // SAFETY: the kernel reads one 112-byte kvm_pit_state2.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_PIT2, state.as_ptr()) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_PIT2", e))
    }

    /// KVM_REINJECT_CONTROL: the PIT's tick reinjection on or off.
    pub fn reinject_control(&self, reinject: bool) -> Result<()> {
        // struct kvm_reinject_control: pit_reinject, reserved[31].
        let mut arg = [0u8; 32];
        arg[0] = u8::from(reinject);
        // SAFETY: the kernel reads one 32-byte kvm_reinject_control.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_REINJECT_CONTROL, arg.as_ptr()) }
            .map(drop)
            .map_err(|e| Error::new("KVM_REINJECT_CONTROL", e))
    }

    /// KVM_IRQFD: `struct kvm_irqfd` with eventfd `fd`, `gsi`, `flags`
    /// (`KVM_IRQFD_FLAG_*`) and `resamplefd`.
    pub fn irqfd(&self, fd: i32, gsi: u32, flags: u32, resamplefd: i32) -> Result<()> {
        // struct kvm_irqfd: fd, gsi, flags, resamplefd (u32 each), pad[16].
        let mut arg = [0u32; 8];
        arg[0] = fd.cast_unsigned();
        arg[1] = gsi;
        arg[2] = flags;
        arg[3] = resamplefd.cast_unsigned();
        // SAFETY: the kernel reads one 32-byte kvm_irqfd.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_IRQFD, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_IRQFD", e))
    }

    /// KVM_IOEVENTFD: `struct kvm_ioeventfd` with `datamatch`, `addr`,
    /// `len`, eventfd `fd` and `flags` (`KVM_IOEVENTFD_FLAG_*`: bit 0 data
    /// match, 1 PIO, 2 deassign).
    pub fn ioeventfd(
        &self,
        datamatch: u64,
        addr: u64,
        len: u32,
        fd: i32,
        flags: u32,
    ) -> Result<()> {
        let arg = crate::sys::kvm_ioeventfd {
            datamatch,
            addr,
            len,
            fd,
            flags,
            pad: [0; 36],
        };
        // SAFETY: the kernel reads one 64-byte kvm_ioeventfd.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_IOEVENTFD, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_IOEVENTFD", e))
    }

    /// KVM_REGISTER_COALESCED_MMIO: writes of the `size` bytes at `addr`
    /// (ports when `pio` is 1, MMIO when 0) go into the coalesced ring.
    pub fn register_coalesced_io(&self, addr: u64, size: u32, pio: u32) -> Result<()> {
        self.coalesced_io(
            KVM_REGISTER_COALESCED_MMIO,
            "KVM_REGISTER_COALESCED_MMIO",
            addr,
            size,
            pio,
        )
    }

    /// KVM_UNREGISTER_COALESCED_MMIO: removes the zones containing the range.
    pub fn unregister_coalesced_io(&self, addr: u64, size: u32, pio: u32) -> Result<()> {
        self.coalesced_io(
            KVM_UNREGISTER_COALESCED_MMIO,
            "KVM_UNREGISTER_COALESCED_MMIO",
            addr,
            size,
            pio,
        )
    }

    fn coalesced_io(
        &self,
        req: crate::ioctls::Request,
        name: &'static str,
        addr: u64,
        size: u32,
        pio: u32,
    ) -> Result<()> {
        let zone = crate::sys::kvm_coalesced_mmio_zone {
            addr,
            size,
            __bindgen_anon_1: crate::sys::kvm_coalesced_mmio_zone__bindgen_ty_1 { pio },
        };
        // SAFETY: the kernel reads one 16-byte kvm_coalesced_mmio_zone.
        unsafe { ioctl_ref(self.fd.as_fd(), req, &raw const zone) }
            .map(drop)
            .map_err(|e| Error::new(name, e))
    }

    /// KVM_X86_SET_MSR_FILTER: `flags` (`KVM_MSR_FILTER_DEFAULT_DENY`) and
    /// up to 16 ranges of (flags, base MSR, count, bitmap).
    pub fn set_msr_filter(&self, flags: u32, ranges: &[(u32, u32, u32, &[u8])]) -> Result<()> {
        let mut filter = crate::sys::kvm_msr_filter {
            flags,
            ..Default::default()
        };
        for (slot, &(rflags, base, nmsrs, bitmap)) in filter.ranges.iter_mut().zip(ranges) {
            *slot = crate::sys::kvm_msr_filter_range {
                flags: rflags,
                nmsrs,
                base,
                bitmap: bitmap.as_ptr().cast_mut(),
            };
        }
        // SAFETY: the kernel reads the struct and, for each range, the
        // bitmap bytes its count needs (rounded up to 8), which the caller's
        // slices must hold; it never writes through the pointers.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_X86_SET_MSR_FILTER, &raw const filter) }
            .map(drop)
            .map_err(|e| Error::new("KVM_X86_SET_MSR_FILTER", e))
    }

    /// KVM_GET_CLOCK: the VM's kvmclock, with the host's time and TSC.
    pub fn get_clock(&self) -> Result<crate::sys::kvm_clock_data> {
        let mut data = crate::sys::kvm_clock_data::default();
        // SAFETY: the kernel writes one kvm_clock_data (plain integers).
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_CLOCK, &raw mut data) }
            .map_err(|e| Error::new("KVM_GET_CLOCK", e))?;
        Ok(data)
    }

    /// KVM_GET_DIRTY_LOG for slot `slot` (address space in bits 31:16)
    /// into `bitmap`, one bit per page. The kernel writes as many 64-bit
    /// words as the slot has pages / 64 (rounded up): `bitmap` must be at
    /// least `slot_pages` bits long, or this fails with `ERANGE` unasked.
    pub fn get_dirty_log(&self, slot: u32, slot_pages: u64, bitmap: &mut [u64]) -> Result<()> {
        const OP: &str = "KVM_GET_DIRTY_LOG";
        if (bitmap.len() as u64) < slot_pages.div_ceil(64) {
            return Err(Error::new(OP, Errno::ERANGE));
        }
        let log = crate::sys::kvm_dirty_log {
            slot,
            __bindgen_anon_1: crate::sys::kvm_dirty_log__bindgen_ty_1 {
                dirty_bitmap: bitmap.as_mut_ptr().cast(),
            },
            ..Default::default()
        };
        // SAFETY: the kernel reads the struct and writes the slot's bitmap
        // words, which `bitmap` has room for (checked above, for a slot of
        // `slot_pages` pages).
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_GET_DIRTY_LOG, &raw const log) }
            .map(drop)
            .map_err(|e| Error::new(OP, e))
    }

    /// KVM_GET_DIRTY_LOG with the bitmap at `addr`, an address in the
    /// kernel half that the kernel can never write: for testing `EFAULT`.
    pub fn get_dirty_log_to_kernel_address(&self, slot: u32, addr: u64) -> Result<()> {
        const OP: &str = "KVM_GET_DIRTY_LOG";
        if addr < 0x8000_0000_0000_0000 {
            return Err(Error::new(OP, Errno::ERANGE));
        }
        let log = crate::sys::kvm_dirty_log {
            slot,
            __bindgen_anon_1: crate::sys::kvm_dirty_log__bindgen_ty_1 { padding2: addr },
            ..Default::default()
        };
        // SAFETY: the kernel reads the struct; the bitmap address is no user memory.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_GET_DIRTY_LOG, &raw const log) }
            .map(drop)
            .map_err(|e| Error::new(OP, e))
    }

    /// KVM_CLEAR_DIRTY_LOG: clears, in slot `slot`, the dirty bits of the
    /// `num_pages` pages from `first_page` that `bitmap` has set (bit 0 of
    /// word 0 is `first_page`). The kernel reads `num_pages` / 64 words
    /// (rounded up) after its checks: fewer in `bitmap` is `ERANGE`, unasked.
    pub fn clear_dirty_log(
        &self,
        slot: u32,
        first_page: u64,
        num_pages: u32,
        bitmap: &[u64],
    ) -> Result<()> {
        const OP: &str = "KVM_CLEAR_DIRTY_LOG";
        if (bitmap.len() as u64) < u64::from(num_pages).div_ceil(64) {
            return Err(Error::new(OP, Errno::ERANGE));
        }
        let log = crate::sys::kvm_clear_dirty_log {
            slot,
            num_pages,
            first_page,
            __bindgen_anon_1: crate::sys::kvm_clear_dirty_log__bindgen_ty_1 {
                dirty_bitmap: bitmap.as_ptr().cast_mut().cast(),
            },
        };
        // SAFETY: the kernel reads the struct and at most `bitmap`'s words.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_CLEAR_DIRTY_LOG, &raw const log) }
            .map(drop)
            .map_err(|e| Error::new(OP, e))
    }

    /// KVM_SET_CLOCK.
    pub fn set_clock(&self, data: &crate::sys::kvm_clock_data) -> Result<()> {
        // SAFETY: the kernel reads one kvm_clock_data.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_CLOCK, data) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_CLOCK", e))
    }

    /// KVM_SIGNAL_MSI: sends the MSI; the result is how many APICs took it.
    pub fn signal_msi(&self, address: u64, data: u32, flags: u32) -> Result<i32> {
        // struct kvm_msi: address_lo, address_hi, data, flags, devid, pad[12].
        let mut arg = [0u32; 8];
        let [lo, hi] =
            [address & 0xffff_ffff, address >> 32].map(|w| u32::try_from(w).unwrap_or(0));
        arg[0] = lo;
        arg[1] = hi;
        arg[2] = data;
        arg[3] = flags;
        // SAFETY: the kernel reads one 32-byte kvm_msi.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SIGNAL_MSI, &raw const arg) }
            .map_err(|e| Error::new("KVM_SIGNAL_MSI", e))
    }

    /// KVM_GET_IRQCHIP for `chip_id` (0, 1: PIC master, slave; 2: IOAPIC):
    /// the 512 bytes of the chip's state.
    pub fn get_irqchip(&self, chip_id: u32) -> Result<[u8; 512]> {
        let mut arg = [0u8; 520];
        arg[..4].copy_from_slice(&chip_id.to_le_bytes());
        // SAFETY: the kernel reads and writes one 520-byte kvm_irqchip.
        unsafe { ioctl_mut(self.fd.as_fd(), KVM_GET_IRQCHIP, &raw mut arg) }
            .map_err(|e| Error::new("KVM_GET_IRQCHIP", e))?;
        let mut state = [0u8; 512];
        state.copy_from_slice(&arg[8..]);
        Ok(state)
    }

    /// KVM_SET_IRQCHIP for `chip_id` with `state`.
    pub fn set_irqchip(&self, chip_id: u32, state: &[u8; 512]) -> Result<()> {
        let mut arg = [0u8; 520];
        arg[..4].copy_from_slice(&chip_id.to_le_bytes());
        arg[8..].copy_from_slice(state);
        // SAFETY: the kernel reads one 520-byte kvm_irqchip.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_IRQCHIP, &raw const arg) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_IRQCHIP", e))
    }

    /// KVM_SET_IDENTITY_MAP_ADDR: guest-physical address of the identity map.
    pub fn set_identity_map_addr(&self, addr: u64) -> Result<()> {
        // SAFETY: the kernel reads one u64 from `addr`.
        unsafe { ioctl_ref(self.fd.as_fd(), KVM_SET_IDENTITY_MAP_ADDR, &raw const addr) }
            .map(drop)
            .map_err(|e| Error::new("KVM_SET_IDENTITY_MAP_ADDR", e))
    }
}

impl AsFd for Vm {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
