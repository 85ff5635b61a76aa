//! `module/irq/lapic.rs` and `module/irq/delivery.rs`: the local APIC's
//! registers, priorities, IPIs and timer (SDM Vol. 3A chapter 11), as KVM
//! emulates them.

use crate::irq::delivery::{DeliveryMode, Destination, Message, Msi, Receiver, Shorthand};
use crate::irq::lapic::{
    bus_cycle_ns_valid, reg, tsc_deadline_ns, x2apic_ldr, Effect, Gp, Lapic, Summary, TimerMode,
    MIN_PERIOD_NS, MSR_TSC_DEADLINE, VERSION, X2APIC_MSR_FIRST,
};

const NOW: u64 = 1_000_000;

fn msr(offset: u32) -> u32 {
    X2APIC_MSR_FIRST + (offset >> 4)
}

/// An APIC software-enabled through SVR (spurious vector 0xff).
fn enabled(vcpu_id: u32) -> Lapic {
    let mut a = Lapic::new(vcpu_id, true);
    assert_eq!(
        a.mmio_write(reg::SVR.into(), 4, 0x1ff, NOW),
        Effect::Reevaluate
    );
    a
}

fn read(a: &Lapic, offset: u32) -> u32 {
    a.mmio_read(offset.into(), 4, NOW) as u32
}

fn write(a: &mut Lapic, offset: u32, value: u32) -> Effect {
    a.mmio_write(offset.into(), 4, value, NOW)
}

#[test]
fn reset_state_matches_the_sdm_and_kvm() {
    let a = Lapic::new(3, false);
    assert_eq!(read(&a, reg::ID), 3 << 24);
    assert_eq!(read(&a, reg::VERSION), VERSION);
    assert_eq!(VERSION & 0xff, 0x14);
    assert_eq!((VERSION >> 16) & 0xff, 5, "six LVT entries");
    assert_eq!(read(&a, reg::SVR), 0xff, "software-disabled");
    assert!(!a.software_enabled());
    assert_eq!(read(&a, reg::DFR), 0xffff_ffff, "flat model");
    for lvt in [0x320, 0x330, 0x340, 0x350, 0x360, 0x370] {
        assert_eq!(read(&a, lvt), 1 << 16, "LVT {lvt:#x} masked");
    }
    assert_eq!(read(&a, reg::TPR), 0);
    assert_eq!(a.pending(), None);
}

#[test]
fn fixed_interrupts_are_delivered_by_priority_class_against_ppr() {
    let mut a = enabled(0);
    assert!(a.accept_fixed(0x41, false));
    assert!(a.accept_fixed(0x82, false));
    assert_eq!(a.pending(), Some(0x82), "highest vector first");
    a.acknowledge(0x82);
    assert!(a.in_isr(0x82) && !a.in_irr(0x82));
    assert_eq!(read(&a, reg::PPR), 0x80, "PPR is the in-service class");
    assert_eq!(a.pending(), None, "0x41 is below the in-service class");
    // A higher class than the one in service nests.
    a.accept_fixed(0x91, false);
    assert_eq!(a.pending(), Some(0x91));
    a.acknowledge(0x91);
    // EOI retires the highest in-service vector first.
    assert_eq!(write(&mut a, reg::EOI, 0), Effect::EdgeEoi(0x91));
    assert!(!a.in_isr(0x91) && a.in_isr(0x82));
    write(&mut a, reg::EOI, 0);
    assert_eq!(read(&a, reg::PPR), 0);
    assert_eq!(a.pending(), Some(0x41));
    // An EOI with nothing in service changes nothing.
    a.acknowledge(0x41);
    write(&mut a, reg::EOI, 0);
    assert_eq!(write(&mut a, reg::EOI, 0), Effect::None);
}

#[test]
fn tpr_masks_classes_up_to_its_own_and_cr8_is_its_high_nibble() {
    let mut a = enabled(0);
    a.accept_fixed(0x55, false);
    assert_eq!(a.set_tpr(0x50), Effect::None);
    assert_eq!(read(&a, reg::PPR), 0x50);
    assert_eq!(a.pending(), None, "class 5 is not above TPR class 5");
    assert_eq!(a.set_tpr(0x40), Effect::Reevaluate, "priority dropped");
    assert_eq!(a.pending(), Some(0x55));
    // TPR bits 7:0 only; the register reads what was written.
    write(&mut a, reg::TPR, 0x1234_5667);
    assert_eq!(read(&a, reg::TPR), 0x67);
    assert_eq!(a.tpr(), 0x67);
}

