//! Setting a guest up in one of the x86 operating modes, the way a KVM
//! client does it: a GDT and page tables written into guest memory, and the
//! segment, control and EFER registers given to `KVM_SET_SREGS`.
//!
//! Both the selftests (`selftests/src/guest.rs`) and the rkvm tool use this
//! one copy. It is pure: it computes bytes and register values, and the
//! caller writes them into its memory slot and vCPU.
//!
//! # Guest-physical layout
//!
//! Everything the modes need lives below [`TABLES_END`]: the GDT at
//! [`GDT_GPA`], the IDT at [`IDT_GPA`] (filled by the caller, if at all),
//! the TSS at [`TSS_GPA`] and the page tables from [`PML4_GPA`] on. The
//! paging modes identity-map the first 4 GiB with large pages, except
//! [`ALIAS_GVA`], which maps to guest-physical 0. Real and 16-bit protected
//! mode use segments based at [`CODE_GPA`], [`DATA_GPA`] and below
//! [`STACK_TOP`].

use kvm_abi::sys::{kvm_segment, kvm_sregs};

/// The GDT (see [`Selector`]).
pub const GDT_GPA: u64 = 0x1000;
/// The IDT: 256 gates (16 bytes each in long mode, 8 otherwise).
pub const IDT_GPA: u64 = 0x2000;
/// The TSS that TR points at (never used: the guest stays at CPL 0
/// without IST).
pub const TSS_GPA: u64 = 0x6000;
/// Long mode: the PML4.
pub const PML4_GPA: u64 = 0x10000;
/// Long mode: the PDPT, whose four entries point at the four PDs.
pub const PDPT_GPA: u64 = 0x11000;
/// Four page directories of 2 MiB pages mapping 0-4 GiB (long mode, PAE).
pub const PD_GPA: u64 = 0x12000;
/// 32-bit paging: one page directory of 4 MiB pages mapping 0-4 GiB.
pub const PD32_GPA: u64 = 0x16000;
/// PAE paging: the four-entry PDPT.
pub const PAE_PDPT_GPA: u64 = 0x17000;
/// The end of the tables: guest memory below it belongs to this layout.
pub const TABLES_END: u64 = 0x18000;
/// Real and 16-bit protected mode: the base of the data segments.
pub const DATA_GPA: u64 = 0x20000;
/// Real and 16-bit protected mode: the base of the code segment.
pub const CODE_GPA: u64 = 0x40000;
/// Real and 16-bit protected mode: the stack segment ends here.
pub const STACK_TOP: u64 = 0x80000;

/// The virtual address that every paging mode maps to guest-physical 0
/// (instead of identity): the last 4 MiB of the 4 GiB map. Guest code reads
/// memory through it to prove that its page tables, not just the slot
/// layout, decide where an access goes.
pub const ALIAS_GVA: u64 = 0xffc0_0000;

// Control-register and EFER bits: SDM Vol. 3A 2.5, APM Vol. 2 3.1.
/// CR0.PE: protection enabled.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP: monitor coprocessor (WAIT/FWAIT honour CR0.TS).
pub const CR0_MP: u64 = 1 << 1;
/// CR0.ET: extension type (always 1 on modern CPUs).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE: native x87 error reporting.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP: write protect at CPL 0.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: physical address extension (PAE and 4-level paging).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.OSFXSR: the OS supports FXSAVE/FXRSTOR, which enables SSE.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT: the OS handles SIMD floating-point exceptions (#XM).
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is always 1 (SDM Vol. 1 3.4.3).
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// RFLAGS.IF (SDM Vol. 1 3.4.3).
pub const RFLAGS_IF: u64 = 1 << 9;

// Page-table entry bits: SDM Vol. 3A 4.3 (32-bit), 4.4 (PAE), 4.5 (4-level).
/// Present.
pub const PTE_P: u64 = 1 << 0;
/// Writable.
pub const PTE_RW: u64 = 1 << 1;
/// A large page (2 MiB or 4 MiB) in a page-directory entry.
pub const PTE_PS: u64 = 1 << 7;

