//! `rkvm run`: a VM with one memory slot, the guest image copied in, one
//! thread per vCPU running KVM_RUN in a loop, and every exit handed to the
//! devices. This is the part of a VMM that kvmtool's or Firecracker's vCPU
//! loop is.
//!
//! Interrupts without an in-kernel interrupt controller work the way
//! `Documentation/virt/kvm/api.rst` describes for KVM_INTERRUPT: when the
//! tick timer is due, the vCPU thread injects the vector if
//! `ready_for_interrupt_injection` says the guest can take it, and
//! otherwise sets `request_interrupt_window` and injects at the
//! `KVM_EXIT_IRQ_WINDOW_OPEN` that follows. A guest that is running when a
//! tick is due is kicked out of KVM_RUN with a signal (`EINTR`); a guest
//! that halted waits in rkvm until the tick.

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_abi::sys::{kvm_regs, kvm_sregs};
use kvm_abi::{
    CpuidEntries, Errno, GuestMemory, KVM_MAX_CPUID_ENTRIES, MemoryRegion, RunMapping, System,
    Vcpu, VcpuExit, Vm,
};
use x86_modes::{
    CR0_MP, CR4_OSFXSR, CR4_OSXMMEXCPT, GDT_GPA, Mode, RFLAGS_FIXED, TABLES_END, gdt_bytes,
    page_tables, real_segment, setup_sregs,
};

use crate::args::{GuestMode, RunArgs};
use crate::devices::{Devices, Effect, TIMER_VECTOR};
use crate::loader::{self, Image, ImageKind};
use crate::stats::Stats;
use crate::vcpus::{KICK, VcpuThreads, fatal_exit, lock};
use crate::{Failure, human_size, read_file, stderr_line};

/// Where a flat binary goes in protected and long mode by default.
pub(crate) const DEFAULT_LOAD: u64 = 0x10_0000;
/// Where a flat binary goes in real mode by default (CS is based there).
pub(crate) const DEFAULT_LOAD_REAL: u64 = 0x2_0000;
/// Each vCPU's initial stack: vCPU `n`'s RSP is the top of memory (below
/// 4 GiB) less `n` times this.
pub(crate) const STACK_PER_VCPU: u64 = 0x1_0000;

/// A VM made by [`create_vm`]: the device, the VM and its memory.
pub(crate) struct GuestVm {
    /// The VM.
    pub(crate) vm: Vm,
    /// Slot 0, at guest-physical 0.
    pub(crate) mem: Arc<GuestMemory>,
    /// KVM_GET_SUPPORTED_CPUID.
    pub(crate) cpuid: CpuidEntries,
    /// KVM_GET_VCPU_MMAP_SIZE.
    pub(crate) mmap_size: usize,
}

/// Opens `device`, with the errors a user can act on.
pub(crate) fn open_device(device: &std::path::Path) -> Result<System, Failure> {
    System::open(device)
        .map_err(|e| Failure::Env(device_error(&device.display().to_string(), e.errno())))
}

/// What to tell the user when `device` cannot be opened with `errno`.
fn device_error(device: &str, errno: Errno) -> String {
    match errno {
        Errno::ENOENT | Errno::ENODEV | Errno::ENXIO => format!(
            "{device} does not exist: load the module (insmod rkvm.ko, or modprobe kvm_amd / \
             kvm_intel for /dev/kvm) or pass --device"
        ),
        Errno::EACCES | Errno::EPERM => {
            format!("permission denied opening {device}: run as root or give yourself access to it")
        }
        other => format!("cannot open {device}: {}", other.desc()),
    }
}

