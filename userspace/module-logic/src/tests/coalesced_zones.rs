//! `module/coalesced/zones.rs`: which writes a zone takes, the table, and
//! the ring's rules (KVM's `virt/kvm/coalesced_mmio.c`).

use crate::coalesced::zones::{
    entry_offset, ring_next, ring_slot, Entry, Zone, ZoneError, Zones, ENTRY_SIZE, MAX_PER_BUS,
    RING_ENTRIES,
};

fn mmio(addr: u64, size: u32) -> Zone {
    Zone::parse(addr, size, 0).unwrap()
}

#[test]
fn a_zone_takes_writes_wholly_inside_it() {
    let z = mmio(0x1000, 0x10);
    assert!(z.contains(0x1000, 8));
    assert!(z.contains(0x1008, 8));
    assert!(!z.contains(0x1009, 8), "crosses the end");
    assert!(!z.contains(0xfff, 2), "starts before");
    assert!(!mmio(0x1000, 0).contains(0x1000, 1), "a zone of size 0");
    // A length of 2 GiB or more is a negative C int in KVM: never inside.
    assert!(!mmio(0, u32::MAX).contains(0, 0x8000_0000));
    assert!(mmio(0, u32::MAX).contains(0, 0x7fff_ffff));
    // A range that wraps is never inside.
    assert!(!mmio(0, u32::MAX).contains(u64::MAX, 2));
}

#[test]
fn pio_must_be_0_or_1() {
    assert!(!Zone::parse(0x80, 8, 0).unwrap().pio);
    assert!(Zone::parse(0x80, 8, 1).unwrap().pio);
    assert_eq!(Zone::parse(0x80, 8, 2), Err(ZoneError::Invalid));
}

#[test]
fn the_table_matches_by_bus_and_unregisters_containing_zones() {
    let mut t = Zones::new();
    t.register(mmio(0x1000, 0x100)).unwrap();
    t.register(Zone::parse(0x80, 8, 1).unwrap()).unwrap();
    t.register(mmio(0x1000, 0x100)).unwrap();
    assert!(t.takes(false, 0x1010, 4));
    assert!(!t.takes(true, 0x1010, 4), "the other bus");
    assert!(t.takes(true, 0x84, 4));
    assert!(!t.takes(false, 0x84, 4));
    // A range no zone contains removes nothing; one inside both copies of
    // the MMIO zone removes both, and not the port zone.
    assert_eq!(t.unregister(mmio(0x2000, 8)), 0);
    assert_eq!(
        t.unregister(mmio(0x0, 0x2000)),
        0,
        "containing, not contained"
    );
    assert_eq!(t.unregister(mmio(0x1010, 8)), 2);
    assert_eq!(t.len(), 1);
    assert!(!t.takes(false, 0x1010, 4));
    assert!(t.takes(true, 0x80, 1));
}

#[test]
fn a_bus_holds_at_most_1000_zones() {
    let mut t = Zones::new();
    for i in 0..MAX_PER_BUS as u64 {
        t.register(mmio(i * 8, 8)).unwrap();
    }
    assert_eq!(t.register(mmio(0, 8)), Err(ZoneError::Full));
    // The port bus has its own room.
    t.register(Zone::parse(0x80, 8, 1).unwrap()).unwrap();
}

#[test]
fn the_ring_leaves_one_entry_free_and_refuses_a_bad_last() {
    assert_eq!(RING_ENTRIES, 170, "(4096 - 8) / 24");
    assert_eq!(ring_slot(0, 0), Some(0));
    assert_eq!(ring_slot(0, RING_ENTRIES - 2), Some(RING_ENTRIES - 2));
    assert_eq!(ring_slot(0, RING_ENTRIES - 1), None, "full: one left free");
    assert_eq!(ring_slot(5, 4), None, "full after wrapping");
    assert_eq!(ring_slot(5, RING_ENTRIES - 1), Some(RING_ENTRIES - 1));
    assert_eq!(ring_slot(0, RING_ENTRIES), None, "last out of range");
    assert_eq!(ring_slot(0, u32::MAX), None);
    assert_eq!(ring_next(RING_ENTRIES - 1), 0);
    assert_eq!(entry_offset(0), 8);
    assert_eq!(entry_offset(RING_ENTRIES - 1) + ENTRY_SIZE, 8 + 170 * 24);
    assert!(entry_offset(RING_ENTRIES - 1) + ENTRY_SIZE <= 4096);
}

#[test]
fn an_entry_has_kvms_layout() {
    let e = Entry::new(0x1_0000_0000, 4, 0x1122_3344_5566_7788, true);
    assert_eq!(e.head[..8], 0x1_0000_0000u64.to_le_bytes());
    assert_eq!(e.head[8..12], 4u32.to_le_bytes());
    assert_eq!(e.head[12..16], 1u32.to_le_bytes());
    assert_eq!(Entry::DATA, 16);
    assert_eq!(e.data[..e.data_len], [0x88, 0x77, 0x66, 0x55]);
    assert_eq!(Entry::new(0, 8, 1, false).data_len, 8);
    assert_eq!(Entry::new(0, 8, 1, false).head[12..16], [0; 4]);
}
