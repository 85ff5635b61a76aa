// SPDX-License-Identifier: GPL-2.0

//! The I/O APIC: 24 interrupt lines, each turned into an interrupt
//! message by its redirection table entry.
//!
//! Modelled on the Intel 82093AA datasheet, version 0x11 as KVM emulates
//! it (no EOI register: level-triggered lines are re-armed by the local
//! APICs' EOI broadcast, [`Ioapic::eoi`]). Software reaches it through two
//! MMIO registers at its base (0xFEC0_0000 by default): IOREGSEL selects an
//! internal register, IOWIN reads or writes it.
//!
//! Lines are edge- or level-triggered per entry:
//! - an edge-triggered line sends its message on each rising edge, unless
//!   the entry is masked, in which case the edge is lost;
//! - a level-triggered line sends its message while it is asserted and
//!   its remote IRR is clear, then sets remote IRR; the EOI of the vector
//!   clears remote IRR, and a line still asserted sends again.
//!
//! A line's level is the OR of its sources (user space's `KVM_IRQ_LINE`
//! and irqfds, resampling irqfds, the PIT), as in KVM, so that one source lowering its level does not
//! hide another's. Pure logic, unit-tested on the host.

use super::delivery::{DeliveryMode, Destination, Message, Shorthand};

/// The number of interrupt lines (pins).
pub(crate) const PINS: usize = 24;

/// The default MMIO base of the IOAPIC, and the size of its window.
pub(crate) const DEFAULT_BASE: u64 = 0xfec0_0000;
pub(crate) const MMIO_SIZE: u64 = 0x100;

/// IOREGSEL and IOWIN offsets in the MMIO window.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;

/// The indirect registers. 82093AA 3.2.
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDIRECTION: u32 = 0x10;

/// Version 0x11, highest redirection entry 23 (bits 23:16).
pub(crate) const VERSION: u32 = 0x11 | ((PINS as u32 - 1) << 16);

/// Redirection table entry bits. 82093AA 3.2.4.
pub(crate) mod entry {
    pub(crate) const VECTOR: u64 = 0xff;
    pub(crate) const LOGICAL: u64 = 1 << 11;
    pub(crate) const DELIVERY_STATUS: u64 = 1 << 12;
    pub(crate) const POLARITY_LOW: u64 = 1 << 13;
    pub(crate) const REMOTE_IRR: u64 = 1 << 14;
    pub(crate) const LEVEL: u64 = 1 << 15;
    pub(crate) const MASKED: u64 = 1 << 16;
    /// The bits software writes (delivery status and remote IRR are the
    /// IOAPIC's): vector, delivery mode, destination mode, polarity,
    /// trigger mode, mask, destination.
    pub(crate) const WRITABLE: u64 = 0xff00_0000_0001_afff;
}

/// Who drives a line. Each source has its own level; the line's level is
/// their OR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `KVM_IRQ_LINE` and irqfd.
    User = 0,
    /// The in-kernel PIT, on GSI 0: the PIC's IRQ 0 and the IOAPIC pin
    /// the routing table gives it (pin 0 in KVM's default table; QEMU
    /// routes it to pin 2).
    Pit = 1,
    /// A resampling irqfd (`KVM_IRQFD_FLAG_RESAMPLE`): high from its
    /// signal until the guest's EOI of the line.
    Resample = 2,
}

/// `struct kvm_ioapic_state`'s content, for `KVM_GET/SET_IRQCHIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoapicState {
    pub(crate) base_address: u64,
    pub(crate) ioregsel: u32,
    pub(crate) id: u32,
    pub(crate) irr: u32,
    pub(crate) redirtbl: [u64; PINS],
}

impl IoapicState {
    /// The size of `struct kvm_ioapic_state`: base address, IOREGSEL, ID,
    /// IRR, padding, then the 24 redirection entries, little-endian.
    pub(crate) const BYTES: usize = 8 + 4 * 4 + 8 * PINS;

    /// The state as `struct kvm_ioapic_state`'s bytes.
    pub(crate) fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..8].copy_from_slice(&self.base_address.to_le_bytes());
        b[8..12].copy_from_slice(&self.ioregsel.to_le_bytes());
        b[12..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..20].copy_from_slice(&self.irr.to_le_bytes());
        for (i, e) in self.redirtbl.iter().enumerate() {
            b[24 + 8 * i..32 + 8 * i].copy_from_slice(&e.to_le_bytes());
        }
        b
    }

    /// The state from `struct kvm_ioapic_state`'s bytes.
    pub(crate) fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        let mut redirtbl = [0u64; PINS];
        for (i, e) in redirtbl.iter_mut().enumerate() {
            *e = u64_at(24 + 8 * i);
        }
        IoapicState {
            base_address: u64_at(0),
            ioregsel: u32_at(8),
            id: u32_at(12),
            irr: u32_at(16),
            redirtbl,
        }
    }
}

