// SPDX-License-Identifier: GPL-2.0

//! The PC's interval timer, an Intel 8254 PIT: three 16-bit down
//! counters clocked at 1.193 MHz.
//!
//! On a PC the counters are wired as follows: counter 0's output is
//! IRQ 0 (the master PIC's input 0, the IOAPIC's pin 2), the system
//! tick; counter 1 once paced the DRAM refresh; counter 2 drives the
//! speaker, and its gate and output are visible in port 0x61.
//!
//! From the Intel 8254 datasheet:
//! - ports 0x40, 0x41 and 0x42 are the counters' data ports and 0x43
//!   the control word register, which can only be written;
//! - a control word (`SC1 SC0 RW1 RW0 M2 M1 M0 BCD`) selects a counter
//!   (SC), how its data port is accessed (RW: 1 the low byte only, 2 the
//!   high byte only, 3 the low byte then the high byte; 0 is the counter
//!   latch command), the counting mode (M) and BCD counting;
//! - the six modes: 0 interrupt on terminal count, 1 hardware
//!   retriggerable one-shot, 2 rate generator, 3 square wave, 4 software
//!   triggered strobe, 5 hardware triggered strobe; mode values 6 and 7
//!   are modes 2 and 3 again;
//! - writing a count loads it; the largest count is written as 0 and
//!   means 65536 (10000 in BCD). Modes 2 and 3 reload the count at the
//!   end of each period; the other modes wrap to 0xFFFF and keep counting;
//! - reading a data port returns the current count, or the count frozen
//!   by a latch command until it has been read; in low-then-high access a
//!   flip-flop alternates between the two bytes, for reads and writes;
//! - SC = 3 is the read-back command (`1 1 /COUNT /STATUS CNT2 CNT1 CNT0 0`):
//!   it latches the count and/or the status of each selected counter;
//!   the status byte (`OUT NULL RW1 RW0 M2 M1 M0 BCD`) is the counter's
//!   output level and its control word, and is read before the count;
//! - the gate input enables or triggers counting.
//!
//! Port 0x61, the PC's system control port B, holds counter 2's gate
//! (bit 0) and the speaker's data enable (bit 1) and reads back the
//! refresh clock toggling (bit 4) and counter 2's output (bit 5).
//!
//! The counters are not stepped: a count is computed, when it is read,
//! from the time elapsed since it was loaded. Counter 0's interrupts
//! come from a host timer that the kernel glue arms as [`Timer`] says.
//!
//! # As KVM
//!
//! The model is KVM's (`arch/x86/kvm/i8254.c`), so that a guest sees the
//! same PIT on rkvm as on KVM, including where KVM is not the datasheet:
//! - the clock is KVM's `KVM_PIT_FREQ`, 1193181 Hz;
//! - a low gate does not stop counting; a rising gate restarts the count
//!   in modes 1, 2, 3 and 5; modes 1 and 5 start counting when the count
//!   is written, without waiting for a gate trigger;
//! - a new count, or a control word, takes effect at once (the datasheet
//!   has modes 2 and 3 finish the current period first);
//! - OUT is reported as KVM reports it: in mode 1 high while counting,
//!   in mode 2 high on the one clock at which the count reloads, in modes
//!   4 and 5 high on the one clock at terminal count. The datasheet's
//!   levels are the opposite there (low while counting, low pulses).
//!   Modes 0 and 3 are the datasheet's;
//! - the status byte's null count bit is always 0, and BCD is recorded
//!   and reported but the counting is binary;
//! - the power-on state is `kvm_pit_reset`'s: every counter loaded with
//!   65536 in mode 0xFF (no mode: it reads as a rate generator, its OUT
//!   as mode 0's and counter 0 arms no timer); gates high except counter
//!   2's;
//! - counter 0 arms a one-shot timer in modes 0, 1 and 4, a periodic one
//!   in modes 2 and 3, and none in mode 5; only a count load changes it;
//!   while user space sets `KVM_PIT_FLAGS_HPET_LEGACY` (the HPET took
//!   IRQ 0 over), counter 0 arms none.
//!
//! Where this model differs from KVM: counter 0's count is computed from
//! its load time like the others' (KVM computes it from its timer's
//! remaining time, which is the same while the timer fires on time), so
//! its `count_load_time` in `KVM_GET_PIT2` is meaningful; a gate, BCD or
//! status-latched byte loaded from user space becomes 0 or 1; a read of
//! port 0x43 drives no data ([`Pit::read`]).
//!
//! Pure logic, unit-tested on the host.

