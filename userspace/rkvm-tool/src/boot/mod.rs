//! `rkvm boot`: a Linux guest on the project's own device model, as
//! kvmtool and Firecracker boot one, with every device a Linux kernel
//! needs in view:
//!
//! - **Memory and firmware** ([`bzimage`], [`acpi`]): RAM from address 0,
//!   the bzImage's protected-mode kernel at 1 MiB, the zero page with the
//!   e820 memory map, the command line and the initrd; ACPI tables with a
//!   local APIC per vCPU, the IOAPIC and the power-management registers.
//!   No BIOS runs: the bootstrap vCPU starts at the kernel's 64-bit entry
//!   point in long mode (`Documentation/arch/x86/boot.rst`, "64-bit BOOT
//!   PROTOCOL").
//! - **Interrupt controllers and timer in the kernel**: `KVM_CREATE_IRQCHIP`
//!   (local APICs, IOAPIC, PICs) and `KVM_CREATE_PIT2`. The other vCPUs
//!   wait in `KVM_RUN` for the INIT and SIPI the guest sends them through
//!   its local APIC, and a halted vCPU sleeps in the kernel: rkvm sees
//!   neither.
//! - **Devices in this process** ([`platform`]): the 16550 UART on the
//!   terminal, its IRQ 4 raised and lowered with `KVM_IRQ_LINE`; ACPI's PM1
//!   registers (a write of SLP_EN is the guest powering off) and reset
//!   register, and the keyboard controller's reset line (port 0x64, 0xfe).
//!   Either ends `rkvm boot` with status 0.
//!
//! The ABI is KVM's: `--device /dev/kvm` boots the same guest on KVM.

pub(crate) mod acpi;
pub(crate) mod bzimage;
pub(crate) mod platform;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_abi::sys::{KVM_CAP_MAX_VCPUS, KVM_PIT_SPEAKER_DUMMY, kvm_regs};
use kvm_abi::{
    CpuidEntries, Errno, GuestMemory, KVM_MAX_CPUID_ENTRIES, MemoryRegion, RunMapping, Vcpu,
    VcpuExit, Vm,
};
use nix::sys::signal::Signal;
use x86_modes::{CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, PML4_GPA, RFLAGS_FIXED, page_tables};

use self::bzimage::{ENTRY_64_OFFSET, KERNEL_LOAD, Kernel, ZERO_PAGE};
use self::platform::{Platform, PlatformEffect};
use crate::machine::{open_device, run_failure, start_input, write_guest};
use crate::stats::Stats;
use crate::vcpus::{KICK, VcpuThreads, fatal_exit};
use crate::{Failure, human_size, read_file, stderr_line};

/// `rkvm boot`'s options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BootArgs {
    /// `--device`.
    pub(crate) device: PathBuf,
    /// `--kernel`: a bzImage.
    pub(crate) kernel: PathBuf,
    /// `--initrd`.
    pub(crate) initrd: Option<PathBuf>,
    /// `--append`: the kernel command line.
    pub(crate) append: String,
    /// `--cpus`.
    pub(crate) cpus: u32,
    /// `--mem`, in bytes.
    pub(crate) mem: u64,
    /// `--trace`.
    pub(crate) trace: bool,
    /// `--stats`.
    pub(crate) stats: bool,
}

/// The command line when `--append` is not given: the console on the
/// UART, and a panic that ends the VM instead of hanging it.
pub(crate) const DEFAULT_APPEND: &str = "console=ttyS0 panic=-1";
/// Guest memory when `--mem` is not given.
pub(crate) const DEFAULT_MEM: u64 = 256 << 20;
/// The least memory `rkvm boot` accepts: a kernel decompresses at 16 MiB.
pub(crate) const MIN_MEM: u64 = 32 << 20;

