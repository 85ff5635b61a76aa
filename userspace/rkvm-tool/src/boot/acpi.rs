//! The ACPI tables `rkvm boot` gives a Linux guest: just enough firmware
//! for the kernel to find its CPUs and interrupt controllers, and to power
//! the machine off.
//!
//! - RSDP ("RSD PTR "): where the XSDT is (ACPI 6.5 5.2.5).
//! - XSDT: the list of the other tables (5.2.8).
//! - FADT ("FACP"): the fixed hardware, here PM1a's event and control
//!   blocks (writing SLP_EN to PM1a_CNT is how Linux powers off), the
//!   reset register (how it reboots), the SCI's IRQ, and IA-PC boot flags
//!   that say there is no i8042, no VGA and no CMOS clock (5.2.9).
//! - DSDT: AML with one object, `\_S5_`, the sleep type of "soft off",
//!   without which Linux does not offer ACPI power-off (5.2.11.1, 7.4.2).
//! - MADT ("APIC"): a local APIC per vCPU, the IOAPIC, and the SCI's
//!   interrupt source override (5.2.12).
//!
//! No SMI command port: the machine is in ACPI mode from the start (ACPICA's
//! `acpi_hw_get_mode` reads a zero SMI_CMD that way). The tables are built
//! here as bytes, checksummed, and copied into the reserved BIOS area.

/// Where the tables go: the BIOS area, which Linux also scans for the RSDP.
pub(crate) const TABLES: u64 = 0xe_0000;
/// PM1a event block: 2 bytes of status, 2 of enable (ACPI 4.8.3.1).
pub(crate) const PM1A_EVT: u16 = 0x600;
/// PM1a control block: SCI_EN, SLP_TYP, SLP_EN (ACPI 4.8.3.2).
pub(crate) const PM1A_CNT: u16 = 0x604;
/// The reset register: writing [`RESET_VALUE`] resets the machine.
pub(crate) const RESET_PORT: u16 = 0x606;
/// The value the reset register takes.
pub(crate) const RESET_VALUE: u8 = 0x1;
/// The SCI's ISA IRQ (as PIIX4's).
pub(crate) const SCI_IRQ: u8 = 9;
/// PM1_CNT bit 0: SCI_EN, the machine is in ACPI mode.
pub(crate) const PM1_SCI_EN: u16 = 1 << 0;
/// PM1_CNT bit 13: SLP_EN, enter the sleep state in SLP_TYP.
pub(crate) const PM1_SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits 12:10: SLP_TYP.
pub(crate) const PM1_SLP_TYP_SHIFT: u16 = 10;
/// The SLP_TYP value `\_S5_` names for soft off.
pub(crate) const S5_SLP_TYP: u8 = 5;
/// The local APICs' physical address (every x86 since the P6).
pub(crate) const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The IOAPIC's physical address (KVM's in-kernel IOAPIC is there).
pub(crate) const IOAPIC_ADDR: u32 = 0xfec0_0000;

const OEM_ID: &[u8; 6] = b"RKVM  ";
const OEM_TABLE_ID: &[u8; 8] = b"RKVMBOOT";
const CREATOR: &[u8; 4] = b"RKVM";

// Each table's offset from TABLES (room enough for 8 vCPUs' MADT).
const RSDP_OFF: u64 = 0x0;
const XSDT_OFF: u64 = 0x40;
const FADT_OFF: u64 = 0x100;
const DSDT_OFF: u64 = 0x300;
const MADT_OFF: u64 = 0x400;

/// Makes the bytes of `t` sum to zero by setting the one at `at`.
fn checksum(t: &mut [u8], at: usize) {
    t[at] = 0;
    let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    t[at] = sum.wrapping_neg();
}

/// A system description table: the 36-byte header (ACPI 5.2.6), `body`,
/// and the checksum.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(
        &u32::try_from(36 + body.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(CREATOR);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    checksum(&mut t, 9);
    t
}

/// A Generic Address Structure for `width` bits at I/O port `port`
/// (ACPI 5.2.3.2).
fn io_gas(port: u16, width: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O space
    g[1] = width;
    g[3] = width / 8; // access size: 1 byte, 2 bytes, ...
    g[4..6].copy_from_slice(&port.to_le_bytes());
    g
}

