// SPDX-License-Identifier: GPL-2.0

//! An SVM vCPU: its VMCB, the guest GPRs the VMCB does not hold, and its
//! ASID. [`SvmVcpu::run`] is one trip through VMRUN: load the registers,
//! enter, store them back, and name the exit.

use super::asid::{Flush, VcpuAsid};
use super::vmcb::{self, event, exit, int_ctl, intercept1, intercept2, intercept3, Vmcb};
use super::SvmShared;
use crate::backend::{
    Entry, Event, Exit, ExitInfo, GuestRegs, InsnBytes, IoExit, RawExit, Reenter, VendorVcpu,
};
use crate::sys::cpu::this_cpu;
use crate::sys::mem::{kmalloc_phys, page_phys};
use crate::sys::spec::EntryFlags;
use crate::sys::svm::{self as hw, GuestGprs};
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::prelude::*;
use kernel::sync::Arc;

/// Exceptions intercepted to protect the host: #AC (17), which a guest
/// could otherwise make loop in microcode and hang the CPU (CVE-2015-5307),
/// and #MC (18), which belongs to the host's machine-check handler; and
/// #UD (6), for VMX's hypercall instruction (run/, KVM's
/// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN`). APM Vol. 2 15.12.
const INTERCEPTED_EXCEPTIONS: u32 = 1 << 6 | 1 << 17 | 1 << MC_VECTOR;
/// The machine-check vector. SDM Vol. 3A 6.15.
const MC_VECTOR: u64 = 18;
/// #DB and #BP: intercepted while the VMM debugs the guest.
const DB_VECTOR: u32 = 1;
const BP_VECTOR: u32 = 3;

/// DR0–DR7 reads (bits 7:0) and writes (bits 23:16): the guest never
/// reaches the host's debug registers. APM Vol. 2 15.9.
const INTERCEPTED_DRS: u32 = 0x00ff_00ff;

/// CR4 writes (bit 16 + 4): checked against the guest's CPUID, as KVM does,
/// so a guest cannot turn on features it was not given. APM Vol. 2 15.9.
const INTERCEPTED_CRS: u32 = 1 << (16 + 4);

/// DR6 and DR7 at reset. SDM Vol. 3B 19.2.
const DR6_RESET: u64 = 0xffff_0ff0;
const DR7_RESET: u64 = 0x400;

/// An SVM vCPU.
pub(crate) struct SvmVcpu {
    shared: Arc<SvmShared>,
    vmcb: KBox<Vmcb>,
    gprs: GuestGprs,
    asid: VcpuAsid,
    /// The mapping generation the TLB was last flushed for.
    mapping_generation: u64,
}

impl SvmVcpu {
    /// A vCPU whose VMCB intercepts everything the host must see.
    pub(crate) fn new(shared: Arc<SvmShared>) -> Result<Self> {
        let mut vmcb = KBox::<Vmcb>::zeroed(GFP_KERNEL_ACCOUNT)?;
        let c = &mut vmcb.control;
        c.intercept_cr = INTERCEPTED_CRS;
        c.intercept_dr = INTERCEPTED_DRS;
        c.intercept_exceptions = INTERCEPTED_EXCEPTIONS;
        // Physical interrupts, NMIs, SMIs and INITs go to the host; instructions that reach
        // host resources or that rkvm emulates exit. APM Vol. 2 15.13 (interrupts), 15.9-15.11.
        c.intercept1 = intercept1::INTR
            | intercept1::RDPMC
            | intercept1::NMI
            | intercept1::SMI
            | intercept1::INIT
            | intercept1::CPUID
            | intercept1::RSM
            | intercept1::INVD
            | intercept1::HLT
            | intercept1::INVLPGA
            | intercept1::IOIO_PROT
            | intercept1::MSR_PROT
            | intercept1::TASK_SWITCH
            | intercept1::FERR_FREEZE
            | intercept1::SHUTDOWN;
        c.intercept2 = intercept2::VMRUN
            | intercept2::VMMCALL
            | intercept2::VMLOAD
            | intercept2::VMSAVE
            | intercept2::STGI
            | intercept2::CLGI
            | intercept2::SKINIT
            | intercept2::RDTSCP
            | intercept2::ICEBP
            | intercept2::WBINVD
            | intercept2::MONITOR
            | intercept2::MWAIT
            | intercept2::MWAIT_COND
            | intercept2::XSETBV
            | intercept2::RDPRU;
        c.intercept3 = intercept3::INVLPGB
            | intercept3::INVLPGB_ILLEGAL
            | intercept3::INVPCID
            | intercept3::MCOMMIT
            | intercept3::TLBSYNC;
        c.iopm_base_pa = kmalloc_phys(&*shared.iopm).0;
        c.msrpm_base_pa = kmalloc_phys(&*shared.msrpm).0;
        c.int_ctl = int_ctl::V_INTR_MASKING;
        c.misc_ctl = vmcb::NP_ENABLE;
        vmcb.save.dr6 = DR6_RESET;
        vmcb.save.dr7 = DR7_RESET;
        Ok(Self {
            shared,
            vmcb,
            gprs: GuestGprs::default(),
            asid: VcpuAsid::default(),
            mapping_generation: 0,
        })
    }

