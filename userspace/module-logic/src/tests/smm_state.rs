//! `module/x86/smm.rs`: the SMRAM state-save area an SMI writes and RSM
//! reads, at the offsets of KVM's `struct kvm_smram_state_64` / `_32`
//! (`arch/x86/kvm/smm.c` asserts them), and the state the handler starts
//! in.

use crate::abi::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};
use crate::x86::smm::{handler_entry, restore, save, RsmError, SavedState, SAVE_AREA_BYTES};

fn u16_at(a: &[u8; SAVE_AREA_BYTES], at: usize) -> u16 {
    u16::from_le_bytes([a[at], a[at + 1]])
}
fn u32_at(a: &[u8; SAVE_AREA_BYTES], at: usize) -> u32 {
    u32::from_le_bytes(a[at..at + 4].try_into().unwrap())
}
fn u64_at(a: &[u8; SAVE_AREA_BYTES], at: usize) -> u64 {
    u64::from_le_bytes(a[at..at + 8].try_into().unwrap())
}

fn seg(selector: u16, base: u64, type_: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// A 64-bit kernel's state, every register distinct.
fn long_mode_state() -> SavedState {
    let regs = kvm_regs {
        rax: 0x1111,
        rbx: 0x2222,
        rcx: 0x3333,
        rdx: 0x4444,
        rsi: 0x5555,
        rdi: 0x6666,
        rsp: 0x7777,
        rbp: 0x8888,
        r8: 0x08,
        r9: 0x09,
        r10: 0x10,
        r11: 0x11,
        r12: 0x12,
        r13: 0x13,
        r14: 0x14,
        r15: 0xf15,
        rip: 0xffff_ffff_8100_1234,
        rflags: 0x246,
    };
    let data = seg(0x18, 0, 3, 0, 1);
    let sregs = kvm_sregs {
        cs: seg(0x10, 0, 0xb, 1, 0),
        ds: data,
        es: data,
        ss: data,
        fs: kvm_segment {
            base: 0x7f00_1234_5000,
            ..data
        },
        gs: kvm_segment {
            base: 0xffff_8880_0000_0000,
            ..data
        },
        tr: kvm_segment {
            selector: 0x40,
            base: 0xffff_fe00_0000_3000,
            limit: 0x67,
            type_: 0xb,
            s: 0,
            g: 0,
            db: 0,
            ..data
        },
        ldt: kvm_segment {
            present: 0,
            unusable: 1,
            type_: 2,
            s: 0,
            ..Default::default()
        },
        gdt: kvm_dtable {
            base: 0xffff_fe00_0000_1000,
            limit: 0x7f,
            padding: [0; 3],
        },
        idt: kvm_dtable {
            base: 0xffff_fe00_0000_0000,
            limit: 0xfff,
            padding: [0; 3],
        },
        cr0: 0x8005_0033,
        cr2: 0xdead_b000,
        cr3: 0x1234_5000,
        cr4: 0x20 | 0x80,
        cr8: 5,
        efer: 0xd01,
        apic_base: 0xfee0_0900,
        interrupt_bitmap: [0; 4],
    };
    SavedState {
        regs,
        sregs,
        dr6: 0xffff_4ff0,
        dr7: 0x0000_0401,
        smbase: 0x3_0000,
        interrupt_shadow: true,
    }
}

#[test]
fn the_64_bit_save_area_has_kvms_offsets() {
    let s = long_mode_state();
    let a = save(&s, true);
    // From SMBASE + 0xFE00: ES at 0, CS at 0x10 (selector, attributes >> 8, limit, base).
    assert_eq!(u16_at(&a, 0x10), 0x10);
    // Code, execute/read accessed (0xb), S, P, L, G: bits 8-23 shifted down by 8.
    assert_eq!(u16_at(&a, 0x12), 0xb | 1 << 4 | 1 << 7 | 1 << 13 | 1 << 15);
    assert_eq!(u32_at(&a, 0x14), 0xffff_ffff);
    assert_eq!(u64_at(&a, 0x48), 0x7f00_1234_5000, "FS base");
    assert_eq!(u32_at(&a, 0x64), 0x7f, "GDTR limit");
    assert_eq!(u64_at(&a, 0x68), 0xffff_fe00_0000_1000, "GDTR base");
    assert_eq!(u64_at(&a, 0x88), 0xffff_fe00_0000_0000, "IDTR base");
    assert_eq!(u16_at(&a, 0x90), 0x40, "TR selector");
    assert_eq!(a[0xcb], 1, "interrupt shadow");
    assert_eq!(u64_at(&a, 0xd0), 0xd01, "EFER");
    assert_eq!(u32_at(&a, 0xfc), 0x0002_0064, "revision");
    assert_eq!(u32_at(&a, 0x100), 0x3_0000, "SMBASE");
    assert_eq!(u64_at(&a, 0x148), 0xa0, "CR4");
    assert_eq!(u64_at(&a, 0x150), 0x1234_5000, "CR3");
    assert_eq!(u64_at(&a, 0x158), 0x8005_0033, "CR0");
    assert_eq!(u64_at(&a, 0x160), 0x401, "DR7");
    assert_eq!(u64_at(&a, 0x168), 0xffff_4ff0, "DR6");
    assert_eq!(u64_at(&a, 0x170), 0x246, "RFLAGS");
    assert_eq!(u64_at(&a, 0x178), 0xffff_ffff_8100_1234, "RIP");
    // R15 first, RAX last.
    assert_eq!(u64_at(&a, 0x180), 0xf15, "R15");
    assert_eq!(u64_at(&a, 0x1b8), 0x08, "R8");
    assert_eq!(u64_at(&a, 0x1c0), 0x6666, "RDI");
    assert_eq!(u64_at(&a, 0x1e0), 0x2222, "RBX");
    assert_eq!(u64_at(&a, 0x1e8), 0x4444, "RDX");
    assert_eq!(u64_at(&a, 0x1f0), 0x3333, "RCX");
    assert_eq!(u64_at(&a, 0x1f8), 0x1111, "RAX");
    // What KVM leaves 0: I/O restart, auto-HALT restart, the nested-SVM words.
    assert!(a[0xa0..0xcb].iter().all(|&b| b == 0));
    assert!(a[0xd8..0xf0].iter().all(|&b| b == 0));
}

#[test]
fn the_32_bit_save_area_has_kvms_offsets() {
    let mut s = long_mode_state();
    s.regs.rip = 0x1234;
    s.regs.rflags = 0x202;
    s.sregs.cs = seg(0x08, 0, 0xb, 0, 1);
    s.sregs.cr0 = 0x8000_0011;
    s.sregs.cr4 = 0x10;
    s.sregs.efer = 0;
    s.smbase = 0xa_0000;
    let a = save(&s, false);
    assert_eq!(u32_at(&a, 0xf8), 0xa_0000, "SMBASE");
    assert_eq!(u32_at(&a, 0xfc), 0x0002_0000, "revision");
    assert_eq!(u32_at(&a, 0x114), 0x10, "CR4");
    assert_eq!(a[0x11a], 1, "interrupt shadow");
    // CS: attributes in place (bits 8-23), limit, base; the selector apart.
    assert_eq!(
        u32_at(&a, 0x190),
        0xb << 8 | 1 << 12 | 1 << 15 | 1 << 22 | 1 << 23
    );
    assert_eq!(u32_at(&a, 0x194), 0xffff_ffff);
    assert_eq!(u32_at(&a, 0x1ac), 0x08, "CS selector");
    assert_eq!(u32_at(&a, 0x1c4), 0x40, "TR selector");
    assert_eq!(u32_at(&a, 0x170), 0x7f, "GDTR limit");
    assert_eq!(u32_at(&a, 0x1c8), 0x401, "DR7");
    // EAX first, EDI last.
    assert_eq!(u32_at(&a, 0x1d0), 0x1111, "EAX");
    assert_eq!(u32_at(&a, 0x1d4), 0x3333, "ECX");
    assert_eq!(u32_at(&a, 0x1dc), 0x2222, "EBX");
    assert_eq!(u32_at(&a, 0x1ec), 0x6666, "EDI");
    assert_eq!(u32_at(&a, 0x1f0), 0x1234, "EIP");
    assert_eq!(u32_at(&a, 0x1f4), 0x202, "EFLAGS");
    assert_eq!(u32_at(&a, 0x1f8), 0x1234_5000, "CR3");
    assert_eq!(u32_at(&a, 0x1fc), 0x8000_0011, "CR0");
}

fn assert_same(got: &SavedState, want: &SavedState) {
    assert_eq!(format!("{:?}", got.regs), format!("{:?}", want.regs));
    assert_eq!(format!("{:?}", got.sregs), format!("{:?}", want.sregs));
    assert_eq!(
        (got.dr6, got.dr7, got.smbase, got.interrupt_shadow),
        (want.dr6, want.dr7, want.smbase, want.interrupt_shadow)
    );
}

#[test]
fn rsm_loads_back_what_an_smi_saved_in_long_mode() {
    let s = long_mode_state();
    let a = save(&s, true);
    // RSM runs in SMM: what it does not load comes from there.
    let (smm_regs, in_smm, _) = handler_entry(&s, true);
    let back = restore(&a, true, &smm_regs, &in_smm).unwrap();
    assert_same(&back, &s);
}

#[test]
fn rsm_loads_back_what_an_smi_saved_without_long_mode() {
    let mut s = long_mode_state();
    for r in [&mut s.regs.r8, &mut s.regs.r15] {
        *r = 0;
    }
    s.regs.rip = 0xc000_1000;
    s.regs.rflags = 0x2;
    s.sregs.cs = seg(0x08, 0, 0xb, 0, 1);
    for base in [
        &mut s.sregs.fs.base,
        &mut s.sregs.gs.base,
        &mut s.sregs.tr.base,
    ] {
        *base &= 0xffff_ffff;
    }
    s.sregs.gdt.base = 0xc000_0000;
    s.sregs.idt.base = 0xc000_0800;
    s.sregs.efer = 0;
    s.smbase = 0xa_0000;
    let a = save(&s, false);
    let (smm_regs, in_smm, _) = handler_entry(&s, false);
    let back = restore(&a, false, &smm_regs, &in_smm).unwrap();
    assert_same(&back, &s);
}

#[test]
fn the_handler_starts_flat_at_smbase_plus_0x8000() {
    let mut s = long_mode_state();
    s.smbase = 0x100_0000;
    let (regs, sregs, dr7) = handler_entry(&s, true);
    assert_eq!((regs.rip, regs.rflags), (0x8000, 0x2));
    assert_eq!((regs.rax, regs.rsp, regs.r15), (0x1111, 0x7777, 0xf15));
    assert_eq!(sregs.cs.base, 0x100_0000);
    assert_eq!(sregs.cs.selector, 0x0000, "SMBASE >> 4, 16 bits");
    for d in [sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
        assert_eq!(
            (d.limit, d.g, d.present, d.l, d.db, d.dpl),
            (0xffff_ffff, 1, 1, 0, 0, 0)
        );
    }
    for d in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
        assert_eq!((d.base, d.selector), (0, 0));
    }
    // PE, EM, TS and PG go; the rest of CR0 stays.
    assert_eq!(sregs.cr0, 0x8005_0033 & !(1 | 4 | 8 | 1 << 31));
    assert_eq!((sregs.cr4, sregs.efer), (0, 0));
    assert_eq!((sregs.idt.base, sregs.idt.limit), (0, 0));
    assert_eq!(sregs.gdt.base, s.sregs.gdt.base, "GDTR stays");
    assert_eq!(sregs.tr.selector, 0x40, "TR stays");
    assert_eq!(
        (sregs.cr3, sregs.cr8, sregs.apic_base),
        (s.sregs.cr3, 5, s.sregs.apic_base)
    );
    assert_eq!(dr7, 0x400);

    s.smbase = 0x3_0000;
    let (_, sregs, _) = handler_entry(&s, false);
    assert_eq!(sregs.cs.selector, 0x3000);
    assert_eq!(
        sregs.efer, s.sregs.efer,
        "EFER is not touched without long mode"
    );
}

