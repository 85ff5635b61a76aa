// SPDX-License-Identifier: GPL-2.0

//! kvmclock, the guest's side: the structures rkvm writes into guest
//! memory (x86/pvclock.rs has the arithmetic and layouts).
//!
//! - A vCPU's time structure, at the address its `MSR_KVM_SYSTEM_TIME(_NEW)`
//!   names with the enable bit set, is written before the vCPU enters
//!   whenever something it depends on changed: that MSR, the VM's clock
//!   (`KVM_SET_CLOCK`), the vCPU's TSC offset. Nothing else changes it:
//!   the reference is the VM's, the TSC runs at a constant rate, so the
//!   guest's computation stays right between updates. The version goes odd,
//!   the body is written, the version goes even, as KVM's
//!   `kvm_setup_guest_pvclock` (the guest's vDSO may read vCPU 0's structure
//!   from another CPU meanwhile).
//! - The wall clock, at the address written to `MSR_KVM_WALL_CLOCK(_NEW)`,
//!   is written at that write: the wall-clock time at which the kvmclock
//!   read 0, as KVM's `kvm_write_wall_clock`.
//!
//! A structure no slot backs, or one that crosses a page, is not written
//! (KVM's cache of the mapping refuses it the same way).

use crate::sys::cpu;
use crate::vcpu::ArchState;
use crate::vm::Vm;
use crate::x86::msr::{self, MsrFile, KVM_SYSTEM_TIME_ENABLE};
use crate::x86::pvclock::{self, TIME_INFO_SIZE};

/// What a written time structure was computed from: the MSR's value, the
/// VM clock's generation and the vCPU's TSC offset.
pub(crate) type Written = (u64, u64, u64);

/// Writes a structure guarded by the paravirtual version protocol
/// (`pvclock-abi.h`, and steal time's the same way): the `u32` version at
/// `version_gpa` goes odd (from whatever the guest left there, junk the
/// first time), `body` writes the rest knowing that odd version, and the
/// version goes even, as KVM's `kvm_setup_guest_pvclock`,
/// `kvm_write_wall_clock` and `record_steal_time`. A guest that reads an
/// odd version, or a different one after the body, reads again. Stops at
/// the first guest access that fails (`None`).
pub(super) fn versioned_write(
    vm: &Vm,
    version_gpa: u64,
    body: impl FnOnce(u32) -> Option<()>,
) -> Option<()> {
    let mut version = [0u8; 4];
    vm.read_guest(version_gpa, &mut version)?;
    let odd = u32::from_le_bytes(version).wrapping_add(1) | 1;
    vm.write_guest(version_gpa, &odd.to_le_bytes())?;
    body(odd)?;
    vm.write_guest(version_gpa, &odd.wrapping_add(1).to_le_bytes())
}

/// Before an entry: writes the vCPU's time structure if it is enabled
/// and out of date. The VM's lock is taken only then.
pub(super) fn update(vm: &Vm, state: &mut ArchState) {
    let msr = state.msrs.kvm_system_time;
    if msr & KVM_SYSTEM_TIME_ENABLE == 0 {
        state.run.kvmclock_written = None;
        return;
    }
    let key = key(vm, &state.msrs);
    if state.run.kvmclock_written == Some(key) {
        return;
    }
    // Tried once per change, written or not.
    state.run.kvmclock_written = Some(key);
    let gpa = msr & !KVM_SYSTEM_TIME_ENABLE;
    if gpa % 4096 + TIME_INFO_SIZE as u64 > 4096 {
        return;
    }
    let mut info = vm
        .kvmclock()
        .time_info(state.msrs.tsc_offset, cpu::tsc_khz());
    let _ = versioned_write(vm, gpa, |odd| {
        info.version = odd;
        vm.write_guest(gpa + 4, &info.to_bytes()[4..])
    });
}

/// What the structure would be written from now.
fn key(vm: &Vm, msrs: &MsrFile) -> Written {
    (
        msrs.kvm_system_time,
        vm.kvmclock_generation(),
        msrs.tsc_offset,
    )
}

/// Whether [`update`] would write the structure (or forget it) now: the
/// guest enabled it and it was written from other values, or it disabled
/// it and it is still recorded.
pub(super) fn stale(vm: &Vm, msrs: &MsrFile, written: Option<Written>) -> bool {
    if msrs.kvm_system_time & KVM_SYSTEM_TIME_ENABLE == 0 {
        written.is_some()
    } else {
        written != Some(key(vm, msrs))
    }
}

/// After a successful write of `value` to MSR `index` (by the guest or
/// the host): the wall clock, if that was its MSR and `value` an address.
pub(crate) fn msr_written(vm: &Vm, index: u32, value: u64) {
    if index != msr::index::KVM_WALL_CLOCK && index != msr::index::KVM_WALL_CLOCK_NEW {
        return;
    }
    if value == 0 {
        return;
    }
    let _ = versioned_write(vm, value, |odd| {
        let now_tsc = cpu::rdtsc();
        let realtime = cpu::realtime_ns();
        let epoch = realtime.saturating_sub(vm.kvmclock().at(now_tsc, cpu::tsc_khz()));
        vm.write_guest(value, &pvclock::wall_clock_bytes(odd, epoch))
    });
}
