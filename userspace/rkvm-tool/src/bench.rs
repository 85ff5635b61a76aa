//! `rkvm bench`: micro-benchmarks of what a hypervisor's speed is made of,
//! and `rkvm compare`, which prints two devices' results side by side.
//!
//! | benchmark | what one iteration is |
//! |---|---|
//! | `pio_exit` | an `OUT` to a port: exit to rkvm and back into the guest |
//! | `cpuid_exit` | a `CPUID`: an exit the hypervisor handles in the kernel |
//! | `mmio_exit` | a store to an address in no slot: decode, exit to rkvm, back |
//! | `hlt_exit` | a `HLT`: exit to rkvm (no in-kernel APIC) and back |
//! | `slot_1g` | `KVM_SET_USER_MEMORY_REGION` of a fresh 1 GiB slot |
//! | `touch_1g` | the guest's first write to one 4 KiB page of a fresh 1 GiB slot |
//! | `linux_boot` | with `--linux DIR`: `rkvm boot` of `DIR/bzImage` and `DIR/initrd` on two vCPUs, from the process's start to its init's line on the console |
//! | `qemu_linux_boot` | with `--linux DIR --qemu QEMU` too: unmodified QEMU boots the same kernel and initrd on the device (two vCPUs, the device's irqchip), timed the same way |
//!
//! Each benchmark runs its iterations `--repeats` times (`touch_1g` at
//! most three times, as one pass is slow under emulation); the figure of a
//! repeat is its time per iteration, and the report gives the median, min
//! and max over the repeats. Guest code is assembled into this program
//! (`kvm_abi::guest_code!`) and runs in long mode at 0x100000.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_abi::sys::kvm_regs;
use kvm_abi::{GuestMemory, IoDirection, MemoryRegion, RunMapping, Vcpu, VcpuExit};

use crate::Failure;
use crate::args::{BenchArgs, GuestMode};
use crate::machine::{GuestVm, create_vm, open_device};

kvm_abi::guest_code! {
    /// Port I/O forever: each OUT is one exit to userspace.
    fn pio_loop;
    ".code64",
    "1: out %al, $0x80",
    "jmp 1b";
    options(att_syntax)
}

kvm_abi::guest_code! {
    /// R15 CPUIDs (each handled in the kernel), then an OUT to 0x81; again.
    fn cpuid_loop;
    ".code64",
    "1: mov %r15, %r14",
    "2: xor %eax, %eax",
    "cpuid",
    "dec %r14",
    "jnz 2b",
    "out %al, $0x81",
    "jmp 1b";
    options(att_syntax)
}

kvm_abi::guest_code! {
    /// MMIO stores to the address in RDI forever.
    fn mmio_loop;
    ".code64",
    "1: mov %eax, (%rdi)",
    "jmp 1b";
    options(att_syntax)
}

kvm_abi::guest_code! {
    /// HLT forever.
    fn hlt_loop;
    ".code64",
    "1: hlt",
    "jmp 1b";
    options(att_syntax)
}

kvm_abi::guest_code! {
    /// Writes one byte to each of R15 pages from RDI on, then OUT to 0x82.
    fn touch_loop;
    ".code64",
    "1: movb $1, (%rdi)",
    "add $4096, %rdi",
    "dec %r15",
    "jnz 1b",
    "out %al, $0x82",
    "hlt";
    options(att_syntax)
}

/// Where the benchmark code runs.
const CODE: u64 = 0x10_0000;
/// Low memory of every benchmark VM: the tables and the code.
const LOW_MEM: u64 = 2 << 20;
/// The address the MMIO benchmark stores to (in no slot).
const MMIO_GPA: u64 = 0xd000_0000;
/// Where the big slot of `touch_1g` goes (identity-mapped by the tables).
const BIG_GPA: u64 = 0x4000_0000;

/// One benchmark's figures: time per iteration for each repeat.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Result1 {
    /// The benchmark's name.
    pub(crate) name: String,
    /// Nanoseconds per iteration, one per repeat.
    pub(crate) per_iter_ns: Vec<f64>,
    /// Iterations per repeat.
    pub(crate) iterations: u64,
}

