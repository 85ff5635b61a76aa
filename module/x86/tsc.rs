// SPDX-License-Identifier: GPL-2.0

//! The rate a guest is told its TSC runs at (`KVM_SET_TSC_KHZ`).
//!
//! A guest's TSC is the host's plus an offset (SDM Vol. 3C 27.6.5, APM
//! Vol. 2 15.30.1): it ticks at the host's rate. Processors with TSC
//! scaling (VMX's TSC multiplier, SVM's TSC ratio MSR) can make it tick
//! at another; rkvm does not use them yet, so, as KVM on a host without
//! scaling (`kvm_set_tsc_khz`), it accepts a rate within 250 ppm of the host's
//! (`tsc_tolerance_ppm`: the guest is told that rate and its TSC runs at
//! the host's) and refuses a lower one. A higher one KVM emulates by
//! pushing the guest's TSC forward at every entry ("catch-up" mode); rkvm
//! refuses it (`EINVAL`, docs/abi.md).

/// How far from the host's rate a requested one may be and still be run
/// at the host's: KVM's `tsc_tolerance_ppm` default.
pub(crate) const TOLERANCE_PPM: u64 = 250;

/// The rate to report for a `KVM_SET_TSC_KHZ` of `requested` kHz on a
/// host whose TSC runs at `host` kHz: the host's for 0 (as KVM), the
/// requested rate when it is within [`TOLERANCE_PPM`] of the host's
/// (bounds rounded down, as KVM's `adjust_tsc_khz`), else `None`
/// (`EINVAL`). A host whose rate is unknown (0) takes nothing.
pub(crate) fn accept_tsc_khz(requested: u32, host: u32) -> Option<u32> {
    let requested = if requested == 0 { host } else { requested };
    let bound = |ppm: u64| u64::from(host) * ppm / 1_000_000;
    let (lo, hi) = (
        bound(1_000_000 - TOLERANCE_PPM),
        bound(1_000_000 + TOLERANCE_PPM),
    );
    (host != 0 && (lo..=hi).contains(&u64::from(requested))).then_some(requested)
}
