//! `module/x86/pvclock.rs`: kvmclock's scale factor, the guest's
//! computation, and the structures' layouts (pvclock-abi.h).

use crate::x86::pvclock::{scale_delta, scale_for, wall_clock_bytes, ClockRef, FLAG_TSC_STABLE};

#[test]
fn one_second_of_ticks_scales_to_one_second() {
    for khz in [
        1_000_000u32,
        2_596_125,
        3_000_000,
        4_999_999,
        100_000,
        25_000_000,
    ] {
        let (mul, shift) = scale_for(khz);
        let hz = u64::from(khz) * 1000;
        let ns = scale_delta(hz, mul, shift);
        // The fixed-point factor is exact to about one part in 2^31.
        assert!(
            ns.abs_diff(1_000_000_000) <= 2,
            "{khz} kHz: one second of ticks is {ns} ns (mul {mul:#x}, shift {shift})"
        );
        // And a small delta scales in proportion.
        let ms = scale_delta(hz / 1000, mul, shift);
        assert!(ms.abs_diff(1_000_000) <= 1, "{khz} kHz: 1 ms is {ms} ns");
    }
    // KVM's kvm_get_time_scale for 2.5 GHz: shift -1 and mul such that
    // (ticks >> 1) * mul >> 32 = ticks * 0.4.
    let (mul, shift) = scale_for(2_500_000);
    assert_eq!(shift, -1);
    assert_eq!(mul, 0xcccc_cccc);
    assert_eq!(scale_for(0), (0, 0));
}

#[test]
fn the_clock_reads_its_reference_and_the_guest_computes_the_same() {
    let khz = 2_000_000;
    let clock = ClockRef {
        host_tsc: 1_000_000,
        ns: 5_000,
    };
    assert_eq!(clock.at(1_000_000, khz), 5_000);
    // A TSC behind the reference reads as the reference.
    assert_eq!(clock.at(10, khz), 5_000);
    // 2000 ticks at 2 GHz are 1000 ns.
    assert_eq!(clock.at(1_002_000, khz), 6_000);
    // A vCPU whose TSC runs 0x1000_0000 ahead reads the same clock.
    let info = clock.time_info(0x1000_0000, khz);
    assert_eq!(info.tsc_timestamp, 1_000_000 + 0x1000_0000);
    assert_eq!(info.system_time, 5_000);
    assert_eq!(info.flags, FLAG_TSC_STABLE);
    assert_eq!(info.read(1_002_000 + 0x1000_0000), 6_000);
}

#[test]
fn the_structures_have_kvms_layout() {
    let clock = ClockRef {
        host_tsc: 0x1122_3344,
        ns: 0x5566,
    };
    let mut info = clock.time_info(0x100, 2_500_000);
    info.version = 7;
    let b = info.to_bytes();
    assert_eq!(b[0..4], 7u32.to_le_bytes(), "version");
    assert_eq!(b[4..8], [0; 4], "pad0");
    assert_eq!(
        b[8..16],
        (0x1122_3344u64 + 0x100).to_le_bytes(),
        "tsc_timestamp"
    );
    assert_eq!(b[16..24], 0x5566u64.to_le_bytes(), "system_time");
    assert_eq!(b[24..28], 0xcccc_ccccu32.to_le_bytes(), "tsc_to_system_mul");
    assert_eq!(b[28], (-1i8) as u8, "tsc_shift");
    assert_eq!(b[29], FLAG_TSC_STABLE, "flags");
    assert_eq!(b[30..32], [0; 2], "pad");
    let w = wall_clock_bytes(2, 1_700_000_000_123_456_789);
    assert_eq!(w[0..4], 2u32.to_le_bytes());
    assert_eq!(w[4..8], 1_700_000_000u32.to_le_bytes());
    assert_eq!(w[8..12], 123_456_789u32.to_le_bytes());
}
