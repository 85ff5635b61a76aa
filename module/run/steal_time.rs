// SPDX-License-Identifier: GPL-2.0

//! Steal time (`MSR_KVM_STEAL_TIME`, KVM_FEATURE_STEAL_TIME;
//! `Documentation/virt/kvm/x86/msr.rst`): how long the vCPU was ready to
//! run but the host ran something else, so that the guest's scheduler can
//! account for time it did not get.
//!
//! The vCPU thread's waits for a CPU are the host scheduler's
//! `run_delay`. rkvm adds what it grew by since the last update to the
//! `steal` field of the guest's `struct kvm_steal_time` (64 bytes, 64-byte
//! aligned, at the MSR's address) at the start of every `KVM_RUN` and
//! before any entry after the thread waited, as KVM's `record_steal_time`
//! at every `vcpu_load`: the version goes odd, `preempted` is cleared,
//! `steal` is updated, the version goes even. rkvm never marks a vCPU
//! preempted (KVM does when its thread is scheduled out, for guests
//! with PV TLB flushes or spinlocks, which rkvm does not offer).

use super::kvmclock::versioned_write;
use crate::sys::cpu;
use crate::vcpu::ArchState;
use crate::vm::Vm;
use crate::x86::msr::KVM_SYSTEM_TIME_ENABLE as ENABLE;

/// `struct kvm_steal_time`'s fields rkvm writes.
const STEAL: u64 = 0;
const VERSION: u64 = 8;
const PREEMPTED: u64 = 16;

/// Updates the guest's steal time if it is enabled and `force` (a new
/// `KVM_RUN`) or the thread waited since the last update.
pub(super) fn update(vm: &Vm, state: &mut ArchState, force: bool) {
    let msr = state.msrs.kvm_steal_time;
    if msr & ENABLE == 0 {
        return;
    }
    let run_delay = cpu::run_delay_ns();
    if !force && run_delay == state.run.steal_last {
        return;
    }
    let gpa = msr & !0x3f;
    let last = &mut state.run.steal_last;
    let _ = versioned_write(vm, gpa + VERSION, |_| {
        let mut steal = [0u8; 8];
        vm.read_guest(gpa + STEAL, &mut steal)?;
        let steal = u64::from_le_bytes(steal).wrapping_add(run_delay.wrapping_sub(*last));
        *last = run_delay;
        vm.write_guest(gpa + PREEMPTED, &[0])?;
        vm.write_guest(gpa + STEAL, &steal.to_le_bytes())
    });
}
