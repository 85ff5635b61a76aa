// SPDX-License-Identifier: GPL-2.0

//! The Intel VT-x (VMX) backend.
//!
//! VMX is usable when CPUID.1:ECX.VMX says the CPU has it and the firmware
//! lets the OS use it: IA32_FEATURE_CONTROL either locked with "VMXON
//! outside SMX" set, or unlocked (then rkvm sets that bit and locks it, as
//! the firmware should have). rkvm also needs EPT (with 4-level walks and
//! write-back tables, and INVEPT), unrestricted guest (real mode without
//! emulation) and a handful of controls: every requirement missing is
//! named in the load failure message. SDM Vol. 3C 24.6-24.8 and Appendix A.
//!
//! # When VMX is on
//!
//! On SVM, rkvm sets EFER.SVME on every CPU at load and clears it at
//! unload. The VMX equivalent, CR4.VMXE plus VMXON, cannot be held that way
//! by a module on Linux 7.3: the kernel keeps a per-CPU shadow of CR4 and
//! rewrites CR4 from it (for instance to flush global TLB entries), which
//! would clear VMXE under us, and only the kvm modules may update the
//! shadow (`cr4_update_irqsoff` is exported to them alone). A VMX guest
//! here therefore enters VMX operation around each entry, with interrupts
//! disabled from VMXON to VMXOFF, so that no kernel code runs while CR4
//! differs from its shadow:
//!
//! `VMXON → VMPTRLD → (VMWRITEs) → VMLAUNCH ... VM exit → (VMREADs) →
//! VMCLEAR → VMXOFF`
//!
//! The costs: each entry is a VMLAUNCH (never VMRESUME), and VMXON/VMXOFF
//! and VMPTRLD/VMCLEAR add to every exit. (The VMCS keeps its fields
//! across VMCLEAR, so an entry writes only the guest and host fields that
//! changed, and an exit reads back only those the guest can change:
//! `vcpu.rs`.) The gains: a VMCS is never
//! active on a CPU when its vCPU is not in `KVM_RUN` (so a vCPU that moves
//! between CPUs needs no cross-CPU VMCLEAR, and CPU hotplug, suspend,
//! kexec and an emergency reboot never find a CPU in VMX operation), and
//! the kernel's CR4 shadow is never wrong when the kernel can look at it.
//! KVM's arrangement (VMX on from load, a VMCS kept loaded between
//! entries and VMCLEARed by IPI when its vCPU moves) is the faster one and
//! what this becomes if the kernel ever exports the CR4 helpers.
//!
//! Coexistence with kvm_intel follows: rkvm refuses to load while another
//! hypervisor has CR4.VMXE set on a CPU (the check, with a trial VMXON, is
//! [`Vmx::enable_cpu`]); kvm_intel loading after rkvm is not refused (rkvm
//! holds nothing it could see), but then a `KVM_RUN` of rkvm on a CPU where
//! kvm_intel is in VMX operation fails with `EBUSY` instead of entering.

pub(crate) mod caps;
mod ept;
pub(crate) mod vcpu;
pub(crate) mod vmcs;
mod vpid;

use crate::backend::{Backend, VendorVcpu};
use crate::mmu::{SecondLevel, Slat};
use crate::spec::Plan;
use crate::sys::cpu::{self, this_cpu, IrqsDisabled};
use crate::sys::mem::kmalloc_phys;
use crate::sys::spec::L1dFlushBuffer;
use crate::sys::vmx::{VmxOn, VmxOnError};
use crate::x86::regs::HostLimits;
use caps::{Caps, CR0_PE_PG};
use core::fmt;
use core::sync::atomic::AtomicU64;
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::prelude::*;
use kernel::sync::Arc;

/// CPUID.1:ECX bit 5: VMX. SDM Vol. 3C 24.6.
const CPUID_1_ECX_VMX: u32 = 1 << 5;