fn put<const N: usize>(b: &mut [u8], off: usize, v: [u8; N]) {
    b[off..off + N].copy_from_slice(&v);
}

/// The FADT's body (after the header): revision 6, 276 bytes in all.
fn fadt_body(dsdt: u64) -> Vec<u8> {
    // Offsets are the table's (ACPI 6.5 Table 5.9) less the 36-byte header.
    let mut b = vec![0u8; 276 - 36];
    let at = |off: usize| off - 36;
    put(
        &mut b,
        at(40),
        u32::try_from(dsdt).unwrap_or(0).to_le_bytes(),
    );
    put(&mut b, at(46), u16::from(SCI_IRQ).to_le_bytes());
    put(&mut b, at(56), u32::from(PM1A_EVT).to_le_bytes());
    put(&mut b, at(64), u32::from(PM1A_CNT).to_le_bytes());
    b[at(88)] = 4; // PM1_EVT_LEN
    b[at(89)] = 2; // PM1_CNT_LEN
    // C2 and C3 latencies above 100 and 1000 us: neither is supported.
    put(&mut b, at(96), 101u16.to_le_bytes());
    put(&mut b, at(98), 1001u16.to_le_bytes());
    // IA-PC boot architecture flags (Table 5.11): VGA not present (bit 2),
    // MSI not supported (3: no PCI), CMOS RTC not present (5). Bits 0 and
    // 1 clear: no legacy ISA devices to enumerate, no 8042.
    put(
        &mut b,
        at(109),
        ((1u16 << 2) | (1 << 3) | (1 << 5)).to_le_bytes(),
    );
    // Flags (Table 5.10): WBINVD (0), C1 on all CPUs (2), power and sleep
    // buttons are not fixed features (4, 5), RESET_REG_SUP (10).
    put(
        &mut b,
        at(112),
        ((1u32 << 0) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 10)).to_le_bytes(),
    );
    put(&mut b, at(116), io_gas(RESET_PORT, 8));
    b[at(128)] = RESET_VALUE;
    b[at(131)] = 5; // FADT minor version: ACPI 6.5
    put(&mut b, at(140), dsdt.to_le_bytes()); // X_DSDT
    b
}

/// The DSDT's AML: `Name (_S5_, Package (4) { 5, 5, 0, 0 })` (ACPI 20.2.5.1
/// NameOp, 20.2.5.4 PackageOp): SLP_TYP for PM1a and PM1b, two reserved.
fn dsdt_aml() -> Vec<u8> {
    let typ = S5_SLP_TYP;
    vec![
        0x08, b'_', b'S', b'5', b'_', // NameOp "_S5_"
        0x12, 0x08, 0x04, // PackageOp, PkgLength 8, 4 elements
        0x0a, typ, 0x0a, typ, // BytePrefix 5, BytePrefix 5
        0x00, 0x00, // ZeroOp, ZeroOp
    ]
}

/// The MADT's body: the local APIC address and PCAT_COMPAT (there are
/// 8259 PICs), then a Processor Local APIC per vCPU (ACPI and APIC IDs
/// 0..cpus), the I/O APIC with GSIs from 0, and the SCI as a level-
/// triggered, active-high interrupt (as PIIX4's, and KVM's irqchip).
fn madt_body(cpus: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for id in 0..cpus {
        // Type 0, length 8: processor UID, APIC ID, flags (1: enabled).
        let id = u8::try_from(id).unwrap_or(u8::MAX);
        b.extend_from_slice(&[0, 8, id, id]);
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    // Type 1, length 12: I/O APIC ID 0, reserved, address, GSI base.
    b.extend_from_slice(&[1, 12, 0, 0]);
    b.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    // Type 2, length 10: bus 0 (ISA), source IRQ, GSI, flags (MPS INTI:
    // polarity 01 active high, trigger 11 level).
    b.extend_from_slice(&[2, 10, 0, SCI_IRQ]);
    b.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
    b.extend_from_slice(&0x000du16.to_le_bytes());
    b
}

/// The RSDP, revision 2, pointing at the XSDT (ACPI 5.2.5.3).
fn rsdp(xsdt: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes, below
    r.extend_from_slice(OEM_ID);
    r.push(2); // revision: ACPI 2.0 and later
    r.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt.to_le_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]); // extended checksum, reserved
    checksum(&mut r[..20], 8);
    checksum(&mut r, 32);
    r
}