use super::lapic::MIN_PERIOD_NS;
use crate::abi::{KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON};

/// The counters' input clock, in Hz: 14.31818 MHz / 12, as KVM rounds it
/// (`KVM_PIT_FREQ`).
pub(crate) const PIT_HZ: u64 = 1_193_181;

/// Nanoseconds in a second.
const NS_PER_S: u64 = 1_000_000_000;

/// Counter 0's data port; counters 1 and 2 follow.
pub(crate) const COUNTER0_PORT: u16 = 0x40;

/// The control word register (write only).
pub(crate) const CONTROL_PORT: u16 = 0x43;

/// The PC's system control port B, with counter 2's gate and output.
pub(crate) const SPEAKER_PORT: u16 = 0x61;

/// The bits of port 0x61 the model keeps or reports.
pub(crate) mod speaker {
    /// Counter 2's gate (read and write).
    pub(crate) const GATE2: u8 = 1 << 0;
    /// The speaker's data enable (read and write).
    pub(crate) const DATA: u8 = 1 << 1;
    /// The refresh clock, toggling about every 15 µs (read only).
    pub(crate) const REFRESH: u8 = 1 << 4;
    /// Counter 2's output (read only).
    pub(crate) const OUT2: u8 = 1 << 5;
}

/// The read and write flip-flop states, with the values
/// `struct kvm_pit_channel_state` records them with. A control word's
/// RW field (1, 2, 3) is also the initial state it selects. Any other
/// value, such as the 0 of a counter never programmed, acts as [`LSB`].
///
/// [`LSB`]: rw::LSB
pub(crate) mod rw {
    /// The low byte only.
    pub(crate) const LSB: u8 = 1;
    /// The high byte only.
    pub(crate) const MSB: u8 = 2;
    /// Low then high byte: the low byte is next.
    pub(crate) const WORD0: u8 = 3;
    /// Low then high byte: the high byte is next.
    pub(crate) const WORD1: u8 = 4;
}

/// The mode of a counter never programmed since power-on
/// (`kvm_pit_reset`).
pub(crate) const NO_MODE: u8 = 0xff;

/// The counting modes (control word bits 3:1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Mode 0, interrupt on terminal count: OUT is low until the count
    /// reaches 0, then high.
    TerminalCount,
    /// Mode 1, hardware retriggerable one-shot: one pulse of `count`
    /// clocks.
    OneShot,
    /// Mode 2, rate generator: one pulse every `count` clocks; the count
    /// reloads.
    RateGenerator,
    /// Mode 3, square wave: OUT high for the first half of every `count`
    /// clocks, low for the second; the count reloads.
    SquareWave,
    /// Mode 4, software triggered strobe: one pulse at terminal count.
    SoftwareStrobe,
    /// Mode 5, hardware triggered strobe: as mode 4, started by the gate.
    HardwareStrobe,
}

impl Mode {
    /// The mode a recorded mode byte stands for: `None` for [`NO_MODE`]
    /// and any other value above 5 (user space may load any byte).
    fn from_raw(mode: u8) -> Option<Mode> {
        match mode {
            0 => Some(Mode::TerminalCount),
            1 => Some(Mode::OneShot),
            2 => Some(Mode::RateGenerator),
            3 => Some(Mode::SquareWave),
            4 => Some(Mode::SoftwareStrobe),
            5 => Some(Mode::HardwareStrobe),
            _ => None,
        }
    }
}

