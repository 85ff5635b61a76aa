//! `module/x86/decode.rs`: the MMIO instruction decoder. Expected values are
//! worked out by hand from the SDM's encoding tables (Vol. 2A 2.1.5 and
//! 2.2.1) and checked against `objdump -D -b binary -m i386:x86-64`.

use crate::abi::kvm_regs;
use crate::x86::decode::{
    decode, CodeSize, DecodeError, Extend, Gpr, MemOperand, MmioInsn, MmioOp, Register, Segment,
    Source, Width,
};

use CodeSize::{Bits16, Bits32, Bits64};

fn reg(gpr: Gpr) -> Register {
    Register {
        gpr,
        high_byte: false,
    }
}

fn high(gpr: Gpr) -> Register {
    Register {
        gpr,
        high_byte: true,
    }
}

fn ok(bytes: &[u8], code: CodeSize) -> MmioInsn {
    match decode(bytes, code) {
        Ok(insn) => insn,
        Err(e) => panic!("{bytes:02x?} ({code:?}) not decoded: {e:?}"),
    }
}

fn store(src: Source) -> MmioOp {
    MmioOp::Store(src)
}

fn load(dst: Register, dst_width: Width, extend: Extend) -> MmioOp {
    MmioOp::Load {
        dst,
        dst_width,
        extend,
    }
}

/// Registers with recognisable values: each byte of register `n`'s value
/// names it.
fn regs() -> kvm_regs {
    kvm_regs {
        rax: 0x1111_2222_3333_4444,
        rcx: 0x0101_0101_0101_0101,
        rdx: 0x0202_0202_0202_0202,
        rbx: 0x0303_0303_0303_0303,
        rsp: 0x0404_0404_0404_04a4,
        rbp: 0x0505_0505_0505_0505,
        rsi: 0x0606_0606_0606_0606,
        rdi: 0x0707_0707_0707_0707,
        r8: 0x0808_0808_0808_0808,
        r12: 0x0c0c_0c0c_0c0c_0c0c,
        r15: 0x0f0f_0f0f_0f0f_0f0f,
        ..Default::default()
    }
}

#[test]
fn mov_store_width_follows_operand_size_prefix_and_rex_w() {
    // 89 /r, ModRM 07: mod 00, reg 000 (eAX), rm 111 ([rDI]).
    let i = ok(&[0x89, 0x07], Bits64);
    assert_eq!(i.len, 2);
    assert_eq!(i.width, Width::Dword);
    assert_eq!(i.op, store(Source::Reg(reg(Gpr::Rax))));
    assert_eq!(i.mem.base, Some(Gpr::Rdi));
    assert!(i.is_write());
    assert_eq!(i.store_value(&regs()), Some(0x3333_4444));

    let i = ok(&[0x48, 0x89, 0x07], Bits64);
    assert_eq!((i.len, i.width), (3, Width::Qword));
    assert_eq!(i.store_value(&regs()), Some(0x1111_2222_3333_4444));

    let i = ok(&[0x66, 0x89, 0x07], Bits64);
    assert_eq!((i.len, i.width), (3, Width::Word));
    assert_eq!(i.store_value(&regs()), Some(0x4444));

    // REX.W takes precedence over 66. SDM Vol. 2A 2.2.1.2.
    let i = ok(&[0x66, 0x48, 0x89, 0x07], Bits64);
    assert_eq!((i.len, i.width), (4, Width::Qword));
    // A REX prefix followed by another prefix is ignored. SDM Vol. 2A 2.2.1.
    let i = ok(&[0x48, 0x66, 0x89, 0x07], Bits64);
    assert_eq!((i.len, i.width), (4, Width::Word));

    // REX.R extends the register: 4c 89 07 is mov [rdi], r8.
    let i = ok(&[0x4c, 0x89, 0x07], Bits64);
    assert_eq!(i.op, store(Source::Reg(reg(Gpr::R8))));
    assert_eq!(i.store_value(&regs()), Some(0x0808_0808_0808_0808));
}

