//! Running guests: a VM with memory at guest-physical 0, vCPUs set up for
//! one of the x86 modes the way a KVM client does it (KVM_SET_CPUID2,
//! KVM_SET_SREGS, KVM_SET_REGS), and a port-I/O "ucall" channel through
//! which guest code reports results and assertion failures to the host.
//! The idea is that of the kernel's KVM selftests
//! (`tools/testing/selftests/kvm/lib/`): the guest code is written next to
//! the host code that checks it.
//!
//! # Guest code
//!
//! [`guest!`](crate::guest!) assembles AT&T-syntax text into the test
//! program (with [`kvm_abi::guest_code!`]) and defines a function returning
//! its bytes; [`GuestVm::new`] copies them to [`CODE_GPA`], where every
//! vCPU starts. The bytes do not run where the host linked them, so guest
//! code may use relative jumps and calls (and `%rip`-relative data in 64-bit
//! code) but never the absolute address of its own labels: absolute
//! addresses are the constants of the layout below, which the prelude of
//! every guest block defines as assembler symbols (`UCALL_PORT`,
//! `DATA_GPA`, `MMIO_GPA`, `FIXUP_GPA`, `CODE_GPA`, `STACK_TOP`, `ALIAS_GVA` and the
//! `UCALL_*` codes), together with two assembler macros:
//!
//! - `ucall CODE`: `OUT` of `CODE` (in `%eax`) to [`UCALL_PORT`]; the host
//!   reads the arguments from `%rbx`, `%rcx` and `%rsi`. Clobbers `%eax`
//!   and `%edx`.
//! - `assert_eq REG32, IMM, ID`: if the 32-bit register is not `IMM`, a
//!   `UCALL_FAIL` with the id in `%ebx`, the actual value in `%ecx` and the
//!   expected one in `%esi`.
//!
//! # Guest-physical layout
//!
//! One slot of [`MEM_SIZE`] bytes at 0 holds everything: the GDT, the IDT
//! and its handlers, the page tables, a data area, the code and the stacks.
//! Every address from [`MEM_SIZE`] up, [`MMIO_GPA`] among them, is in no
//! slot: an access there is MMIO. In the paging modes the first 4 GiB are
//! identity-mapped, so the same addresses work in every mode (in real and
//! 16-bit protected mode the data segments start at [`DATA_GPA`] instead),
//! except [`ALIAS_GVA`], which maps to guest-physical 0.
//!
//! # Exceptions and interrupts
//!
//! In the 32- and 64-bit modes every IDT vector leads to a handler that
//! reports it: vectors below 32 (exceptions) with `UCALL_EXCEPTION` (vector,
//! error code, faulting RIP), the others (external interrupts) with
//! `UCALL_IRQ` (vector), after which it returns to the interrupted code.
//! After an exception the handler resumes at the address the guest stored
//! at [`FIXUP_GPA`] (clearing it) if there is one, and halts otherwise.

use std::sync::Arc;

use ksft::Status;
use kvm_abi::sys::{kvm_cpuid_entry2, kvm_regs, kvm_segment, kvm_sregs};
use kvm_abi::{
    CpuidEntries, GuestMemory, IoDirection, KVM_MAX_CPUID_ENTRIES, MemoryRegion, RunMapping, Vcpu,
    VcpuExit, Vm,
};

use crate::Ctx;

/// Size of slot 0, at guest-physical 0.
pub const MEM_SIZE: usize = 2 << 20;
/// The GDT (see [`Selector`]).
pub const GDT_GPA: u64 = 0x1000;
/// The IDT: 256 gates (16 bytes each in long mode, 8 otherwise).
pub const IDT_GPA: u64 = 0x2000;
/// The interrupt handlers: 256 entry stubs of 16 bytes, then common code.
pub const HANDLERS_GPA: u64 = 0x3000;
/// Where guest code stores the address an exception handler resumes at.
pub const FIXUP_GPA: u64 = 0x5000;
/// The TSS that TR points at (never used: the guest stays at CPL 0
/// without IST).
pub const TSS_GPA: u64 = 0x6000;
/// Long mode: the PML4.
pub const PML4_GPA: u64 = 0x10000;
/// Long mode: the PDPT, whose four entries point at the four PDs.
pub const PDPT_GPA: u64 = 0x11000;
/// Four page directories of 2 MiB pages mapping 0-4 GiB (long mode, PAE).
pub const PD_GPA: u64 = 0x12000;
/// 32-bit paging: one page directory of 4 MiB pages mapping 0-4 GiB.
pub const PD32_GPA: u64 = 0x16000;
/// PAE paging: the four-entry PDPT.
pub const PAE_PDPT_GPA: u64 = 0x17000;
/// 64 KiB of zeroed memory for tests' data.
pub const DATA_GPA: u64 = 0x20000;
/// Where the guest code is loaded and every vCPU starts.
pub const CODE_GPA: u64 = 0x40000;
/// The initial stack pointer of vCPU 0; vCPU `n` starts [`STACK_SIZE`]
/// times `n` lower.
pub const STACK_TOP: u64 = 0x80000;
/// Stack bytes per vCPU.
pub const STACK_SIZE: u64 = 0x2000;
/// Most vCPUs one [`GuestVm`] can set up (their stacks must stay above
/// the code).
pub const MAX_VCPUS: u64 = 8;
/// A guest-physical address in no slot (but identity-mapped by the page
/// tables): accesses there exit with `KVM_EXIT_MMIO`.
pub const MMIO_GPA: u64 = 0xc000_0000;
/// The port of the ucall channel.
pub const UCALL_PORT: u16 = 0x5a0;

