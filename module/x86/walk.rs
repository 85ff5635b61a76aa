// SPDX-License-Identifier: GPL-2.0

//! The guest's page-table walk: guest-virtual (linear) to guest-physical.
//!
//! The run loop needs it to fetch the instruction at CS:RIP and to copy
//! the data of string I/O when the guest has paging on. It only reads: it
//! says whether the access would fault, so that the run loop can report
//! it, and does not set accessed or dirty bits or inject anything.
//!
//! Checked: the present bits; R/W (for supervisor accesses only with
//! CR0.WP), U/S, and XD for fetches when EFER.NXE is set; canonical form in
//! 4- and 5-level paging. Not checked: reserved bits (including those
//! above the physical address width), SMEP, SMAP and protection keys.
//!
//! Paging modes and entry formats: SDM Vol. 3A chapter 4 (4.1.1 for the
//! modes, 4.3 to 4.5 for the walks, 4.6 for access rights), APM Vol. 2
//! chapter 5.

use crate::x86::regs::{cr0, cr4, efer};

/// Bits of a paging-structure entry, the same in every mode.
/// SDM Vol. 3A 4.3 Table 4-6, 4.4.2 Table 4-11, 4.5.4 Table 4-20.
mod entry {
    /// Present.
    pub(super) const P: u64 = 1 << 0;
    /// Read/write: writes are allowed.
    pub(super) const RW: u64 = 1 << 1;
    /// User/supervisor: user-mode accesses are allowed.
    pub(super) const US: u64 = 1 << 2;
    /// Page size: the entry maps a page instead of referencing a table.
    pub(super) const PS: u64 = 1 << 7;
    /// Execute-disable, with EFER.NXE (PAE, 4- and 5-level paging only).
    pub(super) const XD: u64 = 1 << 63;
    /// The physical address a 64-bit entry holds: bits 51:12.
    pub(super) const ADDR: u64 = 0x000f_ffff_ffff_f000;
    /// The physical address a 32-bit entry holds: bits 31:12.
    pub(super) const ADDR32: u64 = 0xffff_f000;
}

/// The 4 KiB page size, and the mask of a page offset within it.
const PAGE_4K: u64 = 1 << 12;

/// Which page tables translate linear addresses. SDM Vol. 3A 4.1.1 Table 4-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PagingMode {
    /// CR0.PG clear: a linear address is the physical address.
    Off,
    /// 32-bit paging (CR4.PAE clear): two levels of 4-byte entries, and
    /// 4 MiB pages if CR4.PSE is set. SDM Vol. 3A 4.3.
    Bits32 {
        /// CR4.PSE: page-directory entries with PS set map 4 MiB pages.
        pse: bool,
    },
    /// PAE paging (CR4.PAE, not long mode): four PDPTEs, then two levels;
    /// 2 MiB pages. SDM Vol. 3A 4.4.
    Pae,
    /// 4-level paging (long mode); 2 MiB and 1 GiB pages. SDM Vol. 3A 4.5.
    Level4,
    /// 5-level paging (long mode with CR4.LA57); 57-bit linear addresses.
    /// SDM Vol. 3A 4.5.
    Level5,
}

/// The guest's paging state a walk depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Paging {
    /// The paging mode.
    pub(crate) mode: PagingMode,
    /// CR3: the root table (or, in PAE paging, the PDPTEs).
    pub(crate) cr3: u64,
    /// CR0.WP: supervisor writes honour R/W.
    pub(crate) wp: bool,
    /// EFER.NXE: the XD bit forbids fetches (not in 32-bit paging).
    pub(crate) nxe: bool,
}

impl Paging {
    /// The paging state from the guest's control registers and EFER.
    /// SDM Vol. 3A 4.1.1 Table 4-1.
    pub(crate) fn new(cr0: u64, cr3: u64, cr4: u64, efer: u64) -> Self {
        let mode = if cr0 & cr0::PG == 0 {
            PagingMode::Off
        } else if cr4 & cr4::PAE == 0 {
            PagingMode::Bits32 {
                pse: cr4 & cr4::PSE != 0,
            }
        } else if efer & efer::LMA == 0 {
            PagingMode::Pae
        } else if cr4 & cr4::LA57 != 0 {
            PagingMode::Level5
        } else {
            PagingMode::Level4
        };
        Self {
            mode,
            cr3,
            wp: cr0 & cr0::WP != 0,
            nxe: efer & efer::NXE != 0,
        }
    }
}

