//! A KVM client written by someone else runs on the device as on KVM:
//! Debian's QEMU (7.2), unmodified, with its SeaBIOS firmware, boots a disk
//! whose boot sector is below. Nothing of QEMU or SeaBIOS is rkvm's: QEMU
//! opens `/dev/kvm` as it always does, and this program makes that name
//! the device under test in a private mount namespace (a tmpfs over
//! `/dev` holding a node with the device's numbers), so the same test runs
//! against `/dev/rkvm` and `/dev/kvm`.
//!
//! QEMU runs once without an in-kernel irqchip (`kernel_irqchip=off`: its
//! own PIC, PIT and local APIC, interrupts injected with `KVM_INTERRUPT`),
//! once with the device's (`kernel_irqchip=on`, two vCPUs) and once with
//! the device's local APICs and its own IOAPIC, PIC and PIT
//! (`kernel_irqchip=split`, two vCPUs), each with
//! a CPU model stripped of what rkvm does not offer: no KVM
//! paravirtual features (`kvm=off`) and no machine check (`-mce,-mca`:
//! QEMU 7.2 would set 42 MCE MSRs rkvm does not have), and without SMM
//! (`smm=off`: see `boot`). docs/testing.md says what this covers.
//!
//! Usage: `qemu [DEVICE]` (default `/dev/rkvm`). `RKVM_QEMU` overrides the
//! QEMU binary (default `/usr/bin/qemu-system-x86_64`).

use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use ksft::{Status, TestResult, check, check_eq, diag, fail, skip, tests};
use rkvm_selftests::Ctx;
use rkvm_selftests::cpu::{self, Extension};

/// How long one QEMU run may take before it is killed (SeaBIOS and the
/// boot sector take a few seconds under emulation).
const QEMU_TIMEOUT: Duration = Duration::from_secs(180);

/// The port of QEMU's `isa-debug-exit` device: writing V makes QEMU exit
/// with status `(V << 1) | 1`.
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// What the boot sector writes there when every step worked, and when the
/// disk read failed.
const EXIT_OK: u8 = 0x21;
const EXIT_DISK_ERROR: u8 = 0x01;
/// QEMU's exit status after the boot sector wrote [`EXIT_OK`].
const QEMU_STATUS_OK: i32 = (EXIT_OK as i32) << 1 | 1;
/// SeaBIOS's debug console (`isa-debugcon`), where SeaBIOS logs and the
/// boot sector prints.
const DEBUGCON_PORT: u16 = 0x402;
/// Timer ticks (IRQ 0, 18.2 Hz) the boot sector waits for with `sti; hlt`.
const TICKS: u16 = 9;

/// The text of the disk's second sector, which the boot sector reads with
/// `int 13h` and prints.
const SECTOR2_TEXT: &str = "boot sector: sector 2 read by int 13h\n";

