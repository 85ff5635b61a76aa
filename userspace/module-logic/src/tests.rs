//! The tests, one group per module file.

mod memslot_rules {
    use crate::abi::{KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
    use crate::memslot::{
        Binding, Change, GmemFile, Request, SlotError, SlotTable, MAX_TOTAL_BYTES, NR_MEMSLOTS,
    };

    const MIB: u64 = 1 << 20;
    const USER: u64 = 0x7f00_0000_0000;
    const PHYS_BITS: u8 = 40;

    fn req(slot: u32, gpa: u64, size: u64, uaddr: u64) -> Request {
        Request {
            slot,
            flags: 0,
            gpa,
            size,
            uaddr,
            gmem_fd: 0,
            gmem_offset: 0,
        }
    }

    /// No fd names a guest_memfd (what `plan` asks only for a new
    /// guest_memfd slot).
    fn no_gmem(_fd: u32) -> Result<GmemFile, SlotError> {
        Err(SlotError::BadFile)
    }

    fn user_ok(addr: u64, size: u64) -> bool {
        addr.checked_add(size)
            .is_some_and(|end| end <= 0x7fff_ffff_f000)
    }

    fn apply(t: &mut SlotTable, r: Request) -> Result<Change, SlotError> {
        let change = t.plan(&r, user_ok, PHYS_BITS, no_gmem)?;
        t.commit(change, false)?;
        Ok(change)
    }

    #[test]
    fn a_new_slot_is_created_then_the_same_request_changes_nothing() {
        let mut t = SlotTable::new();
        assert!(matches!(
            apply(&mut t, req(0, 0, MIB, USER)),
            Ok(Change::Create(_))
        ));
        assert_eq!(apply(&mut t, req(0, 0, MIB, USER)), Ok(Change::Nothing));
    }

    #[test]
    fn misaligned_or_out_of_range_requests_are_invalid() {
        let t = SlotTable::new();
        let cases = [
            req(0, 0x800, MIB, USER),                // gpa not page aligned
            req(0, 0, MIB + 1, USER),                // size not page aligned
            req(0, 0, MIB, USER + 8),                // user address not page aligned
            req(NR_MEMSLOTS as u32, 0, MIB, USER),   // slot id out of range
            req(2 << 16, 0, MIB, USER),              // address space 2 (x86 has 0 and 1)
            req(0, 0, MIB, 0xffff_8000_0000_0000),   // kernel address
            req(0, u64::MAX & !0xfff, 0x2000, USER), // gpa + size wraps
        ];
        for r in cases {
            assert_eq!(
                t.plan(&r, user_ok, PHYS_BITS, no_gmem),
                Err(SlotError::Invalid),
                "{r:?}"
            );
        }
    }

    #[test]
    fn slot_numbers_name_an_address_space_and_an_id() {
        use crate::memslot::{slot_id, Space};
        assert_eq!(slot_id(3), Some((Space::Normal, 3)));
        assert_eq!(slot_id(1 << 16 | 5), Some((Space::Smm, 5)));
        assert_eq!(slot_id(2 << 16), None, "only two address spaces");
        assert_eq!(slot_id(1 << 16 | NR_MEMSLOTS as u32), None);
        assert_eq!(Space::of_vcpu(true), Space::Smm);
        assert_eq!(Space::of_vcpu(false).index(), 0);
        // The SMM space's slots are a table of their own: the same id and
        // range in both is no overlap (each space has its own SlotTable).
        let mut smm = SlotTable::new();
        assert!(apply(&mut smm, req(1 << 16, 0, MIB, USER)).is_ok());
    }

    #[test]
    fn readonly_slots_are_accepted_but_the_flag_cannot_change() {
        let mut t = SlotTable::new();
        let ro = Request {
            flags: KVM_MEM_READONLY,
            ..req(0, 0, MIB, USER)
        };
        let change = t.plan(&ro, user_ok, PHYS_BITS, no_gmem).unwrap();
        t.commit(change, false).unwrap();
        assert_eq!(
            t.plan(&req(0, 0, MIB, USER), user_ok, PHYS_BITS, no_gmem),
            Err(SlotError::Invalid)
        );
    }

    #[test]
    fn unknown_flags_and_guest_memfd_with_readonly_or_logging_are_refused() {
        let t = SlotTable::new();
        for flags in [
            1 << 7,
            KVM_MEM_GUEST_MEMFD | KVM_MEM_READONLY,
            KVM_MEM_GUEST_MEMFD | KVM_MEM_LOG_DIRTY_PAGES,
        ] {
            let r = Request {
                flags,
                ..req(0, 0, MIB, USER)
            };
            assert_eq!(
                t.plan(&r, user_ok, PHYS_BITS, no_gmem),
                Err(SlotError::Invalid),
                "{flags:#x}"
            );
        }
    }

    fn logging(r: Request) -> Request {
        Request {
            flags: KVM_MEM_LOG_DIRTY_PAGES,
            ..r
        }
    }

    #[test]
    fn a_logging_slot_has_a_bitmap_that_goes_with_the_flag() {
        let mut t = SlotTable::new();
        // 1 MiB: 256 pages, 4 words.
        apply(&mut t, logging(req(3, 0x10_0000, MIB, USER))).unwrap();
        assert_eq!(t.dirty_log(3).map(|b| b.words()), Some(4));
        assert_eq!(
            t.mark_dirty(0x10_0000 + 5 * 4096)
                .map(|(s, was)| (s.id, was)),
            Some((3, false))
        );
        assert_eq!(
            t.mark_dirty(0x10_0000 + 5 * 4096).map(|(_, was)| was),
            Some(true)
        );
        assert_eq!(t.dirty_log(3).unwrap().word(0), 1 << 5);
        // Moving keeps the bitmap and its bits.
        assert!(matches!(
            apply(&mut t, logging(req(3, 0x40_0000, MIB, USER))),
            Ok(Change::Move(_))
        ));
        assert_eq!(t.dirty_log(3).unwrap().word(0), 1 << 5);
        // Turning logging off drops it; turning it on again starts clean.
        assert!(matches!(
            apply(&mut t, req(3, 0x40_0000, MIB, USER)),
            Ok(Change::Flags(_))
        ));
        assert!(t.dirty_log(3).is_none());
        assert_eq!(t.mark_dirty(0x40_0000), None);
        apply(&mut t, logging(req(3, 0x40_0000, MIB, USER))).unwrap();
        assert_eq!(t.dirty_log(3).unwrap().word(0), 0);
        // Deleting the slot drops it too.
        apply(&mut t, req(3, 0x40_0000, 0, USER)).unwrap();
        assert!(t.dirty_log(3).is_none());
    }

    #[test]
    fn initially_set_marks_every_page_of_the_slot_and_no_more() {
        let mut t = SlotTable::new();
        // 65 pages: the second word has one valid bit.
        let r = logging(req(1, 0, 65 * 4096, USER));
        let change = t.plan(&r, user_ok, PHYS_BITS, no_gmem).unwrap();
        t.commit(change, true).unwrap();
        let b = t.dirty_log(1).unwrap();
        assert_eq!((b.words(), b.word(0), b.word(1)), (2, u64::MAX, 1));
        // Past the end nothing is ever set.
        b.mark(65);
        assert_eq!(b.word(1), 1);
    }

    #[test]
    fn overlapping_another_slot_is_eexist_but_touching_it_is_fine() {
        let mut t = SlotTable::new();
        apply(&mut t, req(0, 0, 2 * MIB, USER)).unwrap();
        assert_eq!(
            apply(&mut t, req(1, MIB, 2 * MIB, USER)),
            Err(SlotError::Overlap)
        );
        assert!(apply(&mut t, req(1, 2 * MIB, MIB, USER)).is_ok());
    }

    #[test]
    fn deleting_frees_the_range_and_deleting_twice_is_invalid() {
        let mut t = SlotTable::new();
        apply(&mut t, req(0, 0, MIB, USER)).unwrap();
        assert_eq!(apply(&mut t, req(0, 0, 0, USER)), Ok(Change::Delete(0)));
        assert_eq!(apply(&mut t, req(0, 0, 0, USER)), Err(SlotError::Invalid));
        assert!(matches!(
            apply(&mut t, req(1, 0, MIB, USER)),
            Ok(Change::Create(_))
        ));
    }

    #[test]
    fn a_slot_may_move_but_not_resize_or_change_memory() {
        let mut t = SlotTable::new();
        apply(&mut t, req(0, 0, MIB, USER)).unwrap();
        apply(&mut t, req(1, 4 * MIB, MIB, USER)).unwrap();
        assert_eq!(
            apply(&mut t, req(0, 0, 2 * MIB, USER)),
            Err(SlotError::Invalid)
        );
        assert_eq!(
            apply(&mut t, req(0, 0, MIB, USER + MIB)),
            Err(SlotError::Invalid)
        );
        assert_eq!(
            apply(&mut t, req(0, 4 * MIB, MIB, USER)),
            Err(SlotError::Overlap)
        );
        assert!(matches!(
            apply(&mut t, req(0, 8 * MIB, MIB, USER)),
            Ok(Change::Move(_))
        ));
        // The old range is free again.
        assert!(apply(&mut t, req(2, 0, MIB, USER)).is_ok());
    }

    #[test]
    fn guest_memory_must_lie_below_the_physical_address_width() {
        let mut t = SlotTable::new();
        let top = 1u64 << PHYS_BITS;
        assert!(apply(&mut t, req(0, top - MIB, MIB, USER)).is_ok());
        assert_eq!(
            apply(&mut t, req(1, top, MIB, USER)),
            Err(SlotError::Invalid)
        );
        assert_eq!(
            apply(&mut t, req(0, top - MIB / 2, MIB, USER)),
            Err(SlotError::Invalid)
        );
    }

    #[test]
    fn total_guest_memory_is_bounded() {
        // A 48-bit width, so that only the total can refuse a slot here.
        let apply48 = |t: &mut SlotTable, r: Request| -> Result<Change, SlotError> {
            let change = t.plan(&r, user_ok, 48, no_gmem)?;
            t.commit(change, false)?;
            Ok(change)
        };
        let mut t = SlotTable::new();
        let half = MAX_TOTAL_BYTES / 2;
        apply48(&mut t, req(0, 0, half, 0x1000)).unwrap();
        apply48(&mut t, req(1, half, half, 0x1000)).unwrap();
        assert_eq!(
            apply48(&mut t, req(2, 2 * half, MIB, USER)),
            Err(SlotError::Invalid)
        );
        // Deleting gives the room back.
        apply48(&mut t, req(1, 0, 0, 0)).unwrap();
        assert!(apply48(&mut t, req(2, 2 * half, MIB, USER)).is_ok());
    }

    /// A request for a guest_memfd slot: `pages` pages at `gpa`, bound to
    /// fd 7 from byte `offset`.
    fn gmem_req(slot: u32, gpa: u64, pages: u64, offset: u64) -> Request {
        Request {
            flags: KVM_MEM_GUEST_MEMFD,
            gmem_fd: 7,
            gmem_offset: offset,
            ..req(slot, gpa, pages * 4096, USER)
        }
    }

    /// fd 7 is guest_memfd file 70 of 16 pages; fd 8 is file 80; any
    /// other fd is another kind of file.
    fn files(fd: u32) -> Result<GmemFile, SlotError> {
        match fd {
            7 => Ok(GmemFile {
                id: 70,
                size: 16 * 4096,
            }),
            8 => Ok(GmemFile {
                id: 80,
                size: 16 * 4096,
            }),
            _ => Err(SlotError::Invalid),
        }
    }

    fn apply_gmem(t: &mut SlotTable, r: Request) -> Result<Change, SlotError> {
        let change = t.plan(&r, user_ok, PHYS_BITS, files)?;
        t.commit(change, false)?;
        Ok(change)
    }

    #[test]
    fn a_guest_memfd_slot_records_its_binding() {
        let mut t = SlotTable::new();
        let change = apply_gmem(&mut t, gmem_req(1, 0x10_0000, 4, 2 * 4096)).unwrap();
        let Change::Create(slot) = change else {
            panic!("{change:?}");
        };
        assert_eq!(slot.gmem, Some(Binding { file: 70, first: 2 }));
        assert_eq!(t.get(1).unwrap().gmem, slot.gmem);
    }

    #[test]
    fn the_file_is_asked_for_only_after_every_earlier_check() {
        let t = SlotTable::new();
        let asked = |fd: u32| -> Result<GmemFile, SlotError> { panic!("asked for fd {fd}") };
        let cases = [
            Request {
                gmem_offset: 0x800,
                ..gmem_req(1, 0, 1, 0)
            }, // offset unaligned
            gmem_req(1, 0, 1, !0xfff), // offset + size wraps
            Request {
                gpa: 0x800,
                ..gmem_req(1, 0, 1, 0)
            }, // gpa unaligned
            gmem_req(NR_MEMSLOTS as u32, 0, 1, 0), // slot id
        ];
        for r in cases {
            assert_eq!(
                t.plan(&r, user_ok, PHYS_BITS, asked),
                Err(SlotError::Invalid),
                "{r:?}"
            );
        }
        // Deleting a guest_memfd slot names no file either.
        let mut t = SlotTable::new();
        apply_gmem(&mut t, gmem_req(1, 0, 1, 0)).unwrap();
        let delete = Request {
            flags: 0,
            ..req(1, 0, 0, 0)
        };
        assert_eq!(
            t.plan(&delete, user_ok, PHYS_BITS, asked),
            Ok(Change::Delete(1))
        );
        // The file before the physical address width (KVM's arch prepare):
        // a good file, then the width refuses; no file, EBADF first.
        let beyond = gmem_req(2, 1 << PHYS_BITS, 1, 0);
        assert_eq!(
            t.plan(&beyond, user_ok, PHYS_BITS, files),
            Err(SlotError::Invalid)
        );
        assert_eq!(
            t.plan(&beyond, user_ok, PHYS_BITS, no_gmem),
            Err(SlotError::BadFile)
        );
        // A range overlapping another slot is EEXIST before the file is looked at.
        let r = Request {
            gmem_fd: 99,
            ..gmem_req(2, 0, 1, 0)
        };
        assert_eq!(
            t.plan(&r, user_ok, PHYS_BITS, files),
            Err(SlotError::Overlap)
        );
    }

    #[test]
    fn the_fd_must_be_a_guest_memfd_and_the_range_inside_it() {
        let mut t = SlotTable::new();
        let other_file = Request {
            gmem_fd: 3,
            ..gmem_req(1, 0, 1, 0)
        };
        assert_eq!(apply_gmem(&mut t, other_file), Err(SlotError::Invalid));
        let no_file = Request {
            gmem_fd: 3,
            ..gmem_req(1, 0, 1, 0)
        };
        assert_eq!(
            t.plan(&no_file, user_ok, PHYS_BITS, no_gmem),
            Err(SlotError::BadFile)
        );
        // 16 pages: offset 12 pages + 4 fits exactly, + 5 does not.
        assert_eq!(
            apply_gmem(&mut t, gmem_req(1, 0, 5, 12 * 4096)),
            Err(SlotError::Invalid)
        );
        // Linux's guest_memfd_test: an offset of ALIGN_DOWN(INT64_MAX).
        let far = (i64::MAX as u64) & !0xfff;
        assert_eq!(
            apply_gmem(&mut t, gmem_req(1, 0, 1, far)),
            Err(SlotError::Invalid)
        );
        assert!(apply_gmem(&mut t, gmem_req(1, 0, 4, 12 * 4096)).is_ok());
    }

    #[test]
    fn bindings_of_one_file_never_overlap_those_of_two_files_may() {
        let mut t = SlotTable::new();
        apply_gmem(&mut t, gmem_req(1, 0, 4, 4 * 4096)).unwrap(); // pages 4..8 of file 70
        assert_eq!(
            apply_gmem(&mut t, gmem_req(2, 0x10_0000, 2, 7 * 4096)),
            Err(SlotError::Overlap)
        );
        assert_eq!(
            apply_gmem(&mut t, gmem_req(2, 0x10_0000, 8, 0)),
            Err(SlotError::Overlap)
        );
        // Touching is fine; so is the same range of another file.
        assert!(apply_gmem(&mut t, gmem_req(2, 0x10_0000, 4, 0)).is_ok());
        assert!(apply_gmem(&mut t, gmem_req(3, 0x20_0000, 4, 8 * 4096)).is_ok());
        let other = Request {
            gmem_fd: 8,
            ..gmem_req(4, 0x30_0000, 4, 4 * 4096)
        };
        assert!(apply_gmem(&mut t, other).is_ok());
        // Deleting a slot frees its range of the file.
        apply_gmem(&mut t, req(1, 0, 0, 0)).unwrap();
        assert!(apply_gmem(&mut t, gmem_req(5, 0x40_0000, 4, 4 * 4096)).is_ok());
    }

    #[test]
    fn a_guest_memfd_slot_can_only_be_deleted() {
        let mut t = SlotTable::new();
        apply_gmem(&mut t, gmem_req(1, 0, 4, 0)).unwrap();
        // The same request again, a move, dropping the flag, logging: all EINVAL.
        for r in [
            gmem_req(1, 0, 4, 0),
            gmem_req(1, 0x10_0000, 4, 0),
            req(1, 0, 4 * 4096, USER),
            logging(req(1, 0, 4 * 4096, USER)),
        ] {
            assert_eq!(apply_gmem(&mut t, r), Err(SlotError::Invalid), "{r:?}");
        }
        // A normal slot cannot become one.
        apply_gmem(&mut t, req(2, 0x10_0000, 4096, USER)).unwrap();
        assert_eq!(
            apply_gmem(&mut t, gmem_req(2, 0x10_0000, 1, 0)),
            Err(SlotError::Invalid)
        );
        assert_eq!(apply_gmem(&mut t, req(1, 0, 0, 0)), Ok(Change::Delete(1)));
    }

    #[test]
    fn closing_the_file_unbinds_its_slots_which_stay() {
        let mut t = SlotTable::new();
        apply_gmem(&mut t, gmem_req(1, 0, 4, 0)).unwrap();
        let other = Request {
            gmem_fd: 8,
            ..gmem_req(2, 0x10_0000, 4, 0)
        };
        apply_gmem(&mut t, other).unwrap();
        t.unbind_gmem(70);
        assert_eq!(
            t.get(1).map(|s| (s.gmem, s.flags)),
            Some((None, KVM_MEM_GUEST_MEMFD))
        );
        assert_eq!(t.get(2).unwrap().gmem, Some(Binding { file: 80, first: 0 }));
        // Its range of file 70 is free for a new slot (of a file with that id).
        assert!(apply_gmem(&mut t, gmem_req(3, 0x20_0000, 4, 0)).is_ok());
        // The unbound slot still can only be deleted.
        assert_eq!(
            apply_gmem(&mut t, req(1, 0x30_0000, 4 * 4096, USER)),
            Err(SlotError::Invalid)
        );
        assert_eq!(apply_gmem(&mut t, req(1, 0, 0, 0)), Ok(Change::Delete(1)));
    }
}

mod registers {
    use crate::abi::kvm_cpuid_entry2;
    use crate::x86::cpuid::{GuestFeatures, FLAG_SIGNIFICANT_INDEX};
    use crate::x86::regs::{
        allowed_cr4, check_sregs, cr0, cr4, efer, reset_regs, reset_sregs, HostLimits, SregsError,
    };

