// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the run loop, in common code.
//!
//! One `KVM_RUN` first completes what the previous exit to user space left
//! open (an IN's data, an MMIO read's value), then loops: enter the guest
//! through the vendor vCPU, look at the vendor-neutral [`Exit`], and either
//! handle it here (CPUID, MSRs, a page to map, an event to re-deliver) and
//! go round again, or fill in `kvm_run` and return to user space (port I/O,
//! MMIO, HLT, shutdown...). A pending signal ends the loop with `EINTR`
//! and `KVM_EXIT_INTR`; the scheduler gets the CPU whenever it asks.
//! docs/run-loop.md walks through one trip with the code and the manuals.
//!
//! This file is the loop and the dispatch of exits; the exits it finishes
//! itself have a file each: [`insn`] reads the guest's instruction at RIP
//! (fetch through the guest's page tables, skip, emulation failure),
//! [`regs`] answers CPUID, RDMSR/WRMSR and MOV to and from CR and DR,
//! [`io`] port I/O and [`mmio`] MMIO. The architectural rules they apply
//! to the registers are pure functions in `x86::emulate`.
//!
//! Semantics are KVM's (`arch/x86/kvm/x86.c`): port I/O and MMIO reads
//! complete on the next `KVM_RUN`. Without an in-kernel irqchip HLT exits
//! to user space and interrupts come from `KVM_INTERRUPT`; with one
//! (`apic`), HLT sleeps in the kernel, interrupts come from the local
//! APIC and the PIC, and their registers and ports are emulated here.

mod apic;
pub(crate) mod debug;
mod events;
mod fastpath;
pub(crate) mod hyperv;
mod insn;
mod io;
pub(crate) mod kvmclock;
mod mmio;
mod msr_exit;
mod nmi;
mod regs;
pub(crate) mod smm;
mod steal_time;
mod sync;

use self::nmi::NmiState;
use self::smm::SmmState;
use crate::abi::{
    self, kvm_debugregs, kvm_run, kvm_run__bindgen_ty_1__bindgen_ty_13 as InternalError,
    kvm_run__bindgen_ty_1__bindgen_ty_2 as FailEntry,
};
use crate::backend::{self, Entry, Event, Exit, ExitInfo, GuestRegs, IoExit, VendorVcpu};
use crate::stats::VcpuStats;
use crate::sys::cpu::{self, IrqsDisabled};
use crate::sys::debugreg::GuestBreakpoints;
use crate::sys::fpu::{FpuImage, FpuLayout, FpuSection};
use crate::sys::mem::SharedPage;
use crate::vcpu::{ArchState, Vcpu};
use crate::vm::{Backing, Vm};
use crate::x86::decode::{CodeSize, MmioInsn, MAX_INSN_LEN};
use crate::x86::guest_debug::GuestDebug;
use crate::x86::regs::{cr0, cr4, efer};
use crate::x86::walk::Access;
use core::mem::offset_of;
use insn::{emulation_failed, fetch, skip, skip_or_fail};
use io::port_io;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::sync::Arc;
use mmio::mmio;
use regs::{answer_cpuid, cr_read, cr_write, debug_register, lmsw};

pub(crate) use apic::{apic_base_changed, IrqLink};
pub(crate) use regs::with_runtime_bits;

/// Where the exit-specific union starts in `struct kvm_run`.
const UNION: usize = offset_of!(kvm_run, __bindgen_anon_1);

/// Where port I/O data goes: the second page of the vCPU mapping (the
/// offset user space sees in `kvm_run.io.data_offset`).
const PIO_OFFSET: usize = abi::KVM_PIO_PAGE_OFFSET as usize * PAGE_SIZE;

/// RFLAGS bits. SDM Vol. 1 3.4.3.
const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.TF: trap after the next instruction (single-step).
const RFLAGS_TF: u64 = 1 << 8;

const RFLAGS_DF: u64 = 1 << 10;

const RFLAGS_VM: u64 = 1 << 17;

/// Exception vectors. SDM Vol. 3A 6.3.1.
const UD_VECTOR: u8 = 6;
/// #DB's vector.
const DB_VECTOR: u8 = 1;

const GP_VECTOR: u8 = 13;

const PF_VECTOR: u8 = 14;

/// DR6 and DR7 at reset. SDM Vol. 3B 19.2.
const DR6_RESET: u64 = 0xffff_0ff0;

const DR7_RESET: u64 = 0x400;

