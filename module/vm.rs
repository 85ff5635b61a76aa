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
//! `Vm::inner` (a mutex) guards the slots, the second-level page table,
//! the vCPU list and the VM-wide addresses. Lock order: `Vcpu::state`
//! (held for a whole `KVM_RUN`) before `Vm::inner`; never the other way
//! round: nothing that holds `Vm::inner` waits for a vCPU's state. No
//! spinlocks.
//!
//! # Guest memory
//!
//! Guest pages are mapped in the second-level table on first touch (a
//! nested page fault), not when the slot is created: pinning a page costs
//! something, and most of a big slot may never be touched (KVM maps on
//! fault too). A mapped page is pinned (`FOLL_LONGTERM`) until it is
//! unmapped, which happens when its slot is deleted or moved and when the
//! VM dies. Unmapping clears the entries, bumps `mapping_generation` so
//! every vCPU flushes its TLB before it next enters, interrupts every vCPU
//! that is in the guest right now and waits until it has left, and only
//! then unpins the pages: no guest can reach a page after its pin is gone.
//! A slot that starts logging dirty pages loses its 2 MiB mappings the same
//! way; write-protecting pages for the log (`crate::dirty`) flushes the TLBs
//! the same way before the ioctl returns.
//!
//! Arguments are copied from user memory
//! before a lock is taken, and results copied back after it is dropped,
//! except where KVM's check order needs the copy under the lock (a mutex
//! may sleep; rkvm's page-fault path takes none of these locks).

use crate::abi::{self, kvm_enable_cap, kvm_userspace_memory_region, kvm_userspace_memory_region2};
use crate::coalesced::CoalescedIo;
use crate::dev::{check_extension, Shared};
use crate::dirty;
use crate::eventfd::ioeventfd::{self, Bus};
use crate::eventfd::irqfd::Irqfds;
use crate::gmem::file::GuestMemfd;
use crate::hyperv;
use crate::irq::chip::{ApicApi, ChipMode, Irqchip, VcpuApic, CHIP_IOAPIC, IRQCHIP_BYTES};
use crate::irq::delivery::Msi;
use crate::irq::ioapic::Source;
use crate::irq::lapic;
use crate::irq::pit::{self, State, State2};
use crate::irq::pit_device::PitDevice;
use crate::irq::routing::{Routing, RoutingError, ENTRY_BYTES, MAX_ROUTES};
use crate::memslot::{self, Change, Request, Slot, SlotError, SlotTable, Space, NR_ADDRESS_SPACES};
use crate::mmu::{Access, MapError, PageSize, SecondLevel};
use crate::run::IrqLink;
use crate::stats::fd::StatsFd;
use crate::stats::{Counter, ExitsByReason, Kind, Live, VmStats};
use crate::sys::cpu;
use crate::sys::debugfs::{DebugDir, TextFileOps};
use crate::sys::eventfd::EventFd;
use crate::sys::file::{new_anon_fd, FileObject, FileOps};
use crate::sys::mem::{
    pin_user_contiguous, pin_user_page, unpin_pages, user_page_in_huge_folio, HostPhysAddr,
};
use crate::sys::mem::{user_range_ok, OwnerMm};
use crate::user;
use crate::vcpu::{Vcpu, VcpuFd, MAX_VCPUS, MAX_VCPU_IDS, VCPU_FOPS};
use crate::x86::msr_filter::{self, MsrFilter};
use crate::x86::pvclock::ClockRef;
use crate::x86::tsc;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::alloc::KVVec;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex};
use kernel::uaccess::{UserPtr, UserSlice};

/// The file operations of VM fds.
pub(crate) static VM_FOPS: FileOps<Vm> = FileOps::new();

/// The file operations of the per-VM debugfs counters.
static COUNTER_FOPS: TextFileOps<Counter> = TextFileOps::new();
static BY_REASON_FOPS: TextFileOps<ExitsByReason> = TextFileOps::new();

/// Room for a `<pid>-<fd>` or `<pid>-<fd>-<n>` directory name (at most
/// 10 + 1 + 10 + 1 + 20 characters and a NUL).
pub(crate) struct NameBuf {
    pub(crate) bytes: [u8; 48],
    pub(crate) len: usize,
}

