// SPDX-License-Identifier: GPL-2.0

//! rkvm: a KVM-compatible hypervisor written in Rust.
//!
//! Loading the module finds the CPU's virtualization extension, turns it on
//! for every CPU (and for CPUs that come online later, and again after
//! resume), and registers `/dev/rkvm`, whose ioctls are KVM's. Unloading
//! undoes all of it; it is refused while any fd (and so any VM) is open.
//!
//! Map of the crate (docs/architecture.md has the picture):
//! - [`dev`], [`vm`], [`vcpu`]: the three kinds of fd, in common code.
//! - [`memslot`], [`x86`]: pure logic (slot rules, registers, CPUID, MSRs).
//! - [`backend`]: the trait vendor code implements; [`svm`]: AMD-V;
//!   [`vmx`]: Intel VT-x.
//! - [`sys`]: the only place that touches hardware or C kernel APIs.

use kernel::prelude::*;
use kernel::sync::Arc;

mod abi;
mod backend;
mod coalesced;
mod dev;
mod dirty;
mod eventfd;
mod gmem;
mod hyperv;
mod irq;
mod memslot;
mod mmu;
mod run;
mod spec;
mod stats;
mod svm;
mod sys;
mod user;
mod vcpu;
mod vm;
mod vmx;
mod x86;

use backend::VirtCpus;
use dev::{Shared, System, DEVICE_FOPS};
use stats::Stats;
use sys::cpu::EveryCpu;
use sys::debugfs::{DebugDir, TextFileOps};
use sys::file::MiscRegistration;

module! {
    type: Rkvm,
    name: "rkvm",
    authors: ["The rkvm developers"],
    description: "A KVM-compatible hypervisor in Rust (/dev/rkvm)",
    license: "GPL",
    params: {
        speculation_test: bool {
            default: false,
            description: "Run every speculation-hygiene sequence that needs no CPU feature (RSB fill, VERW) around each guest entry, whatever the host asks for: for the test suite",
        },
    },
}

/// The file operations of `/sys/kernel/debug/rkvm/stats`.
static STATS_FOPS: TextFileOps<Stats> = TextFileOps::new();

/// The loaded module. Fields drop in order: the device goes first (no new
/// opens), then debugfs, then virtualization is turned off on every CPU.
/// (Every open fd pins the module, so none is open when this drops.)
struct Rkvm {
    _device: Pin<KBox<MiscRegistration<System>>>,
    _debugfs: DebugDir<Stats>,
    _cpus: Pin<KBox<EveryCpu<VirtCpus>>>,
}

impl kernel::Module for Rkvm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let backend = backend::probe()?;
        let cpus = EveryCpu::register(c"rkvm:online", VirtCpus(backend.clone())).inspect_err(|e| {
            if *e == EBUSY {
                pr_err!(
                    "the hardware is already in use by another hypervisor; unload it (rmmod kvm_amd or kvm_intel) first\n"
                );
            }
        })?;

        let stats = Arc::new(Stats::default(), GFP_KERNEL)?;
        let debugfs = DebugDir::text_file(c"rkvm", c"stats", &STATS_FOPS, stats.clone());

        // Registered last: once /dev/rkvm exists, userspace may use everything above.
        let shared = Arc::new(
            Shared {
                backend: backend.clone(),
                stats,
                debugfs: debugfs.parent(),
                renamed_vms: core::sync::atomic::AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?;
        let device = KBox::pin_init(
            MiscRegistration::register(c"rkvm", 0o600, &DEVICE_FOPS, shared),
            GFP_KERNEL,
        )?;
        pr_info!("/dev/rkvm ready: {}\n", &*backend);
        Ok(Rkvm {
            _device: device,
            _debugfs: debugfs,
            _cpus: cpus,
        })
    }
}
