// SPDX-License-Identifier: GPL-2.0

//! Counters: live objects, shown in `/sys/kernel/debug/rkvm/stats`
//! (through `sys::debugfs`), and each VM's and vCPU's statistics, shown in
//! debugfs and read through the binary statistics fds of
//! `KVM_GET_STATS_FD` ([`binary`], [`fd`]).
//!
//! The selftests read them to prove that VMs and vCPUs are freed: after any
//! sequence of creates, closes and process deaths, the counts return to
//! where they started; and to prove that exits are what a guest did (one
//! `exits.<reason>: N` line per vendor-neutral exit reason, counted since
//! the module was loaded).

pub(crate) mod binary;
pub(crate) mod fd;

use crate::backend::Exit;
use binary::Desc;
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// One counter, shown as a number and a newline (KVM's debugfs format).
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.0.load(Ordering::Relaxed))
    }
}

/// The exit reasons counted in `exits_by_reason`, by name.
const EXIT_NAMES: [&str; 23] = [
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
    "cache_flush",
    "invalid_state",
    "unhandled",
    "cr_write",
    "cr_read",
    "busy",
    "nmi_window",
    "iret",
    "hypercall",
    "xsetbv",
    "debug",
    "rsm",
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
        Exit::CacheFlush { .. } => 11,
        Exit::InvalidState(_) => 12,
        Exit::Unhandled(_) => 13,
        Exit::CrWrite { .. } | Exit::Lmsw { .. } => 14,
        Exit::CrRead { .. } => 15,
        Exit::Busy => 16,
        Exit::NmiWindow => 17,
        Exit::Iret => 18,
        Exit::Hypercall { .. } => 19,
        Exit::Xsetbv => 20,
        Exit::Debug { .. } => 21,
        Exit::Rsm => 22,
    }
}

/// Every exit from the guest, by vendor-neutral reason.
#[derive(Default)]
pub(crate) struct ExitsByReason([AtomicU64; EXIT_NAMES.len()]);

