//! `module/x86/tsc.rs`: which `KVM_SET_TSC_KHZ` rates a device without
//! TSC scaling takes, as KVM's `kvm_set_tsc_khz` with its 250 ppm
//! tolerance.

use crate::x86::tsc::accept_tsc_khz;

#[test]
fn zero_means_the_hosts_rate() {
    assert_eq!(accept_tsc_khz(0, 2_400_000), Some(2_400_000));
}

#[test]
fn rates_within_250_ppm_are_taken_as_asked() {
    // 2.4 GHz: 250 ppm is 600 kHz either way.
    let host = 2_400_000;
    for khz in [host, host - 600, host + 600, host - 1, host + 1] {
        assert_eq!(accept_tsc_khz(khz, host), Some(khz), "{khz}");
    }
    for khz in [host - 601, host + 601, host / 2, host * 2, 1, u32::MAX] {
        assert_eq!(accept_tsc_khz(khz, host), None, "{khz}");
    }
}

#[test]
fn the_bounds_round_down_as_kvms() {
    // 1 000 003 kHz: 250 ppm is 250.00075 kHz; KVM's bounds are
    // 999 752 (999 752.99925 rounded down) and 1 000 253 (1 000 253.00075),
    // both taken.
    let host = 1_000_003;
    assert_eq!(accept_tsc_khz(999_751, host), None);
    assert_eq!(accept_tsc_khz(999_752, host), Some(999_752));
    assert_eq!(accept_tsc_khz(1_000_253, host), Some(1_000_253));
    assert_eq!(accept_tsc_khz(1_000_254, host), None);
}

#[test]
fn a_host_of_unknown_rate_takes_nothing() {
    assert_eq!(accept_tsc_khz(0, 0), None);
    assert_eq!(accept_tsc_khz(1_000_000, 0), None);
}
