//! A 16550A UART, the PC's COM1: the one device every VMM has, because it
//! is how a guest's console reaches the terminal. This is its register
//! file as a state machine, plain logic over bytes, unit-tested on the
//! host; the run loops feed it `KVM_EXIT_IO` and move the bytes.
//!
//! Both of rkvm's machines use it: `rkvm run`'s demo guests poll it, and
//! `rkvm boot`'s Linux drives it by interrupt ([`Uart::interrupt`] is the
//! level of its IRQ line, which the VMM hands to the in-kernel irqchip
//! with `KVM_IRQ_LINE`).
//!
//! Register offsets and bits: National Semiconductor PC16550D datasheet,
//! Table II ("Summary of Registers") and Table IV ("Interrupt Control
//! Functions"). The transmitter is infinitely fast: a byte written to the
//! transmit holding register is gone at once, so THR is always empty.

use std::collections::VecDeque;

/// Receive buffer (read) / transmit holding register (write).
pub(crate) const RBR_THR: u16 = 0;
/// Interrupt enable register.
pub(crate) const IER: u16 = 1;
/// Interrupt identification (read) / FIFO control (write).
pub(crate) const IIR_FCR: u16 = 2;
/// Line control register.
pub(crate) const LCR: u16 = 3;
/// Modem control register.
pub(crate) const MCR: u16 = 4;
/// Line status register.
pub(crate) const LSR: u16 = 5;
/// Modem status register.
pub(crate) const MSR: u16 = 6;
/// Scratch register.
pub(crate) const SCR: u16 = 7;

/// IER bit 0: interrupt when received data is available.
const IER_RDI: u8 = 0x01;
/// IER bit 1: interrupt when the transmit holding register is empty.
const IER_THRI: u8 = 0x02;
/// IER: the four bits a 16550 implements (Linux's probe checks that the
/// upper four read back as 0).
const IER_MASK: u8 = 0x0f;
/// IIR: no interrupt pending.
const IIR_NONE: u8 = 0x01;
/// IIR: the transmit holding register is empty (priority 3).
const IIR_THRI: u8 = 0x02;
/// IIR: received data available (priority 2).
const IIR_RDI: u8 = 0x04;
/// IIR bits 7:6 when the FIFOs are enabled (what makes it a 16550A).
const IIR_FIFO: u8 = 0xc0;
/// FCR bit 0: enable the FIFOs; bit 1: clear the receive FIFO.
const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;
/// LCR bit 7: the divisor latch access bit (DLAB).
const LCR_DLAB: u8 = 0x80;
/// MCR bit 3: OUT2, which on a PC gates the UART's interrupt onto the bus.
const MCR_OUT2: u8 = 0x08;
/// MCR bit 4: loopback (transmitted bytes come back as received ones, and
/// the modem outputs come back as the modem inputs).
const MCR_LOOP: u8 = 0x10;
/// LSR bit 0: data ready.
const LSR_DR: u8 = 0x01;
/// LSR bits 5 and 6: the transmit holding register and shifter are empty.
const LSR_THRE_TEMT: u8 = 0x60;
/// MSR outside loopback: carrier detect, data set ready, clear to send (a
/// terminal is attached and ready).
const MSR_READY: u8 = 0xb0;

/// The receive FIFO's depth on a 16550A.
const RX_FIFO: usize = 16;

/// A byte as a readable character for the trace.
pub(crate) fn show_byte(b: u8) -> String {
    match b {
        b'\n' => "'\\n'".into(),
        b'\r' => "'\\r'".into(),
        0x20..=0x7e => format!("'{}'", char::from(b)),
        _ => format!("{b:#04x}"),
    }
}

/// The UART's registers, and the bytes received and not yet read.
#[derive(Debug, Default)]
pub(crate) struct Uart {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo: bool,
    /// Received bytes (from the terminal, or looped back), oldest first.
    rx: VecDeque<u8>,
    /// The THR-empty interrupt is latched: set when THR becomes empty (a
    /// byte was sent) or when its enable bit is turned on while THR is
    /// empty; cleared by the IIR read that reports it or a THR write
    /// (PC16550D Table IV).
    thr_pending: bool,
}

/// What a write did: a byte to send to the terminal, if any, and what
/// happened in words for `--trace`.
pub(crate) struct Written {
    /// A byte the guest transmitted (not in loopback).
    pub(crate) sent: Option<u8>,
    /// What the UART did.
    pub(crate) note: String,
}

