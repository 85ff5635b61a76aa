//! `module/eventfd/ioeventfd.rs`: `KVM_IOEVENTFD`'s checks and table, as
//! KVM's `kvm_assign_ioeventfd`, `ioeventfd_check_collision` and
//! `ioeventfd_in_range`.

use crate::abi::kvm_ioeventfd;
use crate::eventfd::ioeventfd::{
    parse, Bus, Error, Key, Table, FLAG_DATAMATCH, FLAG_DEASSIGN, FLAG_PIO, FLAG_VIRTIO_CCW_NOTIFY,
    MAX_PER_BUS,
};

fn args(datamatch: u64, addr: u64, len: u32, flags: u32) -> kvm_ioeventfd {
    kvm_ioeventfd {
        datamatch,
        addr,
        len,
        fd: 3,
        flags,
        pad: [0; 36],
    }
}

fn key(bus: Bus, addr: u64, len: u32, datamatch: Option<u64>) -> Key {
    Key {
        bus,
        addr,
        len,
        datamatch,
    }
}

#[test]
fn requests_are_checked_as_kvm_checks_them() {
    for len in [0, 1, 2, 4, 8] {
        assert!(
            parse(&args(0, 0x700, len, FLAG_PIO)).is_ok(),
            "length {len}"
        );
    }
    for len in [3, 5, 16, u32::MAX] {
        assert_eq!(
            parse(&args(0, 0x700, len, FLAG_PIO)),
            Err(Error::Invalid),
            "length {len}"
        );
    }
    assert_eq!(
        parse(&args(0, u64::MAX - 1, 4, 0)),
        Err(Error::Invalid),
        "wrapping range"
    );
    assert_eq!(
        parse(&args(0, 0x700, 1, 1 << 5)),
        Err(Error::Invalid),
        "unknown flag"
    );
    assert_eq!(
        parse(&args(1, 0x700, 0, FLAG_DATAMATCH)),
        Err(Error::Invalid),
        "length 0 with a data match"
    );
    // Bit 4 (fast MMIO) is a known flag that changes nothing.
    let r = parse(&args(0, 0xd000_0000, 4, 1 << 4)).unwrap();
    assert_eq!(r.key, key(Bus::Mmio, 0xd000_0000, 4, None));
    let r = parse(&args(7, 0x700, 2, FLAG_PIO | FLAG_DATAMATCH)).unwrap();
    assert_eq!(r.key, key(Bus::Pio, 0x700, 2, Some(7)));
    assert!(!r.deassign);
    assert_eq!(
        parse(&args(0, 1, 4, FLAG_VIRTIO_CCW_NOTIFY))
            .unwrap()
            .key
            .bus,
        Bus::Ccw
    );
    // A deassignment is looked up, not checked (KVM's order).
    let r = parse(&args(0, 0x700, 3, FLAG_DEASSIGN | 1 << 6)).unwrap();
    assert!(r.deassign);
}

#[test]
fn a_write_matches_on_bus_address_length_and_data() {
    let k = key(Bus::Pio, 0x700, 1, Some(0x5a));
    assert!(k.matches(Bus::Pio, 0x700, 1, 0x5a));
    assert!(
        k.matches(Bus::Pio, 0x700, 1, 0xff5a),
        "the value as one byte"
    );
    assert!(!k.matches(Bus::Pio, 0x700, 1, 0x11), "other data");
    assert!(!k.matches(Bus::Pio, 0x700, 2, 0x5a), "other length");
    assert!(!k.matches(Bus::Mmio, 0x700, 1, 0x5a), "other bus");
    assert!(!k.matches(Bus::Pio, 0x701, 1, 0x5a), "other address");
    let any = key(Bus::Mmio, 0x1000, 0, None);
    assert!(any.matches(Bus::Mmio, 0x1000, 8, 1) && any.matches(Bus::Mmio, 0x1000, 2, 9));
    let wide = key(Bus::Mmio, 0x1000, 8, Some(u64::MAX));
    assert!(wide.matches(Bus::Mmio, 0x1000, 8, u64::MAX));
}

#[test]
fn entries_that_could_match_one_write_collide() {
    let mut t = Table::new();
    t.assign(key(Bus::Pio, 0x700, 1, Some(1)), 'a').unwrap();
    t.assign(key(Bus::Pio, 0x700, 1, Some(2)), 'b').unwrap();
    t.assign(key(Bus::Pio, 0x700, 2, None), 'c').unwrap();
    t.assign(key(Bus::Mmio, 0x700, 1, None), 'd').unwrap();
    for k in [
        key(Bus::Pio, 0x700, 1, Some(1)),
        key(Bus::Pio, 0x700, 1, None),
        key(Bus::Pio, 0x700, 0, None),
        key(Bus::Pio, 0x700, 2, Some(5)),
    ] {
        assert_eq!(t.assign(k, 'x'), Err(Error::Exists), "{k:?}");
    }
    assert_eq!(t.lookup(Bus::Pio, 0x700, 1, 2), Some(&'b'));
    assert_eq!(t.lookup(Bus::Pio, 0x700, 2, 0xffff), Some(&'c'));
    assert_eq!(t.lookup(Bus::Pio, 0x700, 1, 3), None);
    assert_eq!(t.lookup(Bus::Mmio, 0x700, 1, 3), Some(&'d'));
    assert_eq!(t.len(), 4);
}

#[test]
fn deassign_needs_the_same_key_and_eventfd() {
    let mut t = Table::new();
    let k = key(Bus::Pio, 0x700, 1, Some(1));
    t.assign(k, 10).unwrap();
    assert_eq!(t.deassign(&k, |&fd| fd == 11), Err(Error::NotFound));
    assert_eq!(
        t.deassign(&key(Bus::Pio, 0x700, 1, None), |_| true),
        Err(Error::NotFound),
        "a wildcard is another key"
    );
    assert_eq!(t.deassign(&k, |&fd| fd == 10), Ok(10));
    assert_eq!(t.len(), 0);
    assert_eq!(t.lookup(Bus::Pio, 0x700, 1, 1), None);
}

#[test]
fn a_bus_holds_at_most_max_per_bus_entries() {
    let mut t = Table::new();
    for i in 0..MAX_PER_BUS as u64 {
        t.assign(key(Bus::Mmio, i * 8, 8, None), ()).unwrap();
    }
    assert_eq!(
        t.assign(key(Bus::Mmio, 1 << 40, 8, None), ()),
        Err(Error::Full)
    );
    assert!(
        t.assign(key(Bus::Pio, 0, 1, None), ()).is_ok(),
        "another bus"
    );
}
