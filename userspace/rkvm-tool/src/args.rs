//! The command line: `rkvm run|info|bench|compare ...`, parsed by hand into
//! typed options. Every mistake is a [`Usage`](crate::Failure::Usage)
//! error that names the option and what it accepts.

use std::path::PathBuf;

use crate::Failure;
use crate::boot::{self, BootArgs};

/// The device opened when `--device` is not given.
pub(crate) const DEFAULT_DEVICE: &str = "/dev/rkvm";

/// Guest memory when `--mem` is not given.
pub(crate) const DEFAULT_MEM: u64 = 64 << 20;

/// The most guest memory `run` accepts: everything below the MMIO demo
/// device (and the 3-4 GiB hole PCs keep for devices).
pub(crate) const MAX_MEM: u64 = 3 << 30;

/// The most vCPUs `run` starts.
pub(crate) const MAX_CPUS: u32 = 8;

/// `--help` text.
pub(crate) const USAGE: &str = "\
usage: rkvm run [OPTIONS] GUEST      run a guest (flat binary or static ELF)
       rkvm boot --kernel BZIMAGE [OPTIONS]
                                     boot Linux: its console on the terminal
       rkvm info [--device PATH]     the device's API version, capabilities, limits
       rkvm bench [--device PATH] [--quick] [--repeats N] [--output FILE] [--linux DIR [--qemu QEMU]]
       rkvm compare RKVM.tsv KVM.tsv print two `bench --output` files side by side

run options:
  --device PATH    the KVM-compatible device (default /dev/rkvm; /dev/kvm works too)
  --mem SIZE       guest memory, e.g. 64M, 1G (default 64M, at most 3G)
  --cpus N         vCPUs, one thread each (default 1, at most 8)
  --mode MODE      real, protected or long (default: long for flat and ELF64
                   guests, protected for ELF32)
  --load ADDR      where a flat binary goes and starts (default 0x100000,
                   0x10000 in real mode)
  --trace          print every exit as it happens (on stderr)
  --stats          print exit counts and times by reason at the end (on stderr)

boot options:
  --kernel FILE    a Linux bzImage (64-bit, boot protocol 2.12 or later)
  --initrd FILE    an initramfs or initrd for it
  --append TEXT    the kernel command line (default \"console=ttyS0 panic=-1\")
  --cpus N         vCPUs, in the ACPI MADT (default 1, at most 8)
  --mem SIZE       guest memory (default 256M, 32M to 3G)
  --device, --trace, --stats   as for run

Linux's machine: RAM from 0 with an e820 map, ACPI tables, the in-kernel
local APICs, IOAPIC, PICs and PIT, a 16550 UART at 0x3f8 on IRQ 4 (stdout,
and stdin, raw when it is a terminal), ACPI power-off and reset registers
(0x600-0x606) and the keyboard controller's reset (port 0x64). A guest that
powers off or reboots ends rkvm boot with status 0.

The guest's devices under run: a 16550 UART at port 0x3f8 (stdout; stdin when it is a
terminal), the debug port 0xe9 (stdout), the exit port 0xf4 (the byte written
is rkvm's exit status), a tick timer at port 0x610 (32-bit period in
microseconds, 0 stops; it injects vector 32 with KVM_INTERRUPT) and an MMIO
demo device at 0xd0000000 (0x0 id, 0x8 read counter, 0x10 scratch, 0x18
scratch squared).

Exit status: the guest's (run: from port 0xf4, 0 when every vCPU halted
with nothing left to wake it; boot: 0 when it powered off or reset, 130
after ^C), 2 for a usage error, 125 when the guest cannot be
run (device, permissions, guest file), 126 when the guest crashed (triple
fault, failed entry, an exit rkvm cannot handle).";

/// The x86 modes a guest can start in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuestMode {
    /// Real mode: 16-bit code, segments based at the load address.
    Real,
    /// 32-bit protected mode, flat segments, no paging.
    Protected,
    /// 64-bit long mode with an identity map of the first 4 GiB.
    Long,
}

impl GuestMode {
    /// The mode's name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GuestMode::Real => "real",
            GuestMode::Protected => "protected",
            GuestMode::Long => "long",
        }
    }
}

/// `rkvm run`'s options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunArgs {
    /// `--device`.
    pub(crate) device: PathBuf,
    /// `--mem`, in bytes (a multiple of 4 KiB).
    pub(crate) mem: u64,
    /// `--cpus`.
    pub(crate) cpus: u32,
    /// `--mode`, if given.
    pub(crate) mode: Option<GuestMode>,
    /// `--load`, if given.
    pub(crate) load: Option<u64>,
    /// `--trace`.
    pub(crate) trace: bool,
    /// `--stats`.
    pub(crate) stats: bool,
    /// The guest file.
    pub(crate) guest: PathBuf,
}

