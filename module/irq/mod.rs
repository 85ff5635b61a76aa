// SPDX-License-Identifier: GPL-2.0

//! The in-kernel interrupt controllers (`KVM_CREATE_IRQCHIP`): a local
//! APIC per vCPU, and the messages between interrupt controllers.
//!
//! The register models are pure logic, unit-tested on the host
//! (`userspace/module-logic`): [`delivery`] (interrupt messages, MSI,
//! destination matching) and [`lapic`] (the local APIC's registers,
//! priorities, IPIs and timer).
//!
//! Status: the models exist and are tested; the kernel glue that gives
//! each vCPU its APIC, decodes its MMIO page and MSRs, injects its
//! interrupts and runs its timer is the next step (issue 11). Until then
//! nothing in the module calls them.
#![allow(dead_code)]

pub(crate) mod delivery;
pub(crate) mod lapic;
