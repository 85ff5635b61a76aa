//! Object lifetimes: VM and vCPU fds closed in any order, mappings that
//! outlive their fds, a child killed while it holds a VM, and many
//! create/destroy cycles; afterwards no VM may be left alive.
//!
//! Live VMs are counted with rkvm's `/sys/kernel/debug/rkvm/stats` or KVM's
//! `/sys/kernel/debug/kvm/<pid>-<fd>` directories; without debugfs those
//! assertions are skipped.
//!
//! Usage: `lifetime [DEVICE]` (default `/dev/rkvm`).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ksft::{Status, TestResult, check, check_eq, check_errno, check_ok, diag, skip, tests};
use kvm_abi::process::{self, Exit};
use kvm_abi::sys::KVM_CAP_USER_MEMORY;
use kvm_abi::{Errno, GuestMemory, MemoryRegion, PAGE_SIZE, RunMapping, UserAddr, Vcpu, Vm};
use nix::sys::signal::Signal;
use rkvm_selftests::{Ctx, LiveCounts};

/// The program's context: the device, and the live counts before any test.
struct Life {
    ctx: Ctx,
    baseline: Result<LiveCounts, String>,
}

/// How long destruction of a dead process's VM may take to show.
const SETTLE: Duration = Duration::from_secs(10);

