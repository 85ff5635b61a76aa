// SPDX-License-Identifier: GPL-2.0

//! A decoder of the few instructions a guest uses to access MMIO.
//!
//! When a guest touches guest-physical memory that no memory slot backs,
//! the nested page fault gives the address but, without decode assists,
//! not the instruction. The run loop fetches the instruction bytes and this
//! decoder says what the access is (its width, whether it writes, and with
//! what), so that it becomes a `KVM_EXIT_MMIO`; for a read, the decoded
//! instruction later writes the data userspace supplies into its
//! destination register.
//!
//! Only the `MOV` forms compilers emit for device access are decoded:
//! `MOV` between a register or an immediate and memory, `MOV` with a
//! memory offset (`moffs`), `MOVZX`, `MOVSX` and `MOVSXD`. Anything else
//! is an error, never a guess: the run loop reports it as an emulation
//! failure with the bytes.
//!
//! Encodings: SDM Vol. 2A chapter 2 and the instruction pages in Vol. 2B,
//! APM Vol. 3 chapter 1.

use crate::abi::kvm_regs;
use crate::x86::regs::{cr0, efer};

/// The longest instruction the CPU accepts; a longer one raises #GP.
/// SDM Vol. 2A 2.3.11, APM Vol. 3 1.1.
pub(crate) const MAX_INSN_LEN: usize = 15;

/// The default operand and address size of the code being executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodeSize {
    /// Real mode, virtual-8086 mode, or a 16-bit code segment.
    Bits16,
    /// A 32-bit code segment, in protected or compatibility mode.
    Bits32,
    /// 64-bit mode: long mode with CS.L set.
    Bits64,
}

impl CodeSize {
    /// The code size from CR0, EFER, the CS descriptor's L and D/B bits and
    /// RFLAGS.VM. Real mode (CR0.PE clear) and virtual-8086 mode are 16-bit;
    /// in long mode CS.L selects 64-bit mode; otherwise CS.D chooses between
    /// 32 and 16 bits. SDM Vol. 3A 2.2 and 3.4.5, APM Vol. 2 4.8.1.
    pub(crate) fn from_state(
        cr0: u64,
        efer: u64,
        cs_l: bool,
        cs_db: bool,
        rflags_vm: bool,
    ) -> Self {
        let long_mode = efer & efer::LMA != 0;
        if cr0 & cr0::PE == 0 {
            Self::Bits16
        } else if long_mode && cs_l {
            Self::Bits64
        } else if rflags_vm && !long_mode {
            // RFLAGS.VM is ignored in long mode. SDM Vol. 3A 2.3.
            Self::Bits16
        } else if cs_db {
            Self::Bits32
        } else {
            Self::Bits16
        }
    }
}

/// The width of an operand or a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    /// 1 byte.
    Byte,
    /// 2 bytes.
    Word,
    /// 4 bytes.
    Dword,
    /// 8 bytes.
    Qword,
}

impl Width {
    /// The number of bytes.
    pub(crate) fn bytes(self) -> u8 {
        match self {
            Self::Byte => 1,
            Self::Word => 2,
            Self::Dword => 4,
            Self::Qword => 8,
        }
    }

    /// The bits of a `u64` this width covers.
    fn mask(self) -> u64 {
        match self {
            Self::Byte => 0xff,
            Self::Word => 0xffff,
            Self::Dword => 0xffff_ffff,
            Self::Qword => u64::MAX,
        }
    }

    /// `value` truncated to this width.
    pub(crate) fn truncate(self, value: u64) -> u64 {
        value & self.mask()
    }

    /// `value` truncated to this width, then sign-extended to 64 bits.
    pub(crate) fn sign_extend(self, value: u64) -> u64 {
        let unused = 64 - 8 * u32::from(self.bytes());
        (((value << unused) as i64) >> unused) as u64
    }
}

