//! The devices of `rkvm boot`'s machine that live in this process, on the
//! I/O ports (everything else a Linux guest touches is in the kernel:
//! local APICs, IOAPIC, PICs, PIT).
//!
//! | ports | device |
//! |---|---|
//! | 0x3f8-0x3ff | COM1, a 16550A UART on the terminal, IRQ 4 |
//! | 0x600-0x603 | ACPI PM1a event block (status, enable) |
//! | 0x604-0x605 | ACPI PM1a control block: SLP_EN powers off |
//! | 0x606 | ACPI reset register (the FADT's RESET_REG) |
//! | 0x64 | the keyboard controller's command port: 0xfe resets |
//!
//! Any other port reads as all ones (nothing answers on an ISA bus) and
//! ignores writes: Linux probes PCI, the CMOS clock and more, and reads
//! "absent".

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_abi::Vm;

use super::acpi::{
    PM1_SCI_EN, PM1_SLP_EN, PM1_SLP_TYP_SHIFT, PM1A_CNT, PM1A_EVT, RESET_PORT, RESET_VALUE,
    S5_SLP_TYP,
};
use crate::devices::Access;
use crate::serial::Uart;
use crate::vcpus::lock;

/// COM1's first port.
pub(crate) const COM1: u16 = 0x3f8;
/// COM1's ISA IRQ (and so its GSI on KVM's default routing).
pub(crate) const COM1_IRQ: u32 = 4;
/// The i8042 keyboard controller's command port.
pub(crate) const I8042_COMMAND: u16 = 0x64;
/// The i8042 command that pulses the CPU's reset line.
pub(crate) const I8042_RESET: u8 = 0xfe;

/// What an access asks of the run loop besides its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum PlatformEffect {
    /// Nothing.
    #[default]
    None,
    /// The guest entered ACPI S5: the machine is off.
    PowerOff,
    /// The guest reset the machine (ACPI reset register or the i8042).
    Reset,
}

/// The outcome of one access to the platform's devices.
pub(crate) type PlatformAccess = Access<PlatformEffect>;

/// Where the UART's IRQ line goes: `KVM_IRQ_LINE` on the VM, or a
/// recorder in the unit tests.
pub(crate) trait IrqLine: Send + Sync {
    /// Sets GSI `gsi`'s level.
    fn set(&self, gsi: u32, level: bool);
}

impl IrqLine for Vm {
    fn set(&self, gsi: u32, level: bool) {
        // KVM_IRQ_LINE fails only for a VM without an irqchip, which this
        // machine always has.
        let _ = self.irq_line(gsi, level);
    }
}

/// The UART, the level its IRQ line was last set to, and the terminal's
/// input that the UART has not taken yet.
struct Com1 {
    uart: Uart,
    level: bool,
    /// Typed (or piped) bytes wait here until the guest's serial driver
    /// has enabled the receive interrupt, then enter the UART a FIFO's
    /// worth at a time when the input thread pumps them ([`Platform::pump`]),
    /// as a terminal with hardware flow control sends: nothing is lost to
    /// a guest that is still booting. Never on the guest's own accesses:
    /// Linux's 8250 driver reads RBR once, blindly, right after enabling
    /// the interrupt, which would eat a byte handed over then.
    backlog: VecDeque<u8>,
}

/// The machine's devices in this process, shared by the vCPU threads and
/// the terminal's input thread.
pub(crate) struct Platform {
    irq: Arc<dyn IrqLine>,
    com1: Mutex<Com1>,
    out: Mutex<Box<dyn Write + Send>>,
    /// PM1a's enable and control registers (status always reads 0: no
    /// fixed event ever happens).
    pm1: Mutex<(u16, u16)>,
}

fn value_of(data: &[u8]) -> u32 {
    data.iter()
        .take(4)
        .rev()
        .fold(0u32, |v, &b| (v << 8) | u32::from(b))
}

