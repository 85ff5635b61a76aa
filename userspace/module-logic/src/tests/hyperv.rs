//! `module/hyperv/`: the Hyper-V leaves `KVM_GET_SUPPORTED_HV_CPUID`
//! reports, the partition MSRs' rules, hypercall decoding and the
//! reference TSC page's arithmetic (TLFS; KVM's hyperv.c for the rules).

use crate::abi::kvm_cpuid_entry2;
use crate::hyperv::{
    msr, status, supported, vp_index_write, Call, Outcome, Partition, TscPage, TscStatus, Write,
    LEAF_COUNT,
};
use crate::x86::cpuid::GuestFeatures;
use crate::x86::pvclock::{ClockRef, FLAG_TSC_STABLE};

fn leaves(smt: bool) -> Vec<kvm_cpuid_entry2> {
    leaves_for(smt, true)
}

fn leaves_for(smt: bool, apic: bool) -> Vec<kvm_cpuid_entry2> {
    let mut out = vec![kvm_cpuid_entry2::default(); 16];
    let n = supported(smt, 1024, apic, &mut out).expect("16 entries are enough");
    out.truncate(n);
    out
}

fn leaf(t: &[kvm_cpuid_entry2], function: u32) -> kvm_cpuid_entry2 {
    *t.iter().find(|e| e.function == function).unwrap()
}

#[test]
fn ten_leaves_in_kvms_range_with_what_the_selftest_checks() {
    let t = leaves(true);
    assert_eq!(t.len(), 10);
    for e in &t {
        assert!((0x4000_0000..=0x4000_0082).contains(&e.function));
        assert_eq!((e.index, e.flags, e.padding), (0, 0, [0; 3]));
    }
    assert_eq!(leaf(&t, 0x4000_0000).eax, 0x4000_0082, "the highest leaf");
    assert_eq!(leaf(&t, 0x4000_0001).eax, 0x3123_7648, "Hv#1");
    assert_ne!(leaf(&t, 0x4000_000A).eax & (1 << 19), 0);
    // NoNonArchitecturalCoreSharing is the opposite of SMT.
    assert_eq!(leaf(&t, 0x4000_0004).eax & (1 << 18), 0);
    let t = leaves(false);
    assert_ne!(leaf(&t, 0x4000_0004).eax & (1 << 18), 0);
}

#[test]
fn only_what_rkvm_implements_is_offered() {
    let f = leaf(&leaves(false), 0x4000_0003);
    // Reference counter, hypercall MSRs, VP index, TSC page, frequency
    // MSRs, re-enlightenment MSRs; no VP runtime (0), SynIC (2), timers
    // (3), APIC MSRs with the VP assist page (4), reset (7), crash MSRs.
    assert_eq!(
        f.eax,
        (1 << 1) | (1 << 5) | (1 << 6) | (1 << 9) | (1 << 11) | (1 << 13)
    );
    // EDX: XMM input for fast calls (4), the frequency MSRs (8).
    assert_eq!((f.ebx, f.ecx, f.edx), (1 << 20, 0, (1 << 4) | (1 << 8)));
    let e = leaf(&leaves(true), 0x4000_0004);
    // The TLB-flush (2) and IPI (10) hypercalls with sparse sets (11);
    // no APIC-access MSRs (3, which come with the VP assist page's EOI),
    // relaxed timing (5).
    assert_eq!(e.eax, (1 << 2) | (1 << 10) | (1 << 11));
    assert_eq!(e.ebx, u32::MAX, "never notify a long spin");
    // Without an in-kernel APIC no IPI hypercall is recommended (Linux's
    // hyperv_cpuid checks a vCPU without one).
    let e = leaf(&leaves_for(true, false), 0x4000_0004);
    assert_eq!(e.eax, (1 << 2) | (1 << 11));
}

#[test]
fn too_small_a_buffer_is_refused() {
    let mut out = vec![kvm_cpuid_entry2::default(); LEAF_COUNT - 1];
    assert_eq!(supported(true, 1, true, &mut out), None);
    let mut out = vec![kvm_cpuid_entry2::default(); LEAF_COUNT];
    assert_eq!(supported(true, 1, true, &mut out), Some(LEAF_COUNT));
}