/// The summary the run loop reads without the lock follows IRR (any vector
/// requested, masked or not), LINT0's ExtINT and the TPR, and survives its
/// packing into a word.
#[test]
fn the_lock_free_summary_follows_irr_lint0_and_the_tpr() {
    let mut a = enabled(0);
    // LINT0 starts as the PIC's virtual wire (ExtINT, unmasked).
    let s = a.summary();
    assert_eq!((s.requests, s.accepts_pic, s.tpr), (false, true, 0));
    a.accept_fixed(0x55, false);
    a.set_tpr(0x60);
    write(&mut a, reg::LVT_LINT0, 0x1_0700);
    let s = a.summary();
    assert!(s.requests, "0x55 is requested, though the TPR masks it");
    assert_eq!(a.pending(), None);
    assert_eq!((s.accepts_pic, s.tpr), (false, 0x60), "LINT0 masked");
    assert_eq!(Summary::from_word(s.to_word()), s);
    a.set_tpr(0);
    a.acknowledge(0x55);
    assert!(!a.summary().requests, "IRR empty once the vector is taken");
    for s in [
        Summary {
            requests: true,
            accepts_pic: false,
            tpr: 0xff,
        },
        Summary {
            requests: false,
            accepts_pic: true,
            tpr: 0x01,
        },
    ] {
        assert_eq!(Summary::from_word(s.to_word()), s);
    }
}

#[test]
fn illegal_vectors_and_a_disabled_apic_accept_nothing() {
    let mut a = enabled(0);
    assert!(!a.accept_fixed(15, false), "vectors 0-15 are illegal");
    assert!(a.accept_fixed(16, false));
    let mut off = Lapic::new(0, false);
    off.set_base(false, false);
    assert!(!off.accept_fixed(0x30, false));
    assert_eq!(off.pending(), None);
}

#[test]
fn level_triggered_vectors_set_tmr_and_their_eoi_reaches_the_ioapic() {
    let mut a = enabled(0);
    a.accept_fixed(0x61, true);
    a.acknowledge(0x61);
    assert_eq!(read(&a, reg::TMR + 0x30) & 2, 2, "TMR bit 0x61");
    assert_eq!(write(&mut a, reg::EOI, 0), Effect::LevelEoi(0x61));
    // Re-accepted edge-triggered, the TMR bit clears.
    a.accept_fixed(0x61, false);
    assert_eq!(read(&a, reg::TMR + 0x30) & 2, 0);
}

#[test]
fn disabling_the_apic_in_svr_masks_every_lvt_and_keeps_them_masked() {
    let mut a = enabled(0);
    write(&mut a, reg::LVT_LINT0, 0x700);
    assert_eq!(read(&a, reg::LVT_LINT0), 0x700, "ExtINT, unmasked");
    write(&mut a, reg::SVR, 0xff);
    assert_eq!(read(&a, reg::LVT_LINT0), 0x1_0700);
    // While software-disabled, writes cannot unmask.
    write(&mut a, reg::LVT_LINT0, 0x700);
    assert_eq!(read(&a, reg::LVT_LINT0), 0x1_0700);
}

#[test]
fn lvt_entries_keep_only_their_writable_bits() {
    let mut a = enabled(0);
    // The error entry has no delivery mode, trigger or polarity.
    write(&mut a, reg::LVT_ERROR, 0xffff_ffff);
    assert_eq!(read(&a, reg::LVT_ERROR), 0x1_00ff);
    // LINT1: polarity and trigger, but not the remote IRR (bit 14).
    write(&mut a, reg::LVT_LINT1, 0xffff_ffff);
    assert_eq!(read(&a, reg::LVT_LINT1), 0x1_a7ff);
    // The timer, with TSC-deadline offered: mode bits 18:17.
    write(&mut a, reg::LVT_TIMER, 0xffff_ffff);
    assert_eq!(read(&a, reg::LVT_TIMER), 0x7_00ff);
    // Without it, only bit 17.
    let mut b = Lapic::new(0, false);
    write(&mut b, reg::SVR, 0x100);
    write(&mut b, reg::LVT_TIMER, 0xffff_ffff);
    assert_eq!(read(&b, reg::LVT_TIMER), 0x3_00ff);
}