#[test]
fn byte_registers_4_to_7_are_ah_to_bh_only_without_rex() {
    // 88 27: mov [rdi], ah (reg 100).
    let i = ok(&[0x88, 0x27], Bits64);
    assert_eq!(i.width, Width::Byte);
    assert_eq!(i.op, store(Source::Reg(high(Gpr::Rax))));
    assert_eq!(i.store_value(&regs()), Some(0x44));
    // 88 3f: mov [rdi], bh (reg 111).
    let i = ok(&[0x88, 0x3f], Bits64);
    assert_eq!(i.op, store(Source::Reg(high(Gpr::Rbx))));
    // 40 88 27: with an empty REX, reg 100 is SPL.
    let i = ok(&[0x40, 0x88, 0x27], Bits64);
    assert_eq!(i.len, 3);
    assert_eq!(i.op, store(Source::Reg(reg(Gpr::Rsp))));
    assert_eq!(i.store_value(&regs()), Some(0xa4));
    // 44 88 27: REX.R, reg 1100 is R12B.
    let i = ok(&[0x44, 0x88, 0x27], Bits64);
    assert_eq!(i.op, store(Source::Reg(reg(Gpr::R12))));
    // Registers 0 to 3 are the low bytes with or without REX: 88 0f is mov [rdi], cl.
    let i = ok(&[0x88, 0x0f], Bits64);
    assert_eq!(i.op, store(Source::Reg(reg(Gpr::Rcx))));
    // In 32-bit code 40 is INC eAX, not REX.
    assert_eq!(
        decode(&[0x40, 0x88, 0x27], Bits32),
        Err(DecodeError::Unsupported)
    );
    let i = ok(&[0x88, 0x27], Bits32);
    assert_eq!(i.op, store(Source::Reg(high(Gpr::Rax))));
}

#[test]
fn mov_load_and_rip_relative_disp32() {
    // 8b 05 disp32: mov eax, [rip + 0x12345678].
    let i = ok(&[0x8b, 0x05, 0x78, 0x56, 0x34, 0x12], Bits64);
    assert_eq!(i.len, 6);
    assert_eq!(i.width, Width::Dword);
    assert_eq!(i.op, load(reg(Gpr::Rax), Width::Dword, Extend::None));
    assert!(!i.is_write());
    assert_eq!(i.store_value(&regs()), None);
    assert_eq!(
        i.mem,
        MemOperand {
            base: None,
            index: None,
            scale: 1,
            disp: 0x1234_5678,
            rip_relative: true,
            address_size: Width::Qword,
        }
    );
    // REX.B does not change the special case: 41 8b 05 is still RIP-relative.
    let i = ok(&[0x41, 0x8b, 0x05, 0, 0, 0, 0x80], Bits64);
    assert_eq!(i.len, 7);
    assert!(i.mem.rip_relative);
    assert_eq!(i.mem.disp, 0xffff_ffff_8000_0000);
    // In 32-bit code the same bytes are an absolute disp32.
    let i = ok(&[0x8b, 0x05, 0x78, 0x56, 0x34, 0x12], Bits32);
    assert_eq!(i.len, 6);
    assert!(!i.mem.rip_relative);
    assert_eq!(i.mem.base, None);
    assert_eq!(i.mem.address_size, Width::Dword);
    // 8a 07: mov al, [rdi].
    let i = ok(&[0x8a, 0x07], Bits64);
    assert_eq!(i.op, load(reg(Gpr::Rax), Width::Byte, Extend::None));
    assert_eq!(i.width, Width::Byte);
}