/// `a * mul / div`, rounded down and saturated, as the kernel's
/// `mul_u64_u32_div` for 32-bit `mul` and `div`, without a 128-bit
/// division (the kernel has none: `rust/compiler_builtins.rs`).
fn mul_div(a: u64, mul: u64, div: u64) -> u64 {
    if div == 0 {
        return u64::MAX;
    }
    // a = q * div + r with r < div, so a * mul / div is q * mul plus
    // r * mul / div, and r * mul < div * mul fits in 64 bits.
    let (q, r) = (a / div, a % div);
    q.saturating_mul(mul)
        .saturating_add(r.saturating_mul(mul) / div)
}

/// What counter 0's interrupt timer must do from now on. Times are in
/// nanoseconds of the clock the `now_ns` arguments are read from; each
/// expiry is one pulse on IRQ 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// No interrupts: cancel the timer.
    Stop,
    /// One interrupt at `at_ns`.
    OneShot {
        /// When the count reaches 0.
        at_ns: i64,
    },
    /// An interrupt at `first_ns`, then one every `period_ns`.
    Periodic {
        /// When the count first reaches 0.
        first_ns: i64,
        /// The count's period, at least [`MIN_PERIOD_NS`] (KVM's
        /// `min_timer_period_us`): a guest cannot keep a host CPU busy
        /// with interrupts.
        period_ns: i64,
    },
}

/// `struct kvm_pit_channel_state`: one counter, for `KVM_GET_PIT2` and
/// `KVM_SET_PIT2` (and the older `KVM_GET_PIT`/`KVM_SET_PIT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChannelState {
    /// The count last loaded, 1 to 65536 (0 loads as 65536).
    pub(crate) count: u32,
    /// The count frozen by a latch command.
    pub(crate) latched_count: u16,
    /// The latched count's read state ([`rw`]), 0 if none is latched.
    pub(crate) count_latched: u8,
    /// A status byte is latched (1) or not (0).
    pub(crate) status_latched: u8,
    /// The latched status byte.
    pub(crate) status: u8,
    /// The data port's read flip-flop ([`rw`]).
    pub(crate) read_state: u8,
    /// The data port's write flip-flop ([`rw`]).
    pub(crate) write_state: u8,
    /// The low byte written, waiting for the high byte.
    pub(crate) write_latch: u8,
    /// The access mode of the last control word (1, 2, 3; 0 never
    /// programmed).
    pub(crate) rw_mode: u8,
    /// The counting mode, 0 to 5, or [`NO_MODE`].
    pub(crate) mode: u8,
    /// BCD counting was asked for (1) or not (0).
    pub(crate) bcd: u8,
    /// The gate input's level.
    pub(crate) gate: u8,
    /// When the count was loaded, in the nanoseconds of the `now_ns`
    /// arguments.
    pub(crate) count_load_time: i64,
}

/// `struct kvm_pit_channel_state`'s layout: sixteen bytes of fields, then
/// `count_load_time` at offset 16, with no padding.
const _: () =
    assert!(core::mem::size_of::<crate::abi::kvm_pit_channel_state>() == ChannelState::BYTES);
const _: () =
    assert!(core::mem::offset_of!(crate::abi::kvm_pit_channel_state, count_load_time) == 16);

impl ChannelState {
    /// The size of `struct kvm_pit_channel_state`.
    pub(crate) const BYTES: usize = 24;

    /// The state as `struct kvm_pit_channel_state`'s little-endian bytes.
    pub(crate) fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..4].copy_from_slice(&self.count.to_le_bytes());
        b[4..6].copy_from_slice(&self.latched_count.to_le_bytes());
        b[6] = self.count_latched;
        b[7] = self.status_latched;
        b[8] = self.status;
        b[9] = self.read_state;
        b[10] = self.write_state;
        b[11] = self.write_latch;
        b[12] = self.rw_mode;
        b[13] = self.mode;
        b[14] = self.bcd;
        b[15] = self.gate;
        b[16..24].copy_from_slice(&self.count_load_time.to_le_bytes());
        b
    }

    /// The state from `struct kvm_pit_channel_state`'s bytes.
    pub(crate) fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        ChannelState {
            count: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            latched_count: u16::from_le_bytes([b[4], b[5]]),
            count_latched: b[6],
            status_latched: b[7],
            status: b[8],
            read_state: b[9],
            write_state: b[10],
            write_latch: b[11],
            rw_mode: b[12],
            mode: b[13],
            bcd: b[14],
            gate: b[15],
            count_load_time: i64::from_le_bytes([
                b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23],
            ]),
        }
    }
}