/// The VMX capability MSRs. SDM Vol. 4 Table 2-2; Vol. 3C Appendix A.
mod msr {
    pub(super) const FEATURE_CONTROL: u32 = 0x3a;
    pub(super) const VMX_BASIC: u32 = 0x480;
    pub(super) const VMX_PINBASED_CTLS: u32 = 0x481;
    pub(super) const VMX_PROCBASED_CTLS: u32 = 0x482;
    pub(super) const VMX_EXIT_CTLS: u32 = 0x483;
    pub(super) const VMX_ENTRY_CTLS: u32 = 0x484;
    pub(super) const VMX_CR0_FIXED0: u32 = 0x486;
    pub(super) const VMX_CR0_FIXED1: u32 = 0x487;
    pub(super) const VMX_CR4_FIXED0: u32 = 0x488;
    pub(super) const VMX_CR4_FIXED1: u32 = 0x489;
    pub(super) const VMX_PROCBASED_CTLS2: u32 = 0x48b;
    pub(super) const VMX_EPT_VPID_CAP: u32 = 0x48c;
    pub(super) const VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    pub(super) const VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    pub(super) const VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    pub(super) const VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
}

/// IA32_FEATURE_CONTROL bits. SDM Vol. 3C 24.7.
const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// What every VMX vCPU needs from the backend (they hold an `Arc`).
///
/// # Invariants
///
/// `vmxon` has one page per possible CPU id, each starting with
/// `caps.revision`; the MSR bitmap is all ones for as long as `self` lives.
pub(crate) struct VmxShared {
    vmxon: KVec<KBox<VmxRegion>>,
    /// What the CPU's VMX offers and the controls guests run with.
    pub(crate) caps: Caps,
    /// One bit per MSR and direction, set = exit: every RDMSR and WRMSR
    /// exits. SDM Vol. 3C 25.6.9.
    pub(crate) msr_bitmap: KBox<MsrBitmap>,
    /// Per CPU, the VMCS that ran there last, for IBPB between guests.
    pub(crate) last_guest: cpu::LastGuest,
    /// The speculation steps around each entry and exit.
    pub(crate) spec: Plan,
    /// What a software L1D flush reads, if the plan has one.
    pub(crate) l1d_flush_buffer: Option<L1dFlushBuffer>,
    /// VPIDs in use, one bit each; VPID 0 is the host's.
    vpids: KVec<AtomicU64>,
}

/// A VMXON region or a VMCS: 4 KiB, aligned, starting with the VMCS
/// revision identifier; the rest belongs to the CPU. SDM Vol. 3C 25.2,
/// 25.11.5.
#[repr(C, align(4096))]
#[derive(Zeroable)]
pub(crate) struct VmxRegion {
    pub(crate) revision: u32,
    data: [u8; 4092],
}

impl VmxRegion {
    /// A zeroed region with `revision`, allocated with `flags`.
    pub(crate) fn new(revision: u32, flags: kernel::alloc::Flags) -> Result<KBox<Self>> {
        let mut r = KBox::<VmxRegion>::zeroed(flags)?;
        r.revision = revision;
        Ok(r)
    }
}

/// The MSR bitmap: read bitmaps for low and high MSRs, then write bitmaps.
#[repr(C, align(4096))]
#[derive(Zeroable)]
pub(crate) struct MsrBitmap([u8; 4096]);

impl VmxShared {
    /// The VMXON region of `cpu`.
    pub(crate) fn vmxon_region(&self, cpu: u32) -> Option<u64> {
        self.vmxon.get(cpu as usize).map(|r| kmalloc_phys(&**r).0)
    }

    /// Allocates a VPID (1..=65535), or `None` if all are taken or the
    /// CPU has none (then the vCPU runs with VPID 0, which makes every entry
    /// and exit flush).
    pub(crate) fn alloc_vpid(&self) -> Option<u16> {
        if !self.caps.vpid {
            return None;
        }
        vpid::alloc(&self.vpids)
    }

    /// Gives back a VPID from [`VmxShared::alloc_vpid`].
    pub(crate) fn free_vpid(&self, vpid: u16) {
        vpid::free(&self.vpids, vpid);
    }
}

/// The VMX backend.
pub(crate) struct Vmx {
    shared: Arc<VmxShared>,
    limits: HostLimits,
    /// IA32_FEATURE_CONTROL was unlocked at load: lock it on each CPU.
    lock_feature_control: bool,
}

