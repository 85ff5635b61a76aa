// SPDX-License-Identifier: GPL-2.0

//! Second-level address translation: the table the hardware walks to turn
//! a guest-physical address into a host-physical one (AMD's nested page
//! table, Intel's EPT). Both are radix trees of 512-entry 4 KiB tables
//! indexed by guest-physical address bits 47:39, 38:30, 29:21 and 20:12
//! (4 levels), with one more level above for bits 56:48 where the hardware
//! walks 5 levels (AMD's nested walk has as many levels as the host's own
//! paging: APM Vol. 2 15.25.3). They differ only in the bits of an entry,
//! which the vendor supplies as an [`EntryFormat`]. One walker serves both.
//!
//! A leaf grants one of three [`Access`]es. A *write-tracked* leaf is how
//! dirty logging (`crate::dirty`) catches the first write to a page: the
//! hardware sees it read-only, but it remembers (in a bit the hardware
//! ignores) that the page behind it was pinned for writing, so a write
//! fault can make it writable in place ([`SecondLevel::allow_write`]), and
//! collecting the log can take that back ([`SecondLevel::write_protect`]).
//!
//! The tree is owned in Rust: each table is a `KBox` the hardware reads,
//! and each node also keeps its children as boxes, so walking needs no
//! physical-to-virtual translation and dropping the tree frees it. Leaves
//! point at pinned guest pages; pinning and unpinning is the caller's
//! (`vm.rs`): [`Slat::unmap`] hands back every page it unmapped.
//!
//! Callers serialise all changes (the VM's lock). The hardware may walk
//! concurrently, so every entry is written with a single 64-bit volatile
//! store, and a table is linked in only once it is zeroed.

use crate::sys::mem::{kmalloc_phys, HostPhysAddr};
use core::marker::PhantomData;
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::prelude::*;

/// Entries per table.
const ENTRIES: usize = 512;

/// Page sizes a leaf can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageSize {
    /// 4 KiB, at level 1.
    Size4K,
    /// 2 MiB, at level 2.
    Size2M,
}

impl PageSize {
    pub(crate) const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
        }
    }

    const fn level(self) -> usize {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
        }
    }
}

/// What the guest may do through a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read and execute: a read-only slot's page.
    Read,
    /// Read, write and execute.
    Write,
    /// As [`Access::Read`] for the hardware, but the page may be written:
    /// a write faults and the fault handler makes the leaf writable
    /// (dirty logging's write-protection).
    WriteTracked,
}

impl Access {
    /// Whether the page behind the leaf is one the guest may write (pinned
    /// for writing), now or once its write fault is handled.
    pub(crate) fn may_write(self) -> bool {
        self != Access::Read
    }
}

/// The vendor's entry format.
pub(crate) trait EntryFormat {
    /// An entry pointing at the next-level table at `table`.
    fn table(table: HostPhysAddr) -> u64;
    /// A leaf mapping `page` (aligned to `size`) with `access`.
    fn leaf(page: HostPhysAddr, size: PageSize, access: Access) -> u64;
    /// Whether the entry maps anything (is not empty).
    fn is_present(entry: u64) -> bool;
    /// The physical address an entry points at.
    fn address(entry: u64) -> HostPhysAddr;
    /// Whether a present entry is writable by the hardware now.
    fn is_writable(entry: u64) -> bool;
    /// Whether a leaf, present or retired, was made with an [`Access`]
    /// that [`Access::may_write`].
    fn may_write(entry: u64) -> bool;
    /// A present leaf with its hardware write permission set (`true`) or
    /// cleared (`false`); only called on leaves that [`EntryFormat::may_write`].
    fn with_write(entry: u64, write: bool) -> u64;
    /// The entry made not present but remembered (address kept, marked
    /// with a software bit) until [`SecondLevel::release`].
    fn retired(entry: u64) -> u64;
    /// Whether an entry is one [`EntryFormat::retired`] made.
    fn is_retired(entry: u64) -> bool;
}

