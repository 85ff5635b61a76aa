// SPDX-License-Identifier: GPL-2.0

//! The ioeventfd table (`KVM_IOEVENTFD`): guest writes that signal an
//! eventfd instead of exiting to user space.
//!
//! A virtio device's "notify" register is the classic user: the guest
//! writes a queue number to it, and all the device model needs to know is
//! that the write happened. With an ioeventfd on that address the write
//! costs one VM exit and an eventfd signal, and the device model's thread
//! wakes from `read(2)` or `epoll` without the vCPU thread ever leaving
//! `KVM_RUN`.
//!
//! An entry matches a write when, as in KVM's `ioeventfd_in_range`:
//! - it is on the same bus (port I/O or MMIO) at exactly the same address;
//! - its length is 0 (any length), or exactly the write's length;
//! - it has no data to match (a wildcard), or the written value equals it.
//!
//! Two entries that could match the same write are refused (`EEXIST`,
//! KVM's `ioeventfd_check_collision`), so at most one entry matches a
//! write. Pure logic, unit-tested on the host; the table is generic over
//! what it signals.

use crate::abi;

/// The most entries per bus (KVM's `NR_IOBUS_DEVS`, which also bounds
/// its other in-kernel devices).
pub(crate) const MAX_PER_BUS: usize = 1000;

/// Which bus an ioeventfd listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bus {
    Mmio,
    Pio,
    /// `KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY`, s390's subchannel
    /// notifications: KVM accepts it on x86 onto a bus nothing writes to.
    Ccw,
}

/// What a write must look like for an entry to fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) bus: Bus,
    pub(crate) addr: u64,
    /// 0 (any length), 1, 2, 4 or 8 bytes.
    pub(crate) len: u32,
    /// The value to match, `None` for any value.
    pub(crate) datamatch: Option<u64>,
}

/// A parsed `struct kvm_ioeventfd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) key: Key,
    pub(crate) fd: i32,
    pub(crate) deassign: bool,
}

/// Why a request or table change is refused; the errno is KVM's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Error {
    /// A length other than 0, 1, 2, 4, 8; an address range that wraps; an
    /// unknown flag; a length of 0 with a data match (`EINVAL`).
    Invalid,
    /// An entry that could match the same writes exists (`EEXIST`).
    Exists,
    /// The bus is full (`ENOSPC`).
    Full,
    /// `KVM_IOEVENTFD_FLAG_DEASSIGN` of an entry that does not exist
    /// (`ENOENT`).
    NotFound,
    /// No memory for the table (`ENOMEM`).
    NoMemory,
}

/// `struct kvm_ioeventfd`'s flags (`linux/kvm.h` defines them from an
/// anonymous enum of bit numbers, which the generated bindings lack).
pub(crate) const FLAG_DATAMATCH: u32 = 1 << 0;
pub(crate) const FLAG_PIO: u32 = 1 << 1;
pub(crate) const FLAG_DEASSIGN: u32 = 1 << 2;
pub(crate) const FLAG_VIRTIO_CCW_NOTIFY: u32 = 1 << 3;
/// The flags KVM knows (`KVM_IOEVENTFD_VALID_FLAG_MASK`: the four above
/// and bit 4, fast MMIO, which changes nothing on x86).
const VALID_FLAGS: u32 = (1 << 5) - 1;

/// Parses `struct kvm_ioeventfd` (datamatch, address, length, fd, flags;
/// the padding is ignored, as by KVM). A deassignment is only parsed: KVM
/// looks such a request up without checking it.
pub(crate) fn parse(args: &abi::kvm_ioeventfd) -> Result<Request, Error> {
    let flags = args.flags;
    let bus = if flags & FLAG_PIO != 0 {
        Bus::Pio
    } else if flags & FLAG_VIRTIO_CCW_NOTIFY != 0 {
        Bus::Ccw
    } else {
        Bus::Mmio
    };
    let datamatch = (flags & FLAG_DATAMATCH != 0).then_some(args.datamatch);
    let key = Key {
        bus,
        addr: args.addr,
        len: args.len,
        datamatch,
    };
    let deassign = flags & FLAG_DEASSIGN != 0;
    if !deassign {
        // KVM's order: the length, the range, the flags, then a data match without length.
        if !matches!(args.len, 0 | 1 | 2 | 4 | 8)
            || args.addr.checked_add(u64::from(args.len)).is_none()
            || flags & !VALID_FLAGS != 0
            || (args.len == 0 && datamatch.is_some())
        {
            return Err(Error::Invalid);
        }
    }
    Ok(Request {
        key,
        fd: args.fd,
        deassign,
    })
}

impl Key {
    /// Whether a `len`-byte write of `value` to `addr` on `bus` fires this.
    pub(crate) fn matches(&self, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        if self.bus != bus || self.addr != addr {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        if self.len != len {
            return false;
        }
        match self.datamatch {
            None => true,
            // The value as the write's width reads it.
            Some(want) => {
                let mask = if len >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (len * 8)) - 1
                };
                value & mask == want
            }
        }
    }

    /// Whether some write could fire both `self` and `other`.
    fn collides(&self, other: &Key) -> bool {
        self.bus == other.bus
            && self.addr == other.addr
            && (self.len == 0
                || other.len == 0
                || (self.len == other.len
                    && match (self.datamatch, other.datamatch) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }))
    }
}

/// A VM's ioeventfds; `T` is what a match signals.
pub(crate) struct Table<T> {
    entries: kernel::alloc::KVec<(Key, T)>,
}

impl<T> Table<T> {
    pub(crate) fn new() -> Self {
        Table {
            entries: kernel::alloc::KVec::new(),
        }
    }

    /// How many entries exist.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds an entry, unless one that could match the same writes exists
    /// or its bus is full.
    pub(crate) fn assign(&mut self, key: Key, target: T) -> Result<(), Error> {
        if self.entries.iter().any(|(k, _)| k.collides(&key)) {
            return Err(Error::Exists);
        }
        if self
            .entries
            .iter()
            .filter(|(k, _)| k.bus == key.bus)
            .count()
            >= MAX_PER_BUS
        {
            return Err(Error::Full);
        }
        self.entries
            .push((key, target), kernel::alloc::flags::GFP_KERNEL_ACCOUNT)
            .map_err(|_| Error::NoMemory)
    }

    /// Removes the entry with exactly this key whose target `same` accepts
    /// (KVM compares the eventfd too), and returns its target.
    pub(crate) fn deassign(&mut self, key: &Key, same: impl Fn(&T) -> bool) -> Result<T, Error> {
        let index = self
            .entries
            .iter()
            .position(|(k, t)| k == key && same(t))
            .ok_or(Error::NotFound)?;
        self.entries
            .remove(index)
            .map(|(_, t)| t)
            .map_err(|_| Error::NotFound)
    }

    /// The target a `len`-byte write of `value` to `addr` on `bus` fires.
    pub(crate) fn lookup(&self, bus: Bus, addr: u64, len: u32, value: u64) -> Option<&T> {
        self.entries
            .iter()
            .find(|(k, _)| k.matches(bus, addr, len, value))
            .map(|(_, t)| t)
    }
}