/// Ucall codes (`%eax` of the `OUT` to [`UCALL_PORT`]).
pub const UCALL_DONE: u32 = 1;
/// The guest reports values (`%rbx`, `%rcx`, `%rsi`) and goes on.
pub const UCALL_SYNC: u32 = 2;
/// A guest assertion failed: id, actual, expected.
pub const UCALL_FAIL: u32 = 3;
/// The guest took an exception: vector, error code, RIP.
pub const UCALL_EXCEPTION: u32 = 4;
/// The guest took an external interrupt: vector.
pub const UCALL_IRQ: u32 = 5;

// Control-register and EFER bits: SDM Vol. 3A 2.5, APM Vol. 2 3.1.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is always 1 (SDM Vol. 1 3.4.3).
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// RFLAGS.IF (SDM Vol. 1 3.4.3).
pub const RFLAGS_IF: u64 = 1 << 9;

// Page-table entry bits: SDM Vol. 3A 4.3 (32-bit), 4.4 (PAE), 4.5 (4-level).
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;

/// The GDT's selectors (SDM Vol. 3A 3.4.5 for the descriptor format).
#[derive(Clone, Copy, Debug)]
pub enum Selector {
    /// 64-bit code (L = 1).
    Code64 = 0x08,
    /// Flat 4 GiB read/write data.
    Data = 0x10,
    /// 32-bit flat code.
    Code32 = 0x18,
    /// 16-bit code based at [`CODE_GPA`].
    Code16 = 0x20,
    /// 16-bit data based at [`DATA_GPA`].
    Data16 = 0x28,
    /// 16-bit stack segment based at `STACK_TOP - 0x10000`.
    Stack16 = 0x30,
    /// The TSS (a 16-byte descriptor in long mode).
    Tss = 0x38,
}