    fn host() -> HostLimits {
        HostLimits {
            cr4_optional: cr4::FSGSBASE | cr4::SMEP | cr4::OSXSAVE,
            nx: true,
            phys_bits: 40,
        }
    }

    fn long_mode_guest() -> GuestFeatures {
        GuestFeatures::from_table(&[
            kvm_cpuid_entry2 {
                function: 0x8000_0001,
                edx: (1 << 29) | (1 << 20),
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                flags: FLAG_SIGNIFICANT_INDEX,
                ebx: (1 << 0) | (1 << 7) | (1 << 20),
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0008,
                eax: 0x3028,
                ..Default::default()
            },
        ])
    }

    fn long_mode_sregs() -> crate::abi::kvm_sregs {
        let mut s = reset_sregs(true);
        s.cr0 = cr0::PE | cr0::PG | cr0::ET;
        s.cr4 = cr4::PAE;
        s.efer = efer::LME | efer::LMA;
        s.cs.l = 1;
        s.cr3 = 0x1000;
        s
    }

    #[test]
    fn reset_state_is_the_architectural_one() {
        let r = reset_regs(0x600);
        assert_eq!((r.rip, r.rflags, r.rdx), (0xfff0, 0x2, 0x600));
        let s = reset_sregs(true);
        assert_eq!(
            (s.cs.selector, s.cs.base, s.cs.limit),
            (0xf000, 0xffff_0000, 0xffff)
        );
        assert_eq!(s.cr0, 0x6000_0010);
        assert_eq!(s.efer, 0);
        assert_eq!(s.apic_base, 0xfee0_0900, "vCPU 0 is the BSP");
        assert_eq!(reset_sregs(false).apic_base, 0xfee0_0800, "vCPU 1 is not");
        assert_eq!(check_sregs(&host(), &GuestFeatures::default(), &s), Ok(()));
    }