/// The three counters' states, one after the other, as bytes. (Indexed
/// loops: the chunk iterators' zero-size checks confuse objtool.)
fn channels_to_bytes(channels: &[ChannelState; 3], b: &mut [u8]) {
    for (i, c) in channels.iter().enumerate() {
        let at = i * ChannelState::BYTES;
        if let Some(chunk) = b.get_mut(at..at + ChannelState::BYTES) {
            chunk.copy_from_slice(&c.to_bytes());
        }
    }
}

/// The three counters' states from the bytes at the start of `b`.
fn channels_from_bytes(b: &[u8]) -> [ChannelState; 3] {
    let mut channels = [ChannelState::default(); 3];
    for (i, c) in channels.iter_mut().enumerate() {
        let at = i * ChannelState::BYTES;
        if let Some(Ok(bytes)) = b
            .get(at..at + ChannelState::BYTES)
            .map(<&[u8; ChannelState::BYTES]>::try_from)
        {
            *c = ChannelState::from_bytes(bytes);
        }
    }
    channels
}

/// `struct kvm_pit_state`, for the older `KVM_GET_PIT`/`KVM_SET_PIT`:
/// the three counters, no flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// Counters 0, 1 and 2.
    pub(crate) channels: [ChannelState; 3],
}

const _: () = assert!(core::mem::size_of::<crate::abi::kvm_pit_state>() == State::BYTES);

impl State {
    /// The size of `struct kvm_pit_state`.
    pub(crate) const BYTES: usize = 3 * ChannelState::BYTES;

    /// The state as `struct kvm_pit_state`'s bytes.
    pub(crate) fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        channels_to_bytes(&self.channels, &mut b);
        b
    }

    /// The state from `struct kvm_pit_state`'s bytes.
    pub(crate) fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        State {
            channels: channels_from_bytes(b),
        }
    }
}

/// `struct kvm_pit_state2`, for `KVM_GET_PIT2`/`KVM_SET_PIT2`: the three
/// counters, the flags and 36 reserved bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct State2 {
    /// Counters 0, 1 and 2.
    pub(crate) channels: [ChannelState; 3],
    /// `KVM_PIT_FLAGS_HPET_LEGACY` and `KVM_PIT_FLAGS_SPEAKER_DATA_ON`;
    /// other bits are kept as user space set them, as KVM does.
    pub(crate) flags: u32,
}

const _: () = assert!(core::mem::size_of::<crate::abi::kvm_pit_state2>() == State2::BYTES);

impl State2 {
    /// The size of `struct kvm_pit_state2`.
    pub(crate) const BYTES: usize = State::BYTES + 4 + 9 * 4;

    /// The state as `struct kvm_pit_state2`'s bytes, reserved bytes 0.
    pub(crate) fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        channels_to_bytes(&self.channels, &mut b);
        b[72..76].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// The state from `struct kvm_pit_state2`'s bytes; the reserved
    /// bytes are ignored, as KVM ignores them.
    pub(crate) fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        State2 {
            channels: channels_from_bytes(b),
            flags: u32::from_le_bytes([b[72], b[73], b[74], b[75]]),
        }
    }
}

