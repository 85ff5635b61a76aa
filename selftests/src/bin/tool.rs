//! The rkvm tool (`userspace/rkvm-tool`, installed as `/usr/bin/rkvm` in
//! the test VM) runs every demo guest with the expected output and exit
//! status, traces and counts exits, reports the device, and fails with
//! its one-line messages and statuses. The suite runs this program against
//! /dev/rkvm and /dev/kvm, so the same binary is proved on both.
//!
//! `rkvm boot` boots the test kernel (`/usr/share/rkvm/linux`, with the
//! initramfs of `scripts/vm/guest-init`) to user space with one and two
//! vCPUs, takes console input, and powers off with status 0.
//!
//! Usage: `tool [DEVICE]` (default `/dev/rkvm`). `RKVM_TOOL` and
//! `RKVM_GUESTS` override where the tool and the guests are.

use std::io::{Read, Write};
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ksft::{Status, TestResult, check, check_eq, diag, fail, skip, tests};
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

/// Who runs the tool: root (`None` in [`rkvm_as`]), or this user
/// ([`run_as_user`]).
#[derive(Clone, Copy)]
struct User {
    uid: u32,
    /// The only group: no supplementary groups.
    gid: u32,
    /// `ulimit -l` in KiB (both limits), if set.
    memlock_kib: Option<u64>,
}

/// `nobody`: no group with access to the device.
const NOBODY: User = User {
    uid: 65534,
    gid: 65534,
    memlock_kib: None,
};

/// Runs `rkvm ARGS` as `user` (root if `None`) and collects what it did.
fn rkvm_as(user: Option<User>, args: &[&str]) -> Result<Outcome, Status> {
    let o = match user {
        None => {
            let out = Command::new(tool_path())
                .args(args)
                .output()
                .map_err(|e| Status::Fail(format!("cannot run {}: {e}", tool_path())))?;
            Outcome {
                status: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Some(u) => run_as_user(u, args)?,
    };
    if o.status != 0 {
        diag!("rkvm {} -> status {}", args.join(" "), o.status);
        for line in o.stderr.lines().take(12) {
            diag!("  stderr: {line}");
        }
    }
    Ok(o)
}

/// The exit status of [`run_as_user`]'s child when it could not become
/// the user or run the tool.
const AS_USER_SETUP_FAILED: i32 = 120;

/// Runs the tool as `user`: a forked child (`kvm_abi::process::fork`)
/// writes its stdout and stderr to files, sets its locked-memory limit,
/// drops its groups, sets its group and user ids and `execv`s the tool.
/// Not `std::process::Command::uid`: std's spawn fails with `ENOSYS` on
/// the test kernel whenever it forks instead of using `posix_spawn` (any
/// `pre_exec`, even one doing nothing, makes it fork), and busybox 1.35's
/// `setpriv` cannot change ids.
fn run_as_user(user: User, args: &[&str]) -> Result<Outcome, Status> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let base = std::env::temp_dir().join(format!("rkvm-as-user-{}", std::process::id()));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let create = |p: &std::path::Path| {
        std::fs::File::create(p).map_err(|e| Status::Fail(format!("{}: {e}", p.display())))
    };
    let (out, err) = (create(&out_path)?, create(&err_path)?);
    // Nothing on stdin, as `Command::output` gives: `rkvm boot` would
    // otherwise take the harness's console for its guest.
    let null =
        std::fs::File::open("/dev/null").map_err(|e| Status::Fail(format!("/dev/null: {e}")))?;
    let argv: Vec<CString> = std::iter::once(tool_path().as_str())
        .chain(args.iter().copied())
        .map(|a| CString::new(a).unwrap_or_default())
        .collect();
    let child = kvm_abi::process::fork(|| {
        let limit = user.memlock_kib.map(|k| libc::rlimit {
            rlim_cur: k << 10,
            rlim_max: k << 10,
        });
        // In the forked child, which has one thread: each call below only
        // changes this process (its descriptors 0 to 2, its limit, its ids).
        // SAFETY: dup2 of an open descriptor onto stdin.
        let ok = unsafe { libc::dup2(null.as_raw_fd(), 0) } == 0
            // SAFETY: dup2 of an open descriptor onto stdout.
            && unsafe { libc::dup2(out.as_raw_fd(), 1) } == 1
            // SAFETY: dup2 of an open descriptor onto stderr.
            && unsafe { libc::dup2(err.as_raw_fd(), 2) } == 2
            // SAFETY: setrlimit reads the one rlimit `l` points to.
            && limit.is_none_or(|l| unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const l) } == 0)
            // SAFETY: an empty group list: no pointer is read.
            && unsafe { libc::setgroups(0, std::ptr::null()) } == 0
            // SAFETY: plain id changes of this process.
            && unsafe { libc::setgid(user.gid) } == 0
            // SAFETY: as above.
            && unsafe { libc::setuid(user.uid) } == 0;
        if ok {
            let _ = nix::unistd::execv(&argv[0], &argv);
        }
        AS_USER_SETUP_FAILED
    })
    .map_err(|e| Status::Fail(format!("fork: {e}")))?;
    let exit = child
        .wait()
        .map_err(|e| Status::Fail(format!("waiting for the tool: {e}")))?;
    let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_default();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    let status = match exit {
        kvm_abi::process::Exit::Code(AS_USER_SETUP_FAILED) => {
            fail!(
                "could not run the tool as user {}, group {}",
                user.uid,
                user.gid
            )
        }
        kvm_abi::process::Exit::Code(c) => c,
        kvm_abi::process::Exit::Signal(sig) => 128 + sig as i32,
    };
    Ok(Outcome {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
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
    // Device nodes are 0600 root: nobody (65534) may not open them.
    let o = rkvm_as(
        Some(NOBODY),
        &["run", "--device", &device(ctx), &guest("hello.bin")],
    )?;
    check_failure(&o, 125, "permission denied")
}

/// The group [`a_user_in_the_device_group_runs_guests_within_the_memlock_limit`]
/// gives the device to, as a udev rule gives it group `kvm` (`udev/60-rkvm.rules`):
/// 36 is the `kvm` group's id on Fedora; any group would do.
const DEVICE_GROUP: u32 = 36;

/// Puts a device node's owner, group and mode back when dropped.
struct NodeRestore {
    path: std::path::PathBuf,
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Drop for NodeRestore {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::os::unix::fs::chown(&self.path, Some(self.uid), Some(self.gid));
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(self.mode));
    }
}

