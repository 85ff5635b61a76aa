// SPDX-License-Identifier: GPL-2.0

//! GSI routing (`KVM_SET_GSI_ROUTING`): what a global system interrupt
//! number is. A GSI is one or more interrupt-controller inputs (an input
//! of the master or slave PIC, a pin of the IOAPIC), or one MSI. User
//! space raises GSIs with `KVM_IRQ_LINE` and irqfds, the PIT GSI 0; the routing
//! table says where that goes. Until user space sets its own, a VM has
//! KVM's default table ([`Routing::default_table`]).
//!
//! The rules are KVM's (`kvm_set_irq_routing`, `setup_routing_entry` and
//! x86's `kvm_set_routing_entry`), checked here in KVM's order, so that
//! a table KVM refuses is refused. Pure logic, unit-tested on the host.

use super::delivery::{Destination, Msi};
use kernel::alloc::{flags::GFP_KERNEL_ACCOUNT, AllocError, KVec};

/// The most GSIs (and entries) a table may have: `KVM_MAX_IRQ_ROUTES`.
pub(crate) const MAX_ROUTES: u32 = 4096;

/// The size of `struct kvm_irq_routing_entry`: GSI, type, flags, padding,
/// then a 32-byte union.
pub(crate) const ENTRY_BYTES: usize = 48;

/// `KVM_IRQ_ROUTING_IRQCHIP` and `KVM_IRQ_ROUTING_MSI`.
const TYPE_IRQCHIP: u32 = 1;
const TYPE_MSI: u32 = 2;

/// `KVM_MSI_VALID_DEVID`.
const MSI_VALID_DEVID: u32 = 1;

/// The irqchip ids of a routing entry (as `KVM_GET_IRQCHIP`'s).
const CHIP_PIC_MASTER: u32 = 0;
const CHIP_PIC_SLAVE: u32 = 1;
const CHIP_IOAPIC: u32 = 2;

/// Where a GSI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// PIC IRQ 0-15 (the slave's inputs are 8-15).
    Pic(u8),
    /// IOAPIC pin 0-23.
    Ioapic(u8),
    Msi(Msi),
}

impl Target {
    /// Which controller (for the duplicate rule): PIC master, slave,
    /// IOAPIC, or none for an MSI.
    fn chip(&self) -> Option<u32> {
        match *self {
            Target::Pic(irq) if irq < 8 => Some(CHIP_PIC_MASTER),
            Target::Pic(_) => Some(CHIP_PIC_SLAVE),
            Target::Ioapic(_) => Some(CHIP_IOAPIC),
            Target::Msi(_) => None,
        }
    }
}

/// One routing entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) gsi: u32,
    pub(crate) target: Target,
}

/// Why a table is refused (each is `EINVAL`, as in KVM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoutingError {
    /// More than [`MAX_ROUTES`] entries, or table flags.
    Table,
    /// A GSI of [`MAX_ROUTES`] or more.
    Gsi,
    /// Entry flags (any on irqchip entries; others than
    /// `KVM_MSI_VALID_DEVID` on MSI entries).
    Flags,
    /// A type other than irqchip and MSI (Hyper-V SINT, Xen event
    /// channels: not offered).
    Type,
    /// An irqchip id other than 0-2, or a pin beyond the chip's.
    Pin,
    /// A GSI routed twice to the same chip, or an MSI GSI with another
    /// route.
    Duplicate,
    Alloc,
}

impl From<AllocError> for RoutingError {
    fn from(_: AllocError) -> Self {
        RoutingError::Alloc
    }
}

fn u32_at(b: &[u8; ENTRY_BYTES], offset: usize) -> u32 {
    u32::from_le_bytes([b[offset], b[offset + 1], b[offset + 2], b[offset + 3]])
}

/// Decodes one `struct kvm_irq_routing_entry`.
pub(crate) fn parse_entry(b: &[u8; ENTRY_BYTES]) -> Result<Route, RoutingError> {
    let (gsi, kind, flags) = (u32_at(b, 0), u32_at(b, 4), u32_at(b, 8));
    if gsi >= MAX_ROUTES {
        return Err(RoutingError::Gsi);
    }
    // Only an MSI entry may have a flag, KVM_MSI_VALID_DEVID (accepted, and
    // the device id ignored, on x86).
    let allowed = if kind == TYPE_MSI { MSI_VALID_DEVID } else { 0 };
    if flags & !allowed != 0 {
        return Err(RoutingError::Flags);
    }
    let target = match kind {
        TYPE_IRQCHIP => {
            let (chip, pin) = (u32_at(b, 16), u32_at(b, 20));
            match chip {
                CHIP_PIC_MASTER | CHIP_PIC_SLAVE if pin < 8 => {
                    Target::Pic((pin + 8 * u32::from(chip == CHIP_PIC_SLAVE)) as u8)
                }
                CHIP_IOAPIC if pin < super::ioapic::PINS as u32 => Target::Ioapic(pin as u8),
                _ => return Err(RoutingError::Pin),
            }
        }
        TYPE_MSI => Target::Msi(Msi {
            address: u64::from(u32_at(b, 16)) | (u64::from(u32_at(b, 20)) << 32),
            data: u32_at(b, 24),
        }),
        _ => return Err(RoutingError::Type),
    };
    Ok(Route { gsi, target })
}