/// The run-time state of a vCPU beyond its registers.
pub(crate) struct RunState {
    hw: KBox<dyn VendorVcpu>,
    fpu: FpuImage,
    /// What the next `KVM_RUN` must finish before entering.
    pending: Option<PendingAt>,
    /// The interrupt `KVM_INTERRUPT` queued.
    queued_irq: Option<u8>,
    /// An event to deliver at the next entry (an exception rkvm raises, or
    /// one whose delivery an exit interrupted).
    event: Option<Event>,
    interrupt_shadow: bool,
    /// Flush the guest's cached translations at the next entry.
    flush_tlb: bool,
    /// The PAE PDPTEs must be read from guest memory again before the next
    /// entry ([`Entry::pdptrs`]).
    reload_pdptrs: bool,
    /// DR0–DR3, DR6 and DR7 as the guest sees them. They are never loaded
    /// into the hardware: guest breakpoints do not fire (docs/abi.md).
    dr: [u64; 4],
    dr6: u64,
    dr7: u64,
    /// The in-kernel irqchip, if the VM has one (`KVM_CREATE_IRQCHIP`).
    pub(crate) irq: Option<IrqLink>,
    /// NMIs waiting, and whether the guest blocks them (`run/nmi.rs`).
    pub(crate) nmi: NmiState,
    /// The guest has been entered at least once (KVM's
    /// `kvm_vcpu_has_run`): its CPUID may no longer change.
    pub(crate) has_run: bool,
    /// `KVM_ENABLE_CAP(KVM_CAP_ENFORCE_PV_FEATURE_CPUID)` on the vCPU: the
    /// guest may use a paravirtual MSR only if its CPUID leaf 0x4000_0001
    /// offers the feature (`x86/msr.rs`).
    pub(crate) pv_cpuid_enforced: bool,
    /// The vCPU's statistics (`stats::VcpuStats`), counted here beside the
    /// VM's.
    stats: Arc<VcpuStats>,
    /// What the guest's kvmclock structure was last written from
    /// (run/kvmclock.rs), `None` while it is disabled.
    pub(crate) kvmclock_written: Option<kvmclock::Written>,
    /// The thread's `run_delay` when the guest's steal time was last
    /// updated (run/steal_time.rs).
    steal_last: u64,
    /// Hyper-V's VP index (`HV_X64_MSR_VP_INDEX`, run/hyperv.rs): the
    /// vCPU's creation order until the VMM sets it; an INIT keeps it.
    pub(crate) hv_vp_index: u32,
    /// `KVM_SET_GUEST_DEBUG`'s setting (run/debug.rs).
    guest_debug: GuestDebug,
    /// A single step rkvm completed by emulating the instruction, to be
    /// reported before the next entry (run/debug.rs).
    step_done: bool,
    /// Where the last software-breakpoint stop was (linear RIP) and its
    /// instruction's length (run/debug.rs `reinject_past_int3`).
    int3_stop: Option<(u64, u64)>,
    /// System management mode: in it or not, an SMI waiting (run/smm.rs).
    pub(crate) smm: SmmState,
}

impl RunState {
    pub(crate) fn new(
        hw: KBox<dyn VendorVcpu>,
        irq: Option<IrqLink>,
        stats: Arc<VcpuStats>,
    ) -> Result<Self> {
        Ok(Self {
            irq,
            hw,
            fpu: FpuImage::new(FpuLayout::probe())?,
            pending: None,
            queued_irq: None,
            event: None,
            interrupt_shadow: false,
            flush_tlb: false,
            reload_pdptrs: true,
            dr: [0; 4],
            dr6: DR6_RESET,
            dr7: DR7_RESET,
            nmi: NmiState::default(),
            has_run: false,
            pv_cpuid_enforced: false,
            stats,
            kvmclock_written: None,
            steal_last: 0,
            hv_vp_index: 0,
            guest_debug: GuestDebug::default(),
            step_done: false,
            int3_stop: None,
            smm: SmmState::default(),
        })
    }

    /// The control registers were set from outside (`KVM_SET_SREGS`): the
    /// PAE PDPTEs are read again from the new CR3 before the next entry, as
    /// KVM's `__set_sregs` loads them, and if CR0, CR3, CR4 or EFER changed
    /// (`paging_changed`) the guest's cached translations go, as KVM resets
    /// its MMU context then: the guest did not flush them itself, since it
    /// did not load CR3.
    pub(crate) fn sregs_changed(&mut self, paging_changed: bool) {
        self.reload_pdptrs = true;
        self.flush_tlb |= paging_changed;
    }

    /// An INIT: nothing queued or half-done survives it.
    pub(crate) fn init_reset(&mut self) {
        self.pending = None;
        self.queued_irq = None;
        self.event = None;
        self.interrupt_shadow = false;
        self.reload_pdptrs = true;
        self.flush_tlb = true;
        self.nmi.reset();
        self.smm = SmmState::default();
    }

    /// The guest's FPU and extended register image (`KVM_GET_FPU`).
    pub(crate) fn fpu(&self) -> &FpuImage {
        &self.fpu
    }

    /// The guest's FPU image, to change (`KVM_SET_FPU`).
    pub(crate) fn fpu_mut(&mut self) -> &mut FpuImage {
        &mut self.fpu
    }

    /// `KVM_GET_DEBUGREGS`: DR0-DR3, DR6 and DR7 as the guest sees them.
    pub(crate) fn debugregs(&self) -> kvm_debugregs {
        kvm_debugregs {
            db: self.dr,
            dr6: self.dr6,
            dr7: self.dr7,
            ..Default::default()
        }
    }

    /// `KVM_SET_DEBUGREGS`, as KVM's: `EINVAL` for a flag or a bit in the
    /// reserved upper halves of DR6 and DR7; the values are kept as given
    /// (the guest reads them back with MOV). SDM Vol. 3B 19.2.
    pub(crate) fn set_debugregs(&mut self, regs: &kvm_debugregs) -> Result {
        if regs.flags != 0 || regs.dr6 >> 32 != 0 || regs.dr7 >> 32 != 0 {
            return Err(EINVAL);
        }
        self.dr = regs.db;
        self.dr6 = regs.dr6;
        self.dr7 = regs.dr7;
        Ok(())
    }