/// Creates a VM with `mem` bytes at guest-physical 0 holding the GDT and
/// page tables of `x86-modes`.
pub(crate) fn create_vm(sys: System, mem: u64) -> Result<GuestVm, Failure> {
    let env = |e: kvm_abi::Error| Failure::Env(e.to_string());
    let vm = sys.create_vm(0).map_err(env)?;
    let len = usize::try_from(mem).map_err(|_| Failure::Usage("--mem too large".into()))?;
    let mem = Arc::new(GuestMemory::new(len).map_err(|e| {
        Failure::Env(format!(
            "cannot allocate {} of guest memory: {e}",
            human_size(mem)
        ))
    })?);
    vm.set_user_memory_region(&MemoryRegion::new(0, 0, &mem))
        .map_err(env)?;
    let write = |gpa: u64, bytes: &[u8]| write_guest(&mem, gpa, bytes);
    write(GDT_GPA, &gdt_bytes())?;
    for (gpa, bytes) in page_tables() {
        write(gpa, &bytes)?;
    }
    let mut cpuid = CpuidEntries::new(KVM_MAX_CPUID_ENTRIES).map_err(env)?;
    sys.get_supported_cpuid(&mut cpuid).map_err(env)?;
    let mmap_size = sys.vcpu_mmap_size().map_err(env)?;
    Ok(GuestVm {
        vm,
        mem,
        cpuid,
        mmap_size,
    })
}

impl GuestVm {
    /// Creates vCPU `id` in `mode`, at `entry` with `rsp`, the way a KVM
    /// client does: CPUID first (KVM refuses long mode before it), then the
    /// segment and control registers, then the general registers.
    pub(crate) fn add_vcpu(
        &self,
        id: u32,
        mode: GuestMode,
        entry: u64,
        rsp: u64,
    ) -> Result<(Vcpu, RunMapping), Failure> {
        let env = |e: kvm_abi::Error| Failure::Env(e.to_string());
        let vcpu = self.vm.create_vcpu(u64::from(id)).map_err(env)?;
        vcpu.set_cpuid2(&self.cpuid).map_err(env)?;
        let mut sregs = vcpu.get_sregs().map_err(env)?;
        let regs = match mode {
            GuestMode::Real => {
                setup_sregs(&mut sregs, Mode::Real);
                // Every segment starts at the load address: CS:IP = load:0.
                sregs.cs = real_segment(entry, true);
                sregs.ds = real_segment(entry, false);
                sregs.es = sregs.ds;
                sregs.fs = sregs.ds;
                sregs.gs = sregs.ds;
                sregs.ss = sregs.ds;
                kvm_regs {
                    rip: 0,
                    rsp: 0xfff0 - u64::from(id) * 0x1000,
                    ..Default::default()
                }
            }
            GuestMode::Protected | GuestMode::Long => {
                setup_sregs(
                    &mut sregs,
                    if mode == GuestMode::Long {
                        Mode::Long
                    } else {
                        Mode::Protected32
                    },
                );
                // SSE on, as an operating system would set it up (compiled
                // guests use SSE registers); no IDT until the guest loads
                // one, so an exception is a triple fault.
                sregs.cr0 |= CR0_MP;
                sregs.cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
                sregs.idt.base = 0;
                sregs.idt.limit = 0;
                kvm_regs {
                    rip: entry,
                    rsp,
                    rsi: self.mem.len() as u64,
                    ..Default::default()
                }
            }
        };
        vcpu.set_sregs(&sregs).map_err(env)?;
        vcpu.set_regs(&kvm_regs {
            rdi: u64::from(id),
            rflags: RFLAGS_FIXED,
            ..regs
        })
        .map_err(env)?;
        let run = vcpu.map_run(self.mmap_size).map_err(env)?;
        Ok((vcpu, run))
    }
}

/// Copies `bytes` into guest memory at `gpa`.
pub(crate) fn write_guest(mem: &GuestMemory, gpa: u64, bytes: &[u8]) -> Result<(), Failure> {
    usize::try_from(gpa)
        .map_err(|_| Errno::EFAULT)
        .and_then(|o| mem.write(o, bytes).map_err(|e| e.errno()))
        .map_err(|e| Failure::Env(format!("writing guest memory at {gpa:#x}: {}", e.desc())))
}

