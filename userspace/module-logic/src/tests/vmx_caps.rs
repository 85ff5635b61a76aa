//! `module/vmx/caps.rs`: VMX capability negotiation against made-up CPUs.
//! SDM Vol. 3D Appendix A.

use crate::caps::{adjust, basic, ept_cap, negotiate, CapMsrs};
use crate::vmcs::{entry_ctl, exit_ctl, pin, proc1, proc2};

/// A capability MSR: `must` bits are forced to 1, only `may` bits can be 1.
fn cap(must: u32, may: u32) -> u64 {
    u64::from(may) << 32 | u64::from(must)
}

/// A CPU shaped like the Haswell Bochs emulates, with the TRUE_* MSRs:
/// default-1 controls that may be 0 are not forced.
fn haswell() -> CapMsrs {
    CapMsrs {
        basic: 0x12 | 6 << basic::MEMTYPE_SHIFT | basic::INS_OUTS_INFO | basic::TRUE_CTLS,
        pin: cap(0x16, 0x7f),
        proc1: cap(0x0400_6172, 0xfff9_fffe),
        proc2: cap(0, 0xff),
        exit: cap(0x11fb, 0x003f_ffff),
        entry: cap(0x11fb, 0xffff),
        ept_vpid: ept_cap::WALK_4
            | ept_cap::WB
            | ept_cap::PAGE_2M
            | ept_cap::INVEPT
            | ept_cap::INVEPT_SINGLE
            | ept_cap::INVEPT_ALL
            | ept_cap::INVVPID
            | ept_cap::INVVPID_SINGLE
            | ept_cap::INVVPID_ALL,
        cr0_fixed0: 0x8000_0021,
        cr0_fixed1: 0xffff_ffff,
        cr4_fixed0: 0x2000,
        cr4_fixed1: 0x0037_67ff,
    }
}

#[test]
fn adjust_adds_forced_bits_and_refuses_impossible_ones() {
    assert_eq!(adjust(cap(0x16, 0x7f), 0x9), Ok(0x1f));
    assert_eq!(adjust(cap(0x16, 0x7f), 0x80), Err(0x80));
}

#[test]
fn a_haswell_gets_every_exit_rkvm_needs_and_vpid() {
    let caps = negotiate(&haswell()).expect("a Haswell is usable");
    let c = caps.controls;
    assert_eq!(caps.revision, 0x12);
    assert_eq!(c.pin & (pin::EXT_INTR_EXITING | pin::NMI_EXITING), 0x9);
    for bit in [
        proc1::HLT_EXITING,
        proc1::CR8_LOAD_EXITING,
        proc1::CR8_STORE_EXITING,
        proc1::MOV_DR_EXITING,
        proc1::UNCOND_IO_EXITING,
        proc1::USE_MSR_BITMAPS,
        proc1::ACTIVATE_SECONDARY,
    ] {
        assert_ne!(c.proc1 & bit, 0, "primary control {bit:#x}");
    }
    // The forced default-1 bits are kept; CR3 exiting is not among them with TRUE MSRs.
    assert_eq!(c.proc1 & 0x0400_6172, 0x0400_6172);
    assert_eq!(
        c.proc1 & (proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING),
        0
    );
    // Interrupt-window exiting is per entry, not in the base controls.
    assert_eq!(c.proc1 & proc1::INTR_WINDOW_EXITING, 0);
    assert_eq!(
        c.proc2,
        proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST | proc2::WBINVD_EXITING | proc2::ENABLE_VPID
    );
    assert_ne!(c.exit & exit_ctl::LOAD_IA32_EFER, 0);
    assert_eq!(c.exit & exit_ctl::ACK_INTR_ON_EXIT, 0);
    assert_ne!(c.entry & entry_ctl::LOAD_IA32_EFER, 0);
    assert_eq!(c.entry & entry_ctl::IA32E_MODE, 0);
    // The TRUE MSRs leave the debug controls to us: we ask for both, so
    // the guest never runs with the host's DR7 and DEBUGCTL.
    assert_ne!(c.entry & entry_ctl::LOAD_DEBUG_CONTROLS, 0);
    assert_ne!(c.exit & exit_ctl::SAVE_DEBUG_CONTROLS, 0);
    // CR0.PE and PG are free with unrestricted guest; NE stays forced.
    assert_eq!(caps.cr0_fixed0, 0x20);
    assert!(caps.vpid && caps.large_pages && caps.ins_outs_info);
}

