//! `module/x86/walk.rs`: the guest page-table walk, over page tables built
//! in a small fake guest memory for each paging mode (SDM Vol. 3A 4.3 to
//! 4.6).

use crate::x86::regs::{cr0, cr4, efer};
use crate::x86::walk::{Access, Paging, PagingMode, Translation, WalkError};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;
const ALL: u64 = P | RW | US;
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Guest memory of 1 MiB from GPA 0, where the page tables live; tables
/// are handed out from 0x1000 up.
struct Mem {
    bytes: Vec<u8>,
    next_table: u64,
}

impl Mem {
    fn new() -> Self {
        Self {
            bytes: vec![0; MIB as usize],
            next_table: 0x1000,
        }
    }

    fn alloc(&mut self) -> u64 {
        let t = self.next_table;
        self.next_table += 0x1000;
        t
    }

    fn write(&mut self, gpa: u64, len: usize, value: u64) {
        let at = gpa as usize;
        self.bytes[at..at + len].copy_from_slice(&value.to_le_bytes()[..len]);
    }

    fn read(&self, gpa: u64, len: usize) -> Option<u64> {
        assert!(len == 4 || len == 8, "read of {len} bytes");
        let at = usize::try_from(gpa).ok()?;
        let b = self.bytes.get(at..at.checked_add(len)?)?;
        let mut v = [0; 8];
        v[..len].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    }

    /// Maps `gva` in 8-byte-entry tables under `root` whose levels index
    /// the address at `shifts` (9 bits each): tables get `table_flags`,
    /// and the entry at `leaf_shift` maps `frame` with `leaf_flags` (and PS
    /// above the page table).
    fn map(
        &mut self,
        root: u64,
        gva: u64,
        shifts: &[u32],
        leaf_shift: u32,
        frame: u64,
        leaf_flags: u64,
        table_flags: u64,
    ) {
        let mut table = root;
        for &shift in shifts {
            let slot = table + 8 * ((gva >> shift) & 0x1ff);
            if shift == leaf_shift {
                let ps = if shift > 12 { PS } else { 0 };
                self.write(slot, 8, frame | leaf_flags | ps);
                return;
            }
            let e = self.read(slot, 8).unwrap();
            table = if e & P == 0 {
                let t = self.alloc();
                self.write(slot, 8, t | table_flags);
                t
            } else {
                e & 0x000f_ffff_ffff_f000
            };
        }
        panic!("leaf level {leaf_shift} not among {shifts:?}");
    }

    fn walk(&self, paging: &Paging, gva: u64, access: Access) -> Result<Translation, WalkError> {
        paging.translate(gva, access, |gpa, len| self.read(gpa, len))
    }
}

const READ: Access = Access {
    write: false,
    user: false,
    fetch: false,
};
const WRITE: Access = Access {
    write: true,
    ..READ
};
const FETCH: Access = Access {
    fetch: true,
    ..READ
};
const USER_READ: Access = Access { user: true, ..READ };
const USER_WRITE: Access = Access {
    user: true,
    ..WRITE
};

const LEVEL4: [u32; 4] = [39, 30, 21, 12];
const LEVEL5: [u32; 5] = [48, 39, 30, 21, 12];

fn paging(mode: PagingMode, cr3: u64) -> Paging {
    Paging {
        mode,
        cr3,
        wp: true,
        nxe: true,
    }
}

fn at(gpa: u64, page_size: u64) -> Result<Translation, WalkError> {
    Ok(Translation { gpa, page_size })
}

#[test]
fn the_mode_follows_cr0_cr4_and_efer() {
    let pg = cr0::PE | cr0::PG;
    let lm = efer::LME | efer::LMA;
    let mode = |cr0, cr4, efer| Paging::new(cr0, 0, cr4, efer).mode;
    assert_eq!(mode(cr0::PE, cr4::PAE, lm & !efer::LMA), PagingMode::Off);
    assert_eq!(mode(pg, 0, 0), PagingMode::Bits32 { pse: false });
    assert_eq!(mode(pg, cr4::PSE, 0), PagingMode::Bits32 { pse: true });
    assert_eq!(mode(pg, cr4::PAE, 0), PagingMode::Pae);
    assert_eq!(mode(pg, cr4::PAE, lm), PagingMode::Level4);
    assert_eq!(mode(pg, cr4::PAE | cr4::LA57, lm), PagingMode::Level5);
    let p = Paging::new(pg | cr0::WP, 0x1000, cr4::PAE, lm | efer::NXE);
    assert!(p.wp && p.nxe);
    assert_eq!(p.cr3, 0x1000);
    let p = Paging::new(pg, 0, cr4::PAE, lm);
    assert!(!p.wp && !p.nxe);
}

#[test]
fn without_paging_linear_is_physical_in_32_bits() {
    let m = Mem::new();
    let p = paging(PagingMode::Off, 0);
    assert_eq!(m.walk(&p, 0xfee0_0030, WRITE), at(0xfee0_0030, 4 * KIB));
    assert_eq!(m.walk(&p, 0x1_0000_1234, READ), at(0x1234, 4 * KIB));
}

