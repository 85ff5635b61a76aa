//! The objects one epoch's worker threads share: open fds by kind, guest
//! memory mappings, and the supported CPUID table. Threads pick their
//! targets here under the lock and make their system calls without it, so
//! that calls on the same objects race, as the fuzzer wants.

use std::sync::{Mutex, MutexGuard};

use crate::rng::Rng;
use crate::sys::RunPage;

/// A vCPU fd and its `kvm_run` page (mapped when the vCPU was created).
#[derive(Clone, Copy, Debug)]
pub(crate) struct VcpuFd {
    pub(crate) fd: i32,
    pub(crate) run: Option<RunPage>,
}

/// A guest memory mapping of the fuzzer's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Region {
    /// Its number, for the trace.
    pub(crate) id: usize,
    pub(crate) addr: usize,
    pub(crate) len: usize,
    /// Whether [`crate::sys::unmap_guest`] has replaced it (in whole or part):
    /// the fuzzer no longer writes to it, the kernel may still be told of it.
    pub(crate) unmapped: bool,
}

/// Everything the workers of one epoch share.
#[derive(Default)]
pub(crate) struct World {
    pub(crate) systems: Vec<i32>,
    pub(crate) vms: Vec<i32>,
    pub(crate) vcpus: Vec<VcpuFd>,
    pub(crate) regions: Vec<Region>,
    pub(crate) next_region: usize,
    /// KVM_GET_SUPPORTED_CPUID's answer, as raw `kvm_cpuid_entry2` words.
    pub(crate) cpuid: Vec<kvm_abi::sys::kvm_cpuid_entry2>,
}

/// The shared world behind its lock.
#[derive(Default)]
pub(crate) struct Shared(Mutex<World>);

impl Shared {
    /// The world, locked (a worker that panicked cannot poison it for the
    /// others: its state is plain data).
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl World {
    /// A random system fd.
    pub(crate) fn system(&self, rng: &mut Rng) -> Option<i32> {
        rng.pick(&self.systems)
    }

    /// A random VM fd.
    pub(crate) fn vm(&self, rng: &mut Rng) -> Option<i32> {
        rng.pick(&self.vms)
    }

    /// A random vCPU.
    pub(crate) fn vcpu(&self, rng: &mut Rng) -> Option<VcpuFd> {
        rng.pick(&self.vcpus)
    }

    /// A random live (not unmapped) region.
    pub(crate) fn live_region(&self, rng: &mut Rng) -> Option<Region> {
        let live: Vec<Region> = self
            .regions
            .iter()
            .filter(|r| !r.unmapped)
            .copied()
            .collect();
        rng.pick(&live)
    }

    /// A random region, live or not.
    pub(crate) fn region(&self, rng: &mut Rng) -> Option<Region> {
        rng.pick(&self.regions)
    }

    /// Any KVM fd of the world.
    pub(crate) fn any_fd(&self, rng: &mut Rng) -> Option<i32> {
        match rng.below(3) {
            0 => self.system(rng),
            1 => self.vm(rng),
            _ => self.vcpu(rng).map(|v| v.fd),
        }
    }

    /// Records a new guest mapping at `addr`, `len` bytes, and returns its
    /// number.
    pub(crate) fn add_region(&mut self, addr: usize, len: usize) -> usize {
        let id = self.next_region;
        self.next_region += 1;
        self.regions.push(Region {
            id,
            addr,
            len,
            unmapped: false,
        });
        id
    }

    /// Removes a random fd from the world and returns it, with its kind,
    /// for the caller to close.
    pub(crate) fn take_fd(&mut self, rng: &mut Rng) -> Option<(&'static str, i32)> {
        match rng.below(3) {
            0 if !self.systems.is_empty() => {
                let i = rng.index(self.systems.len());
                Some(("system", self.systems.swap_remove(i)))
            }
            1 if !self.vms.is_empty() => {
                let i = rng.index(self.vms.len());
                Some(("vm", self.vms.swap_remove(i)))
            }
            _ if !self.vcpus.is_empty() => {
                let i = rng.index(self.vcpus.len());
                Some(("vcpu", self.vcpus.swap_remove(i).fd))
            }
            _ => None,
        }
    }
}
