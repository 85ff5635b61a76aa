//! Virtualization on every CPU, through CPU hotplug and suspend: the
//! hypervisor can enter guests on each online CPU, again on a CPU that
//! goes offline and comes back, and again after a suspend/resume cycle;
//! VMs keep working across it.
//!
//! Checked two ways. Functionally, on both vendors: a vCPU pinned to each
//! online CPU in turn enters its guest and exits with HLT. On the hardware
//! itself, on SVM: EFER.SVME read on each CPU through `/dev/cpu/N/msr`
//! (rkvm's VMX backend is in VMX operation only around each entry, see
//! module/vmx/mod.rs, so on VMX there is no bit to read between entries).
//! Runs the same against rkvm and KVM. Needs root; the hotplug test needs
//! two online CPUs; the SVM checks need the msr driver.
//!
//! Usage: `hotplug [DEVICE]` (default `/dev/rkvm`).

use std::process::ExitCode;

use ksft::{Status, TestResult, check, check_eq, check_ok, diag, fail, skip, tests};
use kvm_abi::VcpuExit;
use rkvm_selftests::Ctx;
use rkvm_selftests::cpu::{self, Extension};
use rkvm_selftests::guest::{self, GuestVm, Mode};

/// Whether EFER.SVME can be checked here: the CPU has SVM and the msr
/// driver reads it. Skips if the CPU has no extension at all.
fn svm_msrs() -> Result<bool, Status> {
    match cpu::extension() {
        Some(Extension::Svm) => Ok(cpu::msr_readable().is_ok()),
        Some(Extension::Vmx) => Ok(false),
        None => skip!("the CPU has no virtualization extension"),
    }
}

/// A vCPU pinned to each of `cpus` in turn enters its guest and exits with
/// HLT: the extension is usable there.
fn guest_enters_on(ctx: &Ctx, cpus: &[u32]) -> TestResult {
    cpu::on_each(cpus, |c| {
        let vm = GuestVm::new(ctx, Mode::Long, &[0xf4])?;
        let mut vcpu = vm.add_vcpu(0)?;
        vcpu.run()?;
        match vcpu.exit() {
            VcpuExit::Hlt => Ok(()),
            other => fail!(
                "on CPU {c}: expected KVM_EXIT_HLT, got {}",
                guest::describe(&other)
            ),
        }
    })
}

/// SVM: no online CPU has EFER.SVME clear.
fn check_svme_everywhere(when: &str) -> TestResult {
    let off = check_ok!(cpu::cpus_with_svme_not(true));
    check!(off.is_empty(), "EFER.SVME is clear on CPUs {off:?} {when}");
    Ok(())
}

fn virtualization_works_on_every_online_cpu(ctx: &Ctx) -> TestResult {
    if svm_msrs()? {
        check_svme_everywhere("while the hypervisor is loaded")?;
    }
    guest_enters_on(ctx, &check_ok!(cpu::online()))
}

/// The highest online CPU other than 0 (CPU 0 often cannot go offline).
fn hotpluggable_cpu() -> Result<u32, Status> {
    let online = cpu::online().map_err(Status::Fail)?;
    match online.iter().copied().filter(|&c| c != 0).max() {
        Some(c) => Ok(c),
        None => skip!("only CPU 0 is online"),
    }
}

fn cpu_offline_and_online_again_can_run_guests(ctx: &Ctx) -> TestResult {
    let svm = svm_msrs()?;
    let target = hotpluggable_cpu()?;
    // A VM with a vCPU that lives across the hotplug.
    let (vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let regs = check_ok!(vcpu.get_regs());

    if let Err(e) = cpu::set_online(target, false) {
        skip!("CPU {target} cannot go offline: {e}");
    }
    let back = cpu::set_online(target, true);
    check_ok!(back);
    diag!("CPU {target} went offline and came back");

    if svm {
        let efer = check_ok!(cpu::read_msr(target, cpu::MSR_EFER));
        check!(
            efer & cpu::EFER_SVME != 0,
            "EFER.SVME is clear on CPU {target} after it came back (EFER {efer:#x})"
        );
    }
    check_eq!(check_ok!(vcpu.get_regs()).rip, regs.rip);
    check_ok!(vm.create_vcpu(1));
    guest_enters_on(ctx, &[target])
}

fn virtualization_still_works_everywhere_after_hotplug(ctx: &Ctx) -> TestResult {
    virtualization_works_on_every_online_cpu(ctx)
}

/// A suspend to RAM that stops at the "core" test point
/// (`/sys/power/pm_test`): devices are suspended, the other CPUs go
/// offline, the system-core suspend callbacks run on the boot CPU with
/// interrupts off, then everything resumes. The hypervisor must turn its
/// extension off and on again through all of it.
fn suspend_and_resume_keep_virtualization_working(ctx: &Ctx) -> TestResult {
    let svm = svm_msrs()?;
    let states = std::fs::read_to_string("/sys/power/state").unwrap_or_default();
    if !states.split_whitespace().any(|s| s == "mem") {
        skip!(
            "no suspend to RAM here (/sys/power/state: {:?})",
            states.trim()
        );
    }
    if std::fs::write("/sys/power/pm_test", "core").is_err() {
        skip!("/sys/power/pm_test is not available (CONFIG_PM_DEBUG)");
    }
    // The test point normally waits 5 s; no need here.
    let _ = std::fs::write("/sys/module/suspend/parameters/pm_test_delay", "0");
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let suspended = std::fs::write("/sys/power/state", "mem");
    let _ = std::fs::write("/sys/power/pm_test", "none");
    check_ok!(suspended);
    diag!("suspended to the core test point and resumed");
    if svm {
        check_svme_everywhere("after resume")?;
    }
    check_eq!(check_ok!(vcpu.get_regs()).rip, 0xfff0);
    guest_enters_on(ctx, &check_ok!(cpu::online()))
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            virtualization_works_on_every_online_cpu,
            cpu_offline_and_online_again_can_run_guests,
            virtualization_still_works_everywhere_after_hotplug,
            suspend_and_resume_keep_virtualization_working,
        ],
    )
}
