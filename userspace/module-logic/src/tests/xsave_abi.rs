//! `module/x86/xsave.rs`: KVM's XSAVE region (`struct kvm_xsave`), SDM
//! Vol. 1 13.4, and XCR0's rules for `KVM_SET_XCRS` (Vol. 1 13.3).

use crate::x86::xsave::{
    from_uabi, required_size, to_uabi, xcr0_valid, Image, XsaveRefusal, KVM_XSAVE_SIZE,
    LEGACY_SIZE, XFEATURE_FP, XFEATURE_FPSSE, XFEATURE_SSE, XFEATURE_YMM, YMM_AT, YMM_SIZE,
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

const NO_YMM: [u8; YMM_SIZE] = [0; YMM_SIZE];

/// AVX's upper halves with recognisable bytes, unlike [`pattern`]'s.
fn ymm_pattern() -> [u8; YMM_SIZE] {
    let mut ymm = [0u8; YMM_SIZE];
    for (i, b) in ymm.iter_mut().enumerate() {
        *b = 0xff - (i % 200) as u8;
    }
    ymm
}

/// `KVM_GET_XSAVE`'s region for an image of `legacy` and `ymm` whose
/// XSTATE_BV is `xstate_bv`, describing the components in `reported`.
fn get(legacy: &[u8; LEGACY_SIZE], ymm: &[u8; YMM_SIZE], xstate_bv: u64, reported: u64) -> Vec<u8> {
    let mut out = vec![0u8; KVM_XSAVE_SIZE];
    let image = Image {
        legacy,
        ymm,
        xstate_bv,
    };
    to_uabi(&image, reported, MASK, &mut out);
    out
}

/// `from_uabi` into copies of `legacy` and `ymm`, which come back with
/// its result.
fn set(
    region: &[u8],
    xsave_host: bool,
    offered: u64,
    legacy: &[u8; LEGACY_SIZE],
    ymm: &[u8; YMM_SIZE],
) -> (Result<u64, XsaveRefusal>, [u8; LEGACY_SIZE], [u8; YMM_SIZE]) {
    let (mut l, mut y) = (*legacy, *ymm);
    let r = from_uabi(region, xsave_host, offered, MASK, &mut l, &mut y);
    (r, l, y)
}

#[test]
fn get_reports_the_image_and_its_components() {
    let legacy = pattern();
    let out = get(&legacy, &NO_YMM, XFEATURE_FPSSE, XFEATURE_FPSSE);
    // x87 and SSE registers (bytes 0..416) as they are; padding and the
    // software bytes zero; XSTATE_BV x87|SSE, XCOMP_BV 0.
    assert_eq!(out[..416], legacy[..416]);
    assert!(out[416..512].iter().all(|&b| b == 0));
    assert_eq!(u64_at(&out, 512), XFEATURE_FPSSE);
    assert!(out[520..].iter().all(|&b| b == 0));
}

#[test]
fn get_reports_avx_where_the_guest_has_it() {
    let legacy = pattern();
    let ymm = ymm_pattern();
    let all = XFEATURE_FPSSE | XFEATURE_YMM;
    let out = get(&legacy, &ymm, all, all);
    assert_eq!(out[..416], legacy[..416]);
    assert_eq!(out[YMM_AT], ymm[..], "YMM0-15's upper halves at 576");
    assert_eq!(u64_at(&out, 512), all);
    assert!(out[832..].iter().all(|&b| b == 0));
    // Offered, in its initial state: zeros, and XSTATE_BV says so.
    let out = get(&legacy, &ymm, XFEATURE_FPSSE, all);
    assert!(out[YMM_AT].iter().all(|&b| b == 0));
    assert_eq!(u64_at(&out, 512), XFEATURE_FPSSE);
    // Held by the image but not the guest's (its CPUID has no AVX): left
    // out, as KVM masks with the guest's supported XCR0.
    let out = get(&legacy, &ymm, all, XFEATURE_FPSSE);
    assert!(out[YMM_AT].iter().all(|&b| b == 0));
    assert_eq!(u64_at(&out, 512), XFEATURE_FPSSE);
}

#[test]
fn get_reports_initial_values_for_components_in_their_initial_state() {
    let legacy = pattern();
    // Only SSE holds values: the x87 part is FNINIT's (FCW 0x37F, rest 0).
    let out = get(&legacy, &NO_YMM, XFEATURE_SSE, XFEATURE_FPSSE);
    assert_eq!(out[0..2], [0x7f, 0x03]);
    assert!(out[2..24].iter().all(|&b| b == 0));
    assert!(out[32..160].iter().all(|&b| b == 0));
    assert_eq!(out[24..32], legacy[24..32]);
    assert_eq!(out[160..416], legacy[160..416]);
    assert_eq!(u64_at(&out, 512), XFEATURE_SSE);
    // Nothing holds values: MXCSR is 0x1F80 with the processor's mask.
    let out = get(&legacy, &NO_YMM, 0, XFEATURE_FPSSE);
    assert_eq!(out[24..28], 0x1f80u32.to_le_bytes());
    assert_eq!(out[28..32], MASK.to_le_bytes());
    assert!(out[160..416].iter().all(|&b| b == 0));
    assert_eq!(u64_at(&out, 512), 0);
    // MXCSR is part of the AVX state too: reported with AVX alone...
    let out = get(
        &legacy,
        &NO_YMM,
        XFEATURE_YMM,
        XFEATURE_FPSSE | XFEATURE_YMM,
    );
    assert_eq!(out[24..32], legacy[24..32]);
    assert_eq!(u64_at(&out, 512), XFEATURE_YMM);
    // ...unless AVX is not reported at all.
    let out = get(&legacy, &NO_YMM, XFEATURE_YMM, XFEATURE_FPSSE);
    assert_eq!(out[24..28], 0x1f80u32.to_le_bytes());
    assert_eq!(u64_at(&out, 512), 0);
}

#[test]
fn set_round_trips_what_get_reported() {
    let legacy = pattern();
    let ymm = ymm_pattern();
    let out = get(&legacy, &NO_YMM, XFEATURE_FPSSE, XFEATURE_FPSSE);
    for xsave_host in [false, true] {
        let (bv, image, _) = set(&out, xsave_host, XFEATURE_FPSSE, &[0; LEGACY_SIZE], &NO_YMM);
        assert_eq!(bv, Ok(XFEATURE_FPSSE));
        assert_eq!(image[..416], legacy[..416]);
    }
    let all = XFEATURE_FPSSE | XFEATURE_YMM;
    let out = get(&legacy, &ymm, all, all);
    let (bv, image, got) = set(&out, true, all, &[0; LEGACY_SIZE], &NO_YMM);
    assert_eq!(bv, Ok(all));
    assert_eq!(image[..416], legacy[..416]);
    assert_eq!(got, ymm);
}

#[test]
fn set_takes_only_the_components_in_xstate_bv_on_an_xsave_host() {
    let new = pattern();
    let old = [0xeeu8; LEGACY_SIZE];
    let old_ymm = [0xddu8; YMM_SIZE];
    let all = XFEATURE_FPSSE | XFEATURE_YMM;
    let with_ymm = |bv: u64| {
        let mut region = region_from(&new, bv);
        region[YMM_AT].copy_from_slice(&ymm_pattern());
        region
    };
    // SSE only: XMM registers and MXCSR taken, the x87 part and AVX left.
    let (bv, image, ymm) = set(&with_ymm(XFEATURE_SSE), true, all, &old, &old_ymm);
    assert_eq!(bv, Ok(XFEATURE_SSE));
    assert_eq!(image[0..24], old[0..24]);
    assert_eq!(image[24..32], new[24..32]);
    assert_eq!(image[32..160], old[32..160]);
    assert_eq!(image[160..416], new[160..416]);
    assert_eq!(ymm, old_ymm);
    // x87 only: bytes 0..160 (MXCSR with them), XMM left.
    let (bv, image, _) = set(&with_ymm(XFEATURE_FP), true, all, &old, &old_ymm);
    assert_eq!(bv, Ok(XFEATURE_FP));
    assert_eq!(image[0..160], new[0..160]);
    assert_eq!(image[160..416], old[160..416]);
    // AVX only: the upper halves and MXCSR, nothing else.
    let (bv, image, ymm) = set(&with_ymm(XFEATURE_YMM), true, all, &old, &old_ymm);
    assert_eq!(bv, Ok(XFEATURE_YMM));
    assert_eq!(ymm, ymm_pattern());
    assert_eq!(image[24..32], new[24..32], "MXCSR is AVX state too");
    assert_eq!(image[0..24], old[0..24]);
    assert_eq!(image[160..416], old[160..416]);
    // None: nothing taken; all are initialised by the next XRSTOR.
    let (bv, image, ymm) = set(&with_ymm(0), true, all, &old, &old_ymm);
    assert_eq!(bv, Ok(0));
    assert_eq!((image, ymm), (old, old_ymm));
}

#[test]
fn set_without_host_xsave_takes_the_fxsave_image() {
    let new = pattern();
    // As KVM's: the whole 512 bytes, whatever XSTATE_BV says of x87/SSE.
    let (bv, image, _) = set(
        &region_from(&new, 0),
        false,
        XFEATURE_FPSSE,
        &[0; LEGACY_SIZE],
        &NO_YMM,
    );
    assert_eq!(bv, Ok(XFEATURE_FPSSE));
    assert_eq!(image, new);
}

#[test]
fn set_refuses_what_kvm_refuses_and_changes_nothing() {
    let new = pattern();
    let old = [0xeeu8; LEGACY_SIZE];
    let old_ymm = [0xddu8; YMM_SIZE];
    let all = XFEATURE_FPSSE | XFEATURE_YMM;
    let check = |region: &[u8], xsave_host: bool, offered: u64, want: XsaveRefusal| {
        let (r, image, ymm) = set(region, xsave_host, offered, &old, &old_ymm);
        assert_eq!(r, Err(want));
        assert_eq!((image, ymm), (old, old_ymm));
    };
    // AVX where the device does not offer it, on either kind of host; a
    // component beyond AVX (AVX-512's opmask, bit 5) even if asked to.
    let ymm = region_from(&new, all);
    check(
        &ymm,
        true,
        XFEATURE_FPSSE,
        XsaveRefusal::UnsupportedComponent,
    );
    check(
        &ymm,
        false,
        XFEATURE_FPSSE,
        XsaveRefusal::UnsupportedComponent,
    );
    check(&ymm, false, all, XsaveRefusal::UnsupportedComponent);
    let opmask = region_from(&new, all | 1 << 5);
    check(&opmask, true, !0, XsaveRefusal::UnsupportedComponent);
    // A compacted region, a reserved header byte: XSAVE hosts only check them.
    let mut compacted = region_from(&new, XFEATURE_FPSSE);
    compacted[520..528].copy_from_slice(&(1u64 << 63 | 3).to_le_bytes());
    check(&compacted, true, all, XsaveRefusal::Compacted);
    let mut reserved = region_from(&new, XFEATURE_FPSSE);
    reserved[575] = 1;
    check(&reserved, true, all, XsaveRefusal::ReservedHeader);
    assert!(set(&reserved, false, XFEATURE_FPSSE, &old, &old_ymm)
        .0
        .is_ok());
    // An MXCSR bit outside the mask, on both; but not looked at when no
    // component that uses MXCSR is restored (XSAVE host). AVX uses it.
    let mut bad = new;
    bad[24..28].copy_from_slice(&0x1_0000u32.to_le_bytes());
    check(
        &region_from(&bad, XFEATURE_SSE),
        true,
        all,
        XsaveRefusal::ReservedMxcsr,
    );
    check(
        &region_from(&bad, XFEATURE_YMM),
        true,
        all,
        XsaveRefusal::ReservedMxcsr,
    );
    check(
        &region_from(&bad, 0),
        false,
        XFEATURE_FPSSE,
        XsaveRefusal::ReservedMxcsr,
    );
    assert_eq!(
        set(&region_from(&bad, 0), true, all, &old, &old_ymm).0,
        Ok(0)
    );
}

/// XSAVE's area sizes for a set of components, standard and compacted
/// (KVM's `xstate_required_size`), from a processor that describes AVX
/// (256 bytes at 576), PKRU (8 bytes at 2688) and a 64-byte-aligned
/// component 17 (64 bytes at 2752).
#[test]
fn area_sizes_follow_the_components() {
    let host = |leaf: u32, i: u32| {
        assert_eq!(leaf, 0xd);
        match i {
            2 => (256, 576, 0, 0),
            9 => (8, 2688, 0, 0),
            17 => (64, 2752, 2, 0),
            _ => panic!("component {i} is not asked for"),
        }
    };
    assert_eq!(
        required_size(1, false, host),
        576,
        "legacy region and header"
    );
    assert_eq!(required_size(3, true, host), 576);
    assert_eq!(required_size(7, false, host), 832);
    assert_eq!(required_size(7, true, host), 832);
    let many = 7 | 1 << 9 | 1 << 17;
    assert_eq!(required_size(many, false, host), 2816, "the furthest end");
    // Compacted: AVX 576..832, PKRU 832..840, then aligned to 896.
    assert_eq!(required_size(many, true, host), 960);
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
