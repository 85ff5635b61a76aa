//! `module/irq/pit.rs`: the 8254 PIT's counters, control words, latches,
//! read-back and port 0x61 (Intel 8254 datasheet), counter 0's timer and
//! the `KVM_GET_PIT2`/`KVM_SET_PIT2` state as KVM's `i8254.c` has them.

use crate::abi::{KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON};
use crate::irq::lapic::MIN_PERIOD_NS;
use crate::irq::pit::{
    claims_port, rw, speaker, ChannelState, Pit, State, State2, Timer, NO_MODE, PIT_HZ,
};

/// A time well after the clock's start, in ns.
const T0: i64 = 7_000_000_000;

/// The first time at which `ticks` PIT clocks have passed since `t`.
fn after(t: i64, ticks: u64) -> i64 {
    t + i64::try_from((ticks * 1_000_000_000).div_ceil(PIT_HZ)).unwrap()
}

/// The duration of `count` PIT clocks, rounded down, in ns.
fn interval(count: u64) -> i64 {
    i64::try_from(count * 1_000_000_000 / PIT_HZ).unwrap()
}

/// Programs `channel` with `mode` in low-then-high access and loads
/// `count`; returns what the load did to counter 0's timer.
fn program(p: &mut Pit, channel: u16, mode: u8, count: u16, now: i64) -> Option<Timer> {
    let control = (channel as u8) << 6 | 0x30 | mode << 1;
    assert_eq!(
        p.write(0x43, control, now),
        None,
        "a control word arms nothing"
    );
    let [lo, hi] = count.to_le_bytes();
    assert_eq!(
        p.write(0x40 + channel, lo, now),
        None,
        "the low byte alone loads nothing"
    );
    p.write(0x40 + channel, hi, now)
}

/// Reads a count in low-then-high access.
fn read_word(p: &mut Pit, channel: u16, now: i64) -> u16 {
    let lo = p.read(0x40 + channel, now).unwrap();
    let hi = p.read(0x40 + channel, now).unwrap();
    u16::from_le_bytes([lo, hi])
}

/// `channel`'s status byte, by a read-back command for its status only.
fn status(p: &mut Pit, channel: u16, now: i64) -> u8 {
    assert_eq!(p.write(0x43, 0xe0 | 2 << channel, now), None);
    p.read(0x40 + channel, now).unwrap()
}

/// A small deterministic pseudo-random sequence (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn power_on_state_is_kvms_reset() {
    let p = Pit::new(T0);
    let s = p.get_state();
    for (i, c) in s.channels.iter().enumerate() {
        assert_eq!(c.count, 0x10000, "counter {i}: 65536 loaded");
        assert_eq!(c.mode, NO_MODE, "counter {i}: no mode yet");
        assert_eq!((c.rw_mode, c.read_state, c.write_state), (0, 0, 0));
        assert_eq!(c.gate, u8::from(i != 2), "only counter 2's gate starts low");
    }
    assert_eq!(s.flags, 0);
    assert_eq!(p.channel0_timer(), Timer::Stop);
    assert_eq!(p.read_speaker(T0) & speaker::GATE2, 0);
}

#[test]
fn a_counter_never_programmed_reads_its_low_byte_as_a_rate_generator() {
    let mut p = Pit::new(T0);
    // 65536 - 1 after one clock; every read is the low byte.
    assert_eq!(p.read(0x41, after(T0, 1)), Some(0xff));
    assert_eq!(p.read(0x41, after(T0, 0x101)), Some(0xff));
    assert_eq!(p.read(0x41, after(T0, 0x102)), Some(0xfe));
    // A latch command latches nothing (no access mode): reads stay live.
    p.write(0x43, 0x40, after(T0, 2));
    assert_eq!(p.read(0x41, after(T0, 3)), Some(0xfd));
    // A byte written loads the count as a low byte; with no mode, counter 0
    // arms no timer.
    assert_eq!(p.write(0x40, 0x10, T0), Some(Timer::Stop));
    assert_eq!(p.get_state().channels[0].count, 0x10);
}