/// The kind of access a translation is for. SDM Vol. 3A 4.6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Access {
    /// The access writes.
    pub(crate) write: bool,
    /// The access is made at CPL 3 (a user-mode access).
    pub(crate) user: bool,
    /// The access is an instruction fetch.
    pub(crate) fetch: bool,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Translation {
    /// The guest-physical address, page offset included.
    pub(crate) gpa: u64,
    /// The size of the page mapping it: 4 KiB, 2 MiB, 4 MiB or 1 GiB.
    pub(crate) page_size: u64,
}

impl Translation {
    /// The number of bytes from `gpa` to the end of its page: how much can
    /// be accessed before the next page needs its own translation.
    pub(crate) fn bytes_to_page_end(&self) -> u64 {
        self.page_size - (self.gpa & (self.page_size - 1))
    }
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// The address is not canonical in 4- or 5-level paging (a #GP, not a
    /// page fault). SDM Vol. 1 3.3.7.1.
    NonCanonical,
    /// An entry on the way is not present (a #PF with P clear).
    NotPresent,
    /// The access is not allowed by R/W, U/S or XD (a #PF with P set).
    Protection,
    /// A paging structure lies at `gpa`, where the guest has no memory.
    NoMemory {
        /// The guest-physical address of the entry that could not be read.
        gpa: u64,
    },
}

/// One level of a walk above the page table.
struct Level {
    /// The position of the level's index in the linear address.
    shift: u32,
    /// The number of index bits: 9, or 10 in 32-bit paging.
    index_bits: u32,
    /// Whether an entry with PS set maps a page here.
    large: bool,
}

/// The levels of 5-level paging above the page table: PML5, PML4, PDPT
/// (1 GiB pages), PD (2 MiB pages). 4-level paging starts at the PML4.
/// SDM Vol. 3A 4.5.4 and 4.5.5.
const LONG_LEVELS: [Level; 4] = [
    Level {
        shift: 48,
        index_bits: 9,
        large: false,
    },
    Level {
        shift: 39,
        index_bits: 9,
        large: false,
    },
    Level {
        shift: 30,
        index_bits: 9,
        large: true,
    },
    Level {
        shift: 21,
        index_bits: 9,
        large: true,
    },
];

/// The page directory of PAE paging, below a PDPTE (2 MiB pages).
/// SDM Vol. 3A 4.4.2.
const PAE_LEVELS: [Level; 1] = [Level {
    shift: 21,
    index_bits: 9,
    large: true,
}];

/// The page directory of 32-bit paging (4 MiB pages with CR4.PSE).
/// SDM Vol. 3A 4.3.
const LEGACY_LEVELS: [Level; 1] = [Level {
    shift: 22,
    index_bits: 10,
    large: true,
}];

/// Whether `addr` is canonical for `bits`-bit linear addresses: bits 63 to
/// `bits - 1` all equal. SDM Vol. 1 3.3.7.1, SDM Vol. 3A 4.5.
fn is_canonical(addr: u64, bits: u32) -> bool {
    let top = (addr as i64) >> (bits - 1);
    top == 0 || top == -1
}

/// The rights a walk has collected so far: R/W and U/S must allow the
/// access at every level, XD at any level forbids fetches. SDM Vol. 3A 4.6.1.
struct Rights {
    writable: bool,
    user: bool,
    executable: bool,
}