kvm_abi::guest_code! {
    /// A boot sector, entered by SeaBIOS in real mode at 0000:7C00 with DL
    /// the boot drive. It prints a line on the debug console, reads the
    /// disk's second sector to 0x7E00 with the BIOS (SeaBIOS drives the IDE
    /// disk with port I/O, `REP INSW`), prints it, waits for timer ticks
    /// with `sti; hlt` (the BIOS tick count at 0x46C, kept by SeaBIOS's
    /// IRQ 0 handler), prints again, and ends QEMU through `isa-debug-exit`.
    /// Data is addressed as 0x7C00 plus its offset in the block.
    fn boot_sector;
    ".code16",
    "cli",
    "xor %ax, %ax",
    "mov %ax, %ds",
    "mov %ax, %es",
    "mov %ax, %ss",
    "mov $0x7c00, %sp",
    "sti",
    // DL (the boot drive) is kept for int 13h: printing uses DX.
    "push %dx",
    "mov $(0x7c00 + 2f - rkvm_guest_boot_sector_start), %si",
    "call 9f",
    "pop %dx",
    // int 13h AH=02h: read AL=1 sector at cylinder 0 (CH), sector 2 (CL),
    // head 0 (DH) of drive DL into ES:BX. Carry set on error.
    "mov $0x0201, %ax",
    "mov $0x7e00, %bx",
    "mov $0x0002, %cx",
    "xor %dh, %dh",
    "int $0x13",
    "jc 7f",
    "mov $0x7e00, %si",
    "call 9f",
    // Wait until the tick count has moved on by {ticks}.
    "mov 0x46c, %bx",
    "add ${ticks}, %bx",
    "1: hlt",
    "mov 0x46c, %ax",
    "sub %bx, %ax",
    "js 1b",
    "mov $(0x7c00 + 3f - rkvm_guest_boot_sector_start), %si",
    "call 9f",
    "mov ${exit_ok}, %al",
    "out %al, ${exit_port}",
    "6: cli",
    "hlt",
    "jmp 6b",
    "7: mov $(0x7c00 + 4f - rkvm_guest_boot_sector_start), %si",
    "call 9f",
    "mov ${exit_disk}, %al",
    "out %al, ${exit_port}",
    "jmp 6b",
    // Prints the NUL-terminated string at DS:SI on the debug console.
    "9: mov ${debugcon}, %dx",
    "8: lodsb",
    "test %al, %al",
    "jz 5f",
    "out %al, (%dx)",
    "jmp 8b",
    "5: ret",
    "2: .asciz \"boot sector: hello from real mode\\n\"",
    "3: .asciz \"boot sector: {ticks} timer ticks seen\\n\"",
    "4: .asciz \"boot sector: int 13h failed\\n\"";
    ticks = const TICKS,
    exit_ok = const EXIT_OK,
    exit_disk = const EXIT_DISK_ERROR,
    exit_port = const DEBUG_EXIT_PORT,
    debugcon = const DEBUGCON_PORT,
    options(att_syntax)
}

fn qemu_path() -> PathBuf {
    std::env::var_os("RKVM_QEMU").map_or_else(|| "/usr/bin/qemu-system-x86_64".into(), Into::into)
}

/// Writes the disk image: the boot sector (with its 0x55AA signature),
/// then [`SECTOR2_TEXT`], padded to 1 MiB so that the BIOS sees an
/// ordinary small disk.
fn write_disk(path: &Path) -> TestResult {
    let code = boot_sector();
    check!(code.len() <= 510, "the boot sector is {} bytes", code.len());
    let mut disk = vec![0u8; 1 << 20];
    disk[..code.len()].copy_from_slice(code);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk[512..512 + SECTOR2_TEXT.len()].copy_from_slice(SECTOR2_TEXT.as_bytes());
    fs::write(path, &disk)
        .map_err(|e| Status::Fail(format!("cannot write {}: {e}", path.display())))
}

/// What one QEMU run did.
struct Outcome {
    /// QEMU's exit status, or `None` if it was killed (by the timeout).
    status: Option<i32>,
    /// The debug console: SeaBIOS's log and the boot sector's lines.
    console: String,
    stderr: String,
}

/// How QEMU's machine is set up for one run.
#[derive(Clone, Copy)]
struct Machine {
    /// `kernel_irqchip=`: `off` (QEMU's own PIC, PIT and local APICs),
    /// `split` (the device's local APICs, QEMU's others) or
    /// `on` (the device's: `KVM_CREATE_IRQCHIP`, `KVM_CREATE_PIT2`, irqfds).
    kernel_irqchip: &'static str,
    /// vCPUs. Two need the in-kernel irqchip: with QEMU's userspace local
    /// APIC, SeaBIOS hangs starting the second (on KVM exactly as on rkvm;
    /// QEMU calls that APIC deprecated for KVM).
    cpus: u32,
}

/// What QEMU boots.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// SeaBIOS, then the boot sector of a disk this program writes; the
    /// console is SeaBIOS's debug port.
    Disk,
    /// The test kernel with its tiny initramfs (`/usr/share/rkvm/linux`,
    /// `scripts/vm/guest-init`) through QEMU's `-kernel`; the console is
    /// the first serial port.
    Linux,
}

/// Where the test VM keeps the Linux guest.
const LINUX_DIR: &str = "/usr/share/rkvm/linux";

/// The guest's line on its console: user space ran and counted the CPUs.
fn linux_line(cpus: u32) -> String {
    format!("rkvm-guest: user space reached, {cpus} CPUs online")
}

