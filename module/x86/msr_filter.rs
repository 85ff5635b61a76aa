// SPDX-License-Identifier: GPL-2.0

//! The MSR filter (`KVM_X86_SET_MSR_FILTER`): which MSRs the guest may
//! read or write in the kernel, as KVM's `kvm_msr_allowed`
//! (`Documentation/virt/kvm/api.rst`, "KVM_X86_SET_MSR_FILTER").
//!
//! A filter has a default (allow or deny) and up to 16 ranges, each a base
//! MSR, a count and a bitmap (bit set: allowed) for reads, writes or both.
//! The first range that covers the MSR for the access decides; no range,
//! the default. A guest access the filter denies is #GP, or an exit to
//! user space with reason `KVM_MSR_EXIT_REASON_FILTER` if the VMM asked for
//! those (`KVM_CAP_X86_USER_SPACE_MSR`). The x2APIC MSRs (0x800-0x8ff) are
//! never filtered, and accesses by the VMM (`KVM_GET/SET_MSRS`) neither.
//! Pure logic; the ioctl's copy of the bitmaps from user memory is in
//! vm.rs.

use kernel::alloc::KVec;

/// `KVM_MSR_FILTER_READ` and `KVM_MSR_FILTER_WRITE`: what a range covers.
pub(crate) const READ: u32 = 1;
pub(crate) const WRITE: u32 = 2;
/// `KVM_MSR_FILTER_DEFAULT_DENY`, the one filter flag.
pub(crate) const DEFAULT_DENY: u32 = 1;
/// `KVM_MSR_FILTER_MAX_BITMAP_SIZE`: a range's bitmap is at most this
/// many bytes.
pub(crate) const MAX_BITMAP_BYTES: usize = 0x600;

/// Why a filter is refused (`EINVAL`; a bitmap user space cannot give is
/// the ioctl's `EFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

/// One range, with its bitmap.
pub(crate) struct Range {
    flags: u32,
    base: u32,
    nmsrs: u32,
    bitmap: KVec<u8>,
}

/// A VM's filter.
pub(crate) struct MsrFilter {
    default_allow: bool,
    ranges: KVec<Range>,
}

/// The filter's flags, checked: `Ok(default_allow)`. A flag other than
/// `DEFAULT_DENY`, or a deny-by-default filter without a range (it would
/// deny every MSR), is refused, as KVM's `kvm_vm_ioctl_set_msr_filter`.
/// `counts` are the ranges' `nmsrs` (0: no range there).
pub(crate) fn check_flags(flags: u32, counts: impl Iterator<Item = u32>) -> Result<bool, Invalid> {
    if flags & !DEFAULT_DENY != 0 {
        return Err(Invalid);
    }
    let default_allow = flags & DEFAULT_DENY == 0;
    let mut empty = true;
    for n in counts {
        empty &= n == 0;
    }
    if empty && !default_allow {
        return Err(Invalid);
    }
    Ok(default_allow)
}

/// How many bitmap bytes to copy for a range of `nmsrs` MSRs with
/// `flags`: `Ok(None)` for an empty range (skipped), KVM's rounding to
/// whole 64-bit words, and `Invalid` for flags that are not READ and/or
/// WRITE or a bitmap over [`MAX_BITMAP_BYTES`] (KVM's
/// `kvm_add_msr_filter`).
pub(crate) fn bitmap_bytes(flags: u32, nmsrs: u32) -> Result<Option<usize>, Invalid> {
    if nmsrs == 0 {
        return Ok(None);
    }
    if flags & !(READ | WRITE) != 0 || flags == 0 {
        return Err(Invalid);
    }
    let bytes = (nmsrs as usize).div_ceil(64) * 8;
    if bytes > MAX_BITMAP_BYTES {
        return Err(Invalid);
    }
    Ok(Some(bytes))
}

impl MsrFilter {
    /// A filter with no range yet.
    pub(crate) fn new(default_allow: bool) -> Self {
        Self {
            default_allow,
            ranges: KVec::new(),
        }
    }

    /// Adds a range (checked with [`bitmap_bytes`]) after those added
    /// before.
    pub(crate) fn push(
        &mut self,
        flags: u32,
        base: u32,
        nmsrs: u32,
        bitmap: KVec<u8>,
    ) -> Result<(), kernel::alloc::AllocError> {
        self.ranges.push(
            Range {
                flags,
                base,
                nmsrs,
                bitmap,
            },
            kernel::alloc::flags::GFP_KERNEL_ACCOUNT,
        )
    }

    /// Whether the guest may access MSR `index` (a write if `write`) in
    /// the kernel.
    pub(crate) fn allows(&self, index: u32, write: bool) -> bool {
        if (0x800..=0x8ff).contains(&index) {
            return true;
        }
        let kind = if write { WRITE } else { READ };
        for r in self.ranges.iter() {
            // KVM computes the end in 32 bits: a range that wraps covers
            // nothing.
            let end = r.base.wrapping_add(r.nmsrs);
            if index >= r.base && index < end && r.flags & kind != 0 {
                let bit = index - r.base;
                let byte = r.bitmap.get((bit / 8) as usize).copied().unwrap_or(0);
                return byte & (1 << (bit % 8)) != 0;
            }
        }
        self.default_allow
    }
}