/// One counter. The bytes user space may load are kept as they are
/// (except where noted) and any value is read as KVM reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Channel {
    /// The count loaded, 1 to 65536 from the guest; at least 1.
    count: u32,
    /// When the count was loaded (or restarted by the gate).
    load_ns: i64,
    /// The mode byte: 0 to 5, or [`NO_MODE`] (or anything user space
    /// loaded, acting as [`NO_MODE`]).
    mode: u8,
    /// The control word's BCD bit.
    bcd: bool,
    /// The control word's access mode (RW field).
    rw_mode: u8,
    /// The data port's read flip-flop ([`rw`]).
    read_state: u8,
    /// The data port's write flip-flop ([`rw`]).
    write_state: u8,
    /// The low byte of a low-then-high count write.
    write_latch: u8,
    /// The count frozen by a latch command.
    latched_count: u16,
    /// How much of [`Channel::latched_count`] is left to read ([`rw`]),
    /// 0 for nothing latched.
    count_latched: u8,
    /// The status byte frozen by a read-back command.
    status: u8,
    /// [`Channel::status`] is waiting to be read.
    status_latched: bool,
    /// The gate input.
    gate: bool,
}

impl Channel {
    /// A counter at power-on: count 65536 loaded at `now_ns`, no mode.
    fn new(gate: bool, now_ns: i64) -> Self {
        Channel {
            count: 0x10000,
            load_ns: now_ns,
            mode: NO_MODE,
            bcd: false,
            rw_mode: 0,
            read_state: 0,
            write_state: 0,
            write_latch: 0,
            latched_count: 0,
            count_latched: 0,
            status: 0,
            status_latched: false,
            gate,
        }
    }

    /// A counter loaded from user space at `now_ns`: its count is
    /// reloaded now, whatever `count_load_time` says, as
    /// `kvm_vm_ioctl_set_pit2` does.
    fn from_state(s: &ChannelState, now_ns: i64) -> Self {
        let mut c = Channel {
            count: 0,
            load_ns: now_ns,
            mode: s.mode,
            bcd: s.bcd != 0,
            rw_mode: s.rw_mode,
            read_state: s.read_state,
            write_state: s.write_state,
            write_latch: s.write_latch,
            latched_count: s.latched_count,
            count_latched: s.count_latched,
            status: s.status,
            status_latched: s.status_latched != 0,
            gate: s.gate != 0,
        };
        c.load(s.count, now_ns);
        c
    }

    /// The counter as `struct kvm_pit_channel_state`.
    fn state(&self) -> ChannelState {
        ChannelState {
            count: self.count,
            latched_count: self.latched_count,
            count_latched: self.count_latched,
            status_latched: self.status_latched.into(),
            status: self.status,
            read_state: self.read_state,
            write_state: self.write_state,
            write_latch: self.write_latch,
            rw_mode: self.rw_mode,
            mode: self.mode,
            bcd: self.bcd.into(),
            gate: self.gate.into(),
            count_load_time: self.load_ns,
        }
    }

    /// Loads `count` at `now_ns`; 0 is 65536.
    fn load(&mut self, count: u32, now_ns: i64) {
        self.count = if count == 0 { 0x10000 } else { count };
        self.load_ns = now_ns;
    }

    /// Clock ticks since the count was loaded; 0 before it.
    fn ticks(&self, now_ns: i64) -> u64 {
        let elapsed = u64::try_from(now_ns.saturating_sub(self.load_ns)).unwrap_or(0);
        mul_div(elapsed, PIT_HZ, NS_PER_S)
    }

    /// The count at `now_ns`, as `pit_get_count`: modes 0, 1, 4 and 5
    /// count down once and wrap at 0xFFFF; mode 3 counts down by two and
    /// reloads; mode 2 (and no mode) counts down by one and reloads.
    /// 65536 in modes 2 and 3 reads as 0.
    fn count(&self, now_ns: i64) -> u16 {
        let d = self.ticks(now_ns);
        let count = u64::from(self.count.max(1));
        let value = match Mode::from_raw(self.mode) {
            Some(
                Mode::TerminalCount | Mode::OneShot | Mode::SoftwareStrobe | Mode::HardwareStrobe,
            ) => count.wrapping_sub(d),
            Some(Mode::SquareWave) => count - d.saturating_mul(2) % count,
            Some(Mode::RateGenerator) | None => count - d % count,
        };
        // The low 16 bits, as KVM's reads and latch keep them.
        u16::try_from(value & 0xffff).unwrap_or(0)
    }