/// `rkvm bench`'s options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BenchArgs {
    /// `--device`.
    pub(crate) device: PathBuf,
    /// `--quick`: fewer iterations, for tests.
    pub(crate) quick: bool,
    /// `--linux`: a directory with `bzImage` and `initrd` to time
    /// `rkvm boot` of, to user space (the guest's init line).
    pub(crate) linux: Option<PathBuf>,
    /// `--qemu`: a QEMU binary to time booting the same guest with, on
    /// the device (needs `--linux`).
    pub(crate) qemu: Option<PathBuf>,
    /// `--repeats`: how many times each benchmark is measured.
    pub(crate) repeats: u32,
    /// `--output`: where the results go as tab-separated values.
    pub(crate) output: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// `rkvm run`.
    Run(RunArgs),
    /// `rkvm boot`.
    Boot(BootArgs),
    /// `rkvm info`.
    Info {
        /// `--device`.
        device: PathBuf,
    },
    /// `rkvm bench`.
    Bench(BenchArgs),
    /// `rkvm compare A B`.
    Compare {
        /// The first column's results (rkvm).
        left: PathBuf,
        /// The second column's results (KVM).
        right: PathBuf,
    },
    /// `rkvm help`, `--help`, `-h`.
    Help,
}

fn usage(msg: String) -> Failure {
    Failure::Usage(msg)
}

/// Parses a size: a number with an optional `K`, `M` or `G` suffix (powers
/// of 1024, optionally followed by `iB` or `B`), in decimal or `0x` hex.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    parse_u64(digits)?.checked_mul(1u64 << shift)
}

/// Parses a number in decimal or `0x` hex (underscores allowed).
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    let t = text.trim().replace('_', "");
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        t.parse().ok()
    }
}

/// Takes the value of option `name` from `it`.
fn value(it: &mut impl Iterator<Item = String>, name: &str) -> Result<String, Failure> {
    it.next()
        .ok_or_else(|| usage(format!("{name} needs a value (see rkvm --help)")))
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, Failure> {
    let mut it = args.into_iter();
    let Some(cmd) = it.next() else {
        return Err(usage(
            "no command: use rkvm run GUEST, rkvm info or rkvm bench (rkvm --help)".into(),
        ));
    };
    match cmd.as_str() {
        "run" => parse_run(it).map(Command::Run),
        "boot" => parse_boot(it).map(Command::Boot),
        "info" => {
            let mut device = PathBuf::from(DEFAULT_DEVICE);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--device" => device = value(&mut it, "--device")?.into(),
                    _ => return Err(usage(format!("rkvm info: unknown argument {a:?}"))),
                }
            }
            Ok(Command::Info { device })
        }
        "bench" => parse_bench(it).map(Command::Bench),
        "compare" => {
            let (Some(left), Some(right), None) = (it.next(), it.next(), it.next()) else {
                return Err(usage(
                    "rkvm compare takes two files written by rkvm bench --output".into(),
                ));
            };
            Ok(Command::Compare {
                left: left.into(),
                right: right.into(),
            })
        }
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => Err(usage(format!(
            "unknown command {other:?}: use run, boot, info, bench or compare (rkvm --help)"
        ))),
    }
}

/// `--mem`'s value: a size from `min` to [`MAX_MEM`], a multiple of 4 KiB.
fn parse_mem(v: &str, min: u64) -> Result<u64, Failure> {
    let mem = parse_size(v)
        .ok_or_else(|| usage(format!("--mem {v:?} is not a size (examples: 64M, 1G)")))?;
    if !(min..=MAX_MEM).contains(&mem) || !mem.is_multiple_of(4096) {
        return Err(usage(format!(
            "--mem {v} is out of range: give {}M to 3G, a multiple of 4K",
            min >> 20
        )));
    }
    Ok(mem)
}

/// `--cpus`'s value: 1 to [`MAX_CPUS`].
fn parse_cpus(v: &str) -> Result<u32, Failure> {
    v.parse()
        .ok()
        .filter(|n| (1..=MAX_CPUS).contains(n))
        .ok_or_else(|| usage(format!("--cpus {v:?}: give 1 to {MAX_CPUS}")))
}