impl Result1 {
    /// The median, min and max of the repeats (ns per iteration).
    pub(crate) fn summary(&self) -> (f64, f64, f64) {
        let mut v = self.per_iter_ns.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return (0.0, 0.0, 0.0);
        }
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        };
        (median, v[0], v[n - 1])
    }
}

fn env(e: kvm_abi::Error) -> Failure {
    Failure::Env(e.to_string())
}

/// A benchmark VM: low memory with `code` at [`CODE`], one long-mode vCPU
/// with `edit` applied to its registers.
fn bench_vm(
    args: &BenchArgs,
    code: &[u8],
    edit: impl FnOnce(&mut kvm_regs),
) -> Result<(GuestVm, Vcpu, RunMapping), Failure> {
    bench_vm_with(args, code, false, edit)
}

/// [`bench_vm`], with the in-kernel irqchip (`KVM_CREATE_IRQCHIP`: local
/// APIC, IOAPIC, PIC) if `irqchip`, as a VM that boots an OS has it.
fn bench_vm_with(
    args: &BenchArgs,
    code: &[u8],
    irqchip: bool,
    edit: impl FnOnce(&mut kvm_regs),
) -> Result<(GuestVm, Vcpu, RunMapping), Failure> {
    let gvm = create_vm(open_device(&args.device)?, LOW_MEM)?;
    if irqchip {
        gvm.vm.create_irqchip().map_err(env)?;
    }
    gvm.mem
        .write(usize::try_from(CODE).unwrap_or(0), code)
        .map_err(env)?;
    let (vcpu, run) = gvm.add_vcpu(0, GuestMode::Long, CODE, LOW_MEM)?;
    let mut regs = vcpu.get_regs().map_err(env)?;
    edit(&mut regs);
    vcpu.set_regs(&regs).map_err(env)?;
    Ok((gvm, vcpu, run))
}

/// Runs the vCPU once and checks the exit is `want` (a port-I/O `OUT` to
/// that port, an MMIO write, or HLT).
fn run_expect(vcpu: &Vcpu, run: &mut RunMapping, want: Want) -> Result<(), Failure> {
    vcpu.run().map_err(env)?;
    let ok = match (run.exit(), want) {
        (VcpuExit::Io(io), Want::Out(port)) => io.port == port && io.direction == IoDirection::Out,
        (VcpuExit::Mmio(m), Want::MmioWrite) => m.is_write && m.phys_addr == MMIO_GPA,
        (VcpuExit::Hlt, Want::Hlt) => true,
        (other, _) => {
            return Err(Failure::Guest(format!(
                "benchmark guest: expected {want:?}, got {other:?}"
            )));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Failure::Guest(format!(
            "benchmark guest: expected {want:?}, got another exit of that kind"
        )))
    }
}

#[derive(Clone, Copy, Debug)]
enum Want {
    Out(u16),
    MmioWrite,
    Hlt,
}

/// An exit benchmark: `iterations` KVM_RUNs, each ending in `want`, in a
/// VM with the in-kernel irqchip if `irqchip`.
fn exit_bench(
    args: &BenchArgs,
    name: &str,
    code: &[u8],
    want: Want,
    iterations: u64,
    irqchip: bool,
) -> Result<Result1, Failure> {
    let (_gvm, vcpu, mut run) = bench_vm_with(args, code, irqchip, |r| r.rdi = MMIO_GPA)?;
    // Warm up: the first entries map the code's and the stack's pages.
    for _ in 0..10 {
        run_expect(&vcpu, &mut run, want)?;
    }
    let mut per_iter_ns = Vec::new();
    for _ in 0..args.repeats {
        let t = Instant::now();
        for _ in 0..iterations {
            run_expect(&vcpu, &mut run, want)?;
        }
        per_iter_ns.push(per(t.elapsed(), iterations));
    }
    Ok(Result1 {
        name: name.into(),
        per_iter_ns,
        iterations,
    })
}