    /// Writes the vendor-neutral registers into the VMCB and the GPR block.
    fn load(&mut self, g: &GuestRegs<'_>, entry: &Entry) {
        let (r, s, m) = (&*g.regs, &*g.sregs, &*g.msrs);
        let save = &mut self.vmcb.save;
        save.rax = r.rax;
        save.rsp = r.rsp;
        save.rip = r.rip;
        save.rflags = r.rflags;
        // The guest's DR6 is rkvm's software copy; this one only records the next
        // intercepted #DB ([`Exit::Debug`]).
        save.dr6 = DR6_RESET;
        // The VMM's hardware breakpoints, or none ([`Entry::dr7`]).
        save.dr7 = entry.dr7;
        // RAX and CR2 are the VMCB's; the block's copies are not used.
        self.gprs = GuestGprs::from_kvm(r, 0);
        save.es = vmcb::segment_from_kvm(&s.es);
        save.cs = vmcb::segment_from_kvm(&s.cs);
        save.ss = vmcb::segment_from_kvm(&s.ss);
        save.ds = vmcb::segment_from_kvm(&s.ds);
        save.fs = vmcb::segment_from_kvm(&s.fs);
        save.gs = vmcb::segment_from_kvm(&s.gs);
        save.tr = vmcb::segment_from_kvm(&s.tr);
        save.ldtr = vmcb::segment_from_kvm(&s.ldt);
        save.gdtr = vmcb::dtable_from_kvm(&s.gdt);
        save.idtr = vmcb::dtable_from_kvm(&s.idt);
        // The CPL is SS.DPL (in real mode 0, where SS.DPL is 0 too). APM Vol. 2 15.5.1.
        save.cpl = s.ss.dpl & 3;
        save.cr0 = s.cr0;
        save.cr2 = s.cr2;
        save.cr3 = s.cr3;
        save.cr4 = s.cr4;
        // EFER.SVME must be set in the guest's EFER for VMRUN; the guest does not see it
        // (reads come from `sregs.efer`). APM Vol. 2 15.5.1.
        save.efer = s.efer | crate::x86::regs::efer::SVME;
        save.star = m.star;
        save.lstar = m.lstar;
        save.cstar = m.cstar;
        save.sfmask = m.sfmask;
        save.kernel_gs_base = m.kernel_gs_base;
        save.sysenter_cs = m.sysenter_cs;
        save.sysenter_esp = m.sysenter_esp;
        save.sysenter_eip = m.sysenter_eip;
        save.g_pat = m.pat;
        self.vmcb.control.tsc_offset = m.tsc_offset;
        // The guest's CR8 is V_TPR (bits 3:0 of int_ctl) with V_INTR_MASKING.
        // Written in full at every entry, never updated in place: a #VMEXIT
        // writes int_ctl back, and QEMU's emulated VMRUN, when it refuses the
        // VMCB early, writes 0 there. Kept, that 0 would leave V_INTR_MASKING
        // clear for good, and a guest running with IF clear would no longer be
        // interrupted by the host's interrupts (docs/testing.md, "Fuzzing").
        let c = &mut self.vmcb.control;
        c.int_ctl = int_ctl::V_INTR_MASKING | (s.cr8 as u32 & 0xf);
    }