#[test]
fn thirty_two_bit_paging_with_and_without_pse() {
    let mut m = Mem::new();
    let cr3 = 0x1000;
    // PDE 1 -> page table at 0x2000; PTE 1 -> frame 0x300000.
    m.write(cr3 + 4, 4, 0x2000 | ALL);
    m.write(0x2000 + 4, 4, 0x0030_0000 | ALL);
    // PDE 2 with PS: a 4 MiB page at 0x3_0080_0000 (PSE-36 bits 20:13 = 0b11 -> bits 33:32).
    let pde2 = 0x0080_0000 | (0b11 << 13) | PS | ALL;
    m.write(cr3 + 8, 4, pde2);
    let pse = paging(PagingMode::Bits32 { pse: true }, cr3);
    let gva = (1 << 22) | (1 << 12) | 0x234;
    assert_eq!(m.walk(&pse, gva, WRITE), at(0x0030_0234, 4 * KIB));
    // The upper half of the address is ignored outside long mode.
    assert_eq!(
        m.walk(&pse, gva | 0xffff_0000_0000_0000, READ),
        at(0x0030_0234, 4 * KIB)
    );
    let big = (2 << 22) | 0x12_3456;
    assert_eq!(m.walk(&pse, big, READ), at(0x3_0092_3456, 4 * MIB));
    // Without CR4.PSE the PS bit is ignored: the entry names a page table (here outside
    // guest memory, at bits 31:12 of the PDE).
    let no_pse = paging(PagingMode::Bits32 { pse: false }, cr3);
    assert_eq!(
        m.walk(&no_pse, big, READ),
        Err(WalkError::NoMemory {
            gpa: 0x0080_6000 + 4 * 0x123
        })
    );
    // 32-bit entries have no XD bit: a fetch is allowed with EFER.NXE set.
    assert_eq!(m.walk(&pse, gva, FETCH), at(0x0030_0234, 4 * KIB));
    // PDE 3 is not present.
    assert_eq!(m.walk(&pse, 3 << 22, READ), Err(WalkError::NotPresent));
}

#[test]
fn pae_paging_reads_the_pdptes_at_cr3_bits_31_5() {
    let mut m = Mem::new();
    // The PDPT is 32-byte aligned: CR3 0x1020 puts it at 0x1020.
    let cr3 = 0x1020;
    m.next_table = 0x3000;
    let pd = m.alloc();
    m.write(cr3 + 8 * 3, 8, pd | P);
    // The PD and PT below PDPTE 3 use the 9-bit levels at 21 and 12.
    m.map(pd, 0xc020_1abc, &[21, 12], 12, 0x1_2345_6000, ALL, ALL);
    m.map(pd, 0xc040_0000, &[21, 12], 21, 0x0060_0000, ALL, ALL);
    let p = paging(PagingMode::Pae, cr3);
    assert_eq!(m.walk(&p, 0xc020_1abc, WRITE), at(0x1_2345_6abc, 4 * KIB));
    assert_eq!(m.walk(&p, 0xc040_1234, READ), at(0x0060_1234, 2 * MIB));
    // PDPTE 0 is not present.
    assert_eq!(m.walk(&p, 0x1000, READ), Err(WalkError::NotPresent));
    // PDPTEs carry no rights: the PDE and PTE decide.
    assert_eq!(
        m.walk(&p, 0xc020_1abc, USER_WRITE),
        at(0x1_2345_6abc, 4 * KIB)
    );
}

#[test]
fn four_level_paging_with_2m_and_1g_pages() {
    let mut m = Mem::new();
    let cr3 = m.alloc();
    let p = paging(PagingMode::Level4, cr3 | 0x18); // PWT/PCD in CR3 bits 4:3 are not address bits.
    let k = 0xffff_8000_0020_3456;
    m.map(cr3, k, &LEVEL4, 12, 0xabc_d000, ALL, ALL);
    m.map(cr3, 0x4000_0000, &LEVEL4, 21, 0x0080_0000, ALL, ALL);
    m.map(cr3, 0x80_0000_0000, &LEVEL4, 30, 0x1_c000_0000, ALL, ALL);
    assert_eq!(m.walk(&p, k, READ), at(0xabc_d456, 4 * KIB));
    assert_eq!(m.walk(&p, 0x401f_fff0, WRITE), at(0x009f_fff0, 2 * MIB));
    assert_eq!(m.walk(&p, 0x80_1234_5678, READ), at(0x1_d234_5678, GIB));
    let t = m.walk(&p, 0x401f_fff0, READ).unwrap();
    assert_eq!(t.bytes_to_page_end(), 0x10);
    // Unmapped addresses: a missing PDPT entry, a missing PTE next to a mapped one.
    assert_eq!(m.walk(&p, 0x1000, READ), Err(WalkError::NotPresent));
    assert_eq!(m.walk(&p, k + 0x1000, READ), Err(WalkError::NotPresent));
    // Non-canonical with 48 bits.
    assert_eq!(
        m.walk(&p, 0x0000_8000_0000_0000, READ),
        Err(WalkError::NonCanonical)
    );
    assert_eq!(
        m.walk(&p, 0xfff0_0000_0000_0000, READ),
        Err(WalkError::NonCanonical)
    );
    // A root outside guest memory.
    let far = paging(PagingMode::Level4, 0x4000_0000);
    assert_eq!(
        m.walk(&far, k, READ),
        Err(WalkError::NoMemory {
            gpa: 0x4000_0000 + 8 * 256
        })
    );
}