/// The line the test VM's Linux guest prints once its init runs
/// (`scripts/vm/guest-init`).
const GUEST_LINE: &str = "rkvm-guest: user space reached";
/// Boots per repeat set of `linux_boot`: each is seconds under emulation.
const BOOT_REPEATS: u32 = 3;
/// How long one boot of `linux_boot` may take before it is killed.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// `linux_boot`: this program's `rkvm boot` of the kernel and initrd in
/// `dir` on two vCPUs, timed from the spawn to the guest's init line on
/// the console (the kernel's whole boot: decompression, ACPI, SMP bring-up,
/// the initramfs), then waited for to power off with status 0.
fn boot_bench(args: &BenchArgs, dir: &Path) -> Result<Result1, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Env(format!("cannot find this program to run rkvm boot: {e}")))?;
    console_boot_bench(args, "linux_boot", || {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["boot", "--cpus", "2", "--device"])
            .arg(&args.device)
            .arg("--kernel")
            .arg(dir.join("bzImage"))
            .arg("--initrd")
            .arg(dir.join("initrd"));
        Ok(cmd)
    })
}

/// `qemu_linux_boot`: unmodified QEMU (`qemu`) boots the same kernel and
/// initrd on the device, two vCPUs on the device's irqchip
/// (`kernel_irqchip=on`), through its own firmware path (`-kernel`:
/// SeaBIOS and QEMU's linuxboot option ROM before the kernel), timed as
/// `linux_boot`. QEMU opens `/dev/kvm`: it runs in a private mount
/// namespace where that name is the device under test
/// ([`kvm_abi::process::command_with_device_as_dev_kvm`]). The CPU model
/// and machine are the `qemu` selftest's: no KVM paravirtual features, no
/// machine check, no SMM.
fn qemu_boot_bench(args: &BenchArgs, qemu: &Path, dir: &Path) -> Result<Result1, Failure> {
    console_boot_bench(args, "qemu_linux_boot", || {
        let mut cmd = kvm_abi::process::command_with_device_as_dev_kvm(&args.device, qemu)
            .map_err(|e| Failure::Env(format!("{}: {e}", args.device.display())))?;
        cmd.args(["-accel", "kvm", "-machine", "pc,kernel_irqchip=on,smm=off"])
            .args(["-cpu", "qemu64,kvm=off,-mce,-mca", "-m", "160", "-smp", "2"])
            .args([
                "-display",
                "none",
                "-nodefaults",
                "-no-reboot",
                "-no-user-config",
            ])
            .args(["-serial", "stdio", "-kernel"])
            .arg(dir.join("bzImage"))
            .arg("-initrd")
            .arg(dir.join("initrd"))
            .args(["-append", "console=ttyS0 panic=-1 loglevel=4"]);
        Ok(cmd)
    })
}

/// Times the boots of `name`: each runs the command `make` gives, with its
/// stdout (the guest's console) read to the end; a boot's figure is the
/// time from the spawn to the guest's init line, and it must then end
/// with status 0 (the guest's power-off). A boot that hangs is killed
/// after [`BOOT_TIMEOUT`], and fails the benchmark.
fn console_boot_bench(
    args: &BenchArgs,
    name: &str,
    make: impl Fn() -> Result<std::process::Command, Failure>,
) -> Result<Result1, Failure> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut per_iter_ns = Vec::new();
    for _ in 0..args.repeats.min(BOOT_REPEATS) {
        let mut cmd = make()?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let t = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::Env(format!("{name}: cannot run {program}: {e}")))?;
        // A boot that hangs is killed after BOOT_TIMEOUT: its console then
        // ends, and so does the reading below.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        let (done, watch) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if watch.recv_timeout(BOOT_TIMEOUT).is_err() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        let mut at_init = None;
        if let Some(out) = child.stdout.take() {
            // Bytes, not text: a console line need not be UTF-8, and the
            // pipe is drained to the end whatever it carries.
            let mut out = BufReader::new(out);
            let mut line = Vec::new();
            while matches!(out.read_until(b'\n', &mut line), Ok(1..)) {
                if at_init.is_none() && String::from_utf8_lossy(&line).contains(GUEST_LINE) {
                    at_init = Some(t.elapsed());
                }
                line.clear();
            }
        }
        let status = child
            .wait()
            .map_err(|e| Failure::Env(format!("{name}: waiting for {program}: {e}")));
        let _ = done.send(());
        let _ = watchdog.join();
        let status = status?;
        match (at_init, status.success()) {
            (Some(d), true) => per_iter_ns.push(d.as_secs_f64() * 1e9),
            _ => {
                return Err(Failure::Guest(format!(
                    "{name}: the boot ended with {status} {} its init's line",
                    if at_init.is_some() {
                        "after"
                    } else {
                        "without"
                    }
                )));
            }
        }
    }
    Ok(Result1 {
        name: name.into(),
        per_iter_ns,
        iterations: 1,
    })
}

