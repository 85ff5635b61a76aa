// SPDX-License-Identifier: GPL-2.0

//! The seam between common code and vendor code.
//!
//! Common code (the device, VMs, vCPUs, memory slots, and the run loop)
//! talks to the hardware only through [`Backend`] and [`VendorVcpu`], in
//! the shape of KVM's `kvm_x86_ops`: one implementation per vendor
//! extension, chosen at module load. A backend enables and disables the
//! extension on each CPU and creates vendor vCPUs; a vendor vCPU loads the
//! vendor-neutral register state into its VMCB (or VMCS), enters the
//! guest, and turns the hardware's exit code into one [`Exit`]. What to do
//! about an exit is common code's business (`run/`; see
//! docs/run-loop.md).

use crate::abi::{kvm_regs, kvm_sregs};
use crate::mmu::SecondLevel;
use crate::spec::Plan;
use crate::sys::cpu::PerCpu;
use crate::sys::mem::HostPhysAddr;
use crate::x86::msr::MsrFile;
use crate::x86::regs::HostLimits;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;

/// The vendor's hardware-virtualisation extension.
pub(crate) trait Backend: Send + Sync {
    /// Turns the extension on for the current CPU (`cpu`). Must refuse with
    /// `EBUSY` if someone else (the real KVM) already has it on.
    fn enable_cpu(&self, cpu: u32) -> Result;

    /// Turns the extension off for the current CPU, if this backend turned it
    /// on.
    fn disable_cpu(&self, cpu: u32);

    /// What the host CPU lets guests have, for register checks.
    fn host_limits(&self) -> HostLimits;

    /// One line for the kernel log: the extension and its features.
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;

    /// Creates the vendor half of a vCPU (its VMCB or VMCS).
    fn create_vcpu(&self) -> Result<KBox<dyn VendorVcpu>>;

    /// Creates an empty second-level page table in the vendor's format.
    fn create_slat(&self) -> Result<KBox<dyn SecondLevel>>;

    /// The vendor's hypercall instruction ([`VMMCALL`] or [`VMCALL`]); the
    /// other one is #UD in its guests.
    fn hypercall_insn(&self) -> [u8; 3];
}

/// SVM's hypercall instruction. APM Vol. 3 VMMCALL.
pub(crate) const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
/// VMX's hypercall instruction. SDM Vol. 2B VMCALL.
pub(crate) const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];

/// An event for the guest to take at the next entry. Intel SDM Vol. 3A
/// 6.1 and APM Vol. 2 8.1 (vectors); APM Vol. 2 15.20 (injection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// An external interrupt (`KVM_INTERRUPT`).
    Interrupt(u8),
    /// A non-maskable interrupt.
    Nmi,
    /// A processor exception, with its error code if it has one.
    Exception { vector: u8, error_code: Option<u32> },
}