    #[test]
    fn long_mode_is_accepted_only_when_complete_and_advertised() {
        let s = long_mode_sregs();
        assert_eq!(check_sregs(&host(), &long_mode_guest(), &s), Ok(()));
        assert_eq!(
            check_sregs(&host(), &GuestFeatures::default(), &s),
            Err(SregsError::Efer)
        );
        let no_pae = crate::abi::kvm_sregs { cr4: 0, ..s };
        assert_eq!(
            check_sregs(&host(), &long_mode_guest(), &no_pae),
            Err(SregsError::LongMode)
        );
        let no_lma = crate::abi::kvm_sregs {
            efer: efer::LME,
            ..s
        };
        assert_eq!(
            check_sregs(&host(), &long_mode_guest(), &no_lma),
            Err(SregsError::LongMode)
        );
        let lma_without_paging = crate::abi::kvm_sregs { cr0: cr0::PE, ..s };
        assert_eq!(
            check_sregs(&host(), &long_mode_guest(), &lma_without_paging),
            Err(SregsError::LongMode)
        );
    }

    #[test]
    fn cr3_must_fit_the_guests_physical_width() {
        let guest = long_mode_guest(); // 0x28 = 40 bits
        let s = crate::abi::kvm_sregs {
            cr3: 1 << 40,
            ..long_mode_sregs()
        };
        assert_eq!(check_sregs(&host(), &guest, &s), Err(SregsError::Cr3));
        let s = crate::abi::kvm_sregs {
            cr3: (1 << 40) - 0x1000,
            ..long_mode_sregs()
        };
        assert_eq!(check_sregs(&host(), &guest, &s), Ok(()));
    }

