// SPDX-License-Identifier: GPL-2.0

//! A VMX vCPU: its VMCS, the guest GPRs the VMCS does not hold, its VPID
//! and its MSR switch lists. [`VmxVcpu::run`] is one trip through VMX
//! operation (see `vmx/mod.rs` for why VMX is on only that long):
//!
//! 1. VMXON, save the host state the VMCS needs, VMPTRLD the VMCS;
//! 2. write the controls (first time only), the host state and the guest's
//!    registers; flush stale translations (INVEPT, INVVPID);
//! 3. VMLAUNCH, and at the VM exit read the guest's registers back and
//!    name the exit;
//! 4. VMCLEAR, VMXOFF, restore what the exit did not.
//!
//! A VMCS keeps its fields across VMCLEAR and the next VMPTRLD, so step 2
//! writes only what changed: the host fields when the saved host state
//! differs from the one last written (another CPU, another task), the
//! guest fields when the registers differ from what the VMCS holds
//! ([`GuestFields`]: rkvm's record of its last writes and reads). Step 3
//! reads back only the fields the guest can change without an exit. Each
//! VMREAD and VMWRITE is an instruction with its error check around it;
//! skipping the ones that change nothing is most of what makes an exit
//! handled in the kernel cheap (KVM gets the same from its dirty and
//! available register bits and its segment cache).
//!
//! Any VMX instruction that fails on the way is logged with its
//! VM-instruction error and ends `KVM_RUN` with an internal error
//! (except VMLAUNCH refusing the VMCS, which is KVM's FAIL_ENTRY).

use super::caps::{Caps, CR0_PE_PG};
use super::vmcs::{
    self, access, entry_ctl, ept_violation, interruptibility, intr_info, proc1, reason, Field,
    Natural, SegmentFields, Width, W32,
};
use super::{VmxRegion, VmxShared};
use crate::abi::{kvm_dtable, kvm_segment};
use crate::backend::{
    Entry, Event, Exit, ExitInfo, GuestRegs, IoExit, RawExit, Reenter, VendorVcpu,
};
use crate::spec::L1dFlush;
use crate::sys::cpu::{self, this_cpu};
use crate::sys::mem::kmalloc_phys;
use crate::sys::spec::EntryFlags;
use crate::sys::vmx::{CurrentVmcs, GuestGprs, HostState, VmxError, VmxOn, VmxOnError};
use crate::x86::msr::index;
use crate::x86::regs::efer;
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::prelude::*;
use kernel::sync::Arc;

/// Exceptions intercepted to protect the host: #AC (17), which a guest
/// could make loop in microcode (CVE-2015-5307), and #MC (18), the host's;
/// and #UD (6), for SVM's hypercall instruction (run/, KVM's
/// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN`).
const UD_VECTOR: u8 = 6;
const AC_VECTOR: u8 = 17;
/// #DB and #BP: intercepted while the VMM debugs the guest.
const DB_VECTOR: u8 = 1;
const BP_VECTOR: u8 = 3;
/// DR6's bits that read as 1 when clear (the exit qualification of a #DB
/// has only the others). SDM Vol. 3B 18.2.3, Vol. 3C 29.2.1.
const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
const MC_VECTOR: u8 = 18;
const INTERCEPTED_EXCEPTIONS: u32 = 1 << UD_VECTOR | 1 << AC_VECTOR | 1 << MC_VECTOR;
/// DR7 at reset. SDM Vol. 3B 19.2.
const DR7_RESET: u64 = 0x400;
/// RFLAGS.TF and IF.
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
/// The BS bit of the pending-debug-exceptions field. SDM Vol. 3C 25.4.2.
const PENDING_DBG_BS: u64 = 1 << 14;
/// A VMX instruction other than VMLAUNCH failed: `Exit::Unhandled` gets
/// this bit with the VM-instruction error number below it.
pub(crate) const VMX_INSTRUCTION_FAILED: u64 = 1 << 32;

/// The syscall MSRs VMX does not switch by itself, switched through the
/// VM-entry MSR-load list (guest values in) and the VM-exit MSR-store list
/// (guest values out) and MSR-load list (host values back). SYSCALL and
/// SWAPGS in the guest use the real registers. SDM Vol. 3C 25.7.2, 25.8.2.
const SWITCHED_MSRS: [u32; 5] = [
    index::STAR,
    index::LSTAR,
    index::CSTAR,
    index::SFMASK,
    index::KERNEL_GS_BASE,
];

/// One entry of an MSR list. SDM Vol. 3C 25.7.2, Table 25-14.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Zeroable)]
struct MsrEntry {
    index: u32,
    reserved: u32,
    value: u64,
}

/// The guest list (loaded at entry, stored at exit) and the host list
/// (loaded at exit); 16-byte aligned as the CPU requires.
#[repr(C, align(16))]
#[derive(Zeroable)]
struct MsrLists {
    guest: [MsrEntry; SWITCHED_MSRS.len()],
    host: [MsrEntry; SWITCHED_MSRS.len()],
}

/// The guest segments, in the order of [`GuestFields::segments`].
const SEGMENTS: [&SegmentFields; 8] = [
    &vmcs::ES,
    &vmcs::CS,
    &vmcs::SS,
    &vmcs::DS,
    &vmcs::FS,
    &vmcs::GS,
    &vmcs::TR,
    &vmcs::LDTR,
];

/// What the VMCS holds in the fields [`VmxVcpu::load`] and
/// [`VmxVcpu::prepare_events`] write, as rkvm last wrote them or read them
/// back after an exit. A field whose new value equals its entry here is
/// not written again.
///
/// The ones read back after every exit are those the guest changes
/// without exiting: RSP, RIP, RFLAGS, the segments, GDTR and IDTR, the
/// guest-owned bits of CR0, CR3 ([`VmxVcpu::store`]) and the
/// interruptibility state ([`VmxVcpu::exit_info`]), as KVM's
/// `VMX_REGS_LAZY_LOAD_SET`. The others only change by rkvm's writes: CR0's
/// host-owned bits and its read shadow, CR4 (every bit host-owned), EFER,
/// the SYSENTER MSRs and PAT (every WRMSR exits), the entry controls, the
/// TSC offset and the EPT pointer.
#[derive(Clone, Copy, Default)]
struct GuestFields {
    rsp: u64,
    rip: u64,
    rflags: u64,
    /// In the ABI's form, as last written or decoded from the fields.
    segments: [kvm_segment; 8],
    gdtr_base: u64,
    gdtr_limit: u32,
    idtr_base: u64,
    idtr_limit: u32,
    cr0: u64,
    cr0_shadow: u64,
    cr3: u64,
    cr4: u64,
    cr4_shadow: u64,
    efer: u64,
    entry_controls: u32,
    sysenter_cs: u32,
    sysenter_esp: u64,
    sysenter_eip: u64,
    pat: u64,
    tsc_offset: u64,
    eptp: u64,
    interruptibility: u32,
}