/// What common code asks of one entry into the guest.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// An event to deliver first.
    pub(crate) inject: Option<Event>,
    /// Exit as soon as the guest can take an interrupt.
    pub(crate) interrupt_window: bool,
    /// The root of the VM's second-level page table (NPT or EPT).
    pub(crate) slat_root: HostPhysAddr,
    /// The VM's mapping generation: when it differs from the last entry's,
    /// the vCPU's cached guest translations must be flushed.
    pub(crate) mapping_generation: u64,
    /// Flush the vCPU's cached guest translations anyway (an emulated
    /// instruction changed how the guest translates, e.g. MOV to CR4).
    pub(crate) flush_tlb: bool,
    /// The guest is in an interrupt shadow (as the last exit said, unless
    /// an emulated instruction ended it).
    pub(crate) interrupt_shadow: bool,
    /// NMIs are blocked: an NMI was delivered and its handler has not
    /// executed IRET yet. VMX keeps it in the guest's interruptibility
    /// state (virtual NMIs); SVM has no such state and uses
    /// [`Self::intercept_iret`].
    pub(crate) nmi_blocked: bool,
    /// Exit before the guest executes IRET (SVM: the IRET that ends an NMI
    /// handler unblocks NMIs).
    pub(crate) intercept_iret: bool,
    /// Exit as soon as an NMI can be injected (VMX's NMI-window exiting).
    /// SVM has none: a waiting NMI goes in at the next exit.
    pub(crate) nmi_window: bool,
    /// The guest uses PAE paging and its four PDPTEs must be (re)loaded
    /// from memory: after `KVM_SET_SREGS` or an emulated CR0/CR4 write.
    /// VMX with EPT takes them from the VMCS, not from CR3 (SDM Vol. 3C
    /// 27.3.2.4); SVM reads them itself and ignores this.
    pub(crate) pdptrs: Option<[u64; 4]>,
    /// Intercept the guest's #DB ([`Exit::Debug`]) and #BP
    /// ([`Exit::Exception`], vector 3): the VMM is debugging the guest
    /// (`KVM_SET_GUEST_DEBUG`, x86/guest_debug.rs).
    pub(crate) intercept_db: bool,
    pub(crate) intercept_bp: bool,
    /// The VMM single-steps the guest (RFLAGS.TF is set for this entry):
    /// VMX drops the guest's STI/MOV SS shadow, as KVM does, or the entry
    /// would fail with TF in the shadow.
    pub(crate) single_step: bool,
    /// DR7 while the guest runs: the VMM's hardware breakpoints' (with
    /// DR0-DR3 loaded by common code, sys/debugreg.rs), or 0x400, every
    /// breakpoint off (the guest's own are never loaded: docs/abi.md).
    pub(crate) dr7: u64,
}

/// The guest's registers as common code keeps them between entries: the
/// ABI's structs plus the MSRs. A vendor vCPU loads them before each entry
/// and stores them back after each exit.
pub(crate) struct GuestRegs<'a> {
    pub(crate) regs: &'a mut kvm_regs,
    pub(crate) sregs: &'a mut kvm_sregs,
    pub(crate) msrs: &'a mut MsrFile,
}

impl GuestRegs<'_> {
    /// The same registers, lent for a shorter while.
    pub(crate) fn reborrow(&mut self) -> GuestRegs<'_> {
        GuestRegs {
            regs: self.regs,
            sregs: self.sregs,
            msrs: self.msrs,
        }
    }
}

/// What a vendor vCPU asks after each exit, with the guest's context still
/// loaded (interrupts off; on VMX, in VMX operation with the vCPU's VMCS
/// current): the next entry, if common code answered the exit and wants
/// the guest entered again at once (its fast path, run/fastpath.rs), or
/// `None` to have the exit returned.
pub(crate) type Reenter<'a> = &'a mut dyn FnMut(&mut GuestRegs<'_>, &ExitInfo) -> Option<Entry>;

/// A port I/O instruction that exited. APM Vol. 2 15.10.2; SDM Vol. 3C
/// 28.2.1 Table 28-5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoExit {
    pub(crate) port: u16,
    /// Bytes per element: 1, 2 or 4.
    pub(crate) size: u8,
    pub(crate) input: bool,
    /// INS or OUTS.
    pub(crate) string: bool,
    pub(crate) rep: bool,
    /// The address size of a string instruction, in bytes: 2, 4 or 8.
    pub(crate) address_size: u8,
}