#[test]
fn lint0_in_extint_mode_is_the_pic_virtual_wire() {
    let mut a = enabled(1);
    assert!(!a.accepts_pic_interrupts(), "masked at reset");
    write(&mut a, reg::LVT_LINT0, 0x700);
    assert!(a.accepts_pic_interrupts());
    // vCPU 0's LINT0 starts as the virtual wire (KVM's LINT0_REENABLED).
    assert!(enabled(0).accepts_pic_interrupts());
    assert_eq!(read(&Lapic::new(0, false), reg::LVT_LINT0), 0x700);
    write(&mut a, reg::LVT_LINT1, 0x400);
    assert_eq!(a.lint(1), Some(DeliveryMode::Nmi));
    // A globally disabled APIC passes INTR straight to the processor.
    a.set_base(false, false);
    assert!(a.accepts_pic_interrupts());
}

#[test]
fn mmio_reads_follow_width_and_offset_and_writes_need_32_bits() {
    let mut a = enabled(2);
    // A byte of the ID register: bits 31:24 are the ID.
    assert_eq!(a.mmio_read(reg::ID as u64 + 3, 1, NOW), 2);
    // Reads across a register's end, and of reserved offsets, give 0.
    assert_eq!(a.mmio_read(reg::ID as u64 + 2, 4, NOW), 0);
    assert_eq!(a.mmio_read(0x10, 4, NOW), 0);
    assert_eq!(a.mmio_read(reg::EOI as u64, 4, NOW), 0, "EOI is write-only");
    // A 16-bit write is dropped.
    assert_eq!(a.mmio_write(reg::TPR as u64, 2, 0x20, NOW), Effect::None);
    assert_eq!(read(&a, reg::TPR), 0);
    // Writes of read-only registers are dropped.
    write(&mut a, reg::VERSION, 0);
    write(&mut a, reg::PPR, 0xff);
    assert_eq!(read(&a, reg::VERSION), VERSION);
    assert_eq!(read(&a, reg::PPR), 0);
    // The xAPIC ID and the logical registers are writable in xAPIC mode.
    write(&mut a, reg::ID, 0x0700_00ff);
    assert_eq!(read(&a, reg::ID), 0x0700_0000);
    write(&mut a, reg::LDR, 0x0100_00ff);
    assert_eq!(read(&a, reg::LDR), 0x0100_0000);
    write(&mut a, reg::DFR, 0);
    assert_eq!(
        read(&a, reg::DFR),
        0x0fff_ffff,
        "cluster model; bits 27:0 read 1"
    );
}

#[test]
fn the_icr_sends_ipis_with_the_destination_in_icr_high() {
    let mut a = enabled(1);
    write(&mut a, reg::ICR_HIGH, 0x0300_0000);
    // Fixed, physical, vector 0x40, delivery status set by the guest: ignored.
    let e = write(&mut a, reg::ICR_LOW, 0x1040);
    let Effect::Ipi(m) = e else {
        panic!("no IPI: {e:?}");
    };
    assert_eq!(m.vector, 0x40);
    assert_eq!(m.mode, DeliveryMode::Fixed);
    assert_eq!(m.dest.id, 3);
    assert!(!m.dest.logical && !m.dest.x2apic_format);
    assert_eq!(m.dest.source, Some(1));
    assert_eq!(read(&a, reg::ICR_LOW), 0x40, "delivery status reads idle");
    // INIT, logical, all excluding self.
    let Effect::Ipi(m) = write(&mut a, reg::ICR_LOW, 0xc_4d00) else {
        panic!()
    };
    assert_eq!(m.mode, DeliveryMode::Init);
    assert!(m.assert && m.dest.logical);
    assert_eq!(m.dest.shorthand, Shorthand::AllExcludingSelf);
    // INIT level de-assert: level-triggered with the level bit clear.
    let Effect::Ipi(m) = write(&mut a, reg::ICR_LOW, 0x8500) else {
        panic!()
    };
    assert!(!m.assert);
    // SIPI, vector 0x9a: start at 0x9a000.
    let Effect::Ipi(m) = write(&mut a, reg::ICR_LOW, 0x469a) else {
        panic!()
    };
    assert_eq!((m.mode, m.vector), (DeliveryMode::StartUp, 0x9a));
    // The reserved delivery mode 3 sends nothing.
    assert_eq!(write(&mut a, reg::ICR_LOW, 0x340), Effect::None);
    // The xAPIC ICR keeps reserved bits as written, all but the delivery
    // status (KVM's behaviour; Linux's xapic_state_test reads them back);
    // its high half only the destination byte.
    write(&mut a, reg::ICR_HIGH, 0xa5a5_a5a5);
    write(&mut a, reg::ICR_LOW, 0xa5a5_b0a5);
    assert_eq!(read(&a, reg::ICR_LOW), 0xa5a5_a0a5);
    assert_eq!(read(&a, reg::ICR_HIGH), 0xa500_0000);
}

