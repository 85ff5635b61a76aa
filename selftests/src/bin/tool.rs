//! The rkvm tool (`userspace/rkvm-tool`, installed as `/usr/bin/rkvm` in
//! the test VM) runs every demo guest with the expected output and exit
//! status, traces and counts exits, reports the device, and fails with
//! its one-line messages and statuses. The suite runs this program against
//! /dev/rkvm and /dev/kvm, so the same binary is proved on both.
//!
//! Usage: `tool [DEVICE]` (default `/dev/rkvm`). `RKVM_TOOL` and
//! `RKVM_GUESTS` override where the tool and the guests are.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use ksft::{Status, TestResult, check, check_eq, diag, tests};
use rkvm_selftests::Ctx;

/// What one run of the tool did.
struct Outcome {
    status: i32,
    stdout: String,
    stderr: String,
}

fn tool_path() -> String {
    std::env::var("RKVM_TOOL").unwrap_or_else(|_| "/usr/bin/rkvm".into())
}

fn guest(name: &str) -> String {
    let dir = std::env::var("RKVM_GUESTS").unwrap_or_else(|_| "/usr/share/rkvm/guests".into());
    format!("{dir}/{name}")
}

/// Runs `rkvm ARGS` as `uid` (if given) and collects what it did.
fn rkvm_as(uid: Option<u32>, args: &[&str]) -> Result<Outcome, Status> {
    let mut cmd = Command::new(tool_path());
    cmd.args(args);
    if let Some(id) = uid {
        cmd.uid(id).gid(id);
    }
    let out = cmd
        .output()
        .map_err(|e| Status::Fail(format!("cannot run {}: {e}", tool_path())))?;
    let o = Outcome {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if o.status != 0 {
        diag!("rkvm {} -> status {}", args.join(" "), o.status);
        for line in o.stderr.lines().take(12) {
            diag!("  stderr: {line}");
        }
    }
    Ok(o)
}

fn rkvm(args: &[&str]) -> Result<Outcome, Status> {
    rkvm_as(None, args)
}

fn device(ctx: &Ctx) -> String {
    ctx.path.display().to_string()
}

/// Runs guest `name` with `extra` options on the device under test.
fn run_guest(ctx: &Ctx, extra: &[&str], name: &str) -> Result<Outcome, Status> {
    let dev = device(ctx);
    let path = guest(name);
    let mut args = vec!["run", "--device", dev.as_str()];
    args.extend_from_slice(extra);
    args.push(path.as_str());
    rkvm(&args)
}

/// hello prints its line on the serial port and exits 0.
fn hello_prints_through_the_serial_port(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &[], "hello.bin")?;
    check_eq!(o.stdout.as_str(), "Hello from a guest of rkvm!\n", "output");
    check_eq!(o.status, 0, "exit status");
    check_eq!(o.stderr.as_str(), "", "stderr");
    Ok(())
}

/// A real-mode flat binary prints through the debug port and its exit
/// status (7) becomes rkvm's.
fn real_mode_guest_sets_the_exit_status(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &["--mode", "real"], "hello-real.bin")?;
    check_eq!(o.stdout.as_str(), "Hello from real mode!\n", "output");
    check_eq!(o.status, 7, "exit status");
    Ok(())
}

/// The MMIO demo device answers loads and stores the hypervisor decoded.
fn mmio_guest_talks_to_the_mmio_device(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &[], "mmio.bin")?;
    check_eq!(
        o.stdout.as_str(),
        "mmio-demo id: RKVM\nread counter: 1 2 3 \n12345 squared by the device: 152399025\n",
        "output"
    );
    check_eq!(o.status, 0, "exit status (0: every value right)");
    Ok(())
}

