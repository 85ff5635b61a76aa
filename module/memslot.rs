// SPDX-License-Identifier: GPL-2.0

//! Guest memory slots: which guest-physical ranges are backed by which
//! ranges of the VM owner's memory.
//!
//! The rules are KVM's (`kvm_set_memory_region` in `virt/kvm/kvm_main.c`),
//! checked in the same order so that the same bad request gets the same
//! errno. This is pure logic: the caller supplies the one fact that needs
//! the kernel (whether the user range is user memory).

use crate::abi::{KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};

/// Slots per VM, reported as `KVM_CAP_NR_MEMSLOTS`. KVM has 32764; a small
/// fixed table keeps lookups simple and is plenty for the clients we run.
pub(crate) const NR_MEMSLOTS: usize = 64;

/// The largest total of guest memory a VM may have across its slots: 1 TiB.
/// Slots are pinned when mapped (with the `KVM_RUN` work), so the sum is
/// bounded up front.
pub(crate) const MAX_TOTAL_BYTES: u64 = 1 << 40;

/// KVM's per-slot limit: the page count must fit a dirty bitmap indexed by
/// a 32-bit int (`KVM_MEM_MAX_NR_PAGES`).
const MAX_SLOT_PAGES: u64 = (1 << 31) - 1;

const PAGE_SIZE: u64 = 4096;

/// Flags rkvm implements. Read-only slots, dirty logging and guest_memfd
/// are refused until implemented (KVM_CHECK_EXTENSION says so too).
const VALID_FLAGS: u32 = 0;

// The flags KVM knows, for the documentation of what is refused.
const _: () =
    assert!(VALID_FLAGS & (KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD) == 0);

/// One slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) flags: u32,
    /// Guest-physical base, page aligned.
    pub(crate) gpa: u64,
    /// Size in bytes, page aligned, non-zero.
    pub(crate) size: u64,
    /// The VM owner's virtual address backing `gpa`, page aligned.
    pub(crate) uaddr: u64,
}

impl Slot {
    fn end(&self) -> u64 {
        self.gpa + self.size
    }

    fn overlaps(&self, other: &Slot) -> bool {
        self.gpa < other.end() && other.gpa < self.end()
    }
}

/// A `KVM_SET_USER_MEMORY_REGION(2)` request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub(crate) slot: u32,
    pub(crate) flags: u32,
    pub(crate) gpa: u64,
    pub(crate) size: u64,
    pub(crate) uaddr: u64,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotError {
    /// A malformed request: `EINVAL`.
    Invalid,
    /// The range overlaps another slot: `EEXIST`.
    Overlap,
}

/// What a valid request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Create(u16, Slot),
    Delete(u16),
    /// The slot keeps its memory and moves to a new guest-physical base.
    Move(u16, Slot),
    /// Only the flags change.
    Flags(u16, Slot),
    /// The request matches the slot as it is.
    Nothing,
}

/// The slots of one address space.
#[derive(Debug)]
pub(crate) struct SlotTable {
    slots: [Option<Slot>; NR_MEMSLOTS],
    total: u64,
}

impl SlotTable {
    pub(crate) const fn new() -> Self {
        Self {
            slots: [None; NR_MEMSLOTS],
            total: 0,
        }
    }

    /// Decides what `req` does, or why it is refused, without changing
    /// anything. `user_range_ok(addr, size)` says whether the range is in
    /// the caller's user address space (the kernel's `access_ok`).
    pub(crate) fn plan(
        &self,
        req: &Request,
        user_range_ok: impl Fn(u64, u64) -> bool,
    ) -> Result<Change, SlotError> {
        use SlotError::{Invalid, Overlap};
        if req.flags & !VALID_FLAGS != 0 {
            return Err(Invalid);
        }
        if req.size % PAGE_SIZE != 0 || req.gpa % PAGE_SIZE != 0 {
            return Err(Invalid);
        }
        if req.uaddr % PAGE_SIZE != 0 || !user_range_ok(req.uaddr, req.size) {
            return Err(Invalid);
        }
        // Bits 31:16 of the slot number are the address space: rkvm has one (no SMM).
        let as_id = req.slot >> 16;
        let id = (req.slot & 0xffff) as u16;
        if as_id != 0 || usize::from(id) >= NR_MEMSLOTS {
            return Err(Invalid);
        }
        if req.gpa.checked_add(req.size).is_none() {
            return Err(Invalid);
        }
        if req.size / PAGE_SIZE > MAX_SLOT_PAGES {
            return Err(Invalid);
        }

        let old = self.slots[usize::from(id)];
        if req.size == 0 {
            // Deleting a slot that does not exist is refused, as in KVM 7.3.
            return match old {
                Some(_) => Ok(Change::Delete(id)),
                None => Err(Invalid),
            };
        }
        let new = Slot {
            flags: req.flags,
            gpa: req.gpa,
            size: req.size,
            uaddr: req.uaddr,
        };
        let Some(old) = old else {
            if self.total + req.size > MAX_TOTAL_BYTES {
                return Err(Invalid);
            }
            if self.overlaps_other(id, &new) {
                return Err(Overlap);
            }
            return Ok(Change::Create(id, new));
        };
        // An existing slot keeps its memory and size; only its base and flags may change.
        if new.uaddr != old.uaddr
            || new.size != old.size
            || (new.flags ^ old.flags) & (KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD) != 0
        {
            return Err(Invalid);
        }
        if new.gpa != old.gpa {
            if self.overlaps_other(id, &new) {
                return Err(Overlap);
            }
            Ok(Change::Move(id, new))
        } else if new.flags != old.flags {
            Ok(Change::Flags(id, new))
        } else {
            Ok(Change::Nothing)
        }
    }

    fn overlaps_other(&self, id: u16, new: &Slot) -> bool {
        self.slots
            .iter()
            .enumerate()
            .any(|(i, s)| i != usize::from(id) && s.is_some_and(|s| s.overlaps(new)))
    }

    /// Applies a change that [`SlotTable::plan`] returned for this table.
    pub(crate) fn commit(&mut self, change: Change) {
        match change {
            Change::Create(id, slot) => {
                self.total += slot.size;
                self.slots[usize::from(id)] = Some(slot);
            }
            Change::Delete(id) => {
                if let Some(old) = self.slots[usize::from(id)].take() {
                    self.total -= old.size;
                }
            }
            Change::Move(id, slot) | Change::Flags(id, slot) => {
                self.slots[usize::from(id)] = Some(slot);
            }
            Change::Nothing => {}
        }
    }
}