fn per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e9 / n.max(1) as f64
}

/// CPUIDs handled in the kernel: `iterations` of them per KVM_RUN.
fn cpuid_bench(args: &BenchArgs, iterations: u64) -> Result<Result1, Failure> {
    let (_gvm, vcpu, mut run) = bench_vm(args, cpuid_loop(), |r| r.r15 = iterations)?;
    run_expect(&vcpu, &mut run, Want::Out(0x81))?;
    let mut per_iter_ns = Vec::new();
    for _ in 0..args.repeats {
        let t = Instant::now();
        run_expect(&vcpu, &mut run, Want::Out(0x81))?;
        per_iter_ns.push(per(t.elapsed(), iterations));
    }
    Ok(Result1 {
        name: "cpuid_exit".into(),
        per_iter_ns,
        iterations,
    })
}

/// Setting up a fresh slot of `size` bytes (each repeat: `iterations`
/// slots created, each deleted again untimed).
fn slot_bench(args: &BenchArgs, size: usize, iterations: u64) -> Result<Result1, Failure> {
    let gvm = create_vm(open_device(&args.device)?, LOW_MEM)?;
    let mut per_iter_ns = Vec::new();
    for _ in 0..args.repeats {
        let mut total = Duration::ZERO;
        for _ in 0..iterations {
            let mem = Arc::new(GuestMemory::new(size).map_err(env)?);
            let region = MemoryRegion::new(1, BIG_GPA, &mem);
            let t = Instant::now();
            gvm.vm.set_user_memory_region(&region).map_err(env)?;
            total += t.elapsed();
            gvm.vm
                .set_user_memory_region(&MemoryRegion::delete(1))
                .map_err(env)?;
        }
        per_iter_ns.push(per(total, iterations));
    }
    Ok(Result1 {
        name: "slot_1g".into(),
        per_iter_ns,
        iterations,
    })
}

/// The guest's first touch of every 4 KiB page of a fresh `size`-byte
/// slot (a new VM and new memory each repeat).
fn touch_bench(args: &BenchArgs, name: &str, size: usize) -> Result<Result1, Failure> {
    let pages = (size / 4096) as u64;
    let mut per_iter_ns = Vec::new();
    // At most three repeats: under emulation one pass over 1 GiB takes
    // tens of seconds.
    for _ in 0..args.repeats.min(3) {
        let (gvm, vcpu, mut run) = bench_vm(args, touch_loop(), |r| {
            r.rdi = BIG_GPA;
            r.r15 = pages;
        })?;
        let mem = Arc::new(GuestMemory::new(size).map_err(env)?);
        gvm.vm
            .set_user_memory_region(&MemoryRegion::new(1, BIG_GPA, &mem))
            .map_err(env)?;
        let t = Instant::now();
        run_expect(&vcpu, &mut run, Want::Out(0x82))?;
        per_iter_ns.push(per(t.elapsed(), pages));
    }
    Ok(Result1 {
        name: name.into(),
        per_iter_ns,
        iterations: pages,
    })
}

/// What one benchmark's figure means, for the table.
fn meaning(name: &str) -> &'static str {
    match name {
        "pio_exit" => "OUT: exit to userspace and back",
        "pio_irqchip_exit" => "OUT, in-kernel irqchip: exit to userspace and back",
        "cpuid_exit" => "CPUID: exit handled in the kernel",
        "mmio_exit" => "MMIO store: decode, exit to userspace, back",
        "hlt_exit" => "HLT: exit to userspace and back",
        "slot_1g" => "KVM_SET_USER_MEMORY_REGION, 1 GiB",
        "touch_1g" => "first touch of a page (of 1 GiB)",
        "touch_64m" => "first touch of a page (of 64 MiB)",
        "linux_boot" => "rkvm boot, 2 vCPUs: start to init's line",
        "qemu_linux_boot" => "QEMU -kernel, 2 vCPUs: start to init's line",
        _ => "",
    }
}