#[test]
fn hypercall_codes_reserved_bits_and_fast_extended_calls() {
    let call = |control: u64| {
        Call {
            control,
            input: 0x1000,
            output: 0x2000,
        }
        .outcome()
    };
    assert_eq!(call(0x8001), Outcome::User, "query capabilities");
    assert_eq!(call(0x8001 + 64), Outcome::User, "the last extended code");
    assert_eq!(
        call(0x8001 + 65),
        Outcome::Done(status::INVALID_HYPERCALL_CODE)
    );
    assert_eq!(
        call(0x8001 | 1 << 16),
        Outcome::Done(status::INVALID_PARAMETER),
        "fast"
    );
    assert_eq!(call(0x0004), Outcome::Done(status::INVALID_HYPERCALL_CODE));
    // The IPI calls: not as rep calls, SEND_IPI without a variable header.
    assert_eq!(call(0x000b), Outcome::SendIpi);
    assert_eq!(call(0x000b | 1 << 16), Outcome::SendIpi, "fast");
    assert_eq!(call(0x0015 | 2 << 17), Outcome::SendIpi);
    for bad in [0x000b | 1 << 17, 0x000b | 1 << 32, 0x0015 | 1 << 48] {
        assert_eq!(
            call(bad),
            Outcome::Done(status::INVALID_HYPERCALL_INPUT),
            "{bad:#x}"
        );
    }
    for reserved in [27, 31, 44, 47, 60, 63] {
        assert_eq!(
            call(0x8001 | 1 << reserved),
            Outcome::Done(status::INVALID_HYPERCALL_INPUT),
            "bit {reserved}"
        );
    }
    // The rep count and start index and the variable header size are not
    // reserved.
    assert_eq!(call(0x8001 | 5 << 32 | 2 << 48 | 3 << 17), Outcome::User);
}

#[test]
fn the_tsc_page_reads_the_kvmclock_in_100ns_units() {
    for khz in [1_000_000u32, 2_596_125, 3_000_000, 100_000, 25_000_000] {
        let clock = ClockRef {
            host_tsc: 0x1234_5678_9abc,
            ns: 987_654_321_000,
        }
        .time_info(0x10_0000, khz);
        let page = TscPage::from_clock(&clock, 0).expect("a stable clock of at least 10 MHz");
        assert_eq!(page.sequence, 1);
        for ticks in [0u64, 1, 1 << 20, u64::from(khz) * 1000 * 3600] {
            let tsc = clock.tsc_timestamp + ticks;
            let expect = clock.read(tsc) / 100;
            assert!(
                page.read(tsc).abs_diff(expect) <= 1 + expect / 1_000_000_000,
                "{khz} kHz, {ticks} ticks: page {} clock {expect}",
                page.read(tsc)
            );
        }
    }
}

/// The usual order: the VM's clock reference is taken at its creation,
/// the vCPU's TSC starts near 0 later, so the guest's TSC at the reference
/// is "negative" (the offset from the host's is minus a later host TSC).
#[test]
fn the_tsc_page_is_right_for_a_vcpu_created_after_the_clock_reference() {
    let khz = 3_000_000u32;
    let reference = ClockRef {
        host_tsc: 1_000_000_000_000,
        ns: 0,
    };
    // The vCPU came a second (3·10^9 ticks) after the reference.
    let tsc_offset = 0u64.wrapping_sub(reference.host_tsc + 3_000_000_000);
    let clock = reference.time_info(tsc_offset, khz);
    let page = TscPage::from_clock(&clock, 0).unwrap();
    // One more second on: the guest's TSC reads 3·10^9, the clock 2 s.
    let tsc = 3_000_000_000u64;
    let expect = clock.read(tsc) / 100;
    assert!(expect.abs_diff(20_000_000) <= 1, "the clock reads {expect}");
    assert!(
        page.read(tsc).abs_diff(expect) <= 1,
        "page {} vs clock {expect}",
        page.read(tsc)
    );
}

