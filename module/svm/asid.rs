// SPDX-License-Identifier: GPL-2.0

//! Address-space ids: which guest's TLB entries are whose.
//!
//! The TLB tags guest translations with the VMCB's ASID, so two vCPUs that
//! run on one CPU with the same ASID would see each other's stale
//! translations. rkvm hands out ASIDs per CPU with a generation count, as
//! KVM does: a vCPU gets a fresh ASID whenever it runs on a CPU other than
//! the one it last ran on, or when that CPU's generation has moved on.
//! When a CPU runs out of ASIDs it starts a new generation at ASID 1 and
//! flushes its whole TLB (every ASID) at that VMRUN, so an ASID reused in
//! the new generation starts clean. APM Vol. 2 15.16.
//!
//! The counters are touched only by their own CPU with interrupts off, so
//! relaxed atomics are enough; they are atomics only to be shareable.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One CPU's allocator.
pub(crate) struct CpuAsids {
    generation: AtomicU64,
    next: AtomicU32,
}

impl CpuAsids {
    pub(crate) fn new() -> Self {
        Self {
            generation: AtomicU64::new(1),
            next: AtomicU32::new(1),
        }
    }
}

/// A vCPU's ASID and where it is valid.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct VcpuAsid {
    pub(crate) asid: u32,
    cpu: Option<u32>,
    generation: u64,
}

/// What the TLB needs at the next VMRUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    None,
    /// Every ASID's entries (a new generation began).
    All,
}

impl VcpuAsid {
    /// Forgets the ASID, so the next [`VcpuAsid::prepare`] allocates a
    /// fresh one (with whatever flush that needs): used when a VMRUN failed
    /// before the flush it asked for could happen.
    pub(crate) fn forget(&mut self) {
        self.cpu = None;
    }

    /// Makes sure the vCPU has an ASID valid on `cpu`, allocating one from
    /// `pool` (that CPU's) if needed. Call on `cpu` with interrupts off.
    pub(crate) fn prepare(&mut self, cpu: u32, pool: &CpuAsids, max_asid: u32) -> Flush {
        let generation = pool.generation.load(Ordering::Relaxed);
        if self.cpu == Some(cpu) && self.generation == generation {
            return Flush::None;
        }
        let mut flush = Flush::None;
        let mut generation = generation;
        let mut asid = pool.next.load(Ordering::Relaxed);
        if asid > max_asid {
            generation += 1;
            pool.generation.store(generation, Ordering::Relaxed);
            asid = 1;
            flush = Flush::All;
        }
        pool.next.store(asid + 1, Ordering::Relaxed);
        *self = VcpuAsid {
            asid,
            cpu: Some(cpu),
            generation,
        };
        flush
    }
}
