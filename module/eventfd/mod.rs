// SPDX-License-Identifier: GPL-2.0

//! Eventfds between the device model and the guest, as KVM's
//! `virt/kvm/eventfd.c`:
//!
//! - [`irqfd`] (`KVM_IRQFD`): a signal on an eventfd raises a GSI of the
//!   in-kernel irqchip, so a device model thread (or another kernel driver,
//!   such as vhost or VFIO) interrupts the guest without a system call on
//!   the VM fd. With a resample eventfd it models a level-triggered line:
//!   the line stays high until the guest EOIs it, and then rkvm lowers it
//!   and signals the resample eventfd, so the device can re-assert.
//! - [`ioeventfd`] (`KVM_IOEVENTFD`): a guest write to a registered port
//!   or MMIO address signals an eventfd and the vCPU goes straight back
//!   into the guest.
//!
//! `sys::eventfd` holds the kernel mechanics (references, wait-queue
//! hooks); `ioeventfd`'s table is pure logic, tested on the host.

pub(crate) mod ioeventfd;
pub(crate) mod irqfd;