/// Writes `f` unless the VMCS holds `value` already (`held`, known unless
/// `fresh`), and records it there.
fn update<W: Width>(
    v: &mut CurrentVmcs<'_>,
    f: Field<W>,
    held: &mut W::Value,
    value: W::Value,
    fresh: bool,
) -> Vmx<()> {
    if fresh || *held != value {
        write(v, f, value)?;
        *held = value;
    }
    Ok(())
}

/// Something to do for the host once out of VMX operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostEvent {
    Nmi,
    MachineCheck,
}

/// A VMX vCPU.
pub(crate) struct VmxVcpu {
    shared: Arc<VmxShared>,
    vmcs: KBox<VmxRegion>,
    gprs: GuestGprs,
    msrs: KBox<MsrLists>,
    /// The VPID, or 0 (the host's: every entry and exit flushes) if none.
    vpid: u16,
    /// The controls and constant fields are in the VMCS.
    initialized: bool,
    /// The host state of the current entry (or the last one).
    host: HostState,
    /// The CPU whose per-CPU MSRs `host` holds ([`HostState::save`]).
    host_cpu: Option<u32>,
    /// The host state last written to the host fields.
    host_written: Option<HostState>,
    /// What the guest fields hold, if known: not before the first entry
    /// nor after one that failed (then every field is written again).
    held: Option<GuestFields>,
    /// The CPU this vCPU last entered the guest on.
    last_cpu: Option<u32>,
    /// The mapping generation the EPT translations were last flushed for.
    mapping_generation: u64,
    /// The EPT pointer of the last entry: another root (the vCPU entered
    /// or left SMM) has not been flushed for the generations it missed.
    last_eptp: u64,
    /// The primary processor-based controls as last written.
    proc1: u32,
    /// The exception bitmap in the VMCS.
    exception_bitmap: u32,
    /// GUEST_DR7 in the VMCS ([`Entry::dr7`]; the guest cannot change it:
    /// MOV to DR7 exits).
    dr7: u64,
}

/// Where a VMX instruction failed, and how.
struct Failure {
    what: &'static str,
    error: VmxError,
}

type Vmx<T> = core::result::Result<T, Failure>;