#[test]
fn forced_cr3_exiting_is_refused() {
    // Without TRUE MSRs the plain one forces CR3-load and CR3-store exiting.
    let m = CapMsrs {
        proc1: cap(0x0401_e172, 0xfff9_fffe),
        ..haswell()
    };
    let why = negotiate(&m).unwrap_err();
    assert!(why.contains("CR3"), "{why}");
}

#[test]
fn vmx_without_ept_or_unrestricted_guest_is_refused() {
    for (missing, named) in [
        (proc2::ENABLE_EPT, "EPT"),
        (proc2::UNRESTRICTED_GUEST, "unrestricted guest"),
    ] {
        let m = CapMsrs {
            proc2: cap(0, 0xff & !missing),
            ..haswell()
        };
        let why = negotiate(&m).unwrap_err();
        assert!(why.contains(named), "{why}");
    }
    let m = CapMsrs {
        ept_vpid: haswell().ept_vpid & !ept_cap::INVEPT,
        ..haswell()
    };
    assert!(negotiate(&m).unwrap_err().contains("INVEPT"));
}

#[test]
fn vpid_is_optional() {
    let m = CapMsrs {
        proc2: cap(0, 0xff & !proc2::ENABLE_VPID),
        ..haswell()
    };
    let caps = negotiate(&m).expect("usable without VPID");
    assert!(!caps.vpid);
    assert_eq!(caps.controls.proc2 & proc2::ENABLE_VPID, 0);
    let m = CapMsrs {
        ept_vpid: haswell().ept_vpid & !ept_cap::INVVPID,
        ..haswell()
    };
    assert!(!negotiate(&m).expect("usable without INVVPID").vpid);
}

#[test]
fn missing_exits_and_64_bit_guests_are_refused() {
    let no_hlt = CapMsrs {
        proc1: cap(0x0400_6172, 0xfff9_fffe & !proc1::HLT_EXITING),
        ..haswell()
    };
    assert!(negotiate(&no_hlt).is_err());
    let no_64 = CapMsrs {
        entry: cap(0x11fb, 0xffff & !entry_ctl::IA32E_MODE),
        ..haswell()
    };
    assert!(negotiate(&no_64).unwrap_err().contains("64-bit"));
    let uncached = CapMsrs {
        basic: haswell().basic & !(0xf << basic::MEMTYPE_SHIFT),
        ..haswell()
    };
    assert!(negotiate(&uncached).is_err());
}

#[test]
fn nmis_need_virtual_nmis_and_nmi_window_exiting() {
    let caps = negotiate(&haswell()).unwrap();
    assert_ne!(caps.controls.pin & pin::VIRTUAL_NMIS, 0);
    // NMI-window exiting is allowed but set per entry, not always.
    assert_eq!(caps.controls.proc1 & proc1::NMI_WINDOW_EXITING, 0);
    let no_vnmi = CapMsrs {
        pin: cap(0x16, 0x7f & !pin::VIRTUAL_NMIS),
        ..haswell()
    };
    assert!(negotiate(&no_vnmi).unwrap_err().contains("virtual NMIs"));
    let no_window = CapMsrs {
        proc1: cap(0x0400_6172, 0xfff9_fffe & !proc1::NMI_WINDOW_EXITING),
        ..haswell()
    };
    assert!(negotiate(&no_window).unwrap_err().contains("NMI-window"));
}