impl Paging {
    /// Translates the linear address `gva` for `access`, reading the
    /// guest's paging structures with `read_phys(gpa, len)`, which returns
    /// the little-endian `len`-byte (4 or 8) value at `gpa`, or `None` if
    /// the guest has no memory there.
    ///
    /// Outside long mode linear addresses are 32 bits: the upper half of
    /// `gva` is ignored. In PAE paging the PDPTEs are read from CR3 at each
    /// walk: SVM keeps no PDPTE registers for the guest, and KVM reads them
    /// from guest memory too. SDM Vol. 3A 4.4.1.
    pub(crate) fn translate(
        &self,
        gva: u64,
        access: Access,
        mut read_phys: impl FnMut(u64, usize) -> Option<u64>,
    ) -> Result<Translation, WalkError> {
        let legacy_gva = gva & 0xffff_ffff;
        // The address to walk, the first table, the levels above the page table, and the size
        // of an entry.
        let (gva, mut table, levels, entry_len): (u64, u64, &[Level], usize) = match self.mode {
            PagingMode::Off => {
                return Ok(Translation {
                    gpa: legacy_gva,
                    page_size: PAGE_4K,
                })
            }
            PagingMode::Bits32 { .. } => (legacy_gva, self.cr3 & entry::ADDR32, &LEGACY_LEVELS, 4),
            PagingMode::Pae => {
                // CR3 bits 31:5 locate the four PDPTEs; bits 31:30 of the address pick one.
                // PDPTEs have no access rights. SDM Vol. 3A 4.4.1 Table 4-8.
                let gpa = (self.cr3 & 0xffff_ffe0) + 8 * (legacy_gva >> 30);
                let pdpte = read_phys(gpa, 8).ok_or(WalkError::NoMemory { gpa })?;
                if pdpte & entry::P == 0 {
                    return Err(WalkError::NotPresent);
                }
                (legacy_gva, pdpte & entry::ADDR, &PAE_LEVELS, 8)
            }
            PagingMode::Level4 | PagingMode::Level5 => {
                let (bits, levels) = if self.mode == PagingMode::Level5 {
                    (57, &LONG_LEVELS[..])
                } else {
                    (48, &LONG_LEVELS[1..])
                };
                if !is_canonical(gva, bits) {
                    return Err(WalkError::NonCanonical);
                }
                (gva, self.cr3 & entry::ADDR, levels, 8)
            }
        };
        let addr_mask = if entry_len == 4 {
            entry::ADDR32
        } else {
            entry::ADDR
        };
        let mut rights = Rights {
            writable: true,
            user: true,
            executable: true,
        };
        // Reads the entry `index` of `table`, checks that it is present and adds its rights.
        let mut next = |table: u64, index: u64, rights: &mut Rights| {
            // `entry_len` is 4 or 8.
            let gpa = table + index * entry_len as u64;
            let e = read_phys(gpa, entry_len).ok_or(WalkError::NoMemory { gpa })?;
            if e & entry::P == 0 {
                return Err(WalkError::NotPresent);
            }
            rights.writable &= e & entry::RW != 0;
            rights.user &= e & entry::US != 0;
            // 32-bit entries have no XD bit; without EFER.NXE it is reserved (not checked).
            // SDM Vol. 3A 4.6.2.
            rights.executable &= !(self.nxe && entry_len == 8 && e & entry::XD != 0);
            Ok::<u64, WalkError>(e)
        };
        // Without CR4.PSE, 32-bit paging ignores PS. SDM Vol. 3A 4.3.
        let large_pages = !matches!(self.mode, PagingMode::Bits32 { pse: false });
        for level in levels {
            let index = (gva >> level.shift) & ((1 << level.index_bits) - 1);
            let e = next(table, index, &mut rights)?;
            if level.large && large_pages && e & entry::PS != 0 {
                let page_size = 1u64 << level.shift;
                let frame = if entry_len == 4 {
                    // A 4 MiB page: address bits 31:22 in place, bits 39:32 from entry bits
                    // 20:13 (PSE-36). SDM Vol. 3A 4.3 Table 4-4.
                    (e & 0xffc0_0000) | (((e >> 13) & 0xff) << 32)
                } else {
                    e & entry::ADDR & !(page_size - 1)
                };
                return self.finish(access, &rights, frame | (gva & (page_size - 1)), page_size);
            }
            table = e & addr_mask;
        }
        let index_bits = if entry_len == 4 { 10 } else { 9 };
        let pte = next(table, (gva >> 12) & ((1 << index_bits) - 1), &mut rights)?;
        let frame = pte & addr_mask;
        self.finish(access, &rights, frame | (gva & (PAGE_4K - 1)), PAGE_4K)
    }

    /// The translation to `gpa` if `rights` allow `access`. User accesses
    /// need U/S, user writes R/W; supervisor writes need R/W only with
    /// CR0.WP; fetches need XD clear. SDM Vol. 3A 4.6.1.
    fn finish(
        &self,
        access: Access,
        rights: &Rights,
        gpa: u64,
        page_size: u64,
    ) -> Result<Translation, WalkError> {
        let denied = (access.user && !rights.user)
            || (access.write && !rights.writable && (access.user || self.wp))
            || (access.fetch && !rights.executable);
        if denied {
            return Err(WalkError::Protection);
        }
        Ok(Translation { gpa, page_size })
    }
}