/// Adds context to a VMX instruction's result.
trait Context<T> {
    fn context(self, what: &'static str) -> Vmx<T>;
}

impl<T> Context<T> for core::result::Result<T, VmxError> {
    fn context(self, what: &'static str) -> Vmx<T> {
        self.map_err(|error| Failure { what, error })
    }
}

fn read<W: Width>(v: &CurrentVmcs<'_>, f: Field<W>) -> Vmx<W::Value> {
    v.read(f).context("VMREAD")
}

fn write<W: Width>(v: &mut CurrentVmcs<'_>, f: Field<W>, value: W::Value) -> Vmx<()> {
    v.write(f, value).context("VMWRITE")
}

/// The system-segment type of a busy 64-bit TSS (SDM Vol. 3A 3.5, Table 3-2).
const TSS_BUSY_64: u8 = 11;

/// Whether two host states agree in every field the VMCS's host-state
/// area takes from them (the rest, such as DEBUGCTL or the data segment
/// selectors, `HostState::restore` puts back itself).
fn same_host_fields(a: &HostState, b: &HostState) -> bool {
    a.cr0 == b.cr0
        && a.cr3 == b.cr3
        && a.cr4 == b.cr4
        && a.cs_sel == b.cs_sel
        && a.ss_sel == b.ss_sel
        && a.tr_sel == b.tr_sel
        && a.fs_sel == b.fs_sel
        && a.gs_sel == b.gs_sel
        && a.fs_base == b.fs_base
        && a.gs_base == b.gs_base
        && a.tr_base == b.tr_base
        && a.gdt_base == b.gdt_base
        && a.idt_base == b.idt_base
        && a.sysenter_cs == b.sysenter_cs
        && a.sysenter_esp == b.sysenter_esp
        && a.sysenter_eip == b.sysenter_eip
        && a.efer == b.efer
        && a.pat == b.pat
}

/// CR0.NW and CR0.CD. SDM Vol. 3A 2.5.
const CR0_NW_CD: u64 = 1 << 29 | 1 << 30;

/// The CR0 bits that belong to the host ([`VmxVcpu::initialize`] says
/// why): writing them exits, and the guest reads them from the shadow.
fn cr0_guest_host_mask(caps: &Caps) -> u64 {
    caps.cr0_fixed0 | !caps.cr0_fixed1 & 0xffff_ffff | CR0_PE_PG | CR0_NW_CD
}

/// The CR0 the CPU runs the guest with: the fixed bits set, and caching
/// never disabled (VM entry does not load CD and NW, nor does VM exit put
/// the host's back, so a guest's CD would stay on the host: KVM's
/// `KVM_VM_CR0_ALWAYS_OFF`). SDM Vol. 3C 27.3.2.1, 28.5.1.
fn hardware_cr0(caps: &Caps, cr0: u64) -> u64 {
    (cr0 | caps.cr0_fixed0) & caps.cr0_fixed1 & !CR0_NW_CD
}

/// A segment's access rights in the VMCS format; not present means
/// unusable (as KVM's `vmx_segment_access_rights`).
fn access_rights(s: &kvm_segment) -> u32 {
    if s.unusable != 0 || s.present == 0 {
        return access::UNUSABLE;
    }
    let flag = |field: u8, bit: u32| if field & 1 != 0 { bit } else { 0 };
    u32::from(s.type_ & 0xf)
        | flag(s.s, access::S)
        | (u32::from(s.dpl & 3) << access::DPL_SHIFT)
        | access::P
        | flag(s.avl, access::AVL)
        | flag(s.l, access::L)
        | flag(s.db, access::DB)
        | flag(s.g, access::G)
}

/// Whether two segments are the same in every field but the padding.
fn same_segment(a: &kvm_segment, b: &kvm_segment) -> bool {
    a.base == b.base
        && a.limit == b.limit
        && a.selector == b.selector
        && a.type_ == b.type_
        && a.present == b.present
        && a.dpl == b.dpl
        && a.db == b.db
        && a.s == b.s
        && a.l == b.l
        && a.g == b.g
        && a.avl == b.avl
        && a.unusable == b.unusable
}

/// Writes a segment's four fields unless the VMCS holds it already.
fn update_segment(
    v: &mut CurrentVmcs<'_>,
    f: &SegmentFields,
    held: &mut kvm_segment,
    s: &kvm_segment,
    fresh: bool,
) -> Vmx<()> {
    if fresh || !same_segment(held, s) {
        write(v, f.selector, s.selector)?;
        write(v, f.base, s.base)?;
        write(v, f.limit, s.limit)?;
        write(v, f.access_rights, access_rights(s))?;
        *held = *s;
    }
    Ok(())
}

/// A segment from its four fields' values.
fn segment_from_fields(selector: u16, base: u64, limit: u32, ar: u32) -> kvm_segment {
    let bit = |mask: u32| u8::from(ar & mask != 0);
    kvm_segment {
        base,
        limit,
        selector,
        type_: (ar & 0xf) as u8,
        present: bit(access::P),
        dpl: ((ar >> access::DPL_SHIFT) & 3) as u8,
        db: bit(access::DB),
        s: bit(access::S),
        l: bit(access::L),
        g: bit(access::G),
        avl: bit(access::AVL),
        unusable: bit(access::UNUSABLE),
        padding: 0,
    }
}

/// How many of [`STORED`] are segment fields.
const STORED_SEGMENT_FIELDS: usize = 4 * SEGMENTS.len();
const STORED_OTHERS: [Field<Natural>; 7] = [
    vmcs::GUEST_RSP,
    vmcs::GUEST_RIP,
    vmcs::GUEST_RFLAGS,
    vmcs::GUEST_GDTR_BASE,
    vmcs::GUEST_IDTR_BASE,
    vmcs::GUEST_CR0,
    vmcs::GUEST_CR3,
];
const STORED_LIMITS: [Field<W32>; 2] = [vmcs::GUEST_GDTR_LIMIT, vmcs::GUEST_IDTR_LIMIT];
const STORED_LEN: usize = STORED_SEGMENT_FIELDS + STORED_OTHERS.len() + STORED_LIMITS.len();
/// The fields [`VmxVcpu::store`] reads back after every exit, in one
/// batch ([`CurrentVmcs::read_raw_many`]): each segment's selector, base,
/// limit and access rights, then [`STORED_OTHERS`], then
/// [`STORED_LIMITS`].
const STORED: [u32; STORED_LEN] = {
    let mut e = [0; STORED_LEN];
    let mut i = 0;
    while i < SEGMENTS.len() {
        let f = SEGMENTS[i];
        e[4 * i] = f.selector.encoding();
        e[4 * i + 1] = f.base.encoding();
        e[4 * i + 2] = f.limit.encoding();
        e[4 * i + 3] = f.access_rights.encoding();
        i += 1;
    }
    let mut j = 0;
    while j < STORED_OTHERS.len() {
        e[STORED_SEGMENT_FIELDS + j] = STORED_OTHERS[j].encoding();
        j += 1;
    }
    e[STORED_LEN - 2] = STORED_LIMITS[0].encoding();
    e[STORED_LEN - 1] = STORED_LIMITS[1].encoding();
    e
};

/// Decodes IDT-vectoring information: the event whose delivery the exit
/// interrupted. Software interrupts and exceptions are not returned: the
/// guest's RIP still points at the instruction, which runs again.
/// SDM Vol. 3C 28.2.4.
fn interrupted_event(info: u32, error_code: u32) -> Option<Event> {
    if info & intr_info::VALID == 0 {
        return None;
    }
    let vector = (info & intr_info::VECTOR_MASK) as u8;
    match info & intr_info::TYPE_MASK {
        intr_info::TYPE_EXT_INTR => Some(Event::Interrupt(vector)),
        intr_info::TYPE_NMI => Some(Event::Nmi),
        intr_info::TYPE_HARD_EXCEPTION => Some(Event::Exception {
            vector,
            error_code: (info & intr_info::ERROR_CODE_VALID != 0).then_some(error_code),
        }),
        _ => None,
    }
}

impl VmxVcpu {
    /// A vCPU with a fresh VMCS (its fields are written at the first entry,
    /// in VMX operation).
    pub(crate) fn new(shared: Arc<VmxShared>) -> Result<Self> {
        let vmcs = VmxRegion::new(shared.caps.revision, GFP_KERNEL_ACCOUNT)?;
        let mut msrs = KBox::<MsrLists>::zeroed(GFP_KERNEL_ACCOUNT)?;
        for (i, &msr) in SWITCHED_MSRS.iter().enumerate() {
            msrs.guest[i].index = msr;
            msrs.host[i].index = msr;
        }
        let vpid = shared.alloc_vpid().unwrap_or(0);
        Ok(Self {
            shared,
            vmcs,
            gprs: GuestGprs::default(),
            msrs,
            vpid,
            initialized: false,
            host: HostState::default(),
            host_cpu: None,
            host_written: None,
            held: None,
            last_cpu: None,
            last_eptp: 0,
            mapping_generation: 0,
            proc1: 0,
            exception_bitmap: 0,
            dr7: DR7_RESET,
        })
    }