#[test]
fn sib_and_displacement_lengths() {
    let cases: &[(&[u8], usize, Option<Gpr>, Option<Gpr>, u8, u64)] = &[
        // 8b 04 24: mov eax, [rsp] (rm 100 needs a SIB; index 100 is none).
        (&[0x8b, 0x04, 0x24], 3, Some(Gpr::Rsp), None, 1, 0),
        // 8b 04 25 disp32: SIB base 101 with mod 00 is disp32 with no base.
        (
            &[0x8b, 0x04, 0x25, 0x78, 0x56, 0x34, 0x12],
            7,
            None,
            None,
            1,
            0x1234_5678,
        ),
        // 8b 44 8d 10: mov eax, [rbp + rcx*4 + 0x10].
        (
            &[0x8b, 0x44, 0x8d, 0x10],
            4,
            Some(Gpr::Rbp),
            Some(Gpr::Rcx),
            4,
            0x10,
        ),
        // 8b 84 24 disp32: mod 10, SIB, disp32.
        (
            &[0x8b, 0x84, 0x24, 0xf0, 0xff, 0xff, 0xff],
            7,
            Some(Gpr::Rsp),
            None,
            1,
            (-16i64) as u64,
        ),
        // 41 8b 04 24: REX.B, rm 100 still means a SIB: [r12].
        (&[0x41, 0x8b, 0x04, 0x24], 4, Some(Gpr::R12), None, 1, 0),
        // 41 8b 45 00: [r13 + 0] needs mod 01.
        (&[0x41, 0x8b, 0x45, 0x00], 4, Some(Gpr::R13), None, 1, 0),
        // 42 8b 04 25 disp32: REX.X makes index 100 R12.
        (
            &[0x42, 0x8b, 0x04, 0x25, 0, 0x10, 0, 0],
            8,
            None,
            Some(Gpr::R12),
            1,
            0x1000,
        ),
        // 8b 47 f8: mov eax, [rdi - 8].
        (
            &[0x8b, 0x47, 0xf8],
            3,
            Some(Gpr::Rdi),
            None,
            1,
            (-8i64) as u64,
        ),
        // 8b 87 disp32: mov eax, [rdi + 0x100].
        (
            &[0x8b, 0x87, 0x00, 0x01, 0x00, 0x00],
            6,
            Some(Gpr::Rdi),
            None,
            1,
            0x100,
        ),
    ];
    for &(bytes, len, base, index, scale, disp) in cases {
        let i = ok(bytes, Bits64);
        assert_eq!(i.len, len, "{bytes:02x?}");
        assert_eq!(
            (i.mem.base, i.mem.index, i.mem.scale, i.mem.disp),
            (base, index, scale, disp),
            "{bytes:02x?}"
        );
        assert!(!i.mem.rip_relative, "{bytes:02x?}");
    }
}

