//! Host unit tests of rkvm.ko's pure logic.
//!
//! The module files are included as they are (`#[path]`); `crate::abi` is
//! the same bindgen output of `linux/kvm.h` the module uses, and the
//! `kernel` crate is the small stand-in in `kernel-shim/`. The tests assert
//! the architectural and KVM rules those files implement; each names what
//! it proves.

// The module's code follows the kernel's lint set, checked by the kernel
// build; here it is only compiled for the tests.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::all,
    clippy::pedantic
)]

/// The KVM ABI, as in `module/abi.rs` (the generated structs and the
/// constants the pure logic uses).
pub(crate) mod abi {
    #[allow(
        non_camel_case_types,
        non_snake_case,
        non_upper_case_globals,
        unsafe_op_in_unsafe_fn
    )]
    mod uapi {
        include!(env!("RKVM_UAPI_RS"));
    }
    pub(crate) use uapi::*;
}

/// The ioeventfd table (`module/eventfd/`).
#[path = "../../../module/eventfd"]
pub(crate) mod eventfd {
    pub(crate) mod ioeventfd;
}

/// Coalesced I/O's zones and ring rules (`module/coalesced/`).
#[path = "../../../module/coalesced"]
pub(crate) mod coalesced {
    pub(crate) mod zones;
}

/// guest_memfd's creation and `fallocate` rules (`module/gmem/rules.rs`).
#[path = "../../../module/gmem"]
pub(crate) mod gmem {
    pub(crate) mod rules;
}

#[path = "../../../module/memslot.rs"]
pub(crate) mod memslot;

/// Dirty page logging's bitmap and request rules (`module/dirty/`).
#[path = "../../../module/dirty/mod.rs"]
pub(crate) mod dirty;

/// Hyper-V's leaves, MSR rules, hypercall decoding and reference TSC
/// page (`module/hyperv/`).
#[path = "../../../module/hyperv/mod.rs"]
pub(crate) mod hyperv;

#[path = "../../../module/spec.rs"]
pub(crate) mod spec;

/// The in-kernel interrupt controllers' pure parts (`module/irq/`).
#[path = "../../../module/irq"]
pub(crate) mod irq {
    pub(crate) mod delivery;
    pub(crate) mod ioapic;
    pub(crate) mod lapic;
    pub(crate) mod pic;
    pub(crate) mod pit;
    pub(crate) mod routing;
}

#[path = "../../../module/x86/mod.rs"]
pub(crate) mod x86;

/// The binary statistics format (`module/stats/binary.rs`).
#[path = "../../../module/stats"]
pub(crate) mod stats {
    pub(crate) mod binary;
}

/// The VMX backend's pure parts: the typed VMCS fields, the capability
/// negotiation and the VPID map (`caps.rs` names `super::vmcs`: the crate root here, `vmx`
/// in the module).
#[path = "../../../module/vmx/vmcs.rs"]
pub(crate) mod vmcs;

#[path = "../../../module/vmx/caps.rs"]
pub(crate) mod caps;

#[path = "../../../module/vmx/vpid.rs"]
pub(crate) mod vpid;

#[cfg(test)]
mod tests;