impl Vmx {
    /// Checks the CPU for a usable VMX and allocates the per-CPU state.
    /// Errors are the reason for the load failure message.
    pub(crate) fn probe(spec: Plan) -> core::result::Result<Arc<dyn Backend>, &'static str> {
        if cpu::cpuid(1, 0).ecx & CPUID_1_ECX_VMX == 0 {
            return Err("the CPU has neither SVM nor VMX");
        }
        let rd = |m: u32| {
            cpu::rdmsr(m).map_err(|_| "VMX is advertised but its capability MSRs cannot be read")
        };
        let fc = rd(msr::FEATURE_CONTROL)?;
        if fc & FEATURE_CONTROL_LOCKED != 0 && fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            return Err("VMX is disabled by the firmware (IA32_FEATURE_CONTROL locked without VMXON outside SMX)");
        }
        let vmx_basic = rd(msr::VMX_BASIC)?;
        // The TRUE_* MSRs, where they exist, let default-1 controls be 0. SDM Vol. 3D A.2.
        let true_ctls = vmx_basic & caps::basic::TRUE_CTLS != 0;
        let pick = |plain: u32, truer: u32| rd(if true_ctls { truer } else { plain });
        let found = caps::CapMsrs {
            basic: vmx_basic,
            pin: pick(msr::VMX_PINBASED_CTLS, msr::VMX_TRUE_PINBASED_CTLS)?,
            proc1: pick(msr::VMX_PROCBASED_CTLS, msr::VMX_TRUE_PROCBASED_CTLS)?,
            proc2: rd(msr::VMX_PROCBASED_CTLS2)?,
            exit: pick(msr::VMX_EXIT_CTLS, msr::VMX_TRUE_EXIT_CTLS)?,
            entry: pick(msr::VMX_ENTRY_CTLS, msr::VMX_TRUE_ENTRY_CTLS)?,
            ept_vpid: rd(msr::VMX_EPT_VPID_CAP)?,
            cr0_fixed0: rd(msr::VMX_CR0_FIXED0)?,
            cr0_fixed1: rd(msr::VMX_CR0_FIXED1)?,
            cr4_fixed0: rd(msr::VMX_CR4_FIXED0)?,
            cr4_fixed1: rd(msr::VMX_CR4_FIXED1)?,
        };
        let caps = caps::negotiate(&found)?;

        // With SME the physical addresses handed to the CPU would need the encryption bit.
        if cpu::host_mem_encrypted() {
            return Err("the host encrypts its memory, which rkvm does not support");
        }

        let oom = |_| "out of memory";
        let revision = caps.revision;
        let possible = kernel::cpu::nr_cpu_ids() as usize;
        let mut vmxon = KVec::with_capacity(possible, GFP_KERNEL).map_err(oom)?;
        for _ in 0..possible {
            let region = VmxRegion::new(revision, GFP_KERNEL).map_err(|_| "out of memory")?;
            vmxon.push(region, GFP_KERNEL).map_err(oom)?;
        }
        let mut vpids = KVec::with_capacity(vpid::WORDS, GFP_KERNEL).map_err(oom)?;
        for i in 0..vpid::WORDS {
            vpids
                .push(AtomicU64::new(vpid::initial(i)), GFP_KERNEL)
                .map_err(oom)?;
        }
        let mut msr_bitmap = KBox::<MsrBitmap>::zeroed(GFP_KERNEL).map_err(oom)?;
        msr_bitmap.0.fill(0xff);
        let shared = Arc::new(
            VmxShared {
                vmxon,
                caps,
                msr_bitmap,
                last_guest: cpu::LastGuest::new(possible, spec.ibpb_between_guests)
                    .map_err(|_| "out of memory")?,
                l1d_flush_buffer: L1dFlushBuffer::for_plan(&spec).map_err(oom)?,
                spec,
                vpids,
            },
            GFP_KERNEL,
        )
        .map_err(oom)?;
        let vmx = Vmx {
            shared,
            limits: HostLimits::from_cpuid(cpu::cpuid_tuple),
            lock_feature_control: fc & FEATURE_CONTROL_LOCKED == 0,
        };
        Arc::new(vmx, GFP_KERNEL)
            .map(|a| a as Arc<dyn Backend>)
            .map_err(|_| "out of memory")
    }

    /// Whether CR0 and CR4 (with VMXE) meet the fixed-bit MSRs.
    fn host_crs_ok(&self) -> bool {
        let s = &self.shared;
        let cr0 = cpu::read_cr0();
        let cr4 = cpu::read_cr4() | crate::sys::vmx::CR4_VMXE;
        let fixed0 = s.caps.cr0_fixed0 | CR0_PE_PG;
        cr0 & fixed0 == fixed0
            && cr0 & !s.caps.cr0_fixed1 == 0
            && cr4 & s.caps.cr4_fixed0 == s.caps.cr4_fixed0
            && cr4 & !s.caps.cr4_fixed1 == 0
    }
}