#[test]
fn mode_2_rate_generator_counts_down_once_per_clock_and_reloads() {
    let mut p = Pit::new(0);
    program(&mut p, 1, 2, 1000, T0);
    assert_eq!(read_word(&mut p, 1, T0), 1000);
    assert_eq!(read_word(&mut p, 1, after(T0, 1)), 999);
    assert_eq!(read_word(&mut p, 1, after(T0, 400)), 600);
    // The count reloads after each period of 1000 clocks.
    assert_eq!(read_word(&mut p, 1, after(T0, 1000)), 1000);
    assert_eq!(read_word(&mut p, 1, after(T0, 1250)), 750);
    assert_eq!(read_word(&mut p, 1, after(T0, 5001)), 999);
}

#[test]
fn mode_3_square_wave_is_high_for_the_first_half_and_counts_by_two() {
    let mut p = Pit::new(0);
    p.write_speaker(speaker::GATE2, 0);
    program(&mut p, 2, 3, 100, T0);
    let out = |p: &Pit, ticks| p.read_speaker(after(T0, ticks)) & speaker::OUT2 != 0;
    assert!(out(&p, 0) && out(&p, 49), "high for the first 50 clocks");
    assert!(!out(&p, 50) && !out(&p, 99), "low for the last 50");
    assert!(out(&p, 100) && out(&p, 149), "and again");
    assert!(!out(&p, 150));
    // The count goes down by two per clock.
    assert_eq!(read_word(&mut p, 2, after(T0, 10)), 80);
    assert_eq!(status(&mut p, 2, after(T0, 10)) & 0x80, 0x80);
    assert_eq!(status(&mut p, 2, after(T0, 60)) & 0x80, 0);
    // An odd count is high one clock longer than low: (N + 1) / 2.
    program(&mut p, 2, 3, 101, T0);
    assert!(out(&p, 50) && !out(&p, 51));
}

#[test]
fn mode_0_output_rises_at_terminal_count_and_the_counter_wraps() {
    let mut p = Pit::new(0);
    // Linux's TSC calibration: gate high and speaker off, counter 2 in
    // mode 0, then poll port 0x61 bit 5.
    let port61 = p.read_speaker(T0);
    p.write_speaker((port61 & !speaker::DATA) | speaker::GATE2, T0);
    assert_eq!(p.write(0x43, 0xb0, T0), None);
    p.write(0x42, 1000u16.to_le_bytes()[0], T0);
    p.write(0x42, 1000u16.to_le_bytes()[1], T0);
    let out = |p: &Pit, ticks| p.read_speaker(after(T0, ticks)) & speaker::OUT2 != 0;
    assert!(!out(&p, 0) && !out(&p, 999), "low while counting");
    assert!(
        out(&p, 1000) && out(&p, 50_000),
        "high from terminal count on"
    );
    assert_eq!(read_word(&mut p, 2, after(T0, 999)), 1);
    assert_eq!(read_word(&mut p, 2, after(T0, 1000)), 0);
    assert_eq!(
        read_word(&mut p, 2, after(T0, 1001)),
        0xffff,
        "the counter keeps counting from 0xFFFF"
    );
}

#[test]
fn low_then_high_access_loads_on_the_second_byte_and_reads_alternate() {
    let mut p = Pit::new(0);
    p.write(0x43, 0x34, T0);
    assert_eq!(p.write(0x40, 0x34, T0), None);
    let c = p.get_state().channels[0];
    assert_eq!((c.write_state, c.write_latch), (rw::WORD1, 0x34));
    assert!(matches!(
        p.write(0x40, 0x12, T0),
        Some(Timer::Periodic { .. })
    ));
    let c = p.get_state().channels[0];
    assert_eq!((c.count, c.write_state), (0x1234, rw::WORD0));
    assert_eq!(p.read(0x40, T0), Some(0x34));
    assert_eq!(p.get_state().channels[0].read_state, rw::WORD1);
    assert_eq!(p.read(0x40, T0), Some(0x12));
    assert_eq!(p.get_state().channels[0].read_state, rw::WORD0);
}