    /// `KVM_INTERRUPT` without an in-kernel irqchip: queues vector `irq`
    /// for the next entry, replacing one queued before (user space is
    /// expected to wait for `ready_for_interrupt_injection`). A vector
    /// above 255 is `EINVAL`. As KVM's `kvm_vcpu_ioctl_interrupt`.
    pub(crate) fn queue_interrupt(&mut self, irq: u32) -> Result {
        let irq = u8::try_from(irq).map_err(|_| EINVAL)?;
        self.queued_irq = Some(irq);
        Ok(())
    }
}

/// An exit to user space that the next `KVM_RUN` completes, unless user
/// space has moved the vCPU elsewhere meanwhile (`KVM_SET_REGS` or
/// `KVM_SET_SREGS` changed CS.base + RIP), as KVM's
/// `complete_fast_pio_*` check.
#[derive(Clone, Copy)]
struct PendingAt {
    what: Pending,
    /// CS.base + RIP when the exit happened.
    linear_rip: u64,
}

/// What an exit to user space left to finish.
#[derive(Clone, Copy)]
enum Pending {
    /// IN or INS: the data user space left in the I/O page goes to RAX or
    /// to guest memory.
    In(StringIo),
    /// OUT or OUTS: only RIP (and for OUTS, RSI/RCX) move on.
    Out(StringIo),
    /// An MMIO load: `kvm_run.mmio.data` goes to the register.
    MmioLoad { insn: MmioInsn, next_rip: u64 },
    /// RDMSR or WRMSR user space was asked to handle (run/msr_exit.rs).
    Msr { write: bool, next_rip: u64 },
    /// A Hyper-V hypercall user space was asked to handle (run/hyperv.rs).
    HypervCall { next_rip: u64, wide: bool },
}

/// One port-I/O exit's transfer.
#[derive(Clone, Copy)]
struct StringIo {
    io: IoExit,
    /// Elements transferred by this exit.
    count: u32,
    next_rip: u64,
    /// For INS: the guest-physical address of the first element.
    gpa: u64,
    /// RFLAGS.DF at the exit: the elements go down from `gpa`. Kept, so
    /// that user space changing DF during the exit cannot turn the writes
    /// away from the page the count was measured in.
    backwards: bool,
}

/// How an exit is handled.
enum Next {
    /// Enter the guest again.
    Enter,
    /// Return to user space with this exit reason (the union is filled).
    User,
    /// Return to user space with an error.
    Fail(Error),
}

/// The `kvm_run` header fields `KVM_RUN` reads.
struct Request {
    interrupt_window: bool,
    immediate_exit: bool,
}

/// `KVM_RUN`.
pub(crate) fn run(vm: &Vm, vcpu: &Vcpu, state: &mut ArchState) -> Result<isize> {
    let page = SharedPage(vcpu.run_page());
    let pio = SharedPage(vcpu.pio_page());
    let pages = Pages {
        run: &page,
        pio: &pio,
    };
    let result = run_loop(vm, vcpu, state, &pages);
    // The registers user space asked to find in `kvm_run.s.regs`, as
    // KVM's `store_regs`, and like KVM's `post_kvm_run_save`, on every
    // return.
    sync::store_valid(state, &page)?;
    let ready = ready_for_interrupt(state);
    page.write(
        offset_of!(kvm_run, if_flag),
        &u8::from(state.regs.rflags & RFLAGS_IF != 0),
    )?;
    page.write(
        offset_of!(kvm_run, ready_for_interrupt_injection),
        &u8::from(ready),
    )?;
    let flags = if state.run.smm.active {
        abi::KVM_RUN_X86_SMM as u16
    } else {
        0
    };
    page.write(offset_of!(kvm_run, flags), &flags)?;
    page.write(offset_of!(kvm_run, cr8), &state.sregs.cr8)?;
    page.write(offset_of!(kvm_run, apic_base), &state.sregs.apic_base)?;
    result
}

/// The two shared pages: `struct kvm_run`, and the port-I/O data page.
struct Pages<'a> {
    run: &'a SharedPage<'a>,
    pio: &'a SharedPage<'a>,
}

