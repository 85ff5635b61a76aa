//! `rkvm info`: what the device says about itself, through the same
//! ioctls a VMM asks before it creates a VM.

use std::fmt::Write as _;
use std::path::Path;

use kvm_abi::sys;
use kvm_abi::{CpuidEntries, KVM_MAX_CPUID_ENTRIES, MsrIndexList};

use crate::Failure;
use crate::machine::open_device;

/// The capabilities `rkvm info` asks about, in the order it prints them.
const CAPS: &[(&str, u32)] = &[
    ("KVM_CAP_USER_MEMORY", sys::KVM_CAP_USER_MEMORY),
    ("KVM_CAP_USER_MEMORY2", sys::KVM_CAP_USER_MEMORY2),
    ("KVM_CAP_READONLY_MEM", sys::KVM_CAP_READONLY_MEM),
    (
        "KVM_CAP_DESTROY_MEMORY_REGION_WORKS",
        sys::KVM_CAP_DESTROY_MEMORY_REGION_WORKS,
    ),
    ("KVM_CAP_SET_TSS_ADDR", sys::KVM_CAP_SET_TSS_ADDR),
    (
        "KVM_CAP_SET_IDENTITY_MAP_ADDR",
        sys::KVM_CAP_SET_IDENTITY_MAP_ADDR,
    ),
    ("KVM_CAP_EXT_CPUID", sys::KVM_CAP_EXT_CPUID),
    (
        "KVM_CAP_CHECK_EXTENSION_VM",
        sys::KVM_CAP_CHECK_EXTENSION_VM,
    ),
    ("KVM_CAP_IMMEDIATE_EXIT", sys::KVM_CAP_IMMEDIATE_EXIT),
    (
        "KVM_CAP_INTERNAL_ERROR_DATA",
        sys::KVM_CAP_INTERNAL_ERROR_DATA,
    ),
    (
        "KVM_CAP_MULTI_ADDRESS_SPACE",
        sys::KVM_CAP_MULTI_ADDRESS_SPACE,
    ),
    ("KVM_CAP_NR_VCPUS", sys::KVM_CAP_NR_VCPUS),
    ("KVM_CAP_MAX_VCPUS", sys::KVM_CAP_MAX_VCPUS),
    ("KVM_CAP_MAX_VCPU_ID", sys::KVM_CAP_MAX_VCPU_ID),
    ("KVM_CAP_NR_MEMSLOTS", sys::KVM_CAP_NR_MEMSLOTS),
    ("KVM_CAP_IRQCHIP", sys::KVM_CAP_IRQCHIP),
    ("KVM_CAP_HLT", sys::KVM_CAP_HLT),
    ("KVM_CAP_MP_STATE", sys::KVM_CAP_MP_STATE),
    ("KVM_CAP_VCPU_EVENTS", sys::KVM_CAP_VCPU_EVENTS),
    ("KVM_CAP_XSAVE", sys::KVM_CAP_XSAVE),
    ("KVM_CAP_SYNC_REGS", sys::KVM_CAP_SYNC_REGS),
    ("KVM_CAP_COALESCED_MMIO", sys::KVM_CAP_COALESCED_MMIO),
    ("KVM_CAP_IOEVENTFD", sys::KVM_CAP_IOEVENTFD),
    ("KVM_CAP_IRQFD", sys::KVM_CAP_IRQFD),
    ("KVM_CAP_GUEST_MEMFD", sys::KVM_CAP_GUEST_MEMFD),
    ("KVM_CAP_DIRTY_LOG_RING", sys::KVM_CAP_DIRTY_LOG_RING),
];

/// The hardware extension behind a CPU vendor string (CPUID leaf 0).
pub(crate) fn backend_of_vendor(vendor: &str) -> &'static str {
    match vendor {
        "AuthenticAMD" | "HygonGenuine" => "SVM (AMD-V)",
        "GenuineIntel" => "VMX (Intel VT-x)",
        _ => "unknown",
    }
}

/// The vendor string of CPUID leaf 0 in `cpuid` (EBX, EDX, ECX).
fn vendor(cpuid: &CpuidEntries) -> String {
    cpuid.find(0, 0).map_or_else(
        || "?".into(),
        |e| {
            [e.ebx, e.edx, e.ecx]
                .iter()
                .flat_map(|r| r.to_le_bytes())
                .map(char::from)
                .collect()
        },
    )
}

/// Which kernel module provides `device`, from `/sys/module`.
fn module_of(device: &Path) -> String {
    let loaded = |m: &str| Path::new("/sys/module").join(m).exists();
    if device.to_string_lossy().contains("rkvm") {
        return if loaded("rkvm") {
            "rkvm"
        } else {
            "rkvm (not loaded?)"
        }
        .into();
    }
    ["kvm_amd", "kvm_intel", "kvm_pvm"]
        .iter()
        .find(|m| loaded(m))
        .map_or_else(|| "kvm".into(), |m| format!("kvm + {m}"))
}

/// `rkvm info`: the report, or why the device cannot be asked.
pub(crate) fn info(device: &Path) -> Result<String, Failure> {
    let sys = open_device(device)?;
    let env = |e: kvm_abi::Error| Failure::Env(e.to_string());
    let mut cpuid = CpuidEntries::new(KVM_MAX_CPUID_ENTRIES).map_err(env)?;
    sys.get_supported_cpuid(&mut cpuid).map_err(env)?;
    let vendor = vendor(&cpuid);
    let mut msrs = MsrIndexList::new(1024).map_err(env)?;
    let nmsrs = sys.get_msr_index_list(&mut msrs).map_or_else(
        |e| format!("? ({e})"),
        |()| msrs.indices().len().to_string(),
    );
    let cap = |c: u32| sys.check_extension(c).unwrap_or(-1);
    let mut s = String::new();
    let _ = writeln!(s, "device            {}", device.display());
    let _ = writeln!(s, "module            {}", module_of(device));
    let _ = writeln!(
        s,
        "backend           {} (host CPU vendor {vendor})",
        backend_of_vendor(&vendor)
    );
    let _ = writeln!(s, "API version       {}", sys.api_version().map_err(env)?);
    let _ = writeln!(
        s,
        "kvm_run mapping   {} bytes",
        sys.vcpu_mmap_size().map_err(env)?
    );
    let _ = writeln!(
        s,
        "limits            {} vCPUs recommended, {} at most, ids below {}; {} memory slots; {} address space(s)",
        cap(sys::KVM_CAP_NR_VCPUS),
        cap(sys::KVM_CAP_MAX_VCPUS),
        cap(sys::KVM_CAP_MAX_VCPU_ID),
        cap(sys::KVM_CAP_NR_MEMSLOTS),
        cap(sys::KVM_CAP_MULTI_ADDRESS_SPACE)
    );
    let _ = writeln!(
        s,
        "CPUID, MSRs       {} supported CPUID entries, {} MSRs saved/restored",
        cpuid.entries().len(),
        nmsrs
    );
    let _ = writeln!(s, "capabilities (KVM_CHECK_EXTENSION; 0 = absent):");
    for (name, c) in CAPS {
        let _ = writeln!(s, "  {name:<38} {}", cap(*c));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendors_name_their_extension() {
        assert_eq!(backend_of_vendor("AuthenticAMD"), "SVM (AMD-V)");
        assert_eq!(backend_of_vendor("GenuineIntel"), "VMX (Intel VT-x)");
        assert_eq!(backend_of_vendor("TCGTCGTCGTCG"), "unknown");
    }
}
