//! The guest's devices, emulated in userspace from `KVM_EXIT_IO` and
//! `KVM_EXIT_MMIO`: what a device model is. Each access returns what it
//! did in words ([`Access::note`]), which `--trace` prints beside the exit.
//!
//! | where | device |
//! |---|---|
//! | ports 0x3f8-0x3ff | a 16550 UART (COM1): transmit to stdout, receive from stdin |
//! | port 0xe9 | the debug port (Bochs, QEMU): a byte written is printed |
//! | port 0xf4 | the exit port: the byte written is rkvm's exit status |
//! | port 0x610 | the tick timer: a 32-bit period in microseconds, 0 stops |
//! | 0xd000_0000, 4 KiB | the MMIO demo device (registers below) |
//!
//! Everything here is plain logic over byte buffers, unit-tested on the
//! host; the run loop (`machine.rs`) feeds it the exits.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::serial::{Uart, show_byte};
use crate::vcpus::lock;

/// COM1's first port (the 16550's registers are at +0 to +7).
pub(crate) const SERIAL_BASE: u16 = 0x3f8;
/// The debug port: Bochs' and QEMU's `0xe9` hack.
pub(crate) const DEBUG_PORT: u16 = 0xe9;
/// The exit port (where QEMU's `isa-debug-exit` usually sits).
pub(crate) const EXIT_PORT: u16 = 0xf4;
/// The tick timer's port.
pub(crate) const TIMER_PORT: u16 = 0x610;
/// The vector the tick timer injects.
pub(crate) const TIMER_VECTOR: u32 = 32;
/// The MMIO demo device's guest-physical base.
pub(crate) const MMIO_BASE: u64 = 0xd000_0000;
/// The MMIO demo device's size.
pub(crate) const MMIO_SIZE: u64 = 0x1000;
/// MMIO demo register: the identification value, read-only.
pub(crate) const MMIO_ID: u64 = 0x00;
/// MMIO demo register: how many times it has been read, read-only.
pub(crate) const MMIO_COUNTER: u64 = 0x08;
/// MMIO demo register: scratch, read-write.
pub(crate) const MMIO_SCRATCH: u64 = 0x10;
/// MMIO demo register: the scratch register squared, read-only.
pub(crate) const MMIO_SQUARE: u64 = 0x18;
/// What [`MMIO_ID`] reads: "RKVM" in ASCII, little-endian.
pub(crate) const MMIO_ID_VALUE: u64 = u32::from_le_bytes(*b"RKVM") as u64;

/// What an access asks of the run loop besides its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing.
    #[default]
    None,
    /// The guest asked to end with this exit status.
    Exit(u8),
    /// The guest set the tick timer's period (microseconds; 0 stops it).
    Timer(u32),
}

/// The outcome of one access to a device. `E` is what the run loop must
/// do besides, which is each machine's own: [`Effect`] for `rkvm run`'s
/// devices here, `PlatformEffect` for `rkvm boot`'s (boot/platform.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Access<E = Effect> {
    /// For a read, the value returned (little-endian, its size's bytes).
    pub(crate) data: u64,
    /// What the run loop must do.
    pub(crate) effect: E,
    /// What the device did, for `--trace`.
    pub(crate) note: String,
}

impl<E: Default> Access<E> {
    /// An access with nothing to return or do: only its note.
    pub(crate) fn note(note: impl Into<String>) -> Self {
        Self::effect(E::default(), note)
    }

    /// A read returning `data`.
    pub(crate) fn read(data: u64, note: impl Into<String>) -> Self {
        Self {
            data,
            ..Self::note(note)
        }
    }

    /// An access asking the run loop for `effect`.
    pub(crate) fn effect(effect: E, note: impl Into<String>) -> Self {
        Self {
            data: 0,
            effect,
            note: note.into(),
        }
    }
}

/// Where guest output goes.
pub(crate) type Output = Box<dyn Write + Send>;

/// Every device of the machine, shared by the vCPU threads.
pub(crate) struct Devices {
    /// COM1, shared with the thread that feeds it the terminal's input.
    uart: Arc<Mutex<Uart>>,
    out: Mutex<Output>,
    /// The MMIO demo's scratch register and read counter.
    mmio: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices").finish_non_exhaustive()
    }
}

impl Devices {
    /// Devices writing guest output to `out`.
    pub(crate) fn new(out: Output) -> Self {
        Self {
            uart: Arc::default(),
            out: Mutex::new(out),
            mmio: Mutex::default(),
        }
    }