#[test]
fn rsm_takes_what_the_handler_left_in_the_save_area() {
    let s = long_mode_state();
    let mut a = save(&s, true);
    // The handler relocates SMBASE and leaves the interrupt shadow.
    a[0x100..0x104].copy_from_slice(&0x7_0000u32.to_le_bytes());
    a[0xcb] = 0;
    // A segment the handler marked not present comes back unusable.
    a[0x32] &= !0x80;
    // EFER with LMA but no paging: LMA follows LME and CR0.PG.
    a[0x158..0x160].copy_from_slice(&0x11u64.to_le_bytes());
    let (smm_regs, in_smm, _) = handler_entry(&s, true);
    let back = restore(&a, true, &smm_regs, &in_smm).unwrap();
    assert_eq!(back.smbase, 0x7_0000);
    assert!(!back.interrupt_shadow);
    assert_eq!((back.sregs.ds.present, back.sregs.ds.unusable), (0, 1));
    assert_eq!(back.sregs.efer, 0x901, "SCE, LME and NXE kept, LMA cleared");
    // RFLAGS always has its fixed bit.
    a[0x170..0x178].copy_from_slice(&0u64.to_le_bytes());
    assert_eq!(
        restore(&a, true, &smm_regs, &in_smm).unwrap().regs.rflags,
        0x2
    );
}

