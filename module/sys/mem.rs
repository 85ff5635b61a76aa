// SPDX-License-Identifier: GPL-2.0

//! Memory helpers: physical addresses of pages and user-address checks.

use kernel::page::Page;
use kernel::prelude::*;

// Pointers to kernel structs are passed through unchanged; the structs' own layout is
// the C side's business (bindgen marks some of their fields as not FFI-safe).
#[allow(improper_ctypes)]
extern "C" {
    fn rkvm_page_to_phys(page: *mut kernel::bindings::page) -> u64;
    fn rkvm_access_ok(addr: usize, size: usize) -> bool;
    fn rkvm_current_mm_grab() -> *mut kernel::bindings::mm_struct;
    fn rkvm_current_mm_is(mm: *const kernel::bindings::mm_struct) -> bool;
    fn rkvm_mmdrop(mm: *mut kernel::bindings::mm_struct);
    fn rkvm_virt_to_phys(addr: *const core::ffi::c_void) -> u64;
    fn rkvm_pin_user_page(
        uaddr: usize,
        write: bool,
        page: *mut *mut kernel::bindings::page,
    ) -> core::ffi::c_long;
    fn rkvm_unpin_phys(pa: u64, nr: usize, dirty: bool);
    fn rkvm_account_locked(
        mm: *mut kernel::bindings::mm_struct,
        pages: usize,
        inc: bool,
    ) -> core::ffi::c_int;
    fn rkvm_mmgrab(mm: *mut kernel::bindings::mm_struct);
    fn rkvm_page_address(page: *mut kernel::bindings::page) -> *mut core::ffi::c_void;
    fn rkvm_phys_in_pmd_folio(pa: u64) -> bool;
    fn rkvm_pin_user_contiguous(
        uaddr: usize,
        nr: usize,
        write: bool,
        first: *mut u64,
    ) -> core::ffi::c_long;
}

/// A host physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostPhysAddr(pub(crate) u64);

/// Returns the physical address of `page`.
pub(crate) fn page_phys(page: &Page) -> HostPhysAddr {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for as long as `page` lives, and
    // `page_to_phys` only computes an address from it.
    HostPhysAddr(unsafe { rkvm_page_to_phys(page.as_ptr()) })
}

/// Returns the physical address of a kernel object allocated with
/// `kmalloc` (`KBox`, `KVec`): those live in the kernel's direct map.
pub(crate) fn kmalloc_phys<T>(object: &T) -> HostPhysAddr {
    let ptr: *const T = object;
    // SAFETY: `virt_to_phys` only computes an address. `KBox`/`KVec` memory comes from
    // kmalloc, which is in the direct map, so the result is the object's physical address.
    HostPhysAddr(unsafe { rkvm_virt_to_phys(ptr.cast()) })
}

/// Pins the page of the calling process's memory at `uaddr` (page aligned)
/// for long-term use by the hardware (`pin_user_pages_fast` with
/// `FOLL_LONGTERM`, and `FOLL_WRITE` if `write`), faulting it in if needed,
/// and returns its physical address. Every success must be paired with one
/// [`unpin_page`].
pub(crate) fn pin_user_page(uaddr: u64, write: bool) -> Result<HostPhysAddr> {
    let uaddr = usize::try_from(uaddr).map_err(|_| EFAULT)?;
    let mut page: *mut kernel::bindings::page = core::ptr::null_mut();
    // SAFETY: Pins at most one page of the current process's memory and writes its `struct
    // page` pointer to `page`, a valid local.
    let n = unsafe { rkvm_pin_user_page(uaddr, write, &mut page) };
    match n {
        1 if !page.is_null() => {
            // SAFETY: `page` is a pinned, valid `struct page`.
            Ok(HostPhysAddr(unsafe { rkvm_page_to_phys(page) }))
        }
        n if n < 0 => Err(Error::from_errno(n as i32)),
        _ => Err(EFAULT),
    }
}