fn rx(apic_id: u32, x2apic: bool, ldr: u32, dfr_model: u32) -> Receiver {
    Receiver {
        apic_id,
        x2apic,
        ldr,
        dfr_model,
    }
}

fn dest(id: u32, logical: bool, x2apic_format: bool) -> Destination {
    Destination {
        id,
        x2apic_format,
        logical,
        shorthand: Shorthand::None,
        source: Some(0),
        x2apic_broadcast_quirk: true,
    }
}

#[test]
fn destinations_match_physically_logically_and_by_shorthand() {
    // Physical: by ID; 0xff is the xAPIC broadcast, 0xffffffff the x2APIC one.
    assert!(dest(2, false, false).matches(&rx(2, false, 0, 0xf)));
    assert!(!dest(2, false, false).matches(&rx(3, false, 0, 0xf)));
    assert!(dest(0xff, false, false).matches(&rx(3, false, 0, 0xf)));
    assert!(dest(0xff, false, false).matches(&rx(300, true, x2apic_ldr(300), 0)));
    assert!(!dest(0xff, false, true).matches(&rx(300, true, x2apic_ldr(300), 0)));
    assert!(dest(0xffff_ffff, false, true).matches(&rx(300, true, x2apic_ldr(300), 0)));
    // Without KVM's broadcast quirk (an IPI, or the quirk turned off), an
    // xAPIC broadcast reaches xAPIC-mode APICs only; an x2APIC-mode one
    // compares 0xff with its ID.
    let mut d = dest(0xff, false, false);
    d.x2apic_broadcast_quirk = false;
    assert!(d.matches(&rx(3, false, 0, 0xf)));
    assert!(!d.matches(&rx(300, true, x2apic_ldr(300), 0)));
    assert!(d.matches(&rx(0xff, true, x2apic_ldr(0xff), 0)));
    // Flat logical: any common bit of the 8-bit mask.
    assert!(dest(0b0110, true, false).matches(&rx(0, false, 0b0100 << 24, 0xf)));
    assert!(!dest(0b0110, true, false).matches(&rx(0, false, 0b1000 << 24, 0xf)));
    // Cluster logical: same cluster (bits 7:4), a common bit in 3:0.
    assert!(dest(0x21, true, false).matches(&rx(0, false, 0x23 << 24, 0)));
    assert!(!dest(0x21, true, false).matches(&rx(0, false, 0x13 << 24, 0)));
    assert!(!dest(0x21, true, false).matches(&rx(0, false, 0x22 << 24, 0)));
    // x2APIC logical: cluster in bits 31:16, 16 processors in 15:0.
    let r = rx(0x25, true, x2apic_ldr(0x25), 0);
    assert_eq!(x2apic_ldr(0x25), 0x2_0020);
    assert!(dest(0x2_0020, true, true).matches(&r));
    assert!(!dest(0x1_0020, true, true).matches(&r));
    // Shorthands ignore the destination field.
    let mut d = dest(9, false, false);
    d.shorthand = Shorthand::SelfOnly;
    assert!(d.matches(&rx(0, false, 0, 0xf)) && !d.matches(&rx(1, false, 0, 0xf)));
    d.shorthand = Shorthand::AllExcludingSelf;
    assert!(!d.matches(&rx(0, false, 0, 0xf)) && d.matches(&rx(1, false, 0, 0xf)));
    d.shorthand = Shorthand::AllIncludingSelf;
    assert!(d.matches(&rx(0, false, 0, 0xf)) && d.matches(&rx(1, false, 0, 0xf)));
}

#[test]
fn a_software_disabled_apic_is_in_no_logical_group_but_takes_physical_messages() {
    let mut a = Lapic::new(1, false);
    write(&mut a, reg::LDR, 0x0100_0000);
    assert!(!a.is_destination(&dest(1, true, false)));
    assert!(a.is_destination(&dest(1, false, false)));
    write(&mut a, reg::SVR, 0x1ff);
    assert!(a.is_destination(&dest(1, true, false)));
}

