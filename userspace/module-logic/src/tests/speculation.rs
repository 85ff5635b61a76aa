//! `module/spec.rs`: which speculation steps rkvm takes around guest entry
//! and exit for a host's mitigation state, as KVM keys them on the same
//! `X86_FEATURE_*` and `X86_BUG_*` bits.

use crate::spec::{host, L1dFlush, Plan, RsbFill};

const SVM: bool = false;
const VMX: bool = true;

#[test]
fn a_host_without_mitigations_asks_for_nothing() {
    for vmx in [SVM, VMX] {
        let p = Plan::new(0, vmx);
        assert_eq!(p.rsb_fill, RsbFill::None);
        assert!(!p.verw_before_entry);
        assert_eq!(p.l1d_flush, L1dFlush::None);
        assert!(!p.ibpb_between_guests && !p.ibpb_after_exit && !p.ibpb_before_user);
        assert!(!p.bhb_clear_after_exit && !p.untrain_ret_after_exit);
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
fn l1tf_flushes_l1d_on_vmx_only_in_software_without_the_msr() {
    assert_eq!(
        Plan::new(host::L1TF | host::FLUSH_L1D, VMX).l1d_flush,
        L1dFlush::Msr
    );
    assert_eq!(Plan::new(host::L1TF, VMX).l1d_flush, L1dFlush::Software);
    // No L1TF (or mitigations off): no flush, whatever the CPU has.
    assert_eq!(Plan::new(host::FLUSH_L1D, VMX).l1d_flush, L1dFlush::None);
    // AMD is not affected by L1TF; nested paging there is not EPT.
    assert_eq!(
        Plan::new(host::L1TF | host::FLUSH_L1D, SVM).l1d_flush,
        L1dFlush::None
    );
    assert_eq!(Plan::new(host::L1TF, SVM).l1d_flush, L1dFlush::None);
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
fn the_bhb_clearing_sequence_runs_on_vmx_only() {
    assert!(Plan::new(host::CLEAR_BHB_VMEXIT, VMX).bhb_clear_after_exit);
    // BHI is an Intel matter; KVM's SVM exit has no such loop either.
    assert!(!Plan::new(host::CLEAR_BHB_VMEXIT, SVM).bhb_clear_after_exit);
}

#[test]
fn returns_are_untrained_after_exit_when_the_host_untrains_or_tracks_depth() {
    for vmx in [SVM, VMX] {
        assert!(Plan::new(host::UNRET, vmx).untrain_ret_after_exit);
        assert!(Plan::new(host::CALL_DEPTH, vmx).untrain_ret_after_exit);
        assert!(!Plan::new(host::IBPB | host::RSB_VMEXIT, vmx).untrain_ret_after_exit);
    }
    let names: Vec<_> = Plan::new(host::UNRET, SVM).names().collect();
    assert_eq!(names, ["return untraining after exit (Retbleed/SRSO)"]);
}

#[test]
fn the_test_mode_adds_the_featureless_sequences_only() {
    let p = Plan::new(0, VMX).with_every_sequence(VMX);
    assert_eq!(p.rsb_fill, RsbFill::Full);
    assert!(p.verw_before_entry && p.untrain_ret_after_exit && p.bhb_clear_after_exit);
    assert_eq!(p.l1d_flush, L1dFlush::Software);
    // Steps that need an MSR stay as the host has them.
    assert!(!p.ibpb_between_guests && !p.ibpb_after_exit && !p.ibpb_before_user);
    let names: Vec<_> = p.names().collect();
    assert_eq!(
        names,
        [
            "RSB fill after exit",
            "VERW before entry",
            "software L1D flush before entry",
            "return untraining after exit (Retbleed/SRSO)",
            "branch history clearing after exit (BHI)",
        ]
    );
    // A CPU that flushes through the MSR keeps doing so.
    let p = Plan::new(host::L1TF | host::FLUSH_L1D, VMX).with_every_sequence(VMX);
    assert_eq!(p.l1d_flush, L1dFlush::Msr);
    // SVM: no VMX-only step is added.
    let p = Plan::new(0, SVM).with_every_sequence(SVM);
    assert!(!p.bhb_clear_after_exit);
    assert_eq!(p.l1d_flush, L1dFlush::None);
    assert!(p.untrain_ret_after_exit && p.verw_before_entry);
}