fn run_loop(vm: &Vm, vcpu: &Vcpu, state: &mut ArchState, pages: &Pages<'_>) -> Result<isize> {
    let page = pages.run;
    // With the in-kernel PIC, interrupts never come from user space: KVM
    // ignores the request then (`dm_request_for_irq_injection`).
    let pic_in_kernel = state.run.irq.as_ref().is_some_and(|l| !l.chip.is_split());
    let req = Request {
        interrupt_window: page.read::<u8>(offset_of!(kvm_run, request_interrupt_window))? != 0
            && !pic_in_kernel,
        immediate_exit: page.read::<u8>(offset_of!(kvm_run, immediate_exit))? != 0,
    };
    // Registers user space left in `kvm_run.s.regs` for this entry (run/sync.rs).
    sync::load_dirty(vm, state, page)?;
    // Without an in-kernel APIC, user space owns CR8 through kvm_run (`kvm_set_cr8`);
    // with one, KVM ignores kvm_run.cr8: the APIC's TPR is CR8.
    if state.run.irq.is_none() {
        let cr8 = page.read::<u64>(offset_of!(kvm_run, cr8))?;
        if cr8 >> 4 != 0 {
            return Err(EINVAL);
        }
        state.sregs.cr8 = cr8;
    }

    if let Some(pending) = state.run.pending.take() {
        let before = debug::before_emulation(state);
        if pending.linear_rip == before.0 {
            complete(vm, state, pages, pending.what)?;
            debug::note_emulated(state, before);
        }
    }
    if req.immediate_exit {
        return Err(EINTR);
    }

    let mut first_entry = true;
    loop {
        if cpu::signal_pending() {
            vm.stats.signal_exits.add(1);
            state.run.stats.signal_exits.add(1);
            page.write(offset_of!(kvm_run, exit_reason), &abi::KVM_EXIT_INTR)?;
            return Err(EINTR);
        }
        cpu::cond_resched();
        if !backend::entries_allowed() {
            // The system is shutting down: the extension is off, or about to be, everywhere.
            return Err(EIO);
        }

        // The VMM single-steps and rkvm emulated the last instruction.
        if debug::report_step(state, page)? {
            return Ok(0);
        }
        // Everything latched for this vCPU from here on is looked at before the
        // entry, or kicks the guest out (`irq::chip`'s protocol).
        if let Some(link) = state.run.irq.as_ref() {
            link.apic.clear_kick();
        }
        // INIT and SIPI, and a vCPU that waits (halted, or for INIT/SIPI),
        // in this KVM_RUN as in the last.
        if let Some(next) = apic::events(state, page)? {
            match next {
                Next::Fail(e) => return Err(e),
                _ => continue,
            }
        }
        apic::sync_tpr(vm, state);
        // The guest's kvmclock structure, if it has one and it is stale; its
        // steal time, at the first entry and after the thread waited; the
        // Hyper-V reference TSC page, if it is due.
        kvmclock::update(vm, state);
        steal_time::update(vm, state, first_entry);
        hyperv::update_tsc_page(vm, state);
        first_entry = false;
        // An SMI goes in before any NMI or interrupt (run/smm.rs).
        smm::take(vm, state)?;
        // NMIs the APIC latched join those `KVM_NMI` queued; one goes in
        // before any interrupt.
        if let Some(link) = state.run.irq.as_ref() {
            let n = link.apic.take_nmis();
            if n > 0 {
                state.run.nmi.queue(n);
            }
        }
        // While the VMM's debugger blocks them (`KVM_GUESTDBG_BLOCKIRQ`),
        // no new NMI or interrupt goes in, as KVM's
        // `kvm_check_and_inject_events`.
        let irqs_blocked = state.run.guest_debug.block_irq;
        let nmi_window = !irqs_blocked
            && state.run.nmi.pick(
                &mut state.run.event,
                state.run.interrupt_shadow,
                state.regs.rip,
            );
        // User space's request counts only while it could inject (KVM's
        // `kvm_cpu_accept_dm_intr`): with a split irqchip whose LINT0 takes
        // no ExtINT, a window would open at once, again and again, and the
        // guest would never run.
        let dm_window =
            req.interrupt_window && state.run.irq.as_ref().is_none_or(|l| l.accepts_extint());
        let window = !irqs_blocked && (apic::pick_interrupt(state) || dm_window);
        let irq = state.run.queued_irq.filter(|_| !irqs_blocked);
        let inject = state.run.event.or(irq.map(Event::Interrupt));
        debug::reinject_past_int3(state, inject);
        // Whether exits of this entry may be answered inside it (run/fastpath.rs).
        let fast = fastpath::allowed(
            &state.run,
            inject,
            window || nmi_window || req.interrupt_window,
        );
        let info = enter(vm, vcpu, state, inject, window, nmi_window, fast);
        debug::after_entry(state);
        let Some(info) = info else {
            // A signal or the scheduler came first: go round.
            continue;
        };
        let entered = !matches!(info.exit, Exit::InvalidState(_) | Exit::Busy);
        if entered {
            state.run.flush_tlb = false;
            state.run.has_run = true;
        }
        // Whatever was injected was delivered, unless the exit says otherwise (or the
        // guest never ran).
        if inject.is_some() && entered {
            if state.run.event.is_some() {
                state.run.event = None;
            } else {
                state.run.queued_irq = None;
            }
        }
        apic::cr8_to_tpr(state);
        apic::sync_from_vapic(vm, state);
        state.run.nmi.exited(
            inject.filter(|_| entered),
            info.nmi_blocked,
            info.interrupted_event,
        );
        state.run.interrupt_shadow = info.interrupt_shadow;
        if let Some(ev) = info.interrupted_event {
            state.run.event = Some(ev);
        }
        vm.stats.count_exit(&info.exit);
        state.run.stats.count_exit(&info.exit);

        let before = debug::before_emulation(state);
        let next = handle(vm, state, pages, &info)?;
        debug::note_emulated(state, before);
        match next {
            Next::Enter => {}
            Next::User => return Ok(0),
            Next::Fail(e) => return Err(e),
        }
        // Split irqchip: the guest EOIed an interrupt of user space's IOAPIC.
        if let Some(vector) = state.run.irq.as_mut().and_then(|l| l.eoi_exit.take()) {
            page.write(offset_of!(kvm_run, exit_reason), &abi::KVM_EXIT_IOAPIC_EOI)?;
            // `kvm_run.eoi.vector`, the union's first byte.
            page.write(UNION, &vector)?;
            return Ok(0);
        }
        // KVM: once the guest can take the interrupt user space is waiting to give it.
        if req.interrupt_window && ready_for_interrupt(state) {
            vm.stats.request_irq_exits.add(1);
            state.run.stats.request_irq_exits.add(1);
            page.write(
                offset_of!(kvm_run, exit_reason),
                &abi::KVM_EXIT_IRQ_WINDOW_OPEN,
            )?;
            return Ok(0);
        }
    }
}