#[test]
fn msis_decode_into_messages() {
    // Fixed, physical destination 5, vector 0x33, edge.
    let m = Msi {
        address: 0xfee0_5000,
        data: 0x33,
    }
    .message()
    .unwrap();
    assert_eq!(
        (m.vector, m.mode, m.level),
        (0x33, DeliveryMode::Fixed, false)
    );
    assert_eq!((m.dest.id, m.dest.logical), (5, false));
    // Logical, lowest priority, level-triggered.
    let m = Msi {
        address: 0xfee0_3004,
        data: 0xc141,
    }
    .message()
    .unwrap();
    assert_eq!(m.mode, DeliveryMode::LowestPriority);
    assert!(m.level && m.dest.logical);
    // Level-triggered with the level bit (14) clear, as QEMU's IOAPIC
    // writes its pins' messages: still an assert (KVM's `kvm_set_msi_irq`).
    let m = Msi {
        address: 0xfee0_0000,
        data: 0x8051,
    }
    .message()
    .unwrap();
    assert!(m.level && m.assert);
    // The high address does not extend the destination without
    // KVM_CAP_X2APIC_API's format (KVM's `x86_msi_msg_get_destid`).
    let m = Msi {
        address: 0x0000_0100_fee0_2000,
        data: 0x20,
    }
    .message()
    .unwrap();
    assert_eq!(m.dest.id, 0x2);
    assert!(!m.dest.x2apic_format);
    // With it, the high address's bits 31:8 are the destination's 31:8;
    // its bits 7:0 must be clear.
    let wide = Msi {
        address: 0x0000_0100_fee0_2000,
        data: 0x20,
    };
    let m = wide.message_in(true).unwrap();
    assert_eq!(m.dest.id, 0x102);
    assert!(m.dest.x2apic_format);
    let bad = Msi {
        address: 0x0000_0001_fee0_2000,
        data: 0x20,
    };
    assert!(bad.message_in(true).is_none() && !bad.valid_in(true));
    assert_eq!(bad.message().unwrap().dest.id, 0x2);
    // Outside the interrupt window, or a reserved delivery mode: nothing.
    assert_eq!(
        Msi {
            address: 0xfed0_0000,
            data: 0x20
        }
        .message(),
        None
    );
    assert_eq!(
        Msi {
            address: 0xfee0_0000,
            data: 0x320
        }
        .message(),
        None
    );
}

#[test]
fn x2apic_mode_has_msrs_a_32_bit_id_and_a_derived_ldr() {
    let mut a = enabled(0x25);
    assert_eq!(
        a.msr_read(msr(reg::ID), NOW),
        Err(Gp),
        "MSRs need x2APIC mode"
    );
    assert!(a.base_transition_ok(true, true));
    a.set_base(true, true);
    assert!(a.x2apic());
    assert_eq!(a.msr_read(msr(reg::ID), NOW), Ok(0x25));
    assert_eq!(a.msr_read(msr(reg::LDR), NOW), Ok(0x2_0020));
    assert_eq!(a.msr_read(msr(reg::VERSION), NOW), Ok(VERSION.into()));
    // The page is no longer decoded.
    assert_eq!(a.mmio_read(reg::ID.into(), 4, NOW), 0);
    // Read-only, absent and write-only registers fault.
    assert_eq!(a.msr_write(msr(reg::ID), 1, NOW), Err(Gp));
    assert_eq!(a.msr_write(msr(reg::LDR), 1, NOW), Err(Gp));
    assert_eq!(a.msr_read(msr(reg::DFR), NOW), Err(Gp));
    assert_eq!(a.msr_read(msr(reg::ICR_HIGH), NOW), Err(Gp));
    assert_eq!(a.msr_read(msr(reg::EOI), NOW), Err(Gp));
    assert_eq!(a.msr_read(msr(reg::SELF_IPI), NOW), Err(Gp));
    assert_eq!(
        a.msr_read(msr(reg::LVT_CMCI), NOW),
        Err(Gp),
        "no CMCI entry"
    );
    // Reserved bits: 63:32 anywhere but the ICR, non-zero EOI.
    assert_eq!(a.msr_write(msr(reg::TPR), 1 << 32, NOW), Err(Gp));
    assert_eq!(a.msr_write(msr(reg::EOI), 1, NOW), Err(Gp));
    assert_eq!(a.msr_write(msr(reg::EOI), 0, NOW), Ok(Effect::None));
    assert_eq!(a.msr_write(msr(reg::TPR), 0x30, NOW), Ok(Effect::None));
    assert_eq!(a.tpr(), 0x30);
    // No way back to xAPIC without disabling first; nor disabled to x2APIC.
    assert!(!a.base_transition_ok(true, false));
    assert!(a.base_transition_ok(false, false));
    a.set_base(false, false);
    assert!(!a.base_transition_ok(true, true));
    a.set_base(true, false);
    assert_eq!(read(&a, reg::ID), 0x25 << 24, "re-enabled from reset");
    // The VMM (a restore) may go straight back to xAPIC mode: the ID is
    // put back in xAPIC format, as KVM does.
    a.set_base(true, true);
    assert_eq!(a.msr_read(msr(reg::ID), NOW), Ok(0x25));
    a.set_base(true, false);
    assert!(!a.x2apic());
    assert_eq!(read(&a, reg::ID), 0x25 << 24, "x2APIC to xAPIC by the VMM");
}