/// Polls the live counts until they equal `want` or [`SETTLE`] passes.
fn wait_for_counts(ctx: &Ctx, want: LiveCounts) -> TestResult {
    let start = Instant::now();
    loop {
        let now = ctx.live_counts().map_err(Status::Skip)?;
        if now == want {
            return Ok(());
        }
        if start.elapsed() > SETTLE {
            ksft::fail!("live objects: expected {want:?}, still {now:?} after {SETTLE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything a running guest would have: VM, vCPU 0, one memory slot and
/// the kvm_run mapping.
struct Setup {
    vm: Vm,
    vcpu: Vcpu,
    run: RunMapping,
}

fn build(ctx: &Ctx, mmap_size: usize) -> kvm_abi::Result<Setup> {
    let vm = ctx.vm()?;
    let mem = Arc::new(GuestMemory::new(4 * PAGE_SIZE)?);
    vm.set_user_memory_region(&MemoryRegion::new(0, 0, &mem))?;
    let vcpu = vm.create_vcpu(0)?;
    let run = vcpu.map_run(mmap_size)?;
    Ok(Setup { vm, vcpu, run })
}

fn vcpu_works_after_vm_fd_is_closed(life: &Life) -> TestResult {
    let (vm, vcpu) = check_ok!(life.ctx.vm_with_vcpu());
    drop(vm);
    let regs = check_ok!(vcpu.get_regs());
    check_eq!(regs.rip, 0xfff0);
    check_ok!(vcpu.set_regs(&kvm_abi::sys::kvm_regs { rax: 42, ..regs }));
    check_eq!(check_ok!(vcpu.get_regs()).rax, 42);
    check_ok!(vcpu.get_sregs());
    Ok(())
}

/// Closing a vCPU fd does not destroy the vCPU: it lives as long as the VM,
/// so its id stays taken (kvm_vm_ioctl_create_vcpu gives EEXIST).
fn vm_works_after_vcpu_fd_is_closed(life: &Life) -> TestResult {
    let (vm, vcpu) = check_ok!(life.ctx.vm_with_vcpu());
    drop(vcpu);
    check!(check_ok!(vm.check_extension(KVM_CAP_USER_MEMORY)) > 0);
    check_errno!(vm.create_vcpu(0), libc::EEXIST);
    let vcpu1 = check_ok!(vm.create_vcpu(1));
    check_ok!(vcpu1.get_regs());
    let mem = Arc::new(check_ok!(GuestMemory::new(PAGE_SIZE)));
    check_ok!(vm.set_user_memory_region(&MemoryRegion::new(0, 0, &mem)));
    Ok(())
}

fn run_mapping_outlives_its_fds(life: &Life) -> TestResult {
    let size = check_ok!(life.ctx.sys.vcpu_mmap_size());
    let Setup { vm, vcpu, run } = check_ok!(build(&life.ctx, size));
    drop(vcpu);
    drop(vm);
    check_ok!(run.mapping().probe_readable());
    check_eq!(
        check_ok!(run.snapshot()).exit_reason,
        kvm_abi::sys::KVM_EXIT_UNKNOWN
    );
    Ok(())
}

/// A VM belongs to the process (mm) that created it: KVM answers every VM
/// and vCPU ioctl from another process with EIO (kvm_vm_ioctl, kvm_vcpu_ioctl).
fn forked_child_cannot_use_parent_vm(life: &Life) -> TestResult {
    let (vm, vcpu) = check_ok!(life.ctx.vm_with_vcpu());
    let child = check_ok!(process::fork(|| {
        let on_vm = vm.check_extension(KVM_CAP_USER_MEMORY).map_err(Errno::from);
        let on_vcpu = vcpu.get_regs().map(drop).map_err(Errno::from);
        match (on_vm, on_vcpu) {
            (Err(Errno::EIO), Err(Errno::EIO)) => 0,
            (Ok(_), _) => 1,
            (Err(_), _) => 2,
        }
    }));
    match check_ok!(child.wait()) {
        Exit::Code(0) => {}
        Exit::Code(1) => ksft::fail!("the child could use the parent's VM fd"),
        other => ksft::fail!("the child's VM or vCPU ioctl did not fail with EIO: {other:?}"),
    }
    // The parent is unaffected.
    check_ok!(vm.check_extension(KVM_CAP_USER_MEMORY));
    check_ok!(vcpu.get_regs());
    Ok(())
}

/// Forks a child that builds a VM and waits to be killed; returns once it is
/// ready (or fails with the child's exit status if it could not build).
fn spawn_vm_holder(ctx: &Ctx) -> Result<process::Child, Status> {
    let size = ctx.sys.vcpu_mmap_size()?;
    let (mut ready_rx, ready_tx) = std::io::pipe()?;
    let child = process::fork(move || {
        let Ok(_setup) = build(ctx, size) else {
            return 10;
        };
        if (&ready_tx).write_all(&[1]).is_err() {
            return 11;
        }
        loop {
            nix::unistd::pause();
        }
    })?;
    // The child holds the only write end now: EOF means it died.
    let mut byte = [0u8; 1];
    if ready_rx.read_exact(&mut byte).is_err() {
        let status = child.wait()?;
        return Err(Status::Fail(format!(
            "the child could not build its VM: {status:?}"
        )));
    }
    Ok(child)
}

fn killed_child_leaves_parent_working(life: &Life) -> TestResult {
    let child = spawn_vm_holder(&life.ctx)?;
    check_ok!(child.kill(Signal::SIGKILL));
    check_eq!(check_ok!(child.wait()), Exit::Signal(Signal::SIGKILL));
    let size = check_ok!(life.ctx.sys.vcpu_mmap_size());
    let setup = check_ok!(build(&life.ctx, size));
    check_ok!(setup.vcpu.get_regs());
    check_ok!(setup.run.snapshot());
    Ok(())
}

fn killed_child_vms_are_released(life: &Life) -> TestResult {
    let before = life.ctx.live_counts().map_err(Status::Skip)?;
    let child = spawn_vm_holder(&life.ctx)?;
    let during = life.ctx.live_counts().map_err(Status::Skip)?;
    // The counter must see the child's VM, or it proves nothing.
    check_eq!(
        during,
        LiveCounts {
            vms: before.vms + 1,
            vcpus: before.vcpus + 1
        },
        "while the child lives"
    );
    check_ok!(child.kill(Signal::SIGKILL));
    check_eq!(check_ok!(child.wait()), Exit::Signal(Signal::SIGKILL));
    wait_for_counts(&life.ctx, before)
}

const CYCLES: usize = 1000;

/// Builds everything and closes it again, [`CYCLES`] times, in four orders.
fn create_and_close_1000_times_in_varying_orders(life: &Life) -> TestResult {
    let size = check_ok!(life.ctx.sys.vcpu_mmap_size());
    let start = Instant::now();
    for i in 0..CYCLES {
        let Setup { vm, vcpu, run } = match build(&life.ctx, size) {
            Ok(s) => s,
            Err(e) => ksft::fail!("cycle {i}: {e}"),
        };
        match i % 4 {
            0 => drop((run, vcpu, vm)),
            1 => drop((vm, vcpu, run)),
            2 => drop((vcpu, vm, run)),
            _ => drop((vm, run, vcpu)),
        }
    }
    diag!("{CYCLES} cycles in {:.2?}", start.elapsed());
    Ok(())
}

fn live_counts_return_to_baseline(life: &Life) -> TestResult {
    let baseline = match &life.baseline {
        Ok(b) => *b,
        Err(reason) => skip!("{reason}"),
    };
    diag!("baseline {baseline:?}");
    wait_for_counts(&life.ctx, baseline)
}

/// What one thread of [`concurrent_ioctls_on_one_vm`] does: its own slot
/// created, moved and deleted over and over, and its own vCPUs created and
/// their registers written and read back.
fn hammer(vm: &Vm, thread: u32, rounds: u32, vcpus: u32) -> Result<(), String> {
    let mem = Arc::new(GuestMemory::new(PAGE_SIZE).map_err(|e| e.to_string())?);
    let base = u64::from(thread + 1) << 24;
    let mut mine = Vec::new();
    for round in 0..rounds {
        let slot = MemoryRegion::new(thread, base, &mem);
        let moved = MemoryRegion {
            guest_phys_addr: base + (1 << 20),
            ..MemoryRegion::new(thread, base, &mem)
        };
        let gone = MemoryRegion {
            memory_size: 0,
            userspace: UserAddr::None,
            ..MemoryRegion::new(thread, base, &mem)
        };
        for (what, r) in [("create", &slot), ("move", &moved), ("delete", &gone)] {
            vm.set_user_memory_region(r)
                .map_err(|e| format!("thread {thread} round {round}: {what} slot: {e}"))?;
        }
        if round < vcpus {
            let id = u64::from(thread * vcpus + round);
            mine.push(
                vm.create_vcpu(id)
                    .map_err(|e| format!("thread {thread}: vCPU {id}: {e}"))?,
            );
        }
        for (i, vcpu) in mine.iter().enumerate() {
            let mut regs = vcpu.get_regs().map_err(|e| e.to_string())?;
            regs.rax = u64::from(round) << 8 | i as u64;
            vcpu.set_regs(&regs).map_err(|e| e.to_string())?;
            let back = vcpu.get_regs().map_err(|e| e.to_string())?.rax;
            if back != regs.rax {
                return Err(format!(
                    "thread {thread}: vCPU {i} rax {back:#x}, wrote {:#x}",
                    regs.rax
                ));
            }
        }
    }
    Ok(())
}

/// Several threads use one VM at once (memory slots, vCPU creation,
/// registers) while the main thread asks for capabilities: nothing that
/// works alone may fail together, and the kernel (lockdep, in the test VM)
/// must stay quiet, which the suite checks after the run.
fn concurrent_ioctls_on_one_vm(life: &Life) -> TestResult {
    const THREADS: u32 = 4;
    const ROUNDS: u32 = 30;
    const VCPUS_PER_THREAD: u32 = 8;
    let ctx = &life.ctx;
    let vm = check_ok!(ctx.vm());
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let vm = &vm;
                s.spawn(move || hammer(vm, t, ROUNDS, VCPUS_PER_THREAD))
            })
            .collect();
        for _ in 0..ROUNDS {
            let _ = vm.check_extension(KVM_CAP_USER_MEMORY);
        }
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a thread panicked".to_owned()))
            })
            .collect()
    });
    for r in results {
        check_ok!(r);
    }
    check_errno!(vm.create_vcpu(0), libc::EEXIST);
    Ok(())
}