#[test]
fn low_byte_only_and_high_byte_only_access_load_on_every_byte() {
    let mut p = Pit::new(0);
    // Counter 0, low byte only, mode 2.
    p.write(0x43, 0x14, T0);
    assert!(p.write(0x40, 0x56, T0).is_some());
    assert_eq!(p.get_state().channels[0].count, 0x56);
    assert_eq!(
        (p.read(0x40, T0), p.read(0x40, T0)),
        (Some(0x56), Some(0x56))
    );
    // High byte only.
    p.write(0x43, 0x24, T0);
    assert!(p.write(0x40, 0x12, T0).is_some());
    assert_eq!(p.get_state().channels[0].count, 0x1200);
    assert_eq!(
        (p.read(0x40, T0), p.read(0x40, T0)),
        (Some(0x12), Some(0x12))
    );
}

#[test]
fn the_latch_command_freezes_the_count_until_it_is_read() {
    let mut p = Pit::new(0);
    program(&mut p, 0, 2, 0x1000, T0);
    p.write(0x43, 0x00, after(T0, 0x100));
    // A second latch before the first is read is ignored.
    p.write(0x43, 0x00, after(T0, 0x200));
    assert_eq!(read_word(&mut p, 0, after(T0, 0x800)), 0x0f00);
    assert_eq!(
        read_word(&mut p, 0, after(T0, 0x800)),
        0x0800,
        "once read, the count is live again"
    );
}

#[test]
fn read_back_latches_the_status_then_the_count() {
    let mut p = Pit::new(0);
    p.write_speaker(speaker::GATE2, T0);
    program(&mut p, 2, 0, 500, T0);
    // Count and status of counter 2.
    p.write(0x43, 0xc8, after(T0, 100));
    // OUT low, low-then-high access, mode 0, binary; null count is 0.
    assert_eq!(p.read(0x42, after(T0, 300)), Some(0x30));
    assert_eq!(read_word(&mut p, 2, after(T0, 300)), 400);
    assert_eq!(read_word(&mut p, 2, after(T0, 300)), 200, "live again");
    assert_eq!(status(&mut p, 2, after(T0, 500)), 0xb0, "OUT high at 0");
    // Status only, of counters 0 and 1 in one command.
    program(&mut p, 0, 2, 0x1234, T0);
    p.write(0x43, 0x56, T0); // Counter 1: low byte only, mode 3.
    p.write(0x41, 0x20, T0);
    p.write(0x43, 0xe6, after(T0, 1));
    // A second read-back before the status is read does not replace it.
    p.write(0x43, 0xe6, after(T0, 0x1234));
    assert_eq!(p.read(0x40, after(T0, 5)), Some(0x34));
    assert_eq!(
        p.read(0x41, after(T0, 5)),
        Some(0x96),
        "OUT high: first half"
    );
    // Then the data ports read counts again.
    assert_eq!(p.read(0x41, after(T0, 5)), Some(0x20 - 10));
}

#[test]
fn the_bcd_bit_is_reported_but_counting_stays_binary_as_in_kvm() {
    let mut p = Pit::new(0);
    p.write(0x43, 0xb1, T0); // Counter 2, low then high, mode 0, BCD.
    p.write(0x42, 0x00, T0);
    p.write(0x42, 0x01, T0);
    assert_eq!(p.get_state().channels[2].bcd, 1);
    assert_eq!(status(&mut p, 2, after(T0, 10)), 0x31);
    assert_eq!(read_word(&mut p, 2, after(T0, 10)), 0x100 - 10);
}

#[test]
fn a_count_of_zero_means_65536() {
    let mut p = Pit::new(0);
    let timer = program(&mut p, 0, 2, 0, T0);
    assert_eq!(p.get_state().channels[0].count, 0x10000);
    assert_eq!(
        timer,
        Some(Timer::Periodic {
            first_ns: T0 + interval(0x10000),
            period_ns: interval(0x10000),
        })
    );
    assert_eq!(interval(0x10000), 54_925_447, "the slowest tick, 18.2 Hz");
    assert_eq!(read_word(&mut p, 0, after(T0, 1)), 0xffff);
    // Mode 0: terminal count after 65536 clocks.
    program(&mut p, 1, 0, 0, T0);
    assert_eq!(read_word(&mut p, 1, after(T0, 0xffff)), 1);
    assert_eq!(status(&mut p, 1, after(T0, 0xffff)) & 0x80, 0);
    assert_eq!(status(&mut p, 1, after(T0, 0x10000)) & 0x80, 0x80);
}