    /// Reads the VMCB and the GPR block back into the vendor-neutral registers.
    fn store(&self, g: &mut GuestRegs<'_>) {
        let save = &self.vmcb.save;
        let r = &mut *g.regs;
        self.gprs.write_into(r);
        r.rax = save.rax;
        r.rsp = save.rsp;
        r.rip = save.rip;
        r.rflags = save.rflags;
        let s = &mut *g.sregs;
        s.es = vmcb::segment_to_kvm(&save.es);
        s.cs = vmcb::segment_to_kvm(&save.cs);
        s.ss = vmcb::segment_to_kvm(&save.ss);
        // The CPL is the VMCB's CPL field, not SS's attributes (an unusable SS after SYSRET
        // keeps a stale DPL); KVM reports it as SS.DPL too (`svm_get_segment`).
        s.ss.dpl = save.cpl;
        s.ds = vmcb::segment_to_kvm(&save.ds);
        s.fs = vmcb::segment_to_kvm(&save.fs);
        s.gs = vmcb::segment_to_kvm(&save.gs);
        s.tr = vmcb::segment_to_kvm(&save.tr);
        s.ldt = vmcb::segment_to_kvm(&save.ldtr);
        s.gdt = vmcb::dtable_to_kvm(&save.gdtr);
        s.idt = vmcb::dtable_to_kvm(&save.idtr);
        s.cr0 = save.cr0;
        s.cr2 = save.cr2;
        s.cr3 = save.cr3;
        s.cr4 = save.cr4;
        s.efer = save.efer & !crate::x86::regs::efer::SVME;
        s.cr8 = u64::from(self.vmcb.control.int_ctl & 0xf);
        let m = &mut *g.msrs;
        m.star = save.star;
        m.lstar = save.lstar;
        m.cstar = save.cstar;
        m.sfmask = save.sfmask;
        m.kernel_gs_base = save.kernel_gs_base;
        m.sysenter_cs = save.sysenter_cs;
        m.sysenter_esp = save.sysenter_esp;
        m.sysenter_eip = save.sysenter_eip;
        m.pat = save.g_pat;
    }

    /// Sets up event injection and the interrupt window for this entry.
    fn prepare_events(&mut self, entry: &Entry) {
        let c = &mut self.vmcb.control;
        c.event_inj = 0;
        c.event_inj_err = 0;
        if let Some(ev) = entry.inject {
            let (bits, err) = match ev {
                Event::Interrupt(v) => (event::TYPE_INTR | u32::from(v), None),
                Event::Nmi => (event::TYPE_NMI | 2, None),
                Event::Exception { vector, error_code } => {
                    (event::TYPE_EXCEPTION | u32::from(vector), error_code)
                }
            };
            c.event_inj = bits | event::VALID | if err.is_some() { event::ERROR_VALID } else { 0 };
            c.event_inj_err = err.unwrap_or(0);
        }
        // The interrupt window: a virtual interrupt that ignores the TPR, with VINTR
        // intercepted, exits as soon as the guest could take it. APM Vol. 2 15.21.4.
        c.int_ctl &= !(int_ctl::V_IRQ | int_ctl::V_IGN_TPR | 0xf << int_ctl::V_INTR_PRIO_SHIFT);
        c.intercept1 &= !intercept1::VINTR;
        // Also while an event is injected: the window opens after its delivery.
        if entry.interrupt_window {
            c.int_ctl |= int_ctl::V_IRQ | int_ctl::V_IGN_TPR | 0xf << int_ctl::V_INTR_PRIO_SHIFT;
            c.int_vector = 0;
            c.intercept1 |= intercept1::VINTR;
        }
        // SVM does not track NMI blocking for its guest: the IRET that ends an
        // NMI handler is intercepted, so that common code knows when NMIs are
        // allowed again (as KVM without vNMI). APM Vol. 2 15.20.
        if entry.intercept_iret {
            c.intercept1 |= intercept1::IRET;
        } else {
            c.intercept1 &= !intercept1::IRET;
        }
        c.intercept_exceptions = INTERCEPTED_EXCEPTIONS
            | if entry.intercept_db {
                1 << DB_VECTOR
            } else {
                0
            }
            | if entry.intercept_bp {
                1 << BP_VECTOR
            } else {
                0
            };
    }