    #[test]
    fn cr0_combinations_the_cpu_forbids_are_refused() {
        let g = GuestFeatures::default();
        for bad in [cr0::PG | cr0::ET, cr0::NW | cr0::ET, 1 << 32] {
            let s = crate::abi::kvm_sregs {
                cr0: bad,
                ..reset_sregs(true)
            };
            assert_eq!(
                check_sregs(&host(), &g, &s),
                Err(SregsError::Cr0),
                "{bad:#x}"
            );
        }
    }

    #[test]
    fn cr4_features_need_host_offer_and_guest_cpuid() {
        let g = long_mode_guest();
        // FSGSBASE and SMEP: host has them and the guest advertises them.
        assert_ne!(allowed_cr4(&host(), &g) & cr4::FSGSBASE, 0);
        assert_ne!(allowed_cr4(&host(), &g) & cr4::SMEP, 0);
        // SMAP: the guest advertises it but the host (here) does not have it.
        assert_eq!(allowed_cr4(&host(), &g) & cr4::SMAP, 0);
        // Nothing optional for a guest without CPUID.
        assert_eq!(allowed_cr4(&host(), &GuestFeatures::default()), cr4::BASE);
        // VMXE (bit 13) is never allowed.
        assert_eq!(allowed_cr4(&host(), &g) & (1 << 13), 0);
        // OSXSAVE: the host uses XSAVE; only a guest offered XSAVE.
        assert_eq!(allowed_cr4(&host(), &g) & cr4::OSXSAVE, 0);
        let xsave = GuestFeatures::from_table(&[kvm_cpuid_entry2 {
            function: 1,
            ecx: 1 << 26,
            ..Default::default()
        }]);
        assert_ne!(allowed_cr4(&host(), &xsave) & cr4::OSXSAVE, 0);
        let no_host_xsave = HostLimits {
            cr4_optional: cr4::FSGSBASE,
            ..host()
        };
        assert_eq!(allowed_cr4(&no_host_xsave, &xsave) & cr4::OSXSAVE, 0);
    }

    #[test]
    fn cr4_limits_come_from_the_hosts_cpuid() {
        use crate::x86::regs::HostLimits;
        let with = |ecx1: u32| {
            HostLimits::from_cpuid(move |f, _| match f {
                0 => (7, 0, 0, 0),
                1 => (0, 0, ecx1, 0),
                7 => (0, 1 << 7, 0, 0),
                0x8000_0000 => (0x8000_0008, 0, 0, 0),
                0x8000_0008 => (40, 0, 0, 0),
                _ => (0, 0, 0, 0),
            })
        };
        let h = with(1 << 27);
        assert_eq!(
            h.cr4_optional,
            cr4::SMEP | cr4::OSXSAVE,
            "OSXSAVE: the host kernel uses XSAVE"
        );
        assert_eq!(
            with(1 << 26).cr4_optional,
            cr4::SMEP,
            "XSAVE without OSXSAVE: not used"
        );
        assert_eq!(h.phys_bits, 40);
    }

    #[test]
    fn apic_base_reserved_bits_follow_the_guest() {
        let g = GuestFeatures::default(); // 36 bits, no x2APIC
        let s = |apic_base| crate::abi::kvm_sregs {
            apic_base,
            ..reset_sregs(true)
        };
        assert_eq!(check_sregs(&host(), &g, &s(0xfee0_0900)), Ok(()));
        assert_eq!(
            check_sregs(&host(), &g, &s(1 << 36 | 0x900)),
            Err(SregsError::ApicBase)
        );
        assert_eq!(
            check_sregs(&host(), &g, &s(0xfee0_0d00)),
            Err(SregsError::ApicBase)
        );
        assert_eq!(
            check_sregs(&host(), &g, &s(0xfee0_0001)),
            Err(SregsError::ApicBase)
        );
    }
}

mod cpuid_table {
    use crate::abi::kvm_cpuid_entry2;
    use crate::x86::cpuid::{
        reset_signature, supported, table_is_valid, tables_equal, GuestFeatures,
    };

    /// A host with basic leaves up to 0xd and extended up to 0x8000_001f,
    /// every feature bit set.
    fn host(function: u32, _index: u32) -> (u32, u32, u32, u32) {
        match function {
            0 => (0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            0x8000_0000 => (0x8000_001f, 0, 0, 0),
            _ => (!0, !0, !0, !0),
        }
    }

    fn entry<'a>(t: &'a [kvm_cpuid_entry2], f: u32) -> Option<&'a kvm_cpuid_entry2> {
        t.iter().find(|e| e.function == f)
    }

    #[test]
    fn the_offer_clamps_leaves_and_masks_features() {
        let mut out = [kvm_cpuid_entry2::default(); 32];
        let n = supported(host, 0, &mut out).unwrap();
        let t = &out[..n];
        assert_eq!(
            entry(t, 0).unwrap().eax,
            7,
            "highest basic leaf clamped to 7 without XSAVE"
        );
        assert_eq!(entry(t, 0x8000_0000).unwrap().eax, 0x8000_0008);
        assert!(entry(t, 0xd).is_none(), "no XSAVE leaf");
        let l1 = entry(t, 1).unwrap();
        assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor bit");
        assert_eq!(l1.ecx & (1 << 26 | 1 << 28), 0, "no XSAVE, no AVX");
        assert_eq!(entry(t, 7).unwrap().ebx & (1 << 5), 0, "no AVX2");
        assert_eq!(
            l1.edx & (1 << 12),
            0,
            "no MTRR: its MSRs are not virtualised"
        );
        assert_eq!(l1.ebx & 0xff00_0000, 0, "not the host's APIC id");
        let l81 = entry(t, 0x8000_0001).unwrap();
        assert_eq!(l81.ecx & (1 << 2), 0, "no nested SVM");
        assert_ne!(l81.edx & (1 << 29), 0, "long mode");
    }

