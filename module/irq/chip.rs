// SPDX-License-Identifier: GPL-2.0

//! The kernel side of the in-kernel irqchip: the models of this folder
//! behind locks, the wiring between them, and the wake-ups.
//!
//! - [`Irqchip`], one per VM (`KVM_CREATE_IRQCHIP`): the PIC and IOAPIC,
//!   and the list of local APICs messages are delivered to.
//! - [`VcpuApic`], one per vCPU of such a VM: its local APIC, the hrtimer
//!   behind the APIC timer, the condition variable a halted vCPU sleeps
//!   on, and what it takes to make a running vCPU look at its APIC again.
//!
//! How an interrupt reaches a guest, from any thread: the source (a
//! `KVM_IRQ_LINE`, another vCPU's ICR write, the timer callback) changes
//! the target APIC's IRR under its lock, then [`VcpuApic::kick`]s it: the
//! flag `kicked` is set, a sleeping vCPU is woken, and a vCPU in guest
//! mode on another CPU gets an IPI, which makes its guest exit. The run
//! loop clears `kicked` before it decides what to inject and checks it
//! again with interrupts off right before entering (`run::enter`): either
//! it sees the flag and goes round, or the source sees it in the guest and
//! the IPI takes it out (both sides use sequentially consistent accesses:
//! the same pairing as `Vm::unmap`'s).
//!
//! Lock order: the VM's irqfd list (`eventfd::irqfd`), then
//! `resamplers` (held while an acknowledgement lowers the line and
//! signals the resample eventfds), then `routing`, then the `apics` list,
//! then an APIC's lock. `routing` is dropped before anything is delivered. The
//! PIC and IOAPIC locks are never held while another lock is taken:
//! messages an IOAPIC sends are collected and delivered after its lock is
//! dropped. The APIC, PIC and IOAPIC locks disable interrupts (the APIC
//! timer's hrtimer callback takes the APIC's).

use super::delivery::{DeliveryMode, Message, Msi};
use super::ioapic::{entry as ioapic_entry, Ioapic, IoapicState, Source, PINS};
use super::lapic::{self, Effect, Lapic, Summary};
use super::pic::{ChipState, Pic};
use super::routing::{Routing, Target};
use crate::abi;
use crate::stats::VmStats;
use crate::sys::cpu;
use crate::sys::eventfd::EventFd;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::{
    new_condvar, new_mutex, new_spinlock_irq, Arc, ArcBorrow, CondVar, Mutex, SpinLockIrq,
};
use kernel::time::hrtimer::{
    ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
    HrTimerRestart, RelativeMode,
};
use kernel::time::{Delta, Monotonic};

/// `KVM_GET/SET_IRQCHIP`'s chip ids.
pub(crate) const CHIP_PIC_MASTER: u32 = 0;
pub(crate) const CHIP_PIC_SLAVE: u32 = 1;
pub(crate) const CHIP_IOAPIC: u32 = 2;

/// The bytes of `struct kvm_irqchip`: chip id, padding, and a 512-byte
/// union of the chip states.
pub(crate) const IRQCHIP_BYTES: usize = 8 + 512;
const _: () = assert!(core::mem::size_of::<crate::abi::kvm_irqchip>() == IRQCHIP_BYTES);

/// Messages collected under the IOAPIC's lock, delivered after it: one per
/// pin at most per operation.
struct Messages {
    items: [Option<Message>; PINS],
    len: usize,
}

impl Messages {
    fn new() -> Self {
        Messages {
            items: [None; PINS],
            len: 0,
        }
    }

    fn push(&mut self, m: Message) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(m);
            self.len += 1;
        }
    }
}

/// `KVM_CAP_X2APIC_API`'s settings, per VM (they may be enabled before
/// or after the irqchip exists, so the VM and its irqchip share them).
pub(crate) struct ApicApi {
    /// `KVM_X2APIC_API_USE_32BIT_IDS`: MSIs carry destination bits 31:8 in
    /// their high address, and `KVM_GET/SET_LAPIC` hold an x2APIC's ID as
    /// is rather than in the xAPIC position.
    ids32: AtomicBool,
    /// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`: an xAPIC broadcast from
    /// an IOAPIC or MSI no longer reaches APICs in x2APIC mode
    /// (`Destination::x2apic_broadcast_quirk`).
    quirk_off: AtomicBool,
}

impl ApicApi {
    /// The flags `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)` takes, as
    /// `KVM_CHECK_EXTENSION` reports them. KVM's two suppress-EOI-broadcast
    /// flags are not among them: rkvm offers no directed EOI (docs/abi.md).
    pub(crate) const FLAGS: u64 =
        abi::KVM_X2APIC_API_USE_32BIT_IDS | abi::KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK;

