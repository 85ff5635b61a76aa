//! `module/irq/pic.rs`: the PC's two 8259A PICs (Intel 8259A datasheet;
//! the ELCR of the PIIX).

use crate::irq::ioapic::Source;
use crate::irq::pic::{claims_port, Pic};

/// Initializes both chips as a BIOS or Linux does: edge, cascade, ICW4
/// with 8086 mode; master vectors at 0x20, slave at 0x28; all unmasked.
fn initialized(auto_eoi: bool) -> Pic {
    let mut p = Pic::new();
    let icw4 = 0x01 | if auto_eoi { 0x02 } else { 0 };
    for (cmd, data, base, icw3) in [(0x20, 0x21, 0x20, 0x04), (0xa0, 0xa1, 0x28, 0x02)] {
        p.write(cmd, 0x11);
        p.write(data, base);
        p.write(data, icw3);
        p.write(data, icw4);
        p.write(data, 0x00);
    }
    p
}

fn raise(p: &mut Pic, irq: u32) {
    p.set_irq(irq, Source::User, true).unwrap();
    p.set_irq(irq, Source::User, false).unwrap();
}

const EOI: u8 = 0x20;

#[test]
fn initialization_sets_the_vector_base_and_the_mask_port() {
    let mut p = initialized(false);
    assert_eq!(p.state(false).irq_base, 0x20);
    assert_eq!(p.state(true).irq_base, 0x28);
    assert_eq!(p.state(false).init_state, 0);
    p.write(0x21, 0xfb);
    assert_eq!(p.read(0x21), 0xfb);
    assert!(claims_port(0x4d1) && !claims_port(0x22));
}

#[test]
fn an_edge_is_latched_delivered_with_its_vector_and_blocks_lower_priorities() {
    let mut p = initialized(false);
    assert!(!p.output());
    raise(&mut p, 3);
    assert!(p.output());
    assert_eq!(p.acknowledge(), 0x23);
    assert!(!p.output(), "the edge request is consumed");
    // IRQ 4 (lower priority) waits while 3 is in service; IRQ 1 nests.
    raise(&mut p, 4);
    assert!(!p.output());
    raise(&mut p, 1);
    assert!(p.output());
    assert_eq!(p.acknowledge(), 0x21);
    // Non-specific EOIs retire the highest priority first: 1, then 3.
    p.write(0x20, EOI);
    assert!(!p.output(), "3 still in service");
    p.write(0x20, EOI);
    assert_eq!(p.acknowledge(), 0x24);
}

#[test]
fn masked_edges_are_latched_and_delivered_when_unmasked() {
    let mut p = initialized(false);
    p.write(0x21, 1 << 5);
    raise(&mut p, 5);
    assert!(!p.output());
    p.write(0x21, 0);
    assert_eq!(p.acknowledge(), 0x25);
}

#[test]
fn slave_interrupts_cascade_through_irq2_and_need_two_eois() {
    let mut p = initialized(false);
    raise(&mut p, 10);
    assert!(p.output());
    assert_eq!(p.acknowledge(), 0x2a);
    assert_eq!(
        p.state(false).isr,
        1 << 2,
        "master's cascade input in service"
    );
    assert_eq!(p.state(true).isr, 1 << 2, "slave's input 2 (IRQ 10)");
    // A second slave request waits for both EOIs.
    raise(&mut p, 11);
    assert!(!p.output());
    p.write(0xa0, EOI);
    p.write(0x20, EOI);
    assert!(p.output());
    assert_eq!(p.acknowledge(), 0x2b);
}

#[test]
fn a_request_gone_before_the_acknowledge_is_spurious_irq7() {
    let mut p = initialized(false);
    p.write(0x4d0, 1 << 6);
    p.set_irq(6, Source::User, true);
    assert!(p.output());
    p.set_irq(6, Source::User, false);
    assert!(!p.output());
    assert_eq!(p.acknowledge(), 0x27, "spurious: master base + 7");
    assert_eq!(p.state(false).isr, 0, "a spurious IRQ 7 is not in service");
}