/// A general-purpose register, in the instructions' encoding order.
/// SDM Vol. 2A 2.1.5 Table 2-2 and 2.2.1.2 Table 2-4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gpr {
    Rax,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Gpr {
    /// The register an instruction names with the 4-bit number `n` (a
    /// ModRM or SIB field with its REX extension bit); bits above 3 are
    /// ignored.
    pub(crate) fn from_number(n: u8) -> Self {
        match n & 0xf {
            0 => Self::Rax,
            1 => Self::Rcx,
            2 => Self::Rdx,
            3 => Self::Rbx,
            4 => Self::Rsp,
            5 => Self::Rbp,
            6 => Self::Rsi,
            7 => Self::Rdi,
            8 => Self::R8,
            9 => Self::R9,
            10 => Self::R10,
            11 => Self::R11,
            12 => Self::R12,
            13 => Self::R13,
            14 => Self::R14,
            _ => Self::R15,
        }
    }

    /// The register's value in `regs` (whose field order is not the
    /// encoding order).
    pub(crate) fn get(self, regs: &kvm_regs) -> u64 {
        match self {
            Self::Rax => regs.rax,
            Self::Rcx => regs.rcx,
            Self::Rdx => regs.rdx,
            Self::Rbx => regs.rbx,
            Self::Rsp => regs.rsp,
            Self::Rbp => regs.rbp,
            Self::Rsi => regs.rsi,
            Self::Rdi => regs.rdi,
            Self::R8 => regs.r8,
            Self::R9 => regs.r9,
            Self::R10 => regs.r10,
            Self::R11 => regs.r11,
            Self::R12 => regs.r12,
            Self::R13 => regs.r13,
            Self::R14 => regs.r14,
            Self::R15 => regs.r15,
        }
    }

    /// The register's field in `regs`.
    pub(crate) fn get_mut(self, regs: &mut kvm_regs) -> &mut u64 {
        match self {
            Self::Rax => &mut regs.rax,
            Self::Rcx => &mut regs.rcx,
            Self::Rdx => &mut regs.rdx,
            Self::Rbx => &mut regs.rbx,
            Self::Rsp => &mut regs.rsp,
            Self::Rbp => &mut regs.rbp,
            Self::Rsi => &mut regs.rsi,
            Self::Rdi => &mut regs.rdi,
            Self::R8 => &mut regs.r8,
            Self::R9 => &mut regs.r9,
            Self::R10 => &mut regs.r10,
            Self::R11 => &mut regs.r11,
            Self::R12 => &mut regs.r12,
            Self::R13 => &mut regs.r13,
            Self::R14 => &mut regs.r14,
            Self::R15 => &mut regs.r15,
        }
    }
}

/// A register operand: a general-purpose register read or written from
/// bit 0, or, for the legacy byte registers AH, CH, DH and BH, bits 15:8
/// of RAX, RCX, RDX or RBX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Register {
    /// The register holding the operand.
    pub(crate) gpr: Gpr,
    /// The operand is bits 15:8 of `gpr` (AH, CH, DH, BH).
    pub(crate) high_byte: bool,
}

impl Register {
    /// The register `n` names (with its REX extension bit) as an operand of
    /// `width`. Without a REX prefix, byte registers 4 to 7 are AH, CH, DH
    /// and BH; with any REX prefix they are SPL, BPL, SIL and DIL.
    /// SDM Vol. 2A 2.2.1.2 and Table 3-1, APM Vol. 3 1.2.7.
    fn from_number(n: u8, width: Width, rex: bool) -> Self {
        let high_byte = width == Width::Byte && !rex && (4..8).contains(&n);
        Self {
            gpr: Gpr::from_number(if high_byte { n - 4 } else { n }),
            high_byte,
        }
    }

    /// The low `width` bytes of the operand's value.
    fn read(self, regs: &kvm_regs, width: Width) -> u64 {
        let value = self.gpr.get(regs);
        width.truncate(if self.high_byte { value >> 8 } else { value })
    }

    /// Writes `value` to the operand as an instruction with a destination
    /// of `width` does: a 32-bit write zero-extends into bits 63:32, an 8-
    /// or 16-bit write leaves the other bits unchanged, and a write to a
    /// high-byte register changes only bits 15:8. SDM Vol. 1 3.4.1.1.
    ///
    /// Outside 64-bit mode bits 63:32 are not visible and undefined after a
    /// mode switch (same section); zeroing them is what KVM's emulator does
    /// as well.
    fn write(self, regs: &mut kvm_regs, width: Width, value: u64) {
        let reg = self.gpr.get_mut(regs);
        *reg = match width {
            Width::Byte if self.high_byte => (*reg & !0xff00) | ((value & 0xff) << 8),
            Width::Byte | Width::Word => (*reg & !width.mask()) | width.truncate(value),
            Width::Dword => width.truncate(value),
            Width::Qword => value,
        };
    }
}