    pub(crate) fn new() -> Self {
        ApicApi {
            ids32: AtomicBool::new(false),
            quirk_off: AtomicBool::new(false),
        }
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)`: each flag given turns its
    /// setting on for good (KVM never turns one off); unknown flags are
    /// `EINVAL`.
    pub(crate) fn enable(&self, flags: u64) -> Result {
        if flags & !Self::FLAGS != 0 {
            return Err(EINVAL);
        }
        if flags & abi::KVM_X2APIC_API_USE_32BIT_IDS != 0 {
            self.ids32.store(true, Ordering::SeqCst);
        }
        if flags & abi::KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK != 0 {
            self.quirk_off.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    pub(crate) fn ids32(&self) -> bool {
        self.ids32.load(Ordering::SeqCst)
    }

    fn quirk_off(&self) -> bool {
        self.quirk_off.load(Ordering::SeqCst)
    }
}

/// Which controllers are in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChipMode {
    /// `KVM_CREATE_IRQCHIP`: the local APICs, the IOAPIC and the PIC.
    Full,
    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: only the local APICs. User
    /// space models the IOAPIC and the PIC: its IOAPIC sends MSIs (GSI
    /// routes or `KVM_SIGNAL_MSI`), learns of EOIs through
    /// `KVM_EXIT_IOAPIC_EOI`, and its PIC's interrupts come in through
    /// `KVM_INTERRUPT` as ExtINT. The GSIs below `reserved_pins` are its
    /// IOAPIC's pins: a level-triggered MSI route on one of them makes the
    /// EOI of its vector exit to user space.
    Split { reserved_pins: u32 },
}

/// A VM's in-kernel interrupt controllers.
#[pin_data]
pub(crate) struct Irqchip {
    mode: ChipMode,
    /// The VM's `KVM_CAP_X2APIC_API` settings.
    pub(crate) api: Arc<ApicApi>,
    #[pin]
    pic: SpinLockIrq<Pic>,
    #[pin]
    ioapic: SpinLockIrq<Ioapic>,
    /// The master PIC's INT output (to the BSP's LINT0), kept up to date
    /// under the PIC's lock, read without it.
    pic_output: AtomicBool,
    #[pin]
    apics: Mutex<KVec<Arc<VcpuApic>>>,
    /// The GSI routing table (KVM's default until `KVM_SET_GSI_ROUTING`).
    #[pin]
    routing: Mutex<Routing>,
    /// The resample eventfds of resampling irqfds, with their GSIs
    /// (`eventfd::irqfd`): signalled when the guest acknowledges the GSI.
    #[pin]
    resamplers: Mutex<KVec<(u32, Arc<EventFd>)>>,
    /// A PIT exists (`KVM_CREATE_PIT2`): the acknowledgements of GSI 0
    /// pace its ticks.
    has_pit: AtomicBool,
    /// The PIT's tick reinjection (KVM's default, `KVM_REINJECT_CONTROL`):
    /// every tick reaches the guest, one after the other, each once the
    /// guest acknowledged the one before. `pit_pending` counts the ticks
    /// not yet acknowledged, `pit_acked` says whether the last injected
    /// one was.
    pit_reinject: AtomicBool,
    pit_pending: AtomicU32,
    pit_acked: AtomicBool,
    /// The VM's counters (debugfs).
    pub(crate) stats: Arc<VmStats>,
}

impl Irqchip {
    /// The controllers of `mode`. A full irqchip starts with KVM's
    /// default routing table; a split one with none (KVM: user space
    /// routes its IOAPIC's pins itself).
    pub(crate) fn new(stats: Arc<VmStats>, mode: ChipMode, api: Arc<ApicApi>) -> Result<Arc<Self>> {
        let routing = match mode {
            ChipMode::Full => Routing::default_table()?,
            ChipMode::Split { .. } => Routing::empty(),
        };
        Arc::pin_init(
            pin_init!(Irqchip {
                mode,
                api,
                stats,
                pic <- new_spinlock_irq!(Pic::new(), "rkvm::Irqchip::pic"),
                ioapic <- new_spinlock_irq!(Ioapic::new(), "rkvm::Irqchip::ioapic"),
                pic_output: AtomicBool::new(false),
                apics <- new_mutex!(KVec::new(), "rkvm::Irqchip::apics"),
                routing <- new_mutex!(routing, "rkvm::Irqchip::routing"),
                resamplers <- new_mutex!(KVec::new(), "rkvm::Irqchip::resamplers"),
                has_pit: AtomicBool::new(false),
                pit_reinject: AtomicBool::new(true),
                pit_pending: AtomicU32::new(0),
                pit_acked: AtomicBool::new(true),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Only the local APICs are in the kernel (`KVM_CAP_SPLIT_IRQCHIP`).
    pub(crate) fn is_split(&self) -> bool {
        matches!(self.mode, ChipMode::Split { .. })
    }

    /// Adds a new vCPU's APIC to the delivery list.
    pub(crate) fn add_apic(&self, apic: Arc<VcpuApic>) -> Result {
        self.apics.lock().push(apic, GFP_KERNEL_ACCOUNT)?;
        Ok(())
    }

    /// Takes an APIC back out (its vCPU never got an fd).
    pub(crate) fn remove_apic(&self, apic: &Arc<VcpuApic>) {
        self.apics.lock().retain(|a| !Arc::ptr_eq(a, apic));
    }

    /// Delivers `m` to every local APIC it names (one, for lowest
    /// priority: rkvm picks the first, where KVM arbitrates by priority).
    /// Fixed and lowest-priority messages go into IRR; INIT (an assert;
    /// the de-assert is ignored, as by every APIC since the Pentium 4) and
    /// SIPI are latched for the vCPU's run loop (KVM's `pending_events`).
    /// NMIs and SMIs are latched for the run loop too (`run/nmi.rs`,
    /// `run/smm.rs`). ExtINT messages are dropped (ExtINT comes through
    /// LINT0).
    /// Returns how many APICs took it.
    pub(crate) fn deliver(&self, m: &Message) -> u32 {
        let mut m = *m;
        if self.api.quirk_off() {
            m.dest.x2apic_broadcast_quirk = false;
        }
        let apics = self.apics.lock();
        let mut taken = 0;
        for apic in apics.iter() {
            let accepted = {
                let mut l = apic.lock_lapic();
                l.is_destination(&m.dest)
                    && match m.mode {
                        // A level-triggered de-assert message carries no interrupt (KVM's
                        // `__apic_accept_irq`).
                        DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                            (m.assert || !m.level) && l.accept_fixed(m.vector, m.level)
                        }
                        DeliveryMode::Init if m.assert => {
                            apic.init.store(true, Ordering::SeqCst);
                            true
                        }
                        // An NMI is taken whatever the APIC's state (KVM's
                        // `__apic_accept_irq`): the run loop injects it.
                        DeliveryMode::Nmi => {
                            apic.nmi.fetch_add(1, Ordering::SeqCst);
                            true
                        }
                        // As an NMI: taken whatever the APIC's state (KVM's
                        // `__apic_accept_irq`); the run loop enters SMM.
                        DeliveryMode::Smi => {
                            apic.smi.store(true, Ordering::SeqCst);
                            true
                        }
                        DeliveryMode::StartUp => {
                            apic.sipi
                                .store(SIPI_LATCHED | u32::from(m.vector), Ordering::SeqCst);
                            true
                        }
                        _ => false,
                    }
            };
            if accepted {
                apic.kick();
                taken += 1;
                if m.mode == DeliveryMode::LowestPriority {
                    break;
                }
            }
        }
        taken
    }

    /// A Hyper-V IPI (hyperv/ipi.rs): fixed, edge-triggered `vector` to
    /// every vCPU whose VP index `to` accepts, whatever its APIC's
    /// destination settings (KVM's `kvm_hv_send_ipi_to_many`).
    pub(crate) fn send_hv_ipi(&self, vector: u8, to: impl Fn(u32) -> bool) {
        let apics = self.apics.lock();
        for apic in apics.iter() {
            if !to(apic.hv_vp_index.load(Ordering::SeqCst)) {
                continue;
            }
            if apic.lock_lapic().accept_fixed(vector, false) {
                apic.kick();
            }
        }
    }

    fn deliver_all(&self, msgs: &Messages) {
        for m in msgs.items[..msgs.len].iter().flatten() {
            self.deliver(m);
        }
    }

    /// Records the PIC's output after a change, under the PIC's lock (so
    /// that two threads' changes cannot store it in the wrong order), and
    /// tells whether it rose.
    fn pic_latch(&self, pic: &Pic) -> bool {
        let output = pic.output();
        let was = self.pic_output.swap(output, Ordering::SeqCst);
        output && !was
    }

    /// After the PIC's lock is dropped: if its output rose, the BSP (which
    /// takes the PIC's interrupts through LINT0) is kicked.
    fn pic_changed(&self, rose: bool) {
        if rose {
            if let Some(bsp) = self.apics.lock().iter().find(|a| a.bsp) {
                bsp.kick();
            }
        }
    }

    /// `source` (`KVM_IRQ_LINE` or an irqfd) sets GSI `gsi` to `level`
    /// through the routing table: PIC inputs and IOAPIC pins follow the
    /// level; an MSI is sent when the level is high (KVM's `kvm_set_msi`
    /// ignores a low level). A GSI with no route goes nowhere (KVM returns
    /// success for it too).
    ///
    /// Returns `KVM_IRQ_LINE_STATUS`'s status, KVM's sum over the targets
    /// (`kvm_set_irq`): -1 if no target took the interrupt (no route, a
    /// masked pin, an MSI no APIC accepts, an MSI at level 0), else the
    /// sum of what the targets say: 0 for a request that merged with one
    /// still pending (coalesced), 1 for a PIC request or a lowered line,
    /// the number of APICs an IOAPIC pin or MSI reached.
    pub(crate) fn set_irq(&self, gsi: u32, source: Source, level: bool) -> i32 {
        let targets = self.routing.lock().targets(gsi);
        let mut status = -1;
        for target in targets.into_iter().flatten() {
            let r = match target {
                Target::Pic(irq) => {
                    let bit = 1u8 << (irq & 7);
                    let (before, after, rose) = {
                        let mut pic = self.pic.lock();
                        let before = pic.state(irq >= 8);
                        let _ = pic.set_irq(u32::from(irq), source, level);
                        (before, pic.state(irq >= 8), self.pic_latch(&pic))
                    };
                    self.pic_changed(rose);
                    // KVM's `pic_set_irq1`: a request that was in IRR already is
                    // coalesced (0); lowering, or an edge line already high, is 1.
                    let line = after.last_irr & bit != 0;
                    let edge_already_high = before.elcr & bit == 0 && before.last_irr & bit != 0;
                    if before.imr & bit != 0 {
                        -1
                    } else if !line || edge_already_high || before.irr & bit == 0 {
                        1
                    } else {
                        0
                    }
                }
                Target::Ioapic(pin) => {
                    let mut msgs = Messages::new();
                    let (entry, irr) = {
                        let mut io = self.ioapic.lock();
                        let before = (io.entry(usize::from(pin)), io.state().irr);
                        let _ = io.set_line(usize::from(pin), source, level, &mut |m| msgs.push(m));
                        before
                    };
                    let taken: u32 = msgs.items[..msgs.len]
                        .iter()
                        .flatten()
                        .map(|m| self.deliver(m))
                        .sum();
                    // KVM's `ioapic_set_irq`: lowering is 1; a request pending
                    // already (edge: IRR set; level: remote IRR set) is coalesced.
                    let level_triggered = entry & ioapic_entry::LEVEL != 0;
                    if !level {
                        1
                    } else if (!level_triggered && irr & (1 << pin) != 0)
                        || (level_triggered && entry & ioapic_entry::REMOTE_IRR != 0)
                    {
                        0
                    } else if entry & ioapic_entry::MASKED != 0 || taken == 0 {
                        -1
                    } else {
                        taken as i32
                    }
                }
                Target::Msi(msi) if level => match self.send_msi(&msi) {
                    0 => -1,
                    n => n as i32,
                },
                Target::Msi(_) => -1,
            };
            if r >= 0 {
                status = r + status.max(0);
            }
        }
        status
    }

    /// `KVM_SET_GSI_ROUTING`: the new table replaces the old one. With a
    /// split irqchip, an APIC that has a vector in service or pending
    /// which a level-triggered route of the user-space IOAPIC's pins in
    /// the new table uses, though for another APIC, still reports that
    /// vector's next EOI to user space: the interrupt may have come from
    /// that pin under the old routes, and the IOAPIC waits for its EOI
    /// (KVM's `kvm_scan_ioapic_irq`). A vector no route of the new table
    /// uses is forgotten, as by KVM.
    pub(crate) fn set_routing(&self, routing: Routing) {
        let mut table = self.routing.lock();
        let ids32 = self.api.ids32();
        if let ChipMode::Split { reserved_pins } = self.mode {
            for apic in self.apics.lock().iter() {
                apic.with(|l| {
                    for vector in 0..=255u8 {
                        if (l.in_isr(vector) || l.in_irr(vector))
                            && routing.ioapic_vector_reaches(reserved_pins, ids32, vector, |_| true)
                        {
                            apic.stale_eoi.set(vector);
                        }
                    }
                });
            }
        }
        *table = routing;
    }

    /// With a split irqchip, whether the EOI of `vector` by `apic` goes to
    /// user space (`KVM_EXIT_IOAPIC_EOI`): a level-triggered MSI route of
    /// one of the user-space IOAPIC's pins delivers that vector to this
    /// APIC, or the vector was outstanding here when the table changed
    /// (see [`Self::set_routing`]; that EOI is reported once).
    /// KVM's `kvm_ioapic_send_eoi` decides the same way, from the vectors
    /// its scan of the routes marked; it ignores the guest's directed-EOI
    /// bit here (its default, "quirked", behaviour for a split irqchip).
    pub(crate) fn split_eoi_exits(&self, apic: &VcpuApic, vector: u8) -> bool {
        let ChipMode::Split { reserved_pins } = self.mode else {
            return false;
        };
        let stale = apic.stale_eoi.take(vector);
        let ids32 = self.api.ids32();
        let table = self.routing.lock();
        stale
            || apic.with(|l| {
                table.ioapic_vector_reaches(reserved_pins, ids32, vector, |d| l.is_destination(d))
            })
    }

    /// Sends an MSI (`KVM_SIGNAL_MSI`, or a GSI routed to one): how many
    /// APICs took it. An address outside the interrupt window, or a
    /// reserved delivery mode, reaches none.
    pub(crate) fn send_msi(&self, msi: &Msi) -> u32 {
        msi.message_in(self.api.ids32())
            .map_or(0, |m| self.deliver(&m))
    }

    /// Adds a resampling irqfd's resample eventfd for `gsi`.
    pub(crate) fn add_resampler(&self, gsi: u32, eventfd: Arc<EventFd>) -> Result {
        self.resamplers
            .lock()
            .push((gsi, eventfd), GFP_KERNEL_ACCOUNT)?;
        Ok(())
    }

    /// Removes a resample eventfd; once `gsi` has none, its resample
    /// source goes low (KVM's `irqfd_resampler_shutdown`).
    pub(crate) fn remove_resampler(&self, gsi: u32, eventfd: &Arc<EventFd>) {
        let mut list = self.resamplers.lock();
        list.retain(|(_, e)| !Arc::ptr_eq(e, eventfd));
        if !list.iter().any(|&(g, _)| g == gsi) {
            let _ = self.set_irq(gsi, Source::Resample, false);
        }
    }

    /// The guest acknowledged PIC input or IOAPIC pin `target` (an EOI):
    /// the resampling irqfds of its GSI lower their line and signal their
    /// resample eventfds, before the line is looked at again (KVM's ack
    /// notifiers, `irqfd_resampler_ack`).
    fn ack(&self, target: Target) {
        let pit = self.has_pit.load(Ordering::SeqCst);
        let list = self.resamplers.lock();
        if list.is_empty() && !pit {
            return;
        }
        let Some(gsi) = self.routing.lock().gsi_of(target) else {
            return;
        };
        if list.iter().any(|&(g, _)| g == gsi) {
            let _ = self.set_irq(gsi, Source::Resample, false);
            for (_, eventfd) in list.iter().filter(|&&(g, _)| g == gsi) {
                eventfd.signal();
            }
        }
        drop(list);
        if pit && gsi == 0 {
            self.pit_ack();
        }
    }

    /// Tells the listeners of every IOAPIC pin using `vector` that the
    /// guest acknowledged it.
    fn ack_ioapic_vector(&self, vector: u8) {
        let pins = self.ioapic.lock().pins_with_vector(vector);
        for pin in (0..PINS as u8).filter(|p| pins & (1 << p) != 0) {
            self.ack(Target::Ioapic(pin));
        }
    }

    /// The local APICs EOIed edge-triggered `vector`: nothing changes in
    /// the IOAPIC, but an edge-triggered pin with that vector is
    /// acknowledged (the PIT's ticks wait for it).
    pub(crate) fn edge_eoi(&self, vector: u8) {
        if self.has_pit.load(Ordering::SeqCst) {
            self.ack_ioapic_vector(vector);
        }
    }

    /// Whether every pin GSI `gsi` is routed to is masked (an MSI never
    /// is).
    fn gsi_masked(&self, gsi: u32) -> bool {
        let targets = self.routing.lock().targets(gsi);
        targets.into_iter().flatten().all(|t| match t {
            Target::Pic(irq) => {
                let imr = self.pic.lock().state(irq >= 8).imr;
                imr & (1 << (irq & 7)) != 0
            }
            Target::Ioapic(pin) => {
                self.ioapic.lock().entry(usize::from(pin)) & ioapic_entry::MASKED != 0
            }
            Target::Msi(_) => false,
        })
    }

    // ---- The PIT's ticks (`pit_device.rs`), as KVM's `i8254.c` paces them.

    /// `KVM_CREATE_PIT2` made a PIT for this irqchip.
    pub(crate) fn attach_pit(&self) {
        self.has_pit.store(true, Ordering::SeqCst);
    }

    /// `KVM_REINJECT_CONTROL`.
    pub(crate) fn set_pit_reinject(&self, reinject: bool) {
        self.pit_reinject.store(reinject, Ordering::SeqCst);
    }

    /// Forgets the ticks not delivered yet (a new count was loaded).
    pub(crate) fn pit_reset_reinject(&self) {
        self.pit_pending.store(0, Ordering::SeqCst);
        self.pit_acked.store(true, Ordering::SeqCst);
    }

    /// Counter 0 expired (hard-interrupt context: atomics only).
    pub(crate) fn pit_expired(&self) {
        if self.pit_reinject.load(Ordering::SeqCst) {
            let _ = self
                .pit_pending
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_add(1));
        }
    }

    /// Delivers a tick (process context): at once without reinjection;
    /// with it, only once the last tick was acknowledged (else the tick
    /// waits in `pit_pending` for [`Self::pit_ack`]). While every pin of
    /// GSI 0 is masked, ticks are not kept for later: KVM drops them when
    /// the line is unmasked.
    pub(crate) fn pit_inject(&self) {
        if self.pit_reinject.load(Ordering::SeqCst) {
            if self.gsi_masked(0) {
                self.pit_reset_reinject();
            } else if !self.pit_acked.swap(false, Ordering::SeqCst) {
                return;
            }
        }
        self.pit_pulse();
    }

    /// The guest acknowledged GSI 0: one tick fewer outstanding, and the
    /// next one, if any waits, goes now.
    fn pit_ack(&self) {
        self.pit_acked.store(true, Ordering::SeqCst);
        let left = self
            .pit_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map_or(0, |before| before - 1);
        if left > 0 && self.pit_acked.swap(false, Ordering::SeqCst) {
            self.pit_pulse();
        }
    }

    /// One tick: a pulse on GSI 0 from the PIT's source.
    fn pit_pulse(&self) {
        self.stats.pit_ticks.add(1);
        let _ = self.set_irq(0, Source::Pit, true);
        let _ = self.set_irq(0, Source::Pit, false);
    }

    /// Acknowledges the PIC inputs in `acked` (a bit per IRQ 0-15: their
    /// in-service bits were cleared by an EOI, or an automatic EOI at
    /// INTA took them through).
    fn pic_acked(&self, acked: u16) {
        for irq in (0..16u8).filter(|i| acked & (1 << i) != 0) {
            self.ack(Target::Pic(irq));
        }
    }

    /// The local APICs EOIed level-triggered `vector`.
    pub(crate) fn ioapic_eoi(&self, vector: u8) {
        self.ack_ioapic_vector(vector);
        let mut msgs = Messages::new();
        self.ioapic.lock().eoi(vector, &mut |m| msgs.push(m));
        self.deliver_all(&msgs);
    }

    /// Whether `gpa` is in the in-kernel IOAPIC's MMIO window (never with
    /// a split irqchip: the IOAPIC is user space's).
    pub(crate) fn ioapic_claims(&self, gpa: u64) -> bool {
        !self.is_split() && self.ioapic.lock().claims(gpa)
    }

    pub(crate) fn ioapic_read(&self, gpa: u64, len: usize) -> u64 {
        let io = self.ioapic.lock();
        io.mmio_read(gpa.wrapping_sub(io.base()), len)
    }

    pub(crate) fn ioapic_write(&self, gpa: u64, len: usize, value: u64) {
        let mut msgs = Messages::new();
        {
            let mut io = self.ioapic.lock();
            let offset = gpa.wrapping_sub(io.base());
            io.mmio_write(offset, len, value, &mut |m| msgs.push(m));
        }
        self.deliver_all(&msgs);
    }

    /// A guest IN from one of the PIC's ports.
    pub(crate) fn pic_read(&self, port: u16) -> u8 {
        let (value, rose) = {
            let mut pic = self.pic.lock();
            let v = pic.read(port);
            (v, self.pic_latch(&pic))
        };
        self.pic_changed(rose);
        value
    }

    /// A guest OUT to one of the PIC's ports.
    pub(crate) fn pic_write(&self, port: u16, value: u8) {
        let (rose, acked) = {
            let mut pic = self.pic.lock();
            let before = pic.in_service();
            pic.write(port, value);
            (self.pic_latch(&pic), before & !pic.in_service())
        };
        self.pic_changed(rose);
        self.pic_acked(acked);
    }

    /// The PIC has an interrupt for the CPU (its INT output).
    pub(crate) fn pic_output(&self) -> bool {
        self.pic_output.load(Ordering::SeqCst)
    }

    /// The CPU acknowledges the PIC's interrupt: its vector, if the PIC
    /// still has one (else `None`, and nothing is injected).
    pub(crate) fn pic_acknowledge(&self) -> Option<u8> {
        let (vector, rose, acked) = {
            let mut pic = self.pic.lock();
            if !pic.output() {
                return None;
            }
            let before = pic.in_service();
            let v = pic.acknowledge();
            // In auto-EOI mode the acknowledge is the EOI too: the input is
            // acknowledged at once (KVM's `pic_intack`).
            let auto = Self::auto_eoied(v, &pic.state(false), &pic.state(true));
            (v, self.pic_latch(&pic), (before & !pic.in_service()) | auto)
        };
        self.pic_changed(rose);
        self.pic_acked(acked);
        Some(vector)
    }

    /// The inputs (bit per IRQ 0-15) an acknowledge that returned `vector`
    /// took through in auto-EOI mode: the master's input (2 for the
    /// slave's vectors) and the slave's.
    fn auto_eoied(vector: u8, master: &ChipState, slave: &ChipState) -> u16 {
        let master_irq = vector.wrapping_sub(master.irq_base);
        let slave_irq = vector.wrapping_sub(slave.irq_base);
        let (m, sl) = if master_irq < 8 {
            (Some(master_irq), None)
        } else if slave_irq < 8 {
            (Some(2), Some(slave_irq))
        } else {
            (None, None)
        };
        let mut mask = 0u16;
        if let (Some(irq), true) = (m, master.auto_eoi != 0) {
            mask |= 1 << irq;
        }
        if let (Some(irq), true) = (sl, slave.auto_eoi != 0) {
            mask |= 1 << (8 + irq);
        }
        mask
    }

    /// `KVM_GET_IRQCHIP`: the state of chip `chip_id` as `struct
    /// kvm_irqchip`'s union bytes.
    pub(crate) fn get_state(&self, chip_id: u32) -> Result<[u8; 512]> {
        let mut out = [0u8; 512];
        match chip_id {
            CHIP_PIC_MASTER | CHIP_PIC_SLAVE => {
                let s = self.pic.lock().state(chip_id == CHIP_PIC_SLAVE);
                out[..ChipState::BYTES].copy_from_slice(&s.to_bytes());
            }
            CHIP_IOAPIC => {
                let s = self.ioapic.lock().state();
                out[..IoapicState::BYTES].copy_from_slice(&s.to_bytes());
            }
            _ => return Err(EINVAL),
        }
        Ok(out)
    }

