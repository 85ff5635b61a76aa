// SPDX-License-Identifier: GPL-2.0

//! The dual 8259A programmable interrupt controller of the PC: a master
//! at ports 0x20/0x21 whose input 2 is the slave's output, the slave at
//! 0xA0/0xA1, and the edge/level control registers at 0x4D0/0x4D1.
//!
//! From the Intel 8259A datasheet:
//! - each chip has a request register (IRR), an in-service register (ISR)
//!   and a mask (IMR); an unmasked request is signalled to the CPU when no
//!   interrupt of higher or equal priority is in service;
//! - priorities rotate: `priority_add` is the input with the highest
//!   priority (0 after initialization), the others follow in order;
//! - the CPU's acknowledge (INTA) moves the request into service and
//!   returns the vector, the chip's base (ICW2) plus the input; a request
//!   that went away before the acknowledge gives the spurious IRQ 7;
//! - initialization is ICW1 on the command port, then ICW2 (vector base),
//!   ICW3 (cascade wiring) and, if ICW1 asked for it, ICW4 (auto-EOI,
//!   special fully nested mode) on the data port; afterwards the data port
//!   is the mask (OCW1) and the command port takes EOIs and rotations
//!   (OCW2) and register selection, poll and special mask (OCW3);
//! - ELCR (the PIIX's extension) makes individual inputs level-triggered.
//!
//! A line's level is the OR of its sources, as in the IOAPIC. Pure logic,
//! unit-tested on the host.

use super::ioapic::Source;

/// `struct kvm_pic_state`'s content for one chip, for
/// `KVM_GET/SET_IRQCHIP`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChipState {
    pub(crate) last_irr: u8,
    pub(crate) irr: u8,
    pub(crate) imr: u8,
    pub(crate) isr: u8,
    pub(crate) priority_add: u8,
    pub(crate) irq_base: u8,
    pub(crate) read_reg_select: u8,
    pub(crate) poll: u8,
    pub(crate) special_mask: u8,
    pub(crate) init_state: u8,
    pub(crate) auto_eoi: u8,
    pub(crate) rotate_on_auto_eoi: u8,
    pub(crate) special_fully_nested_mode: u8,
    pub(crate) init4: u8,
    pub(crate) elcr: u8,
    pub(crate) elcr_mask: u8,
}

impl ChipState {
    /// The size of `struct kvm_pic_state`: sixteen bytes, in field order.
    pub(crate) const BYTES: usize = 16;

    /// The state as `struct kvm_pic_state`'s bytes.
    pub(crate) fn to_bytes(self) -> [u8; Self::BYTES] {
        [
            self.last_irr,
            self.irr,
            self.imr,
            self.isr,
            self.priority_add,
            self.irq_base,
            self.read_reg_select,
            self.poll,
            self.special_mask,
            self.init_state,
            self.auto_eoi,
            self.rotate_on_auto_eoi,
            self.special_fully_nested_mode,
            self.init4,
            self.elcr,
            self.elcr_mask,
        ]
    }

    /// The state from `struct kvm_pic_state`'s bytes.
    pub(crate) fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        ChipState {
            last_irr: b[0],
            irr: b[1],
            imr: b[2],
            isr: b[3],
            priority_add: b[4],
            irq_base: b[5],
            read_reg_select: b[6],
            poll: b[7],
            special_mask: b[8],
            init_state: b[9],
            auto_eoi: b[10],
            rotate_on_auto_eoi: b[11],
            special_fully_nested_mode: b[12],
            init4: b[13],
            elcr: b[14],
            elcr_mask: b[15],
        }
    }
}

/// One 8259A.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Chip {
    /// The input levels last seen, for edge detection.
    last_irr: u8,
    irr: u8,
    imr: u8,
    isr: u8,
    /// The input with the highest priority.
    priority_add: u8,
    irq_base: u8,
    /// OCW3: the command port reads ISR (true) or IRR (false).
    read_isr: bool,
    /// OCW3's poll command: the next command-port read is a poll.
    poll: bool,
    special_mask: bool,
    /// 0: initialized; 1, 2, 3: ICW2, ICW3, ICW4 expected next.
    init_state: u8,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    /// ICW1 announced an ICW4.
    init4: bool,
    elcr: u8,
    /// The inputs that may be level-triggered.
    elcr_mask: u8,
    /// Per input, the sources asserting it.
    sources: [u8; 8],
}

/// Priority of the highest-priority bit of `mask` counted from
/// `priority_add` (0 highest), or 8 if `mask` is empty.
fn priority(mask: u8, priority_add: u8) -> u8 {
    (0..8)
        .find(|p| mask & (1 << ((p + priority_add) & 7)) != 0)
        .unwrap_or(8)
}

impl Chip {
    fn new(elcr_mask: u8) -> Self {
        Chip {
            elcr_mask,
            ..Chip::default()
        }
    }