/// A segment-override prefix. SDM Vol. 2A 2.1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

/// The memory operand's addressing, as encoded. The guest-physical
/// address of an MMIO access comes from the hardware, so the run loop
/// does not need this to emulate; it is kept for checks and for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemOperand {
    /// The base register, if any (none for RIP-relative and absolute forms).
    pub(crate) base: Option<Gpr>,
    /// The index register, if any.
    pub(crate) index: Option<Gpr>,
    /// The index's scale: 1, 2, 4 or 8.
    pub(crate) scale: u8,
    /// The displacement sign-extended to 64 bits, or the `moffs` offset.
    pub(crate) disp: u64,
    /// The address is relative to the next instruction (`[rip + disp32]`).
    pub(crate) rip_relative: bool,
    /// The address size: 2, 4 or 8 bytes (the effective address wraps at it).
    pub(crate) address_size: Width,
}

/// Where a store's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A register.
    Reg(Register),
    /// An immediate, already extended to the access width.
    Imm(u64),
}

/// How a load widens the data it reads into its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Extend {
    /// `MOV`: the destination has the access's width.
    None,
    /// `MOVZX`: zero-extended to the destination's width.
    Zero,
    /// `MOVSX`, `MOVSXD`: sign-extended to the destination's width.
    Sign,
}

/// What the instruction does with the memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MmioOp {
    /// Writes the source to memory.
    Store(Source),
    /// Reads memory into a register of `dst_width`.
    Load {
        dst: Register,
        dst_width: Width,
        extend: Extend,
    },
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmioInsn {
    /// The instruction's length in bytes (at most [`MAX_INSN_LEN`]).
    pub(crate) len: usize,
    /// The width of the memory access: the length of the MMIO exit.
    pub(crate) width: Width,
    /// The store or load.
    pub(crate) op: MmioOp,
    /// The memory operand's addressing.
    pub(crate) mem: MemOperand,
    /// The segment-override prefix, if any (the last one, as KVM takes it).
    pub(crate) segment: Option<Segment>,
    /// The code size it was decoded for.
    pub(crate) code_size: CodeSize,
}

/// Why instruction bytes were not decoded. The run loop reports every
/// reason the same way, as an emulation failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// The instruction is longer than [`MAX_INSN_LEN`] bytes.
    TooLong,
    /// A LOCK prefix: never valid on a `MOV` (it raises #UD).
    Lock,
    /// A REP or REPNE prefix: not a plain `MOV`.
    Rep,
    /// An opcode (or ModRM `reg` extension) this decoder does not handle.
    Unsupported,
    /// The ModRM byte names a register, not memory, so the instruction
    /// cannot have accessed MMIO.
    RegisterOperand,
}

/// The REX prefix's bits. SDM Vol. 2A 2.2.1.2, APM Vol. 3 1.2.7.
mod rex {
    /// 64-bit operand size.
    pub(super) const W: u8 = 1 << 3;
    /// Extends ModRM.reg.
    pub(super) const R: u8 = 1 << 2;
    /// Extends SIB.index.
    pub(super) const X: u8 = 1 << 1;
    /// Extends ModRM.rm or SIB.base.
    pub(super) const B: u8 = 1 << 0;
}

/// The bytes being decoded and the position in them.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// The next byte, or why there is none.
    fn byte(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `width` bytes as a little-endian unsigned value.
    fn unsigned(&mut self, width: Width) -> Result<u64, DecodeError> {
        let mut value = 0;
        for i in 0..width.bytes() {
            value |= u64::from(self.byte()?) << (8 * i);
        }
        Ok(value)
    }

    /// The next `width` bytes as a little-endian value sign-extended to
    /// 64 bits.
    fn signed(&mut self, width: Width) -> Result<u64, DecodeError> {
        Ok(width.sign_extend(self.unsigned(width)?))
    }
}