/// Enters the guest, and returns its exit. `None` if it did not enter
/// because a signal, the scheduler or a kick is waiting (checked with
/// interrupts off, so that nothing arriving later is missed: it interrupts
/// the guest), or if it entered, answered the exits on the fast path
/// (`fast`: run/fastpath.rs) and then found one of those waiting before
/// entering again.
fn enter(
    vm: &Vm,
    vcpu: &Vcpu,
    state: &mut ArchState,
    inject: Option<Event>,
    interrupt_window: bool,
    nmi_window: bool,
    fast: bool,
) -> Option<ExitInfo> {
    // Read from guest memory, which may fault: before interrupts are disabled.
    let pdptrs = if state.run.reload_pdptrs {
        pae_pdptrs(vm, state)
    } else {
        None
    };
    let ArchState {
        regs,
        sregs,
        msrs,
        cpuid,
        run,
        ..
    } = state;
    let guest_osxsave = sregs.cr4 & cr4::OSXSAVE != 0;
    let xcr0 = run.fpu.xcr0();
    // The VMM's single step: TF for this entry only (run/debug.rs).
    let single_step = run.guest_debug.single_step;
    // The VMM's hardware breakpoints, if it enabled any.
    let breakpoints = run.guest_debug.hw.filter(|h| h.any_enabled());
    if single_step {
        regs.rflags |= RFLAGS_TF;
    }
    let fpu = FpuSection::enter(&mut run.fpu);
    let irqs = IrqsDisabled::new();
    // Dropped first (declared last): the host's XCR0 is back before the
    // FPU image is saved and interrupts come on.
    let _xfeatures = fpu.load_guest_xfeatures(&irqs, guest_osxsave);
    // Dropped before that: the host's breakpoints are back first.
    let _breakpoints = breakpoints.map(|h| GuestBreakpoints::load(&irqs, &h.addr));
    // Pairs with `Vm::unmap`: publish that we are in the guest before reading the
    // generation (both sequentially consistent).
    let cpu = cpu::this_cpu();
    vcpu.set_running_on(Some(cpu));
    // Pairs with `VcpuApic::kick`: an interrupt that arrived since the
    // injection was decided makes the loop go round and decide again.
    let kicked = run.irq.as_ref().is_some_and(|l| l.apic.entering(Some(cpu)));
    let (nmi_blocked, intercept_iret) = run.nmi.entry_flags(inject);
    let entry = Entry {
        nmi_blocked,
        intercept_iret,
        nmi_window,
        inject,
        interrupt_window,
        slat_root: vm.slat_roots[run.smm.space().index()],
        mapping_generation: vm
            .mapping_generation
            .load(core::sync::atomic::Ordering::SeqCst),
        flush_tlb: run.flush_tlb,
        interrupt_shadow: run.interrupt_shadow,
        pdptrs,
        intercept_db: run.guest_debug.owns_debug_exceptions(),
        intercept_bp: run.guest_debug.sw_breakpoints,
        single_step,
        dr7: breakpoints.map_or(DR7_RESET, |h| h.dr7),
    };
    let info = if entry_cancelled(kicked) {
        None
    } else {
        cpu::guest_enter_rcu_quiescent(&irqs);
        // After each exit the backend asks the fast path (run/fastpath.rs)
        // whether to enter again at once.
        let mut fast_path = fastpath::FastPath {
            enabled: fast,
            vm,
            cpuid,
            xcr0,
            irq: run.irq.as_ref(),
            kvmclock_written: run.kvmclock_written,
            stats: &run.stats,
            irqs: &irqs,
            next: entry,
            answered_any: false,
            answered_last: false,
        };
        let info = run.hw.run(
            GuestRegs { regs, sregs, msrs },
            &entry,
            &mut |guest, info| fast_path.after_exit(guest, info),
        );
        run.reload_pdptrs = false;
        if fast_path.answered_any {
            // What the long way does after an exit it handled.
            run.has_run = true;
            run.flush_tlb = false;
            run.interrupt_shadow = false;
        }
        // An exit the fast path answered is not handled again.
        (!fast_path.answered_last).then_some(info)
    };
    vcpu.set_running_on(None);
    if let Some(link) = run.irq.as_ref() {
        link.apic.entering(None);
    }
    info
}

