//! `module/x86/emulate.rs`: the register rules of the instructions the run
//! loop finishes itself (SDM Vol. 2B MOV, INS, OUTS, REP; Vol. 3A 9.8.5).

use crate::x86::decode::CodeSize;
use crate::x86::emulate::{
    address_mask, cr0_write, debug_register_alias, guest_efer_write, in_result, linear_address,
    segment_base, special_operand_mask, string_element, string_io_count, string_io_done, wrap_ip,
    Cr0Write, PagingRegs,
};
use crate::x86::regs::{cr0, cr4, efer};

const PROTECTED: u64 = cr0::PE | cr0::ET;
/// CR0.TS (task switched): a bit with no part in translation.
const CR0_TS: u64 = 1 << 3;

fn regs(cr0: u64, cr4: u64, efer: u64, cs_l: bool) -> PagingRegs {
    PagingRegs {
        cr0,
        cr4,
        efer,
        cs_l,
    }
}

#[test]
fn code_size_arithmetic_wraps_and_truncates() {
    assert_eq!(wrap_ip(0x1_0002, CodeSize::Bits16), 2);
    assert_eq!(wrap_ip(0x1_0000_0002, CodeSize::Bits32), 2);
    assert_eq!(wrap_ip(0x1_0000_0002, CodeSize::Bits64), 0x1_0000_0002);
    assert_eq!(address_mask(2), 0xffff);
    assert_eq!(address_mask(4), 0xffff_ffff);
    assert_eq!(address_mask(8), u64::MAX);
    assert_eq!(special_operand_mask(CodeSize::Bits64), u64::MAX);
    assert_eq!(special_operand_mask(CodeSize::Bits16), 0xffff_ffff);
    // 64-bit code ignores every base but FS and GS; elsewhere linear addresses wrap at 4 GiB.
    assert_eq!(segment_base(CodeSize::Bits64, 0x1000, false), 0);
    assert_eq!(segment_base(CodeSize::Bits64, 0x1000, true), 0x1000);
    assert_eq!(segment_base(CodeSize::Bits32, 0x1000, false), 0x1000);
    assert_eq!(
        linear_address(CodeSize::Bits32, 0xffff_f000, 0x2000),
        0x1000
    );
    assert_eq!(
        linear_address(CodeSize::Bits64, 0xffff_f000, 0x2000),
        0x1_0000_1000
    );
}

#[test]
fn cr0_paging_on_with_lme_activates_long_mode() {
    let old = regs(PROTECTED, cr4::PAE, efer::LME, false);
    assert_eq!(
        cr0_write(old, PROTECTED | cr0::PG),
        Some(Cr0Write {
            cr0: PROTECTED | cr0::PG,
            efer: efer::LME | efer::LMA,
            translations_stale: true,
        })
    );
    // Without LME it is plain 32-bit paging.
    let old = regs(PROTECTED, 0, 0, false);
    assert_eq!(cr0_write(old, PROTECTED | cr0::PG).map(|w| w.efer), Some(0));
}

#[test]
fn cr0_refuses_what_is_gp() {
    let lme = regs(PROTECTED, cr4::PAE, efer::LME, false);
    // Long mode needs PAE, and cannot be entered from a 64-bit code segment.
    assert_eq!(
        cr0_write(regs(PROTECTED, 0, efer::LME, false), PROTECTED | cr0::PG),
        None
    );
    assert_eq!(
        cr0_write(
            regs(PROTECTED, cr4::PAE, efer::LME, true),
            PROTECTED | cr0::PG
        ),
        None
    );
    // PG without PE, NW without CD, anything in bits 63:32.
    assert_eq!(cr0_write(lme, cr0::PG), None);
    assert_eq!(cr0_write(lme, PROTECTED | cr0::NW), None);
    assert_eq!(cr0_write(lme, PROTECTED | 1 << 32), None);
    // Paging cannot be turned off from 64-bit code.
    let long = regs(PROTECTED | cr0::PG, cr4::PAE, efer::LME | efer::LMA, true);
    assert_eq!(cr0_write(long, PROTECTED), None);
}