/// What a failed `KVM_RUN` of vCPU `id` means for the user. `ENOMEM`
/// under a finite locked-memory limit, without `CAP_IPC_LOCK`, is rkvm's
/// pinned guest memory meeting that limit (rkvm pins each page the guest
/// touches and counts it against the owner's `RLIMIT_MEMLOCK`, as VFIO
/// does; KVM does not pin): a limit of the environment (125), with how to
/// lift it. Anything else, another `ENOMEM` too, is a crash (126),
/// reported with the registers.
pub(crate) fn run_failure(id: u32, e: kvm_abi::Error, vcpu: &Vcpu) -> Failure {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    if e.errno() == Errno::ENOMEM && !has_cap_ipc_lock() {
        if let Ok((limit, _)) = getrlimit(Resource::RLIMIT_MEMLOCK) {
            if limit != RLIM_INFINITY {
                return Failure::Env(format!(
                    "vCPU {id}: {e}: the guest's memory could not be pinned: rkvm counts the \
                     guest memory it maps against the locked-memory limit (ulimit -l, now {} \
                     KiB); raise it, give the guest less memory, or run with CAP_IPC_LOCK \
                     (docs/abi.md)",
                    limit >> 10
                ));
            }
        }
    }
    Failure::Guest(format!("vCPU {id}: {e}\n{}", register_dump(vcpu)))
}

/// Whether this process has `CAP_IPC_LOCK` in its effective set (bit 14
/// of `CapEff` in `/proc/self/status`), which exempts it from
/// `RLIMIT_MEMLOCK`.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|caps| caps >> CAP_IPC_LOCK & 1 == 1)
    })
}

/// The registers of `vcpu`, for a crash report.
pub(crate) fn register_dump(vcpu: &Vcpu) -> String {
    let Ok(r) = vcpu.get_regs() else {
        return "  (registers unavailable)".into();
    };
    let s = vcpu.get_sregs().unwrap_or_else(|_| kvm_sregs::default());
    let mut d = String::new();
    if r.rip == 0xfff0 && s.cs.base == 0xffff_0000 {
        // KVM's svm.c, shutdown_interception(): the VMCB is undefined
        // after a shutdown, so the vCPU is re-initialised; rkvm does the
        // same. (On VMX the state at the fault stays.)
        d += "  (these are the vCPU's reset values: on AMD SVM the hypervisor re-initialises a \
              vCPU after a triple fault, so its state at the fault is lost; --trace shows the \
              exits before it)\n";
    }
    d += &format!(
        "  rip {:016x}  rsp {:016x}  rflags {:08x}\n\
         \x20 rax {:016x}  rbx {:016x}  rcx {:016x}  rdx {:016x}\n\
         \x20 rsi {:016x}  rdi {:016x}  rbp {:016x}\n\
         \x20 r8  {:016x}  r9  {:016x}  r10 {:016x}  r11 {:016x}\n\
         \x20 r12 {:016x}  r13 {:016x}  r14 {:016x}  r15 {:016x}\n",
        r.rip,
        r.rsp,
        r.rflags,
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rbp,
        r.r8,
        r.r9,
        r.r10,
        r.r11,
        r.r12,
        r.r13,
        r.r14,
        r.r15
    );
    d += &format!(
        "  cr0 {:08x}  cr2 {:016x}  cr3 {:016x}  cr4 {:08x}  efer {:x}\n",
        s.cr0, s.cr2, s.cr3, s.cr4, s.efer
    );
    d += &format!(
        "  cs {:04x} (base {:x}, l {}, d {})  ss {:04x}  idt {:x}/{:x}  gdt {:x}/{:x}",
        s.cs.selector,
        s.cs.base,
        s.cs.l,
        s.cs.db,
        s.ss.selector,
        s.idt.base,
        s.idt.limit,
        s.gdt.base,
        s.gdt.limit
    );
    d
}