    /// Turns the VMCB's exit fields into an [`ExitInfo`].
    fn exit_info(&self) -> ExitInfo {
        let c = &self.vmcb.control;
        let code = c.exit_code;
        let info1 = c.exit_info1;
        let next_rip = if self.shared.nrips {
            Some(c.next_rip)
        } else {
            None
        };
        let mut next = next_rip;
        let exit = match code {
            exit::INTR | exit::NMI | exit::SMI | exit::INIT => Exit::HostInterrupt,
            exit::VINTR => Exit::InterruptWindow,
            exit::IRET => Exit::Iret,
            exit::CPUID => Exit::Cpuid,
            exit::HLT => Exit::Hlt,
            exit::MSR => Exit::Msr {
                write: info1 & 1 != 0,
            },
            exit::SHUTDOWN => Exit::Shutdown,
            exit::IOIO => {
                // EXITINFO2 is the next RIP for IOIO even without NRIPS. APM Vol. 2 15.10.2.
                next = Some(c.exit_info2);
                let size = ((info1 >> vmcb::ioio::SIZE_SHIFT) & 7) as u8;
                let addr = ((info1 >> vmcb::ioio::ADDR_SHIFT) & 7) as u8;
                Exit::Io(IoExit {
                    port: (info1 >> vmcb::ioio::PORT_SHIFT) as u16,
                    // One-hot: 1 = byte, 2 = word, 4 = dword; the same for addresses.
                    size,
                    input: info1 & vmcb::ioio::IN != 0,
                    string: info1 & vmcb::ioio::STRING != 0,
                    rep: info1 & vmcb::ioio::REP != 0,
                    address_size: addr * 2,
                })
            }
            exit::NPF => Exit::SlatFault {
                gpa: c.exit_info2,
                write: info1 & vmcb::npf::WRITE != 0,
                fetch: info1 & vmcb::npf::FETCH != 0,
                present: info1 & vmcb::npf::PRESENT != 0,
                page_walk: info1 & vmcb::npf::GUEST_PAGE_TABLE != 0,
            },
            exit::DR_FIRST..=exit::DR_LAST => Exit::DebugRegister,
            exit::CR_WRITE_FIRST..=exit::CR_WRITE_LAST => Exit::CrWrite {
                cr: (code - exit::CR_WRITE_FIRST) as u8,
                gpr: (self.shared.decode_assists && info1 & vmcb::mov_cr::MOV != 0)
                    .then_some((info1 & vmcb::mov_cr::GPR_MASK) as u8),
            },
            // Handled above (`raise_machine_check`): the guest just resumes.
            c if c == exit::EXCP_BASE + MC_VECTOR => Exit::HostInterrupt,
            // The processor wrote DR6 for the #DB to the save area. APM Vol. 2 15.12.
            c if c == exit::EXCP_BASE + u64::from(DB_VECTOR) => Exit::Debug {
                dr6: self.vmcb.save.dr6,
            },
            exit::EXCP_BASE..=exit::EXCP_LAST => {
                let vector = (code - exit::EXCP_BASE) as u8;
                Exit::Exception {
                    vector,
                    error_code: (vector == 17).then_some(info1 as u32),
                }
            }
            exit::INVD => Exit::CacheFlush { writeback: false },
            exit::WBINVD => Exit::CacheFlush { writeback: true },
            // No PMU is offered: RDPMC is #GP(0), as on KVM without a vPMU.
            exit::RDPMC => Exit::Exception {
                vector: 13,
                error_code: Some(0),
            },
            exit::XSETBV => Exit::Xsetbv,
            exit::RSM => Exit::Rsm,
            exit::VMMCALL => Exit::Hypercall {
                opcode: crate::backend::VMMCALL,
            },
            exit::VMRUN
            | exit::VMLOAD
            | exit::VMSAVE
            | exit::STGI
            | exit::CLGI
            | exit::SKINIT
            | exit::RDTSCP
            | exit::ICEBP
            | exit::MONITOR
            | exit::MWAIT
            | exit::MWAIT_COND
            | exit::RDPRU
            | exit::INVLPGB
            | exit::INVLPGB_ILLEGAL
            | exit::INVPCID
            | exit::MCOMMIT
            | exit::TLBSYNC => Exit::Undefined,
            exit::INVALID | exit::INVALID_32 => Exit::InvalidState(code),
            other => Exit::Unhandled(other),
        };
        // With decode assists the CPU fetched the instruction of a #NPF (up to 15 bytes;
        // fewer, even 0, if the fetch itself faulted). APM Vol. 2 15.33.1.
        let insn = (code == exit::NPF && self.shared.decode_assists && c.insn_len > 0).then(|| {
            InsnBytes {
                bytes: c.insn_bytes,
                len: usize::from(c.insn_len.min(15)),
            }
        });
        ExitInfo {
            exit,
            interrupted_event: interrupted_event(c.exit_int_info, c.exit_int_info_err),
            interrupt_shadow: c.int_state & vmcb::INTERRUPT_SHADOW != 0,
            nmi_blocked: None,
            next_rip: next,
            insn,
            raw: RawExit {
                reason: code,
                info1,
                info2: c.exit_info2,
            },
        }
    }
}

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        self.shared.last_guest.forget(kmalloc_phys(&*self.vmcb).0);
    }
}