/// KVM's convention for users, on rkvm: the device node root's and group
/// [`DEVICE_GROUP`]'s, mode 0660 (what `udev/60-rkvm.rules` sets; the
/// test VM has no udev, so the test sets it and puts the node back). A
/// user of that group, not root, runs a guest and `rkvm info`; a user of
/// no such group is refused (125). And the memory consequence: rkvm pins
/// the guest memory it maps and counts it against the user's
/// `RLIMIT_MEMLOCK` (docs/abi.md; KVM does not pin). With `ulimit -l 8`
/// (two pages) the guest cannot get its first pages mapped: on rkvm the
/// tool fails with 125 and says which limit and how to lift it; on KVM the
/// same run succeeds. With the kernel's default for users (8 MiB) a Linux
/// guest of 160 MiB fails the same way on rkvm as soon as its kernel
/// unpacks itself (KVM would boot it: not run here, the boots below do).
fn a_user_in_the_device_group_runs_guests_within_the_memlock_limit(ctx: &Ctx) -> TestResult {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&ctx.path)
        .map_err(|e| Status::Fail(format!("cannot stat {}: {e}", ctx.path.display())))?;
    let _restore = NodeRestore {
        path: ctx.path.clone(),
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
    };
    std::os::unix::fs::chown(&ctx.path, Some(0), Some(DEVICE_GROUP))
        .map_err(|e| Status::Fail(format!("chown {}: {e}", ctx.path.display())))?;
    std::fs::set_permissions(&ctx.path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Status::Fail(format!("chmod {}: {e}", ctx.path.display())))?;
    let member = User {
        uid: 65534,
        gid: DEVICE_GROUP,
        memlock_kib: None,
    };
    let dev = device(ctx);
    let hello = guest("hello.bin");

    let o = rkvm_as(Some(member), &["run", "--device", &dev, &hello])?;
    check_eq!(o.status, 0, "a member's run: exit status");
    check_eq!(
        o.stdout.as_str(),
        "Hello from a guest of rkvm!\n",
        "a member's run: output"
    );
    let o = rkvm_as(Some(member), &["info", "--device", &dev])?;
    check_eq!(o.status, 0, "a member's rkvm info: exit status");

    let o = rkvm_as(Some(NOBODY), &["run", "--device", &dev, &hello])?;
    check_failure(&o, 125, "permission denied")?;

    let tight = User {
        memlock_kib: Some(8),
        ..member
    };
    let o = rkvm_as(Some(tight), &["run", "--device", &dev, &hello])?;
    if ctx.is_rkvm() {
        check_failure(&o, 125, "locked-memory limit (ulimit -l, now 8 KiB)")?;
    } else {
        check_eq!(
            o.status,
            0,
            "KVM pins nothing: exit status under ulimit -l 8"
        );
    }

    if ctx.is_rkvm() {
        let user_default = User {
            memlock_kib: Some(8192),
            ..member
        };
        let o = rkvm_as(
            Some(user_default),
            &[
                "boot",
                "--device",
                &dev,
                "--mem",
                "160M",
                "--kernel",
                &format!("{LINUX_DIR}/bzImage"),
                "--initrd",
                &format!("{LINUX_DIR}/initrd"),
            ],
        )?;
        check_eq!(o.status, 125, "rkvm boot under ulimit -l 8192: exit status");
        check!(
            o.stderr
                .contains("locked-memory limit (ulimit -l, now 8192 KiB)"),
            "rkvm boot under ulimit -l 8192 names the limit: {:?}",
            o.stderr.lines().last()
        );
    }
    Ok(())
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