/// The GDT: a descriptor per [`Selector`].
fn gdt() -> Vec<u64> {
    // Descriptor: limit 15:0, base 23:0, access byte, flags|limit 19:16,
    // base 31:24 (SDM Vol. 3A 3.4.5). Access 0x9b: present, DPL 0, code,
    // readable, accessed; 0x93: data, writable, accessed; 0x8b: busy TSS.
    let desc = |base: u64, limit: u64, access: u64, flags: u64| {
        (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (access << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (flags << 52)
            | ((base >> 24) << 56)
    };
    // Flags: G = 8, D/B = 4, L = 2.
    vec![
        0,
        desc(0, 0xf_ffff, 0x9b, 0xa),
        desc(0, 0xf_ffff, 0x93, 0xc),
        desc(0, 0xf_ffff, 0x9b, 0xc),
        desc(CODE_GPA, 0xffff, 0x9b, 0),
        desc(DATA_GPA, 0xffff, 0x93, 0),
        desc(STACK_TOP - 0x10000, 0xffff, 0x93, 0),
        desc(TSS_GPA, 0x67, 0x8b, 0),
        0,
    ]
}

/// The x86 operating modes a guest can be set up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode: CS based at [`CODE_GPA`], data segments at [`DATA_GPA`].
    Real,
    /// 16-bit protected mode: the same bases, from 16-bit descriptors.
    Protected16,
    /// 32-bit protected mode, flat segments, no paging.
    Protected32,
    /// 32-bit paging with 4 MiB pages (CR4.PSE), identity map of 4 GiB.
    Paging32,
    /// PAE paging with 2 MiB pages, identity map of 4 GiB.
    Pae,
    /// Long mode (64-bit code), 4-level paging with 2 MiB pages, identity
    /// map of 4 GiB.
    Long,
}

impl Mode {
    /// Every mode, from real to long.
    pub const ALL: [Mode; 6] = [
        Mode::Real,
        Mode::Protected16,
        Mode::Protected32,
        Mode::Paging32,
        Mode::Pae,
        Mode::Long,
    ];

    /// Whether the mode has the IDT and handlers of this library.
    fn has_idt(self) -> bool {
        !matches!(self, Mode::Real | Mode::Protected16)
    }
}

/// Assembles guest code with the ucall prelude (see the module docs) and
/// defines `fn $name() -> &'static [u8]` returning its bytes. AT&T syntax;
/// start the text with `.code16`, `.code32` or `.code64`.
///
/// ```ignore
/// rkvm_selftests::guest! {
///     /// Reports 42 and finishes.
///     fn report_42;
///     ".code64",
///     "mov $42, %ebx",
///     "ucall UCALL_SYNC",
///     "ucall UCALL_DONE",
/// }
/// ```
#[macro_export]
macro_rules! guest {
    ($(#[$meta:meta])* $vis:vis fn $name:ident; $($tmpl:expr),+ $(,)?) => {
        ::kvm_abi::guest_code! {
            $(#[$meta])* $vis fn $name;
            ".set UCALL_PORT, {ucall_port}",
            ".set UCALL_DONE, {done}",
            ".set UCALL_SYNC, {sync}",
            ".set UCALL_FAIL, {fail}",
            ".set UCALL_EXCEPTION, {exception}",
            ".set UCALL_IRQ, {irq}",
            ".set DATA_GPA, {data_gpa}",
            ".set MMIO_GPA, {mmio_gpa}",
            ".set FIXUP_GPA, {fixup_gpa}",
            ".set CODE_GPA, {code_gpa}",
            ".set STACK_TOP, {stack_top}",
            ".set ALIAS_GVA, {alias_gva}",
            ".macro ucall code",
            "    mov $UCALL_PORT, %dx",
            "    mov $\\code, %eax",
            "    out %eax, (%dx)",
            ".endm",
            ".macro assert_eq reg, imm, id",
            "    cmp $\\imm, \\reg",
            "    je .Lassert_ok\\@",
            "    mov \\reg, %ecx",
            "    mov $\\imm, %esi",
            "    mov $\\id, %ebx",
            "    ucall UCALL_FAIL",
            ".Lassert_ok\\@:",
            ".endm",
            $($tmpl),+,
            ".purgem ucall",
            ".purgem assert_eq";
            ucall_port = const $crate::guest::UCALL_PORT,
            done = const $crate::guest::UCALL_DONE,
            sync = const $crate::guest::UCALL_SYNC,
            fail = const $crate::guest::UCALL_FAIL,
            exception = const $crate::guest::UCALL_EXCEPTION,
            irq = const $crate::guest::UCALL_IRQ,
            data_gpa = const $crate::guest::DATA_GPA,
            mmio_gpa = const $crate::guest::MMIO_GPA,
            fixup_gpa = const $crate::guest::FIXUP_GPA,
            code_gpa = const $crate::guest::CODE_GPA,
            stack_top = const $crate::guest::STACK_TOP,
            alias_gva = const $crate::guest::ALIAS_GVA,
            options(att_syntax)
        }
    };
}

// The vectors for which the CPU pushes an error code (SDM Vol. 3A 6.15):
// #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX. The stub of every
// other vector pushes a 0 in its place, so the frame is the same for all.
crate::guest! {
    /// The 64-bit interrupt handlers, loaded at [`HANDLERS_GPA`].
    fn handlers64;
    ".code64",
    ".set vec, 0",
    ".rept 256",
    "    .balign 16",
    "    .if vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30",
    "    .else",
    "    pushq $0",
    "    .endif",
    "    pushq $vec",
    "    jmp 1f",
    "    .set vec, vec + 1",
    ".endr",
    // The frame: vector, error code, RIP, CS, RFLAGS, RSP, SS.
    "1: push %rax",
    "    push %rdx",
    "    push %rbx",
    "    push %rcx",
    "    push %rsi",
    "    mov 40(%rsp), %rbx",
    "    cmp $32, %rbx",
    "    jae 2f",
    "    mov 48(%rsp), %rcx",
    "    mov 56(%rsp), %rsi",
    "    ucall UCALL_EXCEPTION",
    "    mov FIXUP_GPA, %rax",
    "    test %rax, %rax",
    "    jz 4f",
    "    movq $0, FIXUP_GPA",
    "    mov %rax, 56(%rsp)",
    "    jmp 3f",
    "2:  ucall UCALL_IRQ",
    "3:  pop %rsi",
    "    pop %rcx",
    "    pop %rbx",
    "    pop %rdx",
    "    pop %rax",
    "    add $16, %rsp",
    "    iretq",
    "4:  hlt",
    "    jmp 4b",
}

crate::guest! {
    /// The 32-bit interrupt handlers, loaded at [`HANDLERS_GPA`].
    fn handlers32;
    ".code32",
    ".set vec, 0",
    ".rept 256",
    "    .balign 16",
    "    .if vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30",
    "    .else",
    "    pushl $0",
    "    .endif",
    "    pushl $vec",
    "    jmp 1f",
    "    .set vec, vec + 1",
    ".endr",
    // The frame: vector, error code, EIP, CS, EFLAGS.
    "1: push %eax",
    "    push %edx",
    "    push %ebx",
    "    push %ecx",
    "    push %esi",
    "    mov 20(%esp), %ebx",
    "    cmp $32, %ebx",
    "    jae 2f",
    "    mov 24(%esp), %ecx",
    "    mov 28(%esp), %esi",
    "    ucall UCALL_EXCEPTION",
    "    mov FIXUP_GPA, %eax",
    "    test %eax, %eax",
    "    jz 4f",
    "    movl $0, FIXUP_GPA",
    "    mov %eax, 28(%esp)",
    "    jmp 3f",
    "2:  ucall UCALL_IRQ",
    "3:  pop %esi",
    "    pop %ecx",
    "    pop %ebx",
    "    pop %edx",
    "    pop %eax",
    "    add $8, %esp",
    "    iret",
    "4:  hlt",
    "    jmp 4b",
}

/// The guest's IDT for `mode`: an interrupt gate (type 0xe, present, DPL 0;
/// SDM Vol. 3A 6.11 and 6.14.1) per vector, to the vector's stub.
fn idt(mode: Mode) -> Vec<u8> {
    let mut idt = Vec::with_capacity(256 * 16);
    for vector in 0..256u64 {
        let handler = HANDLERS_GPA + 16 * vector;
        let (selector, wide) = if mode == Mode::Long {
            (Selector::Code64 as u64, true)
        } else {
            (Selector::Code32 as u64, false)
        };
        let low = (handler & 0xffff)
            | (selector << 16)
            | (0x8e << 40)
            | (((handler >> 16) & 0xffff) << 48);
        idt.extend_from_slice(&low.to_le_bytes());
        if wide {
            idt.extend_from_slice(&(handler >> 32).to_le_bytes());
        }
    }
    idt
}

/// The virtual address that every paging mode maps to guest-physical 0
/// (instead of identity): the last 4 MiB of the 4 GiB map. Guest code reads
/// memory through it to prove that its page tables, not just the slot
/// layout, decide where an access goes.
pub const ALIAS_GVA: u64 = 0xffc0_0000;

/// Every page table of every paging mode, as `(gpa, bytes)`: identity maps
/// of 0-4 GiB except that [`ALIAS_GVA`] maps to 0.
fn page_tables() -> Vec<(u64, Vec<u8>)> {
    let table64 = |entries: &mut dyn Iterator<Item = u64>| -> Vec<u8> {
        entries.flat_map(u64::to_le_bytes).collect()
    };
    let pd_page = |i: u64| PD_GPA + i * 0x1000;
    // 2 MiB pages (PAE and long mode): the PDE of `va`.
    let pde64 = |va: u64| {
        let pa = if va == ALIAS_GVA { 0 } else { va };
        pa | PTE_P | PTE_RW | PTE_PS
    };
    // 4 MiB pages (32-bit paging with CR4.PSE): 4-byte PDEs.
    let pde32 = |va: u64| {
        let pa = if va == ALIAS_GVA { 0 } else { va };
        u32::try_from(pa | PTE_P | PTE_RW | PTE_PS).unwrap_or(0)
    };
    vec![
        // Long mode: PML4[0] -> PDPT; PDPT[0..4] -> the four PDs.
        (
            PML4_GPA,
            table64(&mut [PDPT_GPA | PTE_P | PTE_RW].into_iter()),
        ),
        (
            PDPT_GPA,
            table64(&mut (0..4).map(|i| pd_page(i) | PTE_P | PTE_RW)),
        ),
        // The PDs, shared by long mode and PAE: 2 MiB pages, 0-4 GiB.
        (PD_GPA, table64(&mut (0..4 * 512).map(|i| pde64(i << 21)))),
        // PAE PDPTEs have no R/W bit (SDM Vol. 3A 4.4.1): present only.
        (
            PAE_PDPT_GPA,
            table64(&mut (0..4).map(|i| pd_page(i) | PTE_P)),
        ),
        // 32-bit paging: 1024 4 MiB pages, 0-4 GiB.
        (
            PD32_GPA,
            (0..1024u64)
                .flat_map(|i| pde32(i << 22).to_le_bytes())
                .collect(),
        ),
    ]
}

/// A segment register's hidden part, present, DPL 0.
fn segment(selector: Selector, base: u64, limit: u32, type_: u8, db: bool, l: bool) -> kvm_segment {
    kvm_segment {
        base,
        limit,
        selector: selector as u16,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(db),
        s: 1,
        l: u8::from(l),
        g: u8::from(limit > 0xf_ffff),
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets `sregs` up for `mode` (on top of the vCPU's reset state).
fn setup_sregs(sregs: &mut kvm_sregs, mode: Mode) {
    // Segment types: 0xb code execute/read accessed, 0x3 data read/write
    // accessed (SDM Vol. 3A 3.4.5.1).
    match mode {
        Mode::Real => {
            let real = |base: u64, type_: u8| kvm_segment {
                base,
                limit: 0xffff,
                selector: u16::try_from(base >> 4).unwrap_or(0),
                type_,
                present: 1,
                s: 1,
                ..Default::default()
            };
            sregs.cs = real(CODE_GPA, 0xb);
            sregs.ds = real(DATA_GPA, 0x3);
            sregs.es = sregs.ds;
            sregs.fs = sregs.ds;
            sregs.gs = sregs.ds;
            sregs.ss = real(STACK_TOP - 0x10000, 0x3);
        }
        Mode::Protected16 => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
            sregs.cs = segment(Selector::Code16, CODE_GPA, 0xffff, 0xb, false, false);
            sregs.ds = segment(Selector::Data16, DATA_GPA, 0xffff, 0x3, false, false);
            sregs.es = sregs.ds;
            sregs.fs = sregs.ds;
            sregs.gs = sregs.ds;
            sregs.ss = segment(
                Selector::Stack16,
                STACK_TOP - 0x10000,
                0xffff,
                0x3,
                false,
                false,
            );
        }
        Mode::Protected32 | Mode::Paging32 | Mode::Pae | Mode::Long => {
            let long = mode == Mode::Long;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
            sregs.cs = if long {
                segment(Selector::Code64, 0, 0xffff_ffff, 0xb, false, true)
            } else {
                segment(Selector::Code32, 0, 0xffff_ffff, 0xb, true, false)
            };
            sregs.ds = segment(Selector::Data, 0, 0xffff_ffff, 0x3, true, false);
            sregs.es = sregs.ds;
            sregs.fs = sregs.ds;
            sregs.gs = sregs.ds;
            sregs.ss = sregs.ds;
            // Busy TSS: type 0xb (32-bit and 64-bit alike), system segment.
            sregs.tr = kvm_segment {
                s: 0,
                g: 0,
                db: 0,
                ..segment(Selector::Tss, TSS_GPA, 0x67, 0xb, false, false)
            };
            match mode {
                Mode::Paging32 => {
                    sregs.cr4 = CR4_PSE;
                    sregs.cr3 = PD32_GPA;
                    sregs.cr0 |= CR0_PG | CR0_WP;
                }
                Mode::Pae => {
                    sregs.cr4 = CR4_PAE;
                    sregs.cr3 = PAE_PDPT_GPA;
                    sregs.cr0 |= CR0_PG | CR0_WP;
                }
                Mode::Long => {
                    sregs.cr4 = CR4_PAE;
                    sregs.cr3 = PML4_GPA;
                    sregs.cr0 |= CR0_PG | CR0_WP;
                    sregs.efer = EFER_LME | EFER_LMA;
                }
                _ => {}
            }
        }
    }
    let gdt_bytes = gdt().len() * 8;
    sregs.gdt.base = GDT_GPA;
    sregs.gdt.limit = u16::try_from(gdt_bytes - 1).unwrap_or(u16::MAX);
    if mode.has_idt() {
        sregs.idt.base = IDT_GPA;
        sregs.idt.limit = if mode == Mode::Long {
            256 * 16 - 1
        } else {
            256 * 8 - 1
        };
    }
}

/// A VM with slot 0 ([`MEM_SIZE`] bytes at 0) holding the tables of
/// `mode` and the guest code.
#[derive(Debug)]
pub struct GuestVm {
    /// The VM.
    pub vm: Vm,
    /// Slot 0's memory.
    pub mem: Arc<GuestMemory>,
    /// The mode its vCPUs start in.
    pub mode: Mode,
    /// KVM_GET_VCPU_MMAP_SIZE.
    mmap_size: usize,
    /// KVM_GET_SUPPORTED_CPUID.
    cpuid: Vec<kvm_cpuid_entry2>,
}

impl GuestVm {
    /// Creates the VM, slot 0 and its contents, with `code` at [`CODE_GPA`].
    pub fn new(ctx: &Ctx, mode: Mode, code: &[u8]) -> Result<Self, Status> {
        let vm = ctx.vm()?;
        let mem = Arc::new(GuestMemory::new(MEM_SIZE)?);
        vm.set_user_memory_region(&MemoryRegion::new(0, 0, &mem))?;
        let mut cpuid = CpuidEntries::new(KVM_MAX_CPUID_ENTRIES)?;
        ctx.sys.get_supported_cpuid(&mut cpuid)?;
        let gvm = Self {
            vm,
            mem,
            mode,
            mmap_size: ctx.sys.vcpu_mmap_size()?,
            cpuid: cpuid.entries().to_vec(),
        };
        let gdt: Vec<u8> = gdt().into_iter().flat_map(u64::to_le_bytes).collect();
        gvm.write(GDT_GPA, &gdt)?;
        for (gpa, bytes) in page_tables() {
            gvm.write(gpa, &bytes)?;
        }
        match mode {
            Mode::Long => {
                gvm.write(IDT_GPA, &idt(mode))?;
                gvm.write(HANDLERS_GPA, handlers64())?;
            }
            Mode::Protected32 | Mode::Paging32 | Mode::Pae => {
                gvm.write(IDT_GPA, &idt(mode))?;
                gvm.write(HANDLERS_GPA, handlers32())?;
            }
            Mode::Real | Mode::Protected16 => {}
        }
        if code.len() as u64 > STACK_TOP - MAX_VCPUS * STACK_SIZE - CODE_GPA {
            return Err(Status::Fail(format!(
                "guest code of {} bytes does not fit",
                code.len()
            )));
        }
        gvm.write(CODE_GPA, code)?;
        Ok(gvm)
    }

    /// Writes `bytes` at guest-physical `gpa` of slot 0.
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), Status> {
        Ok(self.mem.write(offset(gpa)?, bytes)?)
    }

    /// Reads `buf.len()` bytes at guest-physical `gpa` of slot 0.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Status> {
        Ok(self.mem.read(offset(gpa)?, buf)?)
    }

    /// Reads the little-endian `u64` at `gpa` of slot 0.
    pub fn read_u64(&self, gpa: u64) -> Result<u64, Status> {
        Ok(self.mem.read_u64(offset(gpa)?)?)
    }

    /// Creates vCPU `id` with the supported CPUID, in the VM's mode.
    pub fn add_vcpu(&self, id: u64) -> Result<GuestVcpu, Status> {
        self.add_vcpu_with_cpuid(id, |_| {})
    }

    /// Creates vCPU `id` with the supported CPUID as changed by `edit`, in
    /// the VM's mode, starting at [`CODE_GPA`] with its own stack, RFLAGS
    /// 0x2 (interrupts off) and its id in `%rdi`.
    pub fn add_vcpu_with_cpuid(
        &self,
        id: u64,
        edit: impl FnOnce(&mut CpuidEntries),
    ) -> Result<GuestVcpu, Status> {
        if id >= MAX_VCPUS {
            return Err(Status::Fail(format!("vCPU id {id} >= {MAX_VCPUS}")));
        }
        let vcpu = self.vm.create_vcpu(id)?;
        // A VMM sets CPUID first: KVM refuses long mode before it.
        let mut cpuid = CpuidEntries::from_entries(&self.cpuid)?;
        edit(&mut cpuid);
        vcpu.set_cpuid2(&cpuid)?;
        let mut sregs = vcpu.get_sregs()?;
        setup_sregs(&mut sregs, self.mode);
        vcpu.set_sregs(&sregs)?;
        let (rip, rsp) = match self.mode {
            // Code and stack segments have their own bases below 1 MiB.
            Mode::Real | Mode::Protected16 => (0, 0xfff0 - id * STACK_SIZE),
            _ => (CODE_GPA, STACK_TOP - id * STACK_SIZE),
        };
        vcpu.set_regs(&kvm_regs {
            rip,
            rsp,
            rdi: id,
            rflags: RFLAGS_FIXED,
            ..Default::default()
        })?;
        let run = vcpu.map_run(self.mmap_size)?;
        Ok(GuestVcpu { vcpu, run })
    }
}

/// The offset into slot 0 of `gpa`.
fn offset(gpa: u64) -> Result<usize, Status> {
    usize::try_from(gpa)
        .ok()
        .filter(|&o| o < MEM_SIZE)
        .ok_or_else(|| Status::Fail(format!("GPA {gpa:#x} is outside slot 0")))
}

/// What the guest reported through the ucall port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ucall {
    /// `UCALL_DONE`: the guest finished.
    Done,
    /// `UCALL_SYNC` with `%rbx`, `%rcx`, `%rsi`.
    Sync([u64; 3]),
    /// `UCALL_FAIL`: a guest assertion failed.
    Fail {
        /// The assertion's id.
        id: u64,
        /// The value seen.
        actual: u64,
        /// The value expected.
        expected: u64,
    },
    /// `UCALL_EXCEPTION`: the guest took an exception.
    Exception {
        /// The vector.
        vector: u64,
        /// The error code (0 for vectors without one).
        error_code: u64,
        /// The faulting (or next, for traps) instruction.
        rip: u64,
    },
    /// `UCALL_IRQ`: the guest took an external interrupt.
    Irq {
        /// The vector.
        vector: u64,
    },
}

/// The mnemonic of exception `vector` (SDM Vol. 3A 6.3.1).
fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 22] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "(15)", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    ];
    usize::try_from(vector)
        .ok()
        .and_then(|v| NAMES.get(v))
        .copied()
        .unwrap_or("?")
}

