// SPDX-License-Identifier: GPL-2.0

//! `KVM_IRQFD`: eventfds that raise a GSI of the in-kernel irqchip.
//!
//! An irqfd is a [`Waiter`] whose [`Trigger`] runs once per signal, from
//! a kernel work item: it pulses the GSI (high, then low: an edge, as
//! KVM's `irqfd_inject`), or, for a resampling irqfd, raises the GSI from
//! its own source and leaves it high. The guest's EOI of that line
//! (`Irqchip::ack`) lowers it and signals the resample eventfd: the device
//! model then looks whether its device still needs service and signals the
//! irqfd again if so. That is how VFIO passes a level-triggered INTx line
//! through eventfds.
//!
//! The rules are KVM's (`kvm_irqfd`, `kvm_irqfd_assign`,
//! `kvm_irqfd_deassign`):
//! - flags other than `DEASSIGN` and `RESAMPLE` are `EINVAL`;
//! - assigning needs the in-kernel irqchip (`EINVAL`), an eventfd for `fd`
//!   (`EBADF`, `EINVAL`) and for `resamplefd` when resampling; one eventfd
//!   feeds one irqfd at most (`EBUSY`);
//! - deassigning removes every irqfd of that eventfd and GSI, and returns
//!   0 even if there was none; once it returns no signal of that eventfd
//!   reaches the guest.
//!
//! Unlike KVM, closing the eventfd does not remove the irqfd: it stays
//! (harmless, as nothing can signal a closed eventfd that no driver holds)
//! until deassigned or the VM goes away. docs/abi.md.

use crate::irq::chip::Irqchip;
use crate::irq::ioapic::Source;
use crate::sys::eventfd::{EventFd, Fire, Waiter};
use crate::{abi, user};
use kernel::prelude::*;
use kernel::sync::Arc;

/// What a signal on an irqfd does.
pub(crate) struct Trigger {
    chip: Arc<Irqchip>,
    gsi: u32,
    /// The resample eventfd, for a level-triggered irqfd.
    resample: Option<Arc<EventFd>>,
}

impl Fire for Trigger {
    fn fire(&self) {
        self.chip.stats.irqfd_fires.add(1);
        if self.resample.is_some() {
            let _ = self.chip.set_irq(self.gsi, Source::Resample, true);
        } else {
            let _ = self.chip.set_irq(self.gsi, Source::User, true);
            let _ = self.chip.set_irq(self.gsi, Source::User, false);
        }
    }
}

/// A VM's irqfds.
pub(crate) struct Irqfds {
    items: KVec<Waiter<Trigger>>,
}

impl Irqfds {
    pub(crate) fn new() -> Self {
        Irqfds { items: KVec::new() }
    }

    /// `KVM_IRQFD`, with `struct kvm_irqfd` at `arg`; `chip` is the VM's
    /// in-kernel irqchip if it has one.
    pub(crate) fn ioctl(&mut self, chip: Option<Arc<Irqchip>>, arg: usize) -> Result<isize> {
        let args: abi::kvm_irqfd = user::read(arg)?;
        let known = abi::KVM_IRQFD_FLAG_DEASSIGN | abi::KVM_IRQFD_FLAG_RESAMPLE;
        if args.flags & !known != 0 {
            return Err(EINVAL);
        }
        if args.flags & abi::KVM_IRQFD_FLAG_DEASSIGN != 0 {
            return self.deassign(args.fd as i32, args.gsi);
        }
        let chip = chip.ok_or(EINVAL)?;
        // Resampling needs the in-kernel IOAPIC or PIC to see the EOI (KVM's
        // `kvm_arch_irqfd_allowed`): not with a split irqchip.
        if args.flags & abi::KVM_IRQFD_FLAG_RESAMPLE != 0 && chip.is_split() {
            return Err(EINVAL);
        }
        let resample = if args.flags & abi::KVM_IRQFD_FLAG_RESAMPLE != 0 {
            Some(Arc::new(
                EventFd::from_fd(args.resamplefd as i32)?,
                GFP_KERNEL_ACCOUNT,
            )?)
        } else {
            None
        };
        // Room first: once the waiter exists, a signal may fire it.
        self.items.reserve(1, GFP_KERNEL_ACCOUNT)?;
        if let Some(r) = &resample {
            chip.add_resampler(args.gsi, r.clone())?;
        }
        let trigger = Trigger {
            chip: chip.clone(),
            gsi: args.gsi,
            resample: resample.clone(),
        };
        match Waiter::new(args.fd as i32, trigger) {
            Ok(waiter) => {
                self.items.push(waiter, GFP_KERNEL_ACCOUNT)?;
                Ok(0)
            }
            Err(e) => {
                if let Some(r) = &resample {
                    chip.remove_resampler(args.gsi, r);
                }
                Err(e)
            }
        }
    }

    /// Removes every irqfd of the eventfd behind `fd` on `gsi`.
    fn deassign(&mut self, fd: i32, gsi: u32) -> Result<isize> {
        let eventfd = EventFd::from_fd(fd)?;
        let mut i = 0;
        while i < self.items.len() {
            let w = &self.items[i];
            if w.owner().gsi == gsi && w.waits_on(&eventfd) {
                let waiter = self.items.remove(i)?;
                let trigger = waiter.owner();
                let (chip, resample) = (trigger.chip.clone(), trigger.resample.clone());
                // Unhooks it and waits for a signal in flight.
                drop(waiter);
                if let Some(r) = resample {
                    chip.remove_resampler(gsi, &r);
                }
            } else {
                i += 1;
            }
        }
        Ok(0)
    }
}
