//! `module/irq/routing.rs`: KVM_SET_GSI_ROUTING's table and KVM's rules for
//! it (`kvm_set_irq_routing`, `setup_routing_entry`, x86's
//! `kvm_set_routing_entry`).

use crate::irq::delivery::{Destination, Msi};
use crate::irq::routing::{parse_entry, Routing, RoutingError, Target, ENTRY_BYTES, MAX_ROUTES};

/// `struct kvm_irq_routing_entry` bytes: gsi, type, flags, pad, union.
fn entry(gsi: u32, kind: u32, flags: u32, u: [u32; 3]) -> [u8; ENTRY_BYTES] {
    let mut b = [0u8; ENTRY_BYTES];
    for (i, w) in [gsi, kind, flags, 0, u[0], u[1], u[2]].iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    b
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> [u8; ENTRY_BYTES] {
    entry(gsi, 1, 0, [chip, pin, 0])
}

fn msi(gsi: u32, lo: u32, hi: u32, data: u32) -> [u8; ENTRY_BYTES] {
    entry(gsi, 2, 0, [lo, hi, data])
}

#[test]
fn the_default_table_is_kvms() {
    let t = Routing::default_table().unwrap();
    assert_eq!(
        t.targets(0),
        [Some(Target::Pic(0)), Some(Target::Ioapic(0)), None]
    );
    assert_eq!(
        t.targets(15),
        [Some(Target::Pic(15)), Some(Target::Ioapic(15)), None]
    );
    assert_eq!(t.targets(16), [Some(Target::Ioapic(16)), None, None]);
    assert_eq!(t.targets(23), [Some(Target::Ioapic(23)), None, None]);
    assert_eq!(t.targets(24), [None, None, None]);
}

#[test]
fn entries_decode_to_pic_inputs_ioapic_pins_and_msis() {
    assert_eq!(
        parse_entry(&irqchip(3, 0, 7)).unwrap().target,
        Target::Pic(7)
    );
    // The slave's pin 2 is IRQ 10.
    assert_eq!(
        parse_entry(&irqchip(3, 1, 2)).unwrap().target,
        Target::Pic(10)
    );
    assert_eq!(
        parse_entry(&irqchip(3, 2, 23)).unwrap().target,
        Target::Ioapic(23)
    );
    let r = parse_entry(&msi(40, 0xfee0_1000, 0x1, 0x4031)).unwrap();
    assert_eq!(r.gsi, 40);
    assert_eq!(
        r.target,
        Target::Msi(Msi {
            address: 0x1_fee0_1000,
            data: 0x4031
        })
    );
}

#[test]
fn bad_entries_are_refused_as_kvm_refuses_them() {
    assert_eq!(
        parse_entry(&irqchip(MAX_ROUTES, 2, 0)),
        Err(RoutingError::Gsi)
    );
    assert_eq!(
        parse_entry(&irqchip(MAX_ROUTES - 1, 2, 0)).map(|r| r.gsi),
        Ok(MAX_ROUTES - 1)
    );
    assert_eq!(
        parse_entry(&entry(1, 1, 1, [2, 0, 0])),
        Err(RoutingError::Flags)
    );
    // KVM_MSI_VALID_DEVID is accepted on MSI entries (the id is ignored), no other flag.
    assert!(parse_entry(&entry(1, 2, 1, [0xfee0_0000, 0, 0])).is_ok());
    assert_eq!(
        parse_entry(&entry(1, 2, 2, [0xfee0_0000, 0, 0])),
        Err(RoutingError::Flags)
    );
    assert_eq!(parse_entry(&irqchip(1, 0, 8)), Err(RoutingError::Pin));
    assert_eq!(parse_entry(&irqchip(1, 2, 24)), Err(RoutingError::Pin));
    assert_eq!(parse_entry(&irqchip(1, 3, 0)), Err(RoutingError::Pin));
    // Types 3 (S390 adapter), 4 (Hyper-V SINT), 5 (Xen), 0: not x86 irqchip or MSI.
    for kind in [0, 3, 4, 5, 99] {
        assert_eq!(
            parse_entry(&entry(1, kind, 0, [0; 3])),
            Err(RoutingError::Type)
        );
    }
}

#[test]
fn a_gsi_may_reach_several_chips_but_an_msi_gsi_only_its_msi() {
    let ok = Routing::from_entries(&[irqchip(5, 0, 5), irqchip(5, 2, 5)]).unwrap();
    assert_eq!(
        ok.targets(5),
        [Some(Target::Pic(5)), Some(Target::Ioapic(5)), None]
    );
    assert_eq!(
        Routing::from_entries(&[irqchip(5, 2, 5), irqchip(5, 2, 6)]).err(),
        Some(RoutingError::Duplicate)
    );
    assert_eq!(
        Routing::from_entries(&[irqchip(5, 2, 5), msi(5, 0xfee0_0000, 0, 0x30)]).err(),
        Some(RoutingError::Duplicate)
    );
    assert_eq!(
        Routing::from_entries(&[msi(6, 0xfee0_0000, 0, 0x30), msi(6, 0xfee0_0000, 0, 0x31)]).err(),
        Some(RoutingError::Duplicate)
    );
    // An empty table routes nothing.
    assert_eq!(Routing::from_entries(&[]).unwrap().targets(0), [None; 3]);
    let too_many = vec![irqchip(1, 2, 1); MAX_ROUTES as usize + 1];
    assert_eq!(
        Routing::from_entries(&too_many).err(),
        Some(RoutingError::Table)
    );
}

#[test]
fn a_split_irqchip_refuses_pin_routes() {
    assert!(Routing::default_table().unwrap().has_pin_routes());
    assert!(!Routing::empty().has_pin_routes());
    let msis = Routing::from_entries(&[msi(5, 0xfee0_0000, 0, 0x30)]).unwrap();
    assert!(!msis.has_pin_routes());
    let mixed = Routing::from_entries(&[msi(5, 0xfee0_0000, 0, 0x30), irqchip(6, 2, 6)]).unwrap();
    assert!(mixed.has_pin_routes());
}

/// KVM's `kvm_scan_ioapic_routes`: only level-triggered MSI routes of the
/// user-space IOAPIC's pins (GSIs below the reserved count) whose message
/// reaches the APIC mark their vector's EOI for user space.
#[test]
fn eois_for_user_space_come_from_level_msi_routes_of_reserved_pins() {
    let table = Routing::from_entries(&[
        // GSI 3: level, vector 0x51, physical destination 1.
        msi(3, 0xfee0_1000, 0, 0x8051),
        // GSI 4: edge, vector 0x52.
        msi(4, 0xfee0_1000, 0, 0x52),
        // GSI 30: level, vector 0x53, beyond 24 reserved pins.
        msi(30, 0xfee0_1000, 0, 0x8053),
    ])
    .unwrap();
    let apic1 = |d: &Destination| d.id == 1;
    let apic2 = |d: &Destination| d.id == 2;
    assert!(table.ioapic_vector_reaches(24, false, 0x51, apic1));
    assert!(!table.ioapic_vector_reaches(24, false, 0x51, apic2));
    assert!(!table.ioapic_vector_reaches(3, false, 0x51, apic1));
    assert!(!table.ioapic_vector_reaches(24, false, 0x52, apic1));
    assert!(!table.ioapic_vector_reaches(24, false, 0x53, apic1));
    assert!(table.ioapic_vector_reaches(31, false, 0x53, apic1));
    assert!(!Routing::default_table()
        .unwrap()
        .ioapic_vector_reaches(24, false, 0x51, apic1));
}

/// `KVM_X2APIC_API_USE_32BIT_IDS`: an MSI route whose high address has
/// bits 7:0 set is refused; its bits 31:8 extend the destination.
#[test]
fn msi_routes_in_the_32_bit_id_format() {
    let t = Routing::from_entries(&[msi(3, 0xfee0_1000, 0x100, 0x8051)]).unwrap();
    assert!(!t.has_invalid_msi(true) && !t.has_invalid_msi(false));
    let at_0x101 = |d: &Destination| d.id == 0x101;
    assert!(t.ioapic_vector_reaches(24, true, 0x51, at_0x101));
    assert!(!t.ioapic_vector_reaches(24, false, 0x51, at_0x101));
    let bad = Routing::from_entries(&[msi(3, 0xfee0_1000, 0x1, 0x8051)]).unwrap();
    assert!(bad.has_invalid_msi(true) && !bad.has_invalid_msi(false));
}
