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
//! Status: the models exist and are tested; the kernel glue that gives
//! each vCPU its APIC, decodes its MMIO page and MSRs, injects its
//! interrupts and runs its timer is the next step (issue 11). Until then
//! nothing in the module calls them.
#![allow(dead_code)]

pub(crate) mod delivery;
pub(crate) mod ioapic;
pub(crate) mod lapic;
pub(crate) mod pic;