/// Whether the page of the current process's memory at `uaddr` belongs to
/// a folio big enough to be mapped by one 2 MiB entry (a transparent huge
/// page): worth trying [`pin_user_contiguous`] for its 2 MiB. The page is
/// pinned only while it is looked at (its folio is stable then) and is not
/// counted against `RLIMIT_MEMLOCK`.
pub(crate) fn user_page_in_huge_folio(uaddr: u64, write: bool) -> Result<bool> {
    let pa = pin_user_page(uaddr, write)?;
    // SAFETY: The page is pinned, so its `struct page` and folio are stable.
    let huge = unsafe { rkvm_phys_in_pmd_folio(pa.0) };
    // SAFETY: We pinned this page above and release it once; nothing else learnt its address.
    unsafe { rkvm_unpin_phys(pa.0, 1, false) };
    Ok(huge)
}

/// Stores a 64-bit second-level page-table entry that the CPU's page
/// walker may read at any time: one volatile store, which the compiler
/// neither tears nor elides.
pub(crate) fn store_entry(slot: &mut u64, entry: u64) {
    let slot: *mut u64 = slot;
    // SAFETY: `slot` comes from a reference: valid, aligned and ours to write.
    unsafe { slot.write_volatile(entry) };
}

/// Pins the `nr` pages at `uaddr` if they are physically contiguous, and
/// returns the first one's address; `EAGAIN` (nothing pinned) if they are
/// not. Each page is one pin, released by [`unpin_page`].
pub(crate) fn pin_user_contiguous(uaddr: u64, nr: usize, write: bool) -> Result<HostPhysAddr> {
    let uaddr = usize::try_from(uaddr).map_err(|_| EFAULT)?;
    let mut first = 0u64;
    // SAFETY: Pins pages of the current process and writes one address to a valid local.
    let r = unsafe { rkvm_pin_user_contiguous(uaddr, nr, write, &mut first) };
    if r == 0 {
        Ok(HostPhysAddr(first))
    } else {
        Err(Error::from_errno(r as i32))
    }
}

/// Releases the pins of `nr` physically contiguous pages from `pa`, taken
/// by [`pin_user_page`] or [`pin_user_contiguous`], marking them dirty
/// first if `dirty` (the guest may have written them).
///
/// # Safety
///
/// Each page was pinned by us and is released exactly once, after the
/// hardware can no longer reach it.
pub(crate) unsafe fn unpin_pages(pa: HostPhysAddr, nr: usize, dirty: bool) {
    // SAFETY: By the caller's guarantee these are pages we pinned and still hold.
    unsafe { rkvm_unpin_phys(pa.0, nr, dirty) };
}

/// Whether `[addr, addr + size)` lies in the user part of the address space,
/// as the kernel's `access_ok()` decides (no wrap-around, below the top of
/// user space). It says nothing about what is mapped there.
pub(crate) fn user_range_ok(addr: u64, size: u64) -> bool {
    let (Ok(addr), Ok(size)) = (usize::try_from(addr), usize::try_from(size)) else {
        return false;
    };
    // SAFETY: `access_ok` only compares the numbers against the user address limit; it does
    // not dereference anything.
    unsafe { rkvm_access_ok(addr, size) }
}

/// A counted reference to the calling process's address space (`mmgrab`),
/// kept by a VM: its guest memory lives there.
///
/// The kernel's `kernel::mm::Mm` would be the natural type, but on this
/// kernel (with `RUST_DEBUG_ASSERTIONS`) taking `current!().mm()` and an
/// `ARef<Mm>` from it panicked in `KVM_CREATE_VM` with a misaligned-pointer
/// check: Rust reads `task_struct::mm` 48 bytes early, because bindgen
/// drops the alignment of the empty `sched_statistics` of a kernel without
/// `CONFIG_SCHEDSTATS` (docs/architecture.md, "a bindgen layout bug"). So
/// `current->mm` is read in C, and the pointer is only ever handled raw
/// here, never as a reference.
///
/// # Invariants
///
/// `mm` is non-null and holds one `mmgrab` reference, dropped in `Drop`.
pub(crate) struct OwnerMm {
    mm: core::ptr::NonNull<kernel::bindings::mm_struct>,
}

// SAFETY: The reference may be dropped from any thread; the pointer is only compared.
unsafe impl Send for OwnerMm {}
// SAFETY: `&OwnerMm` only allows comparing the pointer.
unsafe impl Sync for OwnerMm {}