#[test]
fn a_new_tsc_offset_rewrites_the_page_unless_the_guest_froze_it() {
    let page = TscPage {
        sequence: 1,
        scale: 1 << 62,
        offset: 0,
    };
    let mut p = Partition::default();
    p.write(msr::REFERENCE_TSC, 0x7001, false);
    p.tsc = TscStatus::Set {
        page,
        tsc_offset: 5,
    };
    p.tsc_offset_seen(5);
    assert_eq!(p.tsc_page_due(), None, "the same offset");
    assert_eq!(p.tsc_page_offset(), Some(5));
    p.tsc_offset_seen(6);
    assert_eq!(p.tsc_page_due(), Some(0x7000), "another offset");
    p.tsc = TscStatus::Set {
        page,
        tsc_offset: 5,
    };
    p.write(msr::TSC_EMULATION_CONTROL, 1, false);
    p.tsc_offset_seen(6);
    assert_eq!(
        (p.tsc_page_due(), p.tsc_page_offset()),
        (None, Some(6)),
        "frozen: kept, for the new offset"
    );
}

#[test]
fn the_tsc_page_sequence_skips_0_and_all_ones_and_needs_a_stable_clock() {
    let clock = ClockRef { host_tsc: 0, ns: 0 }.time_info(0, 2_000_000);
    let seq = |previous| TscPage::from_clock(&clock, previous).unwrap().sequence;
    assert_eq!(seq(7), 8);
    assert_eq!(seq(u32::MAX - 1), 1);
    assert_eq!(seq(u32::MAX), 1);
    let unstable = crate::x86::pvclock::TimeInfo {
        flags: clock.flags & !FLAG_TSC_STABLE,
        ..clock
    };
    assert_eq!(TscPage::from_clock(&unstable, 0), None);
    // Below 10 MHz a tick is more than 2^64 / 2^64 units of 100 ns: the
    // scale does not fit.
    let slow = ClockRef { host_tsc: 0, ns: 0 }.time_info(0, 5_000);
    assert_eq!(TscPage::from_clock(&slow, 0), None);
}

