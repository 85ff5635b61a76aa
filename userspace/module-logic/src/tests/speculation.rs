//! `module/spec.rs`: which speculation steps rkvm takes around guest entry
//! and exit for a host's mitigation state, as KVM keys them on the same
//! `X86_FEATURE_*` and `X86_BUG_*` bits.

use crate::spec::{host, Missing, Plan, RsbFill};

const SVM: bool = false;
const VMX: bool = true;

#[test]
fn a_host_without_mitigations_asks_for_nothing() {
    for vmx in [SVM, VMX] {
        let p = Plan::new(0, vmx);
        assert_eq!(p.rsb_fill, RsbFill::None);
        assert!(!p.verw_before_entry && !p.l1d_flush_before_entry);
        assert!(!p.ibpb_between_guests && !p.ibpb_after_exit && !p.ibpb_before_user);
        assert_eq!(p.missing, Missing::default());
        assert_eq!(p.names().count(), 0);
    }
}

#[test]
fn rsb_filling_follows_the_host() {
    assert_eq!(Plan::new(host::RSB_VMEXIT, SVM).rsb_fill, RsbFill::Full);
    assert_eq!(Plan::new(host::RSB_VMEXIT, VMX).rsb_fill, RsbFill::Full);
    // PBRSB's single entry is an eIBRS (Intel) matter; the full fill covers it.
    assert_eq!(Plan::new(host::RSB_VMEXIT_LITE, VMX).rsb_fill, RsbFill::One);
    assert_eq!(
        Plan::new(host::RSB_VMEXIT_LITE, SVM).rsb_fill,
        RsbFill::None
    );
    assert_eq!(
        Plan::new(host::RSB_VMEXIT | host::RSB_VMEXIT_LITE, VMX).rsb_fill,
        RsbFill::Full
    );
}

#[test]
fn buffers_are_cleared_before_entry_on_both_vendors() {
    // MDS/TAA/MMIO on Intel, TSA on AMD: the same feature bit.
    assert!(Plan::new(host::CLEAR_CPU_BUF_VM, SVM).verw_before_entry);
    assert!(Plan::new(host::CLEAR_CPU_BUF_VM, VMX).verw_before_entry);
}

#[test]
fn l1tf_flushes_l1d_on_vmx_only_and_says_when_it_cannot() {
    let p = Plan::new(host::L1TF | host::FLUSH_L1D, VMX);
    assert!(p.l1d_flush_before_entry);
    assert!(!p.missing.l1d_flush);
    let p = Plan::new(host::L1TF, VMX);
    assert!(!p.l1d_flush_before_entry);
    assert!(p.missing.l1d_flush);
    // AMD is not affected by L1TF; nested paging there is not EPT.
    let p = Plan::new(host::L1TF | host::FLUSH_L1D, SVM);
    assert!(!p.l1d_flush_before_entry && !p.missing.l1d_flush);
}

#[test]
fn ibpb_steps_need_ibpb_and_follow_their_own_bits() {
    assert!(Plan::new(host::IBPB, SVM).ibpb_between_guests);
    assert!(!Plan::new(host::IBPB, SVM).ibpb_after_exit);
    assert!(Plan::new(host::IBPB | host::IBPB_ON_VMEXIT, SVM).ibpb_after_exit);
    // SRSO's IBPB on exit is meaningless without IBPB (mitigations off).
    assert!(!Plan::new(host::IBPB_ON_VMEXIT, SVM).ibpb_after_exit);
    assert!(Plan::new(host::IBPB_EXIT_TO_USER, VMX).ibpb_before_user);
}

#[test]
fn the_bhb_clearing_loop_is_reported_missing_on_vmx() {
    assert!(Plan::new(host::CLEAR_BHB_VMEXIT, VMX).missing.bhb_clear);
    assert!(!Plan::new(host::CLEAR_BHB_VMEXIT, SVM).missing.bhb_clear);
}

#[test]
fn the_test_mode_adds_the_featureless_sequences_only() {
    let p = Plan::new(0, VMX).with_every_sequence();
    assert_eq!(p.rsb_fill, RsbFill::Full);
    assert!(p.verw_before_entry);
    // Steps that need an MSR stay as the host has them.
    assert!(!p.l1d_flush_before_entry && !p.ibpb_between_guests && !p.ibpb_after_exit);
    let names: Vec<_> = p.names().collect();
    assert_eq!(names, ["RSB fill after exit", "VERW before entry"]);
}

#[test]
fn what_rkvm_does_not_do_is_reported() {
    let p = Plan::new(host::UNRET | host::CALL_DEPTH | host::V_SPEC_CTRL, SVM);
    assert!(p.missing.untrain_ret && p.missing.call_depth && p.missing.v_spec_ctrl);
    // V_SPEC_CTRL is an SVM feature.
    assert!(!Plan::new(host::V_SPEC_CTRL, VMX).missing.v_spec_ctrl);
    // None of them is a step rkvm takes.
    assert_eq!(
        Plan::new(host::UNRET | host::CALL_DEPTH, SVM)
            .names()
            .count(),
        0
    );
}