/// Reads and loads the guest file: the image, the mode and the check that
/// it fits.
fn load_guest(args: &RunArgs) -> Result<(Image, GuestMode), Failure> {
    let path = args.guest.display();
    let bytes = read_file("guest file", &args.guest)?;
    let image = if loader::is_elf(&bytes) {
        if args.load.is_some() {
            return Err(Failure::Usage(format!(
                "--load is for flat binaries; {path} is ELF and says where it goes"
            )));
        }
        loader::elf(&bytes).map_err(|e| Failure::Env(format!("{path}: {e}")))?
    } else {
        let real = args.mode == Some(GuestMode::Real);
        let load = args.load.unwrap_or(if real {
            DEFAULT_LOAD_REAL
        } else {
            DEFAULT_LOAD
        });
        loader::flat(&bytes, load)
    };
    let mode = args.mode.unwrap_or(match image.kind {
        ImageKind::Elf32 => GuestMode::Protected,
        ImageKind::Flat | ImageKind::Elf64 => GuestMode::Long,
    });
    if mode == GuestMode::Real {
        if image.kind != ImageKind::Flat {
            return Err(Failure::Usage(
                "real mode runs flat binaries only (CS:IP = load address:0)".into(),
            ));
        }
        let size = image.segments.iter().map(|s| s.1.len()).sum::<usize>() as u64;
        if image.entry % 16 != 0 || image.entry + size.max(0x1_0000) > 0x10_0000 {
            return Err(Failure::Usage(format!(
                "--load {:#x}: in real mode give a multiple of 16 with 64 KiB below 1 MiB",
                image.entry
            )));
        }
    }
    image
        .check_fits(TABLES_END, args.mem)
        .map_err(|e| Failure::Usage(format!("{path}: {e}")))?;
    Ok((image, mode))
}

/// What the vCPU threads share.
struct Shared {
    devices: Devices,
    /// The threads' common state: stop, failure, trace, kicking.
    vcpus: VcpuThreads,
    /// The exit status the guest asked for, first one wins.
    status: Mutex<Option<u8>>,
    /// Each vCPU's next timer tick, in nanoseconds since the start (0: none).
    deadlines: Vec<AtomicU64>,
}

/// The per-vCPU tick timer's state.
struct Timer {
    period: Duration,
    next: Instant,
}

/// How a vCPU thread ended.
enum End {
    /// The machine was stopped (exit port or another vCPU's crash).
    Stopped,
    /// The guest halted with nothing left to wake it.
    Halted,
}