#[test]
fn cr0_paging_off_leaves_long_mode_and_et_is_one() {
    let long = regs(PROTECTED | cr0::PG, cr4::PAE, efer::LME | efer::LMA, false);
    let w = cr0_write(long, cr0::PE).expect("compatibility mode may turn paging off");
    assert_eq!(w.efer, efer::LME);
    assert_eq!(w.cr0, PROTECTED);
    // A bit that does not affect translation (TS, MP) does not make them stale.
    let w = cr0_write(long, PROTECTED | cr0::PG | CR0_TS).expect("TS is writable");
    assert!(!w.translations_stale);
    assert_eq!(w.efer, efer::LME | efer::LMA);
    let w = cr0_write(long, PROTECTED | cr0::PG | cr0::WP).expect("WP is writable");
    assert!(w.translations_stale);
}

#[test]
fn efer_writes_keep_lma_and_lock_lme_under_paging() {
    // LMA is the CPU's: a write neither sets nor clears it.
    assert_eq!(guest_efer_write(0, 0, efer::LMA), Some(0));
    assert_eq!(
        guest_efer_write(cr0::PG, efer::LME | efer::LMA, efer::LME),
        Some(efer::LME | efer::LMA)
    );
    // LME may change with paging off, not with paging on.
    assert_eq!(guest_efer_write(PROTECTED, 0, efer::LME), Some(efer::LME));
    assert_eq!(guest_efer_write(PROTECTED | cr0::PG, 0, efer::LME), None);
    assert_eq!(
        guest_efer_write(PROTECTED | cr0::PG, efer::LME | efer::LMA, 0),
        None
    );
}

#[test]
fn dr4_and_dr5_alias_dr6_and_dr7_unless_cr4_de() {
    assert_eq!(debug_register_alias(4, 0), Some(6));
    assert_eq!(debug_register_alias(5, 0), Some(7));
    assert_eq!(debug_register_alias(4, cr4::DE), None);
    assert_eq!(debug_register_alias(5, cr4::DE), None);
    assert_eq!(debug_register_alias(7, cr4::DE), Some(7));
    assert_eq!(debug_register_alias(2, 0), Some(2));
}

#[test]
fn string_io_moves_at_most_a_guest_page_per_exit() {
    // Forwards from 0x0ff0 with 4-byte elements: 4 fit before the page ends.
    assert_eq!(string_io_count(0x0ff0, 4, false, 100, 4096), 4);
    // Backwards from 0x1008: elements at 0x1008, 0x1004, 0x1000 stay in the page.
    assert_eq!(string_io_count(0x1008, 4, true, 100, 4096), 3);
    // What was asked for, if less; never more than the I/O page holds.
    assert_eq!(string_io_count(0x1000, 1, false, 7, 4096), 7);
    assert_eq!(string_io_count(0x1000, 1, false, 10_000, 4096), 4096);
    // A 4-byte element at 0x0ffe crosses the page: it moves alone.
    assert_eq!(string_io_count(0x0ffe, 4, false, 100, 4096), 1);
    assert_eq!(string_element(0x2000, 3, 2, false), 0x2006);
    assert_eq!(string_element(0x2000, 3, 2, true), 0x1ffa);
}

#[test]
fn string_io_updates_only_the_address_size_bits() {
    // REP INSW with a 16-bit address size: DI wraps inside 16 bits, the upper bits stay.
    let d = string_io_done(0xdead_0000_fffe, 0xbeef_0000_0005, 2, 2, false, true, 2);
    assert_eq!(d.index, 0xdead_0000_0002);
    assert_eq!(d.rcx, 0xbeef_0000_0003);
    assert!(!d.finished);
    // The last elements: RCX reaches 0 and the instruction ends.
    let d = string_io_done(0x1000, 3, 3, 4, true, true, 8);
    assert_eq!((d.index, d.rcx, d.finished), (0x1000 - 12, 0, true));
    // Without REP, RCX is not touched.
    let d = string_io_done(0x1000, 77, 1, 1, false, false, 4);
    assert_eq!((d.index, d.rcx, d.finished), (0x1001, 77, true));
}

