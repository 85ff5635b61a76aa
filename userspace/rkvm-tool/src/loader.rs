//! Guest images: a flat binary copied to one address, or a static ELF
//! executable whose `PT_LOAD` segments go to their physical addresses.
//! Pure logic: it turns file bytes into what to copy where, and checks
//! that it fits in guest memory.

/// A guest image, ready to be copied into guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Image {
    /// What goes where: `(guest-physical address, bytes)`. Bytes past a
    /// segment's file size (`.bss`) are zero in fresh guest memory and
    /// are included here as zeros so that the range is checked too.
    pub(crate) segments: Vec<(u64, Vec<u8>)>,
    /// Where the first vCPU instruction is (a guest-physical address).
    pub(crate) entry: u64,
    /// What the file is.
    pub(crate) kind: ImageKind,
}

/// The kind of guest file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImageKind {
    /// Raw bytes.
    Flat,
    /// An ELFCLASS32 executable for i386.
    Elf32,
    /// An ELFCLASS64 executable for x86-64.
    Elf64,
}

/// ELF identification and header fields (System V ABI, "ELF Header").
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
/// A loadable segment (program header type).
const PT_LOAD: u32 = 1;
/// Refuse images whose segments add up to more than this (a corrupt
/// header must not make rkvm allocate gigabytes).
const MAX_IMAGE: u64 = 3 << 30;

/// Whether `bytes` start like an ELF file.
pub(crate) fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(ELF_MAGIC)
}

