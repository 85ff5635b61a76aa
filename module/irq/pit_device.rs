// SPDX-License-Identifier: GPL-2.0

//! The kernel side of the in-kernel PIT (`KVM_CREATE_PIT2`): the 8254
//! model ([`super::pit`]) behind a mutex, the host timer behind counter
//! 0, and the tick's way to IRQ 0.
//!
//! A tick travels in three steps, because its last step may sleep:
//! 1. the hrtimer fires (hard-interrupt context): the irqchip counts the
//!    tick for reinjection ([`Irqchip::pit_expired`]) and a work item is
//!    queued;
//! 2. the work item runs (process context) and pulses GSI 0 through the
//!    routing table from the PIT's own source ([`Irqchip::pit_inject`]),
//!    as KVM's `pit_do_work` does from its kthread;
//! 3. the guest's EOI of that line acknowledges the tick, and a tick that
//!    was held back meanwhile follows (`Irqchip::ack`).
//!
//! The device is owned by the VM and holds the irqchip; the armed timer's
//! handle, kept inside, holds the device: [`PitDevice::shutdown`] breaks
//! that cycle when the VM goes away, cancelling the timer and waiting for
//! a queued tick, so nothing of the device runs after its VM.

use super::chip::Irqchip;
use super::pit::{self, Pit, State, State2, Timer};
use crate::sys::cpu;
use core::sync::atomic::{AtomicI64, Ordering};
use kernel::prelude::*;
use kernel::sync::{new_mutex, Arc, ArcBorrow, Mutex};
use kernel::time::hrtimer::{
    ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
    HrTimerRestart, RelativeMode,
};
use kernel::time::{Delta, Monotonic};
use kernel::workqueue::{self, impl_has_work, new_work, Work, WorkItem};

/// The model and the armed timer.
struct Inner {
    pit: Pit,
    /// Counter 0's armed host timer; dropping it cancels the timer.
    timer: Option<ArcHrTimerHandle<PitDevice>>,
}

/// A VM's PIT.
#[pin_data]
pub(crate) struct PitDevice {
    #[pin]
    inner: Mutex<Inner>,
    #[pin]
    timer: HrTimer<PitDevice>,
    #[pin]
    tick: Work<PitDevice>,
    /// The period of the armed timer, 0 for a one-shot.
    period_ns: AtomicI64,
    chip: Arc<Irqchip>,
    /// Port 0x61 is emulated here (`KVM_PIT_SPEAKER_DUMMY`); without the
    /// flag it goes to user space, which emulates the speaker.
    speaker: bool,
}

kernel::impl_has_hr_timer! {
    impl HasHrTimer<Self> for PitDevice {
        mode: RelativeMode<Monotonic>, field: self.timer
    }
}

impl_has_work! {
    impl HasWork<Self> for PitDevice { self.tick }
}

impl HrTimerCallback for PitDevice {
    type Pointer<'a> = Arc<Self>;

    /// Counter 0 reached 0 (hard-interrupt context): count the tick and
    /// queue its delivery; a periodic timer goes on to its next period.
    fn run(this: ArcBorrow<'_, Self>, mut ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        this.chip.pit_expired();
        // Already queued: that run delivers this tick too (counted above).
        // The high-priority system queue: a tick should not wait behind
        // ordinary work (and `system_wq` is deprecated in Linux 7.3).
        let _ = workqueue::system_highpri().enqueue(Arc::<Self>::from(this));
        match this.period_ns.load(Ordering::Relaxed) {
            p if p > 0 => {
                ctx.forward_now(Delta::from_nanos(p));
                HrTimerRestart::Restart
            }
            _ => HrTimerRestart::NoRestart,
        }
    }
}

impl WorkItem for PitDevice {
    type Pointer = Arc<PitDevice>;

    /// Delivers the tick (process context).
    fn run(this: Arc<PitDevice>) {
        this.chip.pit_inject();
    }
}