/// Where the boot GDT goes: its descriptors at the selectors the 64-bit
/// boot protocol names, `__BOOT_CS` (0x10) and `__BOOT_DS` (0x18).
const BOOT_GDT: u64 = 0x500;
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
/// Where KVM may put the TSS it needs for real mode on Intel CPUs without
/// unrestricted guest (KVM_SET_TSS_ADDR; three pages, QEMU's address).
const TSS_ADDR: u64 = 0xfeff_d000;
/// How often queued terminal input is offered to the UART again.
const INPUT_PACE: Duration = Duration::from_millis(10);
/// The boot GDT: null, unused, 64-bit code at 0x10, flat data at 0x18
/// (SDM Vol. 3A 3.4.5; access 0x9b code, 0x93 data; flags G|L and G|D/B).
fn boot_gdt() -> Vec<u8> {
    [0u64, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect()
}

/// Sets vCPU `id`'s APIC ID in its CPUID, as the MADT gives it: leaf 1
/// EBX[31:24] and the x2APIC ID of leaves 0xB and 0x1F (EDX).
fn cpuid_for(supported: &CpuidEntries, id: u32) -> Result<CpuidEntries, Failure> {
    let mut entries = supported.entries().to_vec();
    for e in &mut entries {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | (id << 24),
            0xb | 0x1f => e.edx = id,
            _ => {}
        }
    }
    CpuidEntries::from_entries(&entries).map_err(|e| Failure::Env(e.to_string()))
}

/// Puts the bootstrap vCPU at the kernel's 64-bit entry: long mode with
/// the identity map of `x86-modes`, CS and DS from the boot GDT, RSI at
/// the zero page, interrupts off.
fn start_bsp(vcpu: &Vcpu) -> Result<(), Failure> {
    let env = |e: kvm_abi::Error| Failure::Env(e.to_string());
    let mut s = vcpu.get_sregs().map_err(env)?;
    x86_modes::setup_sregs(&mut s, x86_modes::Mode::Long);
    s.cs.selector = BOOT_CS;
    for seg in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
        seg.selector = BOOT_DS;
    }
    s.gdt.base = BOOT_GDT;
    s.gdt.limit = u16::try_from(boot_gdt().len() - 1).unwrap_or(0);
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 |= CR0_PE | CR0_PG;
    s.cr3 = PML4_GPA;
    s.cr4 |= CR4_PAE;
    s.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&s).map_err(env)?;
    vcpu.set_regs(&kvm_regs {
        rip: KERNEL_LOAD + ENTRY_64_OFFSET,
        rsi: ZERO_PAGE,
        rflags: RFLAGS_FIXED,
        ..Default::default()
    })
    .map_err(env)
}

/// Copies everything the guest starts with into its memory: the boot GDT
/// and page tables, the ACPI tables, the zero page, the command line, the
/// kernel and the initrd.
fn load(
    args: &BootArgs,
    mem: &GuestMemory,
    kernel: &Kernel<'_>,
    initrd: Option<&[u8]>,
) -> Result<(), Failure> {
    let write = |gpa: u64, bytes: &[u8]| write_guest(mem, gpa, bytes);
    write(BOOT_GDT, &boot_gdt())?;
    for (gpa, bytes) in page_tables() {
        write(gpa, &bytes)?;
    }
    for (gpa, bytes) in acpi::tables(args.cpus) {
        write(gpa, &bytes)?;
    }
    let initrd_at = match initrd {
        Some(rd) => {
            let len = rd.len() as u64;
            let at = kernel.initrd_address(len, args.mem).ok_or_else(|| {
                Failure::Usage(format!(
                    "the initrd ({}) does not fit in {} of guest memory above the kernel: give \
                     more --mem",
                    human_size(len),
                    human_size(args.mem)
                ))
            })?;
            write(at, rd)?;
            Some((at, len))
        }
        None => None,
    };
    let zero_page = kernel
        .zero_page(initrd_at, &bzimage::memory_map(args.mem), acpi::TABLES)
        .map_err(Failure::Env)?;
    write(ZERO_PAGE, &zero_page)?;
    let mut cmdline = args.append.as_bytes().to_vec();
    cmdline.push(0);
    write(bzimage::CMDLINE, &cmdline)?;
    write(KERNEL_LOAD, kernel.image)
}

/// What the vCPU threads share.
struct Shared<'a> {
    platform: &'a Platform,
    /// The threads' common state: stop, failure, trace, kicking.
    vcpus: VcpuThreads,
}

