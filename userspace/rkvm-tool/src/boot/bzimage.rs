//! Linux's x86 boot protocol, the loader's side: read a bzImage's setup
//! header, place the protected-mode kernel, the command line and the
//! initrd, and fill in the "zero page" (`struct boot_params`) that the
//! kernel's 64-bit entry point reads through RSI.
//!
//! The layout is `Documentation/arch/x86/boot.rst` of the kernel tree
//! ("THE REAL-MODE KERNEL HEADER", "64-bit BOOT PROTOCOL") and
//! `arch/x86/include/uapi/asm/bootparam.h`. Offsets below are from the
//! start of the file and of the zero page, which share the setup header's
//! place (0x1f1).

/// Where the zero page goes in guest memory.
pub(crate) const ZERO_PAGE: u64 = 0x7000;
/// Where the command line goes (below the EBDA, above the zero page).
pub(crate) const CMDLINE: u64 = 0x2_0000;
/// The most command line this loader places (the kernel's own limit,
/// `cmdline_size`, may be smaller; it is checked too).
pub(crate) const CMDLINE_MAX: usize = 0x1_0000;
/// Where the protected-mode kernel goes: 1 MiB, as every loader does.
pub(crate) const KERNEL_LOAD: u64 = 0x10_0000;
/// The 64-bit entry point's offset in the protected-mode kernel.
pub(crate) const ENTRY_64_OFFSET: u64 = 0x200;

// The setup header's fields (boot.rst, "The Real-Mode Kernel Header").
const SETUP_SECTS: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const JUMP_END: usize = 0x201;
const HEADER: usize = 0x202;
const VERSION: usize = 0x206;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const CMD_LINE_PTR: usize = 0x228;
const INITRD_ADDR_MAX: usize = 0x22c;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;
// struct boot_params outside the header (bootparam.h).
const ACPI_RSDP_ADDR: usize = 0x070;
const E820_ENTRIES: usize = 0x1e8;
const E820_TABLE: usize = 0x2d0;
/// Where the setup header's room in the zero page ends (`_pad7`).
const HEADER_LIMIT: usize = 0x290;
/// Entries the zero page holds (`E820_MAX_ENTRIES_ZEROPAGE`).
const E820_MAX: usize = 128;

/// Boot protocol 2.12: the first with `xloadflags` (64-bit entry); 2.14
/// added `acpi_rsdp_addr`, which this loader also fills (older kernels
/// ignore it and find the RSDP by scanning the BIOS area, where it is too).
const MIN_VERSION: u16 = 0x020c;
/// `xloadflags` bit 0: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` bit 0: the protected-mode kernel is loaded at 1 MiB.
const LOADED_HIGH: u8 = 1 << 0;
/// `type_of_loader` for a loader without an assigned ID.
const LOADER_UNDEFINED: u8 = 0xff;

/// The e820 memory types (ACPI 6.5 Table 15.1, "Address Range Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum E820Type {
    /// Memory the operating system may use.
    Ram = 1,
    /// Reserved: firmware, the legacy BIOS area, device memory.
    Reserved = 2,
}

/// One range of the machine's memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct E820Entry {
    /// Guest-physical start.
    pub(crate) addr: u64,
    /// Length in bytes.
    pub(crate) size: u64,
    /// What the range is.
    pub(crate) kind: E820Type,
}

