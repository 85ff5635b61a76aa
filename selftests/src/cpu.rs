//! The host CPUs as the tests see them: which are online, taking one offline
//! and back, and reading a model-specific register on a given CPU through
//! `/dev/cpu/N/msr` (the kernel's `msr` driver, `CONFIG_X86_MSR`).
//!
//! Reading EFER on every CPU shows what the hypervisor really did to the
//! hardware, independent of what it says about itself.

use std::fs;
use std::os::unix::fs::FileExt;

use ksft::Status;

/// The EFER MSR. SDM Vol. 3A 2.2.1, APM Vol. 2 3.1.7.
pub const MSR_EFER: u32 = 0xc000_0080;
/// EFER.SVME: SVM enabled on this CPU. APM Vol. 2 15.4.
pub const EFER_SVME: u64 = 1 << 12;

/// The processor's virtualization extension, from `/proc/cpuinfo` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// AMD-V.
    Svm,
    /// Intel VT-x.
    Vmx,
}

/// Whether the CPU tells the hypervisor where an intercepted instruction
/// ends: always on VMX (the exit's instruction length), on SVM only with
/// NRIPS (CPUID Fn8000_000A EDX bit 3, APM Vol. 2 15.7.1). Without it rkvm
/// reads the instruction from guest memory, which its fast path
/// (module/run/fastpath.rs) cannot do.
pub fn gives_the_next_rip() -> bool {
    let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    let svm = max_ext >= 0x8000_000a && std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 2) != 0;
    !svm || std::arch::x86_64::__cpuid(0x8000_000a).edx & (1 << 3) != 0
}

/// Which extension this CPU advertises, if any.
pub fn extension() -> Option<Extension> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = info.lines().find(|l| l.starts_with("flags"))?;
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    if has("svm") {
        Some(Extension::Svm)
    } else if has("vmx") {
        Some(Extension::Vmx)
    } else {
        None
    }
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (e.g. `0-1,3`).
pub fn online() -> Result<Vec<u32>, String> {
    let text = fs::read_to_string("/sys/devices/system/cpu/online")
        .map_err(|e| format!("cannot read the online CPU list: {e}"))?;
    let mut cpus = Vec::new();
    for range in text.trim().split(',').filter(|r| !r.is_empty()) {
        let bad = || format!("bad online CPU list {text:?}");
        let (lo, hi): (u32, u32) = match range.split_once('-') {
            Some((lo, hi)) => (
                lo.parse().map_err(|_| bad())?,
                hi.parse().map_err(|_| bad())?,
            ),
            None => {
                let n = range.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        cpus.extend(lo..=hi);
    }
    Ok(cpus)
}

/// Takes `cpu` offline (`false`) or brings it online (`true`).
pub fn set_online(cpu: u32, on: bool) -> Result<(), String> {
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/online");
    fs::write(&path, if on { "1" } else { "0" })
        .map_err(|e| format!("writing {} to {path}: {e}", u8::from(on)))
}

/// Lets the calling thread run only on `cpus` (`sched_setaffinity`); when
/// this returns, the thread runs on one of them.
pub fn pin_to(cpus: &[u32]) -> Result<(), String> {
    // SAFETY: `cpu_set_t` is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `set` is a valid cpu_set_t; CPU_SET ignores numbers past its size.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: Pid 0 is the calling thread; `set` is valid for its size.
    let r = unsafe { libc::sched_setaffinity(0, size_of_val(&set), &raw const set) };
    if r != 0 {
        return Err(format!(
            "sched_setaffinity({cpus:?}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The calling thread kept on one CPU while this lives (see
/// [`one_cpu_under_qemu`]); dropping it lets the thread run on every CPU
/// that was online when it was made.
#[must_use = "the thread runs on one CPU only while the guard lives"]
pub struct OneCpu {
    restore: Vec<u32>,
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        // Nothing to report to from a drop: a thread left pinned only runs
        // slower. sched_setaffinity with CPUs that are online cannot fail.
        let _ = pin_to(&self.restore);
    }
}

/// Under QEMU's emulated SVM, keeps the calling thread on the first online
/// CPU until the returned guard is dropped; threads and processes it starts
/// meanwhile inherit that, so a nested guest's vCPUs all run on one of the
/// test VM's CPUs. QEMU's emulation loses a CPU's state now and then when
/// two of its CPUs run guests at once, under kvm_amd as under rkvm, and
/// can take the test VM's kernel with it (docs/testing.md, "An open bug").
/// `None` under Bochs, which emulates its CPUs on one thread and has no
/// such fault: the guests there run on every CPU.
pub fn one_cpu_under_qemu() -> Result<Option<OneCpu>, Status> {
    if crate::emulator() != "qemu" {
        return Ok(None);
    }
    let restore = online().map_err(Status::Fail)?;
    let Some(&first) = restore.first() else {
        return Err(Status::Fail("no CPU is online".to_owned()));
    };
    pin_to(&[first]).map_err(Status::Fail)?;
    Ok(Some(OneCpu { restore }))
}

/// Runs `f(cpu)` for each of `cpus` in turn, with the calling thread
/// pinned to that CPU; then lets the thread run on every online CPU again,
/// whatever `f` returned. The first error ends the round.
pub fn on_each(cpus: &[u32], mut f: impl FnMut(u32) -> Result<(), Status>) -> Result<(), Status> {
    let online = online().map_err(Status::Fail)?;
    let result = cpus.iter().try_for_each(|&cpu| {
        pin_to(&[cpu]).map_err(Status::Fail)?;
        f(cpu)
    });
    pin_to(&online).map_err(Status::Fail)?;
    result
}

/// Reads MSR `msr` on CPU `cpu`.
pub fn read_msr(cpu: u32, msr: u32) -> Result<u64, String> {
    let path = format!("/dev/cpu/{cpu}/msr");
    let file = fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut buf = [0u8; 8];
    file.read_exact_at(&mut buf, u64::from(msr))
        .map_err(|e| format!("reading MSR {msr:#x} on CPU {cpu}: {e}"))?;
    Ok(u64::from_le_bytes(buf))
}

/// Writes `value` to MSR `msr` on CPU `cpu` (the msr driver logs a
/// warning and taints the kernel `CPU_OUT_OF_SPEC`, but writes).
pub fn write_msr(cpu: u32, msr: u32, value: u64) -> Result<(), String> {
    let path = format!("/dev/cpu/{cpu}/msr");
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {path} for writing: {e}"))?;
    file.write_all_at(&value.to_le_bytes(), u64::from(msr))
        .map_err(|e| format!("writing MSR {msr:#x} on CPU {cpu}: {e}"))
}

/// Whether the msr driver is there to read MSRs with.
pub fn msr_readable() -> Result<(), String> {
    read_msr(0, MSR_EFER).map(|_| ())
}

/// The online CPUs whose EFER.SVME is not `expected`.
pub fn cpus_with_svme_not(expected: bool) -> Result<Vec<u32>, String> {
    let mut wrong = Vec::new();
    for cpu in online()? {
        if (read_msr(cpu, MSR_EFER)? & EFER_SVME != 0) != expected {
            wrong.push(cpu);
        }
    }
    Ok(wrong)
}