/// The prefixes before the opcode. SDM Vol. 2A 2.1.1 and 2.2.1.
#[derive(Default)]
struct Prefixes {
    operand_size: bool,
    address_size: bool,
    segment: Option<Segment>,
    /// The REX prefix, if it immediately precedes the opcode.
    rex: Option<u8>,
}

impl Prefixes {
    fn rex_has(&self, bit: u8) -> bool {
        self.rex.is_some_and(|r| r & bit != 0)
    }
}

/// The segment a segment-override prefix byte selects. SDM Vol. 2A 2.1.1.
fn segment_override(b: u8) -> Option<Segment> {
    Some(match b {
        0x26 => Segment::Es,
        0x2e => Segment::Cs,
        0x36 => Segment::Ss,
        0x3e => Segment::Ds,
        0x64 => Segment::Fs,
        0x65 => Segment::Gs,
        _ => return None,
    })
}

/// Reads the prefixes and returns them with the first opcode byte.
fn prefixes(c: &mut Cursor<'_>, code: CodeSize) -> Result<(Prefixes, u8), DecodeError> {
    let mut p = Prefixes::default();
    loop {
        let b = c.byte()?;
        // Legacy prefixes. SDM Vol. 2A 2.1.1.
        if let Some(segment) = segment_override(b) {
            p.segment = Some(segment);
        } else {
            match b {
                0x66 => p.operand_size = true,
                0x67 => p.address_size = true,
                0xf0 => return Err(DecodeError::Lock),
                0xf2 | 0xf3 => return Err(DecodeError::Rep),
                // REX, in 64-bit mode only (elsewhere these are INC and DEC). SDM Vol. 2A 2.2.1.
                0x40..=0x4f if code == CodeSize::Bits64 => {
                    p.rex = Some(b);
                    continue;
                }
                _ => return Ok((p, b)),
            }
        }
        // A REX prefix followed by another prefix is ignored. SDM Vol. 2A 2.2.1.
        p.rex = None;
    }
}

/// Decodes the ModRM byte, and the SIB byte and displacement that follow
/// it, of an instruction whose operand must be in memory. Returns the
/// ModRM `reg` field extended by REX.R, and the memory operand.
/// SDM Vol. 2A 2.1.5 Tables 2-1 to 2-3, 2.2.1 and 2.2.1.6.
fn modrm(
    c: &mut Cursor<'_>,
    p: &Prefixes,
    code: CodeSize,
    address_size: Width,
) -> Result<(u8, MemOperand), DecodeError> {
    let modrm = c.byte()?;
    let mode = modrm >> 6;
    let reg = ((modrm >> 3) & 7) | if p.rex_has(rex::R) { 8 } else { 0 };
    let rm = modrm & 7;
    if mode == 0b11 {
        return Err(DecodeError::RegisterOperand);
    }
    let mut mem = MemOperand {
        base: None,
        index: None,
        scale: 1,
        disp: 0,
        rip_relative: false,
        address_size,
    };
    if address_size == Width::Word {
        // 16-bit addressing: no SIB, no REX extension. SDM Vol. 2A 2.1.5 Table 2-1.
        let (base, index) = match rm {
            0 => (Gpr::Rbx, Some(Gpr::Rsi)),
            1 => (Gpr::Rbx, Some(Gpr::Rdi)),
            2 => (Gpr::Rbp, Some(Gpr::Rsi)),
            3 => (Gpr::Rbp, Some(Gpr::Rdi)),
            4 => (Gpr::Rsi, None),
            5 => (Gpr::Rdi, None),
            6 => (Gpr::Rbp, None),
            _ => (Gpr::Rbx, None),
        };
        if !(mode == 0b00 && rm == 0b110) {
            mem.base = Some(base);
            mem.index = index;
        }
        mem.disp = match mode {
            0b00 if rm == 0b110 => c.signed(Width::Word)?,
            0b01 => c.signed(Width::Byte)?,
            0b10 => c.signed(Width::Word)?,
            _ => 0,
        };
        return Ok((reg, mem));
    }
    // 32- and 64-bit addressing. SDM Vol. 2A 2.1.5 Tables 2-2 and 2-3. The special cases
    // (rm 100 for a SIB, rm or base 101 for no base) ignore REX.B. SDM Vol. 2A 2.2.1.2 Table 2-5.
    let ext_b = if p.rex_has(rex::B) { 8 } else { 0 };
    let mut no_base = false;
    if rm == 0b100 {
        let sib = c.byte()?;
        let index = ((sib >> 3) & 7) | if p.rex_has(rex::X) { 8 } else { 0 };
        let base = sib & 7;
        // Index 100 without REX.X means no index. SDM Vol. 2A 2.1.5 Table 2-3.
        if index != 0b100 {
            mem.index = Some(Gpr::from_number(index));
            mem.scale = 1 << (sib >> 6);
        }
        if base == 0b101 && mode == 0b00 {
            no_base = true;
        } else {
            mem.base = Some(Gpr::from_number(base | ext_b));
        }
    } else if rm == 0b101 && mode == 0b00 {
        // disp32 alone, which 64-bit mode makes relative to the next instruction's RIP (or
        // EIP, with a 67 prefix). SDM Vol. 2A 2.2.1.6.
        no_base = true;
        mem.rip_relative = code == CodeSize::Bits64;
    } else {
        mem.base = Some(Gpr::from_number(rm | ext_b));
    }
    mem.disp = match mode {
        0b00 if no_base => c.signed(Width::Dword)?,
        0b01 => c.signed(Width::Byte)?,
        0b10 => c.signed(Width::Dword)?,
        _ => 0,
    };
    Ok((reg, mem))
}