#[test]
fn mode_values_6_and_7_are_modes_2_and_3() {
    let mut p = Pit::new(0);
    p.write(0x43, 0x3c, T0);
    assert_eq!(p.get_state().channels[0].mode, 2);
    p.write(0x43, 0x3e, T0);
    assert_eq!(p.get_state().channels[0].mode, 3);
    assert_eq!(status(&mut p, 0, T0) & 0x0e, 3 << 1);
}

#[test]
fn out_in_modes_1_2_4_and_5_is_reported_as_kvm_reports_it() {
    // KVM's (and QEMU's) levels, the opposite of the datasheet's pulses.
    let mut p = Pit::new(0);
    let out = |p: &mut Pit, ticks| status(p, 1, after(T0, ticks)) & 0x80 != 0;
    program(&mut p, 1, 1, 10, T0);
    assert!(out(&mut p, 0) && out(&mut p, 9) && !out(&mut p, 10));
    program(&mut p, 1, 2, 10, T0);
    assert!(!out(&mut p, 0) && !out(&mut p, 9) && out(&mut p, 10) && !out(&mut p, 11));
    assert!(out(&mut p, 20));
    for mode in [4, 5] {
        program(&mut p, 1, mode, 10, T0);
        assert!(
            !out(&mut p, 9) && out(&mut p, 10) && !out(&mut p, 11),
            "mode {mode}"
        );
    }
}

#[test]
fn the_speaker_port_holds_counter_2s_gate_and_the_speaker_data_bit() {
    let mut p = Pit::new(0);
    p.write_speaker(speaker::GATE2 | speaker::DATA, T0);
    let v = p.read_speaker(T0);
    assert_eq!(
        v & (speaker::GATE2 | speaker::DATA),
        speaker::GATE2 | speaker::DATA
    );
    assert_eq!(p.get_state().flags, KVM_PIT_FLAGS_SPEAKER_DATA_ON);
    assert_eq!(p.get_state().channels[2].gate, 1);
    // The other bits of a write are ignored.
    p.write_speaker(0xfc, T0);
    assert_eq!(p.read_speaker(T0) & (speaker::GATE2 | speaker::DATA), 0);
    assert_eq!(p.get_state().flags, 0);
    // The refresh bit toggles every 2^14 ns.
    assert_eq!(p.read_speaker(0) & speaker::REFRESH, 0);
    assert_eq!(p.read_speaker(1 << 14) & speaker::REFRESH, speaker::REFRESH);
    assert_eq!(p.read_speaker(2 << 14) & speaker::REFRESH, 0);
}

#[test]
fn a_rising_gate_restarts_counter_2_in_modes_1_2_3_and_5_only() {
    let mut p = Pit::new(0);
    program(&mut p, 2, 2, 1000, T0);
    // As KVM, a low gate does not stop the count.
    assert_eq!(read_word(&mut p, 2, after(T0, 300)), 700);
    let t1 = after(T0, 300);
    p.write_speaker(speaker::GATE2, t1);
    assert_eq!(read_word(&mut p, 2, after(t1, 10)), 990, "restarted");
    // Raising a gate that is already high is no edge.
    p.write_speaker(speaker::GATE2, after(t1, 10));
    assert_eq!(read_word(&mut p, 2, after(t1, 20)), 980);
    // Mode 0 is not retriggered.
    program(&mut p, 2, 0, 1000, T0);
    p.write_speaker(0, t1);
    p.write_speaker(speaker::GATE2, t1);
    assert_eq!(read_word(&mut p, 2, after(T0, 400)), 600);
}