    /// Writes the controls and the fields that never change. SDM Vol. 3C
    /// 25.6-25.8 (controls), 27.2-27.3 (what VM entry checks).
    fn initialize(&mut self, v: &mut CurrentVmcs<'_>) -> Vmx<()> {
        let s = &self.shared;
        let c = s.caps.controls;
        write(v, vmcs::PIN_BASED_VM_EXEC_CONTROL, c.pin)?;
        write(v, vmcs::CPU_BASED_VM_EXEC_CONTROL, c.proc1)?;
        self.proc1 = c.proc1;
        write(v, vmcs::SECONDARY_VM_EXEC_CONTROL, c.proc2)?;
        write(v, vmcs::VM_EXIT_CONTROLS, c.exit)?;
        write(v, vmcs::VM_ENTRY_CONTROLS, c.entry)?;
        write(v, vmcs::EXCEPTION_BITMAP, INTERCEPTED_EXCEPTIONS)?;
        self.exception_bitmap = INTERCEPTED_EXCEPTIONS;
        write(v, vmcs::CR3_TARGET_COUNT, 0)?;
        write(v, vmcs::MSR_BITMAP, kmalloc_phys(&*s.msr_bitmap).0)?;
        let n = SWITCHED_MSRS.len() as u32;
        let guest_list = kmalloc_phys(&self.msrs.guest).0;
        let host_list = kmalloc_phys(&self.msrs.host).0;
        write(v, vmcs::VM_ENTRY_MSR_LOAD_ADDR, guest_list)?;
        write(v, vmcs::VM_ENTRY_MSR_LOAD_COUNT, n)?;
        write(v, vmcs::VM_EXIT_MSR_STORE_ADDR, guest_list)?;
        write(v, vmcs::VM_EXIT_MSR_STORE_COUNT, n)?;
        write(v, vmcs::VM_EXIT_MSR_LOAD_ADDR, host_list)?;
        write(v, vmcs::VM_EXIT_MSR_LOAD_COUNT, n)?;
        if s.caps.vpid {
            write(v, vmcs::VIRTUAL_PROCESSOR_ID, self.vpid)?;
        }
        // No shadow VMCS: the link pointer must be all ones. SDM Vol. 3C 27.3.1.5.
        write(v, vmcs::VMCS_LINK_POINTER, u64::MAX)?;
        // CR0 bits the CPU forces to 1 (NE, typically) belong to the host: the guest reads
        // its own value from the shadow, and writing a different one exits. So do CD and
        // NW, which the CPU never runs the guest with (`hardware_cr0`). So do PE and
        // PG, as on KVM (which never lets the guest own them): turning paging on or off is
        // rkvm's to see (run/regs.rs `cr0_write`: EFER.LMA, and with it the "IA-32e mode
        // guest" entry control, flushes, PAE PDPTEs). Left to the CPU, a guest that turns
        // on paging with EFER.LME set (every Linux AP's trampoline) takes #GP under Bochs.
        // Every CR4 bit belongs to the host, as SVM intercepts every CR4 write. SDM Vol. 3C
        // 26.3.
        write(v, vmcs::CR0_GUEST_HOST_MASK, cr0_guest_host_mask(&s.caps))?;
        write(v, vmcs::CR4_GUEST_HOST_MASK, u64::MAX)?;
        // The guest never reaches the hardware debug registers (MOV DR exits).
        write(v, vmcs::GUEST_DR7, DR7_RESET)?;
        write(v, vmcs::GUEST_IA32_DEBUGCTL, 0)?;
        write(v, vmcs::GUEST_ACTIVITY_STATE, 0)?;
        self.initialized = true;
        Ok(())
    }

    /// Writes this CPU's and this task's host state, unless the VMCS has
    /// it already: the per-CPU bases (TR, GDT, IDT) only change when the
    /// vCPU moves, the task's (CR3, FS, GS) when another thread runs it.
    /// SDM Vol. 3C 27.2.2-27.2.4.
    fn write_host_state(&mut self, v: &mut CurrentVmcs<'_>) -> Vmx<()> {
        let h = &self.host;
        let l = &mut self.msrs.host;
        l[0].value = h.star;
        l[1].value = h.lstar;
        l[2].value = h.cstar;
        l[3].value = h.sfmask;
        l[4].value = h.kernel_gs_base;
        if self
            .host_written
            .as_ref()
            .is_some_and(|w| same_host_fields(w, h))
        {
            return Ok(());
        }
        // Unknown until every field below is written.
        self.host_written = None;
        write(v, vmcs::HOST_CR0, h.cr0)?;
        write(v, vmcs::HOST_CR3, h.cr3)?;
        write(v, vmcs::HOST_CR4, h.cr4)?;
        write(v, vmcs::HOST_CS_SELECTOR, h.cs_sel)?;
        write(v, vmcs::HOST_SS_SELECTOR, h.ss_sel)?;
        write(v, vmcs::HOST_TR_SELECTOR, h.tr_sel)?;
        // Host selectors must have RPL 0 and TI 0: others are loaded null here and put
        // back after the exit (`HostState::restore`).
        let usable = |sel: u16| if sel & 7 == 0 { sel } else { 0 };
        write(v, vmcs::HOST_DS_SELECTOR, 0)?;
        write(v, vmcs::HOST_ES_SELECTOR, 0)?;
        write(v, vmcs::HOST_FS_SELECTOR, usable(h.fs_sel))?;
        write(v, vmcs::HOST_GS_SELECTOR, usable(h.gs_sel))?;
        write(v, vmcs::HOST_FS_BASE, h.fs_base)?;
        write(v, vmcs::HOST_GS_BASE, h.gs_base)?;
        write(v, vmcs::HOST_TR_BASE, h.tr_base)?;
        write(v, vmcs::HOST_GDTR_BASE, h.gdt_base)?;
        write(v, vmcs::HOST_IDTR_BASE, h.idt_base)?;
        write(v, vmcs::HOST_IA32_SYSENTER_CS, h.sysenter_cs)?;
        write(v, vmcs::HOST_IA32_SYSENTER_ESP, h.sysenter_esp)?;
        write(v, vmcs::HOST_IA32_SYSENTER_EIP, h.sysenter_eip)?;
        write(v, vmcs::HOST_IA32_EFER, h.efer)?;
        write(v, vmcs::HOST_IA32_PAT, h.pat)?;
        self.host_written = Some(*h);
        Ok(())
    }