    /// `KVM_SET_IRQCHIP`.
    pub(crate) fn set_state(&self, chip_id: u32, bytes: &[u8; 512]) -> Result {
        match chip_id {
            CHIP_PIC_MASTER | CHIP_PIC_SLAVE => {
                let mut raw = [0u8; ChipState::BYTES];
                raw.copy_from_slice(&bytes[..ChipState::BYTES]);
                let rose = {
                    let mut pic = self.pic.lock();
                    pic.set_state(chip_id == CHIP_PIC_SLAVE, &ChipState::from_bytes(&raw));
                    self.pic_latch(&pic)
                };
                self.pic_changed(rose);
            }
            CHIP_IOAPIC => {
                let mut raw = [0u8; IoapicState::BYTES];
                raw.copy_from_slice(&bytes[..IoapicState::BYTES]);
                let mut msgs = Messages::new();
                self.ioapic
                    .lock()
                    .set_state(&IoapicState::from_bytes(&raw), &mut |m| msgs.push(m));
                self.deliver_all(&msgs);
            }
            _ => return Err(EINVAL),
        }
        Ok(())
    }
}

/// One vCPU's local APIC and what wakes the vCPU for it.
#[pin_data]
pub(crate) struct VcpuApic {
    #[pin]
    lapic: SpinLockIrq<Lapic>,
    /// A halted vCPU sleeps here until its APIC has something for it.
    #[pin]
    wake: CondVar,
    /// The APIC timer's host timer.
    #[pin]
    timer: HrTimer<VcpuApic>,
    /// The CPU the vCPU is in guest mode on, or -1 (as `Vcpu::running_on`).
    running_on: AtomicI32,
    /// The VM's counters (the timer callback counts its expiries).
    stats: Arc<VmStats>,
    /// Something changed since the run loop last looked (see the module
    /// documentation).
    kicked: AtomicBool,
    /// An INIT arrived (KVM's `KVM_APIC_INIT`).
    init: AtomicBool,
    /// A SIPI arrived: [`SIPI_LATCHED`] and its vector.
    sipi: AtomicU32,
    /// NMIs that arrived (KVM's `nmi_queued`).
    nmi: AtomicU32,
    /// An SMI arrived (KVM's `KVM_REQ_SMI`).
    smi: AtomicBool,
    /// The bootstrap processor's APIC: the PIC's output kicks it.
    bsp: bool,
    /// Split irqchip: vectors whose next EOI goes to user space although
    /// the routing table no longer sends them here
    /// ([`Irqchip::set_routing`]).
    stale_eoi: VectorSet,
    /// The vCPU's Hyper-V VP index, which Hyper-V's IPI hypercalls name
    /// their targets by: a copy of the run state's, which sets it, for the
    /// senders on other threads ([`Irqchip::send_hv_ipi`]). `u32::MAX`
    /// until the VM gives the vCPU its index.
    hv_vp_index: AtomicU32,
    /// [`Lapic::summary`] as the APIC was when its lock was last released
    /// ([`LapicGuard`]), for the run loop to read without the lock before
    /// every entry ([`VcpuApic::summary`]).
    summary: AtomicU32,
}