/// Timer interrupts injected with KVM_INTERRUPT wake the guest from HLT
/// (five times) and interrupt a busy loop (five times); --stats counts the
/// HLT exits.
fn irq_guest_takes_injected_timer_interrupts(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &["--stats"], "irq.bin")?;
    let mut want = String::from("timer every 10 ms, vector 32\n");
    for i in 1..=5 {
        want += &format!("a timer interrupt woke the guest from HLT: {i}\n");
    }
    for i in 1..=5 {
        want += &format!("a timer interrupt came during a busy loop: {i}\n");
    }
    want += "timer stopped, done\n";
    check_eq!(o.stdout.as_str(), want.as_str(), "output");
    check_eq!(o.status, 0, "exit status");
    let hlt = o
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("KVM_EXIT_HLT "))
        .unwrap_or_default()
        .to_string();
    check!(
        hlt.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 5),
        "--stats counts at least 5 HLT exits: {hlt:?}"
    );
    Ok(())
}

/// A long-mode guest in no_std Rust, loaded from an ELF file, computes
/// and prints a result.
fn rust_elf_guest_computes_primes(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &[], "primes.elf")?;
    check_eq!(
        o.stdout.as_str(),
        "primes below 1000000: 78498 (largest 999983, sum 37550402023)\n",
        "output"
    );
    check_eq!(o.status, 0, "exit status");
    Ok(())
}

/// --trace prints each exit with its port, data and what the device did;
/// --stats counts them: hello makes 28 status reads, 28 writes and 1 exit.
fn trace_and_stats_show_every_exit(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &["--trace", "--stats"], "hello.bin")?;
    check_eq!(o.status, 0, "exit status");
    let traced = o
        .stderr
        .lines()
        .filter(|l| l.contains("] vcpu0 KVM_EXIT_IO"))
        .count();
    check_eq!(traced, 57, "traced port-I/O exits");
    check!(
        o.stderr
            .contains("out port 0x03f8 size 1 count 1 data 48 | serial: transmit 'H'"),
        "the first character's exit is traced: {}",
        o.stderr
    );
    let stats = o
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("KVM_EXIT_IO "))
        .unwrap_or_default()
        .to_string();
    check!(
        stats.split_whitespace().nth(1) == Some("57"),
        "--stats counts 57 KVM_EXIT_IO: {stats:?}"
    );
    Ok(())
}

/// Two vCPUs run one thread each: both print their mark and meet in guest
/// memory (smp.S) before either writes the exit port, and that first write
/// ends both.
fn two_vcpus_run_and_stop_together(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &["--cpus", "2", "--trace"], "smp.bin")?;
    check_eq!(o.status, 0, "exit status");
    check_eq!(o.stdout.as_str(), "**", "one mark per vCPU");
    for id in 0..2 {
        check!(
            o.stderr
                .lines()
                .any(|l| l.contains(&format!("vcpu{id} KVM_EXIT_IO")) && l.contains("port 0x00e9")),
            "vCPU {id} printed its mark: {}",
            o.stderr.lines().take(6).collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(())
}

/// rkvm info reports the API version and the hardware extension.
fn info_reports_the_device(ctx: &Ctx) -> TestResult {
    let o = rkvm(&["info", "--device", &device(ctx)])?;
    check_eq!(o.status, 0, "exit status");
    check!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("API version") && l.ends_with(" 12")),
        "API version 12: {}",
        o.stdout
    );
    check!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("backend") && (l.contains("SVM") || l.contains("VMX"))),
        "backend SVM or VMX: {}",
        o.stdout
    );
    check!(
        o.stdout.contains("KVM_CAP_USER_MEMORY "),
        "capabilities listed"
    );
    Ok(())
}

/// Checks a failed run: one `rkvm: error:` line (plus a register dump for
/// crashes) containing `message`, and exit status `status`.
fn check_failure(o: &Outcome, status: i32, message: &str) -> TestResult {
    check_eq!(o.status, status, "exit status");
    let first = o.stderr.lines().next().unwrap_or_default();
    check!(
        first.starts_with("rkvm: error: ") && first.contains(message),
        "message {first:?} says {message:?}"
    );
    check_eq!(o.stdout.as_str(), "", "stdout");
    Ok(())
}

