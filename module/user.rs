// SPDX-License-Identifier: GPL-2.0

//! Reading and writing ioctl arguments in user memory.
//!
//! Each argument is copied once into a kernel value and used from there, so
//! a process changing its memory during an ioctl cannot make rkvm see two
//! different values. A bad pointer is `EFAULT`.

use core::mem::size_of;
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::prelude::*;
use kernel::transmute::{AsBytes, FromBytes};
use kernel::uaccess::{UserPtr, UserSlice};

/// Copies a `T` from user address `addr`.
pub(crate) fn read<T: FromBytes>(addr: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(addr), size_of::<T>())
        .reader()
        .read::<T>()
}

/// Copies `value` to user address `addr`.
pub(crate) fn write<T: AsBytes>(addr: usize, value: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(addr), size_of::<T>())
        .writer()
        .write(value)
}

/// The user address just past a `T` at `addr` (where a variable-length
/// argument's entries follow its header); `EFAULT` if that wraps.
pub(crate) fn after<T>(addr: usize) -> Result<usize> {
    addr.checked_add(size_of::<T>()).ok_or(EFAULT)
}

/// Copies `n` consecutive `T`s from user address `addr`. The caller bounds
/// `n` first.
pub(crate) fn read_array<T: FromBytes>(addr: usize, n: usize) -> Result<KVec<T>> {
    let len = n.checked_mul(size_of::<T>()).ok_or(EINVAL)?;
    let mut reader = UserSlice::new(UserPtr::from_addr(addr), len).reader();
    let mut items = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
    for _ in 0..n {
        items.push(reader.read::<T>()?, GFP_KERNEL_ACCOUNT)?;
    }
    Ok(items)
}

/// Copies `items` to consecutive `T`s at user address `addr`.
pub(crate) fn write_array<T: AsBytes>(addr: usize, items: &[T]) -> Result {
    let len = items.len().checked_mul(size_of::<T>()).ok_or(EINVAL)?;
    let mut writer = UserSlice::new(UserPtr::from_addr(addr), len).writer();
    for item in items {
        writer.write(item)?;
    }
    Ok(())
}