/// Where the test VM keeps the Linux guest (scripts/mkinitramfs.sh).
const LINUX_DIR: &str = "/usr/share/rkvm/linux";
/// How long one `rkvm boot` of the test kernel may take (about 15 s under
/// QEMU's SVM).
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// The line the guest's init prints once user space runs.
fn guest_line(cpus: u32) -> String {
    format!("rkvm-guest: user space reached, {cpus} CPUs online")
}

/// Runs `rkvm boot` of the test kernel on the device with `extra`
/// options and `input` on its stdin, typed once init's line is on the
/// console (as a user would: bytes that reach a UART before the guest's
/// driver opens it are gone); `None` if it did not end within
/// [`BOOT_TIMEOUT`] (it is killed).
fn boot_once(ctx: &Ctx, extra: &[&str], input: &[u8]) -> Result<Option<Outcome>, Status> {
    let dev = device(ctx);
    // Under QEMU's SVM the boot's vCPU threads share one of the test VM's
    // CPUs, as the `qemu` program's nested boots (docs/testing.md, "An open bug").
    let _one_cpu = rkvm_selftests::cpu::one_cpu_under_qemu()?;
    let mut child = Command::new(tool_path())
        .args(["boot", "--device", &dev])
        .args(["--kernel", &format!("{LINUX_DIR}/bzImage")])
        .args(["--initrd", &format!("{LINUX_DIR}/initrd")])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Status::Fail(format!("cannot run {}: {e}", tool_path())))?;
    // The console can outgrow a pipe: read both streams while it runs.
    // The stdout reader types the input once the console shows init's
    // line; stdin closes then (at once when there is no input).
    let reader = |pipe: Option<Box<dyn Read + Send>>, mut typist: Option<(ChildStdin, Vec<u8>)>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            let Some(mut p) = pipe else {
                return String::new();
            };
            loop {
                match p.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                }
                if typist.is_some() && String::from_utf8_lossy(&text).contains("rkvm-guest: ") {
                    if let Some((mut stdin, input)) = typist.take() {
                        let _ = stdin.write_all(&input);
                    }
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let typist = child
        .stdin
        .take()
        .filter(|_| !input.is_empty())
        .map(|s| (s, input.to_vec()));
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        typist,
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        None,
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > BOOT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => fail!("waiting for rkvm boot: {e}"),
        }
    };
    let o = Outcome {
        status: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    diag!(
        "rkvm boot {} -> {} in {:.1} s",
        extra.join(" "),
        if status.is_some() {
            format!("status {}", o.status)
        } else {
            "timed out".into()
        },
        start.elapsed().as_secs_f64()
    );
    Ok(status.map(|_| o))
}

/// Whether this boot runs under Bochs, where a nested Linux boot costs
/// about two minutes of the emulator's time (20 s by the test VM's clock):
/// only rkvm's column runs the one boot that matters most there, the
/// two-vCPU one (Linux's AP trampoline found two VMX bugs); kvm_intel's
/// results are recorded (docs/testing.md, "KVM's recorded results"), and
/// the speculation pass (`RKVM_SPECULATION_PASS`, scripts/vm/run-suite.sh)
/// has had its entries from the rest of `tool`. QEMU's runs have them all.
fn bochs_policy(ctx: &Ctx, the_bochs_boot: bool) -> TestResult {
    if rkvm_selftests::emulator() != "bochs" {
        return Ok(());
    }
    if std::env::var("RKVM_SPECULATION_PASS").is_ok_and(|v| v == "1") {
        skip!("under Bochs the speculation pass skips the nested Linux boots (two minutes each)");
    }
    if !ctx.is_rkvm() {
        skip!(
            "under Bochs kvm_intel's results are recorded (docs/testing.md, \"KVM's recorded \
             results\"): a nested Linux boot costs two minutes there"
        );
    }
    if !the_bochs_boot {
        skip!(
            "under Bochs only the two-vCPU boot runs (two minutes each); QEMU's run has this one"
        );
    }
    Ok(())
}