impl Backend for Vmx {
    /// Nothing stays on between guest entries (see the module comment):
    /// this checks that VMX can be entered on this CPU, by doing it once.
    fn enable_cpu(&self, cpu: u32) -> Result {
        let Some(region_pa) = self.shared.vmxon_region(cpu) else {
            return Err(EINVAL);
        };
        let _irqs = IrqsDisabled::new();
        if this_cpu() != cpu {
            pr_err!(
                "asked to enable VMX for CPU {} on CPU {}\n",
                cpu,
                this_cpu()
            );
            return Err(EINVAL);
        }
        if self.lock_feature_control {
            let fc = cpu::rdmsr(msr::FEATURE_CONTROL)?;
            if fc & FEATURE_CONTROL_LOCKED == 0 {
                // SAFETY: Allowing VMXON outside SMX and locking the MSR is what firmware does
                // at boot; nothing else depends on the unlocked state. SDM Vol. 3C 24.7.
                unsafe {
                    cpu::wrmsr(
                        msr::FEATURE_CONTROL,
                        fc | FEATURE_CONTROL_VMX_OUTSIDE_SMX | FEATURE_CONTROL_LOCKED,
                    )?
                };
            }
        }
        let fc = cpu::rdmsr(msr::FEATURE_CONTROL)?;
        if fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            pr_err!("VMX is disabled on CPU {} by IA32_FEATURE_CONTROL\n", cpu);
            return Err(ENODEV);
        }
        if !self.host_crs_ok() {
            pr_err!("CR0 or CR4 of CPU {} does not meet VMX's fixed bits\n", cpu);
            return Err(ENODEV);
        }
        // SAFETY: Interrupts are off until `_on` is dropped; the checks above are VMXON's
        // preconditions; the region is this CPU's and starts with the revision id.
        match unsafe { VmxOn::enter(region_pa) } {
            Ok(_on) => Ok(()),
            Err(VmxOnError::Busy) => {
                pr_err!(
                    "VMX is already in use on CPU {} (CR4.VMXE set): another hypervisor, such as kvm_intel, owns it\n",
                    cpu
                );
                Err(EBUSY)
            }
            Err(VmxOnError::Failed(e)) => {
                pr_err!("VMXON failed on CPU {}: {}\n", cpu, e);
                Err(EIO)
            }
        }
    }

    /// VMX is off whenever no guest runs on this CPU: nothing to undo.
    fn disable_cpu(&self, _cpu: u32) {}

    fn host_limits(&self) -> HostLimits {
        self.limits
    }

    fn hypercall_insn(&self) -> [u8; 3] {
        crate::backend::VMCALL
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        write!(
            f,
            "Intel VMX with EPT and unrestricted guest, VMCS revision {:#x}, VPID {}, 2 MiB EPT pages {}, INS/OUTS info {}",
            s.caps.revision,
            if s.caps.vpid { "yes" } else { "no" },
            if s.caps.large_pages { "yes" } else { "no" },
            if s.caps.ins_outs_info { "yes" } else { "no" },
        )
    }

    fn create_vcpu(&self) -> Result<KBox<dyn VendorVcpu>> {
        let vcpu = vcpu::VmxVcpu::new(self.shared.clone())?;
        Ok(KBox::new(vcpu, GFP_KERNEL_ACCOUNT)? as KBox<dyn VendorVcpu>)
    }

    fn create_slat(&self) -> Result<KBox<dyn SecondLevel>> {
        // 4 levels: guest-physical addresses up to 48 bits (crate::mmu::GPA_BITS).
        let ept = Slat::<ept::Ept>::new(4, self.shared.caps.large_pages)?;
        Ok(KBox::new(ept, GFP_KERNEL_ACCOUNT)? as KBox<dyn SecondLevel>)
    }
}

pub(crate) use ept::eptp;