/// One IOAPIC.
#[derive(Clone, Debug)]
pub(crate) struct Ioapic {
    base: u64,
    ioregsel: u32,
    /// The IOAPIC ID (4 bits).
    id: u32,
    /// Lines asserted and not yet delivered (edge), or asserted (level).
    irr: u32,
    /// Per line, the sources asserting it (bit `Source as u32`).
    sources: [u8; PINS],
    redirtbl: [u64; PINS],
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Ioapic {
    /// The IOAPIC after reset: every entry masked. 82093AA 3.2.4.
    pub(crate) fn new() -> Self {
        Ioapic {
            base: DEFAULT_BASE,
            ioregsel: 0,
            id: 0,
            irr: 0,
            sources: [0; PINS],
            redirtbl: [entry::MASKED; PINS],
        }
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Whether `gpa` falls in the MMIO window.
    pub(crate) fn claims(&self, gpa: u64) -> bool {
        gpa.wrapping_sub(self.base) < MMIO_SIZE
    }

    /// The redirection entry of `pin`, as software reads it.
    pub(crate) fn entry(&self, pin: usize) -> u64 {
        self.redirtbl[pin]
    }

    /// The message entry `pin` sends.
    fn message(&self, pin: usize) -> Option<Message> {
        let e = self.redirtbl[pin];
        Some(Message {
            vector: (e & entry::VECTOR) as u8,
            mode: DeliveryMode::from_bits((e >> 8) as u32)?,
            level: e & entry::LEVEL != 0,
            assert: true,
            dest: Destination {
                id: (e >> 56) as u32,
                x2apic_format: false,
                logical: e & entry::LOGICAL != 0,
                shorthand: Shorthand::None,
                source: None,
                x2apic_broadcast_quirk: true,
            },
        })
    }

    /// Sends `pin`'s message if the line calls for it: asserted, not
    /// masked, and for a level-triggered line, remote IRR clear.
    fn service(&mut self, pin: usize, deliver: &mut dyn FnMut(Message)) {
        let e = self.redirtbl[pin];
        if self.irr & (1 << pin) == 0 || e & entry::MASKED != 0 {
            return;
        }
        let level = e & entry::LEVEL != 0;
        if level && e & entry::REMOTE_IRR != 0 {
            return;
        }
        if let Some(m) = self.message(pin) {
            deliver(m);
        }
        if level {
            self.redirtbl[pin] |= entry::REMOTE_IRR;
        } else {
            self.irr &= !(1 << pin);
        }
    }

    /// `source` sets line `pin` to `level` (already corrected for the
    /// line's polarity by the caller, as KVM's `KVM_IRQ_LINE` levels are
    /// logical). Returns whether the line's level is now high, or `None`
    /// for a pin out of range. An edge-triggered line sends on a rising
    /// edge only, a masked one loses the edge.
    pub(crate) fn set_line(
        &mut self,
        pin: usize,
        source: Source,
        level: bool,
        deliver: &mut dyn FnMut(Message),
    ) -> Option<bool> {
        let sources = self.sources.get_mut(pin)?;
        let was = *sources != 0;
        if level {
            *sources |= 1 << source as u8;
        } else {
            *sources &= !(1 << source as u8);
        }
        let now = *sources != 0;
        let e = self.redirtbl[pin];
        if e & entry::LEVEL != 0 {
            if now {
                self.irr |= 1 << pin;
                self.service(pin, deliver);
            } else {
                self.irr &= !(1 << pin);
            }
        } else if now && !was {
            if e & entry::MASKED == 0 {
                self.irr |= 1 << pin;
                self.service(pin, deliver);
            }
        }
        Some(now)
    }

    /// The local APICs EOIed `vector`: every level-triggered entry with
    /// that vector and remote IRR set is re-armed, and sends again if its
    /// line is still asserted. SDM Vol. 3A 11.8.5; 82093AA 3.2.4 (remote
    /// IRR).
    pub(crate) fn eoi(&mut self, vector: u8, deliver: &mut dyn FnMut(Message)) {
        for pin in 0..PINS {
            let e = self.redirtbl[pin];
            if e & entry::VECTOR != u64::from(vector)
                || e & entry::LEVEL == 0
                || e & entry::REMOTE_IRR == 0
            {
                continue;
            }
            self.redirtbl[pin] &= !entry::REMOTE_IRR;
            self.service(pin, deliver);
        }
    }

    /// The pins whose entries use `vector`, one bit each: an EOI of that
    /// vector acknowledges them (KVM notifies its ack listeners of each).
    pub(crate) fn pins_with_vector(&self, vector: u8) -> u32 {
        self.redirtbl
            .iter()
            .enumerate()
            .filter(|(_, &e)| e & entry::VECTOR == u64::from(vector))
            .fold(0, |mask, (pin, _)| mask | 1 << pin)
    }

    /// Whether any level-triggered entry uses `vector`: the local APIC
    /// sets its TMR bit for such vectors, so that their EOI comes here.
    pub(crate) fn is_level_vector(&self, vector: u8) -> bool {
        self.redirtbl
            .iter()
            .any(|&e| e & entry::LEVEL != 0 && e & entry::VECTOR == u64::from(vector))
    }

    fn read_indirect(&self) -> u32 {
        match self.ioregsel {
            REG_ID | REG_ARBITRATION => self.id << 24,
            REG_VERSION => VERSION,
            sel => {
                let index = sel.wrapping_sub(REG_REDIRECTION) as usize / 2;
                match self.redirtbl.get(index) {
                    Some(&e) if sel >= REG_REDIRECTION => {
                        if sel & 1 == 0 {
                            e as u32
                        } else {
                            (e >> 32) as u32
                        }
                    }
                    _ => u32::MAX,
                }
            }
        }
    }

    fn write_indirect(&mut self, value: u32, deliver: &mut dyn FnMut(Message)) {
        match self.ioregsel {
            REG_ID => self.id = (value >> 24) & 0xf,
            REG_VERSION | REG_ARBITRATION => {}
            sel if sel >= REG_REDIRECTION => {
                let index = (sel - REG_REDIRECTION) as usize / 2;
                let Some(&old) = self.redirtbl.get(index) else {
                    return;
                };
                let new = if sel & 1 == 0 {
                    (old & !0xffff_ffff) | u64::from(value)
                } else {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                };
                let mut e = (new & entry::WRITABLE) | (old & entry::REMOTE_IRR);
                // An edge-triggered entry has no remote IRR: operating systems
                // (Linux, Xen) switch an entry to edge to clear a stuck one.
                if e & entry::LEVEL == 0 {
                    e &= !entry::REMOTE_IRR;
                }
                self.redirtbl[index] = e;
                // A level-triggered line asserted while masked is sent once unmasked.
                if e & entry::LEVEL != 0 && self.sources[index] != 0 {
                    self.irr |= 1 << index;
                    self.service(index, deliver);
                }
            }
            _ => {}
        }
    }

    /// A read of the MMIO window at `offset` (from the base), `len` bytes.
    pub(crate) fn mmio_read(&self, offset: u64, len: usize) -> u64 {
        let value = match offset & 0xff {
            IOREGSEL => self.ioregsel,
            IOWIN => self.read_indirect(),
            _ => 0,
        };
        let mask = if len >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * len)) - 1
        };
        u64::from(value & mask)
    }

    /// A write of the MMIO window: IOREGSEL takes its low 8 bits, IOWIN
    /// writes the selected register (8-byte writes write the low half, as
    /// KVM).
    pub(crate) fn mmio_write(
        &mut self,
        offset: u64,
        len: usize,
        value: u64,
        deliver: &mut dyn FnMut(Message),
    ) {
        let value = match len {
            1 => u32::from(value as u8),
            2 => u32::from(value as u16),
            4 | 8 => value as u32,
            _ => return,
        };
        match offset & 0xff {
            IOREGSEL => self.ioregsel = value & 0xff,
            IOWIN => self.write_indirect(value, deliver),
            _ => {}
        }
    }

    /// The state for `KVM_GET_IRQCHIP`.
    pub(crate) fn state(&self) -> IoapicState {
        IoapicState {
            base_address: self.base,
            ioregsel: self.ioregsel,
            id: self.id,
            irr: self.irr,
            redirtbl: self.redirtbl,
        }
    }

    /// `KVM_SET_IRQCHIP`: takes the state as given (KVM does; the base
    /// address is kept, as KVM does not move the IOAPIC either), then
    /// sends what the restored lines call for.
    pub(crate) fn set_state(&mut self, s: &IoapicState, deliver: &mut dyn FnMut(Message)) {
        self.ioregsel = s.ioregsel;
        self.id = s.id & 0xf;
        self.irr = s.irr & ((1 << PINS) - 1);
        self.redirtbl = s.redirtbl;
        for pin in 0..PINS {
            self.service(pin, deliver);
        }
    }
}