#[test]
fn sixteen_bit_addressing_uses_the_modrm_table_of_its_own() {
    // 89 07 in 16-bit code: mov [bx], ax.
    let i = ok(&[0x89, 0x07], Bits16);
    assert_eq!((i.len, i.width), (2, Width::Word));
    assert_eq!(i.op, store(Source::Reg(reg(Gpr::Rax))));
    assert_eq!((i.mem.base, i.mem.index), (Some(Gpr::Rbx), None));
    assert_eq!(i.mem.address_size, Width::Word);
    // 8b 46 02: mov ax, [bp + 2].
    let i = ok(&[0x8b, 0x46, 0x02], Bits16);
    assert_eq!((i.len, i.width), (3, Width::Word));
    assert_eq!(i.op, load(reg(Gpr::Rax), Width::Word, Extend::None));
    assert_eq!((i.mem.base, i.mem.disp), (Some(Gpr::Rbp), 2));
    // 8b 06 disp16: mod 00 rm 110 is an absolute disp16, not [bp].
    let i = ok(&[0x8b, 0x06, 0x34, 0x12], Bits16);
    assert_eq!(i.len, 4);
    assert_eq!((i.mem.base, i.mem.disp), (None, 0x1234));
    // 8b 00: [bx + si]; 8b 9b disp16: mov bx, [bp + di + disp16].
    let i = ok(&[0x8b, 0x00], Bits16);
    assert_eq!((i.mem.base, i.mem.index), (Some(Gpr::Rbx), Some(Gpr::Rsi)));
    let i = ok(&[0x8b, 0x9b, 0x00, 0x80], Bits16);
    assert_eq!(i.len, 4);
    assert_eq!(i.op, load(reg(Gpr::Rbx), Width::Word, Extend::None));
    assert_eq!((i.mem.base, i.mem.index), (Some(Gpr::Rbp), Some(Gpr::Rdi)));
    assert_eq!(i.mem.disp, 0xffff_ffff_ffff_8000);
    // 66 switches to a 32-bit operand, 67 to 32-bit addressing (and so to a SIB here).
    let i = ok(&[0x66, 0x89, 0x07], Bits16);
    assert_eq!(i.width, Width::Dword);
    let i = ok(&[0x67, 0x8b, 0x04, 0x24], Bits16);
    assert_eq!(i.len, 4);
    assert_eq!(
        (i.mem.base, i.mem.address_size),
        (Some(Gpr::Rsp), Width::Dword)
    );
    // And 67 in 32-bit code selects 16-bit addressing: 67 8b 06 disp16.
    let i = ok(&[0x67, 0x8b, 0x06, 0x34, 0x12], Bits32);
    assert_eq!((i.len, i.width), (5, Width::Dword));
    assert_eq!((i.mem.base, i.mem.disp), (None, 0x1234));
}

#[test]
fn mov_immediate_forms() {
    // c7 00 imm32: mov dword [rax], 0x12345678.
    let i = ok(&[0xc7, 0x00, 0x78, 0x56, 0x34, 0x12], Bits64);
    assert_eq!((i.len, i.width), (6, Width::Dword));
    assert_eq!(i.op, store(Source::Imm(0x1234_5678)));
    assert_eq!(i.store_value(&regs()), Some(0x1234_5678));
    // 48 c7 00 ff ff ff ff: imm32 sign-extended to 64 bits.
    let i = ok(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], Bits64);
    assert_eq!((i.len, i.width), (7, Width::Qword));
    assert_eq!(i.store_value(&regs()), Some(u64::MAX));
    let i = ok(&[0x48, 0xc7, 0x00, 0x00, 0x00, 0x00, 0x7f], Bits64);
    assert_eq!(i.store_value(&regs()), Some(0x7f00_0000));
    // 66 c7 00 imm16 and c6 00 imm8.
    let i = ok(&[0x66, 0xc7, 0x00, 0x34, 0x12], Bits64);
    assert_eq!((i.len, i.width), (5, Width::Word));
    assert_eq!(i.store_value(&regs()), Some(0x1234));
    let i = ok(&[0xc6, 0x00, 0xab], Bits64);
    assert_eq!((i.len, i.width), (3, Width::Byte));
    assert_eq!(i.store_value(&regs()), Some(0xab));
    // c7 80 disp32 imm32: displacement before immediate, 10 bytes.
    let i = ok(&[0xc7, 0x80, 0, 1, 0, 0, 1, 2, 3, 4], Bits64);
    assert_eq!(i.len, 10);
    assert_eq!(
        (i.mem.disp, i.store_value(&regs())),
        (0x100, Some(0x0403_0201))
    );
    // In 16-bit code C7 takes an imm16.
    let i = ok(&[0xc7, 0x07, 0x34, 0x12], Bits16);
    assert_eq!((i.len, i.width), (4, Width::Word));
    // Only /0 is MOV.
    assert_eq!(
        decode(&[0xc7, 0x08, 0, 0, 0, 0], Bits64),
        Err(DecodeError::Unsupported)
    );
    assert_eq!(
        decode(&[0xc6, 0x38, 0], Bits64),
        Err(DecodeError::Unsupported)
    );
}