/// A bzImage, checked and split into what goes where.
#[derive(Debug)]
pub(crate) struct Kernel<'a> {
    /// The setup header, copied into the zero page at 0x1f1.
    header: &'a [u8],
    /// The protected-mode kernel, loaded at [`KERNEL_LOAD`].
    pub(crate) image: &'a [u8],
    /// The kernel's `cmdline_size`: the longest command line it reads.
    cmdline_size: u32,
    /// `initrd_addr_max`: the highest address the initrd may reach.
    initrd_addr_max: u32,
    /// `init_size`: how much memory from where it runs the kernel needs
    /// while it decompresses and starts.
    init_size: u32,
    /// `pref_address`: where the kernel runs. A relocatable kernel loaded
    /// lower (at 1 MiB, as here) decompresses itself there, not lower
    /// (`arch/x86/boot/compressed/head_64.S`, LOAD_PHYSICAL_ADDR).
    pref_address: u64,
    /// The boot protocol version, as `major.minor`.
    pub(crate) version: (u8, u8),
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl<'a> Kernel<'a> {
    /// Checks that `file` is a bzImage this loader can start in 64-bit
    /// mode; the error says what is wrong with it.
    pub(crate) fn parse(file: &'a [u8]) -> Result<Self, String> {
        if file.len() < 0x400 {
            return Err(format!(
                "not a Linux kernel image: {} bytes is too small for a bzImage",
                file.len()
            ));
        }
        if u16_at(file, BOOT_FLAG) != 0xaa55 || &file[HEADER..HEADER + 4] != b"HdrS" {
            return Err("not a Linux bzImage: no boot sector signature or \"HdrS\" header".into());
        }
        let version = u16_at(file, VERSION);
        if version < MIN_VERSION {
            return Err(format!(
                "boot protocol {}.{:02} is too old: rkvm boot needs 2.12 or later (Linux 3.8+)",
                version >> 8,
                version & 0xff
            ));
        }
        if u16_at(file, XLOADFLAGS) & XLF_KERNEL_64 == 0 {
            return Err("the kernel has no 64-bit entry point (a 32-bit kernel?)".into());
        }
        let header_end = HEADER + usize::from(file[JUMP_END]);
        // A setup_sects of 0 means 4 (boot.rst); the boot sector is one more.
        let sects = match file[SETUP_SECTS] {
            0 => 4,
            n => usize::from(n),
        };
        let setup_len = (sects + 1) * 512;
        if !(INIT_SIZE + 4..=HEADER_LIMIT).contains(&header_end) || setup_len >= file.len() {
            return Err("malformed bzImage: its setup header's sizes do not fit the file".into());
        }
        Ok(Self {
            header: &file[SETUP_SECTS..header_end],
            image: &file[setup_len..],
            cmdline_size: u32_at(file, CMDLINE_SIZE),
            initrd_addr_max: u32_at(file, INITRD_ADDR_MAX),
            init_size: u32_at(file, INIT_SIZE),
            pref_address: u64::from(u32_at(file, PREF_ADDRESS))
                | (u64::from(u32_at(file, PREF_ADDRESS + 4)) << 32),
            version: (version.to_be_bytes()[0], version.to_be_bytes()[1]),
        })
    }

    /// The first address above the kernel while it starts: above the
    /// image loaded at 1 MiB and above `init_size` bytes from where it
    /// decompresses to.
    pub(crate) fn end(&self) -> u64 {
        let runs_at = self.pref_address.max(KERNEL_LOAD);
        (KERNEL_LOAD + self.image.len() as u64).max(runs_at.saturating_add(self.init_size.into()))
    }

    /// Checks a command line against the kernel's limit.
    pub(crate) fn check_cmdline(&self, cmdline: &str) -> Result<(), String> {
        let limit = (self.cmdline_size as usize).min(CMDLINE_MAX - 1);
        if cmdline.len() > limit {
            return Err(format!(
                "the command line is {} bytes; this kernel reads at most {limit}",
                cmdline.len()
            ));
        }
        if cmdline.contains('\0') {
            return Err("the command line contains a NUL byte".into());
        }
        Ok(())
    }

    /// Where an initrd of `len` bytes goes: page-aligned, as high as the
    /// guest's RAM below `ram_top` and the kernel's `initrd_addr_max`
    /// allow, above the kernel. `None` if it does not fit.
    pub(crate) fn initrd_address(&self, len: u64, ram_top: u64) -> Option<u64> {
        let limit = ram_top.min(u64::from(self.initrd_addr_max) + 1);
        let addr = limit.checked_sub(len)? & !0xfff;
        (addr >= self.end().next_multiple_of(0x1000)).then_some(addr)
    }

    /// The zero page: the kernel's setup header with the loader's fields
    /// filled in, the memory map, and where the initrd and ACPI's RSDP are.
    pub(crate) fn zero_page(
        &self,
        initrd: Option<(u64, u64)>,
        e820: &[E820Entry],
        rsdp: u64,
    ) -> Result<Vec<u8>, String> {
        let mut zp = vec![0u8; 4096];
        zp[SETUP_SECTS..SETUP_SECTS + self.header.len()].copy_from_slice(self.header);
        zp[TYPE_OF_LOADER] = LOADER_UNDEFINED;
        zp[LOADFLAGS] |= LOADED_HIGH;
        let put32 = |zp: &mut [u8], off: usize, v: u32| {
            zp[off..off + 4].copy_from_slice(&v.to_le_bytes());
        };
        put32(&mut zp, CMD_LINE_PTR, u32::try_from(CMDLINE).unwrap_or(0));
        if let Some((addr, len)) = initrd {
            let too_high = || "the initrd must be below 4 GiB".to_string();
            put32(
                &mut zp,
                RAMDISK_IMAGE,
                u32::try_from(addr).map_err(|_| too_high())?,
            );
            put32(
                &mut zp,
                RAMDISK_SIZE,
                u32::try_from(len).map_err(|_| too_high())?,
            );
        }
        zp[ACPI_RSDP_ADDR..ACPI_RSDP_ADDR + 8].copy_from_slice(&rsdp.to_le_bytes());
        zp[E820_ENTRIES] = u8::try_from(e820.len())
            .ok()
            .filter(|&n| usize::from(n) <= E820_MAX)
            .ok_or_else(|| {
                format!(
                    "{} memory map entries; the zero page holds {E820_MAX}",
                    e820.len()
                )
            })?;
        for (i, e) in e820.iter().enumerate() {
            let off = E820_TABLE + i * 20;
            zp[off..off + 8].copy_from_slice(&e.addr.to_le_bytes());
            zp[off + 8..off + 16].copy_from_slice(&e.size.to_le_bytes());
            put32(&mut zp, off + 16, e.kind as u32);
        }
        Ok(zp)
    }
}