/// Decodes the instruction at the start of `bytes` (the bytes fetched at
/// CS:RIP, at most [`MAX_INSN_LEN`] of which are looked at) for code of
/// `code` size. Succeeds only for the `MOV` forms with a memory operand
/// the module emulates on MMIO:
///
/// - `88 /r`, `89 /r`: `MOV r/m, reg`; `8A /r`, `8B /r`: `MOV reg, r/m`.
/// - `C6 /0 ib`, `C7 /0 iw/id`: `MOV r/m, imm` (with REX.W, imm32
///   sign-extended to 64 bits).
/// - `A0` to `A3`: `MOV AL/eAX, moffs` and back; the offset has the
///   address size.
/// - `0F B6`, `0F B7`: `MOVZX`; `0F BE`, `0F BF`: `MOVSX`.
/// - `REX.W 63 /r`: `MOVSXD` (64-bit mode only).
///
/// Prefixes: operand size (66), address size (67), segment overrides
/// (recorded), REX in 64-bit mode. LOCK and REP are refused.
pub(crate) fn decode(bytes: &[u8], code: CodeSize) -> Result<MmioInsn, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let (p, opcode) = prefixes(&mut c, code)?;
    let rex_w = p.rex_has(rex::W);
    // Effective operand and address sizes. SDM Vol. 2A 2.2.1.2 Table 2-4 and Vol. 1 3.6 Table 3-4.
    let operand = match code {
        CodeSize::Bits64 if rex_w => Width::Qword,
        CodeSize::Bits64 | CodeSize::Bits32 if p.operand_size => Width::Word,
        CodeSize::Bits64 | CodeSize::Bits32 => Width::Dword,
        CodeSize::Bits16 if p.operand_size => Width::Dword,
        CodeSize::Bits16 => Width::Word,
    };
    let address_size = match (code, p.address_size) {
        (CodeSize::Bits64, false) => Width::Qword,
        (CodeSize::Bits64, true) | (CodeSize::Bits32, false) | (CodeSize::Bits16, true) => {
            Width::Dword
        }
        (CodeSize::Bits32, true) | (CodeSize::Bits16, false) => Width::Word,
    };
    // The ModRM operand of an instruction whose register operand has `reg_width`: that
    // register, the raw `reg` field (an opcode extension for C6 and C7), and the memory.
    let modrm_operand = |c: &mut Cursor<'_>, reg_width: Width| {
        let (reg, mem) = modrm(c, &p, code, address_size)?;
        let register = Register::from_number(reg, reg_width, p.rex.is_some());
        Ok::<_, DecodeError>((register, reg, mem))
    };

    let (width, op, mem) = match opcode {
        // MOV r/m8, r8 and MOV r/m, r. SDM Vol. 2B "MOV".
        0x88 | 0x89 => {
            let width = if opcode == 0x88 { Width::Byte } else { operand };
            let (src, _, mem) = modrm_operand(&mut c, width)?;
            (width, MmioOp::Store(Source::Reg(src)), mem)
        }
        // MOV r8, r/m8 and MOV r, r/m.
        0x8a | 0x8b => {
            let width = if opcode == 0x8a { Width::Byte } else { operand };
            let (dst, _, mem) = modrm_operand(&mut c, width)?;
            (width, load(dst, width, Extend::None), mem)
        }
        // MOV r/m8, imm8 and MOV r/m, imm16/32 (/0 only; C6 F8 and C7 F8 are XABORT and
        // XBEGIN, register forms). An imm32 with REX.W is sign-extended.
        0xc6 | 0xc7 => {
            let width = if opcode == 0xc6 { Width::Byte } else { operand };
            let (_, reg, mem) = modrm_operand(&mut c, width)?;
            if reg & 7 != 0 {
                return Err(DecodeError::Unsupported);
            }
            let imm = match width {
                Width::Qword => c.signed(Width::Dword)?,
                w => c.unsigned(w)?,
            };
            (width, MmioOp::Store(Source::Imm(width.truncate(imm))), mem)
        }
        // MOV AL/eAX, moffs and MOV moffs, AL/eAX: the offset has the address size, and the
        // register is always AL or eAX (REX.B does not apply). SDM Vol. 2B "MOV".
        0xa0..=0xa3 => {
            let width = if opcode & 1 == 0 {
                Width::Byte
            } else {
                operand
            };
            let mem = MemOperand {
                base: None,
                index: None,
                scale: 1,
                disp: c.unsigned(address_size)?,
                rip_relative: false,
                address_size,
            };
            let acc = Register {
                gpr: Gpr::Rax,
                high_byte: false,
            };
            let op = if opcode < 0xa2 {
                load(acc, width, Extend::None)
            } else {
                MmioOp::Store(Source::Reg(acc))
            };
            (width, op, mem)
        }
        // MOVSXD r64, r/m32; without REX.W the form is discouraged and not handled, and
        // outside 64-bit mode 63 is ARPL. SDM Vol. 2B "MOVSX/MOVSXD".
        0x63 if code == CodeSize::Bits64 && rex_w => {
            let (dst, _, mem) = modrm_operand(&mut c, Width::Qword)?;
            (Width::Dword, load(dst, Width::Qword, Extend::Sign), mem)
        }
        0x0f => {
            let (width, extend) = match c.byte()? {
                // MOVZX r, r/m8 and r/m16. SDM Vol. 2B "MOVZX".
                0xb6 => (Width::Byte, Extend::Zero),
                0xb7 => (Width::Word, Extend::Zero),
                // MOVSX r, r/m8 and r/m16. SDM Vol. 2B "MOVSX/MOVSXD".
                0xbe => (Width::Byte, Extend::Sign),
                0xbf => (Width::Word, Extend::Sign),
                _ => return Err(DecodeError::Unsupported),
            };
            let (dst, _, mem) = modrm_operand(&mut c, operand)?;
            (width, load(dst, operand, extend), mem)
        }
        _ => return Err(DecodeError::Unsupported),
    };
    Ok(MmioInsn {
        len: c.pos,
        width,
        op,
        mem,
        segment: p.segment,
        code_size: code,
    })
}

