//! `module/x86/xsave.rs`: KVM's XSAVE region (`struct kvm_xsave`), SDM
//! Vol. 1 13.4, and XCR0's rules for `KVM_SET_XCRS` (Vol. 1 13.3).

use crate::x86::xsave::{
    from_uabi, to_uabi, xcr0_valid, XsaveRefusal, KVM_XSAVE_SIZE, LEGACY_SIZE, XFEATURE_FP,
    XFEATURE_FPSSE, XFEATURE_SSE, XFEATURE_YMM,
};

const MASK: u32 = 0xffff;

/// A legacy region with recognisable bytes everywhere.
fn pattern() -> [u8; LEGACY_SIZE] {
    let mut legacy = [0u8; LEGACY_SIZE];
    for (i, b) in legacy.iter_mut().enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    // A valid MXCSR: all exceptions masked, round to nearest.
    legacy[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    legacy
}

fn region_from(legacy: &[u8; LEGACY_SIZE], xstate_bv: u64) -> Vec<u8> {
    let mut region = vec![0u8; KVM_XSAVE_SIZE];
    region[..LEGACY_SIZE].copy_from_slice(legacy);
    region[512..520].copy_from_slice(&xstate_bv.to_le_bytes());
    region
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

#[test]
fn get_reports_the_image_and_its_components() {
    let legacy = pattern();
    let mut out = vec![0u8; KVM_XSAVE_SIZE];
    to_uabi(&legacy, XFEATURE_FPSSE, MASK, &mut out);
    // x87 and SSE registers (bytes 0..416) as they are; padding and the
    // software bytes zero; XSTATE_BV x87|SSE, XCOMP_BV 0.
    assert_eq!(out[..416], legacy[..416]);
    assert!(out[416..512].iter().all(|&b| b == 0));
    assert_eq!(u64_at(&out, 512), XFEATURE_FPSSE);
    assert!(out[520..].iter().all(|&b| b == 0));
}

#[test]
fn get_reports_initial_values_for_components_in_their_initial_state() {
    let legacy = pattern();
    let mut out = vec![0u8; KVM_XSAVE_SIZE];
    // Only SSE holds values: the x87 part is FNINIT's (FCW 0x37F, rest 0).
    to_uabi(&legacy, XFEATURE_SSE, MASK, &mut out);
    assert_eq!(out[0..2], [0x7f, 0x03]);
    assert!(out[2..24].iter().all(|&b| b == 0));
    assert!(out[32..160].iter().all(|&b| b == 0));
    assert_eq!(out[24..32], legacy[24..32]);
    assert_eq!(out[160..416], legacy[160..416]);
    assert_eq!(u64_at(&out, 512), XFEATURE_SSE);
    // Nothing holds values: MXCSR is 0x1F80 with the processor's mask.
    let mut out = vec![0u8; KVM_XSAVE_SIZE];
    to_uabi(&legacy, 0, MASK, &mut out);
    assert_eq!(out[24..28], 0x1f80u32.to_le_bytes());
    assert_eq!(out[28..32], MASK.to_le_bytes());
    assert!(out[160..416].iter().all(|&b| b == 0));
    assert_eq!(u64_at(&out, 512), 0);
    // AVX state (not offered to guests) is never reported, but MXCSR is
    // part of it.
    let mut out = vec![0u8; KVM_XSAVE_SIZE];
    to_uabi(&legacy, XFEATURE_YMM, MASK, &mut out);
    assert_eq!(out[24..32], legacy[24..32]);
    assert_eq!(u64_at(&out, 512), 0);
}

#[test]
fn set_round_trips_what_get_reported() {
    let legacy = pattern();
    let mut out = vec![0u8; KVM_XSAVE_SIZE];
    to_uabi(&legacy, XFEATURE_FPSSE, MASK, &mut out);
    for xsave_host in [false, true] {
        let mut image = [0u8; LEGACY_SIZE];
        let bv = from_uabi(&out, xsave_host, MASK, &mut image).unwrap();
        assert_eq!(bv, XFEATURE_FPSSE);
        assert_eq!(image[..416], legacy[..416]);
    }
}

#[test]
fn set_takes_only_the_components_in_xstate_bv_on_an_xsave_host() {
    let new = pattern();
    let old = [0xeeu8; LEGACY_SIZE];
    // SSE only: XMM registers and MXCSR taken, the x87 part left.
    let mut image = old;
    let bv = from_uabi(&region_from(&new, XFEATURE_SSE), true, MASK, &mut image);
    assert_eq!(bv, Ok(XFEATURE_SSE));
    assert_eq!(image[0..24], old[0..24]);
    assert_eq!(image[24..32], new[24..32]);
    assert_eq!(image[32..160], old[32..160]);
    assert_eq!(image[160..416], new[160..416]);
    // x87 only: bytes 0..160 (MXCSR with them), XMM left.
    let mut image = old;
    let bv = from_uabi(&region_from(&new, XFEATURE_FP), true, MASK, &mut image);
    assert_eq!(bv, Ok(XFEATURE_FP));
    assert_eq!(image[0..160], new[0..160]);
    assert_eq!(image[160..416], old[160..416]);
    // Neither: nothing taken; both are initialised by the next XRSTOR.
    let mut image = old;
    assert_eq!(
        from_uabi(&region_from(&new, 0), true, MASK, &mut image),
        Ok(0)
    );
    assert_eq!(image, old);
}

#[test]
fn set_without_host_xsave_takes_the_fxsave_image() {
    let new = pattern();
    let mut image = [0u8; LEGACY_SIZE];
    // As KVM's: the whole 512 bytes, whatever XSTATE_BV says of x87/SSE.
    let bv = from_uabi(&region_from(&new, 0), false, MASK, &mut image);
    assert_eq!(bv, Ok(XFEATURE_FPSSE));
    assert_eq!(image, new);
}

#[test]
fn set_refuses_what_kvm_refuses_and_changes_nothing() {
    let new = pattern();
    let old = [0xeeu8; LEGACY_SIZE];
    let check = |region: &[u8], xsave_host: bool, want: XsaveRefusal| {
        let mut image = old;
        assert_eq!(from_uabi(region, xsave_host, MASK, &mut image), Err(want));
        assert_eq!(image, old);
    };
    // AVX is not offered, on either kind of host.
    let ymm = region_from(&new, XFEATURE_FPSSE | XFEATURE_YMM);
    check(&ymm, true, XsaveRefusal::UnsupportedComponent);
    check(&ymm, false, XsaveRefusal::UnsupportedComponent);
    // A compacted region, a reserved header byte: XSAVE hosts only check them.
    let mut compacted = region_from(&new, XFEATURE_FPSSE);
    compacted[520..528].copy_from_slice(&(1u64 << 63 | 3).to_le_bytes());
    check(&compacted, true, XsaveRefusal::Compacted);
    let mut reserved = region_from(&new, XFEATURE_FPSSE);
    reserved[575] = 1;
    check(&reserved, true, XsaveRefusal::ReservedHeader);
    let mut image = old;
    assert!(from_uabi(&reserved, false, MASK, &mut image).is_ok());
    // An MXCSR bit outside the mask, on both; but not looked at when no
    // component that uses MXCSR is restored (XSAVE host).
    let mut bad = new;
    bad[24..28].copy_from_slice(&0x1_0000u32.to_le_bytes());
    check(
        &region_from(&bad, XFEATURE_SSE),
        true,
        XsaveRefusal::ReservedMxcsr,
    );
    check(&region_from(&bad, 0), false, XsaveRefusal::ReservedMxcsr);
    let mut image = old;
    assert_eq!(
        from_uabi(&region_from(&bad, 0), true, MASK, &mut image),
        Ok(0)
    );
}

#[test]
fn xcr0_rules() {
    // x87 always; with no component offered, 1 is the only value.
    assert!(xcr0_valid(1, 0));
    assert!(!xcr0_valid(0, 0));
    assert!(!xcr0_valid(3, 0));
    let avx = XFEATURE_FPSSE | XFEATURE_YMM;
    assert!(xcr0_valid(3, avx));
    assert!(xcr0_valid(7, avx));
    // AVX needs SSE; a bit the guest is not offered is refused.
    assert!(!xcr0_valid(5, avx));
    assert!(!xcr0_valid(7 | 1 << 9, avx));
    assert!(!xcr0_valid(2, avx));
}