    /// The input level of `irq` changed to `level`. Returns whether a new
    /// request was latched (false: it was already pending, "coalesced").
    fn set_irq(&mut self, irq: u8, level: bool) -> bool {
        let mask = 1 << irq;
        let mut latched = false;
        if self.elcr & mask != 0 {
            // Level-triggered: the request follows the input.
            if level {
                latched = self.irr & mask == 0;
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            // Edge-triggered: a rising edge latches a request (even masked:
            // IMR masks the output, not the latch).
            if self.last_irr & mask == 0 {
                latched = self.irr & mask == 0;
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
        latched
    }

    /// The input that would interrupt now, if any: the highest-priority
    /// unmasked request whose priority is above everything in service
    /// (special mask mode: above everything in service and unmasked; in
    /// special fully nested mode the master's cascade input in service
    /// does not block, so that the slave's higher priorities nest).
    fn pending(&self, master: bool) -> Option<u8> {
        let p = priority(self.irr & !self.imr, self.priority_add);
        if p == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if master && self.special_fully_nested {
            in_service &= !(1 << 2);
        }
        (p < priority(in_service, self.priority_add)).then_some((p + self.priority_add) & 7)
    }

    /// INTA for `irq`: into service (or straight through in auto-EOI mode),
    /// and an edge request is consumed; a level one stays while its input
    /// is high.
    fn acknowledge(&mut self, irq: u8) {
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= 1 << irq;
        }
        if self.elcr & (1 << irq) == 0 {
            self.irr &= !(1 << irq);
        }
    }

    /// ICW1: start initialization. Level-triggered requests survive (their
    /// inputs are still high); everything else starts over.
    fn icw1(&mut self, value: u8) {
        self.init4 = value & 1 != 0;
        self.last_irr = 0;
        self.irr &= self.elcr;
        self.imr = 0;
        self.isr = 0;
        self.priority_add = 0;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
        self.rotate_on_auto_eoi = false;
        if !self.init4 {
            self.special_fully_nested = false;
            self.auto_eoi = false;
        }
        self.init_state = 1;
    }

    /// OCW2: EOIs and rotations. 8259A datasheet, Figure 8.
    fn ocw2(&mut self, value: u8) {
        let command = value >> 5;
        match command {
            // Rotate in auto-EOI mode: clear (0) or set (4).
            0 | 4 => self.rotate_on_auto_eoi = command == 4,
            // Non-specific EOI (1), with rotation (5): the highest in service.
            1 | 5 => {
                let p = priority(self.isr, self.priority_add);
                if p != 8 {
                    let irq = (p + self.priority_add) & 7;
                    self.isr &= !(1 << irq);
                    if command == 5 {
                        self.priority_add = (irq + 1) & 7;
                    }
                }
            }
            // Specific EOI (3), with rotation (7).
            3 | 7 => {
                let irq = value & 7;
                self.isr &= !(1 << irq);
                if command == 7 {
                    self.priority_add = (irq + 1) & 7;
                }
            }
            // Set priority: the given input becomes the lowest.
            6 => self.priority_add = (value + 1) & 7,
            _ => {}
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            self.icw1(value);
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x04 != 0 {
                self.poll = true;
            }
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            self.ocw2(value);
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init_state {
            1 => {
                // ICW2: the vector base (bits 7:3).
                self.irq_base = value & 0xf8;
                self.init_state = 2;
            }
            2 => {
                // ICW3: the cascade wiring, fixed on a PC.
                self.init_state = if self.init4 { 3 } else { 0 };
            }
            3 => {
                // ICW4.
                self.special_fully_nested = value & 0x10 != 0;
                self.auto_eoi = value & 0x02 != 0;
                self.init_state = 0;
            }
            _ => self.imr = value,
        }
    }

    fn state(&self) -> ChipState {
        ChipState {
            last_irr: self.last_irr,
            irr: self.irr,
            imr: self.imr,
            isr: self.isr,
            priority_add: self.priority_add,
            irq_base: self.irq_base,
            read_reg_select: self.read_isr.into(),
            poll: self.poll.into(),
            special_mask: self.special_mask.into(),
            init_state: self.init_state,
            auto_eoi: self.auto_eoi.into(),
            rotate_on_auto_eoi: self.rotate_on_auto_eoi.into(),
            special_fully_nested_mode: self.special_fully_nested.into(),
            init4: self.init4.into(),
            elcr: self.elcr,
            elcr_mask: self.elcr_mask,
        }
    }

    fn set_state(&mut self, s: &ChipState) {
        self.last_irr = s.last_irr;
        self.irr = s.irr;
        self.imr = s.imr;
        self.isr = s.isr;
        self.priority_add = s.priority_add & 7;
        self.irq_base = s.irq_base & 0xf8;
        self.read_isr = s.read_reg_select != 0;
        self.poll = s.poll != 0;
        self.special_mask = s.special_mask != 0;
        self.init_state = s.init_state.min(3);
        self.auto_eoi = s.auto_eoi != 0;
        self.rotate_on_auto_eoi = s.rotate_on_auto_eoi != 0;
        self.special_fully_nested = s.special_fully_nested_mode != 0;
        self.init4 = s.init4 != 0;
        // The wiring of the board decides which inputs may be level-triggered.
        self.elcr = s.elcr & self.elcr_mask;
    }
}

/// The master's ELCR cannot make IRQ 0, 1 and 2 level-triggered, the
/// slave's not IRQ 8 and 13 (PIIX3 datasheet, ELCR1/ELCR2).
const MASTER_ELCR_MASK: u8 = 0xf8;
const SLAVE_ELCR_MASK: u8 = 0xde;

/// The two chips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pic {
    master: Chip,
    slave: Chip,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

/// The I/O ports the PIC decodes.
pub(crate) fn claims_port(port: u16) -> bool {
    matches!(port, 0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1)
}

impl Pic {
    pub(crate) fn new() -> Self {
        Pic {
            master: Chip::new(MASTER_ELCR_MASK),
            slave: Chip::new(SLAVE_ELCR_MASK),
        }
    }

    /// Propagates the slave's output to the master's input 2 (edge
    /// triggered): while the slave has a request, each update is a new
    /// edge, so that a second slave request is seen after the master
    /// acknowledged the first (KVM and QEMU pulse the input alike).
    fn cascade(&mut self) {
        if self.slave.pending(false).is_some() {
            self.master.set_irq(2, true);
            self.master.set_irq(2, false);
        }
    }

    /// `source` sets IRQ `irq` (0-15) to `level`. Returns whether a new
    /// request was latched, or `None` for an IRQ out of range.
    pub(crate) fn set_irq(&mut self, irq: u32, source: Source, level: bool) -> Option<bool> {
        let irq = u8::try_from(irq).ok().filter(|&i| i < 16)?;
        let chip = if irq < 8 {
            &mut self.master
        } else {
            &mut self.slave
        };
        let input = &mut chip.sources[usize::from(irq & 7)];
        if level {
            *input |= 1 << source as u8;
        } else {
            *input &= !(1 << source as u8);
        }
        let line = *input != 0;
        let latched = chip.set_irq(irq & 7, line);
        self.cascade();
        Some(latched)
    }

    /// Both chips' in-service registers, the slave's in the high byte.
    pub(crate) fn in_service(&self) -> u16 {
        u16::from(self.master.isr) | u16::from(self.slave.isr) << 8
    }

    /// The master's INT output: the CPU has an interrupt to acknowledge.
    pub(crate) fn output(&self) -> bool {
        self.master.pending(true).is_some()
    }

    /// The CPU's interrupt acknowledge: the vector to deliver. With no
    /// request left, the spurious IRQ 7 of the chip involved.
    pub(crate) fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending(true) {
            Some(2) => {
                self.master.acknowledge(2);
                match self.slave.pending(false) {
                    Some(irq) => {
                        self.slave.acknowledge(irq);
                        self.slave.irq_base + irq
                    }
                    None => self.slave.irq_base + 7,
                }
            }
            Some(irq) => {
                self.master.acknowledge(irq);
                self.master.irq_base + irq
            }
            None => self.master.irq_base + 7,
        };
        self.cascade();
        vector
    }

    /// A read of one of the PIC's ports.
    pub(crate) fn read(&mut self, port: u16) -> u8 {
        let (chip, slave) = match port {
            0x20 | 0x21 => (&mut self.master, false),
            0xa0 | 0xa1 => (&mut self.slave, true),
            0x4d0 => return self.master.elcr,
            0x4d1 => return self.slave.elcr,
            _ => return 0xff,
        };
        if port & 1 == 1 {
            return chip.imr;
        }
        if chip.poll {
            // Poll: acknowledge the pending request as an INTA would and
            // return it with bit 7 set (8259A datasheet, "The Poll Command").
            chip.poll = false;
            let value = match chip.pending(!slave) {
                Some(irq) => {
                    chip.acknowledge(irq);
                    0x80 | irq
                }
                None => 0,
            };
            self.cascade();
            return value;
        }
        if chip.read_isr {
            chip.isr
        } else {
            chip.irr
        }
    }

    /// A write of one of the PIC's ports.
    pub(crate) fn write(&mut self, port: u16, value: u8) {
        match port {
            0x20 => self.master.write_command(value),
            0x21 => self.master.write_data(value),
            0xa0 => self.slave.write_command(value),
            0xa1 => self.slave.write_data(value),
            0x4d0 => self.master.elcr = value & self.master.elcr_mask,
            0x4d1 => self.slave.elcr = value & self.slave.elcr_mask,
            _ => return,
        }
        self.cascade();
    }

    /// The state of the master (`slave` false) or slave chip, for
    /// `KVM_GET_IRQCHIP`.
    pub(crate) fn state(&self, slave: bool) -> ChipState {
        if slave {
            self.slave.state()
        } else {
            self.master.state()
        }
    }

    /// `KVM_SET_IRQCHIP` for one chip.
    pub(crate) fn set_state(&mut self, slave: bool, s: &ChipState) {
        if slave {
            self.slave.set_state(s);
        } else {
            self.master.set_state(s);
        }
        self.cascade();
    }
}