/// A missing device says how to load the module (125).
fn error_missing_device(_ctx: &Ctx) -> TestResult {
    let o = rkvm(&["run", "--device", "/dev/rkvm-missing", &guest("hello.bin")])?;
    check_failure(&o, 125, "does not exist: load the module")
}

/// A device the user may not open says so (125).
fn error_permission_denied(ctx: &Ctx) -> TestResult {
    // Device nodes are 0600 root: nobody (65534) may not open them. A
    // kernel without CONFIG_MULTIUSER has no other user to be.
    let probe = Command::new("/bin/true").uid(65534).gid(65534).status();
    if let Err(e) = probe {
        if e.raw_os_error() == Some(libc::ENOSYS) {
            ksft::skip!("this kernel has a single user (no CONFIG_MULTIUSER): {e}");
        }
    }
    let o = rkvm_as(
        Some(65534),
        &["run", "--device", &device(ctx), &guest("hello.bin")],
    )?;
    check_failure(&o, 125, "permission denied")
}

/// A missing guest file (125).
fn error_missing_guest(ctx: &Ctx) -> TestResult {
    let o = rkvm(&["run", "--device", &device(ctx), "/no/such/guest.bin"])?;
    check_failure(&o, 125, "guest file /no/such/guest.bin does not exist")
}

/// A guest larger than the memory given (2).
fn error_guest_too_large(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &["--mem", "1M"], "primes.elf")?;
    check_failure(&o, 2, "do not fit in 1 MiB of guest memory")
}

/// Bad sizes and addresses (2).
fn error_bad_sizes_and_addresses(ctx: &Ctx) -> TestResult {
    let o = run_guest(ctx, &["--mem", "3"], "hello.bin")?;
    check_failure(&o, 2, "--mem 3 is out of range")?;
    let o = run_guest(ctx, &["--mem", "lots"], "hello.bin")?;
    check_failure(&o, 2, "is not a size")?;
    let o = run_guest(ctx, &["--load", "0x1000"], "hello.bin")?;
    check_failure(&o, 2, "where rkvm keeps the GDT and page tables")?;
    let o = run_guest(ctx, &["--mem", "2M", "--load", "0x1fffe0"], "hello.bin")?;
    check_failure(&o, 2, "do not fit")
}

/// A guest that triple-faults (UD2 with no IDT) is reported with its
/// registers (126).
fn error_triple_fault_with_register_dump(ctx: &Ctx) -> TestResult {
    let path = std::env::temp_dir().join(format!("rkvm-ud2-{}.bin", std::process::id()));
    std::fs::write(&path, [0x0f, 0x0b])
        .map_err(|e| Status::Fail(format!("writing {}: {e}", path.display())))?;
    let o = rkvm(&["run", "--device", &device(ctx), &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    let o = o?;
    check_failure(&o, 126, "guest triple fault on vCPU 0 (KVM_EXIT_SHUTDOWN)")?;
    // On VMX the dump is the state at the fault; on SVM the hypervisor
    // (KVM's shutdown_interception(), and rkvm likewise) resets the vCPU,
    // and the tool says so.
    let at_fault = o.stderr.contains("rip 0000000000100000");
    let reset = o.stderr.contains("these are the vCPU's reset values")
        && o.stderr.contains("rip 000000000000fff0");
    check!(
        at_fault || reset,
        "the dump shows the faulting RIP, or says the vCPU was reset: {}",
        o.stderr
    );
    Ok(())
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            hello_prints_through_the_serial_port,
            real_mode_guest_sets_the_exit_status,
            mmio_guest_talks_to_the_mmio_device,
            irq_guest_takes_injected_timer_interrupts,
            rust_elf_guest_computes_primes,
            trace_and_stats_show_every_exit,
            two_vcpus_run_and_stop_together,
            info_reports_the_device,
            error_missing_device,
            error_permission_denied,
            error_missing_guest,
            error_guest_too_large,
            error_bad_sizes_and_addresses,
            error_triple_fault_with_register_dump,
        ],
    )
}
