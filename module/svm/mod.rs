// SPDX-License-Identifier: GPL-2.0

//! The AMD-V (SVM) backend.
//!
//! SVM is usable when CPUID says the CPU has it (CPUID 0x8000_0001 ECX[2])
//! and nested paging (CPUID 0x8000_000A EDX[0]), and the BIOS has not
//! locked it off (VM_CR.SVMDIS). Enabling it on a CPU means pointing
//! VM_HSAVE_PA at a page where VMRUN saves host state, then setting
//! EFER.SVME. APM Vol. 2 15.4 and 15.30.
//!
//! The backend also owns what all vCPUs share: the I/O and MSR permission
//! maps (every port and every MSR intercepted), a page per CPU where the
//! world switch VMSAVEs the host's segment state, and the per-CPU ASID
//! allocators ([`asid`]). A vCPU's own state is its VMCB ([`vcpu`]).

mod asid;
mod npt;
pub(crate) mod vcpu;
pub(crate) mod vmcb;

use crate::backend::{Backend, VendorVcpu};
use crate::mmu::{SecondLevel, Slat};
use crate::spec::Plan;
use crate::sys::cpu::{self, this_cpu, IrqsDisabled};
use crate::sys::mem::page_phys;
use crate::x86::msr::index;
use crate::x86::regs::{efer, HostLimits};
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::Arc;

/// CPUID 0x8000_0001 ECX bit 2: SVM. APM Vol. 2 15.4.
const CPUID_81_ECX_SVM: u32 = 1 << 2;
/// CPUID Fn8000_000A_EDX bit 0: nested paging. APM Vol. 3 Appendix E.
const CPUID_8A_EDX_NP: u32 = 1 << 0;
/// CPUID Fn8000_000A_EDX bit 3: next-RIP save on #VMEXIT. APM Vol. 3 Appendix E.
const CPUID_8A_EDX_NRIPS: u32 = 1 << 3;
/// CPUID Fn8000_000A_EDX bit 6: TLB_CONTROL may flush one ASID.
/// APM Vol. 2 15.16.1.
const CPUID_8A_EDX_FLUSH_BY_ASID: u32 = 1 << 6;
/// CPUID Fn8000_000A_EDX bit 7: decode assists (instruction bytes on #NPF).
/// APM Vol. 2 15.33.
const CPUID_8A_EDX_DECODE_ASSISTS: u32 = 1 << 7;
/// VM_CR bit 4: SVMDIS, SVM disabled (by the BIOS when locked). APM Vol. 2 15.30.1.
const VM_CR_SVMDIS: u64 = 1 << 4;

/// The I/O permission map: one bit per port, set = intercept; 12 KiB.
/// APM Vol. 2 15.10.1.
#[repr(C, align(4096))]
#[derive(Zeroable)]
struct Iopm([u8; 3 * 4096]);

/// The MSR permission map: two bits (read, write) per MSR in three ranges,
/// set = intercept; 8 KiB. APM Vol. 2 15.11.
#[repr(C, align(4096))]
#[derive(Zeroable)]
struct Msrpm([u8; 2 * 4096]);

/// What every SVM vCPU uses, shared with them (they hold an `Arc`).
///
/// # Invariants
///
/// `host_save` and `asids` have one entry per possible CPU id; `iopm` and
/// `msrpm` are all ones for as long as `self` lives.
pub(crate) struct SvmShared {
    /// Where the world switch saves the host's VMLOAD/VMSAVE state.
    host_save: KVec<Page>,
    iopm: KBox<Iopm>,
    msrpm: KBox<Msrpm>,
    asids: KVec<asid::CpuAsids>,
    /// Per CPU, the VMCB that last ran there, for IBPB between guests.
    pub(crate) last_guest: cpu::LastGuest,
    /// The speculation steps around each entry and exit.
    pub(crate) spec: Plan,
    /// Whether the CPU saves the next RIP on #VMEXIT.
    nrips: bool,
    /// Whether the CPU fetches the faulting instruction on #NPF.
    decode_assists: bool,
    /// Whether TLB_CONTROL can flush a single ASID.
    flush_by_asid: bool,
    /// The largest ASID a guest may use.
    max_asid: u32,
}

