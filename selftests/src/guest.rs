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
//! `UCALL_*` codes), together with three assembler macros:
//!
//! - `ucall CODE`: `OUT` of `CODE` (in `%eax`) to [`UCALL_PORT`]; the host
//!   reads the arguments from `%rbx`, `%rcx` and `%rsi`. Clobbers `%eax`
//!   and `%edx`.
//! - `enable_sse`: turns SSE on (CR4.OSFXSR set, CR0.EM clear, CR0.MP
//!   set; SDM Vol. 3A 13.1.3), in 64-bit code. Clobbers `%rax`.
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
use kvm_abi::sys::{kvm_cpuid_entry2, kvm_regs};
use kvm_abi::{
    CpuidEntries, GuestMemory, IoDirection, KVM_MAX_CPUID_ENTRIES, MemoryRegion, RunMapping, Vcpu,
    VcpuExit, Vm,
};

pub use x86_modes::{
    ALIAS_GVA, CODE_GPA, DATA_GPA, GDT_GPA, IDT_GPA, Mode, RFLAGS_FIXED, RFLAGS_IF, STACK_TOP,
    Selector, TABLES_END,
};
use x86_modes::{gdt_bytes, page_tables, setup_sregs};

use crate::Ctx;

/// Size of slot 0, at guest-physical 0.
pub const MEM_SIZE: usize = 2 << 20;
// The mode tables (GDT, IDT, TSS, page tables) are laid out by the
// `x86-modes` crate; this library adds the handlers, the fixup word and
// the stacks.
/// The interrupt handlers: 256 entry stubs of 16 bytes, then common code.
pub const HANDLERS_GPA: u64 = 0x3000;
/// Where guest code stores the address an exception handler resumes at.
pub const FIXUP_GPA: u64 = 0x5000;
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
            ".macro enable_sse",
            "    mov %cr4, %rax",
            "    or $0x200, %eax",
            "    mov %rax, %cr4",
            "    mov %cr0, %rax",
            "    and $~4, %eax",
            "    or $2, %eax",
            "    mov %rax, %cr0",
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
            ".purgem assert_eq",
            ".purgem enable_sse";
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

/// The Hyper-V leaves of `KVM_GET_SUPPORTED_HV_CPUID` on the device.
pub fn supported_hv_cpuid(ctx: &Ctx) -> Result<Vec<kvm_cpuid_entry2>, Status> {
    let mut cpuid = CpuidEntries::new(64)?;
    ctx.sys.get_supported_hv_cpuid(&mut cpuid)?;
    Ok(cpuid.entries().to_vec())
}

/// The CPUID table a VMM gives a Hyper-V guest (as Linux's
/// `vcpu_set_hv_cpuid`): the supported table without KVM's leaves
/// 0x4000_00xx, then the Hyper-V leaves.
pub fn hyper_v_cpuid(ctx: &Ctx, vm: &GuestVm) -> Result<CpuidEntries, Status> {
    let mut table: Vec<_> = vm
        .cpuid
        .iter()
        .filter(|e| !(0x4000_0000..0x4000_0100).contains(&e.function))
        .copied()
        .collect();
    table.extend(supported_hv_cpuid(ctx)?);
    Ok(CpuidEntries::from_entries(&table)?)
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
    pub cpuid: Vec<kvm_cpuid_entry2>,
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
        gvm.write(GDT_GPA, &gdt_bytes())?;
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
        VcpuExit::IoapicEoi { vector } => format!("KVM_EXIT_IOAPIC_EOI vector {vector:#x}"),
        VcpuExit::Debug {
            exception,
            pc,
            dr6,
            dr7,
        } => format!("KVM_EXIT_DEBUG vector {exception} at {pc:#x}, DR6 {dr6:#x}, DR7 {dr7:#x}"),
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

    #[test]
    fn tables_do_not_overlap_and_fit_below_the_data() {
        let mut ranges: Vec<(u64, u64)> = page_tables()
            .iter()
            .map(|(gpa, b)| (*gpa, gpa + b.len() as u64))
            .collect();
        ranges.push((GDT_GPA, GDT_GPA + gdt_bytes().len() as u64));
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
