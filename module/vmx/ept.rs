// SPDX-License-Identifier: GPL-2.0

//! The extended page table's entry format, for the shared walker
//! ([`crate::mmu`]). SDM Vol. 3C 29.3.2, Tables 29-1 to 29-6.
//!
//! An EPT entry has no "present" bit: it is present when any of read,
//! write and execute (bits 2:0) is set, and every other bit of a
//! not-present entry is ignored, which leaves room for rkvm's software
//! bits. Write without read is a misconfiguration, so a read-only leaf is
//! read + execute. Leaves carry the memory type: write-back, with "ignore
//! PAT" so the guest's PAT cannot make host memory uncached behind the
//! host's back (as KVM does for memory without non-coherent DMA).

use crate::mmu::{Access, EntryFormat, PageSize};
use crate::sys::mem::HostPhysAddr;

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const EXECUTE: u64 = 1 << 2;
const PERMISSIONS: u64 = READ | WRITE | EXECUTE;
/// Bits 5:3 of a leaf: the memory type, 6 = write-back.
const MEMTYPE_WB: u64 = 6 << 3;
/// Bit 6 of a leaf: ignore the guest's PAT.
const IGNORE_PAT: u64 = 1 << 6;
/// Bit 7 of a PDE: it maps a 2 MiB page.
const LARGE: u64 = 1 << 7;
/// Bit 11, ignored by the CPU: rkvm marks retired leaves with it.
const RETIRED: u64 = 1 << 11;
/// Bit 52, ignored by the CPU: the page behind the leaf, present or
/// retired, was pinned for writing (`Access::may_write`), whether or not
/// WRITE is set now.
const MAY_WRITE: u64 = 1 << 52;
/// Bits 51:12 hold the physical address.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// The EPT format.
pub(crate) struct Ept;

impl EntryFormat for Ept {
    fn table(table: HostPhysAddr) -> u64 {
        // Non-leaf entries have no memory type (bits 7:3 reserved).
        (table.0 & ADDRESS) | PERMISSIONS
    }

    fn leaf(page: HostPhysAddr, size: PageSize, access: Access) -> u64 {
        let large = if size == PageSize::Size2M { LARGE } else { 0 };
        let write = match access {
            Access::Read => 0,
            Access::Write => MAY_WRITE | WRITE,
            Access::WriteTracked => MAY_WRITE,
        };
        (page.0 & ADDRESS) | READ | EXECUTE | write | MEMTYPE_WB | IGNORE_PAT | large
    }

    fn is_present(entry: u64) -> bool {
        entry & PERMISSIONS != 0
    }

    fn address(entry: u64) -> HostPhysAddr {
        HostPhysAddr(entry & ADDRESS)
    }

    fn is_writable(entry: u64) -> bool {
        Self::is_present(entry) && entry & WRITE != 0
    }

    fn may_write(entry: u64) -> bool {
        entry & MAY_WRITE != 0
    }

    fn with_write(entry: u64, write: bool) -> u64 {
        if write {
            entry | WRITE
        } else {
            entry & !WRITE
        }
    }

    fn retired(entry: u64) -> u64 {
        (entry & !PERMISSIONS) | RETIRED
    }

    fn is_retired(entry: u64) -> bool {
        entry & (PERMISSIONS | RETIRED) == RETIRED
    }
}

/// The EPT pointer for a tree of `levels` levels rooted at `root`:
/// write-back paging-structure accesses, walk length `levels`, no
/// accessed/dirty flags. SDM Vol. 3C 25.6.11, Table 25-9.
pub(crate) fn eptp(root: HostPhysAddr, levels: u64) -> u64 {
    (root.0 & ADDRESS) | ((levels - 1) << 3) | 6
}
