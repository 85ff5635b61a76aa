//! System-level API of a KVM-compatible device: version, capabilities, VM
//! creation, supported CPUID, and the errors for unknown requests and bad
//! pointers.
//!
//! Usage: `api [DEVICE]` (default `/dev/rkvm`).

use std::os::fd::AsFd;
use std::process::ExitCode;

use ksft::{TestResult, check, check_eq, check_eq_hex, check_errno, check_ok, diag, tests};
use kvm_abi::ioctls::{self, KVMIO};
use kvm_abi::raw::{self, Arg};
use kvm_abi::sys::{
    KVM_API_VERSION, KVM_CAP_GET_MSR_FEATURES, KVM_CAP_MAX_VCPU_ID, KVM_CAP_MAX_VCPUS,
    KVM_CAP_NR_MEMSLOTS, KVM_CAP_NR_VCPUS, KVM_CAP_USER_MEMORY, KVM_CAP_VM_TYPES,
    KVM_PIO_PAGE_OFFSET,
};
use kvm_abi::{CpuidEntries, KVM_MAX_CPUID_ENTRIES, MsrEntries, MsrIndexList, PAGE_SIZE};
use rkvm_selftests::{Ctx, check_efault};

/// A capability number no kernel defines.
const UNKNOWN_CAP: u32 = 0xdead;
/// An unused number in KVM's ioctl space.
const UNKNOWN_KVM_IOCTL: ioctls::Request = ioctls::io(KVMIO, 0xff);
/// TCGETS (`_IO('T', 1)`), what isatty() asks: a request of another driver.
const FOREIGN_IOCTL: ioctls::Request = ioctls::io(b'T' as u32, 0x01);

fn api_version_is_12(ctx: &Ctx) -> TestResult {
    check_eq!(check_ok!(ctx.sys.api_version()), 12);
    check_eq!(KVM_API_VERSION, 12);
    Ok(())
}

/// kvm_dev_ioctl() refuses an argument to KVM_GET_API_VERSION.
fn api_version_with_argument_is_einval(ctx: &Ctx) -> TestResult {
    check_errno!(
        raw::ioctl(ctx.sys.as_fd(), ioctls::KVM_GET_API_VERSION, Arg::Value(1)),
        libc::EINVAL
    );
    Ok(())
}

fn unknown_cap_is_zero(ctx: &Ctx) -> TestResult {
    check_eq!(check_ok!(ctx.cap(UNKNOWN_CAP)), 0);
    Ok(())
}

fn cap_user_memory_is_reported(ctx: &Ctx) -> TestResult {
    check!(check_ok!(ctx.cap(KVM_CAP_USER_MEMORY)) > 0);
    Ok(())
}

fn cap_nr_memslots_is_positive(ctx: &Ctx) -> TestResult {
    let n = check_ok!(ctx.cap(KVM_CAP_NR_MEMSLOTS));
    diag!("KVM_CAP_NR_MEMSLOTS = {n}");
    check!(n > 0, "got {n}");
    // The slot id is the low 16 bits of kvm_userspace_memory_region.slot.
    check!(n <= 0x1_0000, "got {n}");
    Ok(())
}

fn cap_vcpu_limits_are_consistent(ctx: &Ctx) -> TestResult {
    let nr = check_ok!(ctx.cap(KVM_CAP_NR_VCPUS));
    let max = check_ok!(ctx.cap(KVM_CAP_MAX_VCPUS));
    let max_id = check_ok!(ctx.cap(KVM_CAP_MAX_VCPU_ID));
    diag!("KVM_CAP_NR_VCPUS = {nr}, KVM_CAP_MAX_VCPUS = {max}, KVM_CAP_MAX_VCPU_ID = {max_id}");
    check!(nr > 0, "NR_VCPUS {nr}");
    check!(max > 0, "MAX_VCPUS {max}");
    check!(max_id > 0, "MAX_VCPU_ID {max_id}");
    check!(nr <= max, "NR_VCPUS {nr} > MAX_VCPUS {max}");
    // Every vCPU needs a distinct id below MAX_VCPU_ID.
    check!(max <= max_id, "MAX_VCPUS {max} > MAX_VCPU_ID {max_id}");
    Ok(())
}