    /// Writes the vendor-neutral registers into the VMCS: the fields whose
    /// value differs from what it holds (`held`; all of them if `fresh`).
    fn load(
        &mut self,
        v: &mut CurrentVmcs<'_>,
        held: &mut GuestFields,
        fresh: bool,
        g: &GuestRegs<'_>,
        entry: &Entry,
    ) -> Vmx<()> {
        let (r, s, m) = (&*g.regs, &*g.sregs, &*g.msrs);
        let caps = &self.shared.caps;
        let h = held;
        self.gprs = GuestGprs::from_kvm(r, s.cr2);
        update(v, vmcs::GUEST_RSP, &mut h.rsp, r.rsp, fresh)?;
        update(v, vmcs::GUEST_RIP, &mut h.rip, r.rip, fresh)?;
        update(v, vmcs::GUEST_RFLAGS, &mut h.rflags, r.rflags, fresh)?;
        if entry.dr7 != self.dr7 {
            write(v, vmcs::GUEST_DR7, entry.dr7)?;
            self.dr7 = entry.dr7;
        }
        // An IA-32e mode entry needs TR to be a busy 64-bit TSS (type 11; SDM Vol. 3C
        // 27.3.1.2). A guest that turns long mode on keeps the TR it had, the 16-bit busy
        // type of the reset state on a Linux AP: KVM's `enter_lmode` retypes it, and so
        // does rkvm (the CPU never looks at the type until a task switch).
        let tr = if s.efer & efer::LMA != 0 && s.tr.type_ & 0xf != TSS_BUSY_64 {
            kvm_segment {
                type_: TSS_BUSY_64,
                ..s.tr
            }
        } else {
            s.tr
        };
        let segments = [&s.es, &s.cs, &s.ss, &s.ds, &s.fs, &s.gs, &tr, &s.ldt];
        for i in 0..SEGMENTS.len() {
            update_segment(v, SEGMENTS[i], &mut h.segments[i], segments[i], fresh)?;
        }
        update(
            v,
            vmcs::GUEST_GDTR_BASE,
            &mut h.gdtr_base,
            s.gdt.base,
            fresh,
        )?;
        let limit = s.gdt.limit.into();
        update(v, vmcs::GUEST_GDTR_LIMIT, &mut h.gdtr_limit, limit, fresh)?;
        update(
            v,
            vmcs::GUEST_IDTR_BASE,
            &mut h.idtr_base,
            s.idt.base,
            fresh,
        )?;
        let limit = s.idt.limit.into();
        update(v, vmcs::GUEST_IDTR_LIMIT, &mut h.idtr_limit, limit, fresh)?;
        // The CPU runs with the fixed bits set and caching on; the guest reads what it
        // wrote.
        let cr0 = hardware_cr0(caps, s.cr0);
        update(v, vmcs::GUEST_CR0, &mut h.cr0, cr0, fresh)?;
        update(v, vmcs::CR0_READ_SHADOW, &mut h.cr0_shadow, s.cr0, fresh)?;
        update(v, vmcs::GUEST_CR3, &mut h.cr3, s.cr3, fresh)?;
        let cr4 = (s.cr4 | caps.cr4_fixed0) & caps.cr4_fixed1;
        update(v, vmcs::GUEST_CR4, &mut h.cr4, cr4, fresh)?;
        update(v, vmcs::CR4_READ_SHADOW, &mut h.cr4_shadow, s.cr4, fresh)?;
        update(v, vmcs::GUEST_IA32_EFER, &mut h.efer, s.efer, fresh)?;
        // The entry control must agree with EFER.LMA. SDM Vol. 3C 27.3.1.1.
        let ia32e = if s.efer & efer::LMA != 0 {
            entry_ctl::IA32E_MODE
        } else {
            0
        };
        let controls = caps.controls.entry | ia32e;
        update(
            v,
            vmcs::VM_ENTRY_CONTROLS,
            &mut h.entry_controls,
            controls,
            fresh,
        )?;
        if let Some(pdptes) = entry.pdptrs {
            for (f, value) in vmcs::GUEST_PDPTE.iter().zip(pdptes) {
                write(v, *f, value)?;
            }
        }
        let cs = m.sysenter_cs as u32;
        update(v, vmcs::GUEST_SYSENTER_CS, &mut h.sysenter_cs, cs, fresh)?;
        let esp = m.sysenter_esp;
        update(v, vmcs::GUEST_SYSENTER_ESP, &mut h.sysenter_esp, esp, fresh)?;
        let eip = m.sysenter_eip;
        update(v, vmcs::GUEST_SYSENTER_EIP, &mut h.sysenter_eip, eip, fresh)?;
        update(v, vmcs::GUEST_IA32_PAT, &mut h.pat, m.pat, fresh)?;
        update(v, vmcs::TSC_OFFSET, &mut h.tsc_offset, m.tsc_offset, fresh)?;
        let l = &mut self.msrs.guest;
        l[0].value = m.star;
        l[1].value = m.lstar;
        l[2].value = m.cstar;
        l[3].value = m.sfmask;
        l[4].value = m.kernel_gs_base;
        Ok(())
    }

    /// Reads back into the vendor-neutral registers the fields the guest
    /// can change without an exit ([`GuestFields`], [`STORED`]); the others
    /// still hold what [`VmxVcpu::load`] wrote from those registers.
    fn store(&self, v: &CurrentVmcs<'_>, h: &mut GuestFields, g: &mut GuestRegs<'_>) -> Vmx<()> {
        let mut raw = [0u64; STORED_LEN];
        v.read_raw_many(&STORED, &mut raw).context("VMREAD")?;
        let r = &mut *g.regs;
        self.gprs.write_into(r);
        for i in 0..SEGMENTS.len() {
            let f = &raw[4 * i..4 * i + 4];
            h.segments[i] = segment_from_fields(f[0] as u16, f[1], f[2] as u32, f[3] as u32);
        }
        let s = &mut *g.sregs;
        [s.es, s.cs, s.ss, s.ds, s.fs, s.gs, s.tr, s.ldt] = h.segments;
        let o = &raw[STORED_SEGMENT_FIELDS..];
        (h.rsp, h.rip, h.rflags) = (o[0], o[1], o[2]);
        (r.rsp, r.rip, r.rflags) = (h.rsp, h.rip, h.rflags);
        (h.gdtr_base, h.idtr_base, h.cr0, h.cr3) = (o[3], o[4], o[5], o[6]);
        (h.gdtr_limit, h.idtr_limit) = (o[7] as u32, o[8] as u32);
        s.gdt = kvm_dtable {
            base: h.gdtr_base,
            limit: h.gdtr_limit as u16,
            padding: [0; 3],
        };
        s.idt = kvm_dtable {
            base: h.idtr_base,
            limit: h.idtr_limit as u16,
            padding: [0; 3],
        };
        // The guest owns the CR0 bits outside the mask; the shadow holds the rest.
        let mask = cr0_guest_host_mask(&self.shared.caps);
        s.cr0 = (h.cr0 & !mask) | (h.cr0_shadow & mask);
        s.cr2 = self.gprs.cr2;
        s.cr3 = h.cr3;
        let m = &mut *g.msrs;
        let l = &self.msrs.guest;
        m.star = l[0].value;
        m.lstar = l[1].value;
        m.cstar = l[2].value;
        m.sfmask = l[3].value;
        m.kernel_gs_base = l[4].value;
        // 32 bits in the VMCS, as RDMSR reads it on KVM.
        m.sysenter_cs = h.sysenter_cs.into();
        Ok(())
    }

