// SPDX-License-Identifier: GPL-2.0

//! The seam between common code and vendor code.
//!
//! Common code (the device, VMs, vCPUs, memory slots, and the run loop to
//! come) talks to the hardware only through [`Backend`], in the shape of
//! KVM's `kvm_x86_ops`: one implementation per vendor extension, chosen at
//! module load. Today a backend enables and disables the extension on each
//! CPU; vCPU creation, the world switch and exit decoding join the trait
//! with the SVM backend's `KVM_RUN` (see docs/architecture.md).

use crate::sys::cpu::PerCpu;
use crate::x86::regs::HostLimits;
use core::fmt;
use kernel::prelude::*;
use kernel::sync::Arc;

/// The vendor's hardware-virtualisation extension.
pub(crate) trait Backend: Send + Sync {
    /// Turns the extension on for the current CPU (`cpu`). Must refuse with
    /// `EBUSY` if someone else (the real KVM) already has it on.
    fn enable_cpu(&self, cpu: u32) -> Result;

    /// Turns the extension off for the current CPU, if this backend turned it
    /// on.
    fn disable_cpu(&self, cpu: u32);

    /// What the host CPU lets guests have, for register checks.
    fn host_limits(&self) -> HostLimits;

    /// One line for the kernel log: the extension and its features.
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl kernel::fmt::Display for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f)
    }
}

/// Per-CPU enabling for the hotplug machinery: forwards to the backend.
pub(crate) struct VirtCpus(pub(crate) Arc<dyn Backend>);

impl PerCpu for VirtCpus {
    fn online(&self, cpu: u32) -> Result {
        self.0.enable_cpu(cpu)
    }

    fn offline(&self, cpu: u32) {
        self.0.disable_cpu(cpu)
    }
}

/// Finds a usable extension on this CPU and returns its backend, or
/// `ENODEV` after saying why none is usable.
pub(crate) fn probe() -> Result<Arc<dyn Backend>> {
    match crate::svm::Svm::probe() {
        Ok(svm) => Ok(svm),
        Err(why) => {
            pr_err!("no usable hardware virtualization: {}\n", why);
            Err(ENODEV)
        }
    }
}