/// The local APIC, locked. Releasing it first records the APIC's
/// [`Summary`] for lock-free readers: every change to the APIC is made
/// through one of these, so the word is never older than the last release.
struct LapicGuard<'a> {
    guard: kernel::sync::lock::Guard<'a, Lapic, kernel::sync::lock::spinlock::SpinLockIrqBackend>,
    summary: &'a AtomicU32,
}

impl core::ops::Deref for LapicGuard<'_> {
    type Target = Lapic;

    fn deref(&self) -> &Lapic {
        &self.guard
    }
}

impl core::ops::DerefMut for LapicGuard<'_> {
    fn deref_mut(&mut self) -> &mut Lapic {
        &mut self.guard
    }
}

impl Drop for LapicGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock (the guard field is dropped after this).
        self.summary
            .store(self.guard.summary().to_word(), Ordering::SeqCst);
    }
}

/// A set of vectors, changed and read without a lock.
struct VectorSet([AtomicU64; 4]);

impl VectorSet {
    fn new() -> Self {
        VectorSet([const { AtomicU64::new(0) }; 4])
    }

    fn set(&self, vector: u8) {
        self.0[usize::from(vector / 64)].fetch_or(1 << (vector % 64), Ordering::SeqCst);
    }

    /// Removes `vector`: whether it was in the set.
    fn take(&self, vector: u8) -> bool {
        let bit = 1u64 << (vector % 64);
        self.0[usize::from(vector / 64)].fetch_and(!bit, Ordering::SeqCst) & bit != 0
    }
}