impl fmt::Display for ExitsByReason {
    /// One `reason: count` line per reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, count) in EXIT_NAMES.iter().zip(self.0.iter()) {
            writeln!(f, "{}: {}", name, count.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

/// One VM's statistics, shown in `/sys/kernel/debug/rkvm/<pid>-<fd>/`
/// (the directory KVM names the same way under `.../kvm/`). The files with
/// a KVM name count what KVM's file of that name counts, so a test can
/// read the same file on both.
#[derive(Default)]
pub(crate) struct VmStats {
    /// Every exit from the guest (KVM's `exits`).
    pub(crate) exits: Counter,
    /// Exits to user space for port I/O (`io_exits`).
    pub(crate) io_exits: Counter,
    /// Exits to user space for MMIO (`mmio_exits`).
    pub(crate) mmio_exits: Counter,
    /// HLT exits, to user space or, with an in-kernel APIC, handled in
    /// the kernel (`halt_exits`).
    pub(crate) halt_exits: Counter,
    /// In-kernel irqchip: interrupts injected from it (`irq_injections`),
    /// halted vCPUs woken (`halt_wakeup`), and rkvm's own: IPIs sent
    /// (`ipis`) and APIC timer expiries (`apic_timer_fires`).
    pub(crate) irq_injections: Counter,
    pub(crate) halt_wakeup: Counter,
    pub(crate) ipis: Counter,
    pub(crate) apic_timer_fires: Counter,
    /// rkvm's own: irqfd deliveries, one per run of its work item (signals
    /// that came before the run merge into it) (`irqfd_fires`), and
    /// guest writes that signalled an ioeventfd (`ioeventfd_signals`).
    pub(crate) irqfd_fires: Counter,
    pub(crate) ioeventfd_signals: Counter,
    /// rkvm's own: ticks of the in-kernel PIT delivered to GSI 0
    /// (`pit_ticks`).
    pub(crate) pit_ticks: Counter,
    /// Exits for a host interrupt (`irq_exits`).
    pub(crate) irq_exits: Counter,
    /// `KVM_EXIT_IRQ_WINDOW_OPEN` returns (`request_irq_exits`).
    pub(crate) request_irq_exits: Counter,
    /// `KVM_EXIT_INTR` returns (`signal_exits`).
    pub(crate) signal_exits: Counter,
    /// Guest memory mapped now with 4 KiB and 2 MiB leaves (`pages_4k`,
    /// `pages_2m`).
    pub(crate) pages_4k: Counter,
    pub(crate) pages_2m: Counter,
    /// rkvm's own: MMIO instructions whose bytes the CPU fetched (SVM's
    /// decode assists) rather than rkvm's walk of the guest's page tables
    /// (`mmio_insn_from_cpu`).
    pub(crate) mmio_insn_from_cpu: Counter,
    /// rkvm's own: exits answered on the fast path, without leaving the
    /// guest's context (`fastpath_exits`; run/fastpath.rs). They are in
    /// `exits` and `exits_by_reason` too.
    pub(crate) fastpath_exits: Counter,
    /// rkvm's own breakdown (`exits_by_reason`).
    pub(crate) by_reason: ExitsByReason,
}

impl VmStats {
    /// The VM's statistics in its binary statistics fd, in the order of
    /// [`VmStats::values`]: KVM's names where KVM keeps the same count per
    /// VM (the mapped pages), rkvm's own for the in-kernel devices. (KVM
    /// counts exits per vCPU only: they are in [`VcpuStats`].)
    pub(crate) const DESCS: [Desc; 9] = [
        Desc::instant("pages_4k"),
        Desc::instant("pages_2m"),
        Desc::cumulative("ipis"),
        Desc::cumulative("apic_timer_fires"),
        Desc::cumulative("irqfd_fires"),
        Desc::cumulative("ioeventfd_signals"),
        Desc::cumulative("pit_ticks"),
        Desc::cumulative("mmio_insn_from_cpu"),
        Desc::cumulative("fastpath_exits"),
    ];

    /// The values of [`VmStats::DESCS`], now.
    pub(crate) fn values(&self) -> [u64; 9] {
        [
            self.pages_4k.get(),
            self.pages_2m.get(),
            self.ipis.get(),
            self.apic_timer_fires.get(),
            self.irqfd_fires.get(),
            self.ioeventfd_signals.get(),
            self.pit_ticks.get(),
            self.mmio_insn_from_cpu.get(),
            self.fastpath_exits.get(),
        ]
    }

    /// Counts one exit from the guest.
    pub(crate) fn count_exit(&self, exit: &Exit) {
        self.exits.add(1);
        self.by_reason.0[exit_index(exit)].fetch_add(1, Ordering::Relaxed);
        if *exit == Exit::HostInterrupt {
            self.irq_exits.add(1);
        }
    }
}

const _: () = assert!(binary::names_fit(&VmStats::DESCS));

/// One vCPU's statistics, in its binary statistics fd: what KVM counts per
/// vCPU under the same names (the VM's debugfs files are their sums over
/// its vCPUs, as in KVM).
#[derive(Default)]
pub(crate) struct VcpuStats {
    /// Every exit from the guest (`exits`).
    pub(crate) exits: Counter,
    /// Exits to user space for port I/O and MMIO (`io_exits`, `mmio_exits`).
    pub(crate) io_exits: Counter,
    pub(crate) mmio_exits: Counter,
    /// HLT exits (`halt_exits`).
    pub(crate) halt_exits: Counter,
    /// Exits for a host interrupt (`irq_exits`).
    pub(crate) irq_exits: Counter,
    /// `KVM_EXIT_IRQ_WINDOW_OPEN` returns (`request_irq_exits`).
    pub(crate) request_irq_exits: Counter,
    /// `KVM_EXIT_INTR` returns (`signal_exits`).
    pub(crate) signal_exits: Counter,
}

impl VcpuStats {
    /// The vCPU's statistics in its binary statistics fd, in the order of
    /// [`VcpuStats::values`].
    pub(crate) const DESCS: [Desc; 7] = [
        Desc::cumulative("exits"),
        Desc::cumulative("io_exits"),
        Desc::cumulative("mmio_exits"),
        Desc::cumulative("halt_exits"),
        Desc::cumulative("irq_exits"),
        Desc::cumulative("request_irq_exits"),
        Desc::cumulative("signal_exits"),
    ];

    /// The values of [`VcpuStats::DESCS`], now.
    pub(crate) fn values(&self) -> [u64; 7] {
        [
            self.exits.get(),
            self.io_exits.get(),
            self.mmio_exits.get(),
            self.halt_exits.get(),
            self.irq_exits.get(),
            self.request_irq_exits.get(),
            self.signal_exits.get(),
        ]
    }

    /// Counts one exit from the guest.
    pub(crate) fn count_exit(&self, exit: &Exit) {
        self.exits.add(1);
        if *exit == Exit::HostInterrupt {
            self.irq_exits.add(1);
        }
    }
}

const _: () = assert!(binary::names_fit(&VcpuStats::DESCS));

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