/// Why the guest stopped, in vendor-neutral terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// IN, OUT, INS or OUTS.
    Io(IoExit),
    /// HLT.
    Hlt,
    /// CPUID.
    Cpuid,
    /// RDMSR (`write` false) or WRMSR.
    Msr { write: bool },
    /// MOV to or from a debug register.
    DebugRegister,
    /// MOV to control register `cr`; `gpr` is the source register's
    /// number when the hardware decoded it (SVM's decode assists, VMX).
    CrWrite { cr: u8, gpr: Option<u8> },
    /// MOV from control register `cr` (VMX's CR8 exits) into `gpr`.
    CrRead { cr: u8, gpr: Option<u8> },
    /// LMSW with its source operand (VMX, when it sets CR0.PE, which the
    /// host owns; the exit qualification carries the operand).
    Lmsw { source: u16 },
    /// The second-level page table did not allow an access.
    SlatFault {
        gpa: u64,
        write: bool,
        fetch: bool,
        /// The translation existed (a permission fault).
        present: bool,
        /// The access was the guest's own page-table walk.
        page_walk: bool,
    },
    /// The guest triple-faulted (shutdown).
    Shutdown,
    /// A physical interrupt or NMI for the host: nothing to do for the
    /// guest, which resumes.
    HostInterrupt,
    /// The guest can now take an interrupt ([`Entry::interrupt_window`]).
    InterruptWindow,
    /// The guest can now take an NMI ([`Entry::nmi_window`]).
    NmiWindow,
    /// The guest is about to execute IRET ([`Entry::intercept_iret`]).
    Iret,
    /// An exception the backend intercepts for the host's protection
    /// (alignment check): give it back to the guest.
    Exception { vector: u8, error_code: Option<u32> },
    /// An instruction the guest is not given (VMRUN, MONITOR...): #UD.
    Undefined,
    /// The vendor's hypercall instruction: VMMCALL (`0F 01 D9`) on SVM,
    /// VMCALL (`0F 01 C1`) on VMX; `opcode` is this one's.
    Hypercall { opcode: [u8; 3] },
    /// A #DB the guest raised, intercepted ([`Entry::intercept_db`]):
    /// `dr6` says why, as DR6 would for the guest (active-low bits set).
    /// RIP is where the guest stands after it (a trap) or at it (a fault).
    Debug { dr6: u64 },
    /// RSM (SVM's intercept; on VMX, and on SVM too where the CPU checks
    /// SMM first, RSM outside real SMM is #UD, intercepted as such):
    /// the guest leaves SMM (run/smm.rs), or gets #UD if it is not in it.
    Rsm,
    /// XSETBV: the guest sets the extended control register ECX names to
    /// EDX:EAX (run/regs.rs `xsetbv`). Both vendors always exit for it.
    Xsetbv,
    /// INVD or WBINVD (`writeback`): the caches are the host's; skip the
    /// instruction (a guest must not drop or flush the host's caches).
    CacheFlush { writeback: bool },
    /// The hardware refused to enter: the guest state is invalid. Carries
    /// the vendor's reason (SVM exit code or VMX basic exit reason).
    InvalidState(u64),
    /// Anything else, with the vendor's exit code.
    Unhandled(u64),
    /// The extension is in use by another hypervisor on this CPU (VMX,
    /// which rkvm turns on only around each entry): nothing ran.
    Busy,
}

/// What the vendor vCPU reports with an exit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExitInfo {
    pub(crate) exit: Exit,
    /// An event that was being delivered when the guest exited; it must be
    /// delivered again.
    pub(crate) interrupted_event: Option<Event>,
    /// The guest is in an interrupt shadow (after STI or MOV SS).
    pub(crate) interrupt_shadow: bool,
    /// Whether NMIs are blocked now, where the hardware tracks it (VMX);
    /// `None` where rkvm does (SVM).
    pub(crate) nmi_blocked: Option<bool>,
    /// The address of the next instruction, if the hardware told us
    /// (NRIPS on SVM, the instruction length on VMX; also IOIO on SVM).
    pub(crate) next_rip: Option<u64>,
    /// The bytes of the faulting instruction of a second-level fault, if
    /// the hardware fetched them (SVM's decode assists): `len` bytes of
    /// `bytes`.
    pub(crate) insn: Option<InsnBytes>,
    /// The vendor's own words for the exit, which KVM's internal-error
    /// exits report (`get_exit_info`).
    pub(crate) raw: RawExit,
}

/// An exit as the hardware described it, for user space's diagnostics:
/// SVM's exit code, EXITINFO1 and EXITINFO2; VMX's exit reason, exit
/// qualification and IDT-vectoring information. Zero for exits the
/// hardware did not report (nothing ran).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawExit {
    pub(crate) reason: u64,
    pub(crate) info1: u64,
    pub(crate) info2: u64,
}

/// Instruction bytes the hardware fetched for us.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InsnBytes {
    pub(crate) bytes: [u8; 15],
    pub(crate) len: usize,
}

