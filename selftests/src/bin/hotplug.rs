//! Virtualization on every CPU, through CPU hotplug and suspend: the
//! hypervisor turns its extension on for each online CPU, again for a CPU
//! that goes offline and comes back, and again after a suspend/resume
//! cycle; VMs keep working across it.
//!
//! Checked on the hardware itself: EFER.SVME read on each CPU through
//! `/dev/cpu/N/msr`. Runs the same against rkvm and KVM. Needs root, two
//! online CPUs and the msr driver; SVM only for now (the VMX backend adds
//! its own check of CR4.VMXE).
//!
//! Usage: `hotplug [DEVICE]` (default `/dev/rkvm`).

use std::process::ExitCode;

use ksft::{Status, TestResult, check, check_eq, check_ok, diag, skip, tests};
use rkvm_selftests::Ctx;
use rkvm_selftests::cpu::{self, Extension};

/// Skips unless the EFER of each CPU can be read and the CPU has SVM.
fn need_svm_msrs() -> TestResult {
    match cpu::extension() {
        Some(Extension::Svm) => {}
        Some(Extension::Vmx) => skip!("VMX: CR4.VMXE is not readable through the msr driver"),
        None => skip!("the CPU has no virtualization extension"),
    }
    if let Err(e) = cpu::msr_readable() {
        skip!("cannot read MSRs ({e}); needs root and CONFIG_X86_MSR");
    }
    Ok(())
}

fn svm_is_on_on_every_online_cpu(ctx: &Ctx) -> TestResult {
    need_svm_msrs()?;
    let _ = ctx;
    let off = check_ok!(cpu::cpus_with_svme_not(true));
    check!(
        off.is_empty(),
        "EFER.SVME is clear on CPUs {off:?} while the hypervisor is loaded"
    );
    Ok(())
}

/// The highest online CPU other than 0 (CPU 0 often cannot go offline).
fn hotpluggable_cpu() -> Result<u32, Status> {
    let online = cpu::online().map_err(Status::Fail)?;
    match online.iter().copied().filter(|&c| c != 0).max() {
        Some(c) => Ok(c),
        None => skip!("only CPU 0 is online"),
    }
}

fn cpu_offline_and_online_again_turns_svm_back_on(ctx: &Ctx) -> TestResult {
    need_svm_msrs()?;
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

    let efer = check_ok!(cpu::read_msr(target, cpu::MSR_EFER));
    check!(
        efer & cpu::EFER_SVME != 0,
        "EFER.SVME is clear on CPU {target} after it came back (EFER {efer:#x})"
    );
    check_eq!(check_ok!(vcpu.get_regs()).rip, regs.rip);
    check_ok!(vm.create_vcpu(1));
    Ok(())
}

fn svm_stays_on_everywhere_after_hotplug(ctx: &Ctx) -> TestResult {
    svm_is_on_on_every_online_cpu(ctx)
}

/// A suspend to RAM that stops at the "core" test point
/// (`/sys/power/pm_test`): devices are suspended, the other CPUs go
/// offline, the system-core suspend callbacks run on the boot CPU with
/// interrupts off, then everything resumes. The hypervisor must turn its
/// extension off and on again through all of it.
fn suspend_and_resume_keep_svm_on(ctx: &Ctx) -> TestResult {
    need_svm_msrs()?;
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
    let off = check_ok!(cpu::cpus_with_svme_not(true));
    check!(
        off.is_empty(),
        "EFER.SVME is clear on CPUs {off:?} after resume"
    );
    check_eq!(check_ok!(vcpu.get_regs()).rip, 0xfff0);
    Ok(())
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            svm_is_on_on_every_online_cpu,
            cpu_offline_and_online_again_turns_svm_back_on,
            svm_stays_on_everywhere_after_hotplug,
            suspend_and_resume_keep_svm_on,
        ],
    )
}