#[test]
fn five_level_paging_has_57_bit_addresses() {
    let mut m = Mem::new();
    let cr3 = m.alloc();
    let gva = 0x0001_0000_0000_1234; // PML5 index 1, canonical only with 57 bits.
    m.map(cr3, gva, &LEVEL5, 12, 0x5000_0000, ALL, ALL);
    let p5 = paging(PagingMode::Level5, cr3);
    assert_eq!(m.walk(&p5, gva, READ), at(0x5000_0234, 4 * KIB));
    let p4 = paging(PagingMode::Level4, cr3);
    assert_eq!(m.walk(&p4, gva, READ), Err(WalkError::NonCanonical));
    assert_eq!(
        m.walk(&p5, 0x0100_0000_0000_0000, READ),
        Err(WalkError::NonCanonical)
    );
}

#[test]
fn read_only_pages_refuse_writes_supervisor_ones_only_with_wp() {
    let mut m = Mem::new();
    let cr3 = m.alloc();
    m.map(cr3, 0x1000, &LEVEL4, 12, 0x9000, P | US, ALL);
    // RW clear in a table above a writable PTE counts too.
    m.map(cr3, 0x80_0000_0000, &LEVEL4, 12, 0xa000, ALL, P | US);
    let wp = paging(PagingMode::Level4, cr3);
    let no_wp = Paging { wp: false, ..wp };
    for gva in [0x1000, 0x80_0000_0000] {
        assert!(m.walk(&wp, gva, READ).is_ok());
        assert!(m.walk(&wp, gva, USER_READ).is_ok());
        assert_eq!(m.walk(&wp, gva, WRITE), Err(WalkError::Protection));
        assert_eq!(m.walk(&wp, gva, USER_WRITE), Err(WalkError::Protection));
        // CR0.WP clear: supervisor writes ignore R/W; user writes still fault.
        assert!(m.walk(&no_wp, gva, WRITE).is_ok());
        assert_eq!(m.walk(&no_wp, gva, USER_WRITE), Err(WalkError::Protection));
    }
}

#[test]
fn user_accesses_need_us_at_every_level() {
    let mut m = Mem::new();
    let cr3 = m.alloc();
    m.map(cr3, 0x1000, &LEVEL4, 12, 0x9000, P | RW, ALL);
    m.map(cr3, 0x80_0000_0000, &LEVEL4, 21, 0x20_0000, ALL, P | RW);
    let p = paging(PagingMode::Level4, cr3);
    for gva in [0x1000, 0x80_0000_0000] {
        assert!(m.walk(&p, gva, WRITE).is_ok());
        assert_eq!(m.walk(&p, gva, USER_READ), Err(WalkError::Protection));
        let user_fetch = Access {
            user: true,
            ..FETCH
        };
        assert_eq!(m.walk(&p, gva, user_fetch), Err(WalkError::Protection));
    }
    // Supervisor accesses to user pages are allowed (SMEP and SMAP are not modelled).
    m.map(cr3, 0x2000, &LEVEL4, 12, 0xa000, ALL, ALL);
    assert!(m.walk(&p, 0x2000, FETCH).is_ok());
}

#[test]
fn xd_forbids_fetches_only_with_efer_nxe() {
    let mut m = Mem::new();
    let cr3 = m.alloc();
    m.map(cr3, 0x1000, &LEVEL4, 12, 0x9000, ALL | XD, ALL);
    // XD in a table entry covers everything below it.
    m.map(cr3, 0x80_0000_0000, &LEVEL4, 12, 0xa000, ALL, ALL | XD);
    let nxe = paging(PagingMode::Level4, cr3);
    let no_nxe = Paging { nxe: false, ..nxe };
    for gva in [0x1000, 0x80_0000_0000] {
        assert_eq!(m.walk(&nxe, gva, FETCH), Err(WalkError::Protection));
        assert!(m.walk(&nxe, gva, READ).is_ok());
        assert!(m.walk(&nxe, gva, WRITE).is_ok());
        assert!(m.walk(&no_nxe, gva, FETCH).is_ok());
    }
    // The XD bit is not an address bit.
    assert_eq!(m.walk(&nxe, 0x1000, READ), at(0x9000, 4 * KIB));
}