/// The vendor half of a vCPU.
pub(crate) trait VendorVcpu: Send {
    /// Loads `guest`, enters the guest, and stores the registers back into
    /// `guest` when it exits; then asks `reenter` whether to enter again
    /// with a new entry (the registers as `reenter` left them) before
    /// returning, and returns the first exit `reenter` does not answer.
    /// Entering again, a backend keeps what it can of the last entry: VMX
    /// stays in VMX operation with the VMCS current and resumes it.
    ///
    /// Called with interrupts disabled and inside a kernel FPU section
    /// holding the guest's FPU state, so that the caller stays on one CPU.
    fn run(&mut self, guest: GuestRegs<'_>, entry: &Entry, reenter: Reenter<'_>) -> ExitInfo;
}

impl kernel::fmt::Display for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f)
    }
}

/// Set once the system shuts down (reboot, kexec, power-off), before the
/// extension is turned off on every CPU; never cleared (KVM's
/// `kvm_rebooting`). From then on no vCPU enters its guest: a vCPU thread
/// still running on another CPU would otherwise execute VMRUN or VMLAUNCH
/// right after its CPU turned SVM or VMX off, and take #UD in the kernel.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Whether guests may be entered: false once the system shuts down. The
/// run loop asks with interrupts off just before each entry; the per-CPU
/// teardown is an IPI, so it cannot run between the answer and the entry
/// (it interrupts the guest instead, and the next check says no).
pub(crate) fn entries_allowed() -> bool {
    !STOPPED.load(Ordering::SeqCst)
}

/// Per-CPU enabling for the hotplug machinery: forwards to the backend.
pub(crate) struct VirtCpus(pub(crate) Arc<dyn Backend>);

impl PerCpu for VirtCpus {
    fn online(&self, cpu: u32) -> Result {
        self.0.enable_cpu(cpu)
    }

    fn offline(&self, cpu: u32) {
        self.0.disable_cpu(cpu)
    }

    fn shutting_down(&self) {
        STOPPED.store(true, Ordering::SeqCst);
    }
}

/// Finds a usable extension on this CPU and returns its backend, or
/// `ENODEV` after saying why none is usable.
pub(crate) fn probe() -> Result<Arc<dyn Backend>> {
    // CPUID.1:ECX bit 5 is VMX (Intel, Zhaoxin); otherwise try SVM (AMD, Hygon).
    let vmx = crate::sys::cpu::cpuid(1, 0).ecx & (1 << 5) != 0;
    let spec = speculation_plan(vmx);
    let found = if vmx {
        crate::vmx::Vmx::probe(spec)
    } else {
        crate::svm::Svm::probe(spec)
    };
    match found {
        Ok(backend) => {
            report_speculation_plan(&spec);
            Ok(backend)
        }
        Err(why) => {
            pr_err!("no usable hardware virtualization: {}\n", why);
            Err(ENODEV)
        }
    }
}

/// The speculation steps for this host (module/spec.rs).
/// `rkvm.speculation_test=1` adds every sequence that needs no CPU feature,
/// so that the test suite runs them on a kernel without mitigations.
fn speculation_plan(vmx: bool) -> Plan {
    let plan = Plan::new(crate::sys::spec::host_bits(), vmx);
    if crate::module_parameters::speculation_test.value() {
        plan.with_every_sequence(vmx)
    } else {
        plan
    }
}

/// Logs the plan once a backend is found: what rkvm does around each
/// entry.
fn report_speculation_plan(plan: &Plan) {
    let mut names = plan.names().peekable();
    if names.peek().is_none() {
        pr_info!("speculation: nothing to do around guest entry (the host asks for nothing)\n");
    } else {
        let mut line = KVec::<u8>::new();
        for (i, name) in names.enumerate() {
            if i > 0 {
                let _ = line.extend_from_slice(b", ", GFP_KERNEL);
            }
            let _ = line.extend_from_slice(name.as_bytes(), GFP_KERNEL);
        }
        pr_info!(
            "speculation: {}{}\n",
            core::str::from_utf8(&line).unwrap_or("?"),
            if crate::module_parameters::speculation_test.value() {
                " (speculation_test)"
            } else {
                ""
            }
        );
    }
}