/// Whether an entry about to be made (or made again by the fast path) must
/// not be: a kick came (`kicked`), a signal or the scheduler is waiting,
/// or the system is shutting down. Checked with interrupts off, so that
/// anything arriving later interrupts the guest instead.
fn entry_cancelled(kicked: bool) -> bool {
    kicked || cpu::signal_pending() || cpu::need_resched() || !backend::entries_allowed()
}

/// The four PDPTEs at CR3 when the guest uses PAE paging (CR0.PG, CR4.PAE,
/// not long mode); an unreadable one is 0 (not present). SDM Vol. 3A 4.4.1.
fn pae_pdptrs(vm: &Vm, state: &ArchState) -> Option<[u64; 4]> {
    let s = &state.sregs;
    if s.cr0 & cr0::PG == 0 || s.cr4 & cr4::PAE == 0 || s.efer & efer::LMA != 0 {
        return None;
    }
    let base = s.cr3 & 0xffff_ffe0;
    let mut pdptes = [0u64; 4];
    for (i, pdpte) in pdptes.iter_mut().enumerate() {
        let mut bytes = [0u8; 8];
        if vm
            .read_guest_in(state.run.smm.space(), base + 8 * i as u64, &mut bytes)
            .is_some()
        {
            *pdpte = u64::from_le_bytes(bytes);
        }
    }
    Some(pdptes)
}

/// Whether user space may inject an interrupt now (KVM's
/// `kvm_vcpu_ready_for_interrupt_injection`): the guest has IF set, is
/// not in an interrupt shadow, and nothing is waiting to be delivered;
/// with a split irqchip, LINT0 must also take the ExtINT and none wait.
/// With the in-kernel PIC it is always so (KVM's `post_kvm_run_save`):
/// user space never injects then.
fn ready_for_interrupt(state: &ArchState) -> bool {
    let dm_ok = match state.run.irq.as_ref() {
        None => true,
        Some(link) if link.chip.is_split() => link.accepts_extint(),
        Some(_) => return true,
    };
    dm_ok
        && state.regs.rflags & RFLAGS_IF != 0
        && !state.run.interrupt_shadow
        && state.run.event.is_none()
        && state.run.queued_irq.is_none()
}

