// SPDX-License-Identifier: GPL-2.0

//! The pure part of coalesced I/O: which guest writes a zone takes, the
//! zone table, and the ring's layout and index rules, as KVM's
//! `virt/kvm/coalesced_mmio.c`. Unit-tested on the host.

use kernel::alloc::KVec;

/// The most zones per bus (KVM's `NR_IOBUS_DEVS`, the limit of the I/O
/// bus its zones are devices on).
pub(crate) const MAX_PER_BUS: usize = 1000;

/// `struct kvm_coalesced_mmio_ring`'s header: `first` and `last`, `u32`s.
pub(crate) const RING_FIRST: usize = 0;
pub(crate) const RING_LAST: usize = 4;
const RING_HEADER: usize = 8;
/// `struct kvm_coalesced_mmio`: `phys_addr` (u64), `len` (u32), `pio`
/// (u32), `data` (8 bytes).
pub(crate) const ENTRY_SIZE: usize = 24;
const ENTRY_LEN: usize = 8;
const ENTRY_PIO: usize = 12;
const ENTRY_DATA: usize = 16;
/// Entries in the one-page ring (`KVM_COALESCED_MMIO_MAX`: 170 with 4 KiB
/// pages). One is always left free, so that `first == last` means empty.
pub(crate) const RING_ENTRIES: u32 = ((4096 - RING_HEADER) / ENTRY_SIZE) as u32;

/// A registered zone (`struct kvm_coalesced_mmio_zone`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Zone {
    pub(crate) addr: u64,
    pub(crate) size: u32,
    /// On the port-I/O bus (`KVM_CAP_COALESCED_PIO`), else MMIO.
    pub(crate) pio: bool,
}

/// Why a zone is refused; the errno is KVM's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ZoneError {
    /// `pio` is neither 0 nor 1 (`EINVAL`).
    Invalid,
    /// The bus has `MAX_PER_BUS` zones (`ENOSPC`).
    Full,
    /// No memory for the table (`ENOMEM`).
    NoMemory,
}

impl Zone {
    /// Parses `struct kvm_coalesced_mmio_zone`'s fields: `pio` must be
    /// either 0 or 1. Any address and size are taken, as KVM (a zone of
    /// size 0 never matches a write).
    pub(crate) fn parse(addr: u64, size: u32, pio: u32) -> Result<Self, ZoneError> {
        match pio {
            0 | 1 => Ok(Self {
                addr,
                size,
                pio: pio == 1,
            }),
            _ => Err(ZoneError::Invalid),
        }
    }

    /// Whether `len` bytes at `addr` are wholly inside the zone, as KVM's
    /// `coalesced_mmio_in_range`, which takes the length as a C `int` (so
    /// 2 GiB or more is never inside) and computes the zone's end in 64
    /// bits, wrapping.
    pub(crate) fn contains(&self, addr: u64, len: u32) -> bool {
        let Some(end) = addr.checked_add(u64::from(len)) else {
            return false;
        };
        i32::try_from(len).is_ok()
            && addr >= self.addr
            && end <= self.addr.wrapping_add(u64::from(self.size))
    }
}

/// A VM's zones, in registration order.
pub(crate) struct Zones {
    zones: KVec<Zone>,
}

impl Zones {
    pub(crate) const fn new() -> Self {
        Self { zones: KVec::new() }
    }

    /// How many zones there are (on both buses).
    pub(crate) fn len(&self) -> usize {
        self.zones.len()
    }

    /// `KVM_REGISTER_COALESCED_MMIO`: zones may overlap or repeat, as in
    /// KVM.
    pub(crate) fn register(&mut self, zone: Zone) -> Result<(), ZoneError> {
        if self.zones.iter().filter(|z| z.pio == zone.pio).count() >= MAX_PER_BUS {
            return Err(ZoneError::Full);
        }
        self.zones
            .push(zone, kernel::alloc::flags::GFP_KERNEL_ACCOUNT)
            .map_err(|_| ZoneError::NoMemory)
    }

    /// `KVM_UNREGISTER_COALESCED_MMIO`: removes every zone on the same bus
    /// that wholly contains the range given (a range no zone contains
    /// removes nothing, and is not an error), as KVM's
    /// `kvm_vm_ioctl_unregister_coalesced_mmio`. Returns how many went.
    pub(crate) fn unregister(&mut self, range: Zone) -> usize {
        let before = self.zones.len();
        self.zones
            .retain(|z| !(z.pio == range.pio && z.contains(range.addr, range.size)));
        before - self.zones.len()
    }

    /// Whether a guest write of `len` bytes at `addr` on the given bus is
    /// coalesced: some zone there wholly contains it.
    pub(crate) fn takes(&self, pio: bool, addr: u64, len: u32) -> bool {
        self.zones
            .iter()
            .any(|z| z.pio == pio && z.contains(addr, len))
    }
}

/// Where the next entry goes, from the ring's `first` and `last` as user
/// space left them: `last`, unless it is out of range or the ring is full
/// (one entry is always left free), as KVM's `coalesced_mmio_write`;
/// `None` makes the write an ordinary exit.
pub(crate) fn ring_slot(first: u32, last: u32) -> Option<u32> {
    if last >= RING_ENTRIES || (last + 1) % RING_ENTRIES == first {
        None
    } else {
        Some(last)
    }
}

/// `last` after an entry was put in `slot`.
pub(crate) fn ring_next(slot: u32) -> u32 {
    (slot + 1) % RING_ENTRIES
}

/// The byte offset of entry `slot` in the ring's page.
pub(crate) fn entry_offset(slot: u32) -> usize {
    RING_HEADER + ENTRY_SIZE * slot as usize
}

/// One ring entry, as the kernel writes it into the shared page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `phys_addr`, `len` and `pio`: the entry's first 16 bytes.
    pub(crate) head: [u8; ENTRY_DATA],
    /// The data bytes to write at `DATA`: only the write's `len` of them
    /// (at most 8). KVM copies only those, leaving the rest of `data` as
    /// it was; so does rkvm.
    pub(crate) data: [u8; 8],
    pub(crate) data_len: usize,
}

impl Entry {
    /// Where the data bytes go, from the entry's start.
    pub(crate) const DATA: usize = ENTRY_DATA;

    /// The entry for a write of the low `len` bytes of `value` (little
    /// endian) to `addr` on the given bus.
    pub(crate) fn new(addr: u64, len: u32, value: u64, pio: bool) -> Self {
        let mut head = [0u8; ENTRY_DATA];
        head[..ENTRY_LEN].copy_from_slice(&addr.to_le_bytes());
        head[ENTRY_LEN..ENTRY_PIO].copy_from_slice(&len.to_le_bytes());
        head[ENTRY_PIO..].copy_from_slice(&u32::from(pio).to_le_bytes());
        Self {
            head,
            data: value.to_le_bytes(),
            data_len: (len as usize).min(8),
        }
    }
}
