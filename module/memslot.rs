// SPDX-License-Identifier: GPL-2.0

//! Guest memory slots: which guest-physical ranges are backed by which
//! ranges of the VM owner's memory.
//!
//! The rules are KVM's (`kvm_set_memory_region` in `virt/kvm/kvm_main.c`),
//! checked in the same order so that the same bad request gets the same
//! errno. This is pure logic: the caller supplies the facts that need the
//! kernel (whether the user range is user memory, the host's physical
//! address width). The table lives on the heap and holds only the slots in
//! use, so a VM's state stays small. A slot that logs dirty pages
//! (`KVM_MEM_LOG_DIRTY_PAGES`) carries its bitmap ([`crate::dirty`]) here,
//! made and freed with the flag as KVM's `kvm_prepare_memory_region` does.
//! A slot made with `KVM_MEM_GUEST_MEMFD` also records its binding to a
//! range of a guest_memfd file ([`crate::gmem`]): bindings of one file
//! never overlap, and such a slot can only be deleted.

use crate::abi::{KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use crate::dirty::DirtyBitmap;
use kernel::alloc::{flags::GFP_KERNEL_ACCOUNT, AllocError, KVec};

/// Slots per VM, reported as `KVM_CAP_NR_MEMSLOTS`. KVM has 32764; a small
/// fixed table keeps lookups simple and is plenty for the clients we run.
pub(crate) const NR_MEMSLOTS: usize = 64;

/// The largest total of guest memory a VM may have across the slots of
/// one address space: 1 TiB. Slots are pinned when mapped (with the
/// `KVM_RUN` work), so the sum is bounded up front. Per address space, not
/// per VM: a VMM maps the same memory in both (QEMU maps all of RAM in the
/// SMM address space too), and each space's table pins its own mappings.
pub(crate) const MAX_TOTAL_BYTES: u64 = 1 << 40;

/// KVM's per-slot limit: the page count must fit a dirty bitmap indexed by
/// a 32-bit int (`KVM_MEM_MAX_NR_PAGES`).
const MAX_SLOT_PAGES: u64 = (1 << 31) - 1;

const PAGE_SIZE: u64 = 4096;

/// The flags `KVM_SET_USER_MEMORY_REGION` (the first version) accepts;
/// guest_memfd needs the second, whose struct names the file.
pub(crate) const V1_FLAGS: u32 = KVM_MEM_READONLY | KVM_MEM_LOG_DIRTY_PAGES;

/// The flags a request may carry, KVM's `check_memory_region_flags`: a
/// guest_memfd slot can neither log dirty pages (KVM does not log private
/// memory) nor be read-only (a write to a read-only slot is emulated MMIO,
/// which private memory never is).
fn valid_flags(flags: u32) -> u32 {
    if flags & KVM_MEM_GUEST_MEMFD != 0 {
        KVM_MEM_GUEST_MEMFD
    } else {
        V1_FLAGS
    }
}

/// One slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The slot number (bits 15:0 of `kvm_userspace_memory_region::slot`).
    pub(crate) id: u16,
    pub(crate) flags: u32,
    /// Guest-physical base, page aligned.
    pub(crate) gpa: u64,
    /// Size in bytes, page aligned, non-zero.
    pub(crate) size: u64,
    /// The VM owner's virtual address backing `gpa`, page aligned.
    pub(crate) uaddr: u64,
    /// The guest_memfd range the slot is bound to, while its file is open
    /// (only with `KVM_MEM_GUEST_MEMFD`).
    pub(crate) gmem: Option<Binding>,
}

/// A slot's binding to a guest_memfd file: the slot's pages are pages
/// `first..first + pages` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    /// The file's id ([`GmemFile::id`]).
    pub(crate) file: u64,
    /// The page index in the file of the slot's first page.
    pub(crate) first: u64,
}

/// What a request's guest_memfd fd names, as the caller found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GmemFile {
    /// The file's id, unique among this module's guest_memfd files.
    pub(crate) id: u64,
    /// The file's size in bytes.
    pub(crate) size: u64,
}

impl Slot {
    pub(crate) fn end(&self) -> u64 {
        self.gpa + self.size
    }

