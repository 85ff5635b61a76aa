//! guest_memfd's rules (`module/gmem/rules.rs`), against what Linux's
//! `guest_memfd_test` and `virt/kvm/guest_memfd.c` expect.

use crate::gmem::rules::{
    check_create, fallocate, Fallocate, GmemError, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
};

const PAGE: u64 = 4096;
const KEEP: u32 = FALLOC_FL_KEEP_SIZE;
const PUNCH: u32 = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE;
/// The test's files: four pages.
const SIZE: u64 = 4 * PAGE;

#[test]
fn a_file_needs_a_positive_page_multiple_and_no_flags() {
    assert_eq!(check_create(PAGE, 0), Ok(()));
    assert_eq!(check_create(1 << 40, 0), Ok(()));
    for size in [0, 1, PAGE - 1, PAGE + 1, 1 << 63, u64::MAX & !0xfff] {
        assert_eq!(check_create(size, 0), Err(GmemError::Invalid), "{size:#x}");
    }
    // No flag is offered: MMAP (bit 0), INIT_SHARED (bit 1) and the rest.
    for bit in 0..64 {
        assert_eq!(
            check_create(PAGE, 1 << bit),
            Err(GmemError::Invalid),
            "bit {bit}"
        );
    }
}

#[test]
fn keep_size_is_required_and_punch_hole_is_the_only_other_mode() {
    for mode in [
        0,
        FALLOC_FL_PUNCH_HOLE,
        0x04,
        KEEP | 0x04,
        KEEP | 0x08,
        KEEP | 0x10,
    ] {
        assert_eq!(
            fallocate(mode, 0, PAGE as i64, SIZE),
            Err(GmemError::NotSupported),
            "mode {mode:#x}"
        );
    }
}

#[test]
fn allocation_covers_whole_pages_inside_the_file() {
    assert_eq!(
        fallocate(KEEP, 0, SIZE as i64, SIZE),
        Ok(Fallocate::Allocate { first: 0, end: 4 })
    );
    assert_eq!(
        fallocate(KEEP, PAGE as i64, PAGE as i64, SIZE),
        Ok(Fallocate::Allocate { first: 1, end: 2 })
    );
    // Beginning at or after the end, or running past it: the size is fixed.
    for (offset, len) in [(SIZE, PAGE), (SIZE + PAGE, PAGE), (3 * PAGE, 2 * PAGE)] {
        assert_eq!(
            fallocate(KEEP, offset as i64, len as i64, SIZE),
            Err(GmemError::Invalid),
            "{offset:#x}+{len:#x}"
        );
    }
}

#[test]
fn a_hole_past_the_end_is_allowed_and_frees_nothing() {
    assert_eq!(
        fallocate(PUNCH, SIZE as i64, PAGE as i64, SIZE),
        Ok(Fallocate::Punch {
            start: SIZE,
            end: SIZE
        })
    );
    assert_eq!(
        fallocate(PUNCH, (SIZE + PAGE) as i64, PAGE as i64, SIZE),
        Ok(Fallocate::Punch {
            start: SIZE,
            end: SIZE
        })
    );
    // One straddling the end frees up to the end.
    assert_eq!(
        fallocate(PUNCH, (3 * PAGE) as i64, (4 * PAGE) as i64, SIZE),
        Ok(Fallocate::Punch {
            start: 3 * PAGE,
            end: SIZE
        })
    );
    assert_eq!(
        fallocate(PUNCH, PAGE as i64, PAGE as i64, SIZE),
        Ok(Fallocate::Punch {
            start: PAGE,
            end: 2 * PAGE
        })
    );
}

/// `test_invalid_punch_hole`'s cases, and unaligned allocations.
#[test]
fn offsets_and_lengths_must_be_page_aligned() {
    let p = PAGE as i64;
    let cases = [
        (0, 1),
        (0, p - 1),
        (0, p + 1),
        (1, 1),
        (1, p - 1),
        (1, p),
        (1, p + 1),
        (p, 1),
        (p, p - 1),
        (p, p + 1),
    ];
    for (offset, len) in cases {
        for mode in [KEEP, PUNCH] {
            assert_eq!(
                fallocate(mode, offset, len, SIZE),
                Err(GmemError::Invalid),
                "mode {mode:#x} {offset:#x}+{len:#x}"
            );
        }
    }
}

#[test]
fn what_the_vfs_never_passes_is_refused_all_the_same() {
    assert_eq!(fallocate(KEEP, -4096, 4096, SIZE), Err(GmemError::Invalid));
    assert_eq!(fallocate(KEEP, 0, 0, SIZE), Err(GmemError::Invalid));
    assert_eq!(fallocate(PUNCH, 0, -4096, SIZE), Err(GmemError::Invalid));
    // A hole far past the end frees nothing (the sum does not wrap in u64).
    let top = i64::MAX & !0xfff;
    assert_eq!(
        fallocate(PUNCH, top, top, SIZE),
        Ok(Fallocate::Punch {
            start: SIZE,
            end: SIZE
        })
    );
}
