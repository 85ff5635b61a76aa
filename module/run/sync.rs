// SPDX-License-Identifier: GPL-2.0

//! `KVM_CAP_SYNC_REGS`: the registers in `kvm_run.s.regs`, so that a VMM
//! which looks at them after every exit saves the `KVM_GET_REGS`,
//! `KVM_GET_SREGS` and `KVM_GET_VCPU_EVENTS` calls
//! (`Documentation/virt/kvm/api.rst`, "kvm_valid_regs").
//!
//! Before entering, `KVM_RUN` loads each set whose bit user space put in
//! `kvm_dirty_regs` (regs, then sregs, then events, each checked as its own
//! ioctl checks it) and clears that bit; on every return it stores each set
//! whose bit is in `kvm_valid_regs`. A bit outside
//! `KVM_SYNC_X86_VALID_FIELDS` in either field makes `KVM_RUN` fail with
//! `EINVAL`, as a refused set does. As KVM's `sync_regs` and `store_regs`.
//!
//! The page is shared with user space, which may change it while the
//! kernel reads it (Linux's `sync_regs_test` does so from another thread):
//! each set is copied out of the page once and only the copy is checked
//! and used.

use super::SharedPage;
use crate::abi::{
    self, kvm_regs, kvm_run, kvm_sregs, kvm_sync_regs, kvm_vcpu_events, KVM_SYNC_X86_EVENTS,
    KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS,
};
use crate::vcpu::ArchState;
use crate::vm::Vm;
use core::mem::offset_of;
use kernel::prelude::*;

const REGS: u64 = KVM_SYNC_X86_REGS as u64;
const SREGS: u64 = KVM_SYNC_X86_SREGS as u64;
const EVENTS: u64 = KVM_SYNC_X86_EVENTS as u64;
const VALID: u64 = abi::KVM_SYNC_X86_VALID_FIELDS as u64;

const VALID_REGS: usize = offset_of!(kvm_run, kvm_valid_regs);
const DIRTY_REGS: usize = offset_of!(kvm_run, kvm_dirty_regs);
/// Where each set lives in the page.
const AT_REGS: usize = offset_of!(kvm_run, s) + offset_of!(kvm_sync_regs, regs);
const AT_SREGS: usize = offset_of!(kvm_run, s) + offset_of!(kvm_sync_regs, sregs);
const AT_EVENTS: usize = offset_of!(kvm_run, s) + offset_of!(kvm_sync_regs, events);

/// At the start of `KVM_RUN`: `EINVAL` for an unknown bit, then the sets
/// user space marked dirty, each loaded and its bit cleared. A set that is
/// refused stops here with `EINVAL`, its bit still set, the sets before it
/// loaded.
pub(super) fn load_dirty(vm: &Vm, state: &mut ArchState, page: &SharedPage<'_>) -> Result {
    let valid = page.read::<u64>(VALID_REGS)?;
    let dirty = page.read::<u64>(DIRTY_REGS)?;
    if (valid | dirty) & !VALID != 0 {
        return Err(EINVAL);
    }
    if dirty & REGS != 0 {
        let regs: kvm_regs = page.read(AT_REGS)?;
        state.set_user_regs(&regs);
        clear_dirty(page, REGS)?;
    }
    if dirty & SREGS != 0 {
        let sregs: kvm_sregs = page.read(AT_SREGS)?;
        let host = vm.shared.backend.host_limits();
        state.set_user_sregs(&host, &sregs)?;
        clear_dirty(page, SREGS)?;
    }
    if dirty & EVENTS != 0 {
        let events: kvm_vcpu_events = page.read(AT_EVENTS)?;
        state.run.set_vcpu_events(&events).map_err(|_| EINVAL)?;
        clear_dirty(page, EVENTS)?;
    }
    Ok(())
}

/// Clears one bit of `kvm_dirty_regs`, leaving whatever else user space
/// has put there since.
fn clear_dirty(page: &SharedPage<'_>, bit: u64) -> Result {
    let dirty = page.read::<u64>(DIRTY_REGS)?;
    page.write(DIRTY_REGS, &(dirty & !bit))
}

/// On every return from `KVM_RUN`: the sets `kvm_valid_regs` asks for.
pub(super) fn store_valid(state: &mut ArchState, page: &SharedPage<'_>) -> Result {
    let valid = page.read::<u64>(VALID_REGS)?;
    if valid & REGS != 0 {
        page.write(AT_REGS, &state.regs)?;
    }
    if valid & SREGS != 0 {
        page.write(AT_SREGS, &state.user_sregs())?;
    }
    if valid & EVENTS != 0 {
        page.write(AT_EVENTS, &state.run.vcpu_events())?;
    }
    Ok(())
}
