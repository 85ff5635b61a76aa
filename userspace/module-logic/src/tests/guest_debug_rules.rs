//! `module/x86/guest_debug.rs`: how `KVM_SET_GUEST_DEBUG`'s control is
//! read, as KVM's `kvm_arch_vcpu_ioctl_set_guest_debug`.

use crate::abi::{
    KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_BP, KVM_GUESTDBG_INJECT_DB,
    KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};
use crate::x86::guest_debug::{parse, GuestDebug, Inject, SUPPORTED};

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
fn hardware_breakpoints_are_refused_and_unknown_bits_ignored() {
    assert_eq!(parse(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP), None);
    // Without ENABLE no flag counts, that one included.
    assert_eq!(
        parse(KVM_GUESTDBG_USE_HW_BP),
        Some((GuestDebug::default(), None))
    );
    assert_eq!(SUPPORTED & KVM_GUESTDBG_USE_HW_BP, 0);
    // Bits KVM has no meaning for are ignored, as KVM ignores them.
    assert_eq!(parse(1 << 30), Some((GuestDebug::default(), None)));
}