/// Decodes EXITINTINFO: the event whose delivery the exit interrupted.
/// Software interrupts and INT3/INTO are not returned: the guest's RIP
/// still points at the instruction, which runs again. APM Vol. 2 15.7.2.
fn interrupted_event(info: u32, err: u32) -> Option<Event> {
    if info & event::VALID == 0 {
        return None;
    }
    let vector = (info & event::VECTOR_MASK) as u8;
    match info & event::TYPE_MASK {
        event::TYPE_INTR => Some(Event::Interrupt(vector)),
        event::TYPE_NMI => Some(Event::Nmi),
        event::TYPE_EXCEPTION if vector != 3 && vector != 4 => Some(Event::Exception {
            vector,
            error_code: (info & event::ERROR_VALID != 0).then_some(err),
        }),
        // INTn, and INT3/INTO above: re-executed, not re-delivered.
        event::TYPE_SOFT_INT | event::TYPE_EXCEPTION => None,
        _ => None,
    }
}

impl VendorVcpu for SvmVcpu {
    /// SVM keeps nothing loaded between entries that an entry right after
    /// an exit could reuse: each is a whole VMRUN.
    fn run(&mut self, mut guest: GuestRegs<'_>, entry: &Entry, reenter: Reenter<'_>) -> ExitInfo {
        let mut entry = *entry;
        loop {
            let info = self.run_once(guest.reborrow(), &entry);
            if matches!(info.exit, Exit::InvalidState(_)) {
                return info;
            }
            match reenter(&mut guest, &info) {
                Some(next) => entry = next,
                None => return info,
            }
        }
    }
}

