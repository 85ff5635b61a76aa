// SPDX-License-Identifier: GPL-2.0

//! The nested page table's entry format: the long-mode page-table entry.
//! Every nested access is a user access, so every entry has U/S set; 2 MiB
//! leaves set PS. APM Vol. 2 15.25.5 and 5.4 (Figures 5-18 to 5-22).

use crate::mmu::{Access, EntryFormat, PageSize};
use crate::sys::mem::HostPhysAddr;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// Accessed: set up front so the walker need not write it.
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
/// Page size: the PDE maps a 2 MiB page.
const LARGE: u64 = 1 << 7;
/// Available to software (bit 9): rkvm marks retired leaves with it.
const RETIRED: u64 = 1 << 9;
/// Available to software (bit 10): the page behind the leaf was pinned
/// for writing (`Access::may_write`), whether or not WRITABLE is set now.
const MAY_WRITE: u64 = 1 << 10;
/// Bits 51:12 of an entry hold the physical address.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// The nested page table format.
pub(crate) struct Npt;

impl EntryFormat for Npt {
    fn table(table: HostPhysAddr) -> u64 {
        (table.0 & ADDRESS) | PRESENT | WRITABLE | USER | ACCESSED
    }

    fn leaf(page: HostPhysAddr, size: PageSize, access: Access) -> u64 {
        let large = if size == PageSize::Size2M { LARGE } else { 0 };
        let write = match access {
            Access::Read => 0,
            Access::Write => MAY_WRITE | WRITABLE | DIRTY,
            Access::WriteTracked => MAY_WRITE,
        };
        (page.0 & ADDRESS) | PRESENT | USER | ACCESSED | write | large
    }

    fn is_present(entry: u64) -> bool {
        entry & PRESENT != 0
    }

    fn address(entry: u64) -> HostPhysAddr {
        HostPhysAddr(entry & ADDRESS)
    }

    fn is_writable(entry: u64) -> bool {
        entry & WRITABLE != 0
    }

    fn may_write(entry: u64) -> bool {
        entry & MAY_WRITE != 0
    }

    fn with_write(entry: u64, write: bool) -> u64 {
        if write {
            entry | WRITABLE | DIRTY
        } else {
            entry & !(WRITABLE | DIRTY)
        }
    }

    fn retired(entry: u64) -> u64 {
        (entry & !PRESENT) | RETIRED
    }

    fn is_retired(entry: u64) -> bool {
        entry & (PRESENT | RETIRED) == RETIRED
    }
}