    /// KVM's signature leaf names the features leaf, which offers nothing;
    /// TSC_ADJUST is in leaf 7 even when the host's leaf 7 lacks it.
    #[test]
    fn kvms_paravirtual_leaves_and_tsc_adjust_are_offered() {
        let no_leaf7 = |function: u32, index: u32| match function {
            7 => (0, 0, 0, 0),
            _ => host(function, index),
        };
        let mut out = [kvm_cpuid_entry2::default(); 32];
        let n = supported(no_leaf7, 0, &mut out).unwrap();
        let t = &out[..n];
        let sig = entry(t, 0x4000_0000).unwrap();
        let name: Vec<u8> = [sig.ebx, sig.ecx, sig.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&name, b"KVMKVMKVM\0\0\0");
        assert_eq!(sig.eax, 0x4000_0001, "the highest paravirtual leaf");
        let features = entry(t, 0x4000_0001).unwrap();
        assert_eq!(
            (features.eax, features.edx),
            (1 << 0 | 1 << 3 | 1 << 5 | 1 << 24, 0),
            "kvmclock (both MSR pairs, the stable bit), steal time, no hints"
        );
        assert_eq!(entry(t, 7).unwrap().ebx, 1 << 1, "TSC_ADJUST alone");
    }

    /// After the vCPU ran only the same table may be set again.
    #[test]
    fn tables_are_equal_only_entry_by_entry() {
        let e = |function: u32, ebx: u32| kvm_cpuid_entry2 {
            function,
            ebx,
            ..Default::default()
        };
        let a = [e(1, 5), e(7, 9)];
        assert!(tables_equal(&a, &[e(1, 5), e(7, 9)]));
        assert!(!tables_equal(&a, &[e(1, 5), e(7, 8)]), "a feature changed");
        assert!(!tables_equal(&a, &[e(7, 9), e(1, 5)]), "another order");
        assert!(!tables_equal(&a, &a[..1]), "an entry fewer");
    }

    #[test]
    fn x2apic_and_the_hypervisor_bit_are_offered_whatever_the_host_has() {
        let bare = |function: u32, index: u32| match function {
            1 => (0, 0, 0, 0),
            _ => host(function, index),
        };
        let mut out = [kvm_cpuid_entry2::default(); 32];
        let n = supported(bare, 7, &mut out).unwrap();
        let l1 = entry(&out[..n], 1).unwrap();
        assert_eq!(l1.ecx, (1 << 31) | (1 << 21), "hypervisor and x2APIC only");
    }

    #[test]
    fn too_small_a_buffer_is_reported() {
        let mut out = [kvm_cpuid_entry2::default(); 3];
        assert_eq!(supported(host, 0, &mut out), None);
    }

    /// [`host`] with XSAVE's leaf as a Haswell describes it: x87, SSE,
    /// AVX and (not offered) MPX; every XSAVE variant; AVX 256 bytes at 576.
    fn xsave_host(function: u32, index: u32) -> (u32, u32, u32, u32) {
        match (function, index) {
            (0xd, 0) => (0x1f, 1088, 1088, 0),
            (0xd, 1) => (0xf, 1088, 0, 0),
            (0xd, 2) => (256, 576, 0, 0),
            (0xd, 3) => (64, 960, 0, 0),
            (0xd, 4) => (64, 1024, 0, 0),
            _ => host(function, index),
        }
    }

    fn sub<'a>(t: &'a [kvm_cpuid_entry2], index: u32) -> Option<&'a kvm_cpuid_entry2> {
        t.iter().find(|e| e.function == 0xd && e.index == index)
    }

    /// Where the host's XCR0 has AVX, XSAVE and the AVX family are offered
    /// with leaf 0xD for x87|SSE|AVX, as KVM (XSAVES and MPX left out).
    #[test]
    fn xsave_and_avx_are_offered_where_the_host_has_their_state() {
        let mut out = [kvm_cpuid_entry2::default(); 32];
        let n = supported(xsave_host, 7, &mut out).unwrap();
        let t = &out[..n];
        assert_eq!(entry(t, 0).unwrap().eax, 0xd, "highest basic leaf 0xD");
        let l1 = entry(t, 1).unwrap();
        let avx_family = 1 << 12 | 1 << 28 | 1 << 29;
        assert_eq!(l1.ecx & (1 << 26 | avx_family), 1 << 26 | avx_family);
        assert_eq!(l1.ecx & (1 << 27), 0, "OSXSAVE is the guest's CR4's");
        assert_ne!(entry(t, 7).unwrap().ebx & (1 << 5), 0, "AVX2");
        let d0 = sub(t, 0).unwrap();
        assert_eq!((d0.eax, d0.ebx, d0.ecx, d0.edx), (7, 832, 832, 0));
        assert_eq!(d0.flags, 1, "each sub-leaf is its own");
        let d1 = sub(t, 1).unwrap();
        assert_eq!((d1.eax, d1.ebx), (0x7, 832), "no XSAVES; XSAVEC's size");
        let d2 = sub(t, 2).unwrap();
        assert_eq!((d2.eax, d2.ebx, d2.ecx), (256, 576, 0));
        assert!(sub(t, 3).is_none() && sub(t, 4).is_none(), "no MPX");
        // Leaf 0xD comes in order, after leaf 7 and before 0x8000_0000.
        let at = |f: u32| t.iter().position(|e| e.function == f).unwrap();
        assert!(at(7) < at(0xd) && at(0xd) < at(0x8000_0000));

        // A host whose XCR0 lacks AVX: XSAVE for x87 and SSE only.
        let n = supported(xsave_host, 3, &mut out).unwrap();
        let t = &out[..n];
        assert_eq!(entry(t, 1).unwrap().ecx & (1 << 26 | avx_family), 1 << 26);
        assert_eq!(entry(t, 7).unwrap().ebx & (1 << 5), 0, "no AVX2");
        let d0 = sub(t, 0).unwrap();
        assert_eq!((d0.eax, d0.ebx), (3, 576));
        assert!(sub(t, 2).is_none());
    }

    #[test]
    fn a_guest_table_is_read_for_features_and_signature() {
        assert_eq!(reset_signature(&[]), 0x600);
        let t = [
            kvm_cpuid_entry2 {
                function: 1,
                eax: 0x00a2_0f10,
                ecx: 1 << 21,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0008,
                eax: 0x3030,
                ..Default::default()
            },
        ];
        assert_eq!(reset_signature(&t), 0x00a2_0f10);
        let g = GuestFeatures::from_table(&t);
        assert!(g.x2apic && !g.long_mode && !g.xsave);
        assert_eq!(g.xcr0, 0, "no leaf 0xD");
        let x = GuestFeatures::from_table(&[
            kvm_cpuid_entry2 {
                function: 1,
                ecx: 1 << 26,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xd,
                index: 0,
                flags: 1,
                eax: 7,
                edx: 1,
                ..Default::default()
            },
        ]);
        assert!(x.xsave);
        assert_eq!(x.xcr0, 1 << 32 | 7, "EDX:EAX");
        assert_eq!(g.phys_bits, 48);
        assert_eq!(GuestFeatures::default().phys_bits, 36);
        // KVM's paravirtual features, one bit each (cpuid.rst).
        let pv = |eax: u32| {
            GuestFeatures::from_table(&[
                kvm_cpuid_entry2 {
                    function: 0x4000_0000,
                    eax: 0x4000_0001,
                    ebx: 0x4b4d_564b,
                    ecx: 0x564b_4d56,
                    edx: 0x4d,
                    ..Default::default()
                },
                kvm_cpuid_entry2 {
                    function: 0x4000_0001,
                    eax,
                    ..Default::default()
                },
            ])
        };
        let g = pv(1 << 0);
        assert!(g.kvm_clocksource && !g.kvm_clocksource2 && !g.kvm_steal_time);
        let g = pv(1 << 3);
        assert!(!g.kvm_clocksource && g.kvm_clocksource2 && !g.kvm_steal_time);
        let g = pv(1 << 5);
        assert!(!g.kvm_clocksource && !g.kvm_clocksource2 && g.kvm_steal_time);
        let g = pv(1 << 1);
        assert!(!g.kvm_clocksource, "bit 1 is NOP_IO_DELAY, not the clock");
    }

    #[test]
    fn only_48_or_57_bit_linear_widths_are_valid() {
        let with = |bits: u32| {
            [kvm_cpuid_entry2 {
                function: 0x8000_0008,
                eax: bits << 8 | 40,
                ..Default::default()
            }]
        };
        assert!(table_is_valid(&with(48)) && table_is_valid(&with(57)) && table_is_valid(&with(0)));
        assert!(!table_is_valid(&with(39)));
        assert!(table_is_valid(&[]));
    }
}