/// A load into `dst`, a register of `dst_width`.
fn load(dst: Register, dst_width: Width, extend: Extend) -> MmioOp {
    MmioOp::Load {
        dst,
        dst_width,
        extend,
    }
}

impl MmioInsn {
    /// Whether the instruction writes memory (an MMIO write exit).
    pub(crate) fn is_write(&self) -> bool {
        matches!(self.op, MmioOp::Store(_))
    }

    /// The data a store writes, in its low [`Self::width`] bytes; `None`
    /// for a load.
    pub(crate) fn store_value(&self, regs: &kvm_regs) -> Option<u64> {
        match self.op {
            MmioOp::Store(Source::Reg(r)) => Some(r.read(regs, self.width)),
            MmioOp::Store(Source::Imm(imm)) => Some(self.width.truncate(imm)),
            MmioOp::Load { .. } => None,
        }
    }

    /// Completes a load with the `data` read from MMIO (its low
    /// [`Self::width`] bytes count): extends it as the instruction does and
    /// writes the destination register with x86's rules (see
    /// [`Register`]). Does nothing for a store. RIP is not changed: see
    /// [`Self::next_rip`].
    pub(crate) fn complete_load(&self, regs: &mut kvm_regs, data: u64) {
        let MmioOp::Load {
            dst,
            dst_width,
            extend,
        } = self.op
        else {
            return;
        };
        let value = match extend {
            Extend::None | Extend::Zero => self.width.truncate(data),
            Extend::Sign => self.width.sign_extend(data),
        };
        dst.write(regs, dst_width, value);
    }