    /// Whether the guest may only read the slot (`KVM_MEM_READONLY`).
    pub(crate) fn is_readonly(&self) -> bool {
        self.flags & KVM_MEM_READONLY != 0
    }

    /// Whether the slot logs the pages the guest writes
    /// (`KVM_MEM_LOG_DIRTY_PAGES`).
    pub(crate) fn logs_dirty(&self) -> bool {
        self.flags & KVM_MEM_LOG_DIRTY_PAGES != 0
    }

    /// The number of pages.
    pub(crate) fn pages(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    fn overlaps(&self, other: &Slot) -> bool {
        self.gpa < other.end() && other.gpa < self.end()
    }

    /// Whether the slot is bound to pages of file `file` that overlap
    /// `first..first + pages`.
    fn binds(&self, file: u64, first: u64, pages: u64) -> bool {
        self.gmem.is_some_and(|b| {
            b.file == file && b.first < first + pages && first < b.first + self.pages()
        })
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
    /// The guest_memfd fd and the offset in it (`region2` with
    /// `KVM_MEM_GUEST_MEMFD` only).
    pub(crate) gmem_fd: u32,
    pub(crate) gmem_offset: u64,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotError {
    /// A malformed request: `EINVAL`.
    Invalid,
    /// The range overlaps another slot: `EEXIST`.
    Overlap,
    /// No memory for the table: `ENOMEM`.
    NoMemory,
    /// The guest_memfd fd is not an open file: `EBADF`.
    BadFile,
}

impl From<AllocError> for SlotError {
    fn from(_: AllocError) -> Self {
        SlotError::NoMemory
    }
}

/// What a valid request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Create(Slot),
    Delete(u16),
    /// The slot keeps its memory and moves to a new guest-physical base.
    Move(Slot),
    /// Only the flags change.
    Flags(Slot),
    /// The request matches the slot as it is.
    Nothing,
}

/// The slots of one address space.
///
/// # Invariants
///
/// At most one slot per id, ids below [`NR_MEMSLOTS`], no two slots
/// overlapping, and `total` is the sum of their sizes. `dirty` has a bitmap
/// for each slot that logs dirty pages and for no other, sized for it.
pub(crate) struct SlotTable {
    slots: KVec<Slot>,
    total: u64,
    dirty: KVec<(u16, DirtyBitmap)>,
}

impl SlotTable {
    pub(crate) const fn new() -> Self {
        Self {
            slots: KVec::new(),
            total: 0,
            dirty: KVec::new(),
        }
    }

    /// Whether a slot of this table binds pages of guest_memfd file `file`
    /// that overlap `first..first + pages` (a binding in another address
    /// space's table conflicts too: a file's page backs one slot).
    pub(crate) fn binds_any(&self, file: u64, first: u64, pages: u64) -> bool {
        self.slots.iter().any(|s| s.binds(file, first, pages))
    }

    /// The slot with id `id`, if it exists.
    pub(crate) fn get(&self, id: u16) -> Option<&Slot> {
        self.slots.iter().find(|s| s.id == id)
    }

    /// Decides what `req` does, or why it is refused, without changing
    /// anything. `user_range_ok(addr, size)` says whether the range is in
    /// the caller's user address space (the kernel's `access_ok`);
    /// `phys_bits` is the host's physical address width, which bounds guest
    /// physical addresses as KVM's x86 `kvm_arch_prepare_memory_region`
    /// does; `gmem_file(fd)` says what a new guest_memfd slot's fd names (a
    /// guest_memfd of this VM, or `Invalid`, or `BadFile`), asked only once
    /// every earlier check passed, as KVM's `kvm_gmem_bind` comes last.
    pub(crate) fn plan(
        &self,
        req: &Request,
        user_range_ok: impl Fn(u64, u64) -> bool,
        phys_bits: u8,
        gmem_file: impl FnOnce(u32) -> Result<GmemFile, SlotError>,
    ) -> Result<Change, SlotError> {
        use SlotError::{Invalid, Overlap};
        let gmem = req.flags & KVM_MEM_GUEST_MEMFD != 0;
        if req.flags & !valid_flags(req.flags) != 0 {
            return Err(Invalid);
        }
        if req.size % PAGE_SIZE != 0 || req.gpa % PAGE_SIZE != 0 {
            return Err(Invalid);
        }
        if req.uaddr % PAGE_SIZE != 0 || !user_range_ok(req.uaddr, req.size) {
            return Err(Invalid);
        }
        if gmem
            && (req.gmem_offset % PAGE_SIZE != 0 || req.gmem_offset.checked_add(req.size).is_none())
        {
            return Err(Invalid);
        }
        let (_, id) = slot_id(req.slot).ok_or(Invalid)?;
        if req.gpa.checked_add(req.size).is_none() {
            return Err(Invalid);
        }
        if req.size / PAGE_SIZE > MAX_SLOT_PAGES {
            return Err(Invalid);
        }

        let old = self.get(id).copied();
        if req.size == 0 {
            // Deleting a slot that does not exist is refused, as in KVM 7.3.
            return match old {
                Some(_) => Ok(Change::Delete(id)),
                None => Err(Invalid),
            };
        }
        let mut new = Slot {
            id,
            flags: req.flags,
            gpa: req.gpa,
            size: req.size,
            uaddr: req.uaddr,
            gmem: None,
        };
        let Some(old) = old else {
            if self.total + req.size > MAX_TOTAL_BYTES {
                return Err(Invalid);
            }
            if self.overlaps_other(id, &new) {
                return Err(Overlap);
            }
            let file = if gmem {
                let file = gmem_file(req.gmem_fd)?;
                // `checked_add` above: the sum does not wrap.
                if req.gmem_offset + req.size > file.size {
                    return Err(Invalid);
                }
                Some(file)
            } else {
                None
            };
            if !fits(&new, phys_bits) {
                return Err(Invalid);
            }
            if let Some(file) = file {
                let first = req.gmem_offset / PAGE_SIZE;
                if self
                    .slots
                    .iter()
                    .any(|s| s.binds(file.id, first, new.pages()))
                {
                    return Err(Overlap);
                }
                new.gmem = Some(Binding {
                    file: file.id,
                    first,
                });
            }
            return Ok(Change::Create(new));
        };
        // guest_memfd slots are immutable: a request naming guest_memfd may
        // only create one, and the flag cannot go from one (below).
        if gmem {
            return Err(Invalid);
        }
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
            if !fits(&new, phys_bits) {
                return Err(Invalid);
            }
            Ok(Change::Move(new))
        } else if new.flags != old.flags {
            Ok(Change::Flags(new))
        } else {
            Ok(Change::Nothing)
        }
    }

    fn overlaps_other(&self, id: u16, new: &Slot) -> bool {
        self.slots.iter().any(|s| s.id != id && s.overlaps(new))
    }

    /// Drops every binding to guest_memfd file `file`, which is being
    /// closed; its slots stay, and can only be deleted.
    pub(crate) fn unbind_gmem(&mut self, file: u64) {
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.gmem.is_some_and(|b| b.file == file))
        {
            slot.gmem = None;
        }
    }

