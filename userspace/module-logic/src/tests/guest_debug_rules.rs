//! `module/x86/guest_debug.rs`: how `KVM_SET_GUEST_DEBUG`'s control is
//! read, as KVM's `kvm_arch_vcpu_ioctl_set_guest_debug`.

use crate::abi::{
    KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_BP, KVM_GUESTDBG_INJECT_DB,
    KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};
use crate::x86::guest_debug::{self, GuestDebug, HwBreakpoints, Inject, SUPPORTED};

/// `parse` with no debug registers given.
fn parse(control: u32) -> Option<(GuestDebug, Option<Inject>)> {
    guest_debug::parse(control, &[0; 8])
}

#[test]
fn flags_count_only_with_enable() {
    let all = KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_BLOCKIRQ;
    assert_eq!(parse(all), Some((GuestDebug::default(), None)));
    let (on, inject) = parse(KVM_GUESTDBG_ENABLE | all).unwrap();
    assert!(on.single_step && on.sw_breakpoints && on.block_irq);
    assert_eq!(inject, None);
    let (step, _) = parse(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP).unwrap();
    assert!(step.single_step && !step.sw_breakpoints && !step.block_irq);
}

#[test]
fn injections_happen_with_or_without_enable_db_first() {
    assert_eq!(
        parse(KVM_GUESTDBG_INJECT_BP).unwrap().1,
        Some(Inject::Breakpoint)
    );
    assert_eq!(
        parse(KVM_GUESTDBG_INJECT_DB).unwrap().1,
        Some(Inject::Debug)
    );
    let both = KVM_GUESTDBG_INJECT_DB | KVM_GUESTDBG_INJECT_BP | KVM_GUESTDBG_ENABLE;
    assert_eq!(parse(both).unwrap().1, Some(Inject::Debug));
}

#[test]
fn hardware_breakpoints_take_dr0_to_dr3_and_dr7() {
    let regs = [
        0x1000,
        0x2000,
        0x3000,
        0x4000,
        0x55,
        0x66,
        0xffff_0ff0,
        0x0f_0002,
    ];
    let control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
    let (on, inject) = guest_debug::parse(control, &regs).unwrap();
    assert_eq!(inject, None);
    let hw = on.hw.unwrap();
    // DR4-DR6 are not used; DR7's reserved bit 10 reads as 1.
    assert_eq!(hw.addr, [0x1000, 0x2000, 0x3000, 0x4000]);
    assert_eq!(hw.dr7, 0x0f_0402);
    assert!(hw.any_enabled(), "G0... L1 set");
    assert!(on.owns_debug_exceptions(), "every #DB is the VMM's");
    assert!(!on.single_step);
    // No enable bit: nothing is loaded, but #DB is still the VMM's (KVM).
    let none = HwBreakpoints {
        dr7: 0x0f_0400,
        ..hw
    };
    assert!(!none.any_enabled());
    // Without ENABLE no flag counts, that one included.
    assert_eq!(
        guest_debug::parse(KVM_GUESTDBG_USE_HW_BP, &regs),
        Some((GuestDebug::default(), None))
    );
    assert_ne!(SUPPORTED & KVM_GUESTDBG_USE_HW_BP, 0);
}

#[test]
fn a_dr7_with_upper_bits_is_refused_and_unknown_bits_ignored() {
    let mut regs = [0; 8];
    regs[7] = 1 << 32 | 1;
    let control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
    assert_eq!(guest_debug::parse(control, &regs), None);
    // Not looked at without USE_HW_BP.
    assert!(guest_debug::parse(KVM_GUESTDBG_ENABLE, &regs).is_some());
    // Bits KVM has no meaning for are ignored, as KVM ignores them.
    assert_eq!(parse(1 << 30), Some((GuestDebug::default(), None)));
}
