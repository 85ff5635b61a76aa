//! `rkvm`: a small device model for `/dev/rkvm`, in the spirit of kvmtool
//! and Firecracker, that shows what a hypervisor does exit by exit.
//!
//! - `rkvm run GUEST` loads a flat binary or a static ELF into a VM, sets
//!   up real, protected or long mode, runs a thread per vCPU and emulates
//!   the guest's devices from its `KVM_EXIT_IO` and `KVM_EXIT_MMIO` exits
//!   (`devices.rs`); `--trace` prints each exit, `--stats` counts them.
//! - `rkvm boot --kernel BZIMAGE` boots Linux on the in-kernel irqchip with
//!   ACPI tables, a UART on the terminal and power-off (`boot/`).
//! - `rkvm info` reports the device's API version, capabilities and limits.
//! - `rkvm bench` measures what a hypervisor's speed is made of, and
//!   `rkvm compare` prints rkvm's and KVM's figures side by side.
//!
//! The ABI is KVM's: `--device /dev/kvm` runs the same guests on KVM.

mod args;
mod bench;
mod boot;
mod devices;
mod info;
mod loader;
mod machine;
mod serial;
mod stats;
mod vcpus;

use std::io::Write;
use std::process::ExitCode;

use args::Command;

/// Why rkvm could not do what it was asked, by whose move it is.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line is wrong (exit status 2).
    Usage(String),
    /// The guest cannot be run here: device, permissions, files (125).
    Env(String),
    /// The guest crashed: triple fault, failed entry, an unhandled exit (126).
    Guest(String),
}

impl Failure {
    /// The process exit status for this failure.
    pub(crate) fn status(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Env(_) => 125,
            Failure::Guest(_) => 126,
        }
    }

    /// The message, without the `rkvm: error:` prefix.
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Env(m) | Failure::Guest(m) => m,
        }
    }
}

/// Reads a file the user named, with errors they can act on.
pub(crate) fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::Env(match e.kind() {
            std::io::ErrorKind::NotFound => format!("{what} {shown} does not exist"),
            std::io::ErrorKind::PermissionDenied => {
                format!("permission denied reading the {what} {shown}")
            }
            _ => format!("cannot read the {what} {shown}: {e}"),
        })
    })?;
    if bytes.is_empty() {
        return Err(Failure::Env(format!("{what} {shown} is empty")));
    }
    Ok(bytes)
}

/// Writes one line (or a block of lines) to stderr. The trace, the
/// statistics and errors go there, so stdout carries only guest output.
pub(crate) fn stderr_line(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

/// A byte count in the largest binary unit that divides it.
pub(crate) fn human_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

fn main() -> ExitCode {
    let result = args::parse(std::env::args().skip(1)).and_then(|cmd| match cmd {
        Command::Run(a) => machine::run(&a),
        Command::Boot(a) => boot::boot(&a),
        Command::Info { device } => info::info(&device).map(|s| {
            print!("{s}");
            0
        }),
        Command::Bench(a) => bench::bench(&a).map(|()| 0),
        Command::Compare { left, right } => bench::compare(&left, &right).map(|s| {
            print!("{s}");
            0
        }),
        Command::Help => {
            println!("{}", args::USAGE);
            Ok(0)
        }
    });
    match result {
        Ok(status) => ExitCode::from(status),
        Err(f) => {
            stderr_line(&format!("rkvm: error: {}", f.message()));
            ExitCode::from(f.status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }

    #[test]
    fn failures_have_distinct_statuses() {
        assert_eq!(Failure::Usage(String::new()).status(), 2);
        assert_eq!(Failure::Env(String::new()).status(), 125);
        assert_eq!(Failure::Guest(String::new()).status(), 126);
    }
}
