// SPDX-License-Identifier: GPL-2.0

//! A virtual CPU: its architectural state, its shared `kvm_run` pages, and
//! the vCPU fd.
//!
//! The state is vendor-neutral (the `kvm_regs`/`kvm_sregs` a client sees,
//! plus MSRs and CPUID); the backend loads it into its VMCB or VMCS around
//! each entry once `KVM_RUN` exists.

use crate::abi::kvm_interrupt;
use crate::abi::{
    self, kvm_cpuid2, kvm_cpuid_entry2, kvm_debugregs, kvm_device_attr, kvm_enable_cap, kvm_fpu,
    kvm_mp_state, kvm_pre_fault_memory, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
};
use crate::dev::{Shared, System};
use crate::run::{self, apic_base_changed, IrqLink, RunState};
use crate::stats::fd::StatsFd;
use crate::stats::{Kind, Live, VcpuStats};
use crate::sys::cpu;
use crate::sys::file::{FileObject, FileOps};
use crate::sys::fpu::{self, LegacyFpu};
use crate::user;
use crate::vm::Vm;
use crate::x86::cpuid::{self, reset_signature, GuestFeatures};
use crate::x86::msr::{self, MsrContext, MsrFile, SharedRegs};
use crate::x86::regs::{check_sregs, reset_regs, reset_sregs, HostLimits};
use crate::x86::tsc;
use crate::x86::xsave;
use core::sync::atomic::{AtomicI32, Ordering};
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::new_mutex;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex};

/// vCPUs per VM, reported as `KVM_CAP_MAX_VCPUS`: KVM's x86 default
/// (`CONFIG_KVM_MAX_NR_VCPUS`).
pub(crate) const MAX_VCPUS: usize = 1024;
/// vCPU ids are below this, reported as `KVM_CAP_MAX_VCPU_ID`: four per
/// vCPU, as KVM's `KVM_VCPU_ID_RATIO` (APIC IDs of sparse topologies).
pub(crate) const MAX_VCPU_IDS: usize = 4 * MAX_VCPUS;

/// Pages of the vCPU mapping: `struct kvm_run` at page 0, the port-I/O
/// data page at page 1 (`KVM_PIO_PAGE_OFFSET`), and the VM's coalesced-I/O
/// ring at page 2 (`KVM_COALESCED_MMIO_PAGE_OFFSET`, coalesced/), the one
/// page every vCPU of the VM maps. As KVM on x86.
pub(crate) const VCPU_MMAP_PAGES: usize = 3;
/// The vCPU's own pages (the first two).
const OWN_PAGES: usize = 2;
const _: () = assert!(abi::KVM_PIO_PAGE_OFFSET as usize == 1);
const _: () = assert!(abi::KVM_COALESCED_MMIO_PAGE_OFFSET as usize == OWN_PAGES);

/// The state of a vCPU: the architectural registers as `KVM_GET_*`/
/// `KVM_SET_*` see them, and what the run loop keeps between entries.
pub(crate) struct ArchState {
    pub(crate) regs: kvm_regs,
    pub(crate) sregs: kvm_sregs,
    pub(crate) msrs: MsrFile,
    /// The guest's CPUID table (`KVM_SET_CPUID2`); empty until set.
    pub(crate) cpuid: KVec<kvm_cpuid_entry2>,
    /// The features that table advertises, cached.
    pub(crate) features: GuestFeatures,
    /// The vendor vCPU and the run loop's state.
    pub(crate) run: RunState,
    /// The rate the guest is told its TSC runs at, in kHz (KVM's
    /// `virtual_tsc_khz`: `KVM_GET/SET_TSC_KHZ`, Hyper-V's TSC frequency
    /// MSR, the APIC's TSC-deadline timer). Its TSC runs at the host's:
    /// x86/tsc.rs says why the two may differ by 250 ppm.
    pub(crate) tsc_khz: u32,
    /// This is the bootstrap processor (`KVM_SET_BOOT_CPU_ID`, vCPU 0 by
    /// default): its APIC base has the BSP flag after RESET.
    bsp: bool,
}

impl ArchState {
    /// The CPUID table as the guest's CPUID and `KVM_GET_CPUID2` see it.
    fn cpuid_as_reported(&self) -> Result<KVec<kvm_cpuid_entry2>> {
        let mut out = KVec::with_capacity(self.cpuid.len(), GFP_KERNEL_ACCOUNT)?;
        for e in self.cpuid.iter() {
            out.push(run::with_runtime_bits(self, e), GFP_KERNEL_ACCOUNT)?;
        }
        Ok(out)
    }