#[test]
fn the_x2apic_icr_is_one_64_bit_msr_and_self_ipi_sends_to_self() {
    let mut a = enabled(7);
    a.set_base(true, true);
    let e = a.msr_write(msr(reg::ICR_LOW), (0x1_0020 << 32) | 0x0850, NOW);
    let Ok(Effect::Ipi(m)) = e else {
        panic!("{e:?}")
    };
    assert_eq!(m.dest.id, 0x1_0020);
    assert!(m.dest.logical && m.dest.x2apic_format);
    assert_eq!(
        a.msr_read(msr(reg::ICR_LOW), NOW),
        Ok((0x1_0020 << 32) | 0x0850)
    );
    // Reserved ICR bits (13, 17:16, 31:20) fault.
    assert_eq!(a.msr_write(msr(reg::ICR_LOW), 1 << 13, NOW), Err(Gp));
    assert_eq!(a.msr_write(msr(reg::ICR_LOW), 1 << 20, NOW), Err(Gp));
    let Ok(Effect::Ipi(m)) = a.msr_write(msr(reg::SELF_IPI), 0x45, NOW) else {
        panic!()
    };
    assert_eq!((m.vector, m.dest.shorthand), (0x45, Shorthand::SelfOnly));
    assert!(m.dest.matches(&a.receiver()));
    assert_eq!(a.msr_write(msr(reg::SELF_IPI), 0x145, NOW), Err(Gp));
}

#[test]
fn the_one_shot_timer_counts_down_at_1ghz_over_the_divisor_and_fires_once() {
    let mut a = enabled(0);
    write(&mut a, reg::LVT_TIMER, 0x30);
    write(&mut a, reg::TIMER_DIVIDE, 0b0001); // divide by 4
    assert_eq!(a.divisor(), 4);
    assert_eq!(
        write(&mut a, reg::TIMER_INITIAL, 1000),
        Effect::TimerChanged
    );
    assert_eq!(a.timer_deadline(), Some(NOW + 4000));
    assert_eq!(a.current_count(NOW + 400), 900);
    assert!(!a.timer_expired(NOW + 3999), "not yet due");
    assert!(a.timer_expired(NOW + 4000));
    assert!(a.in_irr(0x30));
    assert_eq!(a.timer_deadline(), None);
    assert_eq!(a.current_count(NOW + 5000), 0);
    assert!(!a.timer_expired(NOW + 9000), "one shot");
    // Writing 0 stops it.
    write(&mut a, reg::TIMER_INITIAL, 10);
    write(&mut a, reg::TIMER_INITIAL, 0);
    assert_eq!(a.timer_deadline(), None);
}

/// KVM_CAP_X86_APIC_BUS_CYCLES_NS: a 40 ns bus (25 MHz) makes every
/// count 40 ns times the divisor, for the deadline and for TMCCT; the
/// cycle is refused at 0 and where the longest count overflows.
#[test]
fn the_timer_counts_bus_cycles_of_the_length_the_vmm_set() {
    let mut a = enabled(0);
    a.set_bus_cycle_ns(40);
    write(&mut a, reg::LVT_TIMER, 0x30);
    write(&mut a, reg::TIMER_DIVIDE, 0b0000); // divide by 2
    write(&mut a, reg::TIMER_INITIAL, 1000);
    assert_eq!(a.timer_deadline(), Some(NOW + 80_000));
    assert_eq!(a.current_count(NOW + 8000), 900);
    assert!(!bus_cycle_ns_valid(0));
    assert!(bus_cycle_ns_valid(1));
    assert!(bus_cycle_ns_valid(u64::MAX / (u64::from(u32::MAX) * 128)));
    assert!(!bus_cycle_ns_valid(
        u64::MAX / (u64::from(u32::MAX) * 128) + 1
    ));
}