/// How a boot of the test kernel ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// ACPI S5 through the FADT's PM1a control block.
    PowerOff,
    /// A reboot, through the FADT's reset register.
    Reset,
}

/// Boots the test kernel with `extra` and `input` and checks what every
/// boot must show: init's line with `online` CPUs online, the kernel
/// ending the way `ending` says (entering ACPI S5, or restarting, which
/// rkvm boot reports on stderr), and status 0.
/// Under QEMU's SVM a failed boot is followed by one more, as in the
/// `qemu` selftest (docs/testing.md, "An open bug"); on the KASAN kernel
/// there the boots are skipped, as there.
fn boots_linux(
    ctx: &Ctx,
    (cpus, online): (u32, u32),
    extra: &[&str],
    input: &[u8],
    ending: Ending,
) -> Result<Outcome, Status> {
    let qemu = rkvm_selftests::emulator() == "qemu";
    if qemu && rkvm_selftests::kasan_kernel() {
        skip!(
            "under QEMU's SVM on the KASAN kernel, nested Linux boots corrupt the test VM's kernel \
             with kvm_amd as with rkvm (docs/testing.md, \"An open bug\"); they run on the other kernel"
        );
    }
    let boots = if qemu { 2 } else { 1 };
    let cpus_arg = cpus.to_string();
    let mut args = vec!["--cpus", cpus_arg.as_str()];
    args.extend_from_slice(extra);
    let mut n = 1;
    loop {
        let result = boot_once(ctx, &args, input).and_then(|o| {
            let Some(o) = o else {
                fail!("rkvm boot did not end within {} s", BOOT_TIMEOUT.as_secs());
            };
            let check_boot = || -> TestResult {
                check!(
                    o.stdout.contains(&guest_line(online)),
                    "the console shows {:?}",
                    guest_line(online)
                );
                let s5 = o
                    .stdout
                    .contains("ACPI: PM: Preparing to enter system sleep state S5");
                let reset = o.stderr.contains("rkvm: the guest reset the machine");
                // Linux prepares S5 on a restart too (its ACPI reboot
                // path); what it does next tells the two apart.
                match ending {
                    Ending::PowerOff => check!(
                        s5 && !reset && o.stdout.contains("reboot: Power down"),
                        "the guest powered off through ACPI S5"
                    ),
                    Ending::Reset => check!(
                        reset && o.stdout.contains("reboot: Restarting system"),
                        "the guest restarted and rkvm boot said so"
                    ),
                }
                check_eq!(o.status, 0, "rkvm boot's exit status");
                Ok(())
            };
            match check_boot() {
                Ok(()) => Ok(o),
                Err(e) => {
                    for line in o
                        .stdout
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .iter()
                        .rev()
                    {
                        diag!("  console: {line}");
                    }
                    for line in o.stderr.lines().take(12) {
                        diag!("  stderr: {line}");
                    }
                    Err(e)
                }
            }
        });
        match result {
            Err(Status::Fail(why)) if n < boots => {
                diag!("boot {n} of {boots} failed under QEMU's SVM ({why}): booting once more");
                n += 1;
            }
            result => return result,
        }
    }
}

/// `rkvm boot` starts the test kernel on one vCPU at its 64-bit entry
/// point: the kernel reads the zero page, the e820 map and the ACPI
/// tables, its console comes out of the UART, init runs from the initrd,
/// and the ACPI power-off ends rkvm with status 0; `--stats` counts the
/// exits (port I/O only: the irqchip and PIT are in the kernel).
fn linux_boots_to_user_space_on_one_vcpu(ctx: &Ctx) -> TestResult {
    bochs_policy(ctx, false)?;
    let o = boots_linux(ctx, (1, 1), &["--stats"], b"", Ending::PowerOff)?;
    check!(o.stdout.contains("Linux version"), "the kernel's banner");
    check!(
        o.stderr.contains("exits of 1 vCPU") && o.stderr.contains("KVM_EXIT_IO"),
        "--stats counts the exits: {}",
        o.stderr
    );
    Ok(())
}