fn vm_fd_answers_the_same_caps(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    for cap in [
        KVM_CAP_USER_MEMORY,
        KVM_CAP_NR_MEMSLOTS,
        KVM_CAP_MAX_VCPUS,
        KVM_CAP_MAX_VCPU_ID,
        KVM_CAP_NR_VCPUS,
        UNKNOWN_CAP,
    ] {
        let sys = check_ok!(ctx.cap(cap));
        let on_vm = check_ok!(vm.check_extension(cap));
        check_eq!(on_vm, sys, "capability {cap}");
    }
    Ok(())
}

fn vcpu_mmap_size_covers_run_and_pio_pages(ctx: &Ctx) -> TestResult {
    let size = check_ok!(ctx.sys.vcpu_mmap_size());
    diag!("KVM_GET_VCPU_MMAP_SIZE = {size:#x}");
    check_eq!(size % PAGE_SIZE, 0, "size {size:#x}");
    // kvm_run at page 0, the port-I/O data page at KVM_PIO_PAGE_OFFSET.
    check!(
        size >= (KVM_PIO_PAGE_OFFSET as usize + 1) * PAGE_SIZE,
        "size {size:#x}"
    );
    check!(size >= size_of::<kvm_abi::sys::kvm_run>(), "size {size:#x}");
    Ok(())
}

fn vcpu_mmap_size_with_argument_is_einval(ctx: &Ctx) -> TestResult {
    check_errno!(
        raw::ioctl(
            ctx.sys.as_fd(),
            ioctls::KVM_GET_VCPU_MMAP_SIZE,
            Arg::Value(1)
        ),
        libc::EINVAL
    );
    Ok(())
}

fn create_vm_returns_cloexec_fd(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check!(check_ok!(raw::is_cloexec(&vm)), "VM fd lacks FD_CLOEXEC");
    Ok(())
}

fn create_vm_invalid_type_is_einval(ctx: &Ctx) -> TestResult {
    check_errno!(ctx.sys.create_vm(0xdead), libc::EINVAL);
    Ok(())
}

/// `KVM_CAP_VM_TYPES` names the default type, and `KVM_CREATE_VM` takes
/// exactly the types it names among 0..64 (the others are `EINVAL`), as
/// Linux's `vm_types_test` checks.
fn create_vm_takes_the_types_kvm_cap_vm_types_names(ctx: &Ctx) -> TestResult {
    let types = check_ok!(ctx.cap(KVM_CAP_VM_TYPES));
    diag!("KVM_CAP_VM_TYPES = {types:#x}");
    check!(types & 1 != 0, "the default type (0) is not offered");
    for ty in 0..64u64 {
        let offered = ty < 32 && types & (1 << ty) != 0;
        match ctx.sys.create_vm(ty) {
            Ok(_) => check!(offered, "type {ty} created, but not offered"),
            Err(e) => {
                check!(!offered, "type {ty} offered, but refused: {e}");
                check_eq!(e.errno(), nix::errno::Errno::EINVAL, "type {ty}");
            }
        }
    }
    Ok(())
}

fn supported_cpuid_nent_0_is_e2big(ctx: &Ctx) -> TestResult {
    let mut cpuid = check_ok!(CpuidEntries::new(0));
    check_errno!(ctx.sys.get_supported_cpuid(&mut cpuid), libc::E2BIG);
    Ok(())
}

/// KVM reports more than one leaf; one entry of room is too little.
fn supported_cpuid_nent_1_is_e2big(ctx: &Ctx) -> TestResult {
    let mut cpuid = check_ok!(CpuidEntries::new(1));
    check_errno!(ctx.sys.get_supported_cpuid(&mut cpuid), libc::E2BIG);
    Ok(())
}

fn supported_cpuid_256_entries_has_leaf_0(ctx: &Ctx) -> TestResult {
    let mut cpuid = check_ok!(CpuidEntries::new(KVM_MAX_CPUID_ENTRIES));
    check_ok!(ctx.sys.get_supported_cpuid(&mut cpuid));
    let n = cpuid.nent();
    diag!("KVM_GET_SUPPORTED_CPUID: {n} entries");
    check!(n > 1 && n as usize <= KVM_MAX_CPUID_ENTRIES, "nent {n}");
    let Some(leaf0) = cpuid.find(0, 0) else {
        ksft::fail!("no entry for leaf 0 among {n}");
    };
    check!(
        leaf0.eax >= 1,
        "leaf 0 eax (max basic leaf) is {}",
        leaf0.eax
    );
    check!(cpuid.find(1, 0).is_some(), "no entry for leaf 1");
    check!(
        cpuid.find(0x8000_0000, 0).is_some(),
        "no entry for leaf 0x80000000"
    );
    Ok(())
}