/// The GDT's selectors (SDM Vol. 3A 3.4.5 for the descriptor format).
#[derive(Clone, Copy, Debug)]
pub enum Selector {
    /// 64-bit code (L = 1).
    Code64 = 0x08,
    /// Flat 4 GiB read/write data.
    Data = 0x10,
    /// 32-bit flat code.
    Code32 = 0x18,
    /// 16-bit code based at [`CODE_GPA`].
    Code16 = 0x20,
    /// 16-bit data based at [`DATA_GPA`].
    Data16 = 0x28,
    /// 16-bit stack segment based at `STACK_TOP - 0x10000`.
    Stack16 = 0x30,
    /// The TSS (a 16-byte descriptor in long mode).
    Tss = 0x38,
}

/// The GDT: a descriptor per [`Selector`].
pub fn gdt() -> Vec<u64> {
    // Descriptor: limit 15:0, base 23:0, access byte, flags|limit 19:16,
    // base 31:24 (SDM Vol. 3A 3.4.5). Access 0x9b: present, DPL 0, code,
    // readable, accessed; 0x93: data, writable, accessed; 0x8b: busy TSS.
    let desc = |base: u64, limit: u64, access: u64, flags: u64| {
        (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (access << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (flags << 52)
            | ((base >> 24) << 56)
    };
    // Flags: G = 8, D/B = 4, L = 2.
    vec![
        0,
        desc(0, 0xf_ffff, 0x9b, 0xa),
        desc(0, 0xf_ffff, 0x93, 0xc),
        desc(0, 0xf_ffff, 0x9b, 0xc),
        desc(CODE_GPA, 0xffff, 0x9b, 0),
        desc(DATA_GPA, 0xffff, 0x93, 0),
        desc(STACK_TOP - 0x10000, 0xffff, 0x93, 0),
        desc(TSS_GPA, 0x67, 0x8b, 0),
        0,
    ]
}

/// The GDT as the bytes to write at [`GDT_GPA`].
pub fn gdt_bytes() -> Vec<u8> {
    gdt().into_iter().flat_map(u64::to_le_bytes).collect()
}

/// The x86 operating modes a guest can be set up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode: CS based at [`CODE_GPA`], data segments at [`DATA_GPA`].
    Real,
    /// 16-bit protected mode: the same bases, from 16-bit descriptors.
    Protected16,
    /// 32-bit protected mode, flat segments, no paging.
    Protected32,
    /// 32-bit paging with 4 MiB pages (CR4.PSE), identity map of 4 GiB.
    Paging32,
    /// PAE paging with 2 MiB pages, identity map of 4 GiB.
    Pae,
    /// Long mode (64-bit code), 4-level paging with 2 MiB pages, identity
    /// map of 4 GiB.
    Long,
}

impl Mode {
    /// Every mode, from real to long.
    pub const ALL: [Mode; 6] = [
        Mode::Real,
        Mode::Protected16,
        Mode::Protected32,
        Mode::Paging32,
        Mode::Pae,
        Mode::Long,
    ];

    /// Whether the mode uses an IDT at [`IDT_GPA`] (the 32- and 64-bit ones).
    pub fn has_idt(self) -> bool {
        !matches!(self, Mode::Real | Mode::Protected16)
    }
}

/// Every page table of every paging mode, as `(gpa, bytes)`: identity maps
/// of 0-4 GiB except that [`ALIAS_GVA`] maps to 0.
pub fn page_tables() -> Vec<(u64, Vec<u8>)> {
    let table64 = |entries: &mut dyn Iterator<Item = u64>| -> Vec<u8> {
        entries.flat_map(u64::to_le_bytes).collect()
    };
    let pd_page = |i: u64| PD_GPA + i * 0x1000;
    // 2 MiB pages (PAE and long mode): the PDE of `va`.
    let pde64 = |va: u64| {
        let pa = if va == ALIAS_GVA { 0 } else { va };
        pa | PTE_P | PTE_RW | PTE_PS
    };
    // 4 MiB pages (32-bit paging with CR4.PSE): 4-byte PDEs.
    let pde32 = |va: u64| {
        let pa = if va == ALIAS_GVA { 0 } else { va };
        u32::try_from(pa | PTE_P | PTE_RW | PTE_PS).unwrap_or(0)
    };
    vec![
        // Long mode: PML4[0] -> PDPT; PDPT[0..4] -> the four PDs.
        (
            PML4_GPA,
            table64(&mut [PDPT_GPA | PTE_P | PTE_RW].into_iter()),
        ),
        (
            PDPT_GPA,
            table64(&mut (0..4).map(|i| pd_page(i) | PTE_P | PTE_RW)),
        ),
        // The PDs, shared by long mode and PAE: 2 MiB pages, 0-4 GiB.
        (PD_GPA, table64(&mut (0..4 * 512).map(|i| pde64(i << 21)))),
        // PAE PDPTEs have no R/W bit (SDM Vol. 3A 4.4.1): present only.
        (
            PAE_PDPT_GPA,
            table64(&mut (0..4).map(|i| pd_page(i) | PTE_P)),
        ),
        // 32-bit paging: 1024 4 MiB pages, 0-4 GiB.
        (
            PD32_GPA,
            (0..1024u64)
                .flat_map(|i| pde32(i << 22).to_le_bytes())
                .collect(),
        ),
    ]
}

/// A segment register's hidden part, present, DPL 0.
fn segment(selector: Selector, base: u64, limit: u32, type_: u8, db: bool, l: bool) -> kvm_segment {
    kvm_segment {
        base,
        limit,
        selector: selector as u16,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(db),
        s: 1,
        l: u8::from(l),
        g: u8::from(limit > 0xf_ffff),
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// A real-mode segment at `base` (which must be a multiple of 16 below
/// 1 MiB: the selector is `base >> 4`), with a 64 KiB limit.
pub fn real_segment(base: u64, code: bool) -> kvm_segment {
    // Segment types: 0xb code execute/read accessed, 0x3 data read/write
    // accessed (SDM Vol. 3A 3.4.5.1).
    kvm_segment {
        base,
        limit: 0xffff,
        selector: u16::try_from(base >> 4).unwrap_or(0),
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        s: 1,
        ..Default::default()
    }
}

/// Sets `sregs` up for `mode` (on top of the vCPU's reset state).
pub fn setup_sregs(sregs: &mut kvm_sregs, mode: Mode) {
    // Segment types: 0xb code execute/read accessed, 0x3 data read/write
    // accessed (SDM Vol. 3A 3.4.5.1).
    match mode {
        Mode::Real => {
            sregs.cs = real_segment(CODE_GPA, true);
            sregs.ds = real_segment(DATA_GPA, false);
            sregs.es = sregs.ds;
            sregs.fs = sregs.ds;
            sregs.gs = sregs.ds;
            sregs.ss = real_segment(STACK_TOP - 0x10000, false);
        }
        Mode::Protected16 => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
            sregs.cs = segment(Selector::Code16, CODE_GPA, 0xffff, 0xb, false, false);
            sregs.ds = segment(Selector::Data16, DATA_GPA, 0xffff, 0x3, false, false);
            sregs.es = sregs.ds;
            sregs.fs = sregs.ds;
            sregs.gs = sregs.ds;
            sregs.ss = segment(
                Selector::Stack16,
                STACK_TOP - 0x10000,
                0xffff,
                0x3,
                false,
                false,
            );
        }
        Mode::Protected32 | Mode::Paging32 | Mode::Pae | Mode::Long => {
            let long = mode == Mode::Long;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
            sregs.cs = if long {
                segment(Selector::Code64, 0, 0xffff_ffff, 0xb, false, true)
            } else {
                segment(Selector::Code32, 0, 0xffff_ffff, 0xb, true, false)
            };
            sregs.ds = segment(Selector::Data, 0, 0xffff_ffff, 0x3, true, false);
            sregs.es = sregs.ds;
            sregs.fs = sregs.ds;
            sregs.gs = sregs.ds;
            sregs.ss = sregs.ds;
            // Busy TSS: type 0xb (32-bit and 64-bit alike), system segment.
            sregs.tr = kvm_segment {
                s: 0,
                g: 0,
                db: 0,
                ..segment(Selector::Tss, TSS_GPA, 0x67, 0xb, false, false)
            };
            match mode {
                Mode::Paging32 => {
                    sregs.cr4 = CR4_PSE;
                    sregs.cr3 = PD32_GPA;
                    sregs.cr0 |= CR0_PG | CR0_WP;
                }
                Mode::Pae => {
                    sregs.cr4 = CR4_PAE;
                    sregs.cr3 = PAE_PDPT_GPA;
                    sregs.cr0 |= CR0_PG | CR0_WP;
                }
                Mode::Long => {
                    sregs.cr4 = CR4_PAE;
                    sregs.cr3 = PML4_GPA;
                    sregs.cr0 |= CR0_PG | CR0_WP;
                    sregs.efer = EFER_LME | EFER_LMA;
                }
                _ => {}
            }
        }
    }
    let gdt_len = gdt().len() * 8;
    sregs.gdt.base = GDT_GPA;
    sregs.gdt.limit = u16::try_from(gdt_len - 1).unwrap_or(u16::MAX);
    if mode.has_idt() {
        sregs.idt.base = IDT_GPA;
        sregs.idt.limit = if mode == Mode::Long {
            256 * 16 - 1
        } else {
            256 * 8 - 1
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry64(bytes: &[u8], index: usize) -> u64 {
        u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap())
    }

    fn tables() -> std::collections::HashMap<u64, Vec<u8>> {
        page_tables().into_iter().collect()
    }

    #[test]
    fn tables_do_not_overlap_and_end_before_tables_end() {
        let mut ranges: Vec<(u64, u64)> = page_tables()
            .iter()
            .map(|(gpa, b)| (*gpa, gpa + b.len() as u64))
            .collect();
        ranges.push((GDT_GPA, GDT_GPA + gdt_bytes().len() as u64));
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "{w:x?} overlap");
        }
        assert!(ranges.iter().all(|r| r.1 <= TABLES_END));
    }

    #[test]
    fn paging_maps_identity_except_the_alias() {
        let t = tables();
        let pd = &t[&PD_GPA];
        let high = entry64(pd, usize::try_from(0xc000_0000_u64 >> 21).unwrap());
        assert_eq!(high, 0xc000_0000 | PTE_P | PTE_RW | PTE_PS);
        let alias = entry64(pd, usize::try_from(ALIAS_GVA >> 21).unwrap());
        assert_eq!(alias, PTE_P | PTE_RW | PTE_PS);
        // 32-bit paging has 4-byte entries: 1024 of them in one page.
        let pd32 = &t[&PD32_GPA];
        assert_eq!(pd32.len(), 4096);
        let e = |i: usize| u32::from_le_bytes(pd32[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(e(1), (1 << 22) | 0x83);
        assert_eq!(e(1023), 0x83, "the alias maps to 0");
        // PAE PDPTEs: present only (R/W is reserved there).
        let pdpt = &t[&PAE_PDPT_GPA];
        assert_eq!(entry64(pdpt, 3), (PD_GPA + 0x3000) | PTE_P);
    }

    #[test]
    fn gdt_descriptors() {
        let g = gdt();
        assert_eq!(g[Selector::Code64 as usize / 8], 0x00af_9b00_0000_ffff);
        assert_eq!(g[Selector::Data as usize / 8], 0x00cf_9300_0000_ffff);
        assert_eq!(g[Selector::Code32 as usize / 8], 0x00cf_9b00_0000_ffff);
        assert_eq!(g[Selector::Code16 as usize / 8], 0x0000_9b04_0000_ffff);
        assert_eq!(g[Selector::Tss as usize / 8], 0x0000_8b00_6000_0067);
    }

    #[test]
    fn long_mode_sregs() {
        let mut s = kvm_sregs::default();
        setup_sregs(&mut s, Mode::Long);
        assert_eq!(s.cr3, PML4_GPA);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!((s.cs.l, s.cs.db, s.cs.selector), (1, 0, 0x08));
        assert_eq!(s.idt.limit, 256 * 16 - 1);
        let mut r = kvm_sregs::default();
        setup_sregs(&mut r, Mode::Real);
        assert_eq!((r.cs.base, r.cs.selector), (CODE_GPA, 0x4000));
        assert_eq!(r.cr0 & CR0_PE, 0);
    }
}