#[test]
fn the_tsc_page_layout() {
    let page = TscPage {
        sequence: 3,
        scale: 0x0102_0304_0506_0708,
        offset: -5,
    };
    let b = page.to_bytes();
    assert_eq!(&b[0..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&b[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&b[16..24], &(-5i64).to_le_bytes());
    assert_eq!(TscPage::from_bytes(&b), page);
}

#[test]
fn the_hypercall_page_needs_the_os_identity_first() {
    let mut p = Partition::default();
    assert!(!p.hypercalls_enabled());
    assert_eq!(p.write(msr::HYPERCALL, 0x5000 | 1, false), Write::Done);
    assert_eq!(p.read(msr::HYPERCALL), Some(0), "dropped without an OS id");
    assert_eq!(p.write(msr::GUEST_OS_ID, 0x8100 << 48, false), Write::Done);
    assert!(p.hypercalls_enabled());
    assert_eq!(
        p.write(msr::HYPERCALL, 0x5000 | 1, false),
        Write::HypercallPage(0x5000)
    );
    assert_eq!(
        p.read(msr::HYPERCALL),
        Some(0),
        "only once the page is written"
    );
    p.hypercall_page_written(0x5001);
    assert_eq!(p.read(msr::HYPERCALL), Some(0x5001));
    // Disabled: stored as is, no page written.
    assert_eq!(p.write(msr::HYPERCALL, 0x6000, false), Write::Done);
    assert_eq!(p.read(msr::HYPERCALL), Some(0x6000));
    p.hypercall_page_written(0x5001);
    // An OS identity of 0 turns the page off and hypercalls with it.
    assert_eq!(p.write(msr::GUEST_OS_ID, 0, false), Write::Done);
    assert_eq!(p.read(msr::HYPERCALL), Some(0x5000));
    assert!(!p.hypercalls_enabled());
}

#[test]
fn read_only_msrs_refuse_the_guest_and_ignore_the_host() {
    let mut p = Partition::default();
    for index in [msr::TIME_REF_COUNT, msr::TSC_FREQUENCY, msr::APIC_FREQUENCY] {
        assert_eq!(p.write(index, 1, false), Write::Refused);
        assert_eq!(p.write(index, 1, true), Write::Done);
        assert_eq!(p.read(index), None, "the caller computes it");
    }
    assert_eq!(p.write(msr::TSC_EMULATION_STATUS, 1, false), Write::Refused);
    assert_eq!(p.write(msr::TSC_EMULATION_STATUS, 1, true), Write::Done);
    assert_eq!(p.write(msr::TSC_EMULATION_STATUS, 0, false), Write::Done);
    assert_eq!(p.read(msr::TSC_EMULATION_STATUS), Some(0));
    assert_eq!(p.write(0x4000_0002, 0, true), Write::Refused, "VP index");
}

#[test]
fn the_tsc_page_is_due_when_enabled_or_the_clock_moves_unless_frozen() {
    let mut p = Partition::default();
    assert_eq!(p.write(msr::REFERENCE_TSC, 0x7000, false), Write::Done);
    assert_eq!(p.tsc_page_due(), None, "disabled");
    p.write(msr::REFERENCE_TSC, 0x7001, false);
    assert_eq!(p.tsc_page_due(), Some(0x7000));
    let page = TscPage {
        sequence: 1,
        scale: 1 << 62,
        offset: 10,
    };
    p.tsc = TscStatus::Set {
        page,
        tsc_offset: 7,
    };
    assert_eq!(p.tsc_page_due(), None);
    assert_eq!(
        p.reference_time(400, 99),
        110,
        "the page's reading once set"
    );
    p.clock_moved();
    assert_eq!(p.tsc_page_due(), Some(0x7000));
    assert_eq!(p.reference_time(400, 99), 99, "the clock while stale");
    // The guest turned TSC emulation on: the clock no longer moves the page,
    // and a rewrite the host asked for adopts the guest's page as it is.
    p.tsc = TscStatus::Set {
        page,
        tsc_offset: 7,
    };
    p.write(msr::TSC_EMULATION_CONTROL, 1, false);
    p.clock_moved();
    assert_eq!(
        p.tsc,
        TscStatus::Set {
            page,
            tsc_offset: 7
        }
    );
    p.write(msr::REFERENCE_TSC, 0x7001, true);
    assert!(p.adopt_frozen(page, 7));
    // The guest's own enabling write is always honoured.
    p.write(msr::REFERENCE_TSC, 0x7001, false);
    assert!(!p.adopt_frozen(page, 7));
    p.write(msr::REFERENCE_TSC, 0, false);
    assert_eq!((p.tsc, p.tsc_page_due()), (TscStatus::Unset, None));
}

#[test]
fn hyper_v_is_on_with_hv1_and_kvms_leaves_move_behind_it() {
    let e = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    // Hyper-V at 0x4000_0000, KVM's leaves at 0x4000_0100.
    let t = [
        e(
            0x4000_0000,
            0x4000_0082,
            0x756e_694c,
            0x564b_2078,
            0x7648_204d,
        ),
        e(0x4000_0001, 0x3123_7648, 0, 0, 0),
        e(0x4000_0100, 0x4000_0101, 0x4b4d_564b, 0x564b_4d56, 0x4d),
        e(0x4000_0101, 1 << 3, 0, 0, 0),
    ];
    let g = GuestFeatures::from_table(&t);
    assert!(g.hyperv);
    assert!(
        g.kvm_clocksource2 && !g.kvm_clocksource,
        "read at 0x4000_0101"
    );
    // Without KVM's signature, "Hv#1" is not read as KVM's feature bits.
    let g = GuestFeatures::from_table(&t[..2]);
    assert!(g.hyperv && !g.kvm_clocksource && !g.kvm_steal_time);
    assert!(!GuestFeatures::from_table(&t[2..]).hyperv);
}

#[test]
fn only_the_vmm_sets_a_vp_index_and_only_below_the_vcpu_limit() {
    assert_eq!(vp_index_write(5, true, 1024), Some(5));
    assert_eq!(vp_index_write(1023, true, 1024), Some(1023));
    assert_eq!(vp_index_write(1024, true, 1024), None);
    assert_eq!(vp_index_write(5, false, 1024), None, "the guest's write");
    // The low 32 bits, as KVM's `(u32)data`.
    assert_eq!(vp_index_write((1 << 32) | 7, true, 1024), Some(7));
    assert!(msr::is_hyperv(msr::VP_INDEX));
    assert!(!msr::is_hyperv(0x4000_0003));
}

mod ipis {
    //! `module/hyperv/ipi.rs`: the IPI hypercalls' parameters, as Linux's
    //! hyperv_ipi test passes them, and KVM's checks.

    use crate::hyperv::ipi::{decode, Ipi, SEND_IPI, SEND_IPI_EX};
    use crate::hyperv::params::{VpSet, XMM_HALVES};
    use crate::hyperv::{status, Call};

    const INVALID: u64 = status::INVALID_HYPERCALL_INPUT;
    const FAST: u64 = 1 << 16;
    const IN: u64 = 0x5000;

    /// Guest memory: `words` from `IN` on.
    fn memory(words: &[u64]) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
        move |gpa, buf| {
            let Some(at) = gpa.checked_sub(IN).map(|o| o as usize) else {
                return false;
            };
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            match bytes.get(at..at + buf.len()) {
                Some(b) => {
                    buf.copy_from_slice(b);
                    true
                }
                None => false,
            }
        }
    }

    fn call(control: u64, input: u64, output: u64) -> Call {
        Call {
            control,
            input,
            output,
        }
    }

    fn sparse(valid: u64, present: &[u64]) -> VpSet {
        let mut banks = [0; 64];
        banks[..present.len()].copy_from_slice(present);
        VpSet::sparse(valid, banks)
    }

    fn members(set: &VpSet) -> Vec<u32> {
        (0..4096).filter(|&vp| set.contains(vp)).collect()
    }

    const NO_XMM: [u64; XMM_HALVES] = [0; XMM_HALVES];

    #[test]
    fn send_ipi_takes_a_mask_of_the_first_64_vp_indices() {
        // Slow: struct hv_send_ipi in memory.
        let mem = [0xfe, 1 << 2];
        let ipi = decode(&call(SEND_IPI as u64, IN, 0), &NO_XMM, memory(&mem)).unwrap();
        let ipi = ipi.unwrap();
        assert_eq!(ipi.vector, 0xfe);
        assert_eq!(members(&ipi.to), [2]);
        // Fast: the vector in RDX, the mask in R8.
        let fast = decode(
            &call(SEND_IPI as u64 | FAST, 0xfe, 1 << 2 | 1 << 63),
            &NO_XMM,
            memory(&[]),
        );
        assert_eq!(members(&fast.unwrap().unwrap().to), [2, 63]);
        // The reserved half of RDX must be 0.
        let bad = decode(
            &call(SEND_IPI as u64 | FAST, 1 << 32 | 0xfe, 4),
            &NO_XMM,
            memory(&[]),
        );
        assert_eq!(bad, Err(INVALID));
        // Unreadable input.
        assert_eq!(
            decode(&call(SEND_IPI as u64, 0x9000, 0), &NO_XMM, memory(&[])),
            Err(INVALID)
        );
    }

    #[test]
    fn vectors_below_16_or_above_255_are_refused() {
        for vector in [0, 0xf, 0x100, 0x1_0010] {
            let r = decode(
                &call(SEND_IPI as u64 | FAST, vector, 1),
                &NO_XMM,
                memory(&[]),
            );
            assert_eq!(r, Err(INVALID), "{vector:#x}");
        }
        let r = decode(&call(SEND_IPI as u64 | FAST, 0x10, 1), &NO_XMM, memory(&[]));
        assert_eq!(r.unwrap().unwrap().vector, 0x10);
    }

    #[test]
    fn send_ipi_ex_names_banks_of_64_in_memory() {
        // struct hv_send_ipi_ex: vector, format, valid-bank mask, banks.
        // Banks 0 and 1 present: VP 2 and VP 65 (Linux's test).
        let mem = [0xfe, 0, 0b11, 1 << 2, 1 << 1];
        let c = call(SEND_IPI_EX as u64 | 2 << 17, IN, 0);
        let ipi = decode(&c, &NO_XMM, memory(&mem)).unwrap().unwrap();
        assert_eq!(members(&ipi.to), [2, 65]);
        // Bank 1 alone: its mask is the first one given.
        let mem = [0xfe, 0, 0b10, 1 << 1];
        let c = call(SEND_IPI_EX as u64 | 1 << 17, IN, 0);
        let ipi = decode(&c, &NO_XMM, memory(&mem)).unwrap().unwrap();
        assert_eq!(ipi.to, sparse(0b10, &[1 << 1]));
        assert_eq!(members(&ipi.to), [65]);
        // The header must count the banks present.
        let c = call(SEND_IPI_EX as u64 | 2 << 17, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, memory(&mem)), Err(INVALID));
        // A bank past the end of readable memory.
        let mem = [0xfe, 0, 0b11, 1 << 2];
        let c = call(SEND_IPI_EX as u64 | 2 << 17, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, memory(&mem)), Err(INVALID));
        // Banks past the 16th cannot hold a VP index: not read, as KVM.
        let mut mem = vec![0xfe, 0, (1 << 20) - 1];
        mem.extend([0; 15]);
        mem.push(1 << 63);
        let c = call(SEND_IPI_EX as u64 | 20 << 17, IN, 0);
        let ipi = decode(&c, &NO_XMM, memory(&mem)).unwrap().unwrap();
        assert_eq!(members(&ipi.to), [15 * 64 + 63]);
        mem.pop();
        assert_eq!(decode(&c, &NO_XMM, memory(&mem)), Err(INVALID));
    }

    #[test]
    fn send_ipi_ex_fast_reads_the_set_from_xmm_registers() {
        // RDX the vector, R8 the format, XMM0 low the valid mask, then the
        // banks from XMM0's high half on.
        let mut xmm = NO_XMM;
        xmm[0] = 0b11;
        xmm[1] = 1 << 2;
        xmm[2] = 1 << 1;
        let c = call(SEND_IPI_EX as u64 | FAST | 2 << 17, 0xfe, 0);
        let ipi = decode(&c, &xmm, memory(&[])).unwrap().unwrap();
        assert_eq!(members(&ipi.to), [2, 65]);
        // At most 11 banks fit after the mask (12 halves).
        xmm[0] = (1 << 12) - 1;
        let c = call(SEND_IPI_EX as u64 | FAST | 12 << 17, 0xfe, 0);
        assert_eq!(decode(&c, &xmm, memory(&[])), Err(INVALID));
        xmm[0] = (1 << 11) - 1;
        let c = call(SEND_IPI_EX as u64 | FAST | 11 << 17, 0xfe, 0);
        assert!(decode(&c, &xmm, memory(&[])).is_ok());
    }

    #[test]
    fn all_processors_and_the_empty_set() {
        // Format 1 is every processor, whatever the banks.
        let c = call(SEND_IPI_EX as u64, IN, 0);
        let ipi = decode(&c, &NO_XMM, memory(&[0xfe, 1, 0])).unwrap().unwrap();
        assert_eq!(
            ipi,
            Ipi {
                vector: 0xfe,
                to: VpSet::all()
            }
        );
        assert_eq!(members(&ipi.to).len(), 4096);
        let c = call(SEND_IPI_EX as u64 | FAST, 0xfe, 1);
        assert_eq!(
            decode(&c, &NO_XMM, memory(&[])).unwrap().unwrap().to,
            VpSet::all()
        );
        // An empty sparse set is a success that sends nothing, even with a
        // bad vector (KVM looks at the vector after the set).
        let c = call(SEND_IPI_EX as u64, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, memory(&[0x3, 0, 0])), Ok(None));
        // But ALL with a bad vector is refused.
        assert_eq!(decode(&c, &NO_XMM, memory(&[0x3, 1, 0])), Err(INVALID));
    }

    #[test]
    fn a_vp_index_is_in_a_sparse_set_only_through_its_own_bank() {
        // Banks 0, 3 and 63 present.
        let set = sparse(1 | 1 << 3 | 1 << 63, &[1, 1 << 5, 1 << 63]);
        assert_eq!(members(&set), [0, 3 * 64 + 5, 63 * 64 + 63]);
        assert!(!set.contains(4096), "past the last bank");
        assert!(!set.contains(u32::MAX), "no VP index yet");
    }
}

