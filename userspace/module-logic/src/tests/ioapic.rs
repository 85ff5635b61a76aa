//! `module/irq/ioapic.rs`: the I/O APIC's registers, lines and remote IRR
//! (Intel 82093AA datasheet; SDM Vol. 3A 11.8.5 for the EOI broadcast).

use crate::irq::delivery::{DeliveryMode, Message};
use crate::irq::ioapic::{entry, Ioapic, Source, DEFAULT_BASE, PINS, VERSION};

fn select(io: &mut Ioapic, reg: u32) {
    io.mmio_write(0, 4, reg.into(), &mut |_| panic!("IOREGSEL sends nothing"));
}

fn read_reg(io: &mut Ioapic, reg: u32) -> u32 {
    select(io, reg);
    io.mmio_read(0x10, 4) as u32
}

/// Writes both halves of pin's entry; returns what the write sent.
fn program(io: &mut Ioapic, pin: u32, e: u64) -> Vec<Message> {
    let mut sent = Vec::new();
    select(io, 0x10 + 2 * pin + 1);
    io.mmio_write(0x10, 4, e >> 32, &mut |m| sent.push(m));
    select(io, 0x10 + 2 * pin);
    io.mmio_write(0x10, 4, e & 0xffff_ffff, &mut |m| sent.push(m));
    sent
}

fn line(io: &mut Ioapic, pin: usize, source: Source, level: bool) -> Vec<Message> {
    let mut sent = Vec::new();
    io.set_line(pin, source, level, &mut |m| sent.push(m))
        .unwrap();
    sent
}

#[test]
fn reset_masks_every_entry_and_reports_24_pins() {
    let mut io = Ioapic::new();
    assert_eq!(io.base(), DEFAULT_BASE);
    assert_eq!(read_reg(&mut io, 1), VERSION);
    assert_eq!((VERSION >> 16) & 0xff, 23);
    for pin in 0..PINS {
        assert_eq!(io.entry(pin), entry::MASKED);
    }
    // Masked lines send nothing.
    assert!(line(&mut io, 4, Source::User, true).is_empty());
    // Registers past the table read all ones; the ID is 4 bits in 27:24.
    assert_eq!(read_reg(&mut io, 0x40), u32::MAX);
    select(&mut io, 0);
    io.mmio_write(0x10, 4, 0xff00_0000, &mut |_| {});
    assert_eq!(read_reg(&mut io, 0), 0x0f00_0000);
    assert_eq!(read_reg(&mut io, 2), 0x0f00_0000, "arbitration ID");
}

#[test]
fn entries_keep_writable_bits_and_read_back_by_halves() {
    let mut io = Ioapic::new();
    program(&mut io, 3, 0xff00_0000_0000_ffff);
    // Delivery status (12) and remote IRR (14) are the IOAPIC's.
    assert_eq!(io.entry(3), 0xff00_0000_0000_afff);
    assert_eq!(read_reg(&mut io, 0x16), 0xafff);
    assert_eq!(read_reg(&mut io, 0x17), 0xff00_0000);
    // IOREGSEL is 8 bits; a byte read of it works.
    select(&mut io, 0x1_17);
    assert_eq!(io.mmio_read(0, 1), 0x17);
}

#[test]
fn edge_lines_send_on_rising_edges_only_and_lose_masked_edges() {
    let mut io = Ioapic::new();
    program(&mut io, 1, (2u64 << 56) | 0x31);
    let sent = line(&mut io, 1, Source::User, true);
    assert_eq!(sent.len(), 1);
    let m = sent[0];
    assert_eq!(
        (m.vector, m.mode, m.level),
        (0x31, DeliveryMode::Fixed, false)
    );
    assert_eq!((m.dest.id, m.dest.logical), (2, false));
    assert!(
        line(&mut io, 1, Source::User, true).is_empty(),
        "still high: no edge"
    );
    assert!(line(&mut io, 1, Source::User, false).is_empty());
    assert_eq!(line(&mut io, 1, Source::User, true).len(), 1, "a new edge");
    // Masked: the edge is lost, and unmasking does not bring it back.
    line(&mut io, 1, Source::User, false);
    program(&mut io, 1, entry::MASKED | 0x31);
    assert!(line(&mut io, 1, Source::User, true).is_empty());
    assert!(program(&mut io, 1, 0x31).is_empty());
}