/// Runs vCPU `id` until the machine stops; its statistics.
fn vcpu_loop(sh: &Shared, id: u32, vcpu: &Vcpu, run: &mut RunMapping) -> Stats {
    let mut stats = Stats::default();
    let mut timer: Option<Timer> = None;
    let mut irq_pending = false;
    let slot = id as usize;
    let end = loop {
        if sh.vcpus.stopping() {
            break End::Stopped;
        }
        if let Some(t) = timer.as_mut() {
            let now = Instant::now();
            if now >= t.next {
                irq_pending = true;
                t.next = (t.next + t.period).max(now + t.period / 2);
                sh.deadlines[slot].store(sh.vcpus.since_start(t.next), Ordering::SeqCst);
            }
        }
        if irq_pending {
            if run.ready_for_interrupt_injection() {
                if let Err(e) = vcpu.interrupt(TIMER_VECTOR) {
                    sh.vcpus.crash(format!("vCPU {id}: {e}"));
                    break End::Stopped;
                }
                sh.vcpus.trace(
                    id,
                    &format!(
                        "KVM_INTERRUPT vector {TIMER_VECTOR} (timer tick; delivered on entry)"
                    ),
                );
                irq_pending = false;
                run.set_request_interrupt_window(false);
            } else if !run.request_interrupt_window() {
                sh.vcpus.trace(
                    id,
                    "timer tick: guest cannot take it now, request_interrupt_window = 1",
                );
                run.set_request_interrupt_window(true);
            }
        }
        let t0 = Instant::now();
        let r = vcpu.run();
        let in_run = t0.elapsed();
        let t1 = Instant::now();
        match r {
            Ok(()) => {}
            Err(e) if e.errno() == Errno::EINTR => {
                sh.vcpus.trace(
                    id,
                    "KVM_EXIT_INTR       KVM_RUN returned EINTR: kicked by a signal",
                );
                stats.add("KVM_EXIT_INTR", in_run, t1.elapsed());
                continue;
            }
            Err(e) => {
                sh.vcpus.fail(run_failure(id, e, vcpu));
                break End::Stopped;
            }
        }
        let exit = run.exit();
        let mut effect = Effect::None;
        let reason: &'static str = match exit {
            VcpuExit::Io(mut io) => {
                let Some(e) = sh.vcpus.port_io(
                    id,
                    &mut io,
                    |port, bytes| sh.devices.io_out(port, bytes),
                    |port, size| sh.devices.io_in(port, size),
                ) else {
                    break End::Stopped;
                };
                effect = e;
                "KVM_EXIT_IO"
            }
            VcpuExit::Mmio(mut m) => {
                let a = if m.is_write {
                    sh.devices.mmio_write(m.phys_addr, m.data())
                } else {
                    let a = sh.devices.mmio_read(m.phys_addr, m.len);
                    if let Err(e) = m.set_value(a.data) {
                        sh.vcpus.crash(format!("vCPU {id}: {e}"));
                        break End::Stopped;
                    }
                    a
                };
                if sh.vcpus.tracing {
                    let value = if m.is_write { m.value() } else { a.data };
                    sh.vcpus.trace(
                        id,
                        &format!(
                            "KVM_EXIT_MMIO       {} {:#x} size {} data {value:#x} | {}",
                            if m.is_write { "write" } else { "read " },
                            m.phys_addr,
                            m.len,
                            a.note
                        ),
                    );
                }
                "KVM_EXIT_MMIO"
            }
            VcpuExit::Hlt => {
                let Some(t) = timer.as_ref() else {
                    sh.vcpus.trace(
                        id,
                        "KVM_EXIT_HLT        no timer running: the vCPU stops here",
                    );
                    stats.add("KVM_EXIT_HLT", in_run, t1.elapsed());
                    break End::Halted;
                };
                let wait = t.next.saturating_duration_since(Instant::now());
                sh.vcpus.trace(
                    id,
                    &format!(
                        "KVM_EXIT_HLT        waits {} for the next timer tick",
                        crate::stats::human_time(wait)
                    ),
                );
                std::thread::sleep(wait);
                "KVM_EXIT_HLT"
            }
            VcpuExit::IrqWindowOpen => {
                sh.vcpus.trace(
                    id,
                    "KVM_EXIT_IRQ_WINDOW_OPEN  the guest can take the interrupt now",
                );
                "KVM_EXIT_IRQ_WINDOW_OPEN"
            }
            VcpuExit::Intr => "KVM_EXIT_INTR",
            other => {
                sh.vcpus.crash(fatal_exit(id, &other, vcpu));
                break End::Stopped;
            }
        };
        stats.add(reason, in_run, t1.elapsed());
        match effect {
            Effect::None => {}
            Effect::Exit(status) => {
                lock(&sh.status).get_or_insert(status);
                sh.vcpus.stop();
            }
            Effect::Timer(0) => {
                timer = None;
                sh.deadlines[slot].store(0, Ordering::SeqCst);
            }
            Effect::Timer(us) => {
                let period = Duration::from_micros(u64::from(us));
                let next = Instant::now() + period;
                timer = Some(Timer { period, next });
                sh.deadlines[slot].store(sh.vcpus.since_start(next), Ordering::SeqCst);
            }
        }
    };
    sh.deadlines[slot].store(0, Ordering::SeqCst);
    if matches!(end, End::Halted) {
        sh.vcpus.trace(id, "halted");
    }
    stats
}