/// Every table for a machine with `cpus` vCPUs, as `(gpa, bytes)`; the
/// RSDP is at [`TABLES`].
pub(crate) fn tables(cpus: u32) -> Vec<(u64, Vec<u8>)> {
    let fadt = TABLES + FADT_OFF;
    let madt = TABLES + MADT_OFF;
    let dsdt = TABLES + DSDT_OFF;
    let xsdt_body: Vec<u8> = [fadt, madt].iter().flat_map(|a| a.to_le_bytes()).collect();
    vec![
        (TABLES + RSDP_OFF, rsdp(TABLES + XSDT_OFF)),
        (TABLES + XSDT_OFF, table(b"XSDT", 1, &xsdt_body)),
        (fadt, table(b"FACP", 6, &fadt_body(dsdt))),
        (dsdt, table(b"DSDT", 2, &dsdt_aml())),
        (madt, table(b"APIC", 5, &madt_body(cpus))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off + 4)) << 32)
    }

    #[test]
    fn every_table_checksums_and_fits_its_slot() {
        let t = tables(8);
        for (i, (gpa, bytes)) in t.iter().enumerate() {
            assert_eq!(sum(bytes), 0, "table at {gpa:#x}");
            if let Some((next, _)) = t.get(i + 1) {
                assert!(
                    gpa + bytes.len() as u64 <= *next,
                    "table at {gpa:#x} overlaps"
                );
            }
            if i > 0 {
                assert_eq!(u32_at(bytes, 4) as usize, bytes.len(), "length field");
            }
        }
        // The RSDP's first 20 bytes checksum on their own (ACPI 1.0's).
        assert_eq!(sum(&t[0].1[..20]), 0);
        assert!(t.last().map(|(a, b)| a + b.len() as u64).unwrap_or(0) <= TABLES + 0x1000);
    }

    #[test]
    fn the_rsdp_leads_to_the_fadt_and_madt_and_the_fadt_to_the_dsdt() {
        let t = tables(2);
        let at = |gpa: u64| &t.iter().find(|(a, _)| *a == gpa).unwrap().1;
        let rsdp = at(TABLES);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        let xsdt = at(u64_at(rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        let fadt = at(u64_at(xsdt, 36));
        let madt = at(u64_at(xsdt, 44));
        assert_eq!(&fadt[..4], b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!(&madt[..4], b"APIC");
        let dsdt = at(u64_at(fadt, 140));
        assert_eq!(u64::from(u32_at(fadt, 40)), u64_at(fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(&dsdt[36..41], b"\x08_S5_");
        assert_eq!(u32_at(fadt, 64), u32::from(PM1A_CNT));
        assert_eq!(
            fadt[116..118],
            [1, 8],
            "reset register in I/O space, 8 bits"
        );
    }

    #[test]
    fn the_madt_has_a_local_apic_per_cpu_and_the_ioapic() {
        let t = tables(3);
        let madt = &t.iter().find(|(_, b)| &b[..4] == b"APIC").unwrap().1;
        assert_eq!(u32_at(madt, 36), LAPIC_ADDR);
        let mut off = 44;
        let mut apic_ids = Vec::new();
        let mut ioapics = 0;
        while off < madt.len() {
            let (kind, len) = (madt[off], usize::from(madt[off + 1]));
            match kind {
                0 => apic_ids.push(madt[off + 3]),
                1 => {
                    ioapics += 1;
                    assert_eq!(u32_at(madt, off + 4), IOAPIC_ADDR);
                }
                _ => {}
            }
            off += len;
        }
        assert_eq!(off, madt.len(), "entries fill the table exactly");
        assert_eq!(apic_ids, [0, 1, 2]);
        assert_eq!(ioapics, 1);
    }
}