    /// Sets up event injection, the interrupt window and the interrupt
    /// shadow for this entry. SDM Vol. 3C 25.8.3, 27.6.
    fn prepare_events(
        &mut self,
        v: &mut CurrentVmcs<'_>,
        held: &mut GuestFields,
        fresh: bool,
        entry: &Entry,
        rflags: u64,
    ) -> Vmx<()> {
        let (info, error_code) = match entry.inject {
            None => (0, None),
            Some(Event::Interrupt(vector)) => (intr_info::TYPE_EXT_INTR | u32::from(vector), None),
            Some(Event::Nmi) => (intr_info::TYPE_NMI | 2, None),
            Some(Event::Exception { vector, error_code }) => (
                intr_info::TYPE_HARD_EXCEPTION | u32::from(vector),
                error_code,
            ),
        };
        let info = match (entry.inject, error_code) {
            (None, _) => 0,
            (Some(_), Some(_)) => info | intr_info::VALID | intr_info::ERROR_CODE_VALID,
            (Some(_), None) => info | intr_info::VALID,
        };
        // Nothing to inject: the field is invalid already after an exit, which clears
        // its valid bit (not a failed entry: then `fresh`). SDM Vol. 3C 28.2.
        if info != 0 || fresh {
            write(v, vmcs::VM_ENTRY_INTR_INFO, info)?;
        }
        if let Some(error_code) = error_code {
            write(v, vmcs::VM_ENTRY_EXCEPTION_ERROR_CODE, error_code)?;
        }
        // Also while an event is injected: the window opens after its delivery.
        let window = entry.interrupt_window;
        let mut proc1 = self.shared.caps.controls.proc1;
        if window {
            proc1 |= proc1::INTR_WINDOW_EXITING;
        }
        if entry.nmi_window {
            proc1 |= proc1::NMI_WINDOW_EXITING;
        }
        if proc1 != self.proc1 {
            write(v, vmcs::CPU_BASED_VM_EXEC_CONTROL, proc1)?;
            self.proc1 = proc1;
        }
        let exceptions = INTERCEPTED_EXCEPTIONS
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
        if exceptions != self.exception_bitmap {
            write(v, vmcs::EXCEPTION_BITMAP, exceptions)?;
            self.exception_bitmap = exceptions;
        }
        // Blocking by STI requires IF=1; with IF=0 the shadow can only be MOV SS's.
        // A single-step trap pending across the shadow needs BS. SDM Vol. 3C 27.3.1.5.
        // While the VMM single-steps (#DB intercepted with TF set), a step
        // over STI or MOV SS drops the shadow, as KVM's `vmx_vcpu_run`:
        // with it, VM entry would insist on a pending single-step trap
        // (BS), taken before the next instruction ran.
        let shadow = if !entry.interrupt_shadow || entry.single_step {
            0
        } else if rflags & RFLAGS_IF != 0 {
            interruptibility::BLOCKING_BY_STI
        } else {
            interruptibility::BLOCKING_BY_MOV_SS
        };
        let nmi = if entry.nmi_blocked {
            interruptibility::BLOCKING_BY_NMI
        } else {
            0
        };
        let blocking = shadow | nmi;
        update(
            v,
            vmcs::GUEST_INTERRUPTIBILITY_INFO,
            &mut held.interruptibility,
            blocking,
            fresh,
        )?;
        let bs = if shadow != 0 && rflags & RFLAGS_TF != 0 {
            PENDING_DBG_BS
        } else {
            0
        };
        write(v, vmcs::GUEST_PENDING_DBG_EXCEPTIONS, bs)
    }

    /// Flushes translations this vCPU must not use: guest-physical ones
    /// of its EPT when the VM's mappings changed (or it moved CPU: the new
    /// CPU may hold old ones from an earlier visit, and a VMCS or VPID
    /// reused after a vCPU died may meet the old owner's), and linear ones
    /// of its VPID on those occasions and when asked. SDM Vol. 3C 29.4.
    fn flush(&mut self, on: &VmxOn, entry: &Entry, eptp: u64, cpu: u32) -> Vmx<()> {
        let stale = self.mapping_generation != entry.mapping_generation
            || self.last_cpu != Some(cpu)
            || self.last_eptp != eptp;
        let s = &self.shared;
        if stale {
            on.invept(s.caps.invept_single, eptp).context("INVEPT")?;
        }
        if s.caps.vpid && self.vpid != 0 && (stale || entry.flush_tlb) {
            on.invvpid(s.caps.invvpid_single, self.vpid)
                .context("INVVPID")?;
        }
        Ok(())
    }

