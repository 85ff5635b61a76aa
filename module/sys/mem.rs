// SPDX-License-Identifier: GPL-2.0

//! Memory helpers: physical addresses of pages and user-address checks.

use kernel::page::Page;

// Pointers to kernel structs are passed through unchanged; the structs' own layout is
// the C side's business (bindgen marks some of their fields as not FFI-safe).
#[allow(improper_ctypes)]
extern "C" {
    fn rkvm_page_to_phys(page: *mut kernel::bindings::page) -> u64;
    fn rkvm_access_ok(addr: usize, size: usize) -> bool;
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