#[test]
fn counter_0_arms_one_shots_in_modes_0_1_4_periodic_in_2_3_and_nothing_in_5() {
    let count = 11932;
    let first_ns = T0 + interval(count.into());
    for mode in 0..6 {
        let mut p = Pit::new(0);
        let timer = program(&mut p, 0, mode, count, T0);
        let expected = match mode {
            0 | 1 | 4 => Timer::OneShot { at_ns: first_ns },
            2 | 3 => Timer::Periodic {
                first_ns,
                period_ns: interval(count.into()),
            },
            _ => Timer::Stop,
        };
        assert_eq!(timer, Some(expected), "mode {mode}");
        assert_eq!(p.channel0_timer(), expected);
        // Loads of counters 1 and 2 and control words leave it alone.
        assert_eq!(program(&mut p, 1, 2, 100, T0), None);
        assert_eq!(program(&mut p, 2, 2, 100, T0), None);
        assert_eq!(p.write(0x43, 0x30, T0), None);
        assert_eq!(p.channel0_timer(), expected);
    }
    // Linux's 1000 Hz tick (LATCH = 1193) is a period of 999 848 ns.
    let mut p = Pit::new(0);
    assert_eq!(
        program(&mut p, 0, 2, 1193, 0),
        Some(Timer::Periodic {
            first_ns: 999_848,
            period_ns: 999_848,
        })
    );
}

#[test]
fn short_periods_are_stretched_to_the_minimum_but_one_shots_are_not() {
    let mut p = Pit::new(0);
    assert_eq!(
        program(&mut p, 0, 2, 2, T0),
        Some(Timer::Periodic {
            first_ns: T0 + 1676,
            period_ns: i64::try_from(MIN_PERIOD_NS).unwrap(),
        })
    );
    assert_eq!(
        program(&mut p, 0, 0, 2, T0),
        Some(Timer::OneShot { at_ns: T0 + 1676 })
    );
}

#[test]
fn hpet_legacy_mode_silences_counter_0() {
    let mut p = Pit::new(0);
    program(&mut p, 0, 2, 1193, T0);
    let mut s = p.get_state();
    s.flags |= KVM_PIT_FLAGS_HPET_LEGACY;
    assert_eq!(p.set_state(&s, T0), Timer::Stop);
    assert_eq!(program(&mut p, 0, 2, 1193, T0), Some(Timer::Stop));
    assert_eq!(p.channel0_timer(), Timer::Stop);
    // Leaving legacy mode restarts the tick from the load.
    s.flags = 0;
    let t1 = T0 + 1_000_000;
    assert_eq!(
        p.set_state(&s, t1),
        Timer::Periodic {
            first_ns: t1 + 999_848,
            period_ns: 999_848,
        }
    );
}

#[test]
fn the_state_round_trips_through_kvm_pit_state2_bytes() {
    let mut p = Pit::new(T0);
    program(&mut p, 0, 2, 0x1234, T0);
    program(&mut p, 1, 3, 0x100, T0);
    p.write(0x43, 0x40, T0); // Counter 1's count latched, unread.
    p.write(0x43, 0xb1, T0); // Counter 2: half of a count written.
    p.write(0x42, 0x77, T0);
    p.write_speaker(speaker::GATE2 | speaker::DATA, T0);
    let s = p.get_state();
    let b = s.to_bytes();
    assert_eq!(b.len(), 112);
    // struct kvm_pit_channel_state: count at 0, mode at 13, the load time
    // at 16; the flags after the three channels, then reserved zeros.
    assert_eq!(b[0..4], 0x1234u32.to_le_bytes());
    assert_eq!(b[13], 2);
    assert_eq!(b[16..24], T0.to_le_bytes());
    assert_eq!(b[24 + 6], rw::WORD0, "counter 1's latch");
    assert_eq!(b[48 + 11], 0x77, "counter 2's write latch");
    assert_eq!(b[72..76], (KVM_PIT_FLAGS_SPEAKER_DATA_ON).to_le_bytes());
    assert!(b[76..].iter().all(|&x| x == 0));
    assert_eq!(State2::from_bytes(&b), s);
    // struct kvm_pit_state: the same channels, no flags.
    let old = p.get_channels();
    assert_eq!(old.channels, s.channels);
    assert_eq!(State::from_bytes(&old.to_bytes()), old);
    assert_eq!(
        ChannelState::from_bytes(&s.channels[1].to_bytes()),
        s.channels[1]
    );
    // Loaded at the same time, a new PIT is the same PIT.
    let mut q = Pit::new(0);
    q.set_state(&State2::from_bytes(&b), T0);
    assert_eq!(q, p);
}