#[test]
fn moffs_has_the_address_size() {
    let off = [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11];
    // a1 moffs64: mov eax, [0x1122334455667788]: 1 + 8 bytes.
    let i = ok(&[&[0xa1][..], &off].concat(), Bits64);
    assert_eq!((i.len, i.width), (9, Width::Dword));
    assert_eq!(i.op, load(reg(Gpr::Rax), Width::Dword, Extend::None));
    assert_eq!(i.mem.disp, 0x1122_3344_5566_7788);
    // 48 a1 moffs64: mov rax, ...: 10 bytes.
    let i = ok(&[&[0x48, 0xa1][..], &off].concat(), Bits64);
    assert_eq!((i.len, i.width), (10, Width::Qword));
    // 67 a1 moffs32 in 64-bit code.
    let i = ok(&[0x67, 0xa1, 0x00, 0x10, 0x00, 0xfe], Bits64);
    assert_eq!(i.len, 6);
    assert_eq!(i.mem.disp, 0xfe00_1000);
    // a3 moffs32 in 32-bit code: mov [moffs], eax; a2 moffs16 in 16-bit code: mov [moffs], al.
    let i = ok(&[0xa3, 0x00, 0x10, 0x00, 0xfe], Bits32);
    assert_eq!((i.len, i.width), (5, Width::Dword));
    assert_eq!(i.store_value(&regs()), Some(0x3333_4444));
    let i = ok(&[0xa2, 0x00, 0x10], Bits16);
    assert_eq!((i.len, i.width), (3, Width::Byte));
    assert_eq!(i.store_value(&regs()), Some(0x44));
    // a0 is mov al, moffs8; a REX prefix does not make it SPL or R8B.
    let i = ok(&[&[0x41, 0xa0][..], &off].concat(), Bits64);
    assert_eq!(i.op, load(reg(Gpr::Rax), Width::Byte, Extend::None));
    // A moffs cut short is truncated.
    assert_eq!(
        decode(&[0xa1, 0, 0, 0, 0], Bits64),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn movzx_movsx_movsxd() {
    // 0f b6 07: movzx eax, byte [rdi].
    let i = ok(&[0x0f, 0xb6, 0x07], Bits64);
    assert_eq!((i.len, i.width), (3, Width::Byte));
    assert_eq!(i.op, load(reg(Gpr::Rax), Width::Dword, Extend::Zero));
    // 0f b7 07: movzx eax, word [rdi].
    let i = ok(&[0x0f, 0xb7, 0x07], Bits64);
    assert_eq!(i.width, Width::Word);
    // 48 0f be 07: movsx rax, byte [rdi].
    let i = ok(&[0x48, 0x0f, 0xbe, 0x07], Bits64);
    assert_eq!((i.len, i.width), (4, Width::Byte));
    assert_eq!(i.op, load(reg(Gpr::Rax), Width::Qword, Extend::Sign));
    // 66 0f bf 0f: movsx cx, word [rdi].
    let i = ok(&[0x66, 0x0f, 0xbf, 0x0f], Bits64);
    assert_eq!(i.op, load(reg(Gpr::Rcx), Width::Word, Extend::Sign));
    // 0f b6 27: movzx esp, byte [rdi]: the destination is never a high-byte register.
    let i = ok(&[0x0f, 0xb6, 0x27], Bits64);
    assert_eq!(i.op, load(reg(Gpr::Rsp), Width::Dword, Extend::Zero));
    // 48 63 07: movsxd rax, dword [rdi].
    let i = ok(&[0x48, 0x63, 0x07], Bits64);
    assert_eq!((i.len, i.width), (3, Width::Dword));
    assert_eq!(i.op, load(reg(Gpr::Rax), Width::Qword, Extend::Sign));
    // 63 without REX.W is not handled; in 32-bit code 63 is ARPL.
    assert_eq!(decode(&[0x63, 0x07], Bits64), Err(DecodeError::Unsupported));
    assert_eq!(decode(&[0x63, 0x07], Bits32), Err(DecodeError::Unsupported));
    // Other two-byte opcodes are not handled.
    assert_eq!(
        decode(&[0x0f, 0x10, 0x07], Bits64),
        Err(DecodeError::Unsupported)
    );
}

#[test]
fn register_operands_prefixes_and_other_opcodes_are_refused() {
    let cases: &[(&[u8], DecodeError)] = &[
        // mod 11: register to register.
        (&[0x89, 0xc0], DecodeError::RegisterOperand),
        (&[0x8b, 0xc8], DecodeError::RegisterOperand),
        (&[0x0f, 0xb6, 0xc0], DecodeError::RegisterOperand),
        (&[0xc6, 0xf8, 0x00], DecodeError::RegisterOperand),
        // LOCK and REP/REPNE.
        (&[0xf0, 0x89, 0x07], DecodeError::Lock),
        (&[0xf3, 0x89, 0x07], DecodeError::Rep),
        (&[0xf2, 0x89, 0x07], DecodeError::Rep),
        // Not MOV: add [rdi], eax; movs; stos; xchg.
        (&[0x01, 0x07], DecodeError::Unsupported),
        (&[0xa5], DecodeError::Unsupported),
        (&[0xab], DecodeError::Unsupported),
        (&[0x87, 0x07], DecodeError::Unsupported),
        // Truncated: nothing, no ModRM, half a displacement, no immediate.
        (&[], DecodeError::Truncated),
        (&[0x66], DecodeError::Truncated),
        (&[0x89], DecodeError::Truncated),
        (&[0x8b, 0x05, 0x00, 0x00], DecodeError::Truncated),
        (&[0x8b, 0x04], DecodeError::Truncated),
        (&[0xc7, 0x00, 0x01, 0x02, 0x03], DecodeError::Truncated),
        (&[0x0f], DecodeError::Truncated),
    ];
    for &(bytes, err) in cases {
        assert_eq!(decode(bytes, Bits64), Err(err), "{bytes:02x?}");
    }
}

#[test]
fn instructions_are_at_most_15_bytes() {
    // 13 prefixes + 89 07 is 15 bytes: accepted.
    let mut bytes = vec![0x3e; 13];
    bytes.extend([0x89, 0x07]);
    assert_eq!(ok(&bytes, Bits64).len, 15);
    // 14 prefixes + 89 07 is 16 bytes; 16 prefixes never reach an opcode.
    let mut bytes = vec![0x3e; 14];
    bytes.extend([0x89, 0x07]);
    assert_eq!(decode(&bytes, Bits64), Err(DecodeError::TooLong));
    assert_eq!(decode(&[0x66; 16], Bits64), Err(DecodeError::TooLong));
    // 5 prefixes + c7 80 disp32 imm32 (10 bytes) is 15 bytes; one more prefix is too long.
    let insn = [0xc7, 0x80, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut bytes = vec![0x3e; 5];
    bytes.extend(insn);
    assert_eq!(ok(&bytes, Bits64).len, 15);
    bytes.insert(0, 0x3e);
    assert_eq!(decode(&bytes, Bits64), Err(DecodeError::TooLong));
    // Bytes after the instruction are not looked at.
    assert_eq!(ok(&[0x89, 0x07, 0xff, 0xff], Bits64).len, 2);
}

#[test]
fn segment_overrides_are_recorded_last_one_wins() {
    assert_eq!(ok(&[0x89, 0x07], Bits64).segment, None);
    assert_eq!(ok(&[0x64, 0x89, 0x07], Bits64).segment, Some(Segment::Fs));
    assert_eq!(ok(&[0x65, 0x89, 0x07], Bits64).segment, Some(Segment::Gs));
    assert_eq!(
        ok(&[0x2e, 0x3e, 0x89, 0x07], Bits64).segment,
        Some(Segment::Ds)
    );
    assert_eq!(ok(&[0x26, 0x89, 0x07], Bits16).segment, Some(Segment::Es));
    assert_eq!(ok(&[0x36, 0x89, 0x07], Bits32).segment, Some(Segment::Ss));
}

/// Every field of `r`, to compare register files.
fn all(r: &kvm_regs) -> [u64; 18] {
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.rflags,
    ]
}

/// The register file after completing the load `bytes` (in `code`) with `data`.
fn after_load(bytes: &[u8], code: CodeSize, data: u64) -> kvm_regs {
    let mut r = regs();
    ok(bytes, code).complete_load(&mut r, data);
    r
}

#[test]
fn loads_write_registers_with_x86_merge_rules() {
    let rax = |bytes: &[u8], data| after_load(bytes, Bits64, data).rax;
    // 8- and 16-bit writes merge; the data beyond the access width is dropped.
    assert_eq!(rax(&[0x8a, 0x07], 0x12ab), 0x1111_2222_3333_44ab);
    assert_eq!(rax(&[0x8a, 0x27], 0x12ab), 0x1111_2222_3333_ab44);
    assert_eq!(rax(&[0x66, 0x8b, 0x07], 0x1_beef), 0x1111_2222_3333_beef);
    // 32-bit writes zero bits 63:32. SDM Vol. 1 3.4.1.1.
    assert_eq!(rax(&[0x8b, 0x07], 0xdead_beef), 0xdead_beef);
    assert_eq!(
        after_load(&[0x8b, 0x07], Bits32, 0xdead_beef).rax,
        0xdead_beef
    );
    assert_eq!(rax(&[0x48, 0x8b, 0x07], u64::MAX), u64::MAX);
    // a0 / a1: the accumulator.
    assert_eq!(
        rax(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0], 0xcd),
        0x1111_2222_3333_44cd
    );
    // movzx and movsx extend to the destination first.
    assert_eq!(rax(&[0x0f, 0xb6, 0x07], 0x80), 0x80);
    assert_eq!(rax(&[0x66, 0x0f, 0xb6, 0x07], 0x80), 0x1111_2222_3333_0080);
    assert_eq!(rax(&[0x0f, 0xbe, 0x07], 0x80), 0xffff_ff80);
    assert_eq!(rax(&[0x66, 0x0f, 0xbe, 0x07], 0x80), 0x1111_2222_3333_ff80);
    assert_eq!(
        rax(&[0x48, 0x0f, 0xbf, 0x07], 0x8000),
        0xffff_ffff_ffff_8000
    );
    assert_eq!(rax(&[0x0f, 0xb7, 0x07], 0xffff_8000), 0x8000);
    assert_eq!(rax(&[0x48, 0x63, 0x07], 0x8000_0000), 0xffff_ffff_8000_0000);
    assert_eq!(rax(&[0x48, 0x63, 0x07], 0x7fff_ffff), 0x7fff_ffff);

    // Other destinations, and only they change.
    let r = after_load(&[0x8a, 0x3f], Bits64, 0x99); // mov bh, [rdi]
    assert_eq!(r.rbx, 0x0303_0303_0303_9903);
    assert_eq!(r.rdi, regs().rdi);
    let r = after_load(&[0x40, 0x8a, 0x27], Bits64, 0x99); // mov spl, [rdi]
    assert_eq!((r.rsp, r.rax), (0x0404_0404_0404_0499, regs().rax));
    let r = after_load(&[0x44, 0x8a, 0x07], Bits64, 0x99); // mov r8b, [rdi]
    assert_eq!(r.r8, 0x0808_0808_0808_0899);
    let r = after_load(&[0x4c, 0x8b, 0x3f], Bits64, 0x99); // mov r15, [rdi]
    assert_eq!(r.r15, 0x99);
    let r = after_load(&[0x8b, 0x36, 0x00, 0x10], Bits16, 0x1_2345); // mov si, [0x1000]
    assert_eq!(r.rsi, 0x0606_0606_0606_2345);

    // A store is not a load: completing it changes nothing.
    let r = after_load(&[0x89, 0x07], Bits64, 0x99);
    assert_eq!(all(&r), all(&regs()));
}

#[test]
fn code_size_and_next_rip_follow_the_mode() {
    use crate::x86::regs::{cr0, efer};
    let pe = cr0::PE;
    let lma = efer::LME | efer::LMA;
    assert_eq!(CodeSize::from_state(0, 0, false, false, false), Bits16);
    // Real mode is 16-bit whatever the cached CS attributes say.
    assert_eq!(CodeSize::from_state(0, 0, false, true, false), Bits16);
    assert_eq!(CodeSize::from_state(pe, 0, false, true, false), Bits32);
    assert_eq!(CodeSize::from_state(pe, 0, false, false, false), Bits16);
    assert_eq!(CodeSize::from_state(pe, 0, false, true, true), Bits16);
    assert_eq!(CodeSize::from_state(pe, lma, true, false, false), Bits64);
    // Compatibility mode follows CS.D.
    assert_eq!(CodeSize::from_state(pe, lma, false, true, false), Bits32);
    // CS.L outside long mode means nothing.
    assert_eq!(CodeSize::from_state(pe, 0, true, true, false), Bits32);

    let insn = |code| ok(&[0x89, 0x07], code);
    assert_eq!(insn(Bits64).next_rip(0xffff_ffff_ffff_ffff), 1);
    assert_eq!(insn(Bits64).next_rip(0xffff_ffff), 0x1_0000_0001);
    assert_eq!(insn(Bits32).next_rip(0xffff_ffff), 1);
    assert_eq!(insn(Bits16).next_rip(0xfffe), 0);
    assert_eq!(insn(Bits16).next_rip(0x100), 0x102);
}

/// MOV to/from CRn and DRn: the GPR is ModRM.rm whatever ModRM.mod says,
/// REX.R extends the special register and REX.B the GPR. SDM Vol. 2B MOV.
#[test]
fn mov_to_and_from_control_and_debug_registers() {
    use crate::x86::decode::{decode_mov_special, Gpr, MovSpecial};
    // mov %rax, %cr4 (0F 22 E0)
    assert_eq!(
        decode_mov_special(&[0x0f, 0x22, 0xe0], Bits64, &[0x22]),
        Some(MovSpecial {
            opcode: 0x22,
            special: 4,
            gpr: Gpr::Rax,
            len: 3
        })
    );
    // mov %rcx, %cr8 (44 0F 22 C1: REX.R adds 8 to the CR number; rm=001 is RCX)
    assert_eq!(
        decode_mov_special(&[0x44, 0x0f, 0x22, 0xc1], Bits64, &[0x22]),
        Some(MovSpecial {
            opcode: 0x22,
            special: 8,
            gpr: Gpr::Rcx,
            len: 4
        })
    );
    // mov %dr7, %r11 (41 0F 21 FB: REX.B, reg=111 (DR7), rm=011)
    assert_eq!(
        decode_mov_special(&[0x41, 0x0f, 0x21, 0xfb], Bits64, &[0x21, 0x23]),
        Some(MovSpecial {
            opcode: 0x21,
            special: 7,
            gpr: Gpr::R11,
            len: 4
        })
    );
    // In 32-bit code 0x41 is INC ECX, not a prefix.
    assert_eq!(
        decode_mov_special(&[0x41, 0x0f, 0x21, 0xfb], Bits32, &[0x21]),
        None
    );
    // Not one of the asked-for opcodes, and truncated input.
    assert_eq!(
        decode_mov_special(&[0x0f, 0x20, 0xe0], Bits64, &[0x22]),
        None
    );
    assert_eq!(decode_mov_special(&[0x0f, 0x22], Bits64, &[0x22]), None);
}