/// A VM that outlives its fd keeps its debugfs directory `<pid>-<fd>`, and
/// a new VM of the same thread given the same fd number does not take it
/// over: on rkvm it gets a directory of its own, `<pid>-<fd>-<n>`, with its
/// counters; KVM skips a taken name and gives it none
/// (`kvm_create_vm_debugfs`; docs/abi.md).
fn a_vm_outliving_its_fd_keeps_its_debugfs_name(life: &Life) -> TestResult {
    let ctx = &life.ctx;
    let root = if ctx.is_rkvm() {
        rkvm_selftests::RKVM_DEBUGFS
    } else {
        rkvm_selftests::KVM_DEBUGFS
    };
    if std::fs::read_dir(root).is_err() {
        skip!("{root} cannot be listed: is debugfs mounted?");
    }
    let tid = nix::unistd::gettid();
    let first = check_ok!(ctx.vm());
    let fd = first.as_fd().as_raw_fd();
    let held = check_ok!(first.as_fd().try_clone_to_owned());
    drop(first);
    let second = check_ok!(ctx.vm());
    if second.as_fd().as_raw_fd() != fd {
        skip!(
            "the second VM got fd {}, not the first one's {fd}",
            second.as_fd().as_raw_fd()
        );
    }
    let name = format!("{tid}-{fd}");
    let prefix = format!("{name}-");
    let others: Vec<String> = check_ok!(std::fs::read_dir(root))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let dir = std::path::Path::new(root);
    check!(
        dir.join(&name).is_dir(),
        "{root}/{name}, the first VM's, is gone"
    );
    if ctx.is_rkvm() {
        check_eq!(others.len(), 1, "directories {prefix}<n>: {others:?}");
        let io_exits = dir.join(&others[0]).join("io_exits");
        check!(io_exits.is_file(), "{} is missing", io_exits.display());
    } else {
        check_eq!(
            others.len(),
            0,
            "KVM made directories {prefix}<n>: {others:?}"
        );
    }
    drop(second);
    drop(held);
    Ok(())
}

fn main() -> ExitCode {
    let life = Ctx::from_args().map(|ctx| {
        let baseline = ctx.live_counts();
        Life { ctx, baseline }
    });
    ksft::run(
        &life,
        &tests![
            vcpu_works_after_vm_fd_is_closed,
            vm_works_after_vcpu_fd_is_closed,
            run_mapping_outlives_its_fds,
            forked_child_cannot_use_parent_vm,
            killed_child_leaves_parent_working,
            killed_child_vms_are_released,
            create_and_close_1000_times_in_varying_orders,
            concurrent_ioctls_on_one_vm,
            a_vm_outliving_its_fd_keeps_its_debugfs_name,
            live_counts_return_to_baseline,
        ],
    )
}