impl Uart {
    /// A write of `byte` to register `reg` (0 to 7).
    pub(crate) fn write(&mut self, reg: u16, byte: u8) -> Written {
        let dlab = self.lcr & LCR_DLAB != 0;
        let note = |note: String| Written { sent: None, note };
        match reg {
            RBR_THR if dlab => {
                self.dll = byte;
                note(format!("serial: divisor latch low = {byte}"))
            }
            RBR_THR => {
                // The byte leaves at once and THR is empty again.
                self.thr_pending = true;
                if self.mcr & MCR_LOOP != 0 {
                    self.rx.push_back(byte);
                    return note(format!("serial: loop back {}", show_byte(byte)));
                }
                Written {
                    sent: Some(byte),
                    note: format!("serial: transmit {}", show_byte(byte)),
                }
            }
            IER if dlab => {
                self.dlm = byte;
                note(format!("serial: divisor latch high = {byte}"))
            }
            IER => {
                let old = self.ier;
                self.ier = byte & IER_MASK;
                if self.ier & IER_THRI != 0 && old & IER_THRI == 0 {
                    self.thr_pending = true;
                }
                note(format!("serial: interrupt enable = {:#04x}", self.ier))
            }
            IIR_FCR => {
                self.fifo = byte & FCR_ENABLE != 0;
                if byte & FCR_CLEAR_RX != 0 {
                    self.rx.clear();
                }
                note(format!("serial: FIFO control = {byte:#04x}"))
            }
            LCR => {
                self.lcr = byte;
                note(format!("serial: line control = {byte:#04x}"))
            }
            MCR => {
                self.mcr = byte & 0x1f;
                note(format!("serial: modem control = {byte:#04x}"))
            }
            SCR => {
                self.scr = byte;
                note(format!("serial: scratch = {byte:#04x}"))
            }
            _ => note("serial: write to a read-only register, ignored".into()),
        }
    }

