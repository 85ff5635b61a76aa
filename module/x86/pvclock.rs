// SPDX-License-Identifier: GPL-2.0

//! kvmclock's arithmetic and layouts: the paravirtual clock a KVM guest
//! reads without an exit (`Documentation/virt/kvm/x86/msr.rst`,
//! `MSR_KVM_SYSTEM_TIME_NEW`; `arch/x86/include/asm/pvclock-abi.h`).
//!
//! The hypervisor writes, in guest memory, a reference point: the guest's
//! TSC at some moment (`tsc_timestamp`), the clock's value in nanoseconds
//! at that moment (`system_time`), and a fixed-point factor that turns TSC
//! ticks into nanoseconds (`tsc_to_system_mul`, `tsc_shift`). The guest
//! then computes `system_time + scale(rdtsc() - tsc_timestamp)` whenever it
//! likes. A version number, odd while the hypervisor rewrites the
//! structure, lets the guest retry a torn read.
//!
//! rkvm keeps one reference per VM (its "master clock": a host TSC value
//! and the clock's value then, set at VM creation and by `KVM_SET_CLOCK`),
//! so every vCPU's structure describes the same clock, `KVM_GET_CLOCK`
//! reads it with the same arithmetic, and the stable bit can be set.

/// `struct pvclock_vcpu_time_info`'s size.
pub(crate) const TIME_INFO_SIZE: usize = 32;
/// `struct pvclock_wall_clock`'s size: version, seconds, nanoseconds.
pub(crate) const WALL_CLOCK_SIZE: usize = 12;
/// `PVCLOCK_TSC_STABLE_BIT`: every vCPU's structure describes one clock,
/// so the guest need not guard against it going backwards between vCPUs.
pub(crate) const FLAG_TSC_STABLE: u8 = 1 << 0;

const NSEC_PER_SEC: u64 = 1_000_000_000;

/// The factor that turns ticks of a `tsc_khz` clock into nanoseconds, as
/// (`tsc_to_system_mul`, `tsc_shift`): `ns = ((ticks << shift) * mul) >>
/// 32` (a negative shift shifts right). KVM's `kvm_get_time_scale`.
pub(crate) fn scale_for(tsc_khz: u32) -> (u32, i8) {
    let mut tps64 = u64::from(tsc_khz) * 1000;
    let mut scaled64 = NSEC_PER_SEC;
    let mut shift: i8 = 0;
    if tps64 == 0 {
        return (0, 0);
    }
    while tps64 > scaled64 * 2 || tps64 >> 32 != 0 {
        tps64 >>= 1;
        shift -= 1;
    }
    let mut tps32 = tps64 as u32;
    while u64::from(tps32) <= scaled64 || scaled64 >> 32 != 0 {
        if scaled64 >> 32 != 0 || tps32 & 0x8000_0000 != 0 {
            scaled64 >>= 1;
        } else {
            tps32 <<= 1;
        }
        shift += 1;
    }
    // scaled64 < tps32 here, so the quotient fits in 32 bits.
    let mul = (scaled64 << 32).checked_div(u64::from(tps32)).unwrap_or(0);
    (mul as u32, shift)
}

/// Nanoseconds in `delta` ticks, with the factor of [`scale_for`]: the
/// guest's `pvclock_scale_delta`.
pub(crate) fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let delta = if shift < 0 {
        delta >> shift.unsigned_abs().min(63)
    } else {
        delta << shift.unsigned_abs().min(63)
    };
    ((u128::from(delta) * u128::from(mul)) >> 32) as u64
}

/// A vCPU's `struct pvclock_vcpu_time_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeInfo {
    pub(crate) version: u32,
    pub(crate) tsc_timestamp: u64,
    pub(crate) system_time: u64,
    pub(crate) mul: u32,
    pub(crate) shift: i8,
    pub(crate) flags: u8,
}

impl TimeInfo {
    /// The structure's bytes: version, pad, tsc_timestamp, system_time,
    /// tsc_to_system_mul, tsc_shift, flags, pad.
    pub(crate) fn to_bytes(self) -> [u8; TIME_INFO_SIZE] {
        let mut b = [0u8; TIME_INFO_SIZE];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[8..16].copy_from_slice(&self.tsc_timestamp.to_le_bytes());
        b[16..24].copy_from_slice(&self.system_time.to_le_bytes());
        b[24..28].copy_from_slice(&self.mul.to_le_bytes());
        b[28] = self.shift as u8;
        b[29] = self.flags;
        b
    }

    /// What a guest reading this structure computes at guest TSC `tsc`
    /// (`__pvclock_read_cycles`).
    pub(crate) fn read(&self, tsc: u64) -> u64 {
        self.system_time.wrapping_add(scale_delta(
            tsc.wrapping_sub(self.tsc_timestamp),
            self.mul,
            self.shift,
        ))
    }
}

/// `struct pvclock_wall_clock`: the wall-clock time (since the epoch) at
/// which the VM's kvmclock read 0.
pub(crate) fn wall_clock_bytes(version: u32, epoch_ns: u64) -> [u8; WALL_CLOCK_SIZE] {
    let mut b = [0u8; WALL_CLOCK_SIZE];
    b[0..4].copy_from_slice(&version.to_le_bytes());
    b[4..8].copy_from_slice(&((epoch_ns / NSEC_PER_SEC) as u32).to_le_bytes());
    b[8..12].copy_from_slice(&((epoch_ns % NSEC_PER_SEC) as u32).to_le_bytes());
    b
}

/// The VM's clock: its value `ns` when the host's TSC read `host_tsc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClockRef {
    pub(crate) host_tsc: u64,
    pub(crate) ns: u64,
}

impl ClockRef {
    /// The clock's value when the host's TSC reads `host_tsc`, at the
    /// rate of `tsc_khz`; a TSC behind the reference (another CPU's, a
    /// hair late) reads as the reference.
    pub(crate) fn at(&self, host_tsc: u64, tsc_khz: u32) -> u64 {
        // What a guest whose TSC is the host's computes from its structure.
        self.time_info(0, tsc_khz).read(host_tsc.max(self.host_tsc))
    }

    /// The structure a vCPU whose TSC is the host's plus `tsc_offset`
    /// must see (with the version left to the writer).
    pub(crate) fn time_info(&self, tsc_offset: u64, tsc_khz: u32) -> TimeInfo {
        let (mul, shift) = scale_for(tsc_khz);
        TimeInfo {
            version: 0,
            tsc_timestamp: self.host_tsc.wrapping_add(tsc_offset),
            system_time: self.ns,
            mul,
            shift,
            flags: FLAG_TSC_STABLE,
        }
    }
}