#[test]
fn level_triggered_inputs_follow_their_line_and_the_elcr_masks_fixed_inputs() {
    let mut p = initialized(false);
    p.write(0x4d0, 0xff);
    p.write(0x4d1, 0xff);
    assert_eq!(p.read(0x4d0), 0xf8, "IRQ 0-2 are edge-only");
    assert_eq!(p.read(0x4d1), 0xde, "IRQ 8 and 13 are edge-only");
    p.set_irq(9, Source::User, true);
    assert_eq!(p.acknowledge(), 0x29);
    p.write(0xa0, EOI);
    p.write(0x20, EOI);
    assert!(p.output(), "still asserted: requested again after EOI");
    p.set_irq(9, Source::User, false);
    // The master latched the cascade's edge: its acknowledge finds the
    // slave's request gone, the spurious IRQ 15 (which, as on hardware,
    // leaves the master's input 2 in service for the OS to EOI).
    assert_eq!(p.acknowledge(), 0x2f);
    assert_eq!(p.state(false).isr, 1 << 2);
    p.write(0x20, EOI);
    assert!(!p.output());
}

#[test]
fn auto_eoi_mode_leaves_nothing_in_service() {
    let mut p = initialized(true);
    raise(&mut p, 4);
    assert_eq!(p.acknowledge(), 0x24);
    assert_eq!(p.state(false).isr, 0);
    raise(&mut p, 5);
    assert!(p.output(), "nothing in service blocks it");
}

#[test]
fn rotation_makes_the_serviced_input_the_lowest_priority() {
    let mut p = initialized(false);
    raise(&mut p, 2 + 1); // IRQ 3
    assert_eq!(p.acknowledge(), 0x23);
    // Rotate on non-specific EOI: 3 becomes lowest, 4 highest.
    p.write(0x20, 0xa0);
    assert_eq!(p.state(false).priority_add, 4);
    raise(&mut p, 1);
    raise(&mut p, 6);
    assert_eq!(p.acknowledge(), 0x26, "6 outranks 1 after the rotation");
    // Set priority (OCW2 0xc0 | n): n becomes the lowest.
    p.write(0x20, 0xc0 | 7);
    assert_eq!(p.state(false).priority_add, 0);
    // Specific EOI of 6.
    p.write(0x20, 0x60 | 6);
    assert_eq!(p.state(false).isr, 0);
}

#[test]
fn ocw3_selects_irr_or_isr_and_poll_acknowledges() {
    let mut p = initialized(false);
    p.write(0x21, 0xff);
    raise(&mut p, 5);
    assert_eq!(p.read(0x20), 1 << 5, "IRR by default");
    p.write(0x20, 0x0b);
    assert_eq!(p.read(0x20), 0, "ISR");
    p.write(0x21, 0);
    // Poll: bit 7 and the level, and the request goes into service.
    p.write(0x20, 0x0c);
    assert_eq!(p.read(0x20), 0x85);
    assert_eq!(p.read(0x20), 1 << 5, "the next read is ISR again");
    p.write(0x20, 0x0c);
    assert_eq!(p.read(0x20), 0, "nothing to poll");
}

#[test]
fn special_mask_mode_lets_lower_priorities_through_masked_in_service_ones() {
    let mut p = initialized(false);
    raise(&mut p, 3);
    assert_eq!(p.acknowledge(), 0x23);
    p.write(0x21, 1 << 3);
    p.write(0x20, 0x68); // OCW3: set special mask
    raise(&mut p, 5);
    assert_eq!(p.acknowledge(), 0x25);
}

#[test]
fn icw1_resets_requests_but_keeps_level_ones() {
    let mut p = initialized(false);
    p.write(0x4d0, 1 << 5);
    p.set_irq(5, Source::User, true);
    raise(&mut p, 4);
    p.write(0x20, 0x11);
    assert_eq!(p.state(false).irr, 1 << 5);
    assert_eq!(p.state(false).init_state, 1);
}

#[test]
fn lines_or_their_sources_and_out_of_range_irqs_are_refused() {
    let mut p = initialized(false);
    p.write(0x4d0, 1 << 7);
    p.set_irq(7, Source::Pit, true);
    p.set_irq(7, Source::User, true);
    p.set_irq(7, Source::Pit, false);
    assert!(p.output(), "user space still holds IRQ 7 high");
    assert_eq!(p.set_irq(16, Source::User, true), None);
    // A new edge on a request already latched is coalesced.
    assert_eq!(p.set_irq(3, Source::User, true), Some(true));
    p.set_irq(3, Source::User, false);
    assert_eq!(p.set_irq(3, Source::User, true), Some(false));
}

#[test]
fn state_round_trips_within_the_elcr_mask() {
    let mut p = initialized(false);
    raise(&mut p, 12);
    let master = p.state(false);
    let mut slave = p.state(true);
    let mut q = Pic::new();
    q.set_state(false, &master);
    q.set_state(true, &slave);
    assert_eq!(q, p);
    slave.elcr = 0xff;
    q.set_state(true, &slave);
    assert_eq!(q.state(true).elcr, 0xde);
}