    /// A read of register `reg` (0 to 7): the value and what it means.
    pub(crate) fn read(&mut self, reg: u16) -> (u8, String) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            RBR_THR if dlab => (self.dll, "serial: divisor latch low".into()),
            RBR_THR => match self.rx.pop_front() {
                Some(b) => (b, format!("serial: receive {}", show_byte(b))),
                None => (0, "serial: receive buffer empty".into()),
            },
            IER if dlab => (self.dlm, "serial: divisor latch high".into()),
            IER => (self.ier, "serial: interrupt enable".into()),
            IIR_FCR => {
                let iir = self.iir();
                if iir == IIR_THRI {
                    // Reading the IIR that reports THR empty clears it.
                    self.thr_pending = false;
                }
                let what = match iir {
                    IIR_RDI => "received data available",
                    IIR_THRI => "transmitter empty",
                    _ => "no interrupt pending",
                };
                let fifo = if self.fifo { IIR_FIFO } else { 0 };
                (iir | fifo, format!("serial: interrupt id: {what}"))
            }
            LCR => (self.lcr, "serial: line control".into()),
            MCR => (self.mcr, "serial: modem control".into()),
            LSR => {
                let ready = !self.rx.is_empty();
                let lsr = LSR_THRE_TEMT | if ready { LSR_DR } else { 0 };
                let what = if ready {
                    "serial: line status: ready to send, input waiting"
                } else {
                    "serial: line status: ready to send"
                };
                (lsr, what.into())
            }
            MSR => (self.msr(), "serial: modem status".into()),
            _ => (self.scr, "serial: scratch".into()),
        }
    }

    /// Bytes typed on the terminal arrive.
    pub(crate) fn receive(&mut self, bytes: &[u8]) {
        self.rx.extend(bytes);
    }

    /// Whether received bytes wait to be read.
    #[cfg(test)]
    pub(crate) fn has_input(&self) -> bool {
        !self.rx.is_empty()
    }

    /// How many more bytes a VMM that paces its input should hand over:
    /// none until the guest's driver enables the receive interrupt, then
    /// what the 16-byte receive FIFO has room for.
    pub(crate) fn input_room(&self) -> usize {
        if self.ier & IER_RDI == 0 {
            0
        } else {
            RX_FIFO.saturating_sub(self.rx.len())
        }
    }

    /// The level of the UART's interrupt line on the ISA bus: an enabled
    /// interrupt is pending and OUT2 lets it through.
    pub(crate) fn interrupt(&self) -> bool {
        self.mcr & MCR_OUT2 != 0 && self.iir() != IIR_NONE
    }

    /// The highest-priority pending interrupt (IIR bits 3:0).
    fn iir(&self) -> u8 {
        if self.ier & IER_RDI != 0 && !self.rx.is_empty() {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thr_pending {
            IIR_THRI
        } else {
            IIR_NONE
        }
    }

    /// The modem status: a ready terminal, or in loopback the modem
    /// outputs wired back (RTS to CTS, DTR to DSR, OUT1 to RI, OUT2 to
    /// DCD), which Linux's 8250 probe checks.
    fn msr(&self) -> u8 {
        if self.mcr & MCR_LOOP == 0 {
            return MSR_READY;
        }
        let m = self.mcr;
        ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_and_divisor_latch() {
        let mut u = Uart::default();
        assert_eq!(u.write(RBR_THR, b'H').sent, Some(b'H'));
        u.write(LCR, 0x80);
        assert_eq!(u.write(RBR_THR, 12).sent, None);
        assert_eq!(u.read(RBR_THR).0, 12);
        u.write(LCR, 0x03);
        assert_eq!(u.read(LCR).0, 3);
        assert_eq!(u.read(LSR).0, 0x60);
    }

    #[test]
    fn received_bytes_are_read_in_order() {
        let mut u = Uart::default();
        u.receive(b"ok");
        assert_eq!(u.read(LSR).0, 0x61);
        assert_eq!(u.read(RBR_THR).0, b'o');
        assert_eq!(u.read(RBR_THR).0, b'k');
        assert_eq!(u.read(LSR).0, 0x60);
        assert_eq!(u.read(RBR_THR).1, "serial: receive buffer empty");
    }

    #[test]
    fn interrupts_follow_enables_priority_and_out2() {
        let mut u = Uart::default();
        u.write(IER, IER_RDI);
        u.receive(b"x");
        // Pending, but OUT2 keeps it off the bus.
        assert!(!u.interrupt());
        u.write(MCR, MCR_OUT2);
        assert!(u.interrupt());
        assert_eq!(u.read(IIR_FCR).0, IIR_RDI);
        u.read(RBR_THR);
        assert!(!u.interrupt());
        assert_eq!(u.read(IIR_FCR).0, IIR_NONE);
        // Enabling THRI with THR empty latches it; the IIR read that
        // reports it clears it; a transmitted byte latches it again.
        u.write(IER, IER_RDI | IER_THRI);
        assert!(u.interrupt());
        u.receive(b"y");
        assert_eq!(u.read(IIR_FCR).0, IIR_RDI, "received data comes first");
        u.read(RBR_THR);
        assert_eq!(u.read(IIR_FCR).0, IIR_THRI);
        assert!(!u.interrupt(), "the IIR read cleared it");
        assert_eq!(u.read(IIR_FCR).0, IIR_NONE);
        u.write(RBR_THR, b'a');
        assert!(u.interrupt());
        // Turning THRI off and on again re-latches it (Linux's THRE test).
        u.read(IIR_FCR);
        u.write(IER, 0);
        u.write(IER, IER_THRI);
        assert_eq!(u.read(IIR_FCR).0, IIR_THRI);
    }

    #[test]
    fn fifo_and_ier_read_back_as_a_16550a() {
        let mut u = Uart::default();
        u.write(IER, 0xff);
        assert_eq!(u.read(IER).0, 0x0f);
        u.write(IER, 0);
        u.write(IIR_FCR, FCR_ENABLE);
        assert_eq!(u.read(IIR_FCR).0, IIR_FIFO | IIR_NONE);
        u.receive(b"zz");
        u.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert!(!u.has_input());
    }

    #[test]
    fn input_is_paced_by_the_receive_interrupt_and_the_fifo() {
        let mut u = Uart::default();
        assert_eq!(u.input_room(), 0, "no driver yet");
        u.write(IER, IER_RDI);
        assert_eq!(u.input_room(), 16);
        u.receive(b"0123456789");
        assert_eq!(u.input_room(), 6);
        u.read(RBR_THR);
        assert_eq!(u.input_room(), 7);
    }

    #[test]
    fn loopback_returns_bytes_and_modem_lines() {
        let mut u = Uart::default();
        // Linux's 8250 probe: MCR = LOOP | OUT2 | RTS must read MSR 0x90.
        u.write(MCR, MCR_LOOP | 0x0a);
        assert_eq!(u.read(MSR).0 & 0xf0, 0x90);
        assert_eq!(u.write(RBR_THR, b'q').sent, None);
        assert_eq!(u.read(RBR_THR).0, b'q');
        u.write(MCR, 0);
        assert_eq!(u.read(MSR).0, MSR_READY);
    }
}