fn parse_boot(mut it: impl Iterator<Item = String>) -> Result<BootArgs, Failure> {
    let mut args = BootArgs {
        device: PathBuf::from(DEFAULT_DEVICE),
        kernel: PathBuf::new(),
        initrd: None,
        append: boot::DEFAULT_APPEND.into(),
        cpus: 1,
        mem: boot::DEFAULT_MEM,
        trace: false,
        stats: false,
    };
    let mut kernel = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => args.device = value(&mut it, "--device")?.into(),
            "--kernel" => kernel = Some(value(&mut it, "--kernel")?),
            "--initrd" => args.initrd = Some(value(&mut it, "--initrd")?.into()),
            "--append" => args.append = value(&mut it, "--append")?,
            "--mem" => args.mem = parse_mem(&value(&mut it, "--mem")?, boot::MIN_MEM)?,
            "--cpus" => args.cpus = parse_cpus(&value(&mut it, "--cpus")?)?,
            "--trace" => args.trace = true,
            "--stats" => args.stats = true,
            _ => {
                return Err(usage(format!(
                    "rkvm boot: unknown argument {a:?} (rkvm --help)"
                )));
            }
        }
    }
    args.kernel = kernel
        .ok_or_else(|| usage("rkvm boot needs --kernel BZIMAGE (rkvm --help)".into()))?
        .into();
    Ok(args)
}

fn parse_run(mut it: impl Iterator<Item = String>) -> Result<RunArgs, Failure> {
    let mut args = RunArgs {
        device: PathBuf::from(DEFAULT_DEVICE),
        mem: DEFAULT_MEM,
        cpus: 1,
        mode: None,
        load: None,
        trace: false,
        stats: false,
        guest: PathBuf::new(),
    };
    let mut guest = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => args.device = value(&mut it, "--device")?.into(),
            "--mem" => args.mem = parse_mem(&value(&mut it, "--mem")?, 1 << 20)?,
            "--cpus" => args.cpus = parse_cpus(&value(&mut it, "--cpus")?)?,
            "--mode" => {
                let v = value(&mut it, "--mode")?;
                args.mode = Some(match v.as_str() {
                    "real" => GuestMode::Real,
                    "protected" => GuestMode::Protected,
                    "long" => GuestMode::Long,
                    _ => {
                        return Err(usage(format!("--mode {v:?}: give real, protected or long")));
                    }
                });
            }
            "--load" => {
                let v = value(&mut it, "--load")?;
                args.load = Some(parse_u64(&v).ok_or_else(|| {
                    usage(format!("--load {v:?} is not an address (e.g. 0x100000)"))
                })?);
            }
            "--trace" => args.trace = true,
            "--stats" => args.stats = true,
            s if s.starts_with('-') => {
                return Err(usage(format!("rkvm run: unknown option {s} (rkvm --help)")));
            }
            _ if guest.is_some() => {
                return Err(usage(format!(
                    "rkvm run takes one guest file; {a:?} is one too many"
                )));
            }
            _ => guest = Some(a),
        }
    }
    args.guest = guest
        .ok_or_else(|| usage("rkvm run needs a guest file (rkvm run [OPTIONS] GUEST)".into()))?
        .into();
    Ok(args)
}