impl Default for NameBuf {
    fn default() -> Self {
        Self {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl core::fmt::Write for NameBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The state behind `Vm::inner`.
/// The quirks rkvm has and a VMM may turn off (`KVM_CAP_DISABLE_QUIRKS2`
/// answers them): the other vendor's hypercall instruction rewritten to
/// this one's (run/, `KVM_X86_QUIRK_FIX_HYPERCALL_INSN`). KVM's other
/// quirks either do not arise in rkvm or are its one behaviour.
pub(crate) const QUIRKS: u64 = abi::KVM_X86_QUIRK_FIX_HYPERCALL_INSN as u64;

struct VmInner {
    /// The VM's statistics (the page counts are kept with the mappings).
    stats: Arc<VmStats>,
    /// The pins on the owner's memory behind the mappings.
    pins: GuestPins,
    /// The address spaces: the memory outside SMM, and in it.
    spaces: [AddressSpace; NR_ADDRESS_SPACES],
    /// vCPU ids in use, one bit per id below [`MAX_VCPU_IDS`]. An id stays
    /// used for the VM's lifetime, as in KVM.
    vcpu_ids: [u64; MAX_VCPU_IDS / 64],
    vcpus: KVec<Arc<Vcpu>>,
    /// `KVM_SET_TSS_ADDR`: three pages the VMX backend may use for real mode.
    tss_addr: Option<u64>,
    /// `KVM_SET_IDENTITY_MAP_ADDR`: one page for VMX's real-mode page table.
    identity_map_addr: Option<u64>,
    /// The in-kernel interrupt controllers (`KVM_CREATE_IRQCHIP`), created
    /// before any vCPU and kept for the VM's life.
    irqchip: Option<Arc<Irqchip>>,
    /// The bootstrap processor's vCPU id (`KVM_SET_BOOT_CPU_ID`; 0).
    bsp_vcpu_id: u64,
    /// `KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID)`: vCPU ids must be below it;
    /// 0 until set, which means [`MAX_VCPU_IDS`]. Set once.
    max_vcpu_ids: usize,
    /// `KVM_SET_NR_MMU_PAGES`: the shadow page-table budget asked for.
    nr_mmu_pages: Option<usize>,
    /// The TSC offset the VM's vCPUs share: set when the first vCPU is
    /// created, so that its TSC starts near 0, and given to every later
    /// one, so that they count in step (KVM's `kvm_synchronize_tsc`); a
    /// host write of a TSC value moves it (`KVM_SET_MSRS`).
    tsc_offset: Option<u64>,
    /// `KVM_SET_TSC_KHZ` on the VM: the rate new vCPUs tell their guest
    /// their TSC runs at (x86/tsc.rs); 0 for the host's.
    default_tsc_khz: u32,
    /// `KVM_ENABLE_CAP(KVM_CAP_X86_APIC_BUS_CYCLES_NS)`: the local APICs'
    /// bus cycle in ns (1 GHz by default), set before the first vCPU.
    apic_bus_cycle_ns: u64,
    /// The VM's kvmclock: its value at a host TSC reading (x86/pvclock.rs,
    /// run/kvmclock.rs). 0 at creation; `KVM_SET_CLOCK` moves it.
    kvmclock: ClockRef,
    /// `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)`'s flags: 0, or
    /// `KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE` and perhaps
    /// `KVM_DIRTY_LOG_INITIALLY_SET` (dirty/).
    manual_dirty_log: u64,
}

/// One of the VM's address spaces (memslot.rs, [`Space`]): its slots,
/// and the guest-physical to host-physical map the hardware walks for a
/// vCPU that sees it.
struct AddressSpace {
    slots: SlotTable,
    slat: KBox<dyn SecondLevel>,
}

impl AddressSpace {
    fn new(shared: &Shared) -> Result<Self> {
        Ok(AddressSpace {
            slots: SlotTable::new(),
            slat: shared.backend.create_slat()?,
        })
    }
}

/// A virtual machine.
#[pin_data]
pub(crate) struct Vm {
    pub(crate) shared: Arc<Shared>,
    /// The address space of the process that created the VM. Guest memory
    /// is that process's memory, so, as in KVM, only it may use the VM (a
    /// forked child gets `EIO`).
    mm: OwnerMm,
    /// The roots of the address spaces' second-level tables, by
    /// [`Space::index`], fixed for the VM's life.
    pub(crate) slat_roots: [HostPhysAddr; NR_ADDRESS_SPACES],
    /// Bumped whenever a mapping is removed or write-protected, and for
    /// Hyper-V's TLB-flush hypercalls: every vCPU flushes its guest TLB
    /// before entering with a new value; see the module documentation.
    pub(crate) mapping_generation: AtomicU64,
    /// Exit and page counters, shown in debugfs.
    pub(crate) stats: Arc<VmStats>,
    /// `/sys/kernel/debug/rkvm/<pid>-<fd>`, once the fd number is known.
    #[pin]
    debugfs: Mutex<Option<DebugDir<VmStats>>>,
    #[pin]
    inner: Mutex<VmInner>,
    /// `KVM_IRQFD`'s eventfds.
    #[pin]
    irqfds: Mutex<Irqfds>,
    /// `KVM_IOEVENTFD`'s table, and how many entries it has (read
    /// without the lock, so that a VM without any pays nothing per exit).
    #[pin]
    ioeventfds: Mutex<ioeventfd::Table<EventFd>>,
    ioeventfd_count: AtomicUsize,
    /// Bumped by every `KVM_SET_CLOCK` (see `kvmclock_generation`).
    kvmclock_generation: AtomicU64,
    /// `KVM_REGISTER_COALESCED_MMIO`'s zones and the ring they fill
    /// (coalesced/).
    #[pin]
    pub(crate) coalesced: CoalescedIo,
    /// The in-kernel PIT (`KVM_CREATE_PIT2`), created after the irqchip.
    #[pin]
    pit: Mutex<PitSlot>,
    /// `KVM_CAP_X2APIC_API`'s settings, shared with the irqchip.
    api: Arc<ApicApi>,
    /// `KVM_ENABLE_CAP(KVM_CAP_MSR_PLATFORM_INFO)`: whether the guest may
    /// read MSR_PLATFORM_INFO (true until the VMM says otherwise).
    platform_info_readable: AtomicBool,
    /// `KVM_ENABLE_CAP(KVM_CAP_EXIT_ON_EMULATION_FAILURE)`: an instruction
    /// rkvm cannot emulate always exits to user space, at any CPL, and
    /// raises no #UD (run/insn.rs, `emulation_failed`).
    exit_on_emulation_failure: AtomicBool,
    /// The quirks the VMM turned off (`KVM_CAP_DISABLE_QUIRKS2`), of
    /// [`QUIRKS`].
    disabled_quirks: AtomicU64,
    /// `KVM_CAP_X86_USER_SPACE_MSR`: the `KVM_MSR_EXIT_REASON_*` for which
    /// a guest's refused MSR access exits to user space instead of #GP.
    user_space_msr: AtomicU32,
    /// `KVM_X86_SET_MSR_FILTER`'s filter, if one is set (x86/msr_filter.rs),
    /// and whether one is, read without the lock so that a VM without one
    /// pays nothing per MSR exit.
    #[pin]
    msr_filter: Mutex<Option<MsrFilter>>,
    msr_filter_on: AtomicBool,
    /// The partition-wide Hyper-V state (hyperv/, run/hyperv.rs), and
    /// whether its reference TSC page is due to be written, read without
    /// the lock before every entry. Taken before `inner`, never inside it.
    #[pin]
    hyperv: Mutex<hyperv::Partition>,
    hyperv_tsc_page_due: AtomicBool,
    /// Whether the page is set, and for which vCPU TSC offset (read
    /// without the lock: a vCPU whose offset differs rewrites it).
    hyperv_tsc_page_set: AtomicBool,
    hyperv_tsc_page_offset: AtomicU64,
    _live: Live,
}

/// The VM's PIT, shut down with the VM (its armed timer holds it).
struct PitSlot(Option<Arc<PitDevice>>);

impl Drop for PitSlot {
    fn drop(&mut self) {
        if let Some(pit) = &self.0 {
            pit.shutdown();
        }
    }
}

impl Vm {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Arc<Self>> {
        // A kernel thread has no address space to back guest memory.
        let mm = OwnerMm::of_current().ok_or(EINVAL)?;
        let pins_mm = mm.try_clone();
        let live = Live::new(&shared.stats, Kind::Vm);
        let spaces = [AddressSpace::new(&shared)?, AddressSpace::new(&shared)?];
        let slat_roots = [spaces[0].slat.root(), spaces[1].slat.root()];
        let vm_stats = Arc::new(VmStats::default(), GFP_KERNEL_ACCOUNT)?;
        let api = Arc::new(ApicApi::new(), GFP_KERNEL_ACCOUNT)?;
        let coalesced_ring = CoalescedIo::alloc_ring()?;
        Arc::pin_init(
            pin_init!(Vm {
                shared,
                mm,
                slat_roots,
                mapping_generation: AtomicU64::new(0),
                stats: vm_stats.clone(),
                debugfs <- new_mutex!(None, "rkvm::Vm::debugfs"),
                inner <- new_mutex!(
                    VmInner {
                        stats: vm_stats,
                        pins: GuestPins { mm: pins_mm },
                        spaces,
                        vcpu_ids: [0; MAX_VCPU_IDS / 64],
                        vcpus: KVec::new(),
                        tss_addr: None,
                        identity_map_addr: None,
                        irqchip: None,
                        bsp_vcpu_id: 0,
                        max_vcpu_ids: 0,
                        nr_mmu_pages: None,
                        tsc_offset: None,
                        default_tsc_khz: 0,
                        apic_bus_cycle_ns: lapic::DEFAULT_BUS_CYCLE_NS,
                        kvmclock: ClockRef {
                            host_tsc: cpu::rdtsc(),
                            ns: 0,
                        },
                        manual_dirty_log: 0,
                    },
                    "rkvm::Vm::inner"
                ),
                irqfds <- new_mutex!(Irqfds::new(), "rkvm::Vm::irqfds"),
                ioeventfds <- new_mutex!(ioeventfd::Table::new(), "rkvm::Vm::ioeventfds"),
                ioeventfd_count: AtomicUsize::new(0),
                kvmclock_generation: AtomicU64::new(0),
                coalesced <- CoalescedIo::new(coalesced_ring),
                pit <- new_mutex!(PitSlot(None), "rkvm::Vm::pit"),
                api,
                platform_info_readable: AtomicBool::new(true),
                exit_on_emulation_failure: AtomicBool::new(false),
                disabled_quirks: AtomicU64::new(0),
                user_space_msr: AtomicU32::new(0),
                msr_filter <- new_mutex!(None, "rkvm::Vm::msr_filter"),
                msr_filter_on: AtomicBool::new(false),
                hyperv <- new_mutex!(hyperv::Partition::default(), "rkvm::Vm::hyperv"),
                hyperv_tsc_page_due: AtomicBool::new(false),
                hyperv_tsc_page_set: AtomicBool::new(false),
                hyperv_tsc_page_offset: AtomicU64::new(0),
                _live: live,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Creates the VM's debugfs directory, named `<pid>-<fd>` as KVM names
    /// its own (the creating task's pid and the VM's fd number), with one
    /// file per counter. Called once, before the fd is installed.
    ///
    /// A VM that outlived its fd keeps its name, and a new VM of the same
    /// task can get the same fd number. KVM then creates no directory for the
    /// new VM; rkvm names it `<pid>-<fd>-<n>` with `n` counting such VMs since
    /// the module was loaded, so every VM has its counters, and nothing is
    /// logged (debugfs would log every collision). docs/abi.md.
    pub(crate) fn add_debugfs(&self, fd: i32) {
        let pid = cpu::current_pid();
        let mut buf = NameBuf::default();
        if write!(buf, "{pid}-{fd}\0").is_err() {
            return;
        }
        if CStr::from_bytes_with_nul(&buf.bytes[..buf.len])
            .is_ok_and(|n| self.shared.debugfs.has(n))
        {
            let n = self.shared.renamed_vms.fetch_add(1, Ordering::Relaxed) + 1;
            buf = NameBuf::default();
            if write!(buf, "{pid}-{fd}-{n}\0").is_err() {
                return;
            }
        }
        let Ok(name) = CStr::from_bytes_with_nul(&buf.bytes[..buf.len]) else {
            return;
        };
        let dir = DebugDir::new_in(self.shared.debugfs, name, self.stats.clone());
        dir.file(c"exits", &COUNTER_FOPS, |s| &s.exits);
        dir.file(c"io_exits", &COUNTER_FOPS, |s| &s.io_exits);
        dir.file(c"mmio_exits", &COUNTER_FOPS, |s| &s.mmio_exits);
        dir.file(c"halt_exits", &COUNTER_FOPS, |s| &s.halt_exits);
        dir.file(c"irq_exits", &COUNTER_FOPS, |s| &s.irq_exits);
        dir.file(c"irq_injections", &COUNTER_FOPS, |s| &s.irq_injections);
        dir.file(c"halt_wakeup", &COUNTER_FOPS, |s| &s.halt_wakeup);
        dir.file(c"ipis", &COUNTER_FOPS, |s| &s.ipis);
        dir.file(c"apic_timer_fires", &COUNTER_FOPS, |s| &s.apic_timer_fires);
        dir.file(c"irqfd_fires", &COUNTER_FOPS, |s| &s.irqfd_fires);
        dir.file(c"pit_ticks", &COUNTER_FOPS, |s| &s.pit_ticks);
        dir.file(c"ioeventfd_signals", &COUNTER_FOPS, |s| {
            &s.ioeventfd_signals
        });
        dir.file(c"request_irq_exits", &COUNTER_FOPS, |s| {
            &s.request_irq_exits
        });
        dir.file(c"signal_exits", &COUNTER_FOPS, |s| &s.signal_exits);
        dir.file(c"pages_4k", &COUNTER_FOPS, |s| &s.pages_4k);
        dir.file(c"pages_2m", &COUNTER_FOPS, |s| &s.pages_2m);
        dir.file(c"mmio_insn_from_cpu", &COUNTER_FOPS, |s| {
            &s.mmio_insn_from_cpu
        });
        dir.file(c"fastpath_exits", &COUNTER_FOPS, |s| &s.fastpath_exits);
        dir.file(c"exits_by_reason", &BY_REASON_FOPS, |s| &s.by_reason);
        *self.debugfs.lock() = Some(dir);
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
            gmem_fd: r.guest_memfd,
            gmem_offset: r.guest_memfd_offset,
        };
        let phys_bits = self.shared.backend.host_limits().phys_bits;
        let to_errno = |e| match e {
            SlotError::Invalid => EINVAL,
            SlotError::Overlap => EEXIST,
            SlotError::NoMemory => ENOMEM,
            SlotError::BadFile => EBADF,
        };
        // A guest_memfd a new slot binds stays open until the binding is in
        // the table (so its release, which unbinds, comes after); it is
        // dropped after the lock (declared first).
        let mut gmem_file = None;
        let (space, _) = memslot::slot_id(r.slot).ok_or(EINVAL)?;
        let mut inner = self.inner.lock();
        let change = inner.spaces[space.index()]
            .slots
            .plan(&req, user_range_ok, phys_bits, |fd| {
                let (file, held) = GuestMemfd::lookup(self, fd)?;
                gmem_file = Some(held);
                Ok(file)
            })
            .map_err(to_errno)?;
        // A guest_memfd range is bound once in the whole VM, whatever the
        // address space (KVM's `kvm_gmem_bind`: `EEXIST`).
        if let Change::Create(new) = change {
            let other = match space {
                Space::Normal => Space::Smm,
                Space::Smm => Space::Normal,
            };
            if new.gmem.is_some_and(|b| {
                inner.spaces[other.index()]
                    .slots
                    .binds_any(b.file, b.first, new.pages())
            }) {
                return Err(EEXIST);
            }
        }
        // The old range of a slot that goes away or moves loses its mappings.
        let slots = &mut inner.spaces[space.index()].slots;
        let gone = match change {
            Change::Delete(id) => slots.get(id).map(|s| (s.gpa, s.end())),
            Change::Move(new) => slots.get(new.id).map(|s| (s.gpa, s.end())),
            Change::Flags(_) | Change::Create(_) | Change::Nothing => None,
        };
        let all_dirty = dirty::starts_all_dirty(inner.manual_dirty_log);
        inner.spaces[space.index()]
            .slots
            .commit(change, all_dirty)
            .map_err(to_errno)?;
        if let Some((start, end)) = gone {
            self.unmap(&mut inner, space, start, end);
        }
        // Only dirty logging can change on a slot in place (`plan`).
        if let Change::Flags(slot) = change {
            if slot.logs_dirty() {
                self.start_logging(&mut inner, space, slot.gpa, slot.end(), all_dirty);
            }
            // Logging off: the leaves stay; a write-tracked one is made
            // writable by its next write fault, with no bit to set.
        }
        Ok(0)
    }

    /// Guest_memfd file `id` is being closed: its bindings go.
    pub(crate) fn gmem_closed(&self, id: u64) {
        for space in self.inner.lock().spaces.iter_mut() {
            space.slots.unbind_gmem(id);
        }
    }

    /// A slot in `[start, end)` started logging dirty pages: its 2 MiB
    /// leaves go (a bit stands for 4 KiB; its pages fault back in 4 KiB at
    /// a time), and its 4 KiB leaves are write-protected unless every page
    /// starts dirty (`KVM_DIRTY_LOG_INITIALLY_SET`: nothing needs catching
    /// until user space clears). KVM's `kvm_mmu_slot_apply_flags`.
    fn start_logging(
        &self,
        inner: &mut VmInner,
        space: Space,
        start: u64,
        end: u64,
        all_dirty: bool,
    ) {
        let slat = &mut inner.spaces[space.index()].slat;
        let mut large = 0usize;
        slat.retire_large(start, end, &mut |_, _| large += 1);
        let protected = if all_dirty {
            0
        } else {
            slat.write_protect(start, end, &mut |_| true)
        };
        if large + protected == 0 {
            return;
        }
        self.flush_guest_tlbs(inner);
        inner.release_retired(space, start, end);
    }

    /// Unmaps `[start, end)`, makes sure no vCPU can still reach the pages,
    /// and unpins them (see the module documentation).
    fn unmap(&self, inner: &mut VmInner, space: Space, start: u64, end: u64) {
        let mut unmapped = 0usize;
        inner.spaces[space.index()]
            .slat
            .retire(start, end, &mut |_, _| unmapped += 1);
        if unmapped == 0 {
            return;
        }
        self.flush_guest_tlbs(inner);
        inner.release_retired(space, start, end);
    }

    /// Makes `gpa` accessible to the guest if a slot backs it: pins the
    /// page of the owner's memory and maps it (read-only for a read-only
    /// slot). Called by the run loop on a second-level fault for an access
    /// that writes if `write`, in the VM owner's process.
    ///
    /// In a slot that logs dirty pages (`crate::dirty`), pages are mapped
    /// 4 KiB at a time, and write-tracked while clean: a write marks the
    /// page dirty and makes its leaf writable.
    ///
    /// `space` is the address space the faulting vCPU sees (SMM's or not).
    pub(crate) fn map_gpa(&self, space: Space, gpa: u64, write: bool) -> Result<Backing> {
        let page_gpa = gpa & !0xfff;
        let mut guard = self.inner.lock();
        let VmInner {
            spaces,
            pins,
            stats,
            ..
        } = &mut *guard;
        let AddressSpace { slots, slat } = &mut spaces[space.index()];
        let Some(slot) = slots.find(page_gpa).copied() else {
            return Ok(Backing::None);
        };
        if write && slot.is_readonly() {
            return Ok(Backing::ReadOnly);
        }
        if let Some((_, _, writable)) = slat.lookup(page_gpa) {
            // A write to a write-tracked page: the first since the log was
            // last collected. Otherwise another vCPU mapped the page meanwhile.
            if write && !writable {
                slots.mark_dirty(page_gpa);
                // Only a leaf whose page was pinned for writing is read-only
                // in a writable slot; anything else would fault forever.
                if !slat.allow_write(page_gpa) {
                    return Err(EFAULT);
                }
            }
            return Ok(Backing::Mapped);
        }
        let access = if slot.is_readonly() {
            Access::Read
        } else if !slot.logs_dirty() {
            Access::Write
        } else if write {
            slots.mark_dirty(page_gpa);
            Access::Write
        } else if slots.is_dirty(page_gpa) {
            // Already dirty in this round: a write needs no tracking.
            Access::Write
        } else {
            Access::WriteTracked
        };
        let uaddr = slot.uaddr + (page_gpa - slot.gpa);
        // A 2 MiB leaf when the slot covers the aligned 2 MiB around the page at the same
        // alignment in the owner's memory and a transparent huge page backs it. Not while the
        // slot logs dirty pages: a bit stands for 4 KiB.
        let huge = PageSize::Size2M.bytes();
        let base = page_gpa & !(huge - 1);
        if let Some(offset) = base.checked_sub(slot.gpa).filter(|_| !slot.logs_dirty()) {
            let huge_uaddr = slot.uaddr + offset;
            if base + huge <= slot.end() && huge_uaddr % huge == 0 {
                let pinned = pins.try_pin_huge(uaddr, huge_uaddr, access.may_write())?;
                if let Some(first) = pinned {
                    match slat.map(base, first, PageSize::Size2M, access) {
                        Ok(()) => {
                            stats.pages_2m.add(1);
                            return Ok(Backing::Mapped);
                        }
                        // Some 4 KiB pages of it are mapped already: stay with 4 KiB here.
                        Err(_) => pins.unpin(first, PageSize::Size2M, false),
                    }
                }
            }
        }
        let page = pins.pin(uaddr, access.may_write())?;
        match slat.map(page_gpa, page, PageSize::Size4K, access) {
            Ok(()) => {
                stats.pages_4k.add(1);
                Ok(Backing::Mapped)
            }
            Err(e) => {
                pins.unpin(page, PageSize::Size4K, false);
                Err(match e {
                    MapError::NoMemory => ENOMEM,
                    MapError::Busy | MapError::BadAddress => EFAULT,
                })
            }
        }
    }

    /// Makes sure no vCPU runs on with a translation the second-level
    /// table no longer has (an unmapped or write-protected page): every
    /// vCPU flushes its TLB before it next enters, and every vCPU in the
    /// guest now is interrupted and has left it when this returns.
    fn flush_guest_tlbs(&self, inner: &VmInner) {
        // Pairs with the vCPU's store of `running_on` before it reads the generation
        // (run/): either it sees the new generation and flushes, or we see it running
        // and kick it out of the guest.
        self.mapping_generation.fetch_add(1, Ordering::SeqCst);
        for vcpu in inner.vcpus.iter() {
            if let Some(cpu) = vcpu.running_on() {
                cpu::kick(cpu);
            }
        }
    }

    /// Flushes every vCPU's guest TLB (Hyper-V's TLB-flush hypercalls,
    /// run/hyperv.rs): each flushes before its next entry, and those in
    /// the guest have left it when this returns.
    pub(crate) fn flush_all_guest_tlbs(&self) {
        self.flush_guest_tlbs(&self.inner.lock());
    }

    /// One step of `KVM_PRE_FAULT_MEMORY`: maps the page at `gpa` as a
    /// read fault of the guest would (writable in a writable slot, with a
    /// 2 MiB leaf where one fits), and returns how many bytes from `gpa`
    /// the mapping covers (to the end of its 4 KiB or 2 MiB leaf). `ENOENT`
    /// where no slot backs `gpa`, as KVM's `kvm_arch_vcpu_pre_fault_memory`.
    pub(crate) fn pre_fault(&self, space: Space, gpa: u64) -> Result<u64> {
        if !matches!(self.map_gpa(space, gpa, false)?, Backing::Mapped) {
            return Err(ENOENT);
        }
        // The mapping's size; 4 KiB if the slot went away meanwhile.
        let size = self.inner.lock().spaces[space.index()]
            .slat
            .lookup(gpa & !0xfff)
            .map_or(PageSize::Size4K.bytes(), |(_, size, _)| size.bytes());
        Ok((gpa & !(size - 1)) + size - gpa)
    }

    /// Copies guest-physical memory at `gpa` into `buf`, from the owner's
    /// memory behind the slots of the address space outside SMM (for what
    /// the VM keeps in guest memory: kvmclock, steal time, Hyper-V's
    /// pages). `None` if some byte has no slot, or the owner's memory there
    /// cannot be read.
    pub(crate) fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        self.read_guest_in(Space::Normal, gpa, buf)
    }

    /// [`Self::read_guest`] in address space `space`: for what a vCPU
    /// reads as the guest would (its instructions, its page tables, string
    /// I/O), in the address space it sees.
    pub(crate) fn read_guest_in(&self, space: Space, gpa: u64, buf: &mut [u8]) -> Option<()> {
        self.guest_reader(space).read(gpa, buf)
    }

    /// A reader of guest memory in address space `space` for a run of
    /// reads (a page walk and the instruction it leads to): see
    /// [`GuestReader`].
    pub(crate) fn guest_reader(&self, space: Space) -> GuestReader<'_> {
        GuestReader {
            vm: self,
            space,
            last: None,
        }
    }

    /// Copies `buf` into guest-physical memory at `gpa`; `None` also for a
    /// read-only slot. The pages written are marked dirty if their slot
    /// logs dirty pages once the write is done (as KVM's `kvm_write_guest`
    /// marks after writing): a slot that started logging meanwhile has
    /// them marked too, and a slot that moved meanwhile has the pages
    /// marked that the bytes went to.
    pub(crate) fn write_guest(&self, gpa: u64, buf: &[u8]) -> Option<()> {
        self.write_guest_in(Space::Normal, gpa, buf)
    }

    /// [`Self::write_guest`] in address space `space` (see
    /// [`Self::read_guest_in`]).
    pub(crate) fn write_guest_in(&self, space: Space, gpa: u64, buf: &[u8]) -> Option<()> {
        let place = self.guest_uaddr(space, gpa, buf.len(), true)?;
        UserSlice::new(UserPtr::from_addr(place.uaddr), buf.len())
            .writer()
            .write_slice(buf)
            .ok()?;
        if !buf.is_empty() {
            let mut inner = self.inner.lock();
            let slots = &mut inner.spaces[space.index()].slots;
            let same = slots.get(place.slot).is_some_and(|s| {
                s.uaddr.checked_add(place.offset) == Some(place.uaddr as u64)
                    && place.offset + buf.len() as u64 <= s.size
            });
            if let Some(bitmap) = slots.dirty_log(place.slot).filter(|_| same) {
                let last = place.offset + buf.len() as u64 - 1;
                for page in (place.offset >> 12)..=(last >> 12) {
                    bitmap.mark(page);
                }
            }
        }
        Some(())
    }

    /// Where `len` bytes at `gpa` are, all in one slot (a writable one if
    /// `write`).
    fn guest_uaddr(&self, space: Space, gpa: u64, len: usize, write: bool) -> Option<GuestPlace> {
        let inner = self.inner.lock();
        let slot = inner.spaces[space.index()].slots.find(gpa)?;
        if write && slot.is_readonly() {
            return None;
        }
        GuestPlace::in_slot(slot, gpa, len)
    }

    /// `KVM_GET_DIRTY_LOG`: copies slot `slot`'s dirty bitmap to user
    /// space. Without manual protection, the bits handed out are cleared
    /// and their pages write-protected again (TLBs flushed) before the copy;
    /// with it, the bitmap is only read (dirty/). `EINVAL` for a slot number
    /// out of range, `ENOENT` for a slot that does not exist or does not
    /// log, `EFAULT` for a bitmap rkvm cannot write: KVM's order.
    fn get_dirty_log(&self, arg: usize) -> Result<isize> {
        let log: abi::DirtyLogArg = user::read(arg)?;
        let (space, id) = memslot::slot_id(log.slot).ok_or(EINVAL)?;
        let sp = space.index();
        // The copy is allocated without the lock (it may be megabytes, and
        // every vCPU's faults take the lock), then filled under it; if the
        // slot changed size meanwhile, again.
        let copy = loop {
            let words = self.inner.lock().spaces[sp]
                .slots
                .dirty_log(id)
                .map(|b| b.words())
                .ok_or(ENOENT)?;
            let mut copy = KVVec::from_elem(0u64, words, GFP_KERNEL_ACCOUNT)?;
            let mut inner = self.inner.lock();
            let manual = inner.manual_dirty_log != 0;
            let slots = &mut inner.spaces[sp].slots;
            let slot = *slots.get(id).ok_or(ENOENT)?;
            let bitmap = slots.dirty_log(id).ok_or(ENOENT)?;
            if bitmap.words() != words {
                continue;
            }
            let mut taken = false;
            for (w, word) in copy.iter_mut().enumerate() {
                *word = if manual {
                    bitmap.word(w)
                } else {
                    bitmap.take(w)
                };
                taken |= !manual && *word != 0;
            }
            if taken {
                Self::protect_again(&mut inner, space, &slot, 0, &copy);
                self.flush_guest_tlbs(&inner);
            }
            break copy;
        };
        user::write_words(log.dirty_bitmap as usize, &copy)?;
        Ok(0)
    }

    /// `KVM_CLEAR_DIRTY_LOG`: clears the bits user space passes for
    /// `num_pages` pages from `first_page` of a slot and write-protects the
    /// pages whose bits were set. Meant for manual protection, but, as in
    /// KVM, it works without. KVM's checks in KVM's order (dirty/).
    fn clear_dirty_log(&self, arg: usize) -> Result<isize> {
        let log: abi::ClearDirtyLogArg = user::read(arg)?;
        let (space, id) = memslot::slot_id(log.slot).ok_or(EINVAL)?;
        let sp = space.index();
        if log.first_page % dirty::PAGES_PER_WORD != 0 {
            return Err(EINVAL);
        }
        let pages = {
            let mut inner = self.inner.lock();
            let slots = &mut inner.spaces[sp].slots;
            let slot = *slots.get(id).ok_or(ENOENT)?;
            slots.dirty_log(id).ok_or(ENOENT)?;
            slot.pages()
        };
        if !dirty::clear_range_ok(log.first_page, log.num_pages, pages) {
            return Err(EINVAL);
        }
        let words = dirty::clear_bytes(log.num_pages) / 8;
        let masks = user::read_words(log.dirty_bitmap as usize, words)?;
        let mut inner = self.inner.lock();
        // The slot may have changed while unlocked: check again, as nothing was done yet.
        let slots = &mut inner.spaces[sp].slots;
        let slot = *slots.get(id).ok_or(ENOENT)?;
        if slot.pages() != pages {
            return Err(EINVAL);
        }
        let bitmap = slots.dirty_log(id).ok_or(ENOENT)?;
        let first_word = (log.first_page / dirty::PAGES_PER_WORD) as usize;
        let mut cleared = masks;
        let mut any = false;
        for (i, mask) in cleared.iter_mut().enumerate() {
            *mask = bitmap.clear(first_word + i, *mask);
            any |= *mask != 0;
        }
        if any {
            Self::protect_again(&mut inner, space, &slot, first_word, &cleared);
            self.flush_guest_tlbs(&inner);
        }
        Ok(0)
    }

    /// Write-protects the pages of `slot` whose bits are set in `masks`,
    /// word `i` of `masks` being word `first_word + i` of the bitmap. The
    /// caller flushes the TLBs.
    fn protect_again(
        inner: &mut VmInner,
        space: Space,
        slot: &Slot,
        first_word: usize,
        masks: &[u64],
    ) {
        let start = slot.gpa + first_word as u64 * dirty::PAGES_PER_WORD * 4096;
        let end = (start + masks.len() as u64 * dirty::PAGES_PER_WORD * 4096).min(slot.end());
        inner.spaces[space.index()]
            .slat
            .write_protect(start, end, &mut |gpa| {
                let page = (gpa - start) / 4096;
                masks
                    .get((page / dirty::PAGES_PER_WORD) as usize)
                    .is_some_and(|m| m & (1 << (page % dirty::PAGES_PER_WORD)) != 0)
            });
    }

    /// `KVM_SET_TSC_KHZ` on the VM, as KVM's: the rate vCPUs created from
    /// now on tell their guest (`arg`'s low 32 bits; 0 for the host's),
    /// `EINVAL` once a vCPU has been created. KVM takes any rate here and
    /// applies it when each vCPU is created (a vCPU then reports it even
    /// when its TSC cannot run at it); rkvm checks it here, with the vCPU
    /// ioctl's rules (x86/tsc.rs): `EINVAL` for a rate it cannot give.
    fn set_tsc_khz(&self, arg: usize) -> Result<isize> {
        let khz = tsc::accept_tsc_khz(arg as u32, cpu::tsc_khz()).ok_or(EINVAL)?;
        let mut inner = self.inner.lock();
        // A vCPU's creation has begun once the shared TSC offset is set.
        if !inner.vcpus.is_empty() || inner.tsc_offset.is_some() {
            return Err(EINVAL);
        }
        inner.default_tsc_khz = khz;
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
        // With an in-kernel irqchip, each vCPU gets its local APIC.
        let (chip, bsp_id, tsc_offset, tsc_khz, bus_cycle_ns) = {
            let mut inner = this.inner.lock();
            // Below the VM's own limit too (KVM_CAP_MAX_VCPU_ID), as KVM's
            // `kvm_arch_vcpu_precreate`. It cannot change afterwards: once
            // set it stays.
            if inner.max_vcpu_ids != 0 && id >= inner.max_vcpu_ids {
                return Err(EINVAL);
            }
            let tsc_offset = *inner
                .tsc_offset
                .get_or_insert_with(|| 0u64.wrapping_sub(cpu::rdtsc()));
            (
                inner.irqchip.clone(),
                inner.bsp_vcpu_id,
                tsc_offset,
                match inner.default_tsc_khz {
                    0 => cpu::tsc_khz(),
                    khz => khz,
                },
                inner.apic_bus_cycle_ns,
            )
        };
        let bsp = id as u64 == bsp_id;
        let apic = match chip {
            Some(_) => Some(VcpuApic::new(
                id as u32,
                bsp,
                true,
                bus_cycle_ns,
                this.stats.clone(),
            )?),
            None => None,
        };
        let link = chip
            .zip(apic.clone())
            .map(|(chip, apic)| IrqLink::new(chip, apic, bsp));
        let vcpu = Vcpu::new(id as u32, bsp, &this.shared, link, tsc_offset, tsc_khz)?;
        let fd_object = VcpuFd::new(this.into(), vcpu.clone())?;
        let index = {
            let mut inner = this.inner.lock();
            if inner.vcpus.len() >= MAX_VCPUS {
                return Err(EINVAL);
            }
            if inner.vcpu_ids[word] & bit != 0 {
                return Err(EEXIST);
            }
            // KVM_CREATE_IRQCHIP cannot have come in between: it refuses a VM with vCPUs,
            // and this one was built for the irqchip it saw.
            if inner.irqchip.is_some() != apic.is_some() {
                return Err(EINVAL);
            }
            if let (Some(chip), Some(apic)) = (&inner.irqchip, &apic) {
                chip.add_apic(apic.clone())?;
            }
            if let Err(e) = inner.vcpus.push(vcpu.clone(), GFP_KERNEL_ACCOUNT) {
                if let (Some(chip), Some(apic)) = (&inner.irqchip, &apic) {
                    chip.remove_apic(apic);
                }
                return Err(e.into());
            }
            inner.vcpu_ids[word] |= bit;
            inner.vcpus.len() - 1
        };
        // Its place among the VM's vCPUs, as KVM's `vcpu_idx` (the state
        // lock is never taken inside the VM's).
        vcpu.set_hv_vp_index(index as u32);
        new_anon_fd(c"rkvm-vcpu", &VCPU_FOPS, fd_object)
            .map(|fd| fd as isize)
            .inspect_err(|_| {
                // No fd: the vCPU never existed for userspace. Take it back out.
                let mut inner = this.inner.lock();
                inner.vcpus.retain(|v| !Arc::ptr_eq(v, &vcpu));
                inner.vcpu_ids[word] &= !bit;
                if let (Some(chip), Some(apic)) = (&inner.irqchip, &apic) {
                    chip.remove_apic(apic);
                }
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

    /// `KVM_CREATE_IRQCHIP`: the in-kernel PIC and IOAPIC, and a local APIC
    /// for every vCPU created afterwards. As KVM: `EEXIST` the second time,
    /// `EINVAL` once a vCPU exists.
    fn create_irqchip(&self) -> Result<isize> {
        let mut inner = self.inner.lock();
        if inner.irqchip.is_some() {
            return Err(EEXIST);
        }
        if !inner.vcpus.is_empty() {
            return Err(EINVAL);
        }
        inner.irqchip = Some(Irqchip::new(
            self.stats.clone(),
            ChipMode::Full,
            self.api.clone(),
        )?);
        Ok(0)
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: local APICs in the kernel,
    /// the IOAPIC and PIC in user space, whose IOAPIC has `reserved_pins`
    /// GSIs (`ChipMode::Split`). As KVM's `kvm_vm_ioctl_enable_cap`:
    /// more pins than routes is `EINVAL`; an irqchip of either kind, or a
    /// vCPU, is `EEXIST`.
    fn create_split_irqchip(&self, reserved_pins: u64) -> Result<isize> {
        if reserved_pins > u64::from(MAX_ROUTES) {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        if inner.irqchip.is_some() || !inner.vcpus.is_empty() {
            return Err(EEXIST);
        }
        let mode = ChipMode::Split {
            reserved_pins: reserved_pins as u32,
        };
        inner.irqchip = Some(Irqchip::new(self.stats.clone(), mode, self.api.clone())?);
        Ok(0)
    }

    /// The irqchip, or `ENXIO` as KVM answers its ioctls without one.
    fn irqchip(&self) -> Result<Arc<Irqchip>> {
        self.inner.lock().irqchip.clone().ok_or(ENXIO)
    }

    /// The irqchip if the PIC and IOAPIC are in the kernel, else `ENXIO`
    /// (KVM's `irqchip_full` checks of `KVM_GET/SET_IRQCHIP`).
    fn full_irqchip(&self) -> Result<Arc<Irqchip>> {
        self.irqchip()
            .and_then(|c| if c.is_split() { Err(ENXIO) } else { Ok(c) })
    }

    /// `KVM_IRQ_LINE`: `struct kvm_irq_level` is the GSI and its level
    /// (any non-zero level is high). `KVM_IRQ_LINE_STATUS` (`status`)
    /// writes back, in the GSI's place, whether and where the interrupt
    /// went (`Irqchip::set_irq`).
    fn irq_line(&self, arg: usize, status: bool) -> Result<isize> {
        let [gsi, level]: [u32; 2] = user::read(arg)?;
        let result = self.irqchip()?.set_irq(gsi, Source::User, level != 0);
        if status {
            user::write(arg, &result)?;
        }
        Ok(0)
    }

    /// `KVM_GET_IRQCHIP`: the state of the chip `chip_id` names (0 and 1
    /// the master and slave PIC, 2 the IOAPIC; others `EINVAL`).
    fn get_irqchip(&self, arg: usize) -> Result<isize> {
        let mut buf: [u8; IRQCHIP_BYTES] = user::read(arg)?;
        let chip_id = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let state = self.full_irqchip()?.get_state(chip_id)?;
        buf[8..].copy_from_slice(&state);
        user::write(arg, &buf)?;
        Ok(0)
    }

    /// `KVM_SET_IRQCHIP`.
    fn set_irqchip(&self, arg: usize) -> Result<isize> {
        let buf: [u8; IRQCHIP_BYTES] = user::read(arg)?;
        let chip_id = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let chip = self.full_irqchip()?;
        if chip_id > CHIP_IOAPIC {
            return Err(EINVAL);
        }
        let mut state = [0u8; 512];
        state.copy_from_slice(&buf[8..]);
        chip.set_state(chip_id, &state)?;
        Ok(0)
    }

    /// `KVM_SET_GSI_ROUTING`: a routing table maps GSIs to the pins of the
    /// in-kernel PIC or IOAPIC, or to MSIs the in-kernel APICs take
    /// (`irq/routing.rs`). In KVM's order: the header is read, then a VM
    /// without an in-kernel irqchip (`kvm_arch_can_set_irq_routing`), more
    /// than 4096 entries and header flags are `EINVAL`, then the entries
    /// are read and checked; the new table replaces the old one whole.
    fn set_gsi_routing(&self, arg: usize) -> Result<isize> {
        // The header: `nr` and `flags` (`struct kvm_irq_routing` before its entries).
        let [nr, flags]: [u32; 2] = user::read(arg)?;
        let chip = self.irqchip().map_err(|_| EINVAL)?;
        if nr > MAX_ROUTES || flags != 0 {
            return Err(EINVAL);
        }
        let entries: KVec<[u8; ENTRY_BYTES]> = user::read_array(arg + 8, nr as usize)?;
        let routing = Routing::from_entries(&entries).map_err(|e| match e {
            RoutingError::Alloc => ENOMEM,
            _ => EINVAL,
        })?;
        // A split irqchip has no PIC or IOAPIC pins to route to; 32-bit APIC
        // IDs make some MSI addresses invalid (KVM's `kvm_set_routing_entry`).
        if (chip.is_split() && routing.has_pin_routes())
            || routing.has_invalid_msi(self.api.ids32())
        {
            return Err(EINVAL);
        }
        chip.set_routing(routing);
        Ok(0)
    }

    /// `KVM_SIGNAL_MSI`: `struct kvm_msi` (address low and high, data,
    /// flags, device id). Flags other than `KVM_MSI_VALID_DEVID` or no
    /// irqchip are `EINVAL`, as KVM (the device id is ignored on x86). The
    /// result is how many APICs took it, 0 if none did (as KVM's fast
    /// delivery path answers; its slow path would say -1).
    fn signal_msi(&self, arg: usize) -> Result<isize> {
        // struct kvm_msi: address low and high, data, flags, device id, 12 bytes of padding.
        let [address_lo, address_hi, data, flags, _devid, ..]: [u32; 8] = user::read(arg)?;
        let chip = self.irqchip().map_err(|_| EINVAL)?;
        if flags & !abi::KVM_MSI_VALID_DEVID != 0 {
            return Err(EINVAL);
        }
        let msi = Msi {
            address: u64::from(address_lo) | (u64::from(address_hi) << 32),
            data,
        };
        // With 32-bit APIC IDs, KVM's `kvm_set_msi` refuses the address.
        if !msi.valid_in(self.api.ids32()) {
            return Err(EINVAL);
        }
        Ok(chip.send_msi(&msi) as isize)
    }

    /// `KVM_IRQFD` (`eventfd/irqfd.rs`).
    fn irqfd(&self, arg: usize) -> Result<isize> {
        let chip = self.inner.lock().irqchip.clone();
        self.irqfds.lock().ioctl(chip, arg)
    }

    /// `KVM_IOEVENTFD`: adds or removes an entry of the ioeventfd table
    /// (`eventfd/ioeventfd.rs`), with KVM's errnos: the request is checked,
    /// then the eventfd looked up (`EBADF`, `EINVAL`), then the table.
    fn ioeventfd(&self, arg: usize) -> Result<isize> {
        use ioeventfd::Error;
        let args: abi::kvm_ioeventfd = user::read(arg)?;
        let errno = |e: Error| match e {
            Error::Invalid => EINVAL,
            Error::Exists => EEXIST,
            Error::Full => ENOSPC,
            Error::NotFound => ENOENT,
            Error::NoMemory => ENOMEM,
        };
        let req = ioeventfd::parse(&args).map_err(errno)?;
        let eventfd = EventFd::from_fd(req.fd)?;
        let mut table = self.ioeventfds.lock();
        if req.deassign {
            table
                .deassign(&req.key, |e| e.id() == eventfd.id())
                .map_err(errno)?;
        } else {
            table.assign(req.key, eventfd).map_err(errno)?;
        }
        self.ioeventfd_count.store(table.len(), Ordering::SeqCst);
        Ok(0)
    }

    /// A guest write of `len` bytes of `value` to `addr` on `bus`: if an
    /// ioeventfd matches it, the eventfd is signalled and the write is
    /// done (`true`).
    pub(crate) fn ioeventfd_write(&self, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        if self.ioeventfd_count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let table = self.ioeventfds.lock();
        match table.lookup(bus, addr, len, value) {
            Some(eventfd) => {
                eventfd.signal();
                self.stats.ioeventfd_signals.add(1);
                true
            }
            None => false,
        }
    }

    /// `KVM_SET_BOOT_CPU_ID`: which vCPU id is the bootstrap processor
    /// (its APIC base has the BSP flag, it starts runnable with an
    /// in-kernel APIC, which takes the PIC's interrupts through LINT0).
    /// As KVM: `EBUSY` once a vCPU was created, `EINVAL` above the highest
    /// vCPU id (KVM compares with `>`, so the id one past the last is
    /// accepted, and no vCPU can then be the BSP).
    fn set_boot_cpu_id(&self, id: usize) -> Result<isize> {
        let mut inner = self.inner.lock();
        if inner.vcpu_ids.iter().any(|&w| w != 0) {
            return Err(EBUSY);
        }
        if id > MAX_VCPU_IDS || (inner.max_vcpu_ids != 0 && id > inner.max_vcpu_ids) {
            return Err(EINVAL);
        }
        inner.bsp_vcpu_id = id as u64;
        Ok(0)
    }

    /// `KVM_CREATE_PIT2` with `struct kvm_pit_config` at `arg` (its flags;
    /// KVM checks none), or the older `KVM_CREATE_PIT` (`arg` `None`),
    /// which is `KVM_PIT_SPEAKER_DUMMY`. As KVM: `EEXIST` the second time,
    /// `ENOENT` without the in-kernel irqchip.
    fn create_pit(&self, arg: Option<usize>) -> Result<isize> {
        let flags = match arg {
            Some(arg) => user::read::<abi::kvm_pit_config>(arg)?.flags,
            None => abi::KVM_PIT_SPEAKER_DUMMY,
        };
        let mut slot = self.pit.lock();
        if slot.0.is_some() {
            return Err(EEXIST);
        }
        // The PIT's ticks go to the in-kernel PIC and IOAPIC.
        let chip = self.full_irqchip().map_err(|_| ENOENT)?;
        slot.0 = Some(PitDevice::new(chip.clone(), flags)?);
        chip.attach_pit();
        Ok(0)
    }

    /// The PIT, or `ENXIO` as KVM answers its ioctls without one.
    fn pit(&self) -> Result<Arc<PitDevice>> {
        self.pit.lock().0.clone().ok_or(ENXIO)
    }

    /// A guest IN from `port`, if the in-kernel PIT has it (see
    /// `PitDevice::port_in`).
    pub(crate) fn pit_port_in(&self, port: u16) -> Option<Option<u8>> {
        if !pit::claims_port(port) && port != pit::SPEAKER_PORT {
            return None;
        }
        self.pit.lock().0.clone()?.port_in(port)
    }

    /// A guest OUT to `port`: `true` if the in-kernel PIT took it.
    pub(crate) fn pit_port_out(&self, port: u16, value: u8) -> bool {
        if !pit::claims_port(port) && port != pit::SPEAKER_PORT {
            return false;
        }
        let pit = self.pit.lock().0.clone();
        pit.is_some_and(|p| p.port_out(port, value))
    }

    /// `KVM_GET_PIT2`.
    fn get_pit2(&self, arg: usize) -> Result<isize> {
        let state = self.pit()?.get_state();
        user::write(arg, &state.to_bytes())?;
        Ok(0)
    }

    /// `KVM_SET_PIT2`: read first, then `ENXIO` without a PIT (KVM's order).
    fn set_pit2(&self, arg: usize) -> Result<isize> {
        let bytes: [u8; State2::BYTES] = user::read(arg)?;
        self.pit()?.set_state(&State2::from_bytes(&bytes));
        Ok(0)
    }

    /// `KVM_GET_PIT` (the counters without the flags); KVM reads the
    /// argument before it looks for the PIT.
    fn get_pit(&self, arg: usize) -> Result<isize> {
        let _: [u8; State::BYTES] = user::read(arg)?;
        let state = self.pit()?.get_channels();
        user::write(arg, &state.to_bytes())?;
        Ok(0)
    }

    /// `KVM_SET_PIT`.
    fn set_pit(&self, arg: usize) -> Result<isize> {
        let bytes: [u8; State::BYTES] = user::read(arg)?;
        self.pit()?.set_channels(&State::from_bytes(&bytes));
        Ok(0)
    }

    /// `KVM_REINJECT_CONTROL`: `struct kvm_reinject_control`'s first byte
    /// turns the PIT's tick reinjection on (KVM's default) or off.
    fn reinject_control(&self, arg: usize) -> Result<isize> {
        let control: [u8; 32] = user::read(arg)?;
        let _ = self.pit()?;
        self.irqchip()?.set_pit_reinject(control[0] != 0);
        Ok(0)
    }

    /// `KVM_ENABLE_CAP` on a VM fd: `KVM_CAP_SPLIT_IRQCHIP`,
    /// `KVM_CAP_X2APIC_API` (any time, as KVM: `ApicApi::enable`),
    /// `KVM_CAP_MAX_VCPU_ID`, `KVM_CAP_MSR_PLATFORM_INFO`,
    /// `KVM_CAP_X86_APIC_BUS_CYCLES_NS` and
    /// `KVM_CAP_EXIT_ON_EMULATION_FAILURE` (0 or 1); flags, and every other capability, are
    /// `EINVAL`, as KVM answers one it does not know
    /// (`kvm_vm_ioctl_enable_cap`).
    fn enable_cap(&self, arg: usize) -> Result<isize> {
        let cap: kvm_enable_cap = user::read(arg)?;
        if cap.flags != 0 {
            return Err(EINVAL);
        }
        match cap.cap {
            abi::KVM_CAP_SPLIT_IRQCHIP => self.create_split_irqchip(cap.args[0]),
            abi::KVM_CAP_X2APIC_API => self.api.enable(cap.args[0]).map(|()| 0),
            abi::KVM_CAP_MAX_VCPU_ID => self.set_max_vcpu_ids(cap.args[0]),
            // Any value: non-zero lets the guest read the MSR, as KVM.
            abi::KVM_CAP_MSR_PLATFORM_INFO => {
                let readable = cap.args[0] != 0;
                self.platform_info_readable
                    .store(readable, Ordering::Relaxed);
                Ok(0)
            }
            abi::KVM_CAP_X86_APIC_BUS_CYCLES_NS => self.set_apic_bus_cycle_ns(cap.args[0]),
            // Dirty logging's protocol (dirty/); any time, as KVM.
            abi::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 if dirty::manual_caps_ok(cap.args[0]) => {
                self.inner.lock().manual_dirty_log = cap.args[0];
                Ok(0)
            }
            // Quirks: KVM behaviours kept for old guests and VMMs that a VMM
            // may turn off. The second version refuses a quirk rkvm does
            // not have; the first ignores it, as KVM.
            abi::KVM_CAP_DISABLE_QUIRKS2 if cap.args[0] & !QUIRKS != 0 => Err(EINVAL),
            abi::KVM_CAP_DISABLE_QUIRKS | abi::KVM_CAP_DISABLE_QUIRKS2 => {
                self.disabled_quirks
                    .fetch_or(cap.args[0] & QUIRKS, Ordering::Relaxed);
                Ok(0)
            }
            // Which refused guest MSR accesses exit to user space (run/).
            abi::KVM_CAP_X86_USER_SPACE_MSR => {
                let mask = u32::try_from(cap.args[0])
                    .ok()
                    .filter(|m| m & !abi::KVM_MSR_EXIT_REASON_VALID_MASK == 0)
                    .ok_or(EINVAL)?;
                self.user_space_msr.store(mask, Ordering::Relaxed);
                Ok(0)
            }
            abi::KVM_CAP_EXIT_ON_EMULATION_FAILURE => match cap.args[0] {
                on @ (0 | 1) => {
                    let on = on == 1;
                    self.exit_on_emulation_failure.store(on, Ordering::Relaxed);
                    Ok(0)
                }
                _ => Err(EINVAL),
            },
            _ => Err(EINVAL),
        }
    }

    /// Whether the guest may read MSR_PLATFORM_INFO (see the field).
    pub(crate) fn platform_info_readable(&self) -> bool {
        self.platform_info_readable.load(Ordering::Relaxed)
    }

    /// Whether a guest MSR access refused for `reason`
    /// (`KVM_MSR_EXIT_REASON_*`) exits to user space.
    pub(crate) fn msr_exits_to_user(&self, reason: u32) -> bool {
        self.user_space_msr.load(Ordering::Relaxed) & reason != 0
    }

    /// Whether the MSR filter lets the guest access MSR `index` (write if
    /// `write`) in the kernel; with no filter, every MSR.
    pub(crate) fn msr_allowed(&self, index: u32, write: bool) -> bool {
        if !self.msr_filter_on.load(Ordering::Acquire) {
            return true;
        }
        self.msr_filter
            .lock()
            .as_ref()
            .is_none_or(|f| f.allows(index, write))
    }

    /// `KVM_X86_SET_MSR_FILTER`: `struct kvm_msr_filter` (its flags, then
    /// 16 ranges of flags, count, base and a user pointer to a bitmap),
    /// checked and copied as KVM's `kvm_vm_ioctl_set_msr_filter` does
    /// (x86/msr_filter.rs has the rules: `EINVAL`), every bitmap copied
    /// (`EFAULT`) before the new filter replaces the old one. A filter
    /// that allows by default and has no range is as none.
    fn set_msr_filter(&self, arg: usize) -> Result<isize> {
        const RANGES: usize = abi::KVM_MSR_FILTER_MAX_RANGES as usize;
        let raw: [u8; 8 + 24 * RANGES] = user::read(arg)?;
        let u32_at = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        let range = |i: usize| {
            let o = 8 + 24 * i;
            let mut ptr = [0u8; 8];
            ptr.copy_from_slice(&raw[o + 16..o + 24]);
            (
                u32_at(o),
                u32_at(o + 4),
                u32_at(o + 8),
                u64::from_le_bytes(ptr),
            )
        };
        let default_allow = msr_filter::check_flags(u32_at(0), (0..RANGES).map(|i| range(i).1))
            .map_err(|_| EINVAL)?;
        let mut filter = MsrFilter::new(default_allow);
        let mut ranges = 0;
        for i in 0..RANGES {
            let (flags, nmsrs, base, bitmap) = range(i);
            let Some(bytes) = msr_filter::bitmap_bytes(flags, nmsrs).map_err(|_| EINVAL)? else {
                continue;
            };
            let addr = usize::try_from(bitmap).map_err(|_| EFAULT)?;
            let bitmap: KVec<u8> = user::read_array(addr, bytes)?;
            filter.push(flags, base, nmsrs, bitmap)?;
            ranges += 1;
        }
        let on = !default_allow || ranges > 0;
        let mut slot = self.msr_filter.lock();
        *slot = on.then_some(filter);
        self.msr_filter_on.store(on, Ordering::Release);
        Ok(0)
    }

    /// Whether quirk `quirk` (`KVM_X86_QUIRK_*`) is in force: the VMM has
    /// not turned it off.
    pub(crate) fn has_quirk(&self, quirk: u64) -> bool {
        self.disabled_quirks.load(Ordering::Relaxed) & quirk == 0
    }

    /// Whether every emulation failure exits to user space (see the field).
    pub(crate) fn exit_on_emulation_failure(&self) -> bool {
        self.exit_on_emulation_failure.load(Ordering::Relaxed)
    }

    /// The TSC offset the VM's vCPUs share (see the field); 0 before the
    /// first vCPU.
    pub(crate) fn tsc_offset(&self) -> u64 {
        self.inner.lock().tsc_offset.unwrap_or(0)
    }

    /// The VM's kvmclock reference (x86/pvclock.rs).
    pub(crate) fn kvmclock(&self) -> ClockRef {
        self.inner.lock().kvmclock
    }

    /// Runs `f` on the VM's Hyper-V state (run/hyperv.rs), then notes
    /// whether its reference TSC page is due, and for which TSC offset it
    /// is set.
    pub(crate) fn with_hyperv<R>(&self, f: impl FnOnce(&mut hyperv::Partition) -> R) -> R {
        let mut partition = self.hyperv.lock();
        let r = f(&mut partition);
        self.hyperv_tsc_page_due
            .store(partition.tsc_page_due().is_some(), Ordering::Release);
        let set = partition.tsc_page_offset();
        self.hyperv_tsc_page_offset
            .store(set.unwrap_or(0), Ordering::Release);
        self.hyperv_tsc_page_set
            .store(set.is_some(), Ordering::Release);
        r
    }

    /// The TSC offset the Hyper-V reference TSC page was written for, if
    /// it is set (without the lock; updated under it).
    pub(crate) fn hyperv_tsc_page_offset(&self) -> Option<u64> {
        self.hyperv_tsc_page_set
            .load(Ordering::Acquire)
            .then(|| self.hyperv_tsc_page_offset.load(Ordering::Acquire))
    }

    /// Whether the Hyper-V reference TSC page must be written before the
    /// next entry (without the lock).
    pub(crate) fn hyperv_tsc_page_due(&self) -> bool {
        self.hyperv_tsc_page_due.load(Ordering::Acquire)
    }

    /// The local APICs' bus cycle in ns (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`).
    pub(crate) fn apic_bus_cycle_ns(&self) -> u64 {
        self.inner.lock().apic_bus_cycle_ns
    }

    /// How many times `KVM_SET_CLOCK` moved the kvmclock: read without a
    /// lock before every entry, so that a vCPU takes the VM's lock only
    /// when its time structure must be rewritten.
    pub(crate) fn kvmclock_generation(&self) -> u64 {
        self.kvmclock_generation.load(Ordering::Acquire)
    }

    /// `KVM_GET_CLOCK`: the kvmclock now, with the host's TSC and wall
    /// clock read at (nearly: one after the other) the same moment, and
    /// the flags saying so (`KVM_CLOCK_TSC_STABLE`: one clock for every
    /// vCPU, `KVM_CLOCK_REALTIME`, `KVM_CLOCK_HOST_TSC`). As KVM's
    /// `__get_kvmclock` with its master clock.
    fn get_clock(&self, arg: usize) -> Result<isize> {
        let clock = self.kvmclock();
        let host_tsc = cpu::rdtsc();
        let realtime = cpu::realtime_ns();
        let data = abi::kvm_clock_data {
            clock: clock.at(host_tsc, cpu::tsc_khz()),
            flags: abi::KVM_CLOCK_TSC_STABLE | abi::KVM_CLOCK_REALTIME | abi::KVM_CLOCK_HOST_TSC,
            realtime,
            host_tsc,
            ..Default::default()
        };
        user::write(arg, &data)?;
        Ok(0)
    }

    /// `KVM_SET_CLOCK`: the kvmclock reads `clock` now; with
    /// `KVM_CLOCK_REALTIME`, plus the wall-clock time elapsed since
    /// `realtime` (never minus: the clock does not step back), as KVM's
    /// `kvm_vm_ioctl_set_clock`. A flag KVM does not define is `EINVAL`.
    /// Every vCPU's kvmclock structure is rewritten at its next entry, and
    /// the Hyper-V reference TSC page if the guest has one.
    fn set_clock(&self, arg: usize) -> Result<isize> {
        let data: abi::kvm_clock_data = user::read(arg)?;
        let valid = abi::KVM_CLOCK_TSC_STABLE | abi::KVM_CLOCK_REALTIME | abi::KVM_CLOCK_HOST_TSC;
        if data.flags & !valid != 0 {
            return Err(EINVAL);
        }
        let mut ns = data.clock;
        if data.flags & abi::KVM_CLOCK_REALTIME != 0 {
            let now = cpu::realtime_ns();
            if now > data.realtime {
                ns = ns.wrapping_add(now - data.realtime);
            }
        }
        let mut inner = self.inner.lock();
        inner.kvmclock = ClockRef {
            host_tsc: cpu::rdtsc(),
            ns,
        };
        self.kvmclock_generation.fetch_add(1, Ordering::Release);
        drop(inner);
        self.with_hyperv(|p| p.clock_moved());
        Ok(0)
    }

    /// Makes `offset` the one the VM's vCPUs share (a host write of a TSC).
    pub(crate) fn set_tsc_offset(&self, offset: u64) {
        self.inner.lock().tsc_offset = Some(offset);
    }

    /// `KVM_SET_NR_MMU_PAGES`: how many pages of shadow page tables the
    /// VM may use. Below 64 (`KVM_MIN_ALLOC_MMU_PAGES`) is `EINVAL`, as
    /// KVM. rkvm maps guest memory with nested paging only, whose tables
    /// KVM does not count against this limit either: the value is kept
    /// for when shadow paging counts its pages (docs/abi.md).
    fn set_nr_mmu_pages(&self, pages: usize) -> Result<isize> {
        const MIN_ALLOC_MMU_PAGES: usize = 64;
        if pages < MIN_ALLOC_MMU_PAGES {
            return Err(EINVAL);
        }
        self.inner.lock().nr_mmu_pages = Some(pages);
        Ok(0)
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_X86_APIC_BUS_CYCLES_NS)`: the local APICs'
    /// timers count `ns`-long bus cycles (before the divider). As KVM:
    /// `EINVAL` for 0 or a cycle whose longest count overflows 64 bits of
    /// ns, `ENXIO` without an in-kernel irqchip, `EINVAL` once a vCPU exists.
    fn set_apic_bus_cycle_ns(&self, ns: u64) -> Result<isize> {
        if !lapic::bus_cycle_ns_valid(ns) {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        if inner.irqchip.is_none() {
            return Err(ENXIO);
        }
        if !inner.vcpus.is_empty() {
            return Err(EINVAL);
        }
        inner.apic_bus_cycle_ns = ns;
        Ok(0)
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID)`: the VM's vCPU ids must be
    /// below `limit`. As KVM: `EINVAL` above [`MAX_VCPU_IDS`], below the
    /// boot CPU's id, or once a different limit was set (the same one again
    /// is fine); vCPUs created before keep their ids.
    fn set_max_vcpu_ids(&self, limit: u64) -> Result<isize> {
        let limit = usize::try_from(limit).map_err(|_| EINVAL)?;
        if limit > MAX_VCPU_IDS {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        if inner.bsp_vcpu_id > limit as u64 {
            return Err(EINVAL);
        }
        match inner.max_vcpu_ids {
            0 => inner.max_vcpu_ids = limit,
            set if set == limit => {}
            _ => return Err(EINVAL),
        }
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

/// What backs a guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backing {
    /// A slot, and the page is mapped now.
    Mapped,
    /// No slot: the access is MMIO for user space.
    None,
    /// A write to a read-only slot: MMIO for user space too, as in KVM.
    ReadOnly,
}

/// Where guest-physical bytes are: the owner's address, and the slot and
/// offset in it that gave that address.
struct GuestPlace {
    uaddr: usize,
    slot: u16,
    offset: u64,
}

impl GuestPlace {
    /// Where `len` bytes at `gpa` are in `slot`, if it holds them all.
    fn in_slot(slot: &Slot, gpa: u64, len: usize) -> Option<Self> {
        let last = gpa.checked_add(len as u64)?.checked_sub(1)?;
        if gpa < slot.gpa || last >= slot.end() {
            return None;
        }
        let offset = gpa - slot.gpa;
        Some(GuestPlace {
            uaddr: usize::try_from(slot.uaddr + offset).ok()?,
            slot: slot.id,
            offset,
        })
    }
}

/// Reads guest memory for the work of one exit, remembering the slot of
/// the last read, so that reads that follow in the same slot (the tables
/// of a page walk, the instruction bytes after them) do not look it up
/// under the VM's lock again: a walk and fetch took five locks, each
/// costly with the kernel's lock debugging, where it now takes one. The
/// bytes are copied from the VM owner's memory after the lock is released
/// either way, so a slot changed by another thread during the reads is
/// read just as [`Vm::read_guest_in`] alone would read it.
pub(crate) struct GuestReader<'a> {
    vm: &'a Vm,
    space: Space,
    last: Option<Slot>,
}

impl GuestReader<'_> {
    /// Copies guest-physical memory at `gpa` into `buf`, all from one
    /// slot; `None` if no slot holds all of it, or the copy faults.
    pub(crate) fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        let slot = match self.last {
            Some(s) if s.gpa <= gpa && gpa < s.end() => s,
            _ => {
                let s = *self.vm.inner.lock().spaces[self.space.index()]
                    .slots
                    .find(gpa)?;
                self.last = Some(s);
                s
            }
        };
        let place = GuestPlace::in_slot(&slot, gpa, buf.len())?;
        UserSlice::new(UserPtr::from_addr(place.uaddr), buf.len())
            .reader()
            .read_slice(buf)
            .ok()
    }
}

/// The pins a VM holds on its owner's memory, counted against the owner's
/// `RLIMIT_MEMLOCK` as other long-term pinners (VFIO, RDMA) do: a process
/// without `CAP_IPC_LOCK` cannot pin more than its limit through a guest.
struct GuestPins {
    /// The owner's address space, for the locked-memory count.
    mm: OwnerMm,
}

impl GuestPins {
    /// Pins the 4 KiB page of the owner's memory at `uaddr`.
    fn pin(&self, uaddr: u64, writable: bool) -> Result<HostPhysAddr> {
        self.mm.account_pinned(1, true)?;
        pin_user_page(uaddr, writable).inspect_err(|_| {
            let _ = self.mm.account_pinned(1, false);
        })
    }

    /// Pins the 2 MiB at `huge_uaddr` (2 MiB aligned) if a transparent huge
    /// page backs it (checked first on the page at `uaddr`, which it
    /// contains): `Some` with the first page, 512 pins held.
    fn try_pin_huge(
        &self,
        uaddr: u64,
        huge_uaddr: u64,
        writable: bool,
    ) -> Result<Option<HostPhysAddr>> {
        let pages = (PageSize::Size2M.bytes() / PageSize::Size4K.bytes()) as usize;
        // Cheap test first: is the faulting page part of a huge folio at all?
        if !user_page_in_huge_folio(uaddr, writable)?
            || self.mm.account_pinned(pages, true).is_err()
        {
            return Ok(None);
        }
        match pin_user_contiguous(huge_uaddr, pages, writable) {
            Ok(first) if first.0 % PageSize::Size2M.bytes() == 0 => Ok(Some(first)),
            Ok(first) => {
                // Contiguous but not aligned: no 2 MiB leaf can map it.
                self.unpin(first, PageSize::Size2M, false);
                Ok(None)
            }
            Err(_) => {
                let _ = self.mm.account_pinned(pages, false);
                Ok(None)
            }
        }
    }

    /// Releases the pins of `size` bytes at `page` (every page marked
    /// dirty if the guest could write it).
    fn unpin(&self, page: HostPhysAddr, size: PageSize, dirty: bool) {
        let pages = (size.bytes() / PageSize::Size4K.bytes()) as usize;
        // SAFETY: Callers pass pages this struct pinned, each once, that no leaf maps or that
        // every vCPU has stopped using (see `Vm::unmap`): this is the last use.
        unsafe { unpin_pages(page, pages, dirty) };
        let _ = self.mm.account_pinned(pages, false);
    }

    /// Releases an unmapped leaf's pins and counts it gone.
    fn release(&self, stats: &VmStats, page: HostPhysAddr, size: PageSize, writable: bool) {
        match size {
            PageSize::Size4K => stats.pages_4k.sub(1),
            PageSize::Size2M => stats.pages_2m.sub(1),
        }
        self.unpin(page, size, writable);
    }
}

impl VmInner {
    /// Unpins the pages of the leaves `retire` took out of `[start, end)`
    /// and forgets them: call it once no vCPU can reach them (`Vm::unmap`).
    fn release_retired(&mut self, space: Space, start: u64, end: u64) {
        let VmInner {
            spaces,
            pins,
            stats,
            ..
        } = self;
        spaces[space.index()]
            .slat
            .release(start, end, &mut |page, size, may_write| {
                pins.release(stats, page, size, may_write)
            });
    }
}

impl Drop for VmInner {
    fn drop(&mut self) {
        // No vCPU exists any more (each held a reference to the VM): unmap and unpin all.
        for space in [Space::Normal, Space::Smm] {
            self.spaces[space.index()]
                .slat
                .retire(0, u64::MAX, &mut |_, _| {});
            self.release_retired(space, 0, u64::MAX);
        }
    }
}

impl FileObject for Vm {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.check_caller()?;
        match cmd {
            // The VM's own APIC bus cycle; everything else as the device.
            abi::KVM_CHECK_EXTENSION if arg == abi::KVM_CAP_X86_APIC_BUS_CYCLES_NS as usize => {
                Ok(this.inner.lock().apic_bus_cycle_ns as isize)
            }
            abi::KVM_CHECK_EXTENSION => Ok(check_extension(arg)),
            abi::KVM_CREATE_VCPU => Vm::create_vcpu(this, arg),
            abi::KVM_SET_USER_MEMORY_REGION => {
                let r: kvm_userspace_memory_region = user::read(arg)?;
                if r.flags & !memslot::V1_FLAGS != 0 {
                    return Err(EINVAL);
                }
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
            abi::KVM_CREATE_GUEST_MEMFD => GuestMemfd::create(this, arg),
            abi::KVM_GET_DIRTY_LOG => this.get_dirty_log(arg),
            abi::KVM_CLEAR_DIRTY_LOG => this.clear_dirty_log(arg),
            abi::KVM_SET_TSS_ADDR => this.set_tss_addr(arg),
            abi::KVM_SET_NR_MMU_PAGES => this.set_nr_mmu_pages(arg),
            abi::KVM_SET_IDENTITY_MAP_ADDR => this.set_identity_map_addr(arg),
            abi::KVM_SET_GSI_ROUTING => this.set_gsi_routing(arg),
            abi::KVM_CREATE_IRQCHIP => this.create_irqchip(),
            abi::KVM_SIGNAL_MSI => this.signal_msi(arg),
            abi::KVM_IRQ_LINE => this.irq_line(arg, false),
            abi::KVM_IRQ_LINE_STATUS => this.irq_line(arg, true),
            abi::KVM_GET_IRQCHIP => this.get_irqchip(arg),
            abi::KVM_SET_IRQCHIP => this.set_irqchip(arg),
            abi::KVM_ENABLE_CAP => this.enable_cap(arg),
            // The VM's binary statistics (stats/fd.rs).
            abi::KVM_GET_STATS_FD => StatsFd::new_vm(this.stats.clone()),
            abi::KVM_IRQFD => this.irqfd(arg),
            abi::KVM_IOEVENTFD => this.ioeventfd(arg),
            abi::KVM_REGISTER_COALESCED_MMIO => {
                let zone: abi::kvm_coalesced_mmio_zone = user::read(arg)?;
                this.coalesced.register(&zone)?;
                Ok(0)
            }
            abi::KVM_UNREGISTER_COALESCED_MMIO => {
                let zone: abi::kvm_coalesced_mmio_zone = user::read(arg)?;
                this.coalesced.unregister(&zone)?;
                Ok(0)
            }
            abi::KVM_CREATE_PIT2 => this.create_pit(Some(arg)),
            abi::KVM_SET_BOOT_CPU_ID => this.set_boot_cpu_id(arg),
            abi::KVM_GET_CLOCK => this.get_clock(arg),
            abi::KVM_X86_SET_MSR_FILTER => this.set_msr_filter(arg),
            abi::KVM_SET_CLOCK => this.set_clock(arg),
            abi::KVM_CREATE_PIT => this.create_pit(None),
            abi::KVM_GET_PIT2 => this.get_pit2(arg),
            abi::KVM_SET_PIT2 => this.set_pit2(arg),
            abi::KVM_GET_PIT => this.get_pit(arg),
            abi::KVM_SET_PIT => this.set_pit(arg),
            abi::KVM_REINJECT_CONTROL => this.reinject_control(arg),
            // The rate a new vCPU's guest is told its TSC runs at: the
            // host's unless KVM_SET_TSC_KHZ said otherwise. Linux's KVM
            // selftests read it for every VM.
            abi::KVM_GET_TSC_KHZ => Ok(match this.inner.lock().default_tsc_khz {
                0 => cpu::tsc_khz(),
                khz => khz,
            } as isize),
            abi::KVM_SET_TSC_KHZ => this.set_tsc_khz(arg),
            // KVM answers unknown VM ioctls with ENOTTY (`kvm_arch_vm_ioctl`).
            _ => Err(ENOTTY),
        }
    }
}