    /// The output level at `now_ns`, as `pit_get_out` (see the module's
    /// notes for modes 1, 2, 4 and 5).
    fn out(&self, now_ns: i64) -> bool {
        let d = self.ticks(now_ns);
        let count = u64::from(self.count.max(1));
        match Mode::from_raw(self.mode) {
            Some(Mode::OneShot) => d < count,
            Some(Mode::RateGenerator) => d % count == 0 && d != 0,
            Some(Mode::SquareWave) => d % count < count.div_ceil(2),
            Some(Mode::SoftwareStrobe | Mode::HardwareStrobe) => d == count,
            Some(Mode::TerminalCount) | None => d >= count,
        }
    }

    /// The counter latch command: freezes the count for the next reads,
    /// unless a latched count is still unread (a second latch is
    /// ignored). A counter never programmed latches nothing.
    fn latch_count(&mut self, now_ns: i64) {
        if self.count_latched == 0 {
            self.latched_count = self.count(now_ns);
            self.count_latched = self.rw_mode;
        }
    }

    /// The read-back command's status latch: OUT, then the control word
    /// (null count always 0), unless a latched status is still unread.
    fn latch_status(&mut self, now_ns: i64) {
        if !self.status_latched {
            // Bits shifted out of a byte user space loaded are dropped, as
            // KVM's assignment to its u8 drops them.
            self.status = (u8::from(self.out(now_ns)) << 7)
                | (self.rw_mode << 4)
                | (self.mode << 1)
                | u8::from(self.bcd);
            self.status_latched = true;
        }
    }

    /// A control word for this counter (not a latch command): access
    /// mode, counting mode (6 and 7 are 2 and 3) and BCD. The count and
    /// the timer are left as they are until a count is written.
    fn control(&mut self, value: u8) {
        let access = (value >> 4) & 3;
        self.rw_mode = access;
        self.read_state = access;
        self.write_state = access;
        let mode = (value >> 1) & 7;
        self.mode = if mode > 5 { mode - 4 } else { mode };
        self.bcd = value & 1 != 0;
    }

    /// A read of the data port: a latched status first, then a latched
    /// count, else the current count, a byte at a time as the flip-flops
    /// say.
    fn read(&mut self, now_ns: i64) -> u8 {
        if self.status_latched {
            self.status_latched = false;
            return self.status;
        }
        if self.count_latched != 0 {
            let [lo, hi] = self.latched_count.to_le_bytes();
            return match self.count_latched {
                rw::MSB => {
                    self.count_latched = 0;
                    hi
                }
                rw::WORD0 => {
                    self.count_latched = rw::MSB;
                    lo
                }
                _ => {
                    self.count_latched = 0;
                    lo
                }
            };
        }
        let [lo, hi] = self.count(now_ns).to_le_bytes();
        match self.read_state {
            rw::MSB => hi,
            rw::WORD0 => {
                self.read_state = rw::WORD1;
                lo
            }
            rw::WORD1 => {
                self.read_state = rw::WORD0;
                hi
            }
            _ => lo,
        }
    }

    /// A write of the data port. Returns whether a count was loaded (not
    /// for the first byte of a low-then-high pair).
    fn write(&mut self, value: u8, now_ns: i64) -> bool {
        let count = match self.write_state {
            rw::MSB => u32::from(value) << 8,
            rw::WORD0 => {
                self.write_latch = value;
                self.write_state = rw::WORD1;
                return false;
            }
            rw::WORD1 => {
                self.write_state = rw::WORD0;
                u32::from(self.write_latch) | (u32::from(value) << 8)
            }
            _ => u32::from(value),
        };
        self.load(count, now_ns);
        true
    }