#[test]
fn divide_configurations_decode_to_1_through_128() {
    let mut a = enabled(0);
    let expect = [
        (0b0000, 2),
        (0b0001, 4),
        (0b0010, 8),
        (0b0011, 16),
        (0b1000, 32),
        (0b1001, 64),
        (0b1010, 128),
        (0b1011, 1),
    ];
    for (tdcr, divisor) in expect {
        write(&mut a, reg::TIMER_DIVIDE, tdcr);
        assert_eq!(a.divisor(), divisor, "TDCR {tdcr:#b}");
    }
    write(&mut a, reg::TIMER_DIVIDE, 0xffff_ffff);
    assert_eq!(read(&a, reg::TIMER_DIVIDE), 0xb);
}

#[test]
fn the_periodic_timer_reloads_skips_missed_periods_and_has_a_floor() {
    let mut a = enabled(0);
    write(&mut a, reg::LVT_TIMER, (1 << 17) | 0x31);
    assert_eq!(a.timer_mode(), TimerMode::Periodic);
    write(&mut a, reg::TIMER_DIVIDE, 0b1011); // divide by 1
    write(&mut a, reg::TIMER_INITIAL, 500_000);
    assert_eq!(a.timer_deadline(), Some(NOW + 500_000));
    assert!(a.timer_expired(NOW + 500_000));
    assert_eq!(a.timer_deadline(), Some(NOW + 1_000_000));
    // The host was late by two and a half periods: the next deadline is on the grid.
    a.acknowledge(0x31);
    assert!(a.timer_expired(NOW + 2_250_000));
    assert_eq!(a.timer_deadline(), Some(NOW + 2_500_000));
    // A guest asking for 1 ns periods gets KVM's 200 µs.
    write(&mut a, reg::TIMER_INITIAL, 1);
    assert_eq!(a.timer_deadline(), Some(NOW + MIN_PERIOD_NS));
}

#[test]
fn a_masked_timer_runs_but_raises_nothing() {
    let mut a = enabled(0);
    write(&mut a, reg::LVT_TIMER, (1 << 16) | 0x30);
    write(&mut a, reg::TIMER_INITIAL, 10);
    assert!(!a.timer_expired(NOW + 100));
    assert!(!a.in_irr(0x30));
}

#[test]
fn tsc_deadline_mode_arms_from_the_msr_and_ignores_tmict() {
    let mut a = enabled(0);
    assert_eq!(MSR_TSC_DEADLINE, 0x6e0);
    write(&mut a, reg::LVT_TIMER, (2 << 17) | 0x32);
    assert_eq!(a.timer_mode(), TimerMode::TscDeadline);
    assert_eq!(write(&mut a, reg::TIMER_INITIAL, 100), Effect::None);
    assert_eq!(read(&a, reg::TIMER_INITIAL), 0);
    assert_eq!(a.set_tsc_deadline(5000, NOW + 50), Effect::TimerChanged);
    assert_eq!(a.tsc_deadline(), 5000);
    assert_eq!(a.current_count(NOW), 0, "TMCCT reads 0 in this mode");
    assert!(a.timer_expired(NOW + 50));
    assert!(a.in_irr(0x32));
    assert_eq!(a.tsc_deadline(), 0, "disarmed once fired");
    // Leaving the mode stops the timer.
    a.set_tsc_deadline(9000, NOW + 100);
    write(&mut a, reg::LVT_TIMER, 0x32);
    assert_eq!(a.timer_deadline(), None);
    assert_eq!(a.tsc_deadline(), 0);
    assert_eq!(
        a.set_tsc_deadline(1, NOW),
        Effect::None,
        "ignored outside the mode"
    );
    // Without the CPUID bit the mode cannot be selected.
    let mut b = Lapic::new(0, false);
    write(&mut b, reg::SVR, 0x100);
    write(&mut b, reg::LVT_TIMER, (2 << 17) | 0x32);
    assert_eq!(b.timer_mode(), TimerMode::OneShot);
}