impl SvmVcpu {
    /// One VMRUN: loads `guest`, enters, stores the registers back.
    fn run_once(&mut self, mut guest: GuestRegs<'_>, entry: &Entry) -> ExitInfo {
        self.load(&guest, entry);
        self.prepare_events(entry);
        let cpu = this_cpu();
        let (Some(pool), Some(host_save)) = (
            self.shared.asids.get(cpu as usize),
            self.shared.host_save.get(cpu as usize),
        ) else {
            // Cannot happen: both have an entry for every possible CPU.
            return ExitInfo {
                exit: Exit::Unhandled(u64::MAX - 1),
                interrupted_event: None,
                interrupt_shadow: false,
                nmi_blocked: None,
                next_rip: None,
                insn: None,
                raw: RawExit::default(),
            };
        };
        let flush = self.asid.prepare(cpu, pool, self.shared.max_asid);
        let c = &mut self.vmcb.control;
        c.asid = self.asid.asid;
        // The TLB tags guest-physical translations with the ASID only: a
        // new nested root (the vCPU entered or left SMM) needs a flush.
        let stale = self.mapping_generation != entry.mapping_generation
            || entry.flush_tlb
            || c.nested_cr3 != entry.slat_root.0;
        c.tlb_control = match flush {
            Flush::All => vmcb::tlb_control::FLUSH_ALL,
            // Without FlushByAsid only a full flush is defined. APM Vol. 2 15.16.1.
            Flush::None if stale && !self.shared.flush_by_asid => vmcb::tlb_control::FLUSH_ALL,
            Flush::None if stale => vmcb::tlb_control::FLUSH_ASID,
            Flush::None => vmcb::tlb_control::NOTHING,
        };
        c.int_state = if entry.interrupt_shadow {
            vmcb::INTERRUPT_SHADOW
        } else {
            0
        };
        c.nested_cr3 = entry.slat_root.0;
        c.clean = 0;
        let vmcb_pa = kmalloc_phys(&*self.vmcb).0;
        let host_pa = page_phys(host_save).0;
        // IBPB if another guest ran here last.
        self.shared.last_guest.entering(cpu, vmcb_pa);
        let spec = &self.shared.spec;
        // SAFETY: The caller runs us with interrupts off inside an FPU section, on `cpu`,
        // where the backend has SVM enabled (a CPU without it is offline, and so not here).
        // The VMCB intercepts every instruction and event that reaches host state, its
        // permission maps intercept every port and MSR, and its nested page table maps only
        // pinned pages of the VM's slots. `host_save` is this CPU's page. STGI follows.
        unsafe {
            hw::clgi();
            hw::vmrun(vmcb_pa, host_pa, &mut self.gprs, EntryFlags::of(spec));
        }
        // SRSO: the barrier comes before STGI, as KVM's, so that no NMI handler's `ret`
        // runs on the guest's predictions first. (`vmrun` and `stgi` are inlined: no
        // unbalanced `ret` either.)
        if spec.ibpb_after_exit {
            crate::sys::spec::ibpb();
        }
        // SAFETY: GIF was cleared above and SVM is on for this CPU.
        unsafe { hw::stgi() };
        if spec.ibpb_before_user {
            crate::sys::spec::ibpb_before_user();
        }
        let code = self.vmcb.control.exit_code;
        let refused = code == exit::INVALID || code == exit::INVALID_32;
        if refused {
            // Nothing ran: a flush asked for still has to happen at the next VMRUN.
            self.asid.forget();
        } else {
            self.mapping_generation = entry.mapping_generation;
        }
        if code == exit::EXCP_BASE + MC_VECTOR {
            // A machine check hit while the guest ran: the host's handler must see it, as
            // KVM's `kvm_machine_check` does.
            // SAFETY: Right after the #VMEXIT for #MC, GIF set again.
            unsafe { crate::sys::cpu::raise_machine_check() };
        }
        // A refused VMRUN ran nothing, and the VMCB's save area need not hold the guest's
        // state: QEMU's emulation, refusing at one of its first checks, writes the *host's*
        // RIP, RSP, RAX and control registers there. Read back, they would become the
        // guest's, and KVM_GET_REGS would show user space host kernel addresses. The
        // guest's registers stay as they were loaded.
        if !refused {
            self.store(&mut guest);
        }
        self.exit_info()
    }
}