/// Runs vCPU `id` until the machine stops; its statistics.
fn vcpu_loop(sh: &Shared<'_>, id: u32, vcpu: &Vcpu, run: &mut RunMapping) -> Stats {
    let mut stats = Stats::default();
    while !sh.vcpus.stopping() {
        let t0 = Instant::now();
        let r = vcpu.run();
        let in_run = t0.elapsed();
        let t1 = Instant::now();
        match r {
            Ok(()) => {}
            Err(e) if e.errno() == Errno::EINTR => {
                stats.add("KVM_EXIT_INTR", in_run, t1.elapsed());
                continue;
            }
            // A vCPU that waited for its SIPI comes back with EAGAIN once
            // the SIPI arrives (KVM's kvm_arch_vcpu_ioctl_run, which QEMU
            // retries too): it starts at the SIPI's vector on the next run.
            Err(e) if e.errno() == Errno::EAGAIN => {
                sh.vcpus
                    .trace(id, "KVM_RUN returned EAGAIN: the vCPU received its SIPI");
                continue;
            }
            Err(e) => {
                sh.vcpus.fail(run_failure(id, e, vcpu));
                break;
            }
        }
        let mut effect = PlatformEffect::None;
        let reason = match run.exit() {
            VcpuExit::Io(mut io) => {
                let Some(e) = sh.vcpus.port_io(
                    id,
                    &mut io,
                    |port, bytes| sh.platform.io_out(port, bytes),
                    |port, size| sh.platform.io_in(port, size),
                ) else {
                    break;
                };
                effect = e;
                "KVM_EXIT_IO"
            }
            VcpuExit::Mmio(mut m) => {
                // Every device this machine has on the memory bus is in
                // the kernel (local APICs, IOAPIC): nothing is here.
                if !m.is_write {
                    if let Err(e) = m.set_value(u64::MAX) {
                        sh.vcpus.crash(format!("vCPU {id}: {e}"));
                        break;
                    }
                }
                sh.vcpus.trace(
                    id,
                    &format!(
                        "KVM_EXIT_MMIO {} {:#x} size {} | no device here: {}",
                        if m.is_write { "write" } else { "read " },
                        m.phys_addr,
                        m.len,
                        if m.is_write {
                            "the write is ignored"
                        } else {
                            "reads as all ones"
                        }
                    ),
                );
                "KVM_EXIT_MMIO"
            }
            VcpuExit::Intr => "KVM_EXIT_INTR",
            other => {
                sh.vcpus.crash(fatal_exit(id, &other, vcpu));
                break;
            }
        };
        stats.add(reason, in_run, t1.elapsed());
        match effect {
            PlatformEffect::None => {}
            PlatformEffect::PowerOff => {
                sh.vcpus.trace(id, "the guest powered the machine off");
                sh.vcpus.stop();
            }
            PlatformEffect::Reset => {
                // Said always: a guest kernel that panics with the default
                // panic=-1 resets too, which must not pass for a power-off.
                stderr_line(&format!(
                    "rkvm: the guest reset the machine (vCPU {id}): rkvm boot ends"
                ));
                sh.vcpus.stop();
            }
        }
    }
    stats
}

/// The terminal's settings while the guest owns it: no line editing and
/// no echo (the guest's shell does both), no ^S/^Q flow control, signals
/// kept so ^C ends rkvm.
/// Dropping it puts the old settings back.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> Self {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Self(None);
        }
        let Ok(old) = tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = old.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        // ^S and ^Q are the guest's too.
        raw.input_flags.remove(nix::sys::termios::InputFlags::IXON);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return Self(None);
        }
        Self(Some(old))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                old,
            );
        }
    }
}