#[test]
fn set_state_restarts_every_count_at_the_time_of_the_load() {
    let mut p = Pit::new(T0);
    program(&mut p, 1, 2, 1000, T0);
    let mut s = p.get_state();
    s.channels[1].count_load_time = i64::MIN;
    let t1 = T0 + 1_000_000_000;
    let mut q = Pit::new(0);
    q.set_state(&s, t1);
    assert_eq!(read_word(&mut q, 1, after(t1, 10)), 990);
    assert_eq!(q.get_state().channels[1].count_load_time, t1);
    // A count of 0 loads as 65536; counter 0's timer starts at the load.
    s.channels[0].count = 0;
    s.channels[0].mode = 2;
    assert_eq!(
        q.set_state(&s, t1),
        Timer::Periodic {
            first_ns: t1 + interval(0x10000),
            period_ns: interval(0x10000),
        }
    );
    assert_eq!(q.get_state().channels[0].count, 0x10000);
    // KVM_SET_PIT keeps the flags.
    q.write_speaker(speaker::DATA, t1);
    q.set_channels(
        &State {
            channels: s.channels,
        },
        t1,
    );
    assert_eq!(q.get_state().flags, KVM_PIT_FLAGS_SPEAKER_DATA_ON);
}

#[test]
fn only_ports_0x40_to_0x43_are_decoded_and_0x43_drives_no_data() {
    assert!((0x40..=0x43).all(claims_port));
    assert!(![0x3f, 0x44, 0x61].into_iter().any(claims_port));
    let mut p = Pit::new(T0);
    let before = p.clone();
    assert_eq!(p.read(0x43, T0), None);
    assert_eq!(p.read(0x44, T0), None);
    assert_eq!(p.read(0x3f, T0), None);
    assert_eq!(p.write(0x44, 0x34, T0), None);
    assert_eq!(p.write(0x3f, 0x34, T0), None);
    assert_eq!(p, before);
}

#[test]
fn hostile_state_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let times = [i64::MIN, -1, 0, T0, i64::MAX];
    for round in 0..2000 {
        let mut b = [0u8; State2::BYTES];
        for x in b.iter_mut() {
            *x = rng.next() as u8;
        }
        if round % 4 == 0 {
            b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        let mut p = Pit::new(0);
        let now = times[round % times.len()];
        let timer = p.set_state(&State2::from_bytes(&b), now);
        if let Timer::Periodic { period_ns, .. } = timer {
            assert!(period_ns >= i64::try_from(MIN_PERIOD_NS).unwrap());
        }
        for c in p.get_state().channels {
            assert_ne!(c.count, 0);
        }
        for t in times {
            for port in 0x40..=0x42 {
                assert!(p.read(port, t).is_some());
            }
            p.read_speaker(t);
            p.write(0x43, rng.next() as u8, t);
            p.write(0x40 + (rng.next() % 3) as u16, rng.next() as u8, t);
            p.write_speaker(rng.next() as u8, t);
        }
    }
}

#[test]
fn random_port_traffic_never_panics() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut p = Pit::new(T0);
    let mut now = T0;
    for _ in 0..100_000 {
        now = match rng.next() % 64 {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => -(rng.next() as i64 >> 2),
            _ => now.saturating_add((rng.next() % 100_000) as i64),
        };
        let port = 0x3e + (rng.next() % 0x28) as u16;
        let value = rng.next() as u8;
        if rng.next() & 1 == 0 {
            let read = p.read(port, now);
            assert_eq!(read.is_some(), (0x40..=0x42).contains(&port));
        } else if let Some(Timer::Periodic { period_ns, .. }) = p.write(port, value, now) {
            assert!(period_ns >= i64::try_from(MIN_PERIOD_NS).unwrap());
        }
        if port == 0x61 {
            p.write_speaker(value, now);
            p.read_speaker(now);
        }
    }
    for c in p.get_state().channels {
        assert!((1..=0x10000).contains(&c.count));
    }
}