#[test]
fn level_lines_send_once_until_eoi_and_again_while_still_asserted() {
    let mut io = Ioapic::new();
    let level = entry::LEVEL | 0x41;
    program(&mut io, 9, level);
    let sent = line(&mut io, 9, Source::User, true);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].level);
    assert_ne!(io.entry(9) & entry::REMOTE_IRR, 0);
    assert!(io.is_level_vector(0x41));
    // Still asserted, remote IRR set: nothing more.
    assert!(line(&mut io, 9, Source::User, true).is_empty());
    // EOI with the line still high: sent again.
    let mut again = Vec::new();
    io.eoi(0x41, &mut |m| again.push(m));
    assert_eq!(again.len(), 1);
    // Lowered, then EOI: remote IRR clears, nothing is sent.
    line(&mut io, 9, Source::User, false);
    let mut none = Vec::new();
    io.eoi(0x41, &mut |m| none.push(m));
    assert!(none.is_empty());
    assert_eq!(io.entry(9) & entry::REMOTE_IRR, 0);
    // The EOI of another vector leaves a pending remote IRR alone.
    line(&mut io, 9, Source::User, true);
    io.eoi(0x42, &mut |_| panic!("not this vector"));
    assert_ne!(io.entry(9) & entry::REMOTE_IRR, 0);
}

#[test]
fn a_level_line_asserted_while_masked_is_sent_when_unmasked() {
    let mut io = Ioapic::new();
    program(&mut io, 10, entry::MASKED | entry::LEVEL | 0x50);
    assert!(line(&mut io, 10, Source::User, true).is_empty());
    let sent = program(&mut io, 10, entry::LEVEL | 0x50);
    assert_eq!(sent.len(), 1);
}

#[test]
fn switching_an_entry_to_edge_clears_a_stuck_remote_irr() {
    let mut io = Ioapic::new();
    program(&mut io, 5, entry::LEVEL | 0x60);
    line(&mut io, 5, Source::User, true);
    assert_ne!(io.entry(5) & entry::REMOTE_IRR, 0);
    program(&mut io, 5, 0x60);
    assert_eq!(io.entry(5) & entry::REMOTE_IRR, 0);
}

#[test]
fn a_line_is_the_or_of_its_sources() {
    let mut io = Ioapic::new();
    program(&mut io, 2, entry::LEVEL | 0x70);
    assert_eq!(line(&mut io, 2, Source::Pit, true).len(), 1);
    line(&mut io, 2, Source::User, true);
    assert!(!io.set_line(2, Source::Pit, false, &mut |_| {}).is_none());
    // User space still holds it high: the EOI re-sends.
    let mut sent = Vec::new();
    io.eoi(0x70, &mut |m| sent.push(m));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        io.set_line(2, Source::User, false, &mut |_| {}),
        Some(false)
    );
    assert_eq!(io.set_line(PINS, Source::User, true, &mut |_| {}), None);
}

#[test]
fn state_round_trips_and_a_restored_pending_line_is_sent() {
    let mut io = Ioapic::new();
    program(&mut io, 7, entry::LEVEL | (1u64 << 56) | 0x44);
    let mut s = io.state();
    assert_eq!(s.redirtbl[7], entry::LEVEL | (1u64 << 56) | 0x44);
    // A saved line that was asserted, not yet sent.
    s.irr = 1 << 7;
    let mut other = Ioapic::new();
    let mut sent = Vec::new();
    other.set_state(&s, &mut |m| sent.push(m));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].dest.id, 1);
    assert_eq!(
        other.state().redirtbl[7] & !entry::REMOTE_IRR,
        s.redirtbl[7]
    );
    assert!(other.claims(DEFAULT_BASE + 0x10) && !other.claims(DEFAULT_BASE + 0x100));
}
