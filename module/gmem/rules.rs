// SPDX-License-Identifier: GPL-2.0

//! guest_memfd's rules: `KVM_CREATE_GUEST_MEMFD`'s arguments and
//! `fallocate`'s, as KVM checks them (`virt/kvm/guest_memfd.c`).

/// The page size of guest_memfd offsets and sizes.
const PAGE_SIZE: u64 = 4096;

/// The `KVM_CREATE_GUEST_MEMFD` flags rkvm offers
/// (`KVM_CAP_GUEST_MEMFD_FLAGS`): none. `GUEST_MEMFD_FLAG_MMAP` and
/// `GUEST_MEMFD_FLAG_INIT_SHARED` would need mappings of the file by user
/// space and by the guest (docs/abi.md, "guest_memfd").
pub(crate) const SUPPORTED_FLAGS: u64 = 0;

/// `fallocate` modes (`linux/falloc.h`).
pub(crate) const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
pub(crate) const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;

/// Why a guest_memfd request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GmemError {
    /// A malformed request: `EINVAL`.
    Invalid,
    /// A mode guest_memfd does not have: `EOPNOTSUPP`.
    NotSupported,
}

/// Checks `KVM_CREATE_GUEST_MEMFD`'s size and flags (`kvm_gmem_create`):
/// only offered flags, and a size that is a positive multiple of the page
/// size as a signed file offset (`loff_t`).
pub(crate) fn check_create(size: u64, flags: u64) -> Result<(), GmemError> {
    if flags & !SUPPORTED_FLAGS != 0 {
        return Err(GmemError::Invalid);
    }
    if size == 0 || i64::try_from(size).is_err() || size % PAGE_SIZE != 0 {
        return Err(GmemError::Invalid);
    }
    Ok(())
}

/// What an accepted `fallocate` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fallocate {
    /// Allocate pages `first..end` (page indices) that are not yet.
    Allocate { first: u64, end: u64 },
    /// Free the pages in bytes `start..end` of the file, clipped to its
    /// size (a hole past the end is nothing to free, and allowed).
    Punch { start: u64, end: u64 },
}

/// Decides what `fallocate(mode, offset, len)` on a file of `size` bytes
/// does (`kvm_gmem_fallocate`): `FALLOC_FL_KEEP_SIZE` is required, with
/// `FALLOC_FL_PUNCH_HOLE` the only other mode (`NotSupported`); offset and
/// length page-aligned, and an allocation within the file (the size never
/// changes) (`Invalid`). The VFS already refused a negative offset, a
/// length of 0 and a range that wraps; they are `Invalid` here too.
pub(crate) fn fallocate(
    mode: u32,
    offset: i64,
    len: i64,
    size: u64,
) -> Result<Fallocate, GmemError> {
    if mode & FALLOC_FL_KEEP_SIZE == 0 {
        return Err(GmemError::NotSupported);
    }
    if mode & !(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE) != 0 {
        return Err(GmemError::NotSupported);
    }
    let (Ok(offset), Ok(len)) = (u64::try_from(offset), u64::try_from(len)) else {
        return Err(GmemError::Invalid);
    };
    if offset % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 || len == 0 {
        return Err(GmemError::Invalid);
    }
    let end = offset.checked_add(len).ok_or(GmemError::Invalid)?;
    if mode & FALLOC_FL_PUNCH_HOLE != 0 {
        return Ok(Fallocate::Punch {
            start: offset.min(size),
            end: end.min(size),
        });
    }
    if end > size {
        return Err(GmemError::Invalid);
    }
    Ok(Fallocate::Allocate {
        first: offset / PAGE_SIZE,
        end: end / PAGE_SIZE,
    })
}
