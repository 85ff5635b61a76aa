// SPDX-License-Identifier: GPL-2.0

//! guest_memfd files: `KVM_CREATE_GUEST_MEMFD` and the file's operations,
//! the kernel side of [`super::rules`].
//!
//! A file holds its VM (as KVM's `gmem_file` holds a reference to the
//! `kvm`); the VM does not hold its files. The VM's slot table records each
//! binding by the file's id ([`crate::memslot::Binding`]), and the file's
//! release drops them, so neither side keeps the other alive in a cycle.

use super::rules::{self, Fallocate, GmemError};
use crate::abi::kvm_create_guest_memfd;
use crate::memslot::{GmemFile, SlotError};
use crate::sys::cpu;
use crate::sys::file::{new_sized_anon_fd, FileObject, FileOps, Held, PageCache};
use crate::user;
use crate::vm::Vm;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};

/// One guest_memfd file.
pub(crate) struct GuestMemfd {
    vm: Arc<Vm>,
    /// Unique among this module's guest_memfd files while it is loaded.
    id: u64,
    /// The size in bytes, fixed at creation.
    size: u64,
}

static GMEM_FOPS: FileOps<GuestMemfd> = FileOps::new();

/// The next file's id (64 bits: never reused while the module is loaded).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn errno(e: GmemError) -> Error {
    match e {
        GmemError::Invalid => EINVAL,
        GmemError::NotSupported => EOPNOTSUPP,
    }
}

impl GuestMemfd {
    /// `KVM_CREATE_GUEST_MEMFD` on `vm`'s fd: a new file, its fd returned.
    /// Its `reserved` words are not checked, as KVM does not.
    pub(crate) fn create(vm: ArcBorrow<'_, Vm>, arg: usize) -> Result<isize> {
        let args: kvm_create_guest_memfd = user::read(arg)?;
        rules::check_create(args.size, args.flags).map_err(errno)?;
        let file = Arc::new(
            GuestMemfd {
                vm: vm.into(),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                size: args.size,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        let fd = new_sized_anon_fd(c"[rkvm-gmem]", &GMEM_FOPS, file, args.size)?;
        Ok(fd as isize)
    }

    /// What fd `fd` of a memory-slot request names for `vm`: a guest_memfd
    /// of `vm` (its id and size, and the held file, which must stay held
    /// until the binding is in the slot table), or `Invalid` for any other
    /// file, or `BadFile` for no file (`kvm_gmem_prepare_memory_region`).
    pub(crate) fn lookup(vm: &Vm, fd: u32) -> Result<(GmemFile, Held<GuestMemfd>), SlotError> {
        let held = match Held::lookup(fd, &GMEM_FOPS) {
            Ok(Some(held)) => held,
            Ok(None) => return Err(SlotError::Invalid),
            Err(_) => return Err(SlotError::BadFile),
        };
        let file = held.object();
        if !core::ptr::eq(&*file.vm, vm) {
            return Err(SlotError::Invalid);
        }
        let found = GmemFile {
            id: file.id,
            size: file.size,
        };
        Ok((found, held))
    }
}

impl FileObject for GuestMemfd {
    /// A guest_memfd has no ioctls (KVM's file has no `unlocked_ioctl`).
    fn ioctl(_this: ArcBorrow<'_, Self>, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }

    const SIZED: bool = true;

    /// Allocates or frees pages (`kvm_gmem_fallocate`). An allocation
    /// stops with `EINTR` at a pending signal, keeping the pages it made,
    /// and lets other tasks run between pages, as KVM's.
    fn fallocate(&self, pages: &PageCache<'_>, mode: u32, offset: i64, len: i64) -> Result {
        match rules::fallocate(mode, offset, len, self.size).map_err(errno)? {
            Fallocate::Allocate { first, end } => {
                for index in first..end {
                    if cpu::signal_pending() {
                        return Err(EINTR);
                    }
                    pages.allocate(index)?;
                    cpu::cond_resched();
                }
            }
            Fallocate::Punch { start, end } => pages.punch(start, end),
        }
        Ok(())
    }

    /// The slots bound to the file lose their binding
    /// (`kvm_gmem_release`); they stay, and can only be deleted.
    fn release(&self) {
        self.vm.gmem_closed(self.id);
    }
}