    /// The UART, for the thread that delivers the terminal's input to it.
    pub(crate) fn uart(&self) -> Arc<Mutex<Uart>> {
        Arc::clone(&self.uart)
    }

    /// Writes guest output (unbuffered: it shows at once, in order with
    /// the trace).
    fn emit(&self, bytes: &[u8]) {
        let mut out = lock(&self.out);
        // Guest output that cannot be written (a closed pipe) is dropped,
        // as a UART with nothing attached drops it.
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }

    /// An `OUT` of `data` (1, 2 or 4 bytes) to `port`.
    pub(crate) fn io_out(&self, port: u16, data: &[u8]) -> Access {
        let value = data
            .iter()
            .rev()
            .fold(0u32, |v, &b| (v << 8) | u32::from(b));
        let byte = data.first().copied().unwrap_or(0);
        match port {
            DEBUG_PORT => {
                self.emit(&[byte]);
                Access::note(format!("debug port: print {}", show_byte(byte)))
            }
            EXIT_PORT => Access {
                data: 0,
                effect: Effect::Exit(byte),
                note: format!("exit port: the guest exits with status {byte}"),
            },
            TIMER_PORT => Access {
                data: 0,
                effect: Effect::Timer(value),
                note: if value == 0 {
                    "timer: stopped".into()
                } else {
                    format!("timer: vector {TIMER_VECTOR} every {value} us")
                },
            },
            p if (SERIAL_BASE..SERIAL_BASE + 8).contains(&p) => {
                self.uart_out(p - SERIAL_BASE, byte)
            }
            _ => Access::note("no device here: the write is ignored"),
        }
    }

    /// An `IN` of `size` bytes from `port`.
    pub(crate) fn io_in(&self, port: u16, size: u8) -> Access {
        match port {
            DEBUG_PORT => Access::read(u64::from(DEBUG_PORT), "debug port: reads 0xe9 (present)"),
            p if (SERIAL_BASE..SERIAL_BASE + 8).contains(&p) => self.uart_in(p - SERIAL_BASE),
            _ => {
                let ones = if size >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * u32::from(size))) - 1
                };
                Access::read(ones, "no device here: reads as all ones")
            }
        }
    }

    fn uart_out(&self, reg: u16, byte: u8) -> Access {
        let w = lock(&self.uart).write(reg, byte);
        if let Some(b) = w.sent {
            self.emit(&[b]);
        }
        Access::note(w.note)
    }

    fn uart_in(&self, reg: u16) -> Access {
        let (value, note) = lock(&self.uart).read(reg);
        Access::read(u64::from(value), note)
    }

    /// An MMIO write of `data` (1 to 8 bytes) at guest-physical `gpa`.
    pub(crate) fn mmio_write(&self, gpa: u64, data: &[u8]) -> Access {
        let Some(off) = mmio_offset(gpa) else {
            return Access::note("no device here: the write is ignored");
        };
        let mut value = 0u64;
        for (i, b) in data.iter().take(8).enumerate() {
            value |= u64::from(*b) << (8 * i);
        }
        match off {
            MMIO_SCRATCH if data.len() == 8 => {
                lock(&self.mmio).0 = value;
                Access::note(format!("mmio-demo: scratch = {value:#x}"))
            }
            MMIO_SCRATCH => Access::note("mmio-demo: scratch takes 8-byte writes only, ignored"),
            _ => Access::note(format!(
                "mmio-demo: register {off:#x} is read-only, write ignored"
            )),
        }
    }

    /// An MMIO read of `len` bytes at guest-physical `gpa`.
    pub(crate) fn mmio_read(&self, gpa: u64, len: u32) -> Access {
        let Some(off) = mmio_offset(gpa) else {
            return Access::read(u64::MAX, "no device here: reads as all ones");
        };
        let mut state = lock(&self.mmio);
        let (value, what) = match off {
            MMIO_ID => (MMIO_ID_VALUE, "id".to_string()),
            MMIO_COUNTER => {
                state.1 += 1;
                (state.1, format!("read counter, now {}", state.1))
            }
            MMIO_SCRATCH => (state.0, "scratch".into()),
            MMIO_SQUARE => (
                state.0.wrapping_mul(state.0),
                format!("scratch squared ({} * {})", state.0, state.0),
            ),
            _ => (0, "unused register".into()),
        };
        let mask = if len >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * len)) - 1
        };
        Access::read(
            value & mask,
            format!("mmio-demo: {what} -> {:#x}", value & mask),
        )
    }
}