/// The SVM backend.
///
/// # Invariants
///
/// `hsave` has one zeroed page per possible CPU id; `owned[cpu]` is true
/// exactly while this backend has EFER.SVME set on that CPU.
pub(crate) struct Svm {
    hsave: KVec<Page>,
    owned: KVec<AtomicBool>,
    shared: Arc<SvmShared>,
    limits: HostLimits,
    /// Whether the CPU saves the next RIP on #VMEXIT (QEMU's emulation does
    /// not; the run loop must cope without it).
    pub(crate) nrips: bool,
    /// Number of address-space ids (CPUID 0x8000_000A EBX).
    pub(crate) nr_asids: u32,
}

impl Svm {
    /// Checks the CPU for a usable SVM and allocates the per-CPU state.
    /// Errors are a reason for the load failure message.
    pub(crate) fn probe(spec: Plan) -> core::result::Result<Arc<dyn Backend>, &'static str> {
        let max_ext = cpu::cpuid(0x8000_0000, 0).eax;
        if max_ext < 0x8000_000a || cpu::cpuid(0x8000_0001, 0).ecx & CPUID_81_ECX_SVM == 0 {
            return Err("the CPU has neither SVM nor VMX");
        }
        let svm_features = cpu::cpuid(0x8000_000a, 0);
        if svm_features.edx & CPUID_8A_EDX_NP == 0 {
            return Err("SVM without nested paging (NPT) is not supported");
        }
        match cpu::rdmsr(index::VM_CR) {
            Ok(vm_cr) if vm_cr & VM_CR_SVMDIS != 0 => {
                return Err("SVM is disabled by the firmware (VM_CR.SVMDIS)")
            }
            Ok(_) => {}
            Err(_) => return Err("SVM is advertised but the VM_CR MSR cannot be read"),
        }

        // With SME every physical address rkvm hands the CPU (VMCB, permission maps, nested
        // tables, VM_HSAVE_PA) would need the C-bit; rkvm does not set it. APM Vol. 2 7.10.
        if cpu::host_mem_encrypted() {
            return Err("the host encrypts its memory (SME), which rkvm does not support");
        }
        // ASID 0 is the host's; a guest needs at least one more.
        if svm_features.ebx < 2 {
            return Err("SVM reports no address-space ids for guests");
        }

        let oom = |_| "out of memory";
        let possible = kernel::cpu::nr_cpu_ids() as usize;
        let mut hsave = KVec::with_capacity(possible, GFP_KERNEL).map_err(oom)?;
        let mut host_save = KVec::with_capacity(possible, GFP_KERNEL).map_err(oom)?;
        let mut owned = KVec::with_capacity(possible, GFP_KERNEL).map_err(oom)?;
        let mut asids = KVec::with_capacity(possible, GFP_KERNEL).map_err(oom)?;
        for _ in 0..possible {
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO).map_err(oom)?;
            hsave.push(page, GFP_KERNEL).map_err(oom)?;
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO).map_err(oom)?;
            host_save.push(page, GFP_KERNEL).map_err(oom)?;
            owned
                .push(AtomicBool::new(false), GFP_KERNEL)
                .map_err(oom)?;
            asids.push(asid::CpuAsids::new(), GFP_KERNEL).map_err(oom)?;
        }
        let mut iopm = KBox::<Iopm>::zeroed(GFP_KERNEL).map_err(oom)?;
        iopm.0.fill(0xff);
        let mut msrpm = KBox::<Msrpm>::zeroed(GFP_KERNEL).map_err(oom)?;
        msrpm.0.fill(0xff);
        let shared = Arc::new(
            SvmShared {
                host_save,
                iopm,
                msrpm,
                asids,
                last_guest: cpu::LastGuest::new(possible, spec.ibpb_between_guests)
                    .map_err(|_| "out of memory")?,
                spec,
                nrips: svm_features.edx & CPUID_8A_EDX_NRIPS != 0,
                decode_assists: svm_features.edx & CPUID_8A_EDX_DECODE_ASSISTS != 0,
                flush_by_asid: svm_features.edx & CPUID_8A_EDX_FLUSH_BY_ASID != 0,
                max_asid: svm_features.ebx - 1,
            },
            GFP_KERNEL,
        )
        .map_err(oom)?;
        let svm = Svm {
            hsave,
            owned,
            shared,
            limits: HostLimits::from_cpuid(cpu::cpuid_tuple),
            nrips: svm_features.edx & CPUID_8A_EDX_NRIPS != 0,
            nr_asids: svm_features.ebx,
        };
        Arc::new(svm, GFP_KERNEL)
            .map(|a| a as Arc<dyn Backend>)
            .map_err(|_| "out of memory")
    }
}