/// kvm_dev_ioctl_get_cpuid() (arch/x86/kvm/cpuid.c) clamps nent to
/// KVM_MAX_CPUID_ENTRIES instead of failing.
fn supported_cpuid_nent_above_256_is_clamped(ctx: &Ctx) -> TestResult {
    let mut cpuid = check_ok!(CpuidEntries::new(KVM_MAX_CPUID_ENTRIES + 44));
    check_ok!(ctx.sys.get_supported_cpuid(&mut cpuid));
    let n = cpuid.nent();
    check!(n > 1 && n as usize <= KVM_MAX_CPUID_ENTRIES, "nent {n}");
    let mut exact = check_ok!(CpuidEntries::new(KVM_MAX_CPUID_ENTRIES));
    check_ok!(ctx.sys.get_supported_cpuid(&mut exact));
    check_eq!(n, exact.nent(), "same answer as with 256 entries of room");
    Ok(())
}

/// x86 KVM's kvm_arch_dev_ioctl() answers unknown requests with EINVAL.
fn unknown_ioctl_on_system_fd_is_einval(ctx: &Ctx) -> TestResult {
    check_errno!(
        raw::ioctl(ctx.sys.as_fd(), UNKNOWN_KVM_IOCTL, Arg::Value(0)),
        libc::EINVAL
    );
    check_errno!(
        raw::ioctl(ctx.sys.as_fd(), FOREIGN_IOCTL, Arg::Value(0)),
        libc::EINVAL
    );
    Ok(())
}

/// kvm_arch_vm_ioctl() answers unknown requests with ENOTTY.
fn unknown_ioctl_on_vm_fd_is_enotty(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check_errno!(
        raw::ioctl(vm.as_fd(), UNKNOWN_KVM_IOCTL, Arg::Value(0)),
        libc::ENOTTY
    );
    check_errno!(
        raw::ioctl(vm.as_fd(), FOREIGN_IOCTL, Arg::Value(0)),
        libc::ENOTTY
    );
    Ok(())
}

/// kvm_vcpu_ioctl() refuses a foreign ioctl type, and kvm_arch_vcpu_ioctl()
/// an unknown KVM request, with EINVAL.
fn unknown_ioctl_on_vcpu_fd_is_einval(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    check_errno!(
        raw::ioctl(vcpu.as_fd(), UNKNOWN_KVM_IOCTL, Arg::Value(0)),
        libc::EINVAL
    );
    check_errno!(
        raw::ioctl(vcpu.as_fd(), FOREIGN_IOCTL, Arg::Value(0)),
        libc::EINVAL
    );
    Ok(())
}

fn bad_pointer_on_system_fd_is_efault(ctx: &Ctx) -> TestResult {
    check_efault!(ctx.sys.as_fd(), KVM_GET_SUPPORTED_CPUID);
    Ok(())
}

fn bad_pointer_on_vm_fd_is_efault(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check_efault!(vm.as_fd(), KVM_SET_USER_MEMORY_REGION);
    Ok(())
}

fn bad_pointer_on_vcpu_fd_is_efault(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    check_efault!(vcpu.as_fd(), KVM_SET_REGS, KVM_GET_REGS);
    Ok(())
}

fn device_node_is_a_root_only_char_device(ctx: &Ctx) -> TestResult {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = check_ok!(std::fs::metadata(&ctx.path));
    check!(
        meta.file_type().is_char_device(),
        "{} is not a character device",
        ctx.path.display()
    );
    check_eq!(meta.permissions().mode() & 0o777, 0o600);
    Ok(())
}

fn msr_index_list_reports_its_size_then_the_msrs(ctx: &Ctx) -> TestResult {
    // Too small a buffer: E2BIG, with the count needed written back.
    let mut empty = check_ok!(MsrIndexList::new(0));
    check_errno!(ctx.sys.get_msr_index_list(&mut empty), libc::E2BIG);
    let needed = empty.nmsrs();
    check!(needed > 0, "KVM_GET_MSR_INDEX_LIST wrote back nmsrs 0");
    let mut list = check_ok!(MsrIndexList::new(needed as usize));
    check_ok!(ctx.sys.get_msr_index_list(&mut list));
    check_eq!(list.nmsrs(), needed);
    // The MSRs every 64-bit guest needs saved and restored are among them.
    for msr in [
        0xc000_0081u32,
        0xc000_0082,
        0xc000_0084,
        0xc000_0102,
        0x174,
        0x175,
        0x176,
    ] {
        check!(
            list.indices().contains(&msr),
            "MSR {msr:#x} is not in the index list"
        );
    }
    Ok(())
}