#[test]
fn rsm_refuses_reserved_debug_register_bits() {
    let s = long_mode_state();
    let (smm_regs, in_smm, _) = handler_entry(&s, true);
    let mut a = save(&s, true);
    a[0x16c] = 1; // DR6 bit 32
    assert_eq!(
        restore(&a, true, &smm_regs, &in_smm).err(),
        Some(RsmError::DebugRegister)
    );
    let mut a = save(&s, true);
    a[0x167] = 0x80; // DR7 bit 63
    assert_eq!(
        restore(&a, true, &smm_regs, &in_smm).err(),
        Some(RsmError::DebugRegister)
    );
}

#[test]
fn an_unusable_segment_comes_back_unusable() {
    // VMX may report an unusable segment with P set (its other attributes
    // are undefined): it is saved not present, as KVM's `vmx_get_segment`
    // reports it, so RSM makes it unusable again.
    let mut s = long_mode_state();
    s.sregs.es = kvm_segment {
        present: 1,
        unusable: 1,
        ..s.sregs.es
    };
    let a = save(&s, true);
    assert_eq!(u16_at(&a, 0x02) & 1 << 7, 0, "ES saved not present");
    let (smm_regs, in_smm, _) = handler_entry(&s, true);
    let back = restore(&a, true, &smm_regs, &in_smm).unwrap();
    assert_eq!((back.sregs.es.present, back.sregs.es.unusable), (0, 1));
    assert_eq!(
        (back.sregs.ds.present, back.sregs.ds.unusable),
        (1, 0),
        "a usable one stays usable"
    );
}
