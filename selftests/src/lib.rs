//! Shared set-up for the rkvm selftest programs.
//!
//! Every program takes the device path as its first argument (default
//! `/dev/rkvm`), prints TAP 13 and exits 0 (pass), 1 (a test failed) or 4
//! (all skipped). The same programs run against `/dev/kvm`, which is how
//! their assertions are checked against the real thing.

pub mod cpu;
pub mod guest;
pub mod msr;

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use ksft::{Status, TestResult};
use kvm_abi::sys::{KVM_CAP_MAX_VCPU_ID, KVM_CAP_NR_MEMSLOTS};
use kvm_abi::{System, Vcpu, Vm};

/// `check_efault!(fd, KVM_SET_FPU, KVM_GET_FPU)`: each request (named as
/// in `kvm_abi::ioctls`) given a pointer no copy can reach, an unmapped
/// user address and a kernel one ([`kvm_abi::raw::Arg`]), fails with
/// `EFAULT`; else the calling test fails.
#[macro_export]
macro_rules! check_efault {
    ($fd:expr, $($req:ident),+ $(,)?) => {
        for arg in [::kvm_abi::raw::Arg::UnmappedPointer, ::kvm_abi::raw::Arg::KernelPointer] {
            $(
                ::ksft::check_errno!(
                    ::kvm_abi::raw::ioctl($fd, ::kvm_abi::ioctls::$req, arg),
                    ::libc::EFAULT,
                    "{}({arg:?})",
                    stringify!($req)
                );
            )+
        }
    };
}

/// The device tested when no argument is given.
pub const DEFAULT_PATH: &str = "/dev/rkvm";

/// What every test gets: the device path and an open fd of it.
#[derive(Debug)]
pub struct Ctx {
    /// The device path given on the command line.
    pub path: PathBuf,
    /// The device, opened once for the whole program.
    pub sys: System,
}

impl Ctx {
    /// Opens the device named by the first command-line argument.
    ///
    /// Errors are skip reasons: the whole program is skipped when the device
    /// cannot be opened.
    pub fn from_args() -> Result<Self, String> {
        let path = device_path();
        let sys = System::open(&path).map_err(|e| format!("cannot use {}: {e}", path.display()))?;
        Ok(Self { path, sys })
    }

    /// Whether the device is rkvm (its path names it) rather than KVM.
    pub fn is_rkvm(&self) -> bool {
        is_rkvm_path(&self.path)
    }

    /// Whether the device is a host KVM whose vendor module is `kvm_pvm`
    /// (the PVM patch set), which knowingly differs from upstream KVM in
    /// a few places the tests check (EFER validation, TSC writes, stored
    /// CPUID).
    pub fn is_pvm_host(&self) -> bool {
        !self.is_rkvm() && Path::new("/sys/module/kvm_pvm").exists()
    }

    /// Runs a test whose assertions are KVM 7.3 semantics that `kvm_pvm`
    /// does not follow: on a PVM host a failure is reported as a skip that
    /// shows the failure; everywhere else it is a failure.
    pub fn upstream_semantics(&self, test: impl FnOnce() -> TestResult) -> TestResult {
        match test() {
            Err(Status::Fail(msg)) if self.is_pvm_host() => Err(Status::Skip(format!(
                "kvm_pvm differs from upstream KVM 7.3 here: {msg}"
            ))),
            r => r,
        }
    }

    /// A new default (type 0) VM.
    pub fn vm(&self) -> kvm_abi::Result<Vm> {
        self.sys.create_vm(0)
    }

    /// A new VM with vCPU 0.
    pub fn vm_with_vcpu(&self) -> kvm_abi::Result<(Vm, Vcpu)> {
        let vm = self.vm()?;
        let vcpu = vm.create_vcpu(0)?;
        Ok((vm, vcpu))
    }

    /// KVM_CHECK_EXTENSION on the device fd.
    pub fn cap(&self, cap: u32) -> kvm_abi::Result<i32> {
        self.sys.check_extension(cap)
    }

    /// KVM_CAP_NR_MEMSLOTS as a slot count.
    pub fn nr_memslots(&self) -> Result<u32, Status> {
        let n = self.cap(KVM_CAP_NR_MEMSLOTS)?;
        u32::try_from(n).map_err(|_| Status::Fail(format!("KVM_CAP_NR_MEMSLOTS is {n}")))
    }

    /// KVM_CAP_MAX_VCPU_ID as an id bound.
    pub fn max_vcpu_id(&self) -> Result<u64, Status> {
        let n = self.cap(KVM_CAP_MAX_VCPU_ID)?;
        u64::try_from(n).map_err(|_| Status::Fail(format!("KVM_CAP_MAX_VCPU_ID is {n}")))
    }

    /// Live VMs and vCPUs system-wide, or why they cannot be counted.
    pub fn live_counts(&self) -> Result<LiveCounts, String> {
        live_counts(&self.path)
    }