mod tlb_flushes {
    //! `module/hyperv/tlb.rs`: the TLB-flush hypercalls' parameters, as
    //! Linux's hyperv_tlb_flush test passes them, and KVM's checks.

    use crate::hyperv::params::XMM_HALVES;
    use crate::hyperv::tlb::{
        decode, Flush, FLUSH_LIST, FLUSH_LIST_EX, FLUSH_SPACE, FLUSH_SPACE_EX,
    };
    use crate::hyperv::{status, Call, Outcome};

    const INVALID: u64 = status::INVALID_HYPERCALL_INPUT;
    const FAST: u64 = 1 << 16;
    const IN: u64 = 0x5000;
    const NO_XMM: [u64; XMM_HALVES] = [0; XMM_HALVES];

    /// Guest memory: `words` readable from `IN` on, nothing else.
    fn memory(words: usize) -> impl FnMut(u64, &mut [u8]) -> bool {
        move |gpa, buf| gpa >= IN && gpa - IN + buf.len() as u64 <= 8 * words as u64
    }

    fn call(control: u64, input: u64, output: u64) -> Call {
        Call {
            control,
            input,
            output,
        }
    }

    fn done(reps: u64) -> Result<Flush, u64> {
        Ok(Flush {
            any: true,
            result: reps << 32,
        })
    }

