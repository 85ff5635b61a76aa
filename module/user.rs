// SPDX-License-Identifier: GPL-2.0

//! Reading and writing ioctl arguments in user memory.
//!
//! Each argument is copied once into a kernel value and used from there, so
//! a process changing its memory during an ioctl cannot make rkvm see two
//! different values. A bad pointer is `EFAULT`.

use crate::abi::{self, kvm_msr_entry, kvm_msrs};
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

/// The argument of `KVM_GET_MSRS` / `KVM_SET_MSRS` (on the device or a
/// vCPU fd) at `arg`: a `struct kvm_msrs` header and its entries. As KVM's
/// `msr_io`: `nmsrs` ≥ `MAX_IO_MSRS` (256) is `E2BIG`. Returns where the
/// entries are (to write them back) and a copy of them.
pub(crate) fn read_msrs(arg: usize) -> Result<(usize, KVec<kvm_msr_entry>)> {
    let header: kvm_msrs = read(arg)?;
    if header.nmsrs >= abi::MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let entries_addr = after::<kvm_msrs>(arg)?;
    let entries = read_array(entries_addr, header.nmsrs as usize)?;
    Ok((entries_addr, entries))
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

/// Copies `n` 64-bit words (a bitmap) from user address `addr`, into
/// memory that may be virtually contiguous only (a slot's bitmap can be
/// larger than kmalloc gives).
pub(crate) fn read_words(addr: usize, n: usize) -> Result<KVVec<u64>> {
    let mut words = KVVec::from_elem(0u64, n, GFP_KERNEL_ACCOUNT)?;
    let len = n.checked_mul(size_of::<u64>()).ok_or(EINVAL)?;
    UserSlice::new(UserPtr::from_addr(addr), len)
        .reader()
        .read_slice(AsBytes::as_bytes_mut(&mut words[..]))?;
    Ok(words)
}

/// Copies the 64-bit words `words` (a bitmap) to user address `addr`.
pub(crate) fn write_words(addr: usize, words: &[u64]) -> Result {
    UserSlice::new(UserPtr::from_addr(addr), size_of_val(words))
        .writer()
        .write_slice(AsBytes::as_bytes(words))
}