impl Backend for Svm {
    fn enable_cpu(&self, cpu: u32) -> Result {
        let i = cpu as usize;
        let (Some(page), Some(owned)) = (self.hsave.get(i), self.owned.get(i)) else {
            return Err(EINVAL);
        };
        // The check and the set are one step on this CPU: no other claimant (the real KVM
        // enables from its own hotplug and resume callbacks) can run in between.
        let _irqs = IrqsDisabled::new();
        if this_cpu() != cpu {
            pr_err!(
                "asked to enable SVM for CPU {} on CPU {}\n",
                cpu,
                this_cpu()
            );
            return Err(EINVAL);
        }
        let old = cpu::rdmsr(index::EFER)?;
        if old & efer::SVME != 0 {
            pr_err!(
                "SVM is already in use on CPU {} (EFER.SVME set): another hypervisor, such as kvm_amd, owns it\n",
                cpu
            );
            return Err(EBUSY);
        }
        // SAFETY: SVM is off on this CPU, so no one uses VM_HSAVE_PA; the page is ours and
        // zeroed, and lives as long as `self`. APM Vol. 2 15.30.4.
        unsafe { cpu::wrmsr(index::VM_HSAVE_PA, page_phys(page).0)? };
        // SAFETY: EFER.SVME was clear and we now own it on this CPU; setting it changes no
        // state the kernel relies on. APM Vol. 2 15.4.
        if let Err(e) = unsafe { cpu::wrmsr(index::EFER, old | efer::SVME) } {
            // Leave the CPU as we found it: the save area is ours and goes with us.
            // SAFETY: SVM stayed off, so nothing uses VM_HSAVE_PA; 0 is its reset value.
            let _ = unsafe { cpu::wrmsr(index::VM_HSAVE_PA, 0) };
            return Err(e);
        }
        // INVARIANT: SVME is set on this CPU by us.
        owned.store(true, Ordering::Release);
        Ok(())
    }

    fn disable_cpu(&self, cpu: u32) {
        let Some(owned) = self.owned.get(cpu as usize) else {
            return;
        };
        let _irqs = IrqsDisabled::new();
        if !owned.load(Ordering::Acquire) {
            return;
        }
        let old = match cpu::rdmsr(index::EFER) {
            Ok(v) => v,
            Err(_) => {
                pr_err!("cannot read EFER on CPU {}: SVM stays enabled there\n", cpu);
                return;
            }
        };
        // Leave GIF set: clearing SVME with GIF clear would leave interrupts masked for good.
        // SAFETY: SVME is set on this CPU (we own it), so STGI is defined.
        unsafe { crate::sys::svm::stgi() };
        // SAFETY: We own SVM on this CPU and no guest runs (VMs pin the module, so none exist
        // when the backend is torn down; a CPU going offline, suspending or shutting down
        // has no vCPU on it). Clearing SVME and the save-area pointer returns the CPU to
        // its state before us. APM Vol. 2 15.4, 15.30.4.
        let cleared = unsafe {
            cpu::wrmsr(index::EFER, old & !efer::SVME)
                .and_then(|()| cpu::wrmsr(index::VM_HSAVE_PA, 0))
        };
        if cleared.is_err() {
            pr_err!("cannot turn SVM off on CPU {}\n", cpu);
        }
        // INVARIANT: SVME is clear now (a failed write was reported; nothing can retry it).
        owned.store(false, Ordering::Release);
    }

    fn host_limits(&self) -> HostLimits {
        self.limits
    }

    fn hypercall_insn(&self) -> [u8; 3] {
        crate::backend::VMMCALL
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AMD SVM with nested paging, {} ASIDs, next-RIP save {}, decode assists {}",
            self.nr_asids,
            if self.nrips { "yes" } else { "no" },
            if self.shared.decode_assists {
                "yes"
            } else {
                "no"
            }
        )
    }

    fn create_vcpu(&self) -> Result<KBox<dyn VendorVcpu>> {
        let vcpu = vcpu::SvmVcpu::new(self.shared.clone())?;
        Ok(KBox::new(vcpu, GFP_KERNEL_ACCOUNT)? as KBox<dyn VendorVcpu>)
    }

    fn create_slat(&self) -> Result<KBox<dyn SecondLevel>> {
        // The nested walk has as many levels as the host's paging (APM Vol. 2 15.25.3).
        let levels = if cpu::host_la57() { 5 } else { 4 };
        let npt = Slat::<npt::Npt>::new(levels, true)?;
        Ok(KBox::new(npt, GFP_KERNEL_ACCOUNT)? as KBox<dyn SecondLevel>)
    }
}