#[test]
fn tsc_deadlines_convert_to_host_time_by_the_guest_tsc_rate() {
    // 2 GHz TSC: 2000 ticks are 1 µs.
    assert_eq!(tsc_deadline_ns(12_000, 10_000, NOW, 2_000_000), NOW + 1000);
    assert_eq!(
        tsc_deadline_ns(5, 10_000, NOW, 2_000_000),
        NOW,
        "already passed"
    );
    assert_eq!(tsc_deadline_ns(u64::MAX, 0, NOW, 1), u64::MAX, "saturates");
}

#[test]
fn lapic_state_round_trips_with_the_current_count_and_the_id_format() {
    let mut a = enabled(4);
    write(&mut a, reg::TIMER_DIVIDE, 0b1011);
    write(&mut a, reg::TIMER_INITIAL, 1000);
    a.accept_fixed(0x50, true);
    let regs = a.state(NOW + 300, false);
    assert_eq!(regs[(reg::TIMER_CURRENT / 4) as usize], 700);
    let mut b = Lapic::new(4, true);
    assert!(b.set_state(&regs, NOW, false));
    assert!(b.in_irr(0x50));
    assert_eq!(
        b.timer_deadline(),
        Some(NOW + 700),
        "restarted from the saved TMCCT"
    );
    // As KVM: a saved count above TMICT is TMICT; 0 is a one-shot due at
    // once, or a periodic timer's whole period.
    let mut saved = regs;
    saved[(reg::TIMER_CURRENT / 4) as usize] = 5000;
    assert!(b.set_state(&saved, NOW, false));
    assert_eq!(b.timer_deadline(), Some(NOW + 1000), "TMCCT above TMICT");
    saved[(reg::TIMER_CURRENT / 4) as usize] = 0;
    assert!(b.set_state(&saved, NOW, false));
    assert_eq!(b.timer_deadline(), Some(NOW), "a one-shot with TMCCT 0");
    saved[(reg::LVT_TIMER / 4) as usize] = 0x2_0030;
    saved[(reg::TIMER_INITIAL / 4) as usize] = 1_000_000;
    assert!(b.set_state(&saved, NOW, false));
    assert_eq!(
        b.timer_deadline(),
        Some(NOW + 1_000_000),
        "a periodic timer with TMCCT 0"
    );
    // x2APIC: the ID in bits 31:24 unless the 32-bit format was asked for.
    a.set_base(true, true);
    assert_eq!(a.state(NOW, false)[(reg::ID / 4) as usize], 4 << 24);
    assert_eq!(a.state(NOW, true)[(reg::ID / 4) as usize], 4);
    let mut c = enabled(4);
    c.set_base(true, true);
    let mut wrong = c.state(NOW, true);
    wrong[(reg::ID / 4) as usize] = 9;
    assert!(
        !c.set_state(&wrong, NOW, true),
        "another x2APIC ID is refused"
    );
    // The version is the APIC's, whatever the state says.
    let mut odd = a.state(NOW, true);
    odd[(reg::VERSION / 4) as usize] = 0;
    assert!(c.set_state(&odd, NOW, true));
    assert_eq!(c.msr_read(msr(reg::VERSION), NOW), Ok(VERSION.into()));
}

#[test]
fn init_keeps_the_id_and_clears_the_rest() {
    let mut a = enabled(1);
    write(&mut a, reg::ID, 0x0900_0000);
    a.accept_fixed(0x40, false);
    a.init();
    assert_eq!(read(&a, reg::ID), 0x0900_0000);
    assert!(!a.in_irr(0x40) && !a.software_enabled());
    a.reset();
    assert_eq!(read(&a, reg::ID), 0x0100_0000);
}

#[test]
fn messages_carry_level_and_mode_for_the_receiver() {
    // The glue hands a Message to each matching APIC; fixed ones end in IRR.
    let m = Message {
        vector: 0x70,
        mode: DeliveryMode::Fixed,
        level: true,
        assert: true,
        dest: dest(0, false, false),
    };
    let mut a = enabled(0);
    assert!(a.is_destination(&m.dest));
    assert!(a.accept_fixed(m.vector, m.level));
    a.acknowledge(0x70);
    assert_eq!(write(&mut a, reg::EOI, 0), Effect::LevelEoi(0x70));
}