kernel::impl_has_hr_timer! {
    impl HasHrTimer<Self> for VcpuApic {
        mode: RelativeMode<Monotonic>, field: self.timer
    }
}

impl HrTimerCallback for VcpuApic {
    type Pointer<'a> = Arc<Self>;

    /// The APIC timer expired (hard-interrupt context): the vector goes
    /// into IRR and the vCPU is kicked; a periodic timer is forwarded to
    /// its next period.
    fn run(this: ArcBorrow<'_, Self>, mut ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        let (fired, period) = {
            let mut l = this.lock_lapic();
            let fired = l.timer_expired(cpu::now_ns());
            (fired, l.timer_period_ns())
        };
        if fired {
            this.stats.apic_timer_fires.add(1);
            this.kick();
        }
        match period {
            Some(p) => {
                ctx.forward_now(Delta::from_nanos(p.min(i64::MAX as u64) as i64));
                HrTimerRestart::Restart
            }
            None => HrTimerRestart::NoRestart,
        }
    }
}

/// A SIPI is latched (bit 8 of `VcpuApic::sipi`, above the vector).
const SIPI_LATCHED: u32 = 1 << 8;

/// The handle of an armed APIC timer; dropping it cancels the timer. Kept
/// by the vCPU's run state, so that the timer cannot outlive the vCPU.
pub(crate) type TimerHandle = ArcHrTimerHandle<VcpuApic>;