/// Boots `payload` in QEMU on the device under test.
fn boot(ctx: &Ctx, machine: Machine, payload: Payload) -> Result<Outcome, Status> {
    let qemu = qemu_path();
    if !qemu.exists() {
        skip!("{} is not installed in this VM", qemu.display());
    }
    let dir = std::env::temp_dir().join(format!("rkvm-qemu-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| Status::Fail(format!("{}: {e}", dir.display())))?;
    let disk = dir.join("disk.img");
    let log = dir.join("console.log");
    let _ = fs::remove_file(&log);
    let memory = match payload {
        Payload::Disk => {
            write_disk(&disk)?;
            "16"
        }
        Payload::Linux => {
            if !Path::new(LINUX_DIR).join("bzImage").exists() {
                skip!("{LINUX_DIR} has no Linux guest in this VM");
            }
            "160"
        }
    };

    // QEMU and its vCPU threads on one of the test VM's CPUs under QEMU's
    // SVM, whose fault with guests on two CPUs at once can take the test
    // VM's kernel (docs/testing.md, "An open bug"). The guest still has its
    // vCPUs; the irqchip program runs guests on both CPUs.
    let _one_cpu = cpu::one_cpu_under_qemu()?;
    let mut cmd = kvm_abi::process::command_with_device_as_dev_kvm(&ctx.path, &qemu)
        .map_err(|e| Status::Fail(format!("{}: {e}", ctx.path.display())))?;
    cmd.args(["-accel", "kvm", "-machine"])
        // smm=off: with SMM offered, SeaBIOS relocates SMBASE through an SMI at
        // boot; in session 15 one boot in four that did so lost the whole test
        // VM under QEMU's emulated SVM (no oops: it reset or went silent), and
        // none of four without it. docs/testing.md, "An open bug"; the SMM
        // tests of `run` and Linux's smm_test cover SMM meanwhile.
        .arg(format!(
            "pc,kernel_irqchip={},smm=off",
            machine.kernel_irqchip
        ))
        .args(["-cpu", "qemu64,kvm=off,-mce,-mca", "-m", memory, "-smp"])
        .arg(machine.cpus.to_string())
        .args([
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-no-user-config",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match payload {
        Payload::Disk => {
            cmd.arg("-chardev")
                .arg(format!("file,id=dbg,path={}", log.display()))
                .args([
                    "-device",
                    &format!("isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=dbg"),
                ])
                .args([
                    "-device",
                    &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=1"),
                ])
                .arg("-drive")
                .arg(format!("file={},format=raw,if=ide", disk.display()));
        }
        Payload::Linux => {
            cmd.arg("-serial")
                .arg(format!("file:{}", log.display()))
                .arg("-kernel")
                .arg(Path::new(LINUX_DIR).join("bzImage"))
                .arg("-initrd")
                .arg(Path::new(LINUX_DIR).join("initrd"))
                .args(["-append", "console=ttyS0 panic=-1 loglevel=4"]);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Status::Fail(format!("cannot run {}: {e}", qemu.display())))?;

    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > QEMU_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => fail!("waiting for QEMU: {e}"),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let console = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_dir_all(&dir);
    diag!("QEMU ran for {:.1} s", start.elapsed().as_secs_f64());
    let outcome = Outcome {
        status: status.and_then(|s| s.code().or(s.signal().map(|n| 128 + n))),
        console,
        stderr,
    };
    let ok = match payload {
        Payload::Disk => Some(QEMU_STATUS_OK),
        Payload::Linux => Some(0),
    };
    if outcome.status != ok {
        diag!("QEMU status {:?}; its stderr:", outcome.status);
        for line in outcome.stderr.lines().take(20) {
            diag!("  {line}");
        }
        show_console_end(&outcome.console, 25);
    }
    Ok(outcome)
}

/// Shows the last `count` lines of a boot's console as diagnostics.
fn show_console_end(console: &str, count: usize) {
    diag!("the end of the debug console:");
    let lines: Vec<&str> = console.lines().collect();
    for line in &lines[lines.len().saturating_sub(count)..] {
        diag!("  {line}");
    }
}

/// Checks that `lines` appear in the console in this order; if one does
/// not, shows the console's last lines (a guest that panicked and reset
/// ends QEMU with status 0 under `-no-reboot`, so only they say why).
fn expect_in_order(console: &str, lines: &[&str]) -> TestResult {
    let mut rest = console;
    for want in lines {
        match rest.find(want) {
            Some(at) => rest = &rest[at + want.len()..],
            None => {
                show_console_end(console, 40);
                fail!("the debug console lacks {want:?} (after the lines before it)")
            }
        }
    }
    Ok(())
}

/// Boots the disk on `machine` and checks the console: SeaBIOS found
/// `machine.cpus` CPUs, booted the disk, and the boot sector read its
/// second sector, saw its timer ticks and ended QEMU with its status.
fn boots_the_disk(ctx: &Ctx, machine: Machine) -> TestResult {
    let o = boot(ctx, machine, Payload::Disk)?;
    expect_in_order(
        &o.console,
        &[
            "SeaBIOS (version",
            &format!("Found {} cpu(s)", machine.cpus),
            "Booting from Hard Disk...",
            "Booting from 0000:7c00",
            "boot sector: hello from real mode\n",
            SECTOR2_TEXT,
            &format!("boot sector: {TICKS} timer ticks seen\n"),
        ],
    )?;
    check!(!o.console.contains("int 13h failed"));
    check_eq!(o.status, Some(QEMU_STATUS_OK), "QEMU's exit status");
    Ok(())
}

/// Boots the test kernel on `machine` and checks the console: init's
/// line with `machine.cpus` CPUs online, and QEMU's exit status 0 (ACPI
/// power-off). Skipped under QEMU on the KASAN kernel, where the emulator
/// loses the test VM in these boots whichever hypervisor runs them.
/// Under QEMU a failed boot is followed by one more (see below).
fn boots_linux(ctx: &Ctx, machine: Machine) -> TestResult {
    if rkvm_selftests::emulator() == "qemu" && rkvm_selftests::kasan_kernel() {
        skip!(
            "under QEMU's SVM on the KASAN kernel, nested Linux boots corrupt the test VM's kernel \
             with kvm_amd as with rkvm (docs/testing.md, \"An open bug\"); they run on the other kernel"
        );
    }
    // Under QEMU's SVM a nested boot now and then ends early or stops, on
    // kvm_amd as on rkvm (docs/testing.md, "An open bug"): a failed boot
    // there, its console shown, is followed by one more. A boot that fails
    // every time fails both and the test.
    let boots = if rkvm_selftests::emulator() == "qemu" {
        2
    } else {
        1
    };
    let mut n = 1;
    loop {
        match boot_linux_once(ctx, machine) {
            Err(Status::Fail(why)) if n < boots => {
                diag!("boot {n} of {boots} failed under QEMU's SVM ({why}): booting once more");
                n += 1;
            }
            result => return result,
        }
    }
}

/// One boot of the test kernel for `boots_linux`.
fn boot_linux_once(ctx: &Ctx, machine: Machine) -> TestResult {
    let o = boot(ctx, machine, Payload::Linux)?;
    // The kernel logs only warnings (`loglevel=4`): init's line is the news.
    expect_in_order(&o.console, &[&linux_line(machine.cpus)])?;
    check_eq!(o.status, Some(0), "QEMU's exit status");
    Ok(())
}

/// QEMU's own interrupt controllers (`kernel_irqchip=off`): SeaBIOS
/// initialises the machine (real mode, its 32-bit part, PCI and fw_cfg
/// port I/O, the userspace APIC's MMIO), finds the disk, loads the boot
/// sector; the boot sector reads a sector through the BIOS, takes timer
/// interrupts QEMU injects with `KVM_INTERRUPT` after `HLT` exits, and
/// ends QEMU with the status it chose.
fn seabios_boots_the_disk_and_the_boot_sector_runs(ctx: &Ctx) -> TestResult {
    boots_the_disk(
        ctx,
        Machine {
            kernel_irqchip: "off",
            cpus: 1,
        },
    )
}

/// Skips a two-vCPU run on kvm_amd under Bochs's SVM (the `zambezi` boot).
/// Seen in CI there: kvm_amd held a host CPU in VMRUN for 26 s in the
/// in-kernel irqchip run (an RCU stall, which the kernel-log check turns
/// into a failure), and in a later run the split irqchip run stopped the
/// whole test VM until Bochs's 45-minute limit: problems of that emulator
/// and KVM. rkvm's column runs both there; QEMU's SVM boot has KVM's
/// column of both.
fn skip_kvm_amd_with_two_vcpus_on_bochs(ctx: &Ctx) -> TestResult {
    let on_bochs = rkvm_selftests::emulator() == "bochs";
    if on_bochs && cpu::extension() == Some(Extension::Svm) && !ctx.is_rkvm() {
        skip!(
            "kvm_amd under Bochs's SVM stalls a host CPU in VMRUN with two vCPUs (an RCU stall and \
             a wedged test VM seen in CI); its result is recorded (docs/testing.md, \"KVM's \
             recorded results\"), and kvm_intel runs this test under Bochs's VMX"
        );
    }
    Ok(())
}

/// The device's interrupt controllers (`kernel_irqchip=on`, QEMU's default)
/// with two vCPUs: SeaBIOS starts the second with INIT and SIPI through
/// the in-kernel local APICs and counts it; the boot sector's timer ticks
/// come from the in-kernel PIT through the in-kernel PIC and LINT0, and its
/// HLTs sleep in the kernel.
fn seabios_starts_two_vcpus_on_the_in_kernel_irqchip(ctx: &Ctx) -> TestResult {
    skip_kvm_amd_with_two_vcpus_on_bochs(ctx)?;
    boots_the_disk(
        ctx,
        Machine {
            kernel_irqchip: "on",
            cpus: 2,
        },
    )
}

/// The device's local APICs with QEMU's IOAPIC, PIC and PIT
/// (`kernel_irqchip=split`, `KVM_CAP_SPLIT_IRQCHIP`) and two vCPUs:
/// SeaBIOS starts the second through the in-kernel APICs; the boot
/// sector's timer ticks come from QEMU's PIT through QEMU's PIC, which
/// QEMU injects as ExtINT with `KVM_INTERRUPT` once
/// `KVM_EXIT_IRQ_WINDOW_OPEN` says the guest can take one, while the
/// halted vCPU waits in the kernel.
fn seabios_starts_two_vcpus_on_the_split_irqchip(ctx: &Ctx) -> TestResult {
    skip_kvm_amd_with_two_vcpus_on_bochs(ctx)?;
    boots_the_disk(
        ctx,
        Machine {
            kernel_irqchip: "split",
            cpus: 2,
        },
    )
}

/// The test kernel boots as a guest of QEMU on the device's irqchip with
/// two vCPUs: the second comes online through INIT and SIPI (the in-kernel
/// APICs), the timers work (PIT, HPET, the local APIC timer), the console
/// on the serial port works (QEMU's UART raising its line through the
/// in-kernel IOAPIC), init counts both CPUs in `/proc/cpuinfo` and powers
/// off through ACPI, and QEMU exits with status 0.
fn linux_boots_to_user_space_with_two_vcpus(ctx: &Ctx) -> TestResult {
    // The test VM's init has the kernel's `rkvm_emulator=` in its environment.
    if rkvm_selftests::emulator() == "bochs" {
        skip!("a nested Linux boot takes minutes under Bochs; the QEMU (SVM) run has it");
    }
    boots_linux(
        ctx,
        Machine {
            kernel_irqchip: "on",
            cpus: 2,
        },
    )
}

/// The same Linux boot on QEMU's `kernel_irqchip=split`: the nested
/// kernel's timer check (`check_timer`) runs with QEMU's PIT and PIC
/// behind the device's local APICs, its IOAPIC's pins arrive as MSIs and
/// its level-triggered EOIs come back as `KVM_EXIT_IOAPIC_EOI`. Run on the
/// device under test only: kvm_amd passes it (docs/testing.md records the
/// run), and each nested boot is one more chance for QEMU's SVM fault
/// there (docs/testing.md, "An open bug").
fn linux_boots_on_the_split_irqchip(ctx: &Ctx) -> TestResult {
    if rkvm_selftests::emulator() == "bochs" {
        skip!("a nested Linux boot takes minutes under Bochs; the QEMU (SVM) run has it");
    }
    if !ctx.is_rkvm() {
        skip!("kvm_amd's result is recorded in docs/testing.md (it passes); this run is rkvm's");
    }
    boots_linux(
        ctx,
        Machine {
            kernel_irqchip: "split",
            cpus: 2,
        },
    )
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            seabios_boots_the_disk_and_the_boot_sector_runs,
            seabios_starts_two_vcpus_on_the_in_kernel_irqchip,
            seabios_starts_two_vcpus_on_the_split_irqchip,
            linux_boots_to_user_space_with_two_vcpus,
            linux_boots_on_the_split_irqchip,
        ],
    )
}