    /// Names the exit from the VMCS's exit-information fields.
    fn exit_info(
        &self,
        v: &CurrentVmcs<'_>,
        held: &mut GuestFields,
        regs: &GuestRegs<'_>,
    ) -> Vmx<(ExitInfo, Option<HostEvent>)> {
        let full = read(v, vmcs::VM_EXIT_REASON)?;
        let basic = full as u16;
        let mut host_event = None;
        let qual = read(v, vmcs::EXIT_QUALIFICATION)?;
        let exit = if full & reason::FAILED_VMENTRY != 0 {
            // KVM reports the whole exit reason, bit 31 included.
            Exit::InvalidState(full.into())
        } else {
            match basic {
                reason::EXCEPTION_NMI => {
                    let info = read(v, vmcs::VM_EXIT_INTR_INFO)?;
                    let vector = (info & intr_info::VECTOR_MASK) as u8;
                    if info & intr_info::TYPE_MASK == intr_info::TYPE_NMI {
                        host_event = Some(HostEvent::Nmi);
                        Exit::HostInterrupt
                    } else if vector == MC_VECTOR {
                        host_event = Some(HostEvent::MachineCheck);
                        Exit::HostInterrupt
                    } else if vector == AC_VECTOR {
                        Exit::Exception {
                            vector,
                            error_code: Some(read(v, vmcs::VM_EXIT_INTR_ERROR_CODE)?),
                        }
                    } else if vector == DB_VECTOR {
                        // The qualification has DR6's B0-B3, BD and BS.
                        Exit::Debug {
                            dr6: qual | DR6_ACTIVE_LOW,
                        }
                    } else if vector == UD_VECTOR || vector == BP_VECTOR {
                        Exit::Exception {
                            vector,
                            error_code: None,
                        }
                    } else {
                        Exit::Unhandled(basic.into())
                    }
                }
                reason::EXTERNAL_INTERRUPT
                | reason::INIT
                | reason::SIPI
                | reason::IO_SMI
                | reason::OTHER_SMI => Exit::HostInterrupt,
                reason::TRIPLE_FAULT => Exit::Shutdown,
                reason::INTERRUPT_WINDOW => Exit::InterruptWindow,
                reason::NMI_WINDOW => Exit::NmiWindow,
                reason::CPUID => Exit::Cpuid,
                reason::HLT => Exit::Hlt,
                reason::INVD => Exit::CacheFlush { writeback: false },
                reason::WBINVD => Exit::CacheFlush { writeback: true },
                // No PMU is offered: RDPMC is #GP(0), as on KVM without a vPMU.
                reason::RDPMC => Exit::Exception {
                    vector: 13,
                    error_code: Some(0),
                },
                reason::MSR_READ => Exit::Msr { write: false },
                reason::MSR_WRITE => Exit::Msr { write: true },
                reason::DR_ACCESS => Exit::DebugRegister,
                // Exit qualification: CR number (3:0), access type (5:4: 0 MOV to CR, 1
                // MOV from CR, 2 CLTS, 3 LMSW), GPR (11:8), LMSW's source data (31:16).
                // SDM Vol. 3C 29.2.1, Table 29-3. CLTS never exits: TS is the guest's.
                reason::CR_ACCESS => {
                    let cr = (qual & 0xf) as u8;
                    let gpr = Some(((qual >> 8) & 0xf) as u8);
                    match (qual >> 4) & 3 {
                        0 => Exit::CrWrite { cr, gpr },
                        1 => Exit::CrRead { cr, gpr },
                        3 => Exit::Lmsw {
                            source: (qual >> 16) as u16,
                        },
                        _ => Exit::Unhandled(basic.into()),
                    }
                }
                // Exit qualification: size - 1 (2:0), IN (3), string (4), REP (5), port
                // (31:16); the address size of INS/OUTS is in the instruction-information
                // field (9:7: 0 = 16, 1 = 32, 2 = 64 bits). Table 29-5, 28.2.5.
                reason::IO_INSTRUCTION => {
                    let string = qual & 1 << 4 != 0;
                    let address_size = if !string {
                        0
                    } else if self.shared.caps.ins_outs_info {
                        2 << ((read(v, vmcs::VMX_INSTRUCTION_INFO)? >> 7) & 3)
                    } else {
                        // Without that field: the code segment's default.
                        let cs = &regs.sregs.cs;
                        if cs.l != 0 {
                            8
                        } else if cs.db != 0 {
                            4
                        } else {
                            2
                        }
                    };
                    Exit::Io(IoExit {
                        port: (qual >> 16) as u16,
                        size: ((qual & 7) + 1) as u8,
                        input: qual & 1 << 3 != 0,
                        string,
                        rep: qual & 1 << 5 != 0,
                        address_size,
                    })
                }
                reason::EPT_VIOLATION => Exit::SlatFault {
                    gpa: read(v, vmcs::GUEST_PHYSICAL_ADDRESS)?,
                    write: qual & ept_violation::WRITE != 0,
                    fetch: qual & ept_violation::FETCH != 0,
                    present: qual & ept_violation::PERMISSIONS != 0,
                    page_walk: qual & ept_violation::LINEAR_VALID != 0
                        && qual & ept_violation::TRANSLATED == 0,
                },
                reason::VMCALL => Exit::Hypercall {
                    opcode: crate::backend::VMCALL,
                },
                reason::XSETBV => Exit::Xsetbv,
                // VMX instructions, GETSEC, MONITOR/MWAIT: not given to guests.
                reason::GETSEC
                | reason::RSM
                | reason::VMCLEAR..=reason::VMXON
                | reason::INVEPT
                | reason::INVVPID
                | reason::VMFUNC
                | reason::MWAIT
                | reason::MONITOR => Exit::Undefined,
                // EPT misconfiguration is a bug in rkvm's tables: an internal error with
                // the exit reason, like any exit rkvm does not handle.
                reason::EPT_MISCONFIG => Exit::Unhandled(reason::EPT_MISCONFIG.into()),
                other => Exit::Unhandled(other.into()),
            }
        };
        // The instruction length is defined for exits caused by instructions. SDM Vol. 3C
        // 28.2.5.
        let by_instruction = matches!(
            exit,
            Exit::Io(_)
                | Exit::Hlt
                | Exit::Cpuid
                | Exit::Msr { .. }
                | Exit::DebugRegister
                | Exit::CrWrite { .. }
                | Exit::CrRead { .. }
                | Exit::Lmsw { .. }
                | Exit::CacheFlush { .. }
        ) || basic == reason::RDPMC;
        let next_rip = if by_instruction && full & reason::FAILED_VMENTRY == 0 {
            let len = read(v, vmcs::VM_EXIT_INSTRUCTION_LEN)?;
            Some(regs.regs.rip.wrapping_add(len.into()))
        } else {
            None
        };
        let interruptibility = read(v, vmcs::GUEST_INTERRUPTIBILITY_INFO)?;
        held.interruptibility = interruptibility;
        // An IRET whose access faulted in the EPT had unblocked NMIs already:
        // they are blocked again for its second run (SDM Vol. 3C 28.2.3).
        let iret_faulted = basic == reason::EPT_VIOLATION
            && full & reason::FAILED_VMENTRY == 0
            && qual & ept_violation::NMI_UNBLOCKED_BY_IRET != 0;
        let idt_vectoring = read(v, vmcs::IDT_VECTORING_INFO)?;
        let vectoring_error_code = if idt_vectoring & intr_info::ERROR_CODE_VALID != 0 {
            read(v, vmcs::IDT_VECTORING_ERROR_CODE)?
        } else {
            0
        };
        let info = ExitInfo {
            exit,
            interrupted_event: interrupted_event(idt_vectoring, vectoring_error_code),
            interrupt_shadow: interruptibility
                & (interruptibility::BLOCKING_BY_STI | interruptibility::BLOCKING_BY_MOV_SS)
                != 0,
            nmi_blocked: Some(
                interruptibility & interruptibility::BLOCKING_BY_NMI != 0 || iret_faulted,
            ),
            next_rip,
            insn: None,
            raw: RawExit {
                reason: full.into(),
                info1: qual,
                // KVM: none for an entry that failed.
                info2: if full & reason::FAILED_VMENTRY == 0 {
                    idt_vectoring.into()
                } else {
                    0
                },
            },
        };
        Ok((info, host_event))
    }