#[test]
fn a_rep_takes_no_more_elements_than_rcx_asks_for_at_completion() {
    // Linux's userspace_io_test: an exit of 2 elements, user space sets RCX to 1. KVM's
    // emulator takes one element, RCX reaches 0 and RDI moved by one; RCX must not wrap.
    let d = string_io_done(0x5000, 1, 2, 1, false, true, 8);
    assert_eq!((d.used, d.index, d.rcx, d.finished), (1, 0x5001, 0, true));
    // RCX raised (3 -> 8192): the exit's 3 elements are taken, the REP goes on.
    let d = string_io_done(0x5000, 8192, 3, 1, false, true, 8);
    assert_eq!(
        (d.used, d.index, d.rcx, d.finished),
        (3, 0x5003, 8189, false)
    );
    // RCX set to 0: nothing is taken and the instruction ends.
    let d = string_io_done(0x5000, 0, 4, 2, true, true, 8);
    assert_eq!((d.used, d.index, d.rcx, d.finished), (0, 0x5000, 0, true));
    // Only the address-size bits of RCX count: ECX = 1 with bits above set.
    let d = string_io_done(0x5000, 0xffff_ffff_0000_0001, 4, 1, false, true, 4);
    assert_eq!(
        (d.used, d.index, d.rcx, d.finished),
        (1, 0x5001, 0xffff_ffff_0000_0000, true)
    );
    // Without REP, RCX means nothing: the one element is taken.
    let d = string_io_done(0x5000, 0, 1, 4, false, false, 8);
    assert_eq!((d.used, d.index), (1, 0x5004));
}

#[test]
fn in_merges_al_and_ax_and_zero_extends_eax() {
    let rax = 0x1122_3344_5566_7788;
    assert_eq!(in_result(rax, 0xaa, 1), 0x1122_3344_5566_77aa);
    assert_eq!(in_result(rax, 0xaabb, 2), 0x1122_3344_5566_aabb);
    assert_eq!(in_result(rax, 0xaabb_ccdd, 4), 0xaabb_ccdd);
}

/// PAE paging's PDPTEs: a present entry with bit 1, 2, 5 to 8 or a bit at
/// or above the physical-address width is refused; a non-present one may
/// hold anything (SDM Vol. 3A 4.4.1, Table 4-8).
#[test]
fn pdptes_with_reserved_bits_cannot_be_loaded() {
    use crate::x86::regs::pdptes_valid;
    let good = [0x1001, 0x2001, 0x3001, 0x4001];
    assert!(pdptes_valid(&good, 36));
    for bit in [1, 2, 5, 6, 7, 8, 36, 51, 63] {
        let mut bad = good;
        bad[2] |= 1 << bit;
        assert!(!pdptes_valid(&bad, 36), "bit {bit}");
    }
    // Bits 9-11 are ignored, PWT and PCD (3, 4) are allowed.
    assert!(pdptes_valid(&[0x1e19, 0, 0, 0], 36));
    // Not present: anything goes.
    assert!(pdptes_valid(&[0xffff_ffff_ffff_fffe, 0, 0, 0], 36));
    // A wider guest may point higher.
    assert!(pdptes_valid(&[(1 << 40) | 1, 0, 0, 0], 48));
}

/// The MOVs that load the PDPTEs: into PAE paging, or within it changing
/// CR0.CD/NW/PG or CR4.PGE/PSE/PAE/SMEP; never in long mode or without
/// paging (KVM's `X86_CR0_PDPTR_BITS`, `X86_CR4_PDPTR_BITS`).
#[test]
fn moves_that_load_the_pdptes() {
    use crate::x86::regs::loads_pdptes;
    const PE_PG: u64 = cr0::PE | cr0::PG;
    let pae = cr4::PAE;
    // Paging on with CR4.PAE set: loads them.
    assert!(loads_pdptes((cr0::PE, pae), (PE_PG, pae), 0));
    // CR4.PAE set while paging: loads them; CR4.PGE toggled too.
    assert!(loads_pdptes((PE_PG, 0), (PE_PG, pae), 0));
    assert!(loads_pdptes((PE_PG, pae), (PE_PG, pae | cr4::PGE), 0));
    assert!(loads_pdptes((PE_PG, pae), (PE_PG | cr0::CD, pae), 0));
    // Other bits (CR0.TS, CR4.OSFXSR) do not.
    assert!(!loads_pdptes((PE_PG, pae), (PE_PG | CR0_TS, pae), 0));
    assert!(!loads_pdptes((PE_PG, pae), (PE_PG, pae | cr4::OSFXSR), 0));
    // Paging off, or 32-bit paging, or long mode: no PDPTEs.
    assert!(!loads_pdptes((PE_PG, pae), (cr0::PE, pae), 0));
    assert!(!loads_pdptes((cr0::PE, 0), (PE_PG, 0), 0));
    assert!(!loads_pdptes(
        (cr0::PE, pae),
        (PE_PG, pae),
        efer::LME | efer::LMA
    ));
}