    /// The slot holding guest-physical address `gpa`, if any.
    pub(crate) fn find(&self, gpa: u64) -> Option<&Slot> {
        self.slots.iter().find(|s| s.gpa <= gpa && gpa < s.end())
    }

    /// The dirty bitmap of slot `id`, if it logs dirty pages.
    pub(crate) fn dirty_log(&mut self, id: u16) -> Option<&mut DirtyBitmap> {
        self.dirty
            .iter_mut()
            .find(|(slot, _)| *slot == id)
            .map(|(_, bitmap)| bitmap)
    }

    /// Marks the page at `gpa` dirty if a logging slot holds it; the slot
    /// and whether the page's bit was already set, if so.
    pub(crate) fn mark_dirty(&mut self, gpa: u64) -> Option<(Slot, bool)> {
        let slot = *self.find(gpa)?;
        let bitmap = self.dirty_log(slot.id)?;
        let page = (gpa - slot.gpa) / PAGE_SIZE;
        let was = bitmap.is_dirty(page);
        bitmap.mark(page);
        Some((slot, was))
    }

    /// Whether the page at `gpa` is in a logging slot and dirty.
    pub(crate) fn is_dirty(&mut self, gpa: u64) -> bool {
        let Some(slot) = self.find(gpa).copied() else {
            return false;
        };
        self.dirty_log(slot.id)
            .is_some_and(|b| b.is_dirty((gpa - slot.gpa) / PAGE_SIZE))
    }