impl std::fmt::Display for Ucall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Ucall::Done => write!(f, "UCALL_DONE"),
            Ucall::Sync([a, b, c]) => write!(f, "UCALL_SYNC({a:#x}, {b:#x}, {c:#x})"),
            Ucall::Fail {
                id,
                actual,
                expected,
            } => write!(
                f,
                "guest assertion {id} failed: expected {expected:#x}, got {actual:#x}"
            ),
            Ucall::Exception {
                vector,
                error_code,
                rip,
            } => write!(
                f,
                "guest exception {} (vector {vector}, error code {error_code:#x}) at RIP {rip:#x}",
                exception_name(vector)
            ),
            Ucall::Irq { vector } => write!(f, "guest interrupt, vector {vector:#x}"),
        }
    }
}

/// One line describing `exit`, for failure messages.
pub fn describe(exit: &VcpuExit<'_>) -> String {
    match exit {
        VcpuExit::Io(io) => format!(
            "KVM_EXIT_IO {} port {:#x} size {} count {} data {:02x?}",
            if io.direction == IoDirection::In {
                "in"
            } else {
                "out"
            },
            io.port,
            io.size,
            io.count,
            io.data().unwrap_or_default()
        ),
        VcpuExit::Mmio(m) => format!(
            "KVM_EXIT_MMIO {} {:#x} len {} data {:02x?}",
            if m.is_write { "write" } else { "read" },
            m.phys_addr,
            m.len,
            m.data()
        ),
        VcpuExit::Hlt => "KVM_EXIT_HLT".into(),
        VcpuExit::Shutdown => "KVM_EXIT_SHUTDOWN".into(),
        VcpuExit::IrqWindowOpen => "KVM_EXIT_IRQ_WINDOW_OPEN".into(),
        VcpuExit::Intr => "KVM_EXIT_INTR".into(),
        VcpuExit::FailEntry {
            hardware_entry_failure_reason,
            cpu,
        } => format!("KVM_EXIT_FAIL_ENTRY reason {hardware_entry_failure_reason:#x} on CPU {cpu}"),
        VcpuExit::InternalError { suberror, data } => {
            format!("KVM_EXIT_INTERNAL_ERROR suberror {suberror} data {data:#x?}")
        }
        VcpuExit::Exception {
            exception,
            error_code,
        } => format!("KVM_EXIT_EXCEPTION {exception} error code {error_code:#x}"),
        VcpuExit::Unknown {
            hardware_exit_reason,
        } => format!("KVM_EXIT_UNKNOWN hardware reason {hardware_exit_reason:#x}"),
        VcpuExit::Other(r) => format!("exit reason {r}"),
    }
}

