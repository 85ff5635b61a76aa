//! `module/x86/msr_filter.rs`: KVM's MSR filter (`kvm_msr_allowed`,
//! `kvm_add_msr_filter`, `kvm_vm_ioctl_set_msr_filter`).

use crate::x86::msr::{exists, index};
use crate::x86::msr_filter::{bitmap_bytes, check_flags, Invalid, MsrFilter, READ, WRITE};
use kernel::alloc::KVec;

fn bitmap(bytes: &[u8]) -> KVec<u8> {
    let mut v = KVec::new();
    for &b in bytes {
        v.push(b, kernel::alloc::flags::GFP_KERNEL_ACCOUNT).unwrap();
    }
    v
}

#[test]
fn flags_and_ranges_are_checked_as_kvm_does() {
    assert_eq!(
        check_flags(0, [0; 16].into_iter()),
        Ok(true),
        "allow, no range"
    );
    assert_eq!(check_flags(1, [0, 5].into_iter()), Ok(false));
    assert_eq!(
        check_flags(1, [0; 16].into_iter()),
        Err(Invalid),
        "deny everything"
    );
    assert_eq!(
        check_flags(2, [1].into_iter()),
        Err(Invalid),
        "an unknown flag"
    );
    assert_eq!(bitmap_bytes(0, 0), Ok(None), "an empty range is skipped");
    assert_eq!(bitmap_bytes(READ, 1), Ok(Some(8)), "whole 64-bit words");
    assert_eq!(bitmap_bytes(READ | WRITE, 65), Ok(Some(16)));
    assert_eq!(bitmap_bytes(WRITE, 0x600 * 8), Ok(Some(0x600)));
    assert_eq!(bitmap_bytes(WRITE, 0x600 * 8 + 1), Err(Invalid), "too big");
    assert_eq!(bitmap_bytes(0, 1), Err(Invalid), "neither read nor write");
    assert_eq!(bitmap_bytes(4, 1), Err(Invalid), "an unknown range flag");
}

#[test]
fn the_first_range_that_covers_the_access_decides() {
    let mut f = MsrFilter::new(false);
    // 0xc000_0080..0xc000_0090, reads: only EFER (bit 0) allowed.
    f.push(READ, 0xc000_0080, 16, bitmap(&[0x01, 0, 0, 0, 0, 0, 0, 0]))
        .unwrap();
    // The same MSRs for reads and writes, all allowed: reads never get here.
    f.push(READ | WRITE, 0xc000_0080, 16, bitmap(&[0xff; 8]))
        .unwrap();
    assert!(f.allows(0xc000_0080, false));
    assert!(
        !f.allows(0xc000_0081, false),
        "STAR read: the first range says no"
    );
    assert!(f.allows(0xc000_0081, true), "STAR write: the second range");
    assert!(!f.allows(0x10, false), "no range: the default, deny");
    assert!(f.allows(0x830, true), "x2APIC MSRs are never filtered");
    let allow = MsrFilter::new(true);
    assert!(allow.allows(0x10, true));
    // A range whose end wraps in 32 bits covers nothing, as in KVM.
    let mut w = MsrFilter::new(true);
    w.push(READ, 0xffff_ff00, 0x200, bitmap(&[0; 0x40]))
        .unwrap();
    assert!(w.allows(0xffff_ff10, false));
}

#[test]
fn exists_tells_known_msrs_from_unknown_ones() {
    for msr in [
        index::EFER,
        index::STAR,
        index::FS_BASE,
        index::MTRRCAP,
        0x200,
        index::POWER_CTL,
    ] {
        assert!(exists(msr), "{msr:#x}");
    }
    for msr in [0xdead_beef, 0x474f_4f00, 0x10b] {
        assert!(!exists(msr), "{msr:#x}");
    }
}