impl Platform {
    /// The devices, the UART's IRQ on `irq`, its output to `out`.
    pub(crate) fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Self {
            irq,
            com1: Mutex::new(Com1 {
                uart: Uart::default(),
                level: false,
                backlog: VecDeque::new(),
            }),
            out: Mutex::new(out),
            pm1: Mutex::new((0, PM1_SCI_EN)),
        }
    }

    /// Brings COM1's IRQ line to the UART's level, if it changed. Called
    /// with the UART locked, so the line follows the register state in
    /// order.
    fn sync_irq(&self, com1: &mut Com1) {
        let level = com1.uart.interrupt();
        if level != com1.level {
            com1.level = level;
            self.irq.set(COM1_IRQ, level);
        }
    }

    /// Bytes typed on the terminal queue for the UART; as many as it
    /// takes now enter it (and may raise its IRQ).
    pub(crate) fn receive(&self, bytes: &[u8]) {
        lock(&self.com1).backlog.extend(bytes);
        self.pump();
    }

    /// Moves queued input into the UART as far as it takes it; whether
    /// some still waits.
    pub(crate) fn pump(&self) -> bool {
        let mut c = lock(&self.com1);
        let n = c.uart.input_room().min(c.backlog.len());
        if n > 0 {
            let bytes: Vec<u8> = c.backlog.drain(..n).collect();
            c.uart.receive(&bytes);
            self.sync_irq(&mut c);
        }
        !c.backlog.is_empty()
    }

    /// An `OUT` of `data` (1, 2 or 4 bytes) to `port`.
    pub(crate) fn io_out(&self, port: u16, data: &[u8]) -> PlatformAccess {
        let value = value_of(data);
        let byte = data.first().copied().unwrap_or(0);
        match port {
            p if (COM1..COM1 + 8).contains(&p) => {
                let mut c = lock(&self.com1);
                let w = c.uart.write(p - COM1, byte);
                self.sync_irq(&mut c);
                drop(c);
                if let Some(b) = w.sent {
                    let mut out = lock(&self.out);
                    // Output nobody reads (a closed pipe) is dropped, as a
                    // UART with nothing attached drops it.
                    let _ = out.write_all(&[b]).and_then(|()| out.flush());
                }
                PlatformAccess::note(w.note)
            }
            p if p == PM1A_EVT + 2 && data.len() == 2 => {
                lock(&self.pm1).0 = u16::from_le_bytes([data[0], data[1]]);
                PlatformAccess::note(format!("ACPI PM1a enable = {value:#06x}"))
            }
            p if (PM1A_EVT..PM1A_EVT + 4).contains(&p) => {
                PlatformAccess::note("ACPI PM1a status: write-1-to-clear, nothing is set")
            }
            PM1A_CNT if data.len() == 2 => {
                let cnt = u16::from_le_bytes([data[0], data[1]]);
                lock(&self.pm1).1 = cnt | PM1_SCI_EN;
                let typ = (cnt >> PM1_SLP_TYP_SHIFT) & 7;
                if cnt & PM1_SLP_EN == 0 {
                    PlatformAccess::note(format!("ACPI PM1a control = {cnt:#06x}"))
                } else if typ == u16::from(S5_SLP_TYP) {
                    PlatformAccess::effect(
                        PlatformEffect::PowerOff,
                        "ACPI PM1a control: SLP_EN with SLP_TYP of S5: power off",
                    )
                } else {
                    PlatformAccess::note(format!(
                        "ACPI PM1a control: SLP_EN with SLP_TYP {typ}, a state the DSDT does \
                         not name: ignored"
                    ))
                }
            }
            RESET_PORT if byte == RESET_VALUE => {
                PlatformAccess::effect(PlatformEffect::Reset, "ACPI reset register: reset")
            }
            I8042_COMMAND if byte == I8042_RESET => PlatformAccess::effect(
                PlatformEffect::Reset,
                "keyboard controller: pulse the reset line",
            ),
            _ => PlatformAccess::note("no device here: the write is ignored"),
        }
    }

    /// An `IN` of `size` bytes from `port`.
    pub(crate) fn io_in(&self, port: u16, size: u8) -> PlatformAccess {
        match port {
            p if (COM1..COM1 + 8).contains(&p) => {
                let mut c = lock(&self.com1);
                let (v, note) = c.uart.read(p - COM1);
                self.sync_irq(&mut c);
                PlatformAccess::read(u64::from(v), note)
            }
            p if p == PM1A_EVT + 2 => {
                PlatformAccess::read(u64::from(lock(&self.pm1).0), "ACPI PM1a enable")
            }
            p if (PM1A_EVT..PM1A_EVT + 2).contains(&p) => {
                PlatformAccess::read(0, "ACPI PM1a status: no event")
            }
            PM1A_CNT => PlatformAccess::read(u64::from(lock(&self.pm1).1), "ACPI PM1a control"),
            I8042_COMMAND => PlatformAccess::read(0, "keyboard controller status: idle"),
            _ => {
                let ones = if size >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * u32::from(size))) - 1
                };
                PlatformAccess::read(ones, "no device here: reads as all ones")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every change of the IRQ line.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u32, bool)>>);

    impl IrqLine for Recorder {
        fn set(&self, gsi: u32, level: bool) {
            self.0.lock().unwrap().push((gsi, level));
        }
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn platform() -> (Platform, Arc<Recorder>, Sink) {
        let irq = Arc::new(Recorder::default());
        let sink = Sink::default();
        let p = Platform::new(irq.clone(), Box::new(sink.clone()));
        (p, irq, sink)
    }

    #[test]
    fn the_uart_prints_and_drives_irq_4() {
        let (p, irq, sink) = platform();
        // Input before the driver is ready waits; it raises nothing.
        p.receive(b"a");
        assert_eq!(p.io_in(COM1 + 5, 1).data & 1, 0, "no data ready yet");
        p.io_out(COM1 + 4, &[0x08]); // OUT2
        assert!(irq.0.lock().unwrap().is_empty(), "nothing pending yet");
        p.io_out(COM1 + 1, &[0x01]); // receive interrupt enabled
        assert_eq!(
            p.io_in(COM1 + 5, 1).data & 1,
            0,
            "only a pump hands it over"
        );
        assert!(!p.pump(), "the byte entered, nothing waits");
        assert_eq!(*irq.0.lock().unwrap(), [(4, true)]);
        assert_eq!(p.io_in(COM1, 1).data, u64::from(b'a'));
        assert_eq!(*irq.0.lock().unwrap(), [(4, true), (4, false)]);
        // More than a FIFO's worth enters 16 bytes at a time.
        p.receive(&[b'x'; 20]);
        let mut got = 0;
        while p.io_in(COM1 + 5, 1).data & 1 != 0 {
            p.io_in(COM1, 1);
            got += 1;
        }
        assert_eq!(got, 16, "a FIFO's worth");
        assert!(!p.pump(), "the rest entered");
        while p.io_in(COM1 + 5, 1).data & 1 != 0 {
            p.io_in(COM1, 1);
            got += 1;
        }
        assert_eq!(got, 20);
        p.io_out(COM1, b"hi");
        assert_eq!(&*sink.0.lock().unwrap(), b"h");
    }

    #[test]
    fn s5_powers_off_and_the_reset_ports_reset() {
        let (p, _, _) = platform();
        assert_eq!(p.io_in(PM1A_CNT, 2).data, u64::from(PM1_SCI_EN));
        // Linux writes SLP_TYP, then SLP_TYP | SLP_EN.
        let typ = u16::from(S5_SLP_TYP) << PM1_SLP_TYP_SHIFT;
        assert_eq!(
            p.io_out(PM1A_CNT, &typ.to_le_bytes()).effect,
            PlatformEffect::None
        );
        let off = p.io_out(PM1A_CNT, &(typ | PM1_SLP_EN).to_le_bytes());
        assert_eq!(off.effect, PlatformEffect::PowerOff);
        // Another sleep type is not power-off.
        let s3 = (3 << PM1_SLP_TYP_SHIFT) | PM1_SLP_EN;
        assert_eq!(
            p.io_out(PM1A_CNT, &s3.to_le_bytes()).effect,
            PlatformEffect::None
        );
        assert_eq!(
            p.io_out(RESET_PORT, &[RESET_VALUE]).effect,
            PlatformEffect::Reset
        );
        assert_eq!(
            p.io_out(I8042_COMMAND, &[0xfe]).effect,
            PlatformEffect::Reset
        );
        assert_eq!(
            p.io_out(I8042_COMMAND, &[0xaa]).effect,
            PlatformEffect::None
        );
    }

    #[test]
    fn pm1_enable_reads_back_and_absent_ports_read_all_ones() {
        let (p, _, _) = platform();
        p.io_out(PM1A_EVT + 2, &0x0100u16.to_le_bytes());
        assert_eq!(p.io_in(PM1A_EVT + 2, 2).data, 0x0100);
        assert_eq!(p.io_in(PM1A_EVT, 2).data, 0);
        assert_eq!(p.io_in(0xcfc, 4).data, 0xffff_ffff);
        assert_eq!(p.io_in(0x71, 1).data, 0xff);
    }
}