    /// The instruction pointer after the instruction at `rip`: EIP wraps at
    /// 4 GiB outside 64-bit mode, and IP at 64 KiB in 16-bit code. SDM Vol.
    /// 1 3.5 and 3.6.
    pub(crate) fn next_rip(&self, rip: u64) -> u64 {
        // `len` is at most MAX_INSN_LEN.
        let next = rip.wrapping_add(self.len as u64);
        match self.code_size {
            CodeSize::Bits64 => next,
            CodeSize::Bits32 => Width::Dword.truncate(next),
            CodeSize::Bits16 => Width::Word.truncate(next),
        }
    }
}

/// Whether `b` is a REX prefix in `code` (0x40–0x4F, 64-bit code only; in
/// 16- and 32-bit code those bytes are INC/DEC). SDM Vol. 2A 2.2.1.
fn is_rex(b: u8, code: CodeSize) -> bool {
    code == CodeSize::Bits64 && b & 0xf0 == 0x40
}

/// Whether `b` is an instruction prefix in `code`: a legacy prefix
/// (operand and address size, LOCK, REP, segment overrides) or REX.
/// SDM Vol. 2A 2.1.1, 2.2.1.
pub(crate) fn is_prefix(b: u8, code: CodeSize) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65
    ) || is_rex(b, code)
}

/// A MOV to or from a control or debug register (`0F 20/21/22/23 /r`):
/// the register operand is always a GPR, whatever ModRM.mod says.
/// SDM Vol. 2B MOV (control registers), MOV (debug registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MovSpecial {
    /// The second opcode byte: 0x20 (from CRn), 0x21 (from DRn), 0x22 (to
    /// CRn), 0x23 (to DRn).
    pub(crate) opcode: u8,
    /// The control or debug register's number (ModRM.reg, with REX.R).
    pub(crate) special: u8,
    /// The general-purpose register (ModRM.rm, with REX.B).
    pub(crate) gpr: Gpr,
    /// The instruction's length in bytes.
    pub(crate) len: usize,
}

/// Decodes `bytes` as one of the MOVs of [`MovSpecial`] whose second
/// opcode byte is in `opcodes`, skipping legacy prefixes (and REX in
/// 64-bit code); `None` if it is something else.
pub(crate) fn decode_mov_special(
    bytes: &[u8],
    code: CodeSize,
    opcodes: &[u8],
) -> Option<MovSpecial> {
    let mut i = 0;
    let mut rex = 0u8;
    while let Some(&b) = bytes.get(i) {
        if !is_prefix(b, code) {
            break;
        }
        // A REX counts only as the last prefix.
        rex = if is_rex(b, code) { b } else { 0 };
        i += 1;
    }
    match bytes.get(i..i + 3) {
        Some(&[0x0f, opcode, modrm]) if opcodes.contains(&opcode) && i + 3 <= MAX_INSN_LEN => {
            Some(MovSpecial {
                opcode,
                special: ((modrm >> 3) & 7) | ((rex & 4) << 1),
                gpr: Gpr::from_number((modrm & 7) | ((rex & 1) << 3)),
                len: i + 3,
            })
        }
        _ => None,
    }
}