    /// Applies a change that [`SlotTable::plan`] returned for this table.
    /// A slot that starts logging dirty pages gets a bitmap, every page
    /// dirty if `all_dirty` (`KVM_DIRTY_LOG_INITIALLY_SET`); one that stops
    /// loses it; a slot that moves keeps its own. Only allocation can fail,
    /// and then nothing changed.
    pub(crate) fn commit(&mut self, change: Change, all_dirty: bool) -> Result<(), SlotError> {
        match change {
            Change::Create(slot) => {
                self.slots.reserve(1, GFP_KERNEL_ACCOUNT)?;
                if slot.logs_dirty() {
                    let bitmap = DirtyBitmap::new(slot.pages(), all_dirty)?;
                    self.dirty.push((slot.id, bitmap), GFP_KERNEL_ACCOUNT)?;
                }
                // INVARIANT: `plan` checked the id is free and the range overlaps nothing;
                // the bitmap, if any, is in place; room was reserved, so this cannot fail.
                self.slots.push(slot, GFP_KERNEL_ACCOUNT)?;
                self.total += slot.size;
            }
            Change::Delete(id) => {
                if let Some(i) = self.slots.iter().position(|s| s.id == id) {
                    let old = self.slots.remove(i).map_err(|_| SlotError::Invalid)?;
                    self.total -= old.size;
                }
                self.dirty.retain(|(slot, _)| *slot != id);
            }
            Change::Move(slot) | Change::Flags(slot) => {
                let had_log = self.dirty.iter().any(|(id, _)| *id == slot.id);
                if slot.logs_dirty() && !had_log {
                    let bitmap = DirtyBitmap::new(slot.pages(), all_dirty)?;
                    self.dirty.push((slot.id, bitmap), GFP_KERNEL_ACCOUNT)?;
                } else if !slot.logs_dirty() {
                    self.dirty.retain(|(id, _)| *id != slot.id);
                }
                if let Some(s) = self.slots.iter_mut().find(|s| s.id == slot.id) {
                    *s = slot;
                }
            }
            Change::Nothing => {}
        }
        Ok(())
    }
}

/// KVM's address spaces on x86 (`KVM_CAP_MULTI_ADDRESS_SPACE`): the
/// memory a vCPU sees outside system management mode, and in it (SMRAM and
/// whatever else the VMM maps there; x86/smm.rs). Each has its own slots
/// and its own second-level table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Normal = 0,
    Smm = 1,
}

/// How many address spaces a VM has.
pub(crate) const NR_ADDRESS_SPACES: usize = 2;

impl Space {
    /// The address space of a vCPU in SMM (`smm`) or not, as KVM's
    /// `kvm_arch_vcpu_memslots_id`.
    pub(crate) fn of_vcpu(smm: bool) -> Self {
        if smm {
            Space::Smm
        } else {
            Space::Normal
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The address space and slot id a slot number names, if rkvm has them:
/// bits 31:16 are the address space (0 or 1), bits 15:0 the id, below
/// [`NR_MEMSLOTS`]. KVM's `as_id`/`id` split, for the memory-region and
/// dirty-log ioctls alike (`None` is their `EINVAL`).
pub(crate) fn slot_id(slot: u32) -> Option<(Space, u16)> {
    let id = (slot & 0xffff) as u16;
    let space = match slot >> 16 {
        0 => Space::Normal,
        1 => Space::Smm,
        _ => return None,
    };
    (usize::from(id) < NR_MEMSLOTS).then_some((space, id))
}

/// Whether the slot's last guest frame is below the physical address width
/// (KVM: `base_gfn + npages > kvm_mmu_max_gfn() + 1` is `EINVAL`).
fn fits(slot: &Slot, phys_bits: u8) -> bool {
    phys_bits >= 64 || slot.gpa + slot.size <= 1u64 << phys_bits
}
