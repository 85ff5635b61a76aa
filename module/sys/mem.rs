// SPDX-License-Identifier: GPL-2.0

//! Memory helpers: physical addresses of pages and user-address checks.

use kernel::page::Page;

// Pointers to kernel structs are passed through unchanged; the structs' own layout is
// the C side's business (bindgen marks some of their fields as not FFI-safe).
#[allow(improper_ctypes)]
extern "C" {
    fn rkvm_page_to_phys(page: *mut kernel::bindings::page) -> u64;
    fn rkvm_access_ok(addr: usize, size: usize) -> bool;
    fn rkvm_current_mm_grab() -> *mut kernel::bindings::mm_struct;
    fn rkvm_current_mm_is(mm: *const kernel::bindings::mm_struct) -> bool;
    fn rkvm_mmdrop(mm: *mut kernel::bindings::mm_struct);
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
/// check (64-byte alignment) that we have not explained yet; until we
/// have, the pointer is only ever handled raw here, never as a reference.
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
