// SPDX-License-Identifier: GPL-2.0

//! The in-kernel interrupt controllers (`KVM_CREATE_IRQCHIP`): a local
//! APIC per vCPU, the IOAPIC and the dual 8259 PIC of the VM, and the
//! messages between them.
//!
//! The register models are pure logic, unit-tested on the host
//! (`userspace/module-logic`): [`delivery`] (interrupt messages, MSI,
//! destination matching), [`lapic`] (the local APIC's registers,
//! priorities, IPIs and timer), [`ioapic`] (redirection table, edge and
//! level lines, remote IRR), [`pic`] (the two 8259As: initialization,
//! priorities and rotation, EOIs, poll, ELCR) and [`pit`] (the 8254
//! interval timer and the speaker port).
//!
//! [`chip`] is the kernel glue: the models behind locks, message
//! delivery between them, the APIC timer's hrtimer and the wake-ups of
//! halted and running vCPUs; [`pit_device`] the PIT's host timer and how
//! its ticks reach IRQ 0. The run loop's side is `run/apic.rs`.

pub(crate) mod chip;
// Parts of the models are used only by the host tests (state accessors,
// NMI and SMI messages the glue does not deliver yet).
#[allow(dead_code)]
pub(crate) mod delivery;
#[allow(dead_code)]
pub(crate) mod ioapic;
#[allow(dead_code)]
pub(crate) mod lapic;
#[allow(dead_code)]
pub(crate) mod pic;
#[allow(dead_code)]
pub(crate) mod pit;
pub(crate) mod pit_device;
pub(crate) mod routing;
