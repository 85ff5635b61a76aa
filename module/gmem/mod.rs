// SPDX-License-Identifier: GPL-2.0

//! guest_memfd: guest memory that belongs to a file of the VM rather than
//! to the VMM's address space (`KVM_CREATE_GUEST_MEMFD`; KVM's
//! `virt/kvm/guest_memfd.c`).
//!
//! KVM made guest_memfd for confidential guests: memory the host's user
//! space cannot map, given to a slot as its private half. A VM of the
//! default type has no private memory, so its guest reaches a guest_memfd
//! slot through the slot's `userspace_addr` like any other; the file's own
//! pages reach the guest only when the file was made mappable
//! (`GUEST_MEMFD_FLAG_MMAP`). rkvm implements the file and the binding
//! rules, and offers no flags (`KVM_CAP_GUEST_MEMFD_FLAGS` is 0): its
//! files cannot be mapped, by user space or into the guest, as KVM's
//! files made without `GUEST_MEMFD_FLAG_MMAP`.
//!
//! The file: a regular file of a fixed size (set at creation, `fstat`
//! shows it), on its own anonymous inode, without `read`, `write` or
//! `mmap`. `fallocate` with `FALLOC_FL_KEEP_SIZE` allocates pages (zeroed,
//! in the inode's page cache, never evicted) and with
//! `FALLOC_FL_PUNCH_HOLE` frees them. A slot binds a page-aligned range of
//! one file ([`crate::memslot::Binding`]); bindings of one file never
//! overlap, and closing the file drops them (the slots stay).
//!
//! [`rules`] is the pure part, the rules and their errors in KVM's order
//! (host-tested); [`file`] is the kernel side.

pub(crate) mod file;
pub(crate) mod rules;
