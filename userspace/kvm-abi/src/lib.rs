//! The KVM userspace ABI, for `/dev/kvm` and for rkvm's `/dev/rkvm`.
//!
//! Layers, bottom up:
//! - [`sys`]: the kernel's own `include/uapi/linux/kvm.h`, translated by
//!   bindgen (structs, `KVM_CAP_*`, `KVM_EXIT_*`, `KVM_MEM_*`, ...).
//! - [`ioctls`]: every request number, computed from the `_IOC` encoding.
//! - [`raw`]: issue a request and get the kernel's raw `Result<i32, Errno>`,
//!   for tests that must see exact errnos.
//! - [`System`], [`Vm`], [`Vcpu`]: safe wrappers owning their fds, with
//!   [`RunMapping`] for the vCPU's shared `kvm_run` page, [`GuestMemory`] for
//!   memory slots and [`CpuidEntries`]/[`MsrEntries`] for the flexible-array
//!   structs; [`Vcpu::run`] enters the guest and [`RunMapping::exit`] says
//!   why it came back, as a [`VcpuExit`].
//!
//! All `unsafe` code of the rkvm userspace lives in this crate.

mod error;
pub mod eventfd;
mod fam;
pub mod guest_code;
pub mod ioctls;
mod mem;
pub mod process;
pub mod raw;
mod run;
mod stats;
mod system;
mod vcpu;
mod vm;

/// Bindings generated from the kernel's `include/uapi/linux/kvm.h` (x86_64).
pub mod sys {
    #![allow(
        non_camel_case_types,
        non_snake_case,
        non_upper_case_globals,
        dead_code,
        missing_docs,
        unreachable_pub,
        unused_qualifications,
        unsafe_op_in_unsafe_fn,
        clippy::all,
        clippy::pedantic,
        clippy::undocumented_unsafe_blocks,
        clippy::multiple_unsafe_ops_per_block,
        clippy::missing_safety_doc,
        clippy::ptr_as_ptr,
        clippy::ptr_cast_constness,
        clippy::borrow_as_ptr,
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss,
        clippy::cast_lossless,
        clippy::cast_ptr_alignment,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )]
    include!(env!("RKVM_UAPI_RS"));
}

pub use error::{Error, Result};
pub use fam::{CpuidEntries, MsrEntries, MsrIndexList};
pub use mem::{GuestMemory, RunMapping, VcpuMapping};
pub use nix::errno::Errno;
pub use run::{IoDirection, IoExit, MmioExit, VcpuExit};
pub use stats::{BinaryStats, StatDesc};
pub use system::{DEFAULT_DEVICE, System};
pub use vcpu::{Vcpu, XSAVE_SIZE};
pub use vm::{MemoryRegion, UserAddr, Vm};

/// The size of a page on x86-64, the unit of memory slots and vCPU mappings.
pub const PAGE_SIZE: usize = 4096;

/// KVM's limit on CPUID entries (`KVM_MAX_CPUID_ENTRIES`,
/// arch/x86/include/asm/kvm_host.h): KVM_SET_CPUID2 refuses more with
/// `E2BIG`; KVM_GET_SUPPORTED_CPUID clamps a larger `nent` to it.
pub const KVM_MAX_CPUID_ENTRIES: usize = 256;

/// KVM's limit on MSRs per KVM_GET_MSRS/KVM_SET_MSRS (`MAX_IO_MSRS`,
/// arch/x86/kvm/msrs.c): `nmsrs >= MAX_IO_MSRS` fails with `E2BIG`.
pub const MAX_IO_MSRS: usize = 256;