impl OwnerMm {
    /// The caller's address space, or `None` for a kernel thread.
    pub(crate) fn of_current() -> Option<Self> {
        // SAFETY: Reading `current->mm` and taking a reference on it is always allowed.
        let mm = unsafe { rkvm_current_mm_grab() };
        // INVARIANT: Non-null, and `rkvm_current_mm_grab` took a reference.
        core::ptr::NonNull::new(mm).map(|mm| Self { mm })
    }

    /// Another counted reference to the same address space.
    pub(crate) fn try_clone(&self) -> Self {
        // SAFETY: We hold a reference, so the mm is alive; `mmgrab` takes one more.
        unsafe { rkvm_mmgrab(self.mm.as_ptr()) };
        // INVARIANT: Non-null, and one more reference was taken for the new value.
        Self { mm: self.mm }
    }

    /// Counts `pages` more (or, with `inc` false, fewer) pinned pages
    /// against this address space's locked-memory limit
    /// (`account_locked_vm`): `ENOMEM` past `RLIMIT_MEMLOCK` without
    /// `CAP_IPC_LOCK`.
    pub(crate) fn account_pinned(&self, pages: usize, inc: bool) -> Result {
        // SAFETY: We hold a reference to the mm; the call takes its mmap lock itself.
        let r = unsafe { rkvm_account_locked(self.mm.as_ptr(), pages, inc) };
        if r == 0 {
            Ok(())
        } else {
            Err(Error::from_errno(r))
        }
    }

    /// Whether the calling task runs in this address space.
    pub(crate) fn is_current(&self) -> bool {
        // SAFETY: Only compares `current->mm` with our pointer.
        unsafe { rkvm_current_mm_is(self.mm.as_ptr()) }
    }
}

impl Drop for OwnerMm {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold one `mmgrab` reference.
        unsafe { rkvm_mmdrop(self.mm.as_ptr()) };
    }
}

/// A page the kernel shares with user space (the vCPU's `kvm_run` and
/// port-I/O pages, mapped by the process). User space may write it at any
/// moment, so values are only ever copied in and out byte by byte with
/// volatile accesses, never borrowed, and every value read is as untrusted
/// as any other user input.
pub(crate) struct SharedPage<'a>(pub(crate) &'a Page);

impl SharedPage<'_> {
    /// The kernel address of byte `offset` of the page, for `len` bytes;
    /// `EINVAL` past the end.
    fn at(&self, offset: usize, len: usize) -> Result<*mut u8> {
        match offset.checked_add(len) {
            Some(end) if end <= kernel::page::PAGE_SIZE => {
                // SAFETY: The page is allocated (we hold it); on x86_64 every page is in the
                // direct map, so `page_address` is its permanent kernel address.
                let base = unsafe { rkvm_page_address(self.0.as_ptr()) };
                Ok(base.cast::<u8>().wrapping_add(offset))
            }
            _ => Err(EINVAL),
        }
    }

    /// Copies bytes out of the page at byte `offset` into `buf`.
    pub(crate) fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result {
        let src = self.at(offset, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `at` checked the bytes are inside the page, which lives as long as
            // `self`; volatile, because user space may write them concurrently.
            *b = unsafe { src.wrapping_add(i).read_volatile() };
        }
        Ok(())
    }

    /// Copies `bytes` into the page at byte `offset`.
    pub(crate) fn write_bytes(&self, offset: usize, bytes: &[u8]) -> Result {
        let dst = self.at(offset, bytes.len())?;
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: As in `read_bytes`.
            unsafe { dst.wrapping_add(i).write_volatile(*b) };
        }
        Ok(())
    }

    /// Copies a `T` out of the page at byte `offset`.
    pub(crate) fn read<T: kernel::transmute::FromBytes>(&self, offset: usize) -> Result<T> {
        let mut value = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: `value` is valid for writing `size_of::<T>()` bytes, viewed as bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(
                value.as_mut_ptr().cast::<u8>(),
                core::mem::size_of::<T>(),
            )
        };
        bytes.fill(0);
        self.read_bytes(offset, bytes)?;
        // SAFETY: Every byte was written above, and any bytes are a valid `T` (`FromBytes`).
        Ok(unsafe { value.assume_init() })
    }

    /// Copies `value` into the page at byte `offset`.
    pub(crate) fn write<T: kernel::transmute::AsBytes>(&self, offset: usize, value: &T) -> Result {
        self.write_bytes(offset, value.as_bytes())
    }
}