fn parse_bench(mut it: impl Iterator<Item = String>) -> Result<BenchArgs, Failure> {
    let mut args = BenchArgs {
        device: PathBuf::from(DEFAULT_DEVICE),
        quick: false,
        linux: None,
        qemu: None,
        repeats: 5,
        output: None,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--device" => args.device = value(&mut it, "--device")?.into(),
            "--quick" => args.quick = true,
            "--linux" => args.linux = Some(value(&mut it, "--linux")?.into()),
            "--qemu" => args.qemu = Some(value(&mut it, "--qemu")?.into()),
            "--repeats" => {
                let v = value(&mut it, "--repeats")?;
                args.repeats = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| usage(format!("--repeats {v:?}: give 1 to 100")))?;
            }
            "--output" => args.output = Some(value(&mut it, "--output")?.into()),
            _ => return Err(usage(format!("rkvm bench: unknown argument {a:?}"))),
        }
    }
    if args.qemu.is_some() && args.linux.is_none() {
        return Err(usage(
            "rkvm bench: --qemu times a Linux boot: give the guest with --linux DIR".into(),
        ));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(a: &[&str]) -> Result<Command, Failure> {
        parse(a.iter().map(|s| (*s).to_string()))
    }

    fn usage_text(r: Result<Command, Failure>) -> String {
        match r {
            Err(Failure::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("0x1000"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999999G"), None);
        assert_eq!(parse_u64("0x10_0000"), Some(0x10_0000));
    }

    #[test]
    fn run_defaults_and_options() {
        let Command::Run(r) = parse_strs(&["run", "hello.bin"]).unwrap() else {
            panic!("not run");
        };
        assert_eq!(r.device, PathBuf::from("/dev/rkvm"));
        assert_eq!(
            (r.mem, r.cpus, r.mode, r.load),
            (DEFAULT_MEM, 1, None, None)
        );
        assert!(!r.trace && !r.stats);
        let Command::Run(r) = parse_strs(&[
            "run", "--device", "/dev/kvm", "--mem", "2M", "--cpus", "2", "--mode", "real",
            "--load", "0x8000", "--trace", "--stats", "g.elf",
        ])
        .unwrap() else {
            panic!("not run");
        };
        assert_eq!(r.device, PathBuf::from("/dev/kvm"));
        assert_eq!((r.mem, r.cpus), (2 << 20, 2));
        assert_eq!((r.mode, r.load), (Some(GuestMode::Real), Some(0x8000)));
        assert!(r.trace && r.stats);
        assert_eq!(r.guest, PathBuf::from("g.elf"));
    }

    #[test]
    fn run_refuses_bad_values() {
        assert!(usage_text(parse_strs(&["run"])).contains("needs a guest file"));
        assert!(usage_text(parse_strs(&["run", "--mem", "4G", "g"])).contains("out of range"));
        assert!(usage_text(parse_strs(&["run", "--mem", "12345", "g"])).contains("out of range"));
        assert!(usage_text(parse_strs(&["run", "--mem", "x", "g"])).contains("not a size"));
        assert!(usage_text(parse_strs(&["run", "--cpus", "0", "g"])).contains("1 to 8"));
        assert!(usage_text(parse_strs(&["run", "--mode", "smm", "g"])).contains("real"));
        assert!(usage_text(parse_strs(&["run", "--load", "here", "g"])).contains("address"));
        assert!(usage_text(parse_strs(&["run", "--bogus", "g"])).contains("unknown option"));
        assert!(usage_text(parse_strs(&["run", "a", "b"])).contains("one too many"));
        assert!(usage_text(parse_strs(&["run", "--mem"])).contains("needs a value"));
        assert!(usage_text(parse_strs(&["frobnicate"])).contains("unknown command"));
        assert!(usage_text(parse_strs(&[])).contains("no command"));
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            parse_strs(&["info", "--device", "/dev/kvm"]).unwrap(),
            Command::Info {
                device: "/dev/kvm".into()
            }
        );
        let Command::Bench(b) = parse_strs(&[
            "bench",
            "--quick",
            "--repeats",
            "3",
            "--output",
            "o",
            "--linux",
            "l",
            "--qemu",
            "q",
        ])
        .unwrap() else {
            panic!("not bench");
        };
        assert!(b.quick);
        assert_eq!(b.linux, Some(PathBuf::from("l")));
        assert_eq!(b.qemu, Some(PathBuf::from("q")));
        assert!(usage_text(parse_strs(&["bench", "--qemu", "q"])).contains("--linux DIR"));
        assert_eq!((b.repeats, b.output), (3, Some(PathBuf::from("o"))));
        assert!(matches!(
            parse_strs(&["compare", "a", "b"]).unwrap(),
            Command::Compare { .. }
        ));
        assert!(usage_text(parse_strs(&["compare", "a"])).contains("two files"));
        let Command::Boot(b) = parse_strs(&[
            "boot", "--kernel", "bz", "--initrd", "rd", "--append", "quiet", "--cpus", "2",
            "--mem", "512M", "--stats",
        ])
        .unwrap() else {
            panic!("not boot");
        };
        assert_eq!((b.kernel, b.initrd), ("bz".into(), Some("rd".into())));
        assert_eq!((b.append.as_str(), b.cpus, b.mem), ("quiet", 2, 512 << 20));
        assert!(b.stats && !b.trace);
        let Command::Boot(b) = parse_strs(&["boot", "--kernel", "bz"]).unwrap() else {
            panic!("not boot");
        };
        assert_eq!(
            (b.append.as_str(), b.mem),
            (boot::DEFAULT_APPEND, boot::DEFAULT_MEM)
        );
        assert!(usage_text(parse_strs(&["boot"])).contains("needs --kernel"));
        assert!(
            usage_text(parse_strs(&["boot", "--kernel", "k", "--mem", "16M"]))
                .contains("give 32M to 3G")
        );
        assert!(
            usage_text(parse_strs(&["boot", "--kernel", "k", "--cpus", "9"])).contains("1 to 8")
        );
        assert!(usage_text(parse_strs(&["boot", "--kernel", "k", "x"])).contains("unknown"));
        assert_eq!(parse_strs(&["--help"]).unwrap(), Command::Help);
    }
}