    /// Steps 2 and 3 of [`VmxVcpu::run`], with the VMCS current.
    fn enter(
        &mut self,
        on: &VmxOn,
        v: &mut CurrentVmcs<'_>,
        guest: &mut GuestRegs<'_>,
        entry: &Entry,
        cpu: u32,
        resume: bool,
    ) -> Vmx<(ExitInfo, Option<HostEvent>)> {
        if !self.initialized {
            self.initialize(v)?;
        }
        self.write_host_state(v)?;
        // Known again only once this entry has exited normally and been read back.
        let fresh = self.held.is_none();
        let mut held = self.held.take().unwrap_or_default();
        self.load(v, &mut held, fresh, guest, entry)?;
        self.prepare_events(v, &mut held, fresh, entry, guest.regs.rflags)?;
        let eptp = super::eptp(entry.slat_root, 4);
        update(v, vmcs::EPT_POINTER, &mut held.eptp, eptp, fresh)?;
        self.flush(on, entry, eptp, cpu)?;
        // IBPB if another guest ran here last.
        self.shared
            .last_guest
            .entering(cpu, kmalloc_phys(&*self.vmcs).0);
        let spec = &self.shared.spec;
        match spec.l1d_flush {
            L1dFlush::None => {}
            L1dFlush::Msr => crate::sys::spec::l1d_flush(),
            L1dFlush::Software => {
                if let Some(buffer) = &self.shared.l1d_flush_buffer {
                    buffer.flush();
                }
            }
        }
        // SAFETY: Interrupts are off (our caller's contract); every host field holds this
        // CPU's and this task's state, saved just now (written now, or at an earlier entry
        // that saved the same); the controls intercept interrupts, NMIs, I/O,
        // MSRs, CR8, debug registers and the instructions that reach host resources; the
        // EPT maps only pinned pages of the VM's slots. `resume` only when the last entry
        // launched this VMCS and exited since VMPTRLD (`run`); a wrong choice would only
        // fail the entry.
        let launched = unsafe { v.launch(&mut self.gprs, EntryFlags::of(spec).resuming(resume)) };
        if spec.ibpb_after_exit {
            crate::sys::spec::ibpb();
        }
        if spec.ibpb_before_user {
            crate::sys::spec::ibpb_before_user();
        }
        match launched {
            Ok(()) => {}
            Err(VmxError::Valid(n)) => {
                // KVM's FAIL_ENTRY for a VMLAUNCH that refused the VMCS: the reason is the
                // VM-instruction error. Nothing ran.
                return Ok((
                    ExitInfo {
                        exit: Exit::InvalidState(n.into()),
                        interrupted_event: None,
                        interrupt_shadow: entry.interrupt_shadow,
                        nmi_blocked: Some(entry.nmi_blocked),
                        next_rip: None,
                        insn: None,
                        raw: RawExit::default(),
                    },
                    None,
                ));
            }
            Err(e) => {
                return Err(Failure {
                    what: if resume { "VMRESUME" } else { "VMLAUNCH" },
                    error: e,
                })
            }
        }
        // The registers first: the next RIP is counted from the RIP of the exit.
        self.store(v, &mut held, guest)?;
        let (info, host_event) = self.exit_info(v, &mut held, guest)?;
        if !matches!(info.exit, Exit::InvalidState(_)) {
            self.mapping_generation = entry.mapping_generation;
            self.last_cpu = Some(cpu);
            self.last_eptp = eptp;
            self.held = Some(held);
        }
        Ok((info, host_event))
    }
}

/// An exit that is not the guest's doing.
fn exit_only(exit: Exit) -> ExitInfo {
    ExitInfo {
        exit,
        interrupted_event: None,
        interrupt_shadow: false,
        nmi_blocked: None,
        next_rip: None,
        insn: None,
        raw: RawExit::default(),
    }
}

impl VendorVcpu for VmxVcpu {
    fn run(&mut self, mut guest: GuestRegs<'_>, entry: &Entry, reenter: Reenter<'_>) -> ExitInfo {
        let cpu = this_cpu();
        let Some(region) = self.shared.vmxon_region(cpu) else {
            return exit_only(Exit::Unhandled(u64::MAX - 1));
        };
        // SAFETY: The caller runs us with interrupts disabled, on `cpu`, whose enabling
        // checked VMXON's preconditions; the region is `cpu`'s own.
        let on = match unsafe { VmxOn::enter(region) } {
            Ok(on) => on,
            Err(VmxOnError::Busy) => return exit_only(Exit::Busy),
            Err(VmxOnError::Failed(e)) => {
                pr_err!("VMXON failed on CPU {}: {}\n", cpu, e);
                return exit_only(Exit::Unhandled(VMX_INSTRUCTION_FAILED));
            }
        };
        // SAFETY: Interrupts stay disabled until `restore` below.
        unsafe { self.host.save(self.host_cpu != Some(cpu)) };
        self.host_cpu = Some(cpu);
        let vmcs_pa = kmalloc_phys(&*self.vmcs).0;
        // SAFETY: The VMCS page is this vCPU's, lives as long as it, and is not active on
        // any CPU: every `CurrentVmcs` is VMCLEARed when dropped, before VMXOFF.
        let result = match unsafe { on.load(vmcs_pa) } {
            // The first entry launches the VMCS; entries that `reenter` asks for
            // after an exit resume it, still current.
            Ok(mut v) => {
                let mut entry = *entry;
                let mut resume = false;
                loop {
                    match self.enter(&on, &mut v, &mut guest, &entry, cpu, resume) {
                        Ok((info, None)) if !matches!(info.exit, Exit::InvalidState(_)) => {
                            match reenter(&mut guest, &info) {
                                Some(next) => entry = next,
                                None => break Ok((info, None)),
                            }
                            resume = true;
                        }
                        other => break other,
                    }
                }
            }
            Err(error) => Err(Failure {
                what: "VMPTRLD",
                error,
            }),
        };
        drop(on);
        // SAFETY: Right after the exit that followed `save`, interrupts still off.
        unsafe { self.host.restore() };
        match result {
            Ok((info, host_event)) => {
                match host_event {
                    // SAFETY: Out of VMX operation with the host's state back, right after
                    // the exit that consumed the NMI or machine check.
                    Some(HostEvent::Nmi) => unsafe { crate::sys::vmx::raise_nmi() },
                    // SAFETY: As above.
                    Some(HostEvent::MachineCheck) => unsafe { cpu::raise_machine_check() },
                    None => {}
                }
                info
            }
            Err(Failure { what, error }) => {
                pr_err!("{} failed on CPU {}: {}\n", what, cpu, error);
                let n = match error {
                    VmxError::Valid(n) => u64::from(n),
                    VmxError::Invalid => 0,
                };
                exit_only(Exit::Unhandled(VMX_INSTRUCTION_FAILED | n))
            }
        }
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        self.shared.last_guest.forget(kmalloc_phys(&*self.vmcs).0);
        if self.vpid != 0 {
            self.shared.free_vpid(self.vpid);
        }
    }
}