impl PitDevice {
    /// `KVM_CREATE_PIT2` with `flags` (`KVM_PIT_SPEAKER_DUMMY`: emulate
    /// port 0x61 too).
    pub(crate) fn new(chip: Arc<Irqchip>, flags: u32) -> Result<Arc<Self>> {
        let now = cpu::now_ns() as i64;
        Arc::pin_init(
            pin_init!(PitDevice {
                inner <- new_mutex!(Inner { pit: Pit::new(now), timer: None }, "rkvm::PitDevice::inner"),
                timer <- HrTimer::new(),
                tick <- new_work!("rkvm::PitDevice::tick"),
                period_ns: AtomicI64::new(0),
                chip,
                speaker: flags & crate::abi::KVM_PIT_SPEAKER_DUMMY != 0,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Arms (or stops) counter 0's host timer as the model says, under
    /// the device's lock.
    fn arm(self: &Arc<Self>, inner: &mut Inner, plan: Timer) {
        // Dropping the handle cancels the timer and waits for a running callback.
        drop(inner.timer.take());
        let now = cpu::now_ns() as i64;
        let (first, period) = match plan {
            Timer::Stop => return,
            Timer::OneShot { at_ns } => (at_ns, 0),
            Timer::Periodic {
                first_ns,
                period_ns,
            } => (first_ns, period_ns.max(1)),
        };
        // A new count starts a new series of ticks (KVM's `kvm_pit_reset_reinject`).
        self.chip.pit_reset_reinject();
        self.period_ns.store(period, Ordering::Relaxed);
        let delay = Delta::from_nanos(first.saturating_sub(now).max(0));
        inner.timer = Some(self.clone().start(delay));
    }

    /// A guest IN from `port`: `Some` if the PIT has the port, with the
    /// byte it drives (`None` inside for port 0x43, which drives nothing:
    /// the guest's register keeps its value).
    pub(crate) fn port_in(&self, port: u16) -> Option<Option<u8>> {
        let now = cpu::now_ns() as i64;
        if pit::claims_port(port) {
            Some(self.inner.lock().pit.read(port, now))
        } else if port == pit::SPEAKER_PORT && self.speaker {
            Some(Some(self.inner.lock().pit.read_speaker(now)))
        } else {
            None
        }
    }

    /// A guest OUT of `value` to `port`: `true` if the PIT took it.
    pub(crate) fn port_out(self: &Arc<Self>, port: u16, value: u8) -> bool {
        let now = cpu::now_ns() as i64;
        let mut inner = self.inner.lock();
        if pit::claims_port(port) {
            if let Some(plan) = inner.pit.write(port, value, now) {
                self.arm(&mut inner, plan);
            }
            true
        } else if port == pit::SPEAKER_PORT && self.speaker {
            inner.pit.write_speaker(value, now);
            true
        } else {
            false
        }
    }

    /// `KVM_GET_PIT2`.
    pub(crate) fn get_state(&self) -> State2 {
        self.inner.lock().pit.get_state()
    }

    /// `KVM_SET_PIT2`: every count restarts now, and counter 0's timer
    /// with it.
    pub(crate) fn set_state(self: &Arc<Self>, s: &State2) {
        let mut inner = self.inner.lock();
        let plan = inner.pit.set_state(s, cpu::now_ns() as i64);
        self.arm(&mut inner, plan);
    }

    /// `KVM_GET_PIT`.
    pub(crate) fn get_channels(&self) -> State {
        self.inner.lock().pit.get_channels()
    }

    /// `KVM_SET_PIT`.
    pub(crate) fn set_channels(self: &Arc<Self>, s: &State) {
        let mut inner = self.inner.lock();
        let plan = inner.pit.set_channels(s, cpu::now_ns() as i64);
        self.arm(&mut inner, plan);
    }

    /// The VM goes away: the timer is cancelled and a queued tick waited
    /// for, so that the device (and the irqchip it holds) can be freed.
    pub(crate) fn shutdown(&self) {
        drop(self.inner.lock().timer.take());
        // A queued run drops the reference the queue held.
        crate::sys::work::flush(&self.tick);
    }
}
