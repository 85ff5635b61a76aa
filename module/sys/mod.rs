// SPDX-License-Identifier: GPL-2.0

//! The thin layer between rkvm and the hardware and C kernel services.
//!
//! Every `asm!`, every direct `kernel::bindings` call and every call into
//! `helpers.c` lives below this module. Each submodule exposes small safe
//! types; the rest of rkvm is safe Rust.
//!
//! - [`cpu`]: CPUID, RDMSR/WRMSR, and the per-CPU hotplug callbacks.
//! - [`file`]: file-operation tables for `/dev/rkvm` and the anonymous VM
//!   and vCPU fds, with module ownership so an open fd pins the module.
//! - [`debugfs`]: the statistics file, pinning the module while open.
//! - [`eventfd`]: references to eventfds, and hooks that run on their
//!   signals (irqfds, ioeventfds).
//! - [`mem`]: physical addresses, pinning user pages, user-address checks,
//!   and the pages shared with user space.
//! - [`fpu`]: the guest's FPU state, loaded only inside a kernel FPU section.
//! - [`gprs`]: the guest registers both world switches load and store.
//! - [`spec`]: the host's speculation mitigations, and the barriers and
//!   flushes rkvm issues around guest entry and exit.
//! - [`svm`]: CLGI, STGI and the VMRUN world switch.
//! - [`vmx`]: VMXON/VMXOFF, VMCS loading and field access, INVEPT/INVVPID
//!   and the VMLAUNCH world switch, plus the host state VMX leaves to us.
//! - [`work`]: waiting for a work item (`flush_work`).

pub(crate) mod cpu;
pub(crate) mod debugfs;
pub(crate) mod debugreg;
pub(crate) mod eventfd;
pub(crate) mod file;
pub(crate) mod fpu;
pub(crate) mod gprs;
pub(crate) mod mem;
pub(crate) mod spec;
pub(crate) mod svm;
pub(crate) mod vmx;
pub(crate) mod work;