    /// The per-VM statistic `name` of `vm` (created by the calling thread):
    /// the file `<pid>-<fd>/<name>` in rkvm's or KVM's debugfs directory,
    /// which both name that way. KVM's and rkvm's files of the same name
    /// count the same thing (`io_exits`, `mmio_exits`, `halt_exits`,
    /// `pages_4k`, `pages_2m`, ...).
    pub fn vm_stat(&self, vm: &Vm, name: &str) -> Result<u64, String> {
        let root = if self.is_rkvm() {
            RKVM_DEBUGFS
        } else {
            KVM_DEBUGFS
        };
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("{root}/{tid}-{}/{name}", vm.as_fd().as_raw_fd());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {path} ({e}); is debugfs mounted?"))?;
        text.trim()
            .parse()
            .map_err(|_| format!("{path} holds {text:?}, not a number"))
    }
}

/// The emulator the test VM runs in, as the boot scripts tell the VM's init
/// (`rkvm_emulator=` on the kernel command line, which init passes on as
/// an environment variable): "qemu", "bochs", or "" when unknown.
pub fn emulator() -> String {
    std::env::var("rkvm_emulator").unwrap_or_default()
}

/// Whether the test VM runs the KASAN variant of the test kernel
/// (`rkvm_kasan=1` on its command line, set by the boot scripts).
pub fn kasan_kernel() -> bool {
    std::env::var("rkvm_kasan").is_ok_and(|v| v == "1")
}

/// The first command-line argument, or [`DEFAULT_PATH`].
pub fn device_path() -> PathBuf {
    std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from)
}

/// Whether `path` names rkvm's device rather than KVM's.
pub fn is_rkvm_path(path: &Path) -> bool {
    path.to_string_lossy().contains("rkvm")
}

/// rkvm's statistics file (lines `vms: N` and `vcpus: N`).
pub const RKVM_STATS: &str = "/sys/kernel/debug/rkvm/stats";
/// rkvm's debugfs directory, with one `<pid>-<fd>` directory per VM.
pub const RKVM_DEBUGFS: &str = "/sys/kernel/debug/rkvm";
/// KVM's debugfs directory, with one `<pid>-<fd>` directory per VM holding
/// one `vcpuN` directory per vCPU.
pub const KVM_DEBUGFS: &str = "/sys/kernel/debug/kvm";

/// Live VMs and vCPUs, system-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveCounts {
    /// VMs not yet destroyed.
    pub vms: u64,
    /// vCPUs of those VMs.
    pub vcpus: u64,
}

/// Counts live VMs and vCPUs: rkvm's statistics, or KVM's per-VM debugfs
/// directories. `Err` says why neither is available.
pub fn live_counts(device: &Path) -> Result<LiveCounts, String> {
    if is_rkvm_path(device) {
        let text = std::fs::read_to_string(RKVM_STATS)
            .map_err(|e| format!("cannot read {RKVM_STATS} ({e}); is debugfs mounted?"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(|| format!("{RKVM_STATS} has no `{name} N` line"))
        };
        Ok(LiveCounts {
            vms: field("vms:")?,
            vcpus: field("vcpus:")?,
        })
    } else {
        let dir = std::fs::read_dir(KVM_DEBUGFS)
            .map_err(|e| format!("cannot list {KVM_DEBUGFS} ({e}); is debugfs mounted?"))?;
        let mut counts = LiveCounts { vms: 0, vcpus: 0 };
        for vm in dir.filter_map(Result::ok) {
            if !vm.file_type().is_ok_and(|t| t.is_dir())
                || !is_vm_dir_name(&vm.file_name().to_string_lossy())
            {
                continue;
            }
            counts.vms += 1;
            let vcpus = std::fs::read_dir(vm.path())
                .into_iter()
                .flatten()
                .filter_map(Result::ok);
            counts.vcpus += vcpus
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("vcpu")
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count() as u64;
        }
        Ok(counts)
    }
}

/// KVM names a VM's debugfs directory `<pid>-<fd>`.
fn is_vm_dir_name(name: &str) -> bool {
    name.split_once('-').is_some_and(|(pid, fd)| {
        !pid.is_empty()
            && !fd.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && fd.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_dir_names() {
        assert!(is_vm_dir_name("1234-5"));
        assert!(!is_vm_dir_name("vcpu0"));
        assert!(!is_vm_dir_name("1234-"));
        assert!(!is_vm_dir_name("-5"));
        assert!(!is_vm_dir_name("halt_poll_success_ns"));
    }

    #[test]
    fn rkvm_is_chosen_by_path() {
        assert!(is_rkvm_path(Path::new("/dev/rkvm")));
        assert!(!is_rkvm_path(Path::new("/dev/kvm")));
    }
}
