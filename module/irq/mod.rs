// SPDX-License-Identifier: GPL-2.0

//! The in-kernel interrupt controllers (`KVM_CREATE_IRQCHIP`): a local
//! APIC per vCPU, the IOAPIC and the dual 8259 PIC of the VM, and the
//! messages between them.
//!
//! The register models are pure logic, unit-tested on the host
//! (`userspace/module-logic`): [`delivery`] (interrupt messages, MSI,
//! destination matching), [`lapic`] (the local APIC's registers,
//! priorities, IPIs and timer), [`ioapic`] (redirection table, edge and
//! level lines, remote IRR) and [`pic`] (the two 8259As: initialization,
//! priorities and rotation, EOIs, poll, ELCR).
//!
//! [`chip`] is the kernel glue: the models behind locks, message
//! delivery between them, the APIC timer's hrtimer and the wake-ups of
//! halted and running vCPUs. The run loop's side is `run/apic.rs`.

pub(crate) mod chip;
// Parts of the models wait for the rest of the irqchip (MSIs, INIT and
// SIPI, the PIT as a line source): they are tested on the host already.
#[allow(dead_code)]
pub(crate) mod delivery;
#[allow(dead_code)]
pub(crate) mod ioapic;
#[allow(dead_code)]
pub(crate) mod lapic;
#[allow(dead_code)]
pub(crate) mod pic;
pub(crate) mod routing;