/// `rkvm boot`: the process exit status.
pub(crate) fn boot(args: &BootArgs) -> Result<u8, Failure> {
    let file = read_file("kernel image", &args.kernel)?;
    let kernel = Kernel::parse(&file)
        .map_err(|e| Failure::Env(format!("{}: {e}", args.kernel.display())))?;
    kernel
        .check_cmdline(&args.append)
        .map_err(|e| Failure::Usage(format!("--append: {e}")))?;
    if kernel.end() > args.mem {
        return Err(Failure::Usage(format!(
            "the kernel needs memory up to {} MiB while it starts; --mem {} is too little",
            kernel.end().div_ceil(1 << 20),
            human_size(args.mem)
        )));
    }
    let initrd = match &args.initrd {
        Some(p) => Some(read_file("initrd", p)?),
        None => None,
    };
    let env = |e: kvm_abi::Error| Failure::Env(e.to_string());
    let sys = open_device(&args.device)?;
    let max = sys.check_extension(KVM_CAP_MAX_VCPUS).map_err(env)?;
    if i64::from(args.cpus) > i64::from(max) {
        return Err(Failure::Env(format!(
            "--cpus {}: {} allows at most {max} vCPUs per VM",
            args.cpus,
            args.device.display()
        )));
    }
    let vm: Vm = sys.create_vm(0).map_err(env)?;
    vm.set_tss_addr(TSS_ADDR).map_err(env)?;
    vm.create_irqchip().map_err(env)?;
    // With the speaker port (0x61) in the kernel too, as QEMU asks: Linux
    // gates PIT channel 2 through it to calibrate the TSC.
    vm.create_pit2(KVM_PIT_SPEAKER_DUMMY).map_err(env)?;
    let len = usize::try_from(args.mem).map_err(|_| Failure::Usage("--mem too large".into()))?;
    let mem = Arc::new(GuestMemory::new(len).map_err(|e| {
        Failure::Env(format!(
            "cannot allocate {} of guest memory: {e}",
            human_size(args.mem)
        ))
    })?);
    vm.set_user_memory_region(&MemoryRegion::new(0, 0, &mem))
        .map_err(env)?;
    load(args, &mem, &kernel, initrd.as_deref())?;
    let mut supported = CpuidEntries::new(KVM_MAX_CPUID_ENTRIES).map_err(env)?;
    sys.get_supported_cpuid(&mut supported).map_err(env)?;
    let mmap_size = sys.vcpu_mmap_size().map_err(env)?;
    let mut vcpus = Vec::new();
    for id in 0..args.cpus {
        let vcpu = vm.create_vcpu(u64::from(id)).map_err(env)?;
        vcpu.set_cpuid2(&cpuid_for(&supported, id)?).map_err(env)?;
        if id == 0 {
            start_bsp(&vcpu)?;
        }
        let run = vcpu.map_run(mmap_size).map_err(env)?;
        vcpus.push((vcpu, run));
    }
    kvm_abi::process::interrupt_syscalls_with(KICK)
        .map_err(|e| Failure::Env(format!("cannot install the kick signal handler: {e}")))?;
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        kvm_abi::process::note_signal(sig)
            .map_err(|e| Failure::Env(format!("cannot install the {sig} handler: {e}")))?;
    }
    let vm = Arc::new(vm);
    let platform = Arc::new(Platform::new(
        Arc::clone(&vm) as Arc<dyn platform::IrqLine>,
        Box::new(std::io::stdout()),
    ));
    if args.trace {
        stderr_line(&format!(
            "rkvm: Linux {} (boot protocol {}.{:02}), {} vCPU{}, {} of memory, on {}; \
             command line {:?}",
            args.kernel.display(),
            kernel.version.0,
            kernel.version.1,
            args.cpus,
            if args.cpus == 1 { "" } else { "s" },
            human_size(args.mem),
            args.device.display(),
            args.append
        ));
    }
    let terminal = RawTerminal::enter();
    {
        let p = Arc::clone(&platform);
        start_input(move |bytes| {
            p.receive(bytes);
            // The rest follows as the guest takes it, at a terminal's pace
            // (stdin is not read meanwhile: the pipe or tty holds it).
            while p.pump() {
                std::thread::sleep(INPUT_PACE);
            }
        });
    }
    let shared = Shared {
        platform: &platform,
        vcpus: VcpuThreads::new(vcpus.len(), args.trace),
    };
    let sh = &shared;
    // The kicker stops the machine on SIGINT or SIGTERM too (^C on the
    // terminal, which rkvm boot leaves generating signals): the terminal
    // gets its settings back, and rkvm boot exits with status 130.
    let total = sh.vcpus.run_all(
        &mut vcpus,
        |id, (vcpu, run)| vcpu_loop(sh, id, vcpu, run),
        || sh.vcpus.kicker(|_| false, || false),
    );
    drop(terminal);
    shared.vcpus.finish(&total, args.stats, args.cpus)?;
    if kvm_abi::process::signal_noted() {
        // As a shell reports a command a signal ended: 128 + SIGINT.
        stderr_line("rkvm: interrupted: the guest was stopped");
        return Ok(130);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_gdt_has_the_selectors_the_protocol_names() {
        let gdt = boot_gdt();
        let desc = |sel: u16| {
            let o = usize::from(sel);
            u64::from_le_bytes(gdt[o..o + 8].try_into().unwrap())
        };
        // 64-bit code: present, DPL 0, code, L = 1.
        let cs = desc(BOOT_CS);
        assert_eq!((cs >> 40) & 0xff, 0x9b);
        assert_eq!((cs >> 53) & 1, 1, "L");
        // Flat read/write data, 4 GiB.
        let ds = desc(BOOT_DS);
        assert_eq!((ds >> 40) & 0xff, 0x93);
        assert_eq!((ds >> 55) & 1, 1, "G");
    }
}