    /// `KVM_SET_REGS` (and `kvm_run.s.regs` with `KVM_SYNC_X86_REGS`).
    pub(crate) fn set_user_regs(&mut self, regs: &kvm_regs) {
        self.regs = kvm_regs {
            // RFLAGS bit 1 is reserved and always 1. SDM Vol. 1 3.4.3.
            rflags: regs.rflags | 0x2,
            ..*regs
        };
    }

    /// `KVM_GET_SREGS` (and `kvm_run.s.regs` with `KVM_SYNC_X86_SREGS`):
    /// CR8 is the in-kernel APIC's TPR when there is one.
    pub(crate) fn user_sregs(&self) -> kvm_sregs {
        let mut sregs = self.sregs;
        if let Some(link) = self.run.irq.as_ref() {
            sregs.cr8 = link.cr8();
        }
        // rkvm leaves the pending-interrupt bitmap empty (docs/abi.md); an
        // interrupt under injection is in KVM_GET_VCPU_EVENTS.
        sregs.interrupt_bitmap = [0; 4];
        sregs
    }

    /// `KVM_SET_SREGS` (and `kvm_run.s.regs` with `KVM_SYNC_X86_SREGS`):
    /// `EINVAL`, changing nothing, for a state KVM refuses (`check_sregs`).
    pub(crate) fn set_user_sregs(&mut self, host: &HostLimits, new: &kvm_sregs) -> Result {
        check_sregs(host, &self.features, new).map_err(|_| EINVAL)?;
        // A CR8 with reserved bits (above the 4-bit task priority) is ignored, not refused,
        // as KVM's `kvm_set_cr8` does. SDM Vol. 3A 11.8.6.
        let cr8 = if new.cr8 >> 4 == 0 {
            new.cr8
        } else {
            self.sregs.cr8
        };
        // A bit in the pending-interrupt bitmap would ask for an injection; rkvm has no
        // injection before KVM_RUN, so the bitmap is not kept (docs/abi.md).
        let old = &self.sregs;
        let paging_changed =
            old.cr0 != new.cr0 || old.cr3 != new.cr3 || old.cr4 != new.cr4 || old.efer != new.efer;
        self.sregs = kvm_sregs {
            cr8,
            interrupt_bitmap: [0; 4],
            ..*new
        };
        self.run.sregs_changed(paging_changed);
        if let Some(link) = self.run.irq.as_mut() {
            link.set_cr8(cr8);
        }
        // The APIC follows the base MSR's enable and x2APIC bits (a host write: no
        // transition is refused).
        apic_base_changed(self);
        Ok(())
    }

    /// The registers after the INIT KVM does when a guest shuts down.
    pub(crate) fn reset_after_shutdown(&mut self) {
        self.regs = reset_regs(reset_signature(&self.cpuid));
        self.sregs = reset_sregs(self.bsp);
        // kvmclock is off after RESET and INIT, as KVM's `kvmclock_reset`.
        self.msrs.kvm_system_time = 0;
        // Out of SMM, no SMI waiting; SMBASE stays (KVM's `kvm_vcpu_reset`
        // for INIT, which KVM also does after a shutdown).
        self.run.smm = run::smm::SmmState::default();
    }

    /// An INIT from the in-kernel APIC: the registers as after RESET, but
    /// IA32_APIC_BASE kept (SDM Vol. 3A Table 9-1), and nothing left to
    /// deliver or complete.
    pub(crate) fn reset_for_init(&mut self) {
        let apic_base = self.sregs.apic_base;
        self.reset_after_shutdown();
        self.sregs.apic_base = apic_base;
        self.run.init_reset();
    }
}

/// A virtual CPU.
#[pin_data]
pub(crate) struct Vcpu {
    /// The vCPU's own pages of the mapping: see [`VCPU_MMAP_PAGES`].
    run_pages: [Page; OWN_PAGES],
    /// The CPU this vCPU is in the guest on, or -1. Set and cleared with
    /// interrupts off around each entry (run/); read by `Vm::unmap`.
    running_on: AtomicI32,
    /// The vCPU id (`KVM_CREATE_VCPU`'s argument).
    id: u32,
    /// Its statistics (`KVM_GET_STATS_FD`), counted by the run loop.
    stats: Arc<VcpuStats>,
    #[pin]
    state: Mutex<ArchState>,
    _live: Live,
}

impl Vcpu {
    /// Sets the vCPU's Hyper-V VP index (its creation order, given by the
    /// VM once the vCPU is in it).
    pub(crate) fn set_hv_vp_index(&self, index: u32) {
        let mut state = self.state.lock();
        let run = &mut state.run;
        run::hyperv::set_vp_index(&mut run.hv_vp_index, run.irq.as_ref(), index);
    }