mod msrs {
    use crate::x86::cpuid::GuestFeatures;
    use crate::x86::msr::{
        canonicalize, feature_value, get, immutable_after_run, index, pat_valid, set, MsrContext,
        MsrFile, SharedRegs, FEATURES, PAT_RESET,
    };
    use crate::x86::regs::{efer, HostLimits};

    /// A host without optional CR4 bits, with NX and 40-bit physical
    /// addresses.
    fn host_with_40_bit_addresses() -> HostLimits {
        HostLimits {
            cr4_optional: 0,
            nx: true,
            phys_bits: 40,
        }
    }

    /// A reset MSR file of a default guest (36-bit guest physical
    /// addresses) on [`host_with_40_bit_addresses`], with the vCPU's EFER,
    /// its APIC_BASE (reset value) and the host's TSC beside it: `get` and
    /// `set` as the vCPU code calls them.
    struct Fixture {
        host: HostLimits,
        guest: GuestFeatures,
        file: MsrFile,
        efer: u64,
        apic_base: u64,
        host_tsc: u64,
        host_initiated: bool,
        vm_tsc_offset: u64,
        platform_info_readable: bool,
        pv_cpuid_enforced: bool,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                host: host_with_40_bit_addresses(),
                guest: GuestFeatures::default(),
                file: MsrFile::reset(),
                efer: 0,
                apic_base: 0xfee0_0900,
                host_tsc: 0,
                host_initiated: true,
                vm_tsc_offset: 0,
                platform_info_readable: true,
                pv_cpuid_enforced: false,
            }
        }

        /// Runs `op` on the file with the shared registers and the context
        /// borrowed from the fixture's fields.
        fn with<R>(
            &mut self,
            op: impl FnOnce(&mut MsrFile, &mut SharedRegs<'_>, &MsrContext<'_>) -> R,
        ) -> R {
            let ctx = MsrContext {
                host: &self.host,
                guest: &self.guest,
                host_tsc: self.host_tsc,
                host_initiated: self.host_initiated,
                vm_tsc_offset: self.vm_tsc_offset,
                platform_info_readable: self.platform_info_readable,
                pv_cpuid_enforced: self.pv_cpuid_enforced,
            };
            let mut shared = SharedRegs {
                efer: &mut self.efer,
                apic_base: &mut self.apic_base,
            };
            op(&mut self.file, &mut shared, &ctx)
        }

        fn get(&mut self, msr: u32) -> Option<u64> {
            self.with(|file, shared, ctx| get(file, shared, ctx, msr))
        }

        fn set(&mut self, msr: u32, value: u64) -> bool {
            self.with(|file, shared, ctx| set(file, shared, ctx, msr, value))
        }
    }

    /// MSR_PLATFORM_INFO as KVM has it (Linux's platform_info_test): CPUID
    /// faulting offered at creation, any value from the host, never from
    /// the guest, and a guest read refused once the VMM turned it off.
    #[test]
    fn platform_info_is_the_hosts_to_set_and_the_guests_to_read_if_allowed() {
        let mut f = Fixture::new();
        assert_eq!(f.get(index::PLATFORM_INFO), Some(1 << 31));
        assert!(f.set(index::PLATFORM_INFO, 0xff00 | 1 << 31));
        f.host_initiated = false;
        assert_eq!(f.get(index::PLATFORM_INFO), Some(0xff00 | 1 << 31));
        assert!(!f.set(index::PLATFORM_INFO, 0));
        f.platform_info_readable = false;
        assert_eq!(f.get(index::PLATFORM_INFO), None);
        f.host_initiated = true;
        assert_eq!(f.get(index::PLATFORM_INFO), Some(0xff00 | 1 << 31));
    }

    /// IA32_MISC_ENABLE as KVM has it (Linux's msrs_test): the guest may
    /// not change BTS/PEBS unavailable (11, 12: refused, #GP) and its
    /// writes leave EMON (7) as it was; the VMM sets anything.
    #[test]
    fn misc_enable_keeps_its_read_only_bits_from_the_guest() {
        let mut f = Fixture::new();
        f.host_initiated = false;
        let reset = f.get(index::MISC_ENABLE).unwrap();
        assert_eq!(reset, (1 << 11) | (1 << 12));
        assert!(!f.set(index::MISC_ENABLE, 1), "clears bits 11 and 12");
        assert_eq!(f.get(index::MISC_ENABLE), Some(reset));
        assert!(f.set(index::MISC_ENABLE, reset | 1 | (1 << 7)));
        assert_eq!(f.get(index::MISC_ENABLE), Some(reset | 1), "EMON kept at 0");
        f.host_initiated = true;
        assert!(f.set(index::MISC_ENABLE, 1 << 7));
        assert_eq!(f.get(index::MISC_ENABLE), Some(1 << 7));
    }

    /// The kvmclock MSRs take 0 from anyone, unless the VMM enforces a
    /// guest CPUID without KVM_FEATURE_CLOCKSOURCE: then the guest's
    /// accesses fault and the VMM's still work.
    #[test]
    fn kvmclock_msrs_fault_for_the_guest_when_its_cpuid_is_enforced() {
        let mut f = Fixture::new();
        f.host_initiated = false;
        assert_eq!(f.get(index::KVM_SYSTEM_TIME), Some(0));
        assert!(f.set(index::KVM_WALL_CLOCK, 0));
        f.pv_cpuid_enforced = true;
        assert_eq!(f.get(index::KVM_SYSTEM_TIME), None);
        assert!(!f.set(index::KVM_WALL_CLOCK, 0));
        f.guest.kvm_clocksource = true;
        assert_eq!(f.get(index::KVM_SYSTEM_TIME), Some(0));
        f.guest.kvm_clocksource = false;
        f.host_initiated = true;
        assert!(f.set(index::KVM_SYSTEM_TIME, 0));
    }

    /// The feature MSRs: each has an offer, a vCPU starts with it, and
    /// only they are frozen once the vCPU has run.
    #[test]
    fn feature_msrs_offer_what_a_new_vcpu_has() {
        let mut f = Fixture::new();
        for &msr in FEATURES {
            assert_eq!(feature_value(msr), f.get(msr), "MSR {msr:#x}");
            assert!(immutable_after_run(msr));
        }
        assert_eq!(feature_value(index::TSC), None);
        assert!(!immutable_after_run(index::MISC_FEATURES_ENABLES));
    }

    /// MSR_MISC_FEATURES_ENABLES: bit 0 (CPUID faulting) only while
    /// PLATFORM_INFO offers it, no other bit, for guest and host alike.
    #[test]
    fn cpuid_faulting_is_enabled_only_where_platform_info_offers_it() {
        let mut f = Fixture::new();
        assert!(!f.file.cpuid_faults());
        f.host_initiated = false;
        assert!(!f.set(index::MISC_FEATURES_ENABLES, 2));
        assert!(f.set(index::MISC_FEATURES_ENABLES, 1));
        assert!(f.file.cpuid_faults());
        assert_eq!(f.get(index::MISC_FEATURES_ENABLES), Some(1));
        assert!(f.set(index::MISC_FEATURES_ENABLES, 0));
        f.host_initiated = true;
        assert!(f.set(index::PLATFORM_INFO, 0));
        assert!(!f.set(index::MISC_FEATURES_ENABLES, 1));
        assert!(f.set(index::MISC_FEATURES_ENABLES, 0));
        assert!(!f.file.cpuid_faults());
    }

    /// HWCR as KVM has it (Linux's hwcr_msr_test): McStatusWrEn and
    /// TscFreqSel are kept, three legacy bits are taken and read as 0,
    /// every other bit is refused and leaves the register as it was.
    #[test]
    fn hwcr_keeps_two_bits_ignores_three_and_refuses_the_rest() {
        let mut f = Fixture::new();
        assert_eq!(f.get(index::HWCR), Some(0), "0 at reset");
        for bit in 0..64 {
            let value = 1u64 << bit;
            let ok = f.set(index::HWCR, value);
            match bit {
                18 | 24 => {
                    assert!(ok, "bit {bit}");
                    assert_eq!(f.get(index::HWCR), Some(value), "bit {bit}");
                }
                3 | 6 | 8 => {
                    assert!(ok, "bit {bit}");
                    assert_eq!(f.get(index::HWCR), Some(0), "bit {bit} reads as 0");
                }
                _ => {
                    assert!(!ok, "bit {bit} is refused");
                    assert_eq!(f.get(index::HWCR), Some(0), "bit {bit}: unchanged");
                }
            }
            assert!(f.set(index::HWCR, 0));
        }
    }

    #[test]
    fn writes_round_trip_and_invalid_values_are_refused() {
        let mut f = Fixture {
            efer: efer::LMA,
            host_tsc: 1000,
            ..Fixture::new()
        };
        assert!(f.set(index::LSTAR, 0xffff_8000_0000_1000));
        assert_eq!(f.get(index::LSTAR), Some(0xffff_8000_0000_1000));
        assert!(!f.set(index::LSTAR, 0x0000_8000_0000_0000), "non-canonical");
        assert!(!f.set(index::PAT, 0x02), "memory type 2 is reserved");
        assert_eq!(f.get(index::PAT), Some(PAT_RESET));
        // SYSENTER_EIP is made canonical, not refused.
        assert!(f.set(index::SYSENTER_EIP, 0x0000_8000_0000_0000));
        assert_eq!(f.get(index::SYSENTER_EIP), Some(0xffff_8000_0000_0000));
        // EFER keeps LMA from the current mode; SVME is refused.
        assert!(f.set(index::EFER, efer::SCE));
        assert_eq!(f.get(index::EFER), Some(efer::SCE | efer::LMA));
        assert!(!f.set(index::EFER, efer::SVME));
        // The TSC is an offset from the host's.
        assert!(f.set(index::TSC, 5000));
        f.host_tsc = 1500;
        assert_eq!(f.get(index::TSC), Some(5500));
        // An MSR rkvm does not know.
        assert_eq!(f.get(0x1234_5678), None);
        assert!(!f.set(0x1234_5678, 0));
    }

    /// The TSC and IA32_TSC_ADJUST as KVM keeps them (Linux's
    /// tsc_msrs_test walks the same steps): the guest's writes to either
    /// move both, the host's set one and leave the other, and a host write
    /// of 0 joins the offset the VM's vCPUs share.
    #[test]
    fn tsc_and_tsc_adjust_move_together_for_the_guest_only() {
        let mut f = Fixture::new();
        f.guest.tsc_adjust = true;
        f.host_tsc = 10_000;
        f.vm_tsc_offset = 0u64.wrapping_sub(9_000);
        // The host's 0: the VM's shared offset, so the TSC reads 1000.
        assert!(f.set(index::TSC, 0));
        assert_eq!(f.get(index::TSC), Some(1_000));
        assert_eq!(f.get(index::TSC_ADJUST), Some(0));
        // The guest writes the TSC: TSC_ADJUST moves by as much.
        f.host_initiated = false;
        assert!(f.set(index::TSC, 4_000));
        assert_eq!(f.get(index::TSC), Some(4_000));
        assert_eq!(f.get(index::TSC_ADJUST), Some(3_000));
        // The guest writes TSC_ADJUST: the TSC moves by the difference.
        assert!(f.set(index::TSC_ADJUST, 5_000));
        assert_eq!(f.get(index::TSC), Some(6_000));
        // The host sets the TSC: TSC_ADJUST stays.
        f.host_initiated = true;
        assert!(f.set(index::TSC, 100_000));
        assert_eq!(f.get(index::TSC), Some(100_000));
        assert_eq!(f.get(index::TSC_ADJUST), Some(5_000));
        // The host sets TSC_ADJUST (a restore): the TSC stays.
        assert!(f.set(index::TSC_ADJUST, 7));
        assert_eq!(f.get(index::TSC_ADJUST), Some(7));
        assert_eq!(f.get(index::TSC), Some(100_000));
        // Time passes for both alike.
        f.host_tsc += 50;
        assert_eq!(f.get(index::TSC), Some(100_050));
        // Without the feature in CPUID a write is taken and dropped.
        f.guest.tsc_adjust = false;
        f.host_initiated = false;
        assert!(f.set(index::TSC_ADJUST, 1 << 40));
        assert_eq!(f.get(index::TSC_ADJUST), Some(7));
        assert_eq!(f.get(index::TSC), Some(100_050));
    }

    #[test]
    fn kvmclock_msrs_keep_any_value_and_the_two_numbers_share_it() {
        let mut f = Fixture::new();
        assert_eq!(f.get(index::KVM_SYSTEM_TIME), Some(0), "off at reset");
        assert!(f.set(index::KVM_SYSTEM_TIME_NEW, 0x1000 | 1));
        assert_eq!(f.get(index::KVM_SYSTEM_TIME), Some(0x1001));
        assert!(f.set(index::KVM_SYSTEM_TIME, 0));
        assert_eq!(f.get(index::KVM_SYSTEM_TIME_NEW), Some(0));
        assert!(f.set(index::KVM_WALL_CLOCK, 0x2000));
        assert_eq!(f.get(index::KVM_WALL_CLOCK_NEW), Some(0x2000));
        assert!(
            f.set(index::KVM_WALL_CLOCK_NEW, u64::MAX),
            "any value, as KVM"
        );
        // Steal time: 64-byte aligned (bits 5:1 reserved), enable in bit 0.
        assert!(f.set(index::KVM_STEAL_TIME, 0x4000_0000 | 1));
        assert_eq!(f.get(index::KVM_STEAL_TIME), Some(0x4000_0001));
        for bit in 1..6 {
            assert!(
                !f.set(index::KVM_STEAL_TIME, 0x4000_0000 | 1 << bit),
                "bit {bit}"
            );
        }
        assert!(f.set(index::KVM_STEAL_TIME, 0x4000_0040));
        for msr in [
            index::KVM_WALL_CLOCK,
            index::KVM_SYSTEM_TIME,
            index::KVM_WALL_CLOCK_NEW,
            index::KVM_SYSTEM_TIME_NEW,
            index::KVM_STEAL_TIME,
        ] {
            assert!(
                crate::x86::msr::SUPPORTED.contains(&msr),
                "{msr:#x} in KVM_GET_MSR_INDEX_LIST"
            );
        }
    }

    #[test]
    fn mtrrs_are_kept_and_checked_like_kvm() {
        let mut f = Fixture::new();
        // MTRRcap: 8 variable ranges, fixed ranges, WC; read-only.
        assert_eq!(f.get(index::MTRRCAP), Some(0x508));
        assert!(!f.set(index::MTRRCAP, 0x508));
        // Default type: WB with E and FE set is fine; type 2 and bit 9 are not.
        assert!(f.set(index::MTRR_DEF_TYPE, 0xc06));
        assert_eq!(f.get(index::MTRR_DEF_TYPE), Some(0xc06));
        assert!(!f.set(index::MTRR_DEF_TYPE, 0x002));
        assert!(!f.set(index::MTRR_DEF_TYPE, 0x206));
        // PhysBase0 (even): a type, bits 11:8 reserved, nothing above the guest's 36 bits.
        assert!(f.set(0x200, 0x8000_0006));
        assert!(!f.set(0x200, 0x8000_0106));
        assert!(!f.set(0x200, 1 << 36 | 6));
        // PhysMask0 (odd): bits 10:0 reserved (bit 11 is V).
        assert!(f.set(0x201, 0xf_f000_0800));
        assert!(!f.set(0x201, 0xf_f000_0801));
        assert_eq!(f.get(0x201), Some(0xf_f000_0800));
        // Fixed ranges: eight valid types.
        assert!(f.set(0x250, 0x0606_0606_0606_0606));
        assert!(!f.set(0x26f, 0x0606_0606_0606_0602));
        assert_eq!(f.get(0x26f), Some(0));
    }

    #[test]
    fn helpers_follow_the_manuals() {
        assert!(pat_valid(PAT_RESET));
        assert!(!pat_valid(0x0300_0000_0000_0000));
        assert_eq!(canonicalize(0x0000_7fff_ffff_ffff), 0x0000_7fff_ffff_ffff);
        assert_eq!(canonicalize(0x1234_8000_0000_0000), 0xffff_8000_0000_0000);
    }
}