/// The kicker: every vCPU thread once the machine stops, and before that
/// those whose timer tick is due.
fn kicker(sh: &Shared) {
    sh.vcpus.kicker(
        |i| {
            let deadline = sh.deadlines[i].load(Ordering::SeqCst);
            deadline != 0 && sh.vcpus.since_start(Instant::now()) >= deadline
        },
        || sh.deadlines.iter().any(|d| d.load(Ordering::SeqCst) != 0),
    );
}

/// Starts the thread that reads stdin and hands each chunk to `deliver`
/// (the serial port's input), until end of file.
pub(crate) fn start_input(mut deliver: impl FnMut(&[u8]) + Send + 'static) {
    // Detached: it blocks in read() and ends with the process.
    let _ = std::thread::Builder::new()
        .name("serial-input".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                deliver(&buf[..n]);
            }
        });
}

/// `rkvm run`: the process exit status.
pub(crate) fn run(args: &RunArgs) -> Result<u8, Failure> {
    let (image, mode) = load_guest(args)?;
    let sys = open_device(&args.device)?;
    let gvm = create_vm(sys, args.mem)?;
    for (gpa, bytes) in &image.segments {
        let off = usize::try_from(*gpa).map_err(|_| Failure::Usage("address too large".into()))?;
        gvm.mem
            .write(off, bytes)
            .map_err(|e| Failure::Env(format!("copying the guest to {gpa:#x}: {e}")))?;
    }
    let top = args.mem.min(1 << 32);
    let mut vcpus = Vec::new();
    for id in 0..args.cpus {
        let rsp = top - u64::from(id) * STACK_PER_VCPU;
        vcpus.push(gvm.add_vcpu(id, mode, image.entry, rsp)?);
    }
    kvm_abi::process::interrupt_syscalls_with(KICK)
        .map_err(|e| Failure::Env(format!("cannot install the kick signal handler: {e}")))?;
    let devices = Devices::new(Box::new(std::io::stdout()));
    if std::io::stdin().is_terminal() {
        let uart = devices.uart();
        start_input(move |bytes| lock(&uart).receive(bytes));
    }
    let shared = Shared {
        devices,
        vcpus: VcpuThreads::new(vcpus.len(), args.trace),
        status: Mutex::new(None),
        deadlines: (0..vcpus.len()).map(|_| AtomicU64::new(0)).collect(),
    };
    if args.trace {
        stderr_line(&format!(
            "rkvm: {} guest {} in {} mode, entry {:#x}, {} of memory, {} vCPU{} on {}",
            match image.kind {
                ImageKind::Flat => "flat",
                ImageKind::Elf32 => "ELF32",
                ImageKind::Elf64 => "ELF64",
            },
            args.guest.display(),
            mode.name(),
            image.entry,
            human_size(args.mem),
            args.cpus,
            if args.cpus == 1 { "" } else { "s" },
            args.device.display()
        ));
    }
    let sh = &shared;
    let total = sh.vcpus.run_all(
        &mut vcpus,
        |id, (vcpu, run)| vcpu_loop(sh, id, vcpu, run),
        || kicker(sh),
    );
    shared.vcpus.finish(&total, args.stats, args.cpus)?;
    let status = lock(&shared.status).unwrap_or(0);
    if args.trace {
        stderr_line(&format!("rkvm: exit status {status}"));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_errors_say_what_to_do() {
        let missing = device_error("/dev/rkvm", Errno::ENOENT);
        assert!(missing.contains("insmod rkvm.ko"), "{missing}");
        let denied = device_error("/dev/kvm", Errno::EACCES);
        assert!(
            denied.starts_with("permission denied opening /dev/kvm"),
            "{denied}"
        );
        assert!(device_error("/dev/kvm", Errno::EBUSY).starts_with("cannot open /dev/kvm: "));
    }
}
