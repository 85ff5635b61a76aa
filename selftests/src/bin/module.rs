//! rkvm as a kernel module: open fds and mappings pin it, and it refuses to
//! share the processor's virtualization extensions with KVM's vendor module
//! (kvm_amd or kvm_intel) in either load order.
//!
//! Runs only against rkvm, as root, with the module file at `$RKVM_KO` or
//! `/lib/modules/*/extra/rkvm.ko`; otherwise every test is skipped. Uses
//! insmod, rmmod, modprobe and dmesg. Leaves the modules as it found them.
//!
//! Usage: `module [DEVICE]` (default `/dev/rkvm`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ksft::{Status, TestResult, check, check_errno, check_ok, diag, skip, tests};
use kvm_abi::{GuestMemory, MemoryRegion, PAGE_SIZE, System};
use rkvm_selftests::{cpu, device_path, is_rkvm_path};

const RKVM: &str = "rkvm";
/// VM_HSAVE_PA, the SVM host save area's address. APM Vol. 2 15.30.4.
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
const KVM: &str = "kvm";

/// What the program needs, found before any test runs.
struct Env {
    /// The rkvm device node.
    path: PathBuf,
    /// rkvm.ko.
    ko: PathBuf,
    /// kvm_amd or kvm_intel, by the processor's flags; `None` if neither.
    vendor: Option<&'static str>,
    /// Which of rkvm, the vendor module and kvm were loaded at start.
    initial: Loaded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loaded {
    rkvm: bool,
    vendor: bool,
    kvm: bool,
}

/// Whether loadable module `name` is loaded (listed in /proc/modules).
fn is_loaded(name: &str) -> bool {
    std::fs::read_to_string("/proc/modules")
        .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().next() == Some(name)))
}