/// A VM's routing table.
pub(crate) struct Routing {
    routes: KVec<Route>,
}

impl Routing {
    /// KVM's default table (`default_routing` in `arch/x86/kvm/irq.c`):
    /// GSI 0-15 are the PIC's IRQ and the IOAPIC's pin of that number,
    /// GSI 16-23 IOAPIC pins only.
    pub(crate) fn default_table() -> Result<Self, AllocError> {
        let mut routes = KVec::new();
        for gsi in 0..super::ioapic::PINS as u32 {
            if gsi < 16 {
                routes.push(
                    Route {
                        gsi,
                        target: Target::Pic(gsi as u8),
                    },
                    GFP_KERNEL_ACCOUNT,
                )?;
            }
            routes.push(
                Route {
                    gsi,
                    target: Target::Ioapic(gsi as u8),
                },
                GFP_KERNEL_ACCOUNT,
            )?;
        }
        Ok(Routing { routes })
    }

    /// A table without routes (a split irqchip's first).
    pub(crate) fn empty() -> Self {
        Routing {
            routes: KVec::new(),
        }
    }

    /// Split irqchip: whether a level-triggered MSI route of a GSI below
    /// `reserved_pins` (the user-space IOAPIC's pins) sends `vector` to an
    /// APIC for which `reaches` holds (KVM's `kvm_scan_ioapic_routes`);
    /// `ids32`: MSIs in the 32-bit ID format ([`Msi::message_in`]).
    pub(crate) fn ioapic_vector_reaches(
        &self,
        reserved_pins: u32,
        ids32: bool,
        vector: u8,
        reaches: impl Fn(&Destination) -> bool,
    ) -> bool {
        self.routes.iter().any(|r| {
            let Target::Msi(msi) = r.target else {
                return false;
            };
            r.gsi < reserved_pins
                && msi
                    .message_in(ids32)
                    .is_some_and(|m| m.level && m.vector == vector && reaches(&m.dest))
        })
    }

    /// A table from `KVM_SET_GSI_ROUTING`'s entries: every entry valid,
    /// and no GSI routed twice to one chip, nor an MSI GSI routed twice
    /// (KVM: "only one to one mapping between GSI and non-irqchip
    /// routing").
    pub(crate) fn from_entries(entries: &[[u8; ENTRY_BYTES]]) -> Result<Self, RoutingError> {
        if entries.len() > MAX_ROUTES as usize {
            return Err(RoutingError::Table);
        }
        let mut routes: KVec<Route> = KVec::new();
        for raw in entries {
            let route = parse_entry(raw)?;
            for other in routes.iter().filter(|r| r.gsi == route.gsi) {
                let (a, b) = (other.target.chip(), route.target.chip());
                if a.is_none() || b.is_none() || a == b {
                    return Err(RoutingError::Duplicate);
                }
            }
            routes.push(route, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Routing { routes })
    }

    /// Whether an MSI route is invalid in the 32-bit ID format (KVM
    /// refuses the table then: [`Msi::valid_in`]).
    pub(crate) fn has_invalid_msi(&self, ids32: bool) -> bool {
        self.routes
            .iter()
            .any(|r| matches!(r.target, Target::Msi(m) if !m.valid_in(ids32)))
    }

    /// Whether a route goes to a PIC or IOAPIC pin: a split irqchip
    /// refuses such a table (`EINVAL`), as it has neither chip.
    pub(crate) fn has_pin_routes(&self) -> bool {
        self.routes
            .iter()
            .any(|r| !matches!(r.target, Target::Msi(_)))
    }

    /// Where `gsi` goes: at most one route per chip, or one MSI.
    pub(crate) fn targets(&self, gsi: u32) -> [Option<Target>; 3] {
        let mut out = [None; 3];
        for (slot, route) in out
            .iter_mut()
            .zip(self.routes.iter().filter(|r| r.gsi == gsi))
        {
            *slot = Some(route.target);
        }
        out
    }

    /// The GSI routed to PIC input or IOAPIC pin `target` (the last
    /// route wins, as in KVM's chip-to-GSI map), to tell the listeners of
    /// that GSI that the guest acknowledged the line.
    pub(crate) fn gsi_of(&self, target: Target) -> Option<u32> {
        self.routes
            .iter()
            .rev()
            .find(|r| r.target == target)
            .map(|r| r.gsi)
    }
}