/// The PC memory map of a guest with `mem` bytes of RAM from address 0
/// (at most 3 GiB, below the 32-bit device hole): conventional memory up
/// to the EBDA, the reserved legacy area (EBDA, VGA hole, BIOS ROM, where
/// the ACPI tables are), then the rest from 1 MiB.
pub(crate) fn memory_map(mem: u64) -> Vec<E820Entry> {
    vec![
        E820Entry {
            addr: 0,
            size: EBDA,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: EBDA,
            size: KERNEL_LOAD - EBDA,
            kind: E820Type::Reserved,
        },
        E820Entry {
            addr: KERNEL_LOAD,
            size: mem - KERNEL_LOAD,
            kind: E820Type::Ram,
        },
    ]
}

/// Where the extended BIOS data area starts: the top of conventional
/// memory on a PC with 639 KiB of it.
pub(crate) const EBDA: u64 = 0x9_fc00;

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: a boot sector and one setup sector with a
    /// version 2.15 header, then `payload`.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 1024];
        f[SETUP_SECTS] = 1;
        f[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        f[0x200] = 0xeb;
        f[JUMP_END] = 0x66; // header to 0x268, as Linux's
        f[HEADER..HEADER + 4].copy_from_slice(b"HdrS");
        f[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        f[XLOADFLAGS..XLOADFLAGS + 2].copy_from_slice(&3u16.to_le_bytes());
        f[CMDLINE_SIZE..CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        f[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        f[INIT_SIZE..INIT_SIZE + 4].copy_from_slice(&0x80_0000u32.to_le_bytes());
        f[PREF_ADDRESS..PREF_ADDRESS + 4].copy_from_slice(&0x100_0000u32.to_le_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_bzimage_splits_into_header_and_kernel() {
        let f = bzimage(b"kernel!");
        let k = Kernel::parse(&f).unwrap();
        assert_eq!(k.image, b"kernel!");
        assert_eq!(k.version, (2, 15));
        // It decompresses at 16 MiB and needs 8 MiB from there.
        assert_eq!(k.end(), 0x180_0000);
        assert!(k.check_cmdline("console=ttyS0").is_ok());
        assert!(
            k.check_cmdline(&"x".repeat(2048))
                .unwrap_err()
                .contains("at most 2047")
        );
    }

    #[test]
    fn bad_images_are_refused_with_a_reason() {
        let err = |f: &[u8]| Kernel::parse(f).unwrap_err();
        assert!(err(&[0; 100]).contains("too small"));
        assert!(err(&[0; 4096]).contains("no boot sector signature"));
        let mut old = bzimage(b"k");
        old[VERSION] = 0x0b;
        assert!(err(&old).contains("2.11 is too old"));
        let mut k32 = bzimage(b"k");
        k32[XLOADFLAGS] = 0;
        assert!(err(&k32).contains("no 64-bit entry point"));
        let mut short = bzimage(b"");
        short[SETUP_SECTS] = 1;
        assert!(err(&short).contains("malformed"));
    }

    #[test]
    fn the_zero_page_has_the_header_memory_map_and_initrd() {
        let f = bzimage(b"k");
        let k = Kernel::parse(&f).unwrap();
        let map = memory_map(256 << 20);
        let zp = k
            .zero_page(Some((0x0f00_0000, 0x1234)), &map, 0xe_0000)
            .unwrap();
        assert_eq!(&zp[HEADER..HEADER + 4], b"HdrS");
        assert_eq!(zp[TYPE_OF_LOADER], 0xff);
        assert_eq!(u32_at(&zp, CMD_LINE_PTR), 0x2_0000);
        assert_eq!(u32_at(&zp, RAMDISK_IMAGE), 0x0f00_0000);
        assert_eq!(u32_at(&zp, RAMDISK_SIZE), 0x1234);
        assert_eq!(u32_at(&zp, ACPI_RSDP_ADDR), 0xe_0000);
        assert_eq!(zp[E820_ENTRIES], 3);
        // The third entry: RAM from 1 MiB to 256 MiB.
        let e = E820_TABLE + 40;
        assert_eq!(u32_at(&zp, e), 0x10_0000);
        assert_eq!(u32_at(&zp, e + 8), (255 << 20) as u32);
        assert_eq!(u32_at(&zp, e + 16), 1);
    }

    #[test]
    fn the_initrd_goes_high_but_above_the_kernel() {
        let f = bzimage(b"k");
        let k = Kernel::parse(&f).unwrap();
        assert_eq!(
            k.initrd_address(0x1800, 64 << 20),
            Some((64 << 20) - 0x2000)
        );
        // Too large to sit above the kernel's 16 + 8 MiB.
        assert_eq!(k.initrd_address(40 << 20, 64 << 20), Some(24 << 20));
        assert_eq!(k.initrd_address((40 << 20) + 1, 64 << 20), None);
        assert_eq!(k.initrd_address(u64::MAX, 64 << 20), None);
    }
}