fn loaded(env: &Env) -> Loaded {
    Loaded {
        rkvm: is_loaded(RKVM),
        vendor: env.vendor.is_some_and(is_loaded),
        kvm: is_loaded(KVM),
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// rkvm.ko: `$RKVM_KO`, else `extra/rkvm.ko` of the running kernel's module
/// directory, else of any directory under /lib/modules.
fn find_ko() -> Result<PathBuf, String> {
    if let Some(ko) = std::env::var_os("RKVM_KO") {
        let ko = PathBuf::from(ko);
        return if ko.is_file() {
            Ok(ko)
        } else {
            Err(format!("RKVM_KO={} does not exist", ko.display()))
        };
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let running = Path::new("/lib/modules")
        .join(release.trim())
        .join("extra/rkvm.ko");
    if running.is_file() {
        return Ok(running);
    }
    std::fs::read_dir("/lib/modules")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|d| d.path().join("extra/rkvm.ko"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no rkvm.ko: set RKVM_KO or install it as /lib/modules/*/extra/rkvm.ko".to_owned()
        })
}

fn vendor_module() -> Option<&'static str> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find_map(|l| l.strip_prefix("flags"))?;
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("svm") {
        Some("kvm_amd")
    } else if has("vmx") {
        Some("kvm_intel")
    } else {
        None
    }
}

impl Env {
    fn new() -> Result<Self, String> {
        let path = device_path();
        if !is_rkvm_path(&path) {
            return Err(format!(
                "{} is not rkvm: the module tests only apply to rkvm",
                path.display()
            ));
        }
        if effective_uid() != Some(0) {
            return Err("not root: loading and unloading modules needs root".to_owned());
        }
        let ko = find_ko()?;
        let mut env = Self {
            path,
            ko,
            vendor: vendor_module(),
            initial: Loaded {
                rkvm: false,
                vendor: false,
                kvm: false,
            },
        };
        env.initial = loaded(&env);
        Ok(env)
    }

    fn vendor(&self) -> Result<&'static str, Status> {
        self.vendor
            .ok_or_else(|| Status::Skip("the processor reports neither svm nor vmx".to_owned()))
    }
}

/// The result of running a command: success, and its output for diagnostics.
struct Ran {
    ok: bool,
    output: String,
}

fn run(cmd: &str, args: &[&str]) -> Result<Ran, Status> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| Status::Skip(format!("cannot run {cmd}: {e}")))?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Ran {
        ok: out.status.success(),
        output: output.trim().to_owned(),
    })
}

fn insmod(env: &Env) -> Result<Ran, Status> {
    let ko = env.ko.to_string_lossy().into_owned();
    run("insmod", &[&ko])
}

fn rmmod(names: &[&str]) -> Result<Ran, Status> {
    run("rmmod", names)
}

/// Waits for the device node after insmod (devtmpfs creates it at once;
/// udev may take a moment).
fn wait_for_device(path: &Path) -> TestResult {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > Duration::from_secs(5) {
            ksft::fail!("{} did not appear after insmod", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Loads rkvm if needed (removing a vendor module a failed test left).
fn ensure_rkvm(env: &Env) -> TestResult {
    remove_vendor_modules(env)?;
    if !is_loaded(RKVM) {
        let r = insmod(env)?;
        check!(r.ok, "insmod {}: {}", env.ko.display(), r.output);
    }
    wait_for_device(&env.path)
}

/// Unloads the vendor module and kvm if they are loaded.
fn remove_vendor_modules(env: &Env) -> TestResult {
    if let Some(v) = env.vendor.filter(|v| is_loaded(v)) {
        let r = rmmod(&[v])?;
        check!(r.ok, "rmmod {v}: {}", r.output);
    }
    if is_loaded(KVM) {
        let r = rmmod(&[KVM])?;
        check!(r.ok, "rmmod {KVM}: {}", r.output);
    }
    Ok(())
}

/// The device works: it opens and creates a VM.
fn check_rkvm_works(env: &Env) -> TestResult {
    let sys = check_ok!(System::open(&env.path));
    let _vm = check_ok!(sys.create_vm(0));
    Ok(())
}

/// `rmmod rkvm` must fail now, and leave rkvm loaded.
fn check_rmmod_refused(what: &str) -> TestResult {
    let r = rmmod(&[RKVM])?;
    diag!(
        "rmmod rkvm with {what}: {}",
        if r.ok { "succeeded" } else { &r.output }
    );
    check!(!r.ok, "rmmod rkvm succeeded with {what}");
    check!(is_loaded(RKVM), "rkvm unloaded with {what}");
    Ok(())
}

/// `rmmod rkvm` must succeed now; rkvm is loaded again afterwards.
fn check_rmmod_allowed(env: &Env, what: &str) -> TestResult {
    let r = rmmod(&[RKVM])?;
    check!(r.ok, "rmmod rkvm after {what}: {}", r.output);
    check!(!is_loaded(RKVM), "rkvm still listed after rmmod");
    ensure_rkvm(env)
}

/// With SVM, the CPUs whose EFER.SVME is not `on`; skips where the msr
/// driver or SVM is missing.
fn svme_not(on: bool) -> Result<Vec<u32>, Status> {
    if cpu::extension() != Some(cpu::Extension::Svm) {
        skip!("not an SVM CPU: the VMX backend checks its own enabling");
    }
    if let Err(e) = cpu::msr_readable() {
        skip!("cannot read MSRs ({e}); needs CONFIG_X86_MSR");
    }
    cpu::cpus_with_svme_not(on).map_err(Status::Fail)
}

fn load_turns_svm_on_and_unload_off_on_every_cpu(env: &Env) -> TestResult {
    ensure_rkvm(env)?;
    let off = svme_not(true)?;
    check!(
        off.is_empty(),
        "rkvm is loaded but EFER.SVME is clear on CPUs {off:?}"
    );
    let r = rmmod(&[RKVM])?;
    check!(r.ok, "rmmod rkvm: {}", r.output);
    let on = svme_not(false)?;
    check!(
        on.is_empty(),
        "rkvm is unloaded but EFER.SVME is still set on CPUs {on:?}"
    );
    ensure_rkvm(env)?;
    let off = svme_not(true)?;
    check!(
        off.is_empty(),
        "rkvm was loaded again but EFER.SVME is clear on CPUs {off:?}"
    );
    Ok(())
}

fn rmmod_fails_while_the_device_is_open(env: &Env) -> TestResult {
    ensure_rkvm(env)?;
    let sys = check_ok!(System::open(&env.path));
    check_rmmod_refused("/dev/rkvm open")?;
    drop(sys);
    check_rmmod_allowed(env, "closing /dev/rkvm")
}

fn rmmod_fails_while_the_stats_file_is_open(env: &Env) -> TestResult {
    ensure_rkvm(env)?;
    let stats = check_ok!(std::fs::File::open(rkvm_selftests::RKVM_STATS));
    check_rmmod_refused("/sys/kernel/debug/rkvm/stats open")?;
    drop(stats);
    check_rmmod_allowed(env, "closing the stats file")
}

fn rmmod_fails_while_a_vm_fd_is_open(env: &Env) -> TestResult {
    ensure_rkvm(env)?;
    let vm = check_ok!(check_ok!(System::open(&env.path)).create_vm(0));
    check_rmmod_refused("only a VM fd open")?;
    drop(vm);
    check_rmmod_allowed(env, "closing the VM fd")
}

fn rmmod_fails_while_a_vcpu_fd_is_open(env: &Env) -> TestResult {
    ensure_rkvm(env)?;
    let vcpu = check_ok!(check_ok!(check_ok!(System::open(&env.path)).create_vm(0)).create_vcpu(0));
    check_rmmod_refused("only a vCPU fd open")?;
    drop(vcpu);
    check_rmmod_allowed(env, "closing the vCPU fd")
}

/// A guest_memfd holds its VM and a module reference of its own (its inode
/// is not the shared anonymous one).
fn rmmod_fails_while_a_guest_memfd_is_open(env: &Env) -> TestResult {
    ensure_rkvm(env)?;
    let vm = check_ok!(check_ok!(System::open(&env.path)).create_vm(0));
    let gmem = check_ok!(vm.create_guest_memfd(4096, 0));
    drop(vm);
    check_rmmod_refused("only a guest_memfd open")?;
    drop(gmem);
    check_rmmod_allowed(env, "closing the guest_memfd")
}

fn rmmod_fails_while_a_vcpu_mapping_exists(env: &Env) -> TestResult {
    ensure_rkvm(env)?;
    let run = {
        let sys = check_ok!(System::open(&env.path));
        let size = check_ok!(sys.vcpu_mmap_size());
        let vm = check_ok!(sys.create_vm(0));
        let mem = Arc::new(check_ok!(GuestMemory::new(PAGE_SIZE)));
        check_ok!(vm.set_user_memory_region(&MemoryRegion::new(0, 0, &mem)));
        check_ok!(check_ok!(vm.create_vcpu(0)).map_run(size))
    };
    check_rmmod_refused("only a kvm_run mapping left")?;
    drop(run);
    check_rmmod_allowed(env, "unmapping kvm_run")
}

/// On SVM rkvm holds EFER.SVME from load to unload, so the vendor module
/// cannot load beside it. On VMX rkvm holds VMX only around each guest
/// entry (module/vmx/mod.rs says why), so kvm_intel loads; then rkvm must
/// refuse to enter a guest (`EBUSY`) while kvm_intel has VMX on, and enter
/// again once kvm_intel is gone.
fn vendor_module_and_rkvm_never_share_the_hardware(env: &Env) -> TestResult {
    if cpu::extension() == Some(cpu::Extension::Vmx) {
        return vmx_run_refused_while_kvm_intel_is_loaded(env);
    }
    let vendor = env.vendor()?;
    ensure_rkvm(env)?;
    let r = run("modprobe", &[vendor])?;
    diag!(
        "modprobe {vendor}: {}",
        if r.ok { "succeeded" } else { &r.output }
    );
    let vendor_loaded = is_loaded(vendor);
    // Leave only rkvm loaded whatever happened (modprobe may have loaded kvm).
    remove_vendor_modules(env)?;
    check!(!r.ok, "modprobe {vendor} succeeded while rkvm is loaded");
    check!(!vendor_loaded, "{vendor} is loaded beside rkvm");
    check!(is_loaded(RKVM), "rkvm was unloaded");
    check_rkvm_works(env)
}

fn vmx_run_refused_while_kvm_intel_is_loaded(env: &Env) -> TestResult {
    let vendor = env.vendor()?;
    ensure_rkvm(env)?;
    let sys = check_ok!(System::open(&env.path));
    let vm = check_ok!(sys.create_vm(0));
    let vcpu = check_ok!(vm.create_vcpu(0));
    let _run = check_ok!(vcpu.map_run(check_ok!(sys.vcpu_mmap_size())));
    // The vCPU has no memory: it exits at its first fetch, which is enough.
    check_ok!(vcpu.run());
    let r = run("modprobe", &[vendor])?;
    diag!(
        "modprobe {vendor}: {}",
        if r.ok { "succeeded" } else { &r.output }
    );
    let refused = vcpu.run();
    remove_vendor_modules(env)?;
    check!(r.ok, "modprobe {vendor} beside rkvm: {}", r.output);
    check_errno!(
        refused,
        libc::EBUSY,
        "KVM_RUN of rkvm while {vendor} holds VMX"
    );
    check_ok!(vcpu.run());
    Ok(())
}

/// Marks the kernel log so that only later messages are searched.
fn kmsg_marker() -> Result<String, Status> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let marker = format!("rkvm-selftest-module-{}-{nanos}", std::process::id());
    let mut kmsg = OpenOptions::new().write(true).open("/dev/kmsg")?;
    kmsg.write_all(format!("{marker}\n").as_bytes())?;
    Ok(marker)
}

/// Kernel log lines after `marker`.
fn kernel_log_after(marker: &str) -> Result<Vec<String>, Status> {
    let log = run("dmesg", &[])?;
    if !log.ok {
        return Err(Status::Skip(format!("dmesg failed: {}", log.output)));
    }
    let lines: Vec<&str> = log.output.lines().collect();
    let Some(at) = lines.iter().rposition(|l| l.contains(marker)) else {
        return Err(Status::Skip(
            "dmesg does not show the marker written to /dev/kmsg".to_owned(),
        ));
    };
    Ok(lines[at + 1..].iter().map(|l| (*l).to_owned()).collect())
}

/// Unloads rkvm and loads the vendor module (kvm_amd or kvm_intel) in its
/// place; skips (with rkvm loaded again) if the vendor module will not load.
fn vendor_instead_of_rkvm(env: &Env) -> Result<&'static str, Status> {
    let vendor = env.vendor()?;
    if is_loaded(RKVM) {
        let r = rmmod(&[RKVM])?;
        check!(r.ok, "rmmod rkvm: {}", r.output);
    }
    let r = run("modprobe", &[vendor])?;
    if !r.ok {
        let _ = ensure_rkvm(env);
        skip!(
            "modprobe {vendor} failed, so rkvm cannot be tested beside it: {}",
            r.output
        );
    }
    Ok(vendor)
}

fn insmod_rkvm_fails_while_vendor_module_is_loaded(env: &Env) -> TestResult {
    let vendor = vendor_instead_of_rkvm(env)?;
    let marker = kmsg_marker()?;
    let ins = insmod(env)?;
    let log = kernel_log_after(&marker)?;
    let rkvm_loaded = is_loaded(RKVM);
    for line in &log {
        diag!("dmesg: {line}");
    }
    // Back to rkvm alone before judging.
    if rkvm_loaded {
        let _ = rmmod(&[RKVM]);
    }
    ensure_rkvm(env)?;
    check!(!ins.ok, "insmod rkvm.ko succeeded while {vendor} is loaded");
    check!(!rkvm_loaded, "rkvm is loaded beside {vendor}");
    let names_conflict =
        |l: &String| l.contains("rkvm") && (l.contains("in use") || l.contains("busy"));
    check!(
        log.iter().any(names_conflict),
        "no kernel message from rkvm saying the hardware is in use or busy"
    );
    Ok(())
}

fn insmod_rkvm_works_after_vendor_modules_are_removed(env: &Env) -> TestResult {
    let vendor = vendor_instead_of_rkvm(env)?;
    let r = rmmod(&[vendor, KVM])?;
    check!(r.ok, "rmmod {vendor} {KVM}: {}", r.output);
    let ins = insmod(env)?;
    check!(
        ins.ok,
        "insmod rkvm.ko after rmmod {vendor} {KVM}: {}",
        ins.output
    );
    wait_for_device(&env.path)?;
    check_rkvm_works(env)
}

/// Puts rkvm, the vendor module and kvm back as they were at start.
fn restore(env: &Env) -> TestResult {
    let want = env.initial;
    if loaded(env) == want {
        return Ok(());
    }
    if !want.rkvm && is_loaded(RKVM) {
        let r = rmmod(&[RKVM])?;
        check!(r.ok, "rmmod rkvm: {}", r.output);
    }
    if !want.vendor || !want.kvm {
        if let Some(v) = env.vendor.filter(|v| !want.vendor && is_loaded(v)) {
            let r = rmmod(&[v])?;
            check!(r.ok, "rmmod {v}: {}", r.output);
        }
        if !want.kvm && is_loaded(KVM) {
            let r = rmmod(&[KVM])?;
            check!(r.ok, "rmmod {KVM}: {}", r.output);
        }
    }
    if want.kvm && !is_loaded(KVM) {
        let r = run("modprobe", &[KVM])?;
        check!(r.ok, "modprobe {KVM}: {}", r.output);
    }
    if let Some(v) = env.vendor.filter(|v| want.vendor && !is_loaded(v)) {
        let r = run("modprobe", &[v])?;
        check!(r.ok, "modprobe {v}: {}", r.output);
    }
    if want.rkvm && !is_loaded(RKVM) {
        let r = insmod(env)?;
        check!(r.ok, "insmod rkvm.ko: {}", r.output);
        wait_for_device(&env.path)?;
    }
    Ok(())
}

/// A load that one CPU refuses halfway (another hypervisor owns SVM
/// there) must fail, and leave SVM off on every CPU rkvm had turned it on
/// before (the hotplug core rolls the registration back through rkvm's
/// offline hook), and a later load must work. The refusing CPU is the last
/// online one, so the others are enabled first. SVM only: there one CPU can
/// be made to refuse by setting its EFER.SVME through the msr driver.
fn a_load_one_cpu_refuses_is_rolled_back_on_every_cpu(env: &Env) -> TestResult {
    svme_not(true)?;
    let online = check_ok!(cpu::online());
    let Some(&last) = online.last().filter(|_| online.len() >= 2) else {
        skip!("needs two online CPUs, has {online:?}");
    };
    remove_vendor_modules(env)?;
    if is_loaded(RKVM) {
        let r = rmmod(&[RKVM])?;
        check!(r.ok, "rmmod rkvm: {}", r.output);
    }
    let efer = check_ok!(cpu::read_msr(last, cpu::MSR_EFER));
    check_ok!(cpu::write_msr(last, cpu::MSR_EFER, efer | cpu::EFER_SVME));
    let marker = kmsg_marker()?;
    let ins = insmod(env);
    let on = svme_not(false);
    // The save-area pointer rkvm sets when it enables a CPU, back to 0.
    let hsave: Vec<(u32, Result<u64, String>)> = online
        .iter()
        .filter(|&&c| c != last)
        .map(|&c| (c, cpu::read_msr(c, MSR_VM_HSAVE_PA)))
        .collect();
    // Give the CPU back before judging, whatever happened.
    let restored = cpu::write_msr(last, cpu::MSR_EFER, efer);
    if is_loaded(RKVM) {
        let _ = rmmod(&[RKVM]);
    }
    check_ok!(restored);
    let ins = ins?;
    let on = on?;
    for line in kernel_log_after(&marker)? {
        diag!("dmesg: {line}");
    }
    check!(
        !ins.ok,
        "insmod rkvm.ko succeeded although CPU {last} had SVM in use"
    );
    check!(
        on == [last],
        "after the refused load EFER.SVME is set on CPUs {on:?}; expected only CPU {last}, \
         which had it before"
    );
    for (c, pa) in hsave {
        let pa = check_ok!(pa);
        check!(
            pa == 0,
            "after the refused load VM_HSAVE_PA of CPU {c} is {pa:#x}, not 0"
        );
    }
    ensure_rkvm(env)?;
    check_rkvm_works(env)
}

fn modules_are_left_as_found(env: &Env) -> TestResult {
    restore(env)?;
    let now = loaded(env);
    check!(
        now == env.initial,
        "modules at start {:?}, now {now:?}",
        env.initial
    );
    if now.rkvm {
        check_rkvm_works(env)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let env = Env::new();
    let code = ksft::run(
        &env,
        &tests![
            load_turns_svm_on_and_unload_off_on_every_cpu,
            rmmod_fails_while_the_device_is_open,
            rmmod_fails_while_the_stats_file_is_open,
            rmmod_fails_while_a_vm_fd_is_open,
            rmmod_fails_while_a_vcpu_fd_is_open,
            rmmod_fails_while_a_guest_memfd_is_open,
            rmmod_fails_while_a_vcpu_mapping_exists,
            vendor_module_and_rkvm_never_share_the_hardware,
            insmod_rkvm_fails_while_vendor_module_is_loaded,
            insmod_rkvm_works_after_vendor_modules_are_removed,
            a_load_one_cpu_refuses_is_rolled_back_on_every_cpu,
            modules_are_left_as_found,
        ],
    );
    // Whatever happened above, do not leave the system changed.
    if let Ok(env) = &env {
        let _ = restore(env);
    }
    code
}