mod coalesced_zones;
mod decoder;
mod emulate_rules;
mod gmem_rules;
mod guest_debug_rules;
mod hyperv;
mod ioapic;
mod ioeventfd;
mod lapic;
mod msr_filter_rules;
mod page_walk;
mod pic;
mod pit;
mod pvclock_math;
mod routing;
mod smm_state;
mod speculation;
mod stats_binary;
mod tsc_rate;
mod vmx_caps;
mod vmx_vpid;
mod xsave_abi;

mod dirty_log {
    use crate::dirty::{
        clear_bytes, clear_range_ok, manual_caps_ok, starts_all_dirty, DirtyBitmap, MANUAL_CAPS,
    };

    #[test]
    fn manual_protection_takes_initially_set_only_with_protect_enable() {
        assert_eq!(MANUAL_CAPS, 3);
        assert!(manual_caps_ok(0) && manual_caps_ok(1) && manual_caps_ok(3));
        assert!(!manual_caps_ok(2) && !manual_caps_ok(4) && !manual_caps_ok(7));
        assert!(starts_all_dirty(3) && !starts_all_dirty(1) && !starts_all_dirty(0));
    }

    #[test]
    fn a_clear_starts_on_a_word_stays_inside_and_is_whole_words_until_the_end() {
        // A slot of 130 pages: words at 0, 64, 128.
        assert!(clear_range_ok(0, 130, 130));
        assert!(clear_range_ok(0, 64, 130));
        assert!(clear_range_ok(64, 66, 130));
        assert!(clear_range_ok(128, 2, 130));
        assert!(clear_range_ok(128, 0, 128), "nothing, at the end");
        assert!(!clear_range_ok(1, 1, 130), "not on a word");
        assert!(
            !clear_range_ok(0, 65, 130),
            "part of a word short of the end"
        );
        assert!(!clear_range_ok(64, 67, 130), "past the end");
        assert!(!clear_range_ok(192, 0, 130), "starts past the end");
        assert_eq!(
            (
                clear_bytes(0),
                clear_bytes(1),
                clear_bytes(64),
                clear_bytes(65)
            ),
            (0, 8, 8, 16)
        );
    }

    #[test]
    fn take_hands_out_a_word_once_and_clear_reports_what_it_cleared() {
        let mut b = DirtyBitmap::new(200, false).unwrap();
        for page in [0, 3, 64, 199] {
            b.mark(page);
        }
        assert!(b.is_dirty(3) && !b.is_dirty(4));
        assert_eq!(b.take(0), 0b1001);
        assert_eq!(b.take(0), 0);
        assert_eq!(b.clear(1, 0b11), 0b1);
        assert_eq!(b.word(1), 0);
        assert_eq!(b.clear(3, u64::MAX), 1 << 7);
        assert_eq!((b.take(9), b.clear(9, 1), b.word(9)), (0, 0, 0));
    }
}
