// SPDX-License-Identifier: GPL-2.0

//! Live-object counters, shown in `/sys/kernel/debug/rkvm/stats`
//! (through `sys::debugfs`).
//!
//! The selftests read them to prove that VMs and vCPUs are freed: after any
//! sequence of creates, closes and process deaths, the counts return to
//! where they started.

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::sync::Arc;

/// Counts of live objects.
#[derive(Default)]
pub(crate) struct Stats {
    vms: AtomicUsize,
    vcpus: AtomicUsize,
}

impl fmt::Display for Stats {
    /// The debugfs file's format: one `name: count` line per object kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vms: {}", self.vms.load(Ordering::Relaxed))?;
        writeln!(f, "vcpus: {}", self.vcpus.load(Ordering::Relaxed))
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