/// The register offset of `gpa` in the MMIO demo device, if it is one of
/// its 8-byte-aligned registers.
fn mmio_offset(gpa: u64) -> Option<u64> {
    let off = gpa.checked_sub(MMIO_BASE).filter(|&o| o < MMIO_SIZE)?;
    Some(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into a shared buffer, for looking at guest output.
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

    fn devices() -> (Devices, Sink, Arc<Mutex<Uart>>) {
        let sink = Sink::default();
        let d = Devices::new(Box::new(sink.clone()));
        let uart = d.uart();
        (d, sink, uart)
    }

    #[test]
    fn serial_and_debug_port_print() {
        let (d, sink, _) = devices();
        let a = d.io_out(SERIAL_BASE, b"H");
        assert_eq!(a.note, "serial: transmit 'H'");
        d.io_out(DEBUG_PORT, b"i");
        d.io_out(SERIAL_BASE, b"\n");
        assert_eq!(&*sink.0.lock().unwrap(), b"Hi\n");
        // The line status says the transmitter is ready, no input.
        assert_eq!(d.io_in(SERIAL_BASE + 5, 1).data, 0x60);
        assert_eq!(d.io_in(DEBUG_PORT, 1).data, 0xe9);
    }

    #[test]
    fn serial_divisor_latch_does_not_print() {
        let (d, sink, _) = devices();
        d.io_out(SERIAL_BASE + 3, &[0x80]);
        d.io_out(SERIAL_BASE, &[12]);
        d.io_out(SERIAL_BASE + 1, &[0]);
        assert_eq!(d.io_in(SERIAL_BASE, 1).data, 12);
        d.io_out(SERIAL_BASE + 3, &[0x03]);
        assert!(sink.0.lock().unwrap().is_empty());
        assert_eq!(d.io_in(SERIAL_BASE + 3, 1).data, 3);
    }

    #[test]
    fn serial_receives_queued_input() {
        let (d, _, uart) = devices();
        uart.lock().unwrap().receive(b"ok");
        assert_eq!(d.io_in(SERIAL_BASE + 5, 1).data, 0x61);
        assert_eq!(d.io_in(SERIAL_BASE, 1).data, u64::from(b'o'));
        assert_eq!(d.io_in(SERIAL_BASE, 1).data, u64::from(b'k'));
        assert_eq!(d.io_in(SERIAL_BASE + 5, 1).data, 0x60);
        assert_eq!(d.io_in(SERIAL_BASE, 1).note, "serial: receive buffer empty");
    }

    #[test]
    fn exit_and_timer_ports_have_effects() {
        let (d, _, _) = devices();
        assert_eq!(d.io_out(EXIT_PORT, &[42]).effect, Effect::Exit(42));
        let t = d.io_out(TIMER_PORT, &1000u32.to_le_bytes());
        assert_eq!(t.effect, Effect::Timer(1000));
        assert_eq!(d.io_out(TIMER_PORT, &[0, 0, 0, 0]).effect, Effect::Timer(0));
        assert_eq!(d.io_out(0x80, &[1]).effect, Effect::None);
        assert_eq!(d.io_in(0x80, 2).data, 0xffff);
    }

    #[test]
    fn mmio_demo_registers() {
        let (d, _, _) = devices();
        assert_eq!(d.mmio_read(MMIO_BASE, 4).data, 0x4d56_4b52);
        assert_eq!(d.mmio_read(MMIO_BASE + MMIO_COUNTER, 8).data, 1);
        assert_eq!(d.mmio_read(MMIO_BASE + MMIO_COUNTER, 8).data, 2);
        d.mmio_write(MMIO_BASE + MMIO_SCRATCH, &12345u64.to_le_bytes());
        assert_eq!(d.mmio_read(MMIO_BASE + MMIO_SCRATCH, 8).data, 12345);
        assert_eq!(d.mmio_read(MMIO_BASE + MMIO_SQUARE, 8).data, 12345 * 12345);
        // A short read returns the low bytes.
        assert_eq!(
            d.mmio_read(MMIO_BASE + MMIO_SQUARE, 2).data,
            (12345 * 12345) & 0xffff
        );
        // Read-only registers ignore writes; outside the device is all ones.
        d.mmio_write(MMIO_BASE, &[0; 8]);
        assert_eq!(d.mmio_read(MMIO_BASE, 4).data, 0x4d56_4b52);
        assert_eq!(d.mmio_read(MMIO_BASE + MMIO_SIZE, 4).data, u64::MAX);
    }
}