/// The unit a figure in ns is shown in: its size in ns and its name.
fn unit_of(ns: f64) -> (f64, &'static str) {
    if ns >= 1e9 {
        (1e9, "s")
    } else if ns >= 1e6 {
        (1e6, "ms")
    } else if ns >= 1e3 {
        (1e3, "us")
    } else {
        (1.0, "ns")
    }
}

/// A figure in ns as text in its unit.
fn show_ns(ns: f64) -> String {
    format!("{} {}", short(ns, ns), unit_of(ns).1)
}

/// `rkvm bench`: runs every benchmark and prints the table (and writes
/// `--output`).
pub(crate) fn bench(args: &BenchArgs) -> Result<(), Failure> {
    let (n, touch) = if args.quick {
        (200, 64 << 20)
    } else {
        (2000, 1 << 30)
    };
    crate::stderr_line(&format!(
        "rkvm bench on {}: {} repeats{}",
        args.device.display(),
        args.repeats,
        if args.quick { " (quick)" } else { "" }
    ));
    let mut results = Vec::new();
    let mut step = |r: Result<Result1, Failure>| -> Result<(), Failure> {
        let r = r?;
        let (med, min, max) = r.summary();
        crate::stderr_line(&format!(
            "  {:<15} median {} (min {}, max {})",
            r.name,
            show_ns(med),
            show_ns(min),
            show_ns(max)
        ));
        results.push(r);
        Ok(())
    };
    step(exit_bench(
        args,
        "pio_exit",
        pio_loop(),
        Want::Out(0x80),
        n,
        false,
    ))?;
    step(exit_bench(
        args,
        "pio_irqchip_exit",
        pio_loop(),
        Want::Out(0x80),
        n,
        true,
    ))?;
    step(cpuid_bench(args, n * 10))?;
    step(exit_bench(
        args,
        "mmio_exit",
        mmio_loop(),
        Want::MmioWrite,
        n,
        false,
    ))?;
    step(exit_bench(
        args,
        "hlt_exit",
        hlt_loop(),
        Want::Hlt,
        n,
        false,
    ))?;
    step(slot_bench(args, 1 << 30, if args.quick { 5 } else { 20 }))?;
    step(touch_bench(
        args,
        if args.quick { "touch_64m" } else { "touch_1g" },
        touch,
    ))?;
    if let Some(dir) = &args.linux {
        step(boot_bench(args, dir))?;
        if let Some(qemu) = &args.qemu {
            step(qemu_boot_bench(args, qemu, dir))?;
        }
    }
    let text = table(&args.device.display().to_string(), &results);
    print!("{text}");
    if let Some(path) = &args.output {
        std::fs::write(path, tsv(&results))
            .map_err(|e| Failure::Env(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// One device's results as a table.
fn table(device: &str, results: &[Result1]) -> String {
    let mut s = format!(
        "{:<15} {:>12} {:>12} {:>12} {:>8}  {}\n",
        "benchmark", "median", "min", "max", "iters", "per iteration"
    );
    for r in results {
        let (med, min, max) = r.summary();
        let _ = writeln!(
            s,
            "{:<15} {:>12} {:>12} {:>12} {:>8}  {}",
            r.name,
            show_ns(med),
            show_ns(min),
            show_ns(max),
            r.iterations,
            meaning(&r.name)
        );
    }
    let _ = writeln!(s, "(device {device}; figures are per iteration)");
    s
}

/// The results as tab-separated lines: name, median, min, max (ns), iterations.
fn tsv(results: &[Result1]) -> String {
    let mut s = String::from("# benchmark\tmedian_ns\tmin_ns\tmax_ns\titerations\n");
    for r in results {
        let (med, min, max) = r.summary();
        let _ = writeln!(
            s,
            "{}\t{med:.1}\t{min:.1}\t{max:.1}\t{}",
            r.name, r.iterations
        );
    }
    s
}

/// Parses [`tsv`] output: name to (median, min, max).
fn parse_tsv(text: &str) -> Vec<(String, [f64; 3])> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
            Some((f.first()?.to_string(), [num(1)?, num(2)?, num(3)?]))
        })
        .collect()
}

/// The side-by-side table of two [`tsv`] texts.
fn compare_text(left: &str, right: &str) -> String {
    let (l, r) = (parse_tsv(left), parse_tsv(right));
    let mut s = format!(
        "{:<15} {:>26} {:>26} {:>9}  {}\n",
        "benchmark", "rkvm median (min-max)", "KVM median (min-max)", "rkvm/KVM", "per iteration"
    );
    for (name, a) in &l {
        let Some((_, b)) = r.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let ratio = if b[0] > 0.0 { a[0] / b[0] } else { f64::NAN };
        let _ = writeln!(
            s,
            "{:<15} {:>26} {:>26} {:>9}  {}",
            name,
            format!(
                "{} ({}-{})",
                show_ns(a[0]),
                short(a[1], a[0]),
                short(a[2], a[0])
            ),
            format!(
                "{} ({}-{})",
                show_ns(b[0]),
                short(b[1], b[0]),
                short(b[2], b[0])
            ),
            show_ratio(ratio),
            meaning(name)
        );
    }
    s
}

/// A ratio with two significant digits at least.
fn show_ratio(r: f64) -> String {
    if r >= 0.1 || r == 0.0 || !r.is_finite() {
        format!("{r:.2}")
    } else {
        format!("{r:.4}")
    }
}

/// A figure without its unit, in the unit [`show_ns`] picks for `like`
/// (a min or max in its median's unit): whole nanoseconds, or two decimals.
fn short(ns: f64, like: f64) -> String {
    match unit_of(like).0 {
        1.0 => format!("{ns:.0}"),
        size => format!("{:.2}", ns / size),
    }
}

/// `rkvm compare`: reads two `bench --output` files.
pub(crate) fn compare(left: &Path, right: &Path) -> Result<String, Failure> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| Failure::Env(format!("cannot read {}: {e}", p.display())))
    };
    Ok(compare_text(&read(left)?, &read(right)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, v: &[f64]) -> Result1 {
        Result1 {
            name: name.into(),
            per_iter_ns: v.to_vec(),
            iterations: 10,
        }
    }

    #[test]
    fn median_min_max() {
        assert_eq!(r("a", &[3.0, 1.0, 2.0]).summary(), (2.0, 1.0, 3.0));
        assert_eq!(r("a", &[4.0, 1.0, 2.0, 3.0]).summary(), (2.5, 1.0, 4.0));
    }

    #[test]
    fn tsv_round_trips_and_compares() {
        let a = tsv(&[r("pio_exit", &[2000.0, 3000.0, 4000.0])]);
        let b = tsv(&[r("pio_exit", &[1000.0, 1500.0, 2000.0])]);
        assert_eq!(
            parse_tsv(&a),
            vec![("pio_exit".into(), [3000.0, 2000.0, 4000.0])]
        );
        let t = compare_text(&a, &b);
        let line = t.lines().find(|l| l.starts_with("pio_exit")).unwrap();
        assert!(line.contains("3.00 us (2.00-4.00)"), "{line}");
        assert!(line.contains(" 2.00 "), "{line}");
    }

    #[test]
    fn figures_in_their_unit() {
        assert_eq!(show_ns(950.0), "950 ns");
        assert_eq!(show_ns(95_000.0), "95.00 us");
        assert_eq!(show_ns(9_500_000.0), "9.50 ms");
        assert_eq!(show_ns(12_654_710_000.0), "12.65 s");
        // A min or max is in its median's unit.
        assert_eq!(short(932_090.0, 1_020_000.0), "0.93");
        assert_eq!(short(1_270_000.0, 950.0), "1270000");
        assert_eq!(show_ratio(0.654), "0.65");
        assert_eq!(show_ratio(8.79 / 3240.0), "0.0027");
    }

    #[test]
    fn benchmark_code_is_there() {
        // OUT imm8 is E6 ib; CPUID is 0F A2; HLT is F4.
        assert_eq!(&pio_loop()[..2], &[0xe6, 0x80]);
        assert!(cpuid_loop().windows(2).any(|w| w == [0x0f, 0xa2]));
        assert_eq!(hlt_loop()[0], 0xf4);
        assert!(!mmio_loop().is_empty() && !touch_loop().is_empty());
    }
}