/// With two vCPUs the kernel finds both in the MADT and starts the second
/// through INIT and SIPI (its thread waits in KVM_RUN, which returns
/// EAGAIN at the SIPI); typed input reaches a shell on the console
/// through the UART's receive interrupt (IRQ 4 by KVM_IRQ_LINE), and the
/// shell's `poweroff` ends rkvm boot with status 0.
fn linux_boots_with_two_vcpus_and_a_shell_on_the_console(ctx: &Ctx) -> TestResult {
    bochs_policy(ctx, true)?;
    let o = boots_linux(
        ctx,
        (2, 2),
        &["--append", "console=ttyS0 panic=-1 rkvm_guest=shell"],
        b"echo typed-$((6*7))\npoweroff -f\n",
        Ending::PowerOff,
    )?;
    check!(
        o.stdout.contains("typed-42"),
        "the shell ran the typed command (its output, not the echo of the typing)"
    );
    Ok(())
}

/// The guest's reboot (ACPI's reset register) ends rkvm boot with status
/// 0 and a line on stderr; and with `maxcpus=1` the second vCPU never
/// gets its SIPI: its thread still sleeps in KVM_RUN, waiting, when the
/// guest ends, and only the kick (a signal, `EINTR`) lets rkvm boot exit.
fn a_reboot_ends_rkvm_boot_with_a_vcpu_never_started(ctx: &Ctx) -> TestResult {
    bochs_policy(ctx, false)?;
    boots_linux(
        ctx,
        (2, 1),
        &[
            "--append",
            "console=ttyS0 panic=-1 maxcpus=1 rkvm_guest=reboot",
        ],
        b"",
        Ending::Reset,
    )
    .map(|_| ())
}

/// `rkvm boot`'s mistakes: one line each, with the tool's statuses.
fn error_boot_bad_kernel_memory_and_cpus(ctx: &Ctx) -> TestResult {
    let dev = device(ctx);
    let bz = format!("{LINUX_DIR}/bzImage");
    let rd = format!("{LINUX_DIR}/initrd");
    let boot = |extra: &[&str]| {
        let mut a = vec!["boot", "--device", dev.as_str()];
        a.extend_from_slice(extra);
        rkvm(&a)
    };
    check_failure(
        &boot(&["--kernel", "/no/such/bzImage"])?,
        125,
        "kernel image /no/such/bzImage does not exist",
    )?;
    check_failure(
        &boot(&["--kernel", &guest("hello.bin")])?,
        125,
        "not a Linux kernel image",
    )?;
    check_failure(
        &boot(&["--kernel", &guest("primes.elf")])?,
        125,
        "not a Linux bzImage",
    )?;
    // The kernel runs from `pref_address` and needs `init_size` bytes
    // there (boot.rst): 32 MiB is too little for the test kernels.
    let header = std::fs::read(&bz).map_err(|e| Status::Fail(format!("reading {bz}: {e}")))?;
    let field = |off: usize, len: usize| {
        header
            .get(off..off + len)
            .map(|b| b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
            .unwrap_or(0)
    };
    let end = field(0x258, 8).max(1 << 20) + field(0x260, 4);
    check!(
        end > 32 << 20,
        "the test kernel needs more than 32 MiB ({end:#x})"
    );
    check_failure(
        &boot(&["--kernel", &bz, "--mem", "32M"])?,
        2,
        "is too little",
    )?;
    // With room for the kernel and 4 MiB, an 8 MiB initrd does not fit.
    let mem = format!("{}M", end.div_ceil(1 << 20) + 4);
    let big = std::env::temp_dir().join(format!("rkvm-initrd-{}", std::process::id()));
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(8 << 20))
        .map_err(|e| Status::Fail(format!("creating {}: {e}", big.display())))?;
    let o = boot(&[
        "--kernel",
        &bz,
        "--initrd",
        &big.display().to_string(),
        "--mem",
        &mem,
    ]);
    let _ = std::fs::remove_file(&big);
    check_failure(&o?, 2, "does not fit")?;
    check_failure(
        &boot(&["--kernel", &bz, "--initrd", "/no/such/initrd"])?,
        125,
        "initrd /no/such/initrd does not exist",
    )?;
    check_failure(&boot(&["--kernel", &bz, "--cpus", "9"])?, 2, "give 1 to 8")?;
    check_failure(&boot(&["--initrd", &rd])?, 2, "needs --kernel")
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
            a_user_in_the_device_group_runs_guests_within_the_memlock_limit,
            error_missing_guest,
            error_guest_too_large,
            error_bad_sizes_and_addresses,
            error_triple_fault_with_register_dump,
            linux_boots_to_user_space_on_one_vcpu,
            linux_boots_with_two_vcpus_and_a_shell_on_the_console,
            a_reboot_ends_rkvm_boot_with_a_vcpu_never_started,
            error_boot_bad_kernel_memory_and_cpus,
        ],
    )
}