/// Handles one exit.
fn handle(vm: &Vm, state: &mut ArchState, pages: &Pages<'_>, info: &ExitInfo) -> Result<Next> {
    let page = pages.run;
    match info.exit {
        Exit::HostInterrupt | Exit::InterruptWindow | Exit::NmiWindow => Ok(Next::Enter),
        Exit::Iret => {
            state.run.nmi.iret_seen(state.regs.rip);
            Ok(Next::Enter)
        }
        Exit::Io(io) => port_io(vm, state, pages, io, info.next_rip),
        Exit::Hlt => {
            if !skip(vm, state, info, &[0xf4], page)? {
                return Ok(Next::User);
            }
            vm.stats.halt_exits.add(1);
            state.run.stats.halt_exits.add(1);
            // With an in-kernel APIC the kernel waits for the interrupt.
            if let Some(next) = apic::halt(state) {
                return Ok(next);
            }
            exit_reason(page, abi::KVM_EXIT_HLT)
        }
        // CPUID faulting (MSR_MISC_FEATURES_ENABLES): #GP(0) outside the
        // guest's kernel, as KVM's `kvm_emulate_cpuid`.
        Exit::Cpuid if state.msrs.cpuid_faults() && state.sregs.ss.dpl != 0 => {
            raise(state, GP_VECTOR, Some(0));
            Ok(Next::Enter)
        }
        Exit::Cpuid => {
            answer_cpuid(state);
            skip_or_fail(vm, state, info, &[0x0f, 0xa2], page)
        }
        Exit::Msr { write } => msr_exit::access(vm, state, info, page, write),
        Exit::DebugRegister => debug_register(vm, state, page),
        Exit::CrWrite { cr, gpr } => cr_write(vm, state, page, info, cr, gpr),
        Exit::CrRead { cr, gpr } => cr_read(state, info, cr, gpr),
        Exit::Lmsw { source } => lmsw(state, info, source),
        // Another hypervisor holds VMX on this CPU (vmx/mod.rs): refuse, as at load.
        Exit::Busy => Ok(Next::Fail(EBUSY)),
        Exit::SlatFault {
            gpa,
            write,
            page_walk,
            ..
        } => match vm.map_gpa(state.run.smm.space(), gpa, write) {
            Ok(Backing::Mapped) => Ok(Next::Enter),
            // Delivering an event touched memory no slot backs (an IDT, a
            // stack or a TSS at an MMIO address): there is no instruction to
            // emulate, so user space is told, as KVM does
            // (`kvm_prepare_event_vectoring_exit`); the event stays queued.
            Ok(Backing::None | Backing::ReadOnly) if info.interrupted_event.is_some() => {
                event_vectoring_failure(page, info, gpa)
            }
            // The guest keeps its page tables where it has no memory: nothing an MMIO exit
            // could express (KVM's emulator fails the same way).
            Ok(Backing::None | Backing::ReadOnly) if page_walk => {
                let mut bytes = [0u8; MAX_INSN_LEN];
                let n = fetch(vm, state, &mut bytes);
                emulation_failed(vm, state, page, &bytes[..n])
            }
            Ok(Backing::None | Backing::ReadOnly) => mmio(vm, state, page, gpa, info.insn),
            Err(e) => Ok(Next::Fail(e)),
        },
        Exit::Shutdown => {
            // The VMCB is undefined after a shutdown intercept; KVM puts the vCPU through
            // INIT. APM Vol. 2 15.8 (shutdown intercept).
            let apic_base = state.sregs.apic_base;
            state.reset_after_shutdown();
            // The VMCB is undefined too: start from a new one if memory allows (the old one
            // is rewritten in full at every entry anyway).
            if let Ok(hw) = vm.shared.backend.create_vcpu() {
                state.run.hw = hw;
            }
            state.sregs.apic_base = apic_base;
            state.run.reload_pdptrs = true;
            state.run.event = None;
            state.run.queued_irq = None;
            // Nothing blocks NMIs or interrupts after the INIT (KVM's
            // `init_vmcb` clears the NMI mask, SMM's too).
            state.run.nmi.reset();
            state.run.interrupt_shadow = false;
            exit_reason(page, abi::KVM_EXIT_SHUTDOWN)
        }
        Exit::Exception {
            vector: UD_VECTOR, ..
        } => undefined_opcode(vm, state, pages),
        Exit::Exception {
            vector: debug::BP_VECTOR,
            ..
        } if state.run.guest_debug.sw_breakpoints => debug::breakpoint(vm, state, page),
        Exit::Exception { vector, error_code } => {
            raise(state, vector, error_code);
            Ok(Next::Enter)
        }
        Exit::Debug { dr6 } => debug::debug_exception(state, page, dr6),
        Exit::Xsetbv => regs::xsetbv(vm, state, info, page),
        Exit::Rsm if state.run.smm.active => smm::rsm(vm, state, pages),
        Exit::Rsm => {
            raise(state, UD_VECTOR, None);
            Ok(Next::Enter)
        }
        Exit::Undefined => {
            raise(state, UD_VECTOR, None);
            Ok(Next::Enter)
        }
        Exit::Hypercall { opcode } if hyperv::owns_hypercall(vm, state) => {
            hyperv::hypercall(vm, state, info, page, &opcode)
        }
        Exit::Hypercall { opcode } => {
            hypercall(state);
            skip_or_fail(vm, state, info, &opcode, page)
        }
        // INVD is 0F 08, WBINVD 0F 09 (WBNOINVD: F3 0F 09). SDM Vol. 2A.
        Exit::CacheFlush { writeback } => {
            let opcode = if writeback {
                [0x0f, 0x09]
            } else {
                [0x0f, 0x08]
            };
            skip_or_fail(vm, state, info, &opcode, page)
        }
        Exit::InvalidState(code) => {
            // Field by field: the struct has trailing padding.
            page.write(
                UNION + offset_of!(FailEntry, hardware_entry_failure_reason),
                &code,
            )?;
            page.write(UNION + offset_of!(FailEntry, cpu), &cpu::this_cpu())?;
            exit_reason(page, abi::KVM_EXIT_FAIL_ENTRY)
        }
        Exit::Unhandled(code) => {
            // KVM's `kvm_prepare_unexpected_reason_exit`: the exit code, then the CPU.
            let mut err = InternalError {
                suberror: abi::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
                ndata: 2,
                data: [0; 16],
            };
            err.data[0] = code;
            err.data[1] = u64::from(cpu::this_cpu());
            page.write(UNION, &err)?;
            exit_reason(page, abi::KVM_EXIT_INTERNAL_ERROR)
        }
    }
}

/// A hypercall, in KVM's ABI (`Documentation/virt/kvm/x86/hypercalls.rst`):
/// the number in RAX, the arguments from RBX, the result back in RAX.
/// rkvm provides two of KVM's services: KVM_HC_VAPIC_POLL_IRQ, which does
/// nothing and returns 0 on every KVM, and KVM_HC_SCHED_YIELD (the guest
/// waits for another vCPU: rkvm yields the CPU, where KVM yields to that
/// vCPU's thread if it is preempted), which, as in KVM, a VMM that
/// enforces the guest's CPUID allows only with KVM_FEATURE_PV_SCHED_YIELD.
/// Any other number is -KVM_ENOSYS, KVM's answer for a service not
/// offered; outside the guest's kernel, -KVM_EPERM. Outside 64-bit mode the
/// number and the result are 32 bits (KVM's `____kvm_emulate_hypercall`).
fn hypercall(state: &mut ArchState) {
    const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
    const KVM_HC_SCHED_YIELD: u64 = 11;
    const KVM_ENOSYS: u64 = 1000;
    const KVM_EPERM: u64 = 1;
    let wide = insn::code_size(state) == CodeSize::Bits64;
    let width = if wide { u64::MAX } else { u64::from(u32::MAX) };
    let offered = |feature: bool| !state.run.pv_cpuid_enforced || feature;
    let result = if state.sregs.ss.dpl != 0 {
        KVM_EPERM.wrapping_neg()
    } else {
        match state.regs.rax & width {
            KVM_HC_VAPIC_POLL_IRQ => 0,
            KVM_HC_SCHED_YIELD if offered(state.features.kvm_sched_yield) => {
                cpu::yield_now();
                0
            }
            _ => KVM_ENOSYS.wrapping_neg(),
        }
    };
    state.regs.rax = result & width;
}