/// A vCPU set up by [`GuestVm::add_vcpu`], with its `kvm_run` mapping.
#[derive(Debug)]
pub struct GuestVcpu {
    /// The vCPU.
    pub vcpu: Vcpu,
    /// Its `kvm_run` page.
    pub run: RunMapping,
}

impl GuestVcpu {
    /// KVM_RUN once; a failure (any errno) fails the test.
    pub fn run(&mut self) -> Result<(), Status> {
        self.vcpu
            .run()
            .map_err(|e| Status::Fail(format!("{e} at guest RIP {}", self.rip_text())))
    }

    /// The guest's RIP as text, for failure messages.
    pub fn rip_text(&self) -> String {
        self.vcpu
            .get_regs()
            .map_or_else(|e| format!("unknown ({e})"), |r| format!("{:#x}", r.rip))
    }

    /// The last exit.
    pub fn exit(&mut self) -> VcpuExit<'_> {
        self.run.exit()
    }

    /// The ucall the last exit is, or a failure describing the exit.
    pub fn ucall_of_exit(&mut self) -> Result<Ucall, Status> {
        let code = match self.run.exit() {
            VcpuExit::Io(io)
                if io.port == UCALL_PORT
                    && io.direction == IoDirection::Out
                    && io.size == 4
                    && io.count == 1 =>
            {
                io.value()?
            }
            other => {
                let what = describe(&other);
                return Err(Status::Fail(format!(
                    "expected a ucall, got {what} at guest RIP {}",
                    self.rip_text()
                )));
            }
        };
        let r = self.vcpu.get_regs()?;
        Ok(match code {
            UCALL_DONE => Ucall::Done,
            UCALL_SYNC => Ucall::Sync([r.rbx, r.rcx, r.rsi]),
            UCALL_FAIL => Ucall::Fail {
                id: r.rbx,
                actual: r.rcx,
                expected: r.rsi,
            },
            UCALL_EXCEPTION => Ucall::Exception {
                vector: r.rbx,
                error_code: r.rcx,
                rip: r.rsi,
            },
            UCALL_IRQ => Ucall::Irq { vector: r.rbx },
            other => {
                return Err(Status::Fail(format!(
                    "unknown ucall code {other:#x} at guest RIP {:#x}",
                    r.rip
                )));
            }
        })
    }

    /// Runs until the next exit, which must be a ucall.
    pub fn ucall(&mut self) -> Result<Ucall, Status> {
        self.run()?;
        self.ucall_of_exit()
    }

    /// Runs until the next ucall, which must be `UCALL_SYNC`; its values.
    pub fn sync(&mut self) -> Result<[u64; 3], Status> {
        match self.ucall()? {
            Ucall::Sync(v) => Ok(v),
            other => Err(Status::Fail(format!("expected UCALL_SYNC, got {other}"))),
        }
    }

    /// Runs until the next ucall, which must be `UCALL_DONE`.
    pub fn done(&mut self) -> Result<(), Status> {
        match self.ucall()? {
            Ucall::Done => Ok(()),
            other => Err(Status::Fail(format!("expected UCALL_DONE, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    // userspace/clippy.toml (allow-unwrap-in-tests) is not found from here.
    #![allow(clippy::unwrap_used, reason = "host unit tests may unwrap")]

    use super::*;

    fn entry64(bytes: &[u8], index: usize) -> u64 {
        u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap())
    }

    fn tables() -> std::collections::HashMap<u64, Vec<u8>> {
        page_tables().into_iter().collect()
    }

    #[test]
    fn tables_do_not_overlap_and_fit_below_the_data() {
        let mut ranges: Vec<(u64, u64)> = page_tables()
            .iter()
            .map(|(gpa, b)| (*gpa, gpa + b.len() as u64))
            .collect();
        ranges.push((GDT_GPA, GDT_GPA + 8 * gdt().len() as u64));
        ranges.push((IDT_GPA, IDT_GPA + idt(Mode::Long).len() as u64));
        ranges.push((HANDLERS_GPA, HANDLERS_GPA + handlers64().len() as u64));
        ranges.push((HANDLERS_GPA, HANDLERS_GPA + handlers32().len() as u64));
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            let same_start = w[0].0 == w[1].0 && w[0].0 == HANDLERS_GPA;
            assert!(same_start || w[0].1 <= w[1].0, "{w:x?} overlap");
        }
        assert!(ranges.iter().all(|r| r.1 <= FIXUP_GPA.max(DATA_GPA)));
    }

    #[test]
    fn paging_maps_identity_except_the_alias() {
        let t = tables();
        let pd = &t[&PD_GPA];
        // MMIO_GPA is identity-mapped, present and writable, 2 MiB.
        let mmio = entry64(pd, usize::try_from(MMIO_GPA >> 21).unwrap());
        assert_eq!(mmio, MMIO_GPA | PTE_P | PTE_RW | PTE_PS);
        let alias = entry64(pd, usize::try_from(ALIAS_GVA >> 21).unwrap());
        assert_eq!(alias, PTE_P | PTE_RW | PTE_PS);
        // 32-bit paging has 4-byte entries: 1024 of them in one page.
        let pd32 = &t[&PD32_GPA];
        assert_eq!(pd32.len(), 4096);
        let e = |i: usize| u32::from_le_bytes(pd32[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(e(1), (1 << 22) | 0x83);
        assert_eq!(e(1023), 0x83, "the alias maps to 0");
        // PAE PDPTEs: present only (R/W is reserved there).
        let pdpt = &t[&PAE_PDPT_GPA];
        assert_eq!(entry64(pdpt, 3), (PD_GPA + 0x3000) | PTE_P);
    }

    #[test]
    fn gdt_descriptors() {
        let g = gdt();
        assert_eq!(g[Selector::Code64 as usize / 8], 0x00af_9b00_0000_ffff);
        assert_eq!(g[Selector::Data as usize / 8], 0x00cf_9300_0000_ffff);
        assert_eq!(g[Selector::Code32 as usize / 8], 0x00cf_9b00_0000_ffff);
        assert_eq!(g[Selector::Code16 as usize / 8], 0x0000_9b04_0000_ffff);
        assert_eq!(g[Selector::Tss as usize / 8], 0x0000_8b00_6000_0067);
    }

    #[test]
    fn idt_gates_point_at_the_stubs() {
        let long = idt(Mode::Long);
        assert_eq!(long.len(), 256 * 16);
        let gate = entry64(&long, 2 * 13);
        let handler = HANDLERS_GPA + 16 * 13;
        assert_eq!(gate & 0xffff, handler & 0xffff);
        assert_eq!((gate >> 16) & 0xffff, Selector::Code64 as u64);
        assert_eq!((gate >> 40) & 0xff, 0x8e);
        assert_eq!(gate >> 48, handler >> 16);
        let flat = idt(Mode::Protected32);
        assert_eq!(flat.len(), 256 * 8);
        assert_eq!((entry64(&flat, 13) >> 16) & 0xffff, Selector::Code32 as u64);
    }

    #[test]
    fn handler_stubs_are_16_bytes_apart() {
        for (code, push_imm8) in [(handlers64(), 0x6a_u8), (handlers32(), 0x6a)] {
            assert!(code.len() > 256 * 16);
            // Vector 0 pushes a dummy error code then its vector; #GP (13)
            // only its vector; vector 0x40 has a dummy error code again.
            assert_eq!(&code[0..4], &[push_imm8, 0, push_imm8, 0]);
            assert_eq!(&code[13 * 16..13 * 16 + 2], &[push_imm8, 13]);
            assert_eq!(
                &code[0x40 * 16..0x40 * 16 + 4],
                &[push_imm8, 0, push_imm8, 0x40]
            );
        }
    }
}