/// One table as the hardware sees it.
#[repr(C, align(4096))]
#[derive(Zeroable)]
struct Table([u64; ENTRIES]);

/// A table and, below level 1, its child tables.
struct Node {
    table: KBox<Table>,
    /// Child nodes by index; empty at level 1.
    children: KVec<Option<KBox<Node>>>,
}

impl Node {
    fn new(level: usize) -> Result<KBox<Node>> {
        let table = KBox::<Table>::zeroed(GFP_KERNEL_ACCOUNT)?;
        let mut children = KVec::new();
        if level > 1 {
            children.reserve(ENTRIES, GFP_KERNEL_ACCOUNT)?;
            for _ in 0..ENTRIES {
                children.push(None, GFP_KERNEL_ACCOUNT)?;
            }
        }
        Ok(KBox::new(Node { table, children }, GFP_KERNEL_ACCOUNT)?)
    }

    fn set(&mut self, index: usize, entry: u64) {
        crate::sys::mem::store_entry(&mut self.table.0[index], entry);
    }
}

/// Table index of `gpa` at `level` (4 = top).
fn index(gpa: u64, level: usize) -> usize {
    ((gpa >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// The highest guest-physical address bit the tree translates (48 bits).
pub(crate) const GPA_BITS: u32 = 48;

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapError {
    /// Something is mapped there already.
    Busy,
    /// Out of memory for a table.
    NoMemory,
    /// The address is beyond [`GPA_BITS`] or misaligned.
    BadAddress,
}

/// A VM's second-level page table, whatever its vendor format: what
/// common code holds (`KBox<dyn SecondLevel>`, made by the backend).
pub(crate) trait SecondLevel: Send {
    /// The physical address of the top table, for the VMCB or EPTP.
    fn root(&self) -> HostPhysAddr;

    /// Maps `gpa` to `page`, both aligned to `size`.
    fn map(
        &mut self,
        gpa: u64,
        page: HostPhysAddr,
        size: PageSize,
        access: Access,
    ) -> core::result::Result<(), MapError>;

    /// The leaf mapping `gpa`, if any: the page, its size, and whether the
    /// hardware may write through it now.
    fn lookup(&self, gpa: u64) -> Option<(HostPhysAddr, PageSize, bool)>;

    /// Makes the write-tracked leaf mapping `gpa` writable; `false` if no
    /// leaf maps it or its page may not be written. Needs no TLB flush:
    /// a translation is cached only as the walk found it, and the fault
    /// that led here dropped the read-only one (SDM Vol. 3C 29.4.3; APM
    /// Vol. 2 15.25.6).
    fn allow_write(&mut self, gpa: u64) -> bool;

    /// Write-protects the 4 KiB leaves in `[start, end)` that are writable
    /// and whose guest-physical address `select` picks; returns how many.
    /// The caller flushes the TLBs before relying on it.
    fn write_protect(&mut self, start: u64, end: u64, select: &mut dyn FnMut(u64) -> bool)
        -> usize;

    /// Unmaps every leaf in `[start, end)` and calls `unmapped` with the
    /// page and size of each: the hardware no longer finds them, but the
    /// TLBs may still hold them, so the pages stay owned until
    /// [`SecondLevel::release`]. A large leaf that straddles a bound is
    /// unmapped whole (large pages are only mapped inside one slot, and
    /// slots are unmapped whole).
    fn retire(&mut self, start: u64, end: u64, unmapped: &mut dyn FnMut(HostPhysAddr, PageSize));

    /// As [`SecondLevel::retire`], for the 2 MiB leaves only: a slot that
    /// starts logging dirty pages loses them, and its pages fault back in
    /// 4 KiB at a time.
    fn retire_large(
        &mut self,
        start: u64,
        end: u64,
        unmapped: &mut dyn FnMut(HostPhysAddr, PageSize),
    );

    /// Forgets the leaves [`SecondLevel::retire`] unmapped in `[start,
    /// end)`, calling `released` with each page: call it once no TLB can
    /// hold them. Tables stay allocated until the tree is dropped.
    /// `released` also learns whether the page may have been written
    /// ([`EntryFormat::may_write`]).
    fn release(
        &mut self,
        start: u64,
        end: u64,
        released: &mut dyn FnMut(HostPhysAddr, PageSize, bool),
    );
}

/// A second-level page table in the vendor's format `F`.
///
/// # Invariants
///
/// `levels` is 4 or 5, and `root` is a table of that level.
pub(crate) struct Slat<F: EntryFormat> {
    root: KBox<Node>,
    levels: usize,
    /// The hardware takes 2 MiB leaves.
    large_pages: bool,
    _format: PhantomData<F>,
}

impl<F: EntryFormat> Slat<F> {
    /// An empty tree of `levels` levels (4, or 5 where the hardware walks
    /// five): every guest access faults until mapped.
    /// `large_pages` says whether the hardware takes 2 MiB leaves (NPT
    /// always does; EPT says so in IA32_VMX_EPT_VPID_CAP).
    pub(crate) fn new(levels: usize, large_pages: bool) -> Result<Self> {
        if levels != 4 && levels != 5 {
            return Err(EINVAL);
        }
        // INVARIANT: `levels` is 4 or 5 and the root is made for it.
        Ok(Self {
            root: Node::new(levels)?,
            levels,
            large_pages,
            _format: PhantomData,
        })
    }

    /// Calls `visit` on every leaf entry slot in `[start, end)` with the
    /// guest-physical address it maps and its size; `visit` may rewrite
    /// the entry.
    fn for_each_leaf(
        node: &mut Node,
        level: usize,
        base: u64,
        start: u64,
        end: u64,
        visit: &mut dyn FnMut(&mut u64, u64, PageSize),
    ) {
        let span = 1u64 << (12 + 9 * (level - 1));
        for i in 0..ENTRIES {
            let lo = base + i as u64 * span;
            let hi = lo.saturating_add(span);
            if hi <= start || lo >= end {
                continue;
            }
            match node.children.get_mut(i).and_then(Option::as_deref_mut) {
                Some(child) => Self::for_each_leaf(child, level - 1, lo, start, end, visit),
                None => {
                    let mut entry = node.table.0[i];
                    let size = if level == 2 {
                        PageSize::Size2M
                    } else {
                        PageSize::Size4K
                    };
                    let old = entry;
                    visit(&mut entry, lo, size);
                    if entry != old {
                        node.set(i, entry);
                    }
                }
            }
        }
    }

    /// Retires the present leaves in `[start, end)` (the 2 MiB ones only
    /// if `large_only`), calling `unmapped` with each.
    fn retire_sizes(
        &mut self,
        start: u64,
        end: u64,
        large_only: bool,
        unmapped: &mut dyn FnMut(HostPhysAddr, PageSize),
    ) {
        Self::for_each_leaf(
            &mut self.root,
            self.levels,
            0,
            start,
            end,
            &mut |entry, _, size| {
                if F::is_present(*entry) && (!large_only || size == PageSize::Size2M) {
                    unmapped(F::address(*entry), size);
                    *entry = F::retired(*entry);
                }
            },
        );
    }
}

impl<F: EntryFormat + Send> SecondLevel for Slat<F> {
    fn root(&self) -> HostPhysAddr {
        kmalloc_phys(&*self.root.table)
    }

    fn map(
        &mut self,
        gpa: u64,
        page: HostPhysAddr,
        size: PageSize,
        access: Access,
    ) -> core::result::Result<(), MapError> {
        if gpa >> GPA_BITS != 0
            || gpa % size.bytes() != 0
            || page.0 % size.bytes() != 0
            || (size == PageSize::Size2M && !self.large_pages)
        {
            return Err(MapError::BadAddress);
        }
        let mut node = &mut *self.root;
        for level in (size.level() + 1..=self.levels).rev() {
            let i = index(gpa, level);
            if F::is_present(node.table.0[i]) && node.children[i].is_none() {
                // A large leaf covers this range already.
                return Err(MapError::Busy);
            }
            if node.children[i].is_none() {
                let child = Node::new(level - 1).map_err(|_| MapError::NoMemory)?;
                let pa = kmalloc_phys(&*child.table);
                node.children[i] = Some(child);
                node.set(i, F::table(pa));
            }
            node = match node.children[i].as_deref_mut() {
                Some(child) => child,
                None => return Err(MapError::NoMemory),
            };
        }
        let i = index(gpa, size.level());
        if F::is_present(node.table.0[i]) || node.children.get(i).is_some_and(Option::is_some) {
            return Err(MapError::Busy);
        }
        node.set(i, F::leaf(page, size, access));
        Ok(())
    }

    fn lookup(&self, gpa: u64) -> Option<(HostPhysAddr, PageSize, bool)> {
        let mut node = &*self.root;
        for level in (1..=self.levels).rev() {
            let i = index(gpa, level);
            let entry = node.table.0[i];
            if !F::is_present(entry) {
                return None;
            }
            match node.children.get(i).and_then(Option::as_deref) {
                Some(child) => node = child,
                None if level == 2 => {
                    return Some((F::address(entry), PageSize::Size2M, F::is_writable(entry)))
                }
                None if level == 1 => {
                    return Some((F::address(entry), PageSize::Size4K, F::is_writable(entry)))
                }
                None => return None,
            }
        }
        None
    }

    fn allow_write(&mut self, gpa: u64) -> bool {
        let mut node = &mut *self.root;
        for level in (1..=self.levels).rev() {
            let i = index(gpa, level);
            let entry = node.table.0[i];
            if !F::is_present(entry) {
                return false;
            }
            if node.children.get(i).is_some_and(Option::is_some) {
                node = match node.children[i].as_deref_mut() {
                    Some(child) => child,
                    None => return false,
                };
                continue;
            }
            // A leaf: 4 KiB at level 1, 2 MiB at level 2 (nothing larger is mapped).
            if level > 2 || !F::may_write(entry) {
                return false;
            }
            node.set(i, F::with_write(entry, true));
            return true;
        }
        false
    }

    fn write_protect(
        &mut self,
        start: u64,
        end: u64,
        select: &mut dyn FnMut(u64) -> bool,
    ) -> usize {
        let mut protected = 0;
        Self::for_each_leaf(
            &mut self.root,
            self.levels,
            0,
            start,
            end,
            &mut |entry, gpa, size| {
                // A logging slot has only 4 KiB leaves (vm.rs maps no others there).
                if size == PageSize::Size4K
                    && F::is_present(*entry)
                    && F::is_writable(*entry)
                    && select(gpa)
                {
                    *entry = F::with_write(*entry, false);
                    protected += 1;
                }
            },
        );
        protected
    }

    fn retire(&mut self, start: u64, end: u64, unmapped: &mut dyn FnMut(HostPhysAddr, PageSize)) {
        self.retire_sizes(start, end, false, unmapped);
    }

    fn retire_large(
        &mut self,
        start: u64,
        end: u64,
        unmapped: &mut dyn FnMut(HostPhysAddr, PageSize),
    ) {
        self.retire_sizes(start, end, true, unmapped);
    }

    fn release(
        &mut self,
        start: u64,
        end: u64,
        released: &mut dyn FnMut(HostPhysAddr, PageSize, bool),
    ) {
        Self::for_each_leaf(
            &mut self.root,
            self.levels,
            0,
            start,
            end,
            &mut |entry, _, size| {
                if F::is_retired(*entry) {
                    released(F::address(*entry), size, F::may_write(*entry));
                    *entry = 0;
                }
            },
        );
    }
}