impl VcpuApic {
    /// The APIC of vCPU `vcpu_id`, after RESET. `tsc_deadline` offers the
    /// TSC-deadline timer mode (rkvm's caller always offers it, where KVM
    /// follows the guest's CPUID: docs/abi.md); the timer counts
    /// `bus_cycle_ns`-long cycles before its divider.
    pub(crate) fn new(
        vcpu_id: u32,
        bsp: bool,
        tsc_deadline: bool,
        bus_cycle_ns: u64,
        stats: Arc<VmStats>,
    ) -> Result<Arc<Self>> {
        let mut lapic = Lapic::with_bsp(vcpu_id, bsp, tsc_deadline);
        lapic.set_bus_cycle_ns(bus_cycle_ns);
        let summary = lapic.summary().to_word();
        Arc::pin_init(
            pin_init!(VcpuApic {
                stats,
                lapic <- new_spinlock_irq!(lapic, "rkvm::VcpuApic::lapic"),
                wake <- new_condvar!("rkvm::VcpuApic::wake"),
                timer <- HrTimer::new(),
                running_on: AtomicI32::new(-1),
                kicked: AtomicBool::new(false),
                init: AtomicBool::new(false),
                sipi: AtomicU32::new(0),
                nmi: AtomicU32::new(0),
                smi: AtomicBool::new(false),
                bsp,
                stale_eoi: VectorSet::new(),
                hv_vp_index: AtomicU32::new(u32::MAX),
                summary: AtomicU32::new(summary),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Records the vCPU's Hyper-V VP index (see `hv_vp_index`).
    pub(crate) fn set_hv_vp_index(&self, index: u32) {
        self.hv_vp_index.store(index, Ordering::SeqCst);
    }

    /// Makes the vCPU look at its APIC: see the module documentation.
    /// Must not be called with the APIC's lock held.
    pub(crate) fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        // Taking the lock orders the wake-up after a halting vCPU's check of
        // what it waits for (`halt`), even for changes made outside the lock.
        drop(self.lock_lapic());
        self.wake.notify_all();
        if let Ok(cpu) = u32::try_from(self.running_on.load(Ordering::SeqCst)) {
            cpu::kick_async(cpu);
        }
    }

    /// The run loop starts deciding what to inject.
    pub(crate) fn clear_kick(&self) {
        self.kicked.store(false, Ordering::SeqCst);
    }

    /// Whether a kick came since [`Self::clear_kick`] (the fast path asks
    /// before it enters the guest again).
    pub(crate) fn kicked(&self) -> bool {
        self.kicked.load(Ordering::SeqCst)
    }

    /// Publishes that the vCPU enters the guest on `cpu` (or left it), and
    /// tells, on entry, whether a kick came since [`Self::clear_kick`]: if
    /// so the entry is abandoned and the loop goes round.
    pub(crate) fn entering(&self, cpu: Option<u32>) -> bool {
        self.running_on
            .store(cpu.map_or(-1, |c| c as i32), Ordering::SeqCst);
        cpu.is_some() && self.kicked.load(Ordering::SeqCst)
    }

    /// Takes a latched INIT.
    pub(crate) fn take_init(&self) -> bool {
        self.init.swap(false, Ordering::SeqCst)
    }

    /// Whether an INIT is latched (`KVM_GET_VCPU_EVENTS`' `latched_init`).
    pub(crate) fn has_init(&self) -> bool {
        self.init.load(Ordering::SeqCst)
    }

    /// Latches or drops an INIT (`KVM_SET_VCPU_EVENTS`); a vCPU waiting
    /// for one looks again.
    pub(crate) fn set_init(&self, latched: bool) {
        self.init.store(latched, Ordering::SeqCst);
        if latched {
            self.kick();
        }
    }

    /// Takes the NMIs that arrived: how many.
    pub(crate) fn take_nmis(&self) -> u32 {
        self.nmi.swap(0, Ordering::SeqCst)
    }

    /// An NMI arrived (read by a halted vCPU's `halt` check: an NMI wakes
    /// it whatever IF says).
    pub(crate) fn has_nmi(&self) -> bool {
        self.nmi.load(Ordering::SeqCst) != 0
    }

    /// Takes a latched SMI: whether one arrived.
    pub(crate) fn take_smi(&self) -> bool {
        self.smi.swap(false, Ordering::SeqCst)
    }

    /// An SMI arrived (read by a halted vCPU's `halt` check: an SMI wakes
    /// it whatever IF says).
    pub(crate) fn has_smi(&self) -> bool {
        self.smi.load(Ordering::SeqCst)
    }

    /// Takes a latched SIPI's vector.
    pub(crate) fn take_sipi(&self) -> Option<u8> {
        let v = self.sipi.swap(0, Ordering::SeqCst);
        (v & SIPI_LATCHED != 0).then_some(v as u8)
    }

    /// `KVM_SET_MP_STATE(SIPI_RECEIVED)`: a SIPI with vector 0 unless one
    /// is latched already.
    pub(crate) fn latch_sipi_if_none(&self) {
        let _ = self
            .sipi
            .compare_exchange(0, SIPI_LATCHED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// An INIT or SIPI is latched (read under the APIC's lock by a
    /// waiting vCPU's `halt` check).
    pub(crate) fn has_init_or_sipi(&self) -> bool {
        self.init.load(Ordering::SeqCst) || self.sipi.load(Ordering::SeqCst) != 0
    }

    /// Runs `f` on the local APIC, under its lock.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Lapic) -> R) -> R {
        f(&mut self.lock_lapic())
    }

    /// Locks the local APIC (see [`LapicGuard`]).
    fn lock_lapic(&self) -> LapicGuard<'_> {
        LapicGuard {
            guard: self.lapic.lock(),
            summary: &self.summary,
        }
    }

    /// The APIC's [`Summary`] as of the last release of its lock, read
    /// without taking it: the run loop's check before every entry, so that
    /// an entry with nothing requested and the TPR unchanged takes no lock
    /// (KVM reads its APIC's request bits without a lock the same way).
    /// A request that arrives after this read kicks the vCPU, as any
    /// does (see the module documentation).
    pub(crate) fn summary(&self) -> Summary {
        Summary::from_word(self.summary.load(Ordering::SeqCst))
    }

    /// HLT with the in-kernel APIC: sleeps until `ready` says the vCPU
    /// has something to do, or a signal is pending (`false`). `ready` runs
    /// under the APIC's lock, so a kick between the check and the sleep
    /// is not lost.
    pub(crate) fn halt(&self, mut ready: impl FnMut(&Lapic) -> bool) -> bool {
        let mut guard = self.lock_lapic();
        loop {
            if ready(&guard) {
                return true;
            }
            if self.wake.wait_interruptible(&mut guard.guard) {
                return false;
            }
        }
    }

    /// Re-arms the host timer to the APIC's deadline, cancelling the one
    /// armed before (`slot` holds its handle).
    pub(crate) fn rearm_timer(self: &Arc<Self>, slot: &mut Option<TimerHandle>) {
        // Dropping the handle cancels the timer and waits for a running callback.
        drop(slot.take());
        let deadline = self.lock_lapic().timer_deadline();
        if let Some(deadline) = deadline {
            let delay = deadline.saturating_sub(cpu::now_ns());
            let delay = Delta::from_nanos(delay.min(i64::MAX as u64) as i64);
            *slot = Some(self.clone().start(delay));
        }
    }

    /// Carries out what a register write asked for beyond the APIC.
    /// Returns the vector of an EOI that must exit to user space (split
    /// irqchip: `KVM_EXIT_IOAPIC_EOI`, see [`Irqchip::split_eoi_exits`]).
    #[must_use]
    pub(crate) fn apply(
        self: &Arc<Self>,
        chip: &Irqchip,
        effect: Effect,
        timer: &mut Option<TimerHandle>,
    ) -> Option<u8> {
        match effect {
            Effect::Ipi(m) => {
                chip.stats.ipis.add(1);
                chip.deliver(&m);
            }
            Effect::LevelEoi(vector) | Effect::EdgeEoi(vector) if chip.is_split() => {
                return chip.split_eoi_exits(self, vector).then_some(vector);
            }
            Effect::LevelEoi(vector) => chip.ioapic_eoi(vector),
            Effect::EdgeEoi(vector) => chip.edge_eoi(vector),
            Effect::TimerChanged => self.rearm_timer(timer),
            Effect::Reevaluate | Effect::None => {}
        }
        None
    }

    /// `KVM_GET_LAPIC`; `ids32`: an x2APIC's ID as is
    /// (`KVM_X2APIC_API_USE_32BIT_IDS`), else in the xAPIC position.
    pub(crate) fn get_state(&self, ids32: bool) -> [u8; 1024] {
        let regs = self.lock_lapic().state(cpu::now_ns(), ids32);
        lapic::regs_to_bytes(&regs)
    }

    /// `KVM_SET_LAPIC`; with `ids32`, an x2APIC ID other than the vCPU's
    /// is `EINVAL` (without, it is ignored), as KVM's
    /// `kvm_apic_state_fixup`.
    pub(crate) fn set_state(
        self: &Arc<Self>,
        bytes: &[u8; 1024],
        ids32: bool,
        timer: &mut Option<TimerHandle>,
    ) -> Result {
        let regs = lapic::regs_from_bytes(bytes);
        if !self.lock_lapic().set_state(&regs, cpu::now_ns(), ids32) {
            return Err(EINVAL);
        }
        self.rearm_timer(timer);
        self.kick();
        Ok(())
    }
}
