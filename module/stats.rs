// SPDX-License-Identifier: GPL-2.0

//! Live-object counters, shown in `/sys/kernel/debug/rkvm/stats`
//! (through `sys::debugfs`).
//!
//! The selftests read them to prove that VMs and vCPUs are freed: after any
//! sequence of creates, closes and process deaths, the counts return to
//! where they started; and to prove that exits are what a guest did (one
//! `exits.<reason>: N` line per vendor-neutral exit reason, counted since
//! the module was loaded).

use crate::backend::Exit;
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kernel::sync::Arc;

/// The exit reasons counted, by the name the statistics file shows.
const EXIT_NAMES: [&str; 15] = [
    "io",
    "hlt",
    "cpuid",
    "msr",
    "debug_register",
    "slat_fault",
    "shutdown",
    "host_interrupt",
    "interrupt_window",
    "exception",
    "undefined",
    "skip",
    "invalid_state",
    "unhandled",
    "mmio",
];

/// Index of an exit's counter in [`EXIT_NAMES`].
fn exit_index(exit: &Exit) -> usize {
    match exit {
        Exit::Io(_) => 0,
        Exit::Hlt => 1,
        Exit::Cpuid => 2,
        Exit::Msr { .. } => 3,
        Exit::DebugRegister => 4,
        Exit::SlatFault { .. } => 5,
        Exit::Shutdown => 6,
        Exit::HostInterrupt => 7,
        Exit::InterruptWindow => 8,
        Exit::Exception { .. } => 9,
        Exit::Undefined => 10,
        Exit::Skip => 11,
        Exit::InvalidState(_) => 12,
        Exit::Unhandled(_) => 13,
    }
}

/// Counts of live objects and of exits.
#[derive(Default)]
pub(crate) struct Stats {
    vms: AtomicUsize,
    vcpus: AtomicUsize,
    exits: [AtomicU64; EXIT_NAMES.len()],
}

impl Stats {
    /// Counts one exit.
    pub(crate) fn count_exit(&self, exit: &Exit) {
        self.exits[exit_index(exit)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a second-level fault that turned out to be MMIO (it is also
    /// counted as `slat_fault`).
    pub(crate) fn count_mmio(&self) {
        self.exits[EXIT_NAMES.len() - 1].fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Display for Stats {
    /// The debugfs file's format: one `name: count` line per counter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vms: {}", self.vms.load(Ordering::Relaxed))?;
        writeln!(f, "vcpus: {}", self.vcpus.load(Ordering::Relaxed))?;
        for (name, count) in EXIT_NAMES.iter().zip(self.exits.iter()) {
            writeln!(f, "exits.{}: {}", name, count.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

/// Which counter a [`Live`] token counts in.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Vm,
    Vcpu,
}

/// A token held by each live object: counted on creation, uncounted on drop.
pub(crate) struct Live {
    stats: Arc<Stats>,
    kind: Kind,
}

impl Live {
    pub(crate) fn new(stats: &Arc<Stats>, kind: Kind) -> Self {
        Self::counter(stats, kind).fetch_add(1, Ordering::Relaxed);
        Self {
            stats: stats.clone(),
            kind,
        }
    }

    fn counter(stats: &Stats, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Vm => &stats.vms,
            Kind::Vcpu => &stats.vcpus,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        Self::counter(&self.stats, self.kind).fetch_sub(1, Ordering::Relaxed);
    }
}