/// A #UD the guest raised (intercepted on both vendors for this): RSM,
/// which rkvm emulates in SMM (run/smm.rs), or the other vendor's
/// hypercall instruction, as a guest started on a host of
/// the other vendor has patched into its code, is rewritten in guest memory
/// to this vendor's and executed again (RIP stays), as KVM's
/// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN`; otherwise, with the quirk turned
/// off, or if the guest's page tables do not let its kernel write there,
/// the guest takes its #UD.
fn undefined_opcode(vm: &Vm, state: &mut ArchState, pages: &Pages<'_>) -> Result<Next> {
    let native = vm.shared.backend.hypercall_insn();
    let other = if native == backend::VMCALL {
        backend::VMMCALL
    } else {
        backend::VMCALL
    };
    let mut bytes = [0u8; MAX_INSN_LEN];
    let n = fetch(vm, state, &mut bytes);
    // RSM. SDM Vol. 2B.
    if state.run.smm.active && n >= 2 && bytes[..2] == [0x0f, 0xaa] {
        return smm::rsm(vm, state, pages);
    }
    if n >= other.len()
        && bytes[..other.len()] == other
        && vm.has_quirk(abi::KVM_X86_QUIRK_FIX_HYPERCALL_INSN.into())
        && write_at_rip(vm, state, &native)
    {
        return Ok(Next::Enter);
    }
    raise(state, UD_VECTOR, None);
    Ok(Next::Enter)
}

/// Writes `bytes` over the guest's code at CS:RIP, byte by byte through its
/// page tables, as a write of its kernel would (KVM's
/// `emulator_write_emulated`); false, with nothing written, if a byte's
/// page is not writable that way.
fn write_at_rip(vm: &Vm, state: &ArchState, bytes: &[u8]) -> bool {
    let base = insn::seg_base(state, &state.sregs.cs, false);
    let access = Access {
        fetch: false,
        user: state.sregs.cs.dpl == 3,
        write: true,
    };
    let mut gpas = [0u64; MAX_INSN_LEN];
    for (i, gpa) in gpas.iter_mut().enumerate().take(bytes.len()) {
        let la = insn::linear(state, base, state.regs.rip.wrapping_add(i as u64));
        match insn::translate(vm, state, la, access) {
            Ok(t) => *gpa = t.gpa,
            Err(_) => return false,
        }
    }
    bytes.iter().zip(gpas.iter()).all(|(b, gpa)| {
        vm.write_guest_in(state.run.smm.space(), *gpa, &[*b])
            .is_some()
    })
}

/// `KVM_EXIT_INTERNAL_ERROR` with `KVM_INTERNAL_ERROR_DELIVERY_EV`: the
/// exit's second information word, its reason, its first word, the
/// guest-physical address and the CPU, in KVM's order.
fn event_vectoring_failure(page: &SharedPage<'_>, info: &ExitInfo, gpa: u64) -> Result<Next> {
    let mut err = InternalError {
        suberror: abi::KVM_INTERNAL_ERROR_DELIVERY_EV,
        ndata: 5,
        data: [0; 16],
    };
    err.data[..5].copy_from_slice(&[
        info.raw.info2,
        info.raw.reason,
        info.raw.info1,
        gpa,
        u64::from(cpu::this_cpu()),
    ]);
    page.write(UNION, &err)?;
    exit_reason(page, abi::KVM_EXIT_INTERNAL_ERROR)
}

fn exit_reason(page: &SharedPage<'_>, reason: u32) -> Result<Next> {
    page.write(offset_of!(kvm_run, exit_reason), &reason)?;
    Ok(Next::User)
}

/// Queues an exception for the next entry.
fn raise(state: &mut ArchState, vector: u8, error_code: Option<u32>) {
    state.run.event = Some(Event::Exception { vector, error_code });
}

/// Records what the next `KVM_RUN` finishes, and where the vCPU is now.
fn set_pending(state: &mut ArchState, what: Pending) {
    state.run.pending = Some(PendingAt {
        what,
        linear_rip: state.sregs.cs.base.wrapping_add(state.regs.rip),
    });
}

/// Finishes what the last exit to user space started.
fn complete(vm: &Vm, state: &mut ArchState, pages: &Pages<'_>, pending: Pending) -> Result {
    match pending {
        Pending::In(t) => io::complete(vm, state, pages.pio, t, true),
        Pending::Out(t) => io::complete(vm, state, pages.pio, t, false),
        Pending::MmioLoad { insn, next_rip } => {
            mmio::complete_load(state, pages.run, insn, next_rip)
        }
        Pending::Msr { write, next_rip } => msr_exit::complete(state, pages.run, write, next_rip),
        Pending::HypervCall { next_rip, wide } => {
            hyperv::complete(state, pages.run, next_rip, wide)
        }
    }
}