    /// Sets the gate input. A rising edge restarts the count in the
    /// modes the gate triggers (1, 2, 3, 5); a low gate stops nothing.
    fn set_gate(&mut self, gate: bool, now_ns: i64) {
        let triggered = matches!(
            Mode::from_raw(self.mode),
            Some(Mode::OneShot | Mode::RateGenerator | Mode::SquareWave | Mode::HardwareStrobe)
        );
        if triggered && !self.gate && gate {
            self.load_ns = now_ns;
        }
        self.gate = gate;
    }
}

/// The I/O ports the PIT decodes (port 0x61 is separate:
/// [`SPEAKER_PORT`]).
pub(crate) fn claims_port(port: u16) -> bool {
    (COUNTER0_PORT..=CONTROL_PORT).contains(&port)
}

/// The 8254 and the speaker port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pit {
    /// Counters 0, 1 and 2.
    channels: [Channel; 3],
    /// `struct kvm_pit_state2`'s flags: the speaker's data enable (port
    /// 0x61 bit 1) and the HPET legacy mode.
    flags: u32,
    /// Counter 0's timer as its last count load decided it.
    timer: Timer,
}

impl Pit {
    /// The PIT at power-on, at `now_ns`, as `kvm_pit_reset` leaves it:
    /// every counter loaded with 65536 in no mode, gates 0 and 1 high,
    /// counter 2's gate low, no timer.
    pub(crate) fn new(now_ns: i64) -> Self {
        Pit {
            channels: [
                Channel::new(true, now_ns),
                Channel::new(true, now_ns),
                Channel::new(false, now_ns),
            ],
            flags: 0,
            timer: Timer::Stop,
        }
    }

    /// Counter 0's timer for the count it holds, as `pit_load_count`
    /// and `create_pit_timer` choose it: one-shot in modes 0, 1 and 4,
    /// periodic in modes 2 and 3 (the first interrupt after one full
    /// count, then every count, but no faster than [`MIN_PERIOD_NS`]),
    /// none in mode 5, without a mode or in HPET legacy mode.
    fn plan(&self) -> Timer {
        let c = &self.channels[0];
        if self.flags & KVM_PIT_FLAGS_HPET_LEGACY != 0 {
            return Timer::Stop;
        }
        let interval = mul_div(u64::from(c.count), NS_PER_S, PIT_HZ);
        let interval = i64::try_from(interval).unwrap_or(i64::MAX);
        let first_ns = c.load_ns.saturating_add(interval);
        match Mode::from_raw(c.mode) {
            Some(Mode::TerminalCount | Mode::OneShot | Mode::SoftwareStrobe) => {
                Timer::OneShot { at_ns: first_ns }
            }
            Some(Mode::RateGenerator | Mode::SquareWave) => Timer::Periodic {
                first_ns,
                period_ns: interval.max(i64::try_from(MIN_PERIOD_NS).unwrap_or(i64::MAX)),
            },
            Some(Mode::HardwareStrobe) | None => Timer::Stop,
        }
    }

    /// Counter 0's timer as the last count load (or state load) decided
    /// it: what the kernel glue must have armed. A control word alone
    /// does not change it, as in KVM.
    pub(crate) fn channel0_timer(&self) -> Timer {
        self.timer
    }

    /// A read of port 0x40 to 0x43 at `now_ns`. `None` if the port drives
    /// no data: 0x43 is write only (KVM then leaves the guest's AL as it
    /// was) and other ports are not the PIT's ([`claims_port`]).
    pub(crate) fn read(&mut self, port: u16, now_ns: i64) -> Option<u8> {
        let index = usize::from(port.checked_sub(COUNTER0_PORT)?);
        let channel = self.channels.get_mut(index)?;
        Some(channel.read(now_ns))
    }

    /// A write of port 0x40 to 0x43 at `now_ns`. Returns counter 0's new
    /// timer when a count was loaded into counter 0; the other writes do
    /// not change it (`None`).
    pub(crate) fn write(&mut self, port: u16, value: u8, now_ns: i64) -> Option<Timer> {
        if port == CONTROL_PORT {
            self.control(value, now_ns);
            return None;
        }
        let index = usize::from(port.checked_sub(COUNTER0_PORT)?);
        let channel = self.channels.get_mut(index)?;
        if channel.write(value, now_ns) && index == 0 {
            self.timer = self.plan();
            return Some(self.timer);
        }
        None
    }

