// SPDX-License-Identifier: GPL-2.0

//! Coalesced MMIO and port I/O (`KVM_REGISTER_COALESCED_MMIO`,
//! `KVM_CAP_COALESCED_MMIO`, `KVM_CAP_COALESCED_PIO`), as KVM's
//! `virt/kvm/coalesced_mmio.c`.
//!
//! Some device registers are written often and read rarely: a VGA
//! framebuffer window, the data port of a serial console, a doorbell whose
//! writes can wait. Each such write would cost an exit to user space. A
//! VMM registers a zone (an address range on the MMIO or port bus) and the
//! kernel, instead of exiting, appends the write (address, length, data)
//! to a ring in one page shared by the VM's vCPUs and lets the guest go
//! on. User space drains the ring whenever it likes, and must do so before
//! it looks at the device, so that writes are applied in order.
//!
//! The ring page sits in every vCPU's mapping at page
//! `KVM_COALESCED_MMIO_PAGE_OFFSET` (2), the number the capability
//! answers. The kernel writes the entry at `last` and then advances `last`
//! (the order matters: user space reads entries up to `last`); user space
//! consumes from `first`. A write when the ring is full (one entry always
//! free) or when user space left `last` out of range exits as usual. Only
//! writes are coalesced: a read of a zone exits. Zones are checked after
//! the in-kernel devices and ioeventfds (KVM's I/O bus orders them by
//! address instead; overlapping an ioeventfd with a zone is unusual), and
//! string port I/O always exits in rkvm (run/io.rs), so it never reaches a
//! zone.
//!
//! [`zones`] is the pure part; this file holds the page and the lock.

pub(crate) mod zones;

use crate::sys::mem::SharedPage;
use core::sync::atomic::{fence, AtomicUsize, Ordering};
use kernel::alloc::flags::{__GFP_ZERO, GFP_KERNEL_ACCOUNT};
use kernel::new_mutex;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::Mutex;
use kernel::transmute::AsBytes;
use zones::{
    entry_offset, ring_next, ring_slot, Entry, Zone, ZoneError, Zones, RING_FIRST, RING_LAST,
};

/// A VM's zones and ring.
#[pin_data]
pub(crate) struct CoalescedIo {
    /// The zones; its lock also orders the writers of the ring (KVM's
    /// `ring_lock`).
    #[pin]
    zones: Mutex<Zones>,
    /// How many zones there are, read without the lock so that a VM with
    /// none pays nothing per exit.
    count: AtomicUsize,
    /// The ring, `struct kvm_coalesced_mmio_ring`, shared with user space.
    ring: Page,
}

impl CoalescedIo {
    /// The ring's page, zeroed (an empty ring), for [`CoalescedIo::new`].
    pub(crate) fn alloc_ring() -> Result<Page> {
        Ok(Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?)
    }

    /// No zone, and the ring from [`CoalescedIo::alloc_ring`].
    pub(crate) fn new(ring: Page) -> impl PinInit<Self> {
        pin_init!(Self {
            zones <- new_mutex!(Zones::new(), "rkvm::CoalescedIo::zones"),
            count: AtomicUsize::new(0),
            ring,
        })
    }

    /// The ring's page, for the vCPU mapping.
    pub(crate) fn ring_page(&self) -> &Page {
        &self.ring
    }

    /// `KVM_REGISTER_COALESCED_MMIO` (`EINVAL`, `ENOSPC`, `ENOMEM` as KVM).
    pub(crate) fn register(&self, zone: &crate::abi::kvm_coalesced_mmio_zone) -> Result {
        let zone = parse(zone)?;
        let mut zones = self.zones.lock();
        zones.register(zone).map_err(errno)?;
        self.count.store(zones.len(), Ordering::SeqCst);
        Ok(())
    }

    /// `KVM_UNREGISTER_COALESCED_MMIO`: 0 even when no zone went, as KVM.
    pub(crate) fn unregister(&self, zone: &crate::abi::kvm_coalesced_mmio_zone) -> Result {
        let range = parse(zone)?;
        let mut zones = self.zones.lock();
        zones.unregister(range);
        self.count.store(zones.len(), Ordering::SeqCst);
        Ok(())
    }

    /// A guest write of the low `len` bytes of `value` to `addr` on the
    /// port (`pio`) or MMIO bus: if a zone takes it and the ring has room,
    /// it is appended and the write is done (`true`); otherwise it exits.
    pub(crate) fn write(&self, pio: bool, addr: u64, len: u32, value: u64) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let zones = self.zones.lock();
        if !zones.takes(pio, addr, len) {
            return false;
        }
        let ring = SharedPage(&self.ring);
        // User space may change `first` and `last` at any time: each is
        // read once, and `ring_slot` checks `last` before it is used.
        let (Ok(first), Ok(last)) = (ring.read::<u32>(RING_FIRST), ring.read::<u32>(RING_LAST))
        else {
            return false;
        };
        let Some(slot) = ring_slot(first, last) else {
            return false;
        };
        let entry = Entry::new(addr, len, value, pio);
        let at = entry_offset(slot);
        if ring.write_bytes(at, &entry.head).is_err()
            || ring
                .write_bytes(at + Entry::DATA, &entry.data[..entry.data_len])
                .is_err()
        {
            return false;
        }
        // The entry is visible before `last` says it is there (KVM's
        // `smp_wmb`).
        fence(Ordering::Release);
        ring.write(RING_LAST, &ring_next(slot)).is_ok()
    }
}

fn parse(zone: &crate::abi::kvm_coalesced_mmio_zone) -> Result<Zone> {
    // `pio` shares its four bytes (12..16) with `pad` in a union.
    let b = zone.as_bytes();
    let pio = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    Zone::parse(zone.addr, zone.size, pio).map_err(errno)
}

fn errno(e: ZoneError) -> Error {
    match e {
        ZoneError::Invalid => EINVAL,
        ZoneError::Full => ENOSPC,
        ZoneError::NoMemory => ENOMEM,
    }
}