    /// Creates a vCPU in its RESET state, the bootstrap processor if `bsp`,
    /// with its link to the VM's in-kernel irqchip if there is one, and its
    /// TSC running `tsc_offset` from the host's (the VM's shared offset).
    pub(crate) fn new(
        id: u32,
        bsp: bool,
        shared: &Arc<Shared>,
        irq: Option<IrqLink>,
        tsc_offset: u64,
        tsc_khz: u32,
    ) -> Result<Arc<Self>> {
        let run_pages = [
            Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?,
            Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?,
        ];
        let live = Live::new(&shared.stats, Kind::Vcpu);
        let stats = Arc::new(VcpuStats::default(), GFP_KERNEL_ACCOUNT)?;
        let run = RunState::new(shared.backend.create_vcpu()?, irq, stats.clone())?;
        Arc::pin_init(
            pin_init!(Vcpu {
                run_pages,
                running_on: AtomicI32::new(-1),
                id,
                stats,
                state <- new_mutex!(
                    ArchState {
                        regs: reset_regs(reset_signature(&[])),
                        sregs: reset_sregs(bsp),
                        msrs: MsrFile {
                            tsc_offset,
                            ..MsrFile::reset()
                        },
                        cpuid: KVec::new(),
                        features: GuestFeatures::default(),
                        run,
                        tsc_khz,
                        bsp,
                    },
                    "rkvm::Vcpu::state"
                ),
                _live: live,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The shared `struct kvm_run` page.
    pub(crate) fn run_page(&self) -> &Page {
        &self.run_pages[0]
    }

    /// The shared port-I/O data page.
    pub(crate) fn pio_page(&self) -> &Page {
        &self.run_pages[1]
    }

    /// Records the CPU this vCPU is entering the guest on (or `None` when
    /// it has left), sequentially consistent: see `Vm::unmap`.
    pub(crate) fn set_running_on(&self, cpu: Option<u32>) {
        let value = cpu.map_or(-1, |c| c as i32);
        self.running_on.store(value, Ordering::SeqCst);
    }

    /// The CPU this vCPU is in the guest on, if it is.
    pub(crate) fn running_on(&self) -> Option<u32> {
        u32::try_from(self.running_on.load(Ordering::SeqCst)).ok()
    }
}

/// The object behind a vCPU fd: the vCPU and a reference to its VM, which
/// keeps the VM alive while the fd is open.
pub(crate) struct VcpuFd {
    vm: Arc<Vm>,
    vcpu: Arc<Vcpu>,
}

/// The file operations of vCPU fds.
pub(crate) static VCPU_FOPS: FileOps<VcpuFd> = FileOps::new();

impl VcpuFd {
    pub(crate) fn new(vm: Arc<Vm>, vcpu: Arc<Vcpu>) -> Result<Arc<Self>> {
        Ok(Arc::new(VcpuFd { vm, vcpu }, GFP_KERNEL_ACCOUNT)?)
    }

    fn set_regs(&self, arg: usize) -> Result<isize> {
        let regs: kvm_regs = user::read(arg)?;
        self.vcpu.state.lock().set_user_regs(&regs);
        Ok(0)
    }

    fn get_sregs(&self, arg: usize) -> Result<isize> {
        let sregs = self.vcpu.state.lock().user_sregs();
        user::write(arg, &sregs)?;
        Ok(0)
    }

    fn set_sregs(&self, arg: usize) -> Result<isize> {
        let new: kvm_sregs = user::read(arg)?;
        let host = self.vm.shared.backend.host_limits();
        self.vcpu.state.lock().set_user_sregs(&host, &new)?;
        Ok(0)
    }
    /// `KVM_GET_LAPIC` (`EINVAL` without an in-kernel APIC, as KVM).
    fn get_lapic(&self, arg: usize) -> Result<isize> {
        let state = self.vcpu.state.lock();
        let link = state.run.irq.as_ref().ok_or(EINVAL)?;
        let regs = link.apic.get_state(link.chip.api.ids32());
        drop(state);
        user::write(arg, &regs)?;
        Ok(0)
    }

    /// `KVM_SET_LAPIC`: the register page, with the version the APIC has
    /// and, in x2APIC mode, the ID its vCPU id gives.
    fn set_lapic(&self, arg: usize) -> Result<isize> {
        // As KVM: no APIC is EINVAL before the argument is read.
        if self.vcpu.state.lock().run.irq.is_none() {
            return Err(EINVAL);
        }
        let regs: [u8; 1024] = user::read(arg)?;
        let mut state = self.vcpu.state.lock();
        let link = state.run.irq.as_mut().ok_or(EINVAL)?;
        let ids32 = link.chip.api.ids32();
        link.apic.set_state(&regs, ids32, &mut link.timer)?;
        Ok(0)
    }

    /// `KVM_SET_VAPIC_ADDR`: `struct kvm_vapic_addr`, the guest-physical
    /// address of the TPR mirror QEMU's TPR-patching option ROM uses (0:
    /// none). As KVM: `EINVAL` without an in-kernel APIC (before the
    /// argument is read) or for an address guest memory does not back.
    fn set_vapic_addr(&self, arg: usize) -> Result<isize> {
        if self.vcpu.state.lock().run.irq.is_none() {
            return Err(EINVAL);
        }
        let gpa: u64 = user::read(arg)?;
        if gpa != 0 {
            let mut word = [0u8; 4];
            self.vm.read_guest(gpa, &mut word).ok_or(EINVAL)?;
        }
        let mut state = self.vcpu.state.lock();
        state.run.irq.as_mut().ok_or(EINVAL)?.set_vapic(gpa);
        Ok(0)
    }

    /// `KVM_ENABLE_CAP` on a vCPU fd: `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`
    /// (`args[0]` non-zero turns it on, 0 off, as KVM). Flags, and any
    /// other capability, are `EINVAL`, as KVM's
    /// `kvm_vcpu_ioctl_enable_cap`.
    fn enable_cap(&self, arg: usize) -> Result<isize> {
        let cap: kvm_enable_cap = user::read(arg)?;
        if cap.flags != 0 {
            return Err(EINVAL);
        }
        match cap.cap {
            abi::KVM_CAP_ENFORCE_PV_FEATURE_CPUID => {
                self.vcpu.state.lock().run.pv_cpuid_enforced = cap.args[0] != 0;
                Ok(0)
            }
            _ => Err(EINVAL),
        }
    }

    /// `KVM_HAS/GET/SET_DEVICE_ATTR` on a vCPU fd: the one attribute KVM
    /// has there, `KVM_VCPU_TSC_OFFSET` in group `KVM_VCPU_TSC_CTRL`, the
    /// offset from the host's TSC to the guest's (a `u64` at `addr`).
    /// Setting it makes it the offset the VM's vCPUs share, as a host write
    /// of the TSC does (KVM's `__kvm_synchronize_tsc`); TSC_ADJUST stays.
    /// Another group or attribute is `ENXIO`, as KVM; `flags` is not
    /// looked at, as in KVM.
    fn tsc_attr(&self, cmd: u32, arg: usize) -> Result<isize> {
        let attr: kvm_device_attr = user::read(arg)?;
        if attr.group != abi::KVM_VCPU_TSC_CTRL || attr.attr != u64::from(abi::KVM_VCPU_TSC_OFFSET)
        {
            return Err(ENXIO);
        }
        let addr = usize::try_from(attr.addr).map_err(|_| EFAULT)?;
        match cmd {
            abi::KVM_GET_DEVICE_ATTR => {
                let offset = self.vcpu.state.lock().msrs.tsc_offset;
                user::write(addr, &offset)?;
            }
            abi::KVM_SET_DEVICE_ATTR => {
                let offset: u64 = user::read(addr)?;
                self.vcpu.state.lock().msrs.tsc_offset = offset;
                self.vm.set_tsc_offset(offset);
            }
            _ => {}
        }
        Ok(0)
    }

    /// `KVM_GET_MSRS` and `KVM_SET_MSRS`: processes entries in order and
    /// returns how many succeeded, stopping at the first MSR that fails.
    fn msr_io(&self, arg: usize, write: bool) -> Result<isize> {
        let (entries_addr, mut entries) = user::read_msrs(arg)?;
        let host = self.vm.shared.backend.host_limits();
        let vm_tsc_offset = self.vm.tsc_offset();
        let mut tsc_set = None;
        let done = {
            let mut guard = self.vcpu.state.lock();
            let state = &mut *guard;
            let ctx = MsrContext {
                host: &host,
                guest: &state.features,
                host_tsc: cpu::rdtsc(),
                host_initiated: true,
                vm_tsc_offset,
                platform_info_readable: true,
                pv_cpuid_enforced: false,
            };
            let mut shared = SharedRegs {
                efer: &mut state.sregs.efer,
                apic_base: &mut state.sregs.apic_base,
            };
            let mut done = 0;
            let mut apic_base_set = false;
            for e in entries.iter_mut() {
                // A feature MSR keeps its value once the vCPU has run
                // (writing the same one is fine), as KVM's `do_set_msr`.
                let frozen = write
                    && state.run.has_run
                    && msr::immutable_after_run(e.index)
                    && msr::get(&state.msrs, &shared, &ctx, e.index) != Some(e.data);
                let hv_vcpu = run::hyperv::VcpuHv {
                    features: &state.features,
                    tsc_offset: state.msrs.tsc_offset,
                    tsc_khz: state.tsc_khz,
                    vp_index: &mut state.run.hv_vp_index,
                    irq: state.run.irq.as_mut(),
                    space: state.run.smm.space(),
                };
                let hyperv = run::hyperv::msr(&self.vm, hv_vcpu, e.index, &mut e.data, write, true);
                let ok = if frozen {
                    false
                } else if let Some(ok) = hyperv {
                    ok
                } else if write {
                    apic_base_set |= e.index == msr::index::APIC_BASE;
                    let ok = msr::set(&mut state.msrs, &mut shared, &ctx, e.index, e.data);
                    if ok {
                        // An MSR whose write reaches guest memory (the kvmclock
                        // wall clock), as the guest's own write does.
                        run::kvmclock::msr_written(&self.vm, e.index, e.data);
                    }
                    if ok && e.index == msr::index::TSC && e.data != 0 {
                        tsc_set = Some(state.msrs.tsc_offset);
                    }
                    ok
                } else {
                    match msr::get(&state.msrs, &shared, &ctx, e.index) {
                        Some(v) => {
                            e.data = v;
                            true
                        }
                        None => false,
                    }
                };
                if !ok {
                    break;
                }
                done += 1;
            }
            // The in-kernel APIC follows a host write of its base MSR (QEMU restores
            // it this way before KVM_SET_LAPIC), as KVM's `kvm_set_apic_base`.
            if apic_base_set {
                apic_base_changed(state);
            }
            done
        };
        // A TSC the host set to a value (a restore) is the one the VM's
        // vCPUs share from now on: a later write of 0 joins it, as KVM's
        // new TSC "generation".
        if let Some(offset) = tsc_set {
            self.vm.set_tsc_offset(offset);
        }
        if !write {
            user::write_array(entries_addr, &entries)?;
        }
        Ok(done)
    }

    /// `KVM_GET_FPU`: the x87 and SSE registers. MXCSR is reported as 0
    /// and ignored by `KVM_SET_FPU`, as KVM 7.3 does
    /// (`kvm_arch_vcpu_ioctl_get_fpu` copies every field but it).
    fn get_fpu(&self, arg: usize) -> Result<isize> {
        let legacy = self.vcpu.state.lock().run.fpu().legacy();
        let fpu = kvm_fpu {
            fpr: legacy.fpr,
            fcw: legacy.fcw,
            fsw: legacy.fsw,
            ftwx: legacy.ftw,
            pad1: 0,
            last_opcode: legacy.fop,
            last_ip: legacy.fip,
            last_dp: legacy.fdp,
            xmm: legacy.xmm,
            mxcsr: 0,
            pad2: 0,
        };
        user::write(arg, &fpu)?;
        Ok(0)
    }

    /// `KVM_SET_FPU`: replaces the x87 and SSE registers (not MXCSR).
    fn set_fpu(&self, arg: usize) -> Result<isize> {
        let fpu: kvm_fpu = user::read(arg)?;
        let legacy = LegacyFpu {
            fpr: fpu.fpr,
            fcw: fpu.fcw,
            fsw: fpu.fsw,
            ftw: fpu.ftwx,
            fop: fpu.last_opcode,
            fip: fpu.last_ip,
            fdp: fpu.last_dp,
            xmm: fpu.xmm,
        };
        self.vcpu.state.lock().run.fpu_mut().set_legacy(&legacy);
        Ok(0)
    }

    /// `KVM_GET_XSAVE` and `KVM_GET_XSAVE2`: the guest's x87, SSE and
    /// (if its CPUID offers it) AVX state in KVM's XSAVE layout
    /// (x86/xsave.rs), 4096 bytes, which is also what `KVM_CAP_XSAVE2`
    /// answers.
    fn get_xsave(&self, arg: usize) -> Result<isize> {
        let mut region = KVec::from_elem(0u8, xsave::KVM_XSAVE_SIZE, GFP_KERNEL_ACCOUNT)?;
        {
            let state = self.vcpu.state.lock();
            state.run.fpu().to_uabi(state.features.xcr0, &mut region);
        }
        user::write_array(arg, &region)?;
        Ok(0)
    }

    /// `KVM_SET_XSAVE`: `EINVAL`, changing nothing, for a region KVM
    /// refuses (x86/xsave.rs: a component rkvm does not offer, a
    /// compacted or reserved header, a reserved MXCSR bit).
    fn set_xsave(&self, arg: usize) -> Result<isize> {
        let region: KVec<u8> = user::read_array(arg, xsave::KVM_XSAVE_SIZE)?;
        self.vcpu
            .state
            .lock()
            .run
            .fpu_mut()
            .set_uabi(&region)
            .map_err(|_| EINVAL)?;
        Ok(0)
    }

    /// `KVM_PRE_FAULT_MEMORY`: maps the guest-physical range `[gpa, gpa +
    /// size)` ahead of the guest's accesses, as second-level faults would,
    /// page by page (2 MiB at a time where a huge page backs it), and
    /// writes back where it stopped (`gpa` advanced, `size` what is left).
    /// As KVM's `kvm_vcpu_pre_fault_memory`: a flag, an unaligned or empty
    /// or wrapping range is `EINVAL`; a page no slot backs stops it with
    /// `ENOENT`, a signal with `EINTR`; either is reported only if nothing
    /// was mapped, else the call returns 0 with the rest left in `size`.
    fn pre_fault_memory(&self, arg: usize) -> Result<isize> {
        let mut range: kvm_pre_fault_memory = user::read(arg)?;
        let aligned = |v: u64| v % kernel::page::PAGE_SIZE as u64 == 0;
        if range.flags != 0
            || !aligned(range.gpa)
            || !aligned(range.size)
            || range
                .gpa
                .checked_add(range.size)
                .is_none_or(|end| end <= range.gpa)
        {
            return Err(EINVAL);
        }
        let full = range.size;
        // The memory the vCPU sees: SMM's while it is in SMM, as KVM's MMU.
        let space = self.vcpu.state.lock().run.smm.space();
        let mut stopped = Ok(());
        while range.size != 0 {
            if cpu::signal_pending() {
                stopped = Err(EINTR);
                break;
            }
            match self.vm.pre_fault(space, range.gpa) {
                Ok(mapped) => {
                    let mapped = mapped.min(range.size);
                    range.gpa += mapped;
                    range.size -= mapped;
                }
                Err(e) => {
                    stopped = Err(e);
                    break;
                }
            }
            cpu::cond_resched();
        }
        user::write(arg, &range)?;
        match stopped {
            Err(e) if range.size == full => Err(e),
            _ => Ok(0),
        }
    }

    /// `KVM_GET_XCRS`: XCR0, on a host with XSAVE (none without, as KVM):
    /// 1 (x87 only) at reset, then what the guest's XSETBV or
    /// `KVM_SET_XCRS` set.
    fn get_xcrs(&self, arg: usize) -> Result<isize> {
        let mut xcrs = kvm_xcrs::default();
        if fpu::host_has_xsave() {
            xcrs.nr_xcrs = 1;
            xcrs.xcrs[0].xcr = abi::XCR_XFEATURE_ENABLED_MASK;
            xcrs.xcrs[0].value = self.vcpu.state.lock().run.fpu().xcr0();
        }
        user::write(arg, &xcrs)?;
        Ok(0)
    }

    /// `KVM_SET_XCRS`, as KVM's `kvm_vcpu_ioctl_x86_set_xcrs`: `EINVAL`
    /// without host XSAVE, for more than `KVM_MAX_XCRS` entries or any
    /// flag, and for an XCR0 XCR0's rules refuse for the guest's CPUID
    /// (x86/xsave.rs `xcr0_valid`: without leaf 0xD only 1). Entries for
    /// other XCRs are skipped; the first XCR0 entry is the one that counts.
    fn set_xcrs(&self, arg: usize) -> Result<isize> {
        if !fpu::host_has_xsave() {
            return Err(EINVAL);
        }
        let xcrs: kvm_xcrs = user::read(arg)?;
        if xcrs.nr_xcrs > abi::KVM_MAX_XCRS || xcrs.flags != 0 {
            return Err(EINVAL);
        }
        let entries = &xcrs.xcrs[..xcrs.nr_xcrs as usize];
        let Some(e) = entries
            .iter()
            .find(|e| e.xcr == abi::XCR_XFEATURE_ENABLED_MASK)
        else {
            return Ok(0);
        };
        let mut state = self.vcpu.state.lock();
        let guest_supported = state.features.xcr0;
        if state.run.fpu_mut().set_xcr0(e.value, guest_supported) {
            Ok(0)
        } else {
            Err(EINVAL)
        }
    }

    /// `KVM_SET_MP_STATE`. Without an in-kernel local APIC a vCPU is
    /// always runnable: HLT, INIT and SIPI are the VMM's business (HLT
    /// exits to it), so `KVM_MP_STATE_RUNNABLE` is the only state there is
    /// and any other is `EINVAL`, as KVM's `kvm_arch_vcpu_ioctl_set_mpstate`
    /// answers when `lapic_in_kernel` is false.
    fn set_mp_state(&self, arg: usize) -> Result<isize> {
        let state: kvm_mp_state = user::read(arg)?;
        // With an in-kernel APIC, KVM's x86 states (run/apic.rs).
        if let Some(link) = self.vcpu.state.lock().run.irq.as_mut() {
            link.set_mp_state(state.mp_state)?;
            return Ok(0);
        }
        if state.mp_state != abi::KVM_MP_STATE_RUNNABLE {
            return Err(EINVAL);
        }
        Ok(0)
    }

    /// `KVM_SET_CPUID2`: more than 256 entries is `E2BIG`.
    fn set_cpuid2(&self, arg: usize) -> Result<isize> {
        let header: kvm_cpuid2 = user::read(arg)?;
        if header.nent > abi::MAX_CPUID_ENTRIES {
            return Err(E2BIG);
        }
        let table: KVec<kvm_cpuid_entry2> =
            user::read_array(user::after::<kvm_cpuid2>(arg)?, header.nent as usize)?;
        if !cpuid::table_is_valid(&table) {
            return Err(EINVAL);
        }
        let features = GuestFeatures::from_table(&table);
        let mut state = self.vcpu.state.lock();
        // Once the guest ran, only the table it has may be set again (a
        // VMM restoring it), as KVM: CPUID cannot change under a running
        // guest.
        if state.run.has_run {
            // Compared as KVM_GET_CPUID2 shows them, the bits KVM keeps
            // up to date included (KVM updates the new table's first).
            let current = state.cpuid_as_reported()?;
            let mut new = KVec::with_capacity(table.len(), GFP_KERNEL_ACCOUNT)?;
            for e in table.iter() {
                new.push(run::with_runtime_bits(&state, e), GFP_KERNEL_ACCOUNT)?;
            }
            return if cpuid::tables_equal(&current, &new) {
                Ok(0)
            } else {
                Err(EINVAL)
            };
        }
        state.cpuid = table;
        state.features = features;
        Ok(0)
    }

    /// `KVM_GET_CPUID2`: the table as set, with the bits KVM keeps up to
    /// date as the vCPU runs (OSXSAVE, the APIC bit, leaf 0xD's sizes:
    /// run/regs.rs `with_runtime_bits`); too small a buffer is `E2BIG`
    /// with nothing written.
    fn get_cpuid2(&self, arg: usize) -> Result<isize> {
        let mut header: kvm_cpuid2 = user::read(arg)?;
        let table = {
            let state = self.vcpu.state.lock();
            if (header.nent as usize) < state.cpuid.len() {
                return Err(E2BIG);
            }
            state.cpuid_as_reported()?
        };
        user::write_array(user::after::<kvm_cpuid2>(arg)?, &table)?;
        header.nent = table.len() as u32;
        user::write(arg, &header)?;
        Ok(0)
    }
}

impl FileObject for VcpuFd {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_caller()?;
        match cmd {
            abi::KVM_GET_REGS => {
                let regs = this.vcpu.state.lock().regs;
                user::write(arg, &regs)?;
                Ok(0)
            }
            abi::KVM_SET_REGS => this.set_regs(arg),
            abi::KVM_GET_SREGS => this.get_sregs(arg),
            abi::KVM_SET_SREGS => this.set_sregs(arg),
            abi::KVM_GET_MSRS => this.msr_io(arg, false),
            abi::KVM_SET_MSRS => this.msr_io(arg, true),
            abi::KVM_SET_CPUID2 => this.set_cpuid2(arg),
            abi::KVM_GET_CPUID2 => this.get_cpuid2(arg),
            // The device's leaves, less the IPI hypercalls' recommendation
            // for a vCPU without an in-kernel APIC (they need one), as KVM.
            abi::KVM_GET_SUPPORTED_HV_CPUID => {
                let apic = this.vcpu.state.lock().run.irq.is_some();
                System::get_supported_hv_cpuid(arg, apic)
            }
            abi::KVM_RUN => {
                let mut state = this.vcpu.state.lock();
                run::run(&this.vm, &this.vcpu, &mut state)
            }
            abi::KVM_GET_FPU => this.get_fpu(arg),
            abi::KVM_SET_FPU => this.set_fpu(arg),
            abi::KVM_GET_XSAVE | abi::KVM_GET_XSAVE2 => this.get_xsave(arg),
            abi::KVM_SET_XSAVE => this.set_xsave(arg),
            abi::KVM_PRE_FAULT_MEMORY => this.pre_fault_memory(arg),
            abi::KVM_GET_XCRS => this.get_xcrs(arg),
            abi::KVM_SET_XCRS => this.set_xcrs(arg),
            abi::KVM_GET_DEBUGREGS => {
                let regs = this.vcpu.state.lock().run.debugregs();
                user::write(arg, &regs)?;
                Ok(0)
            }
            abi::KVM_SET_DEBUGREGS => {
                let regs: kvm_debugregs = user::read(arg)?;
                this.vcpu.state.lock().run.set_debugregs(&regs)?;
                Ok(0)
            }
            // Always runnable without an in-kernel APIC: see `set_mp_state`.
            abi::KVM_GET_MP_STATE => {
                let mp_state = this
                    .vcpu
                    .state
                    .lock()
                    .run
                    .irq
                    .as_ref()
                    .map_or(abi::KVM_MP_STATE_RUNNABLE, |l| l.mp_state());
                let state = kvm_mp_state { mp_state };
                user::write(arg, &state)?;
                Ok(0)
            }
            abi::KVM_SET_MP_STATE => this.set_mp_state(arg),
            abi::KVM_SET_GUEST_DEBUG => {
                let dbg: abi::kvm_guest_debug = user::read(arg)?;
                run::debug::set(&mut this.vcpu.state.lock(), dbg.control, &dbg.arch.debugreg)?;
                Ok(0)
            }
            // The rate the guest is told its TSC runs at: the VM's default
            // when the vCPU was created, or what KVM_SET_TSC_KHZ set.
            abi::KVM_GET_TSC_KHZ => Ok(this.vcpu.state.lock().tsc_khz as isize),
            // As KVM without TSC scaling: a rate within 250 ppm of the
            // host's (0: the host's) is taken; another is `EINVAL`
            // (x86/tsc.rs).
            abi::KVM_SET_TSC_KHZ => {
                let khz = tsc::accept_tsc_khz(arg as u32, cpu::tsc_khz()).ok_or(EINVAL)?;
                this.vcpu.state.lock().tsc_khz = khz;
                Ok(0)
            }
            abi::KVM_ENABLE_CAP => this.enable_cap(arg),
            abi::KVM_GET_VCPU_EVENTS => {
                let events = this.vcpu.state.lock().run.vcpu_events();
                user::write(arg, &events)?;
                Ok(0)
            }
            abi::KVM_SET_VCPU_EVENTS => {
                let events: kvm_vcpu_events = user::read(arg)?;
                this.vcpu.state.lock().run.set_vcpu_events(&events)?;
                Ok(0)
            }
            // The vCPU's binary statistics (stats/fd.rs).
            abi::KVM_GET_STATS_FD => StatsFd::new_vcpu(this.vcpu.stats.clone(), this.vcpu.id),
            abi::KVM_HAS_DEVICE_ATTR | abi::KVM_GET_DEVICE_ATTR | abi::KVM_SET_DEVICE_ATTR => {
                this.tsc_attr(cmd, arg)
            }
            abi::KVM_INTERRUPT => {
                let irq: kvm_interrupt = user::read(arg)?;
                // KVM_NR_INTERRUPTS: a vector is a byte.
                let vector = u8::try_from(irq.irq).map_err(|_| EINVAL)?;
                let mut state = this.vcpu.state.lock();
                // With an in-kernel APIC, only a split irqchip's ExtINT.
                match state.run.irq.as_mut() {
                    Some(link) => link.queue_extint(vector)?,
                    None => state.run.queue_interrupt(irq.irq)?,
                }
                Ok(0)
            }
            abi::KVM_GET_LAPIC => this.get_lapic(arg),
            abi::KVM_SET_LAPIC => this.set_lapic(arg),
            abi::KVM_SET_VAPIC_ADDR => this.set_vapic_addr(arg),
            // An NMI for the guest, with or without an in-kernel irqchip
            // (`run/nmi.rs`), as KVM's `kvm_vcpu_ioctl_nmi`.
            abi::KVM_NMI => {
                this.vcpu.state.lock().run.nmi.queue(1);
                Ok(0)
            }
            // An SMI for the guest (`run/smm.rs`), as KVM's `kvm_inject_smi`.
            abi::KVM_SMI => {
                run::smm::inject(&mut this.vcpu.state.lock());
                Ok(0)
            }
            // KVM answers unknown vCPU ioctls with EINVAL (`kvm_arch_vcpu_ioctl`).
            _ => Err(EINVAL),
        }
    }

    const MAPPABLE: bool = true;

    fn page(&self, pgoff: usize) -> Option<&Page> {
        match pgoff {
            OWN_PAGES => Some(self.vm.coalesced.ring_page()),
            _ => self.vcpu.run_pages.get(pgoff),
        }
    }
}