    /// A control word (port 0x43): the read-back command, a counter
    /// latch command or a counter's new access and counting modes.
    fn control(&mut self, value: u8, now_ns: i64) {
        let select = value >> 6;
        if select == 3 {
            // Read-back: bit 5 clear latches the count, bit 4 clear the
            // status, of each counter whose bit (1 to 3) is set.
            for (i, channel) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 {
                    channel.latch_count(now_ns);
                }
                if value & 0x10 == 0 {
                    channel.latch_status(now_ns);
                }
            }
            return;
        }
        let Some(channel) = self.channels.get_mut(usize::from(select)) else {
            return;
        };
        if (value >> 4) & 3 == 0 {
            channel.latch_count(now_ns);
        } else {
            channel.control(value);
        }
    }

    /// A read of port 0x61 at `now_ns`: counter 2's gate (bit 0), the
    /// speaker's data enable (bit 1), the refresh clock (bit 4: KVM makes
    /// it toggle every 2^14 ns, about the 15 µs of the PC's) and counter
    /// 2's output (bit 5).
    pub(crate) fn read_speaker(&self, now_ns: i64) -> u8 {
        let c = &self.channels[2];
        let mut value = 0;
        if c.gate {
            value |= speaker::GATE2;
        }
        if self.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON != 0 {
            value |= speaker::DATA;
        }
        if (now_ns >> 14) & 1 != 0 {
            value |= speaker::REFRESH;
        }
        if c.out(now_ns) {
            value |= speaker::OUT2;
        }
        value
    }

    /// A write of port 0x61 at `now_ns`: the speaker's data enable and
    /// counter 2's gate; the other bits are ignored.
    pub(crate) fn write_speaker(&mut self, value: u8, now_ns: i64) {
        if value & speaker::DATA != 0 {
            self.flags |= KVM_PIT_FLAGS_SPEAKER_DATA_ON;
        } else {
            self.flags &= !KVM_PIT_FLAGS_SPEAKER_DATA_ON;
        }
        self.channels[2].set_gate(value & speaker::GATE2 != 0, now_ns);
    }

    /// The three counters' states.
    fn channel_states(&self) -> [ChannelState; 3] {
        [
            self.channels[0].state(),
            self.channels[1].state(),
            self.channels[2].state(),
        ]
    }

    /// Loads the three counters at `now_ns` and returns counter 0's timer.
    fn load_channels(&mut self, channels: &[ChannelState; 3], now_ns: i64) -> Timer {
        for (c, s) in self.channels.iter_mut().zip(channels) {
            *c = Channel::from_state(s, now_ns);
        }
        self.timer = self.plan();
        self.timer
    }

    /// `KVM_GET_PIT2`.
    pub(crate) fn get_state(&self) -> State2 {
        State2 {
            channels: self.channel_states(),
            flags: self.flags,
        }
    }

    /// `KVM_SET_PIT2` at `now_ns`, as `kvm_vm_ioctl_set_pit2`: every
    /// field is taken as it is (a count of 0 is 65536) except
    /// `count_load_time`: each count is reloaded at `now_ns`, so that
    /// counting and counter 0's timer restart from a full count. Returns
    /// counter 0's timer, to be armed in place of the old one.
    pub(crate) fn set_state(&mut self, s: &State2, now_ns: i64) -> Timer {
        self.flags = s.flags;
        self.load_channels(&s.channels, now_ns)
    }

    /// `KVM_GET_PIT`: the counters without the flags.
    pub(crate) fn get_channels(&self) -> State {
        State {
            channels: self.channel_states(),
        }
    }

    /// `KVM_SET_PIT` at `now_ns`: [`Pit::set_state`] that keeps the flags.
    pub(crate) fn set_channels(&mut self, s: &State, now_ns: i64) -> Timer {
        self.load_channels(&s.channels, now_ns)
    }
}