    #[test]
    fn rep_and_header_fields_are_checked_first() {
        let outcome = |control: u64| call(control, IN, 0).outcome();
        assert_eq!(outcome(FLUSH_SPACE as u64), Outcome::FlushTlb);
        assert_eq!(outcome(FLUSH_LIST as u64 | 3 << 32), Outcome::FlushTlb);
        assert_eq!(outcome(FLUSH_SPACE_EX as u64 | 1 << 17), Outcome::FlushTlb);
        assert_eq!(
            outcome(FLUSH_LIST_EX as u64 | 1 << 17 | 1 << 32),
            Outcome::FlushTlb
        );
        for bad in [
            FLUSH_SPACE as u64 | 1 << 17, // a header for the plain form
            FLUSH_LIST as u64 | 1 << 17 | 1 << 32,
            FLUSH_LIST as u64,                        // a list without reps
            FLUSH_LIST_EX as u64 | 1 << 32 | 1 << 48, // a start index
            FLUSH_SPACE as u64 | 1 << 32,             // reps for a space flush
            FLUSH_SPACE_EX as u64 | 1 << 48,
        ] {
            assert_eq!(outcome(bad), Outcome::Done(INVALID), "{bad:#x}");
        }
    }

    #[test]
    fn slow_flushes_read_their_header_and_list_from_memory() {
        // struct hv_tlb_flush: address space, flags, processor mask.
        let c = call(FLUSH_SPACE as u64, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, memory(3)), done(0));
        assert_eq!(decode(&c, &NO_XMM, memory(2)), Err(INVALID));
        // Three list entries after the header; all reps completed.
        let c = call(FLUSH_LIST as u64 | 3 << 32, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, memory(6)), done(3));
        assert_eq!(decode(&c, &NO_XMM, memory(5)), Err(INVALID));
        // A list longer than 15 is a flush of everything, unread.
        let c = call(FLUSH_LIST as u64 | 16 << 32, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, memory(3)), done(16));
    }

    /// struct hv_tlb_flush_ex in memory: address space, flags, format,
    /// valid-bank mask, then the banks (`banks` of them readable), then
    /// `list` entries; nothing after.
    fn ex_memory(
        format: u64,
        valid: u64,
        banks: usize,
        list: usize,
    ) -> impl FnMut(u64, &mut [u8]) -> bool {
        let words = [0, 0, format, valid];
        move |gpa, buf| {
            let end = 8 * (4 + banks + list);
            if gpa < IN || (gpa - IN) as usize + buf.len() > end {
                return false;
            }
            for (i, b) in buf.iter_mut().enumerate() {
                let at = (gpa - IN) as usize + i;
                *b = if at < 32 {
                    words[at / 8].to_le_bytes()[at % 8]
                } else {
                    0
                };
            }
            true
        }
    }

    #[test]
    fn ex_flushes_take_sparse_sets_or_all() {
        // Banks 0 and 1 (VP 2 and 65, as Linux's test), then two entries.
        let c = call(FLUSH_LIST_EX as u64 | 2 << 17 | 2 << 32, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, ex_memory(0, 0b11, 2, 2)), done(2));
        // The header must count the banks.
        let c = call(FLUSH_SPACE_EX as u64 | 1 << 17, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, ex_memory(0, 0b11, 2, 2)), Err(INVALID));
        // An empty sparse set flushes nothing, and succeeds.
        let c = call(FLUSH_SPACE_EX as u64, IN, 0);
        assert_eq!(
            decode(&c, &NO_XMM, ex_memory(0, 0, 0, 2)),
            Ok(Flush {
                any: false,
                result: 0
            })
        );
        // All processors (format 1).
        assert_eq!(decode(&c, &NO_XMM, ex_memory(1, 0, 0, 2)), done(0));
        // Banks past readable memory.
        let c = call(FLUSH_SPACE_EX as u64 | 2 << 17, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, ex_memory(0, 0b11, 1, 0)), Err(INVALID));
        // The list comes after the banks: 2 banks and 1 entry readable is
        // one entry short of a 2-rep list.
        let c = call(FLUSH_LIST_EX as u64 | 2 << 17 | 2 << 32, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, ex_memory(0, 0b11, 2, 2)), done(2));
        assert_eq!(decode(&c, &NO_XMM, ex_memory(0, 0b11, 2, 1)), Err(INVALID));
    }

    #[test]
    fn banks_that_cannot_hold_a_vp_index_are_not_read() {
        // 20 banks named, 16 readable: KVM reads no more (its VP indices,
        // as rkvm's, are below 1024).
        let valid = (1 << 20) - 1;
        let c = call(FLUSH_SPACE_EX as u64 | 20 << 17, IN, 0);
        assert_eq!(decode(&c, &NO_XMM, ex_memory(0, valid, 16, 0)), done(0));
        assert_eq!(
            decode(&c, &NO_XMM, ex_memory(0, valid, 15, 0)),
            Err(INVALID)
        );
    }

    #[test]
    fn fast_flushes_take_parameters_from_xmm_registers() {
        // Plain: RDX address space, R8 flags, XMM0 low the mask; the list
        // from XMM0's high half: 11 entries fit, 12 do not.
        let c = call(FLUSH_LIST as u64 | FAST | 11 << 32, 0, 0);
        assert_eq!(decode(&c, &NO_XMM, memory(0)), done(11));
        let c = call(FLUSH_LIST as u64 | FAST | 12 << 32, 0, 0);
        assert_eq!(decode(&c, &NO_XMM, memory(0)), Err(INVALID));
        // Ex: XMM0 the set's format and valid mask, then the banks, then
        // the list: 2 banks leave room for 8 entries.
        let mut xmm = NO_XMM;
        xmm[1] = 0b11;
        let c = call(FLUSH_LIST_EX as u64 | FAST | 2 << 17 | 8 << 32, 0, 0);
        assert_eq!(decode(&c, &xmm, memory(0)), done(8));
        let c = call(FLUSH_LIST_EX as u64 | FAST | 2 << 17 | 9 << 32, 0, 0);
        assert_eq!(decode(&c, &xmm, memory(0)), Err(INVALID));
        // Even for "all", the banks named come before the list.
        xmm[0] = 1;
        let c = call(FLUSH_LIST_EX as u64 | FAST | 2 << 17 | 9 << 32, 0, 0);
        assert_eq!(decode(&c, &xmm, memory(0)), Err(INVALID));
    }
}