/// The feature MSRs (`KVM_CAP_GET_MSR_FEATURES`): their list reports its
/// size like the MSR index list, MSR_PLATFORM_INFO is among them with
/// CPUID faulting offered (bit 31), the device fd's `KVM_GET_MSRS` reads
/// them, reads 0 for another MSR of the index list (the TSC) and stops at
/// an MSR of neither list, and a new vCPU starts with
/// what is offered (KVM's "stuff feature MSRs" quirk).
fn feature_msrs_are_listed_read_on_the_device_and_given_to_new_vcpus(ctx: &Ctx) -> TestResult {
    const PLATFORM_INFO: u32 = 0xce;
    check_eq!(
        check_ok!(ctx.sys.check_extension(KVM_CAP_GET_MSR_FEATURES)),
        1
    );
    let mut empty = check_ok!(MsrIndexList::new(0));
    check_errno!(ctx.sys.get_msr_feature_index_list(&mut empty), libc::E2BIG);
    let needed = empty.nmsrs();
    let mut list = check_ok!(MsrIndexList::new(needed as usize));
    check_ok!(ctx.sys.get_msr_feature_index_list(&mut list));
    check!(
        list.indices().contains(&PLATFORM_INFO),
        "MSR_PLATFORM_INFO is not a feature MSR: {:#x?}",
        list.indices()
    );
    let mut msrs = check_ok!(MsrEntries::from_indices(&[
        PLATFORM_INFO,
        0x10,
        0x2ff0_0000
    ]));
    check_eq!(
        check_ok!(ctx.sys.get_feature_msrs(&mut msrs)),
        2,
        "MSRs read before one that is in neither list"
    );
    check_eq!(msrs.get(0x10).unwrap_or(u64::MAX), 0, "the TSC");
    let offered = msrs.get(PLATFORM_INFO).unwrap_or(0);
    check_eq_hex!(offered & (1 << 31), 1u64 << 31, "CPUID faulting offered");
    for msr in list.indices() {
        let mut one = check_ok!(MsrEntries::from_indices(&[*msr]));
        check_eq!(
            check_ok!(ctx.sys.get_feature_msrs(&mut one)),
            1,
            "MSR {msr:#x}"
        );
    }
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let mut got = check_ok!(MsrEntries::from_indices(&[PLATFORM_INFO]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut got)), 1);
    check_eq_hex!(got.get(PLATFORM_INFO).unwrap_or(0), offered, "a new vCPU's");
    Ok(())
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            device_node_is_a_root_only_char_device,
            msr_index_list_reports_its_size_then_the_msrs,
            feature_msrs_are_listed_read_on_the_device_and_given_to_new_vcpus,
            api_version_is_12,
            api_version_with_argument_is_einval,
            unknown_cap_is_zero,
            cap_user_memory_is_reported,
            cap_nr_memslots_is_positive,
            cap_vcpu_limits_are_consistent,
            vm_fd_answers_the_same_caps,
            vcpu_mmap_size_covers_run_and_pio_pages,
            vcpu_mmap_size_with_argument_is_einval,
            create_vm_returns_cloexec_fd,
            create_vm_invalid_type_is_einval,
            create_vm_takes_the_types_kvm_cap_vm_types_names,
            supported_cpuid_nent_0_is_e2big,
            supported_cpuid_nent_1_is_e2big,
            supported_cpuid_256_entries_has_leaf_0,
            supported_cpuid_nent_above_256_is_clamped,
            unknown_ioctl_on_system_fd_is_einval,
            unknown_ioctl_on_vm_fd_is_enotty,
            unknown_ioctl_on_vcpu_fd_is_einval,
            bad_pointer_on_system_fd_is_efault,
            bad_pointer_on_vm_fd_is_efault,
            bad_pointer_on_vcpu_fd_is_efault,
        ],
    )
}