/// A flat binary loaded at `load`, which is also its entry point.
pub(crate) fn flat(bytes: &[u8], load: u64) -> Image {
    Image {
        segments: vec![(load, bytes.to_vec())],
        entry: load,
        kind: ImageKind::Flat,
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// One program header's fields that matter here.
struct Phdr {
    kind: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// Parses a static little-endian x86 ELF executable (32- or 64-bit).
pub(crate) fn elf(bytes: &[u8]) -> Result<Image, String> {
    let bad = |what: &str| format!("not a loadable x86 ELF executable: {what}");
    if !is_elf(bytes) {
        return Err(bad("no ELF magic"));
    }
    let class = *bytes.get(4).ok_or_else(|| bad("truncated header"))?;
    if bytes.get(5) != Some(&ELFDATA2LSB) {
        return Err(bad("not little-endian"));
    }
    let hdr = |r: Option<u64>| r.ok_or_else(|| bad("truncated header"));
    let e_type = hdr(u16_at(bytes, 16).map(u64::from))?;
    let machine = hdr(u16_at(bytes, 18).map(u64::from))?;
    // The header layouts differ from e_entry on (System V ABI, ELF Header).
    let (kind, want_machine, entry, phoff, phentsize, phnum) = match class {
        ELFCLASS64 => (
            ImageKind::Elf64,
            EM_X86_64,
            hdr(u64_at(bytes, 24))?,
            hdr(u64_at(bytes, 32))?,
            hdr(u16_at(bytes, 54).map(u64::from))?,
            hdr(u16_at(bytes, 56).map(u64::from))?,
        ),
        ELFCLASS32 => (
            ImageKind::Elf32,
            EM_386,
            hdr(u32_at(bytes, 24).map(u64::from))?,
            hdr(u32_at(bytes, 28).map(u64::from))?,
            hdr(u16_at(bytes, 42).map(u64::from))?,
            hdr(u16_at(bytes, 44).map(u64::from))?,
        ),
        _ => return Err(bad("unknown ELF class")),
    };
    if e_type != u64::from(ET_EXEC) {
        return Err(bad(
            "not an executable (ET_EXEC); link it with -static and no PIE",
        ));
    }
    if machine != u64::from(want_machine) {
        return Err(bad("not built for x86"));
    }
    let mut segments = Vec::new();
    let mut total = 0u64;
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .and_then(|a| usize::try_from(a).ok())
            .ok_or_else(|| bad("program headers out of range"))?;
        let ph = |r: Option<u64>| r.ok_or_else(|| bad("program header past the end of the file"));
        let p = match kind {
            ImageKind::Elf64 => Phdr {
                kind: u32_at(bytes, at)
                    .ok_or_else(|| bad("program header past the end of the file"))?,
                offset: ph(u64_at(bytes, at + 8))?,
                paddr: ph(u64_at(bytes, at + 24))?,
                filesz: ph(u64_at(bytes, at + 32))?,
                memsz: ph(u64_at(bytes, at + 40))?,
            },
            _ => Phdr {
                kind: u32_at(bytes, at)
                    .ok_or_else(|| bad("program header past the end of the file"))?,
                offset: ph(u32_at(bytes, at + 4).map(u64::from))?,
                paddr: ph(u32_at(bytes, at + 12).map(u64::from))?,
                filesz: ph(u32_at(bytes, at + 16).map(u64::from))?,
                memsz: ph(u32_at(bytes, at + 20).map(u64::from))?,
            },
        };
        if p.kind != PT_LOAD || p.memsz == 0 {
            continue;
        }
        if p.filesz > p.memsz {
            return Err(bad("a segment's file size exceeds its memory size"));
        }
        total = total.saturating_add(p.memsz);
        if total > MAX_IMAGE {
            return Err(bad("segments larger than 3 GiB"));
        }
        let data = p
            .offset
            .checked_add(p.filesz)
            .and_then(|end| bytes.get(usize::try_from(p.offset).ok()?..usize::try_from(end).ok()?))
            .ok_or_else(|| bad("a segment reaches past the end of the file"))?;
        let mut seg = data.to_vec();
        seg.resize(
            usize::try_from(p.memsz).map_err(|_| bad("segment too large"))?,
            0,
        );
        segments.push((p.paddr, seg));
    }
    if segments.is_empty() {
        return Err(bad("no PT_LOAD segment"));
    }
    Ok(Image {
        segments,
        entry,
        kind,
    })
}

impl Image {
    /// Checks that every segment lies in `[lowest, mem)` of guest memory;
    /// the error says which part does not.
    pub(crate) fn check_fits(&self, lowest: u64, mem: u64) -> Result<(), String> {
        for (gpa, bytes) in &self.segments {
            let end = gpa.checked_add(bytes.len() as u64);
            if end.is_none_or(|e| e > mem) {
                return Err(format!(
                    "{} bytes at {gpa:#x} do not fit in {} of guest memory: give a larger --mem{}",
                    bytes.len(),
                    crate::human_size(mem),
                    if self.kind == ImageKind::Flat {
                        " or a lower --load"
                    } else {
                        ""
                    }
                ));
            }
            if *gpa < lowest {
                return Err(format!(
                    "{gpa:#x} is below {lowest:#x}, where rkvm keeps the GDT and page tables: \
                     load the guest higher"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 executable with one segment of `code` at `paddr`
    /// (plus `bss` zero bytes) and entry `entry`.
    fn elf64(code: &[u8], paddr: u64, bss: u64, entry: u64) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(ELF_MAGIC);
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        f[ph + 16..ph + 24].copy_from_slice(&(paddr + 0xffff_8000_0000_0000).to_le_bytes());
        f[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64 + bss).to_le_bytes());
        f.extend_from_slice(code);
        f
    }

    #[test]
    fn flat_binaries_load_where_asked() {
        let img = flat(&[0xf4], 0x100000);
        assert_eq!(img.entry, 0x100000);
        assert_eq!(img.segments, vec![(0x100000, vec![0xf4])]);
        assert!(!is_elf(&[0xf4]));
    }

    #[test]
    fn elf64_segments_go_to_their_physical_address() {
        let f = elf64(&[0x90, 0xf4], 0x200000, 3, 0x200001);
        assert!(is_elf(&f));
        let img = elf(&f).unwrap();
        assert_eq!(img.kind, ImageKind::Elf64);
        assert_eq!(img.entry, 0x200001);
        assert_eq!(img.segments, vec![(0x200000, vec![0x90, 0xf4, 0, 0, 0])]);
        assert!(img.check_fits(0x18000, 4 << 20).is_ok());
    }

    #[test]
    fn bad_elves_are_refused_with_a_reason() {
        let mut f = elf64(&[0xf4], 0x200000, 0, 0x200000);
        f[18] = 40; // EM_ARM
        assert!(elf(&f).unwrap_err().contains("not built for x86"));
        let mut f = elf64(&[0xf4], 0x200000, 0, 0x200000);
        f[16] = 3; // ET_DYN
        assert!(elf(&f).unwrap_err().contains("ET_EXEC"));
        let f = elf64(&[0xf4], 0x200000, 0, 0x200000);
        assert!(elf(&f[..f.len() - 1]).unwrap_err().contains("past the end"));
        assert!(elf(&f[..40]).unwrap_err().contains("truncated"));
        let mut g = f.clone();
        g[4] = 3;
        assert!(elf(&g).unwrap_err().contains("class"));
    }

    #[test]
    fn fitting() {
        let img = flat(&[0; 4096], 0x100000);
        assert!(img.check_fits(0x18000, 0x101000).is_ok());
        let e = img.check_fits(0x18000, 0x100800).unwrap_err();
        assert!(e.contains("do not fit") && e.contains("--load"), "{e}");
        let low = flat(&[0; 16], 0x1000);
        assert!(
            low.check_fits(0x18000, 1 << 20)
                .unwrap_err()
                .contains("below")
        );
    }
}
