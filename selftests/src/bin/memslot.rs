//! Memory slots: the rules of KVM_SET_USER_MEMORY_REGION(2) as
//! virt/kvm/kvm_main.c (kvm_set_memory_region) enforces them, and the x86
//! VM addresses KVM_SET_TSS_ADDR / KVM_SET_IDENTITY_MAP_ADDR.
//!
//! Usage: `memslot [DEVICE]` (default `/dev/rkvm`).

use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::sync::Arc;

use ksft::{Status, TestResult, check_errno, check_ok, diag, skip, tests};
use kvm_abi::ioctls;
use kvm_abi::raw::{self, Arg};
use kvm_abi::sys::{
    KVM_CAP_GUEST_MEMFD, KVM_CAP_MULTI_ADDRESS_SPACE, KVM_CAP_READONLY_MEM, KVM_CAP_USER_MEMORY2,
    KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
};
use kvm_abi::{GuestMemory, MemoryRegion, PAGE_SIZE, UserAddr, Vm};
use rkvm_selftests::Ctx;

const PAGE: u64 = PAGE_SIZE as u64;

/// `pages` pages of anonymous memory.
fn memory(pages: usize) -> kvm_abi::Result<Arc<GuestMemory>> {
    GuestMemory::new(pages * PAGE_SIZE).map(Arc::new)
}

/// A slot of `pages` pages at `gpa`, backed from the start of `mem`.
fn region(slot: u32, gpa: u64, pages: u64, mem: &Arc<GuestMemory>) -> MemoryRegion<'_> {
    MemoryRegion {
        memory_size: pages * PAGE,
        ..MemoryRegion::new(slot, gpa, mem)
    }
}

/// A VM's answer to `cap`, as a count.
fn vm_cap(vm: &Vm, cap: u32) -> Result<u32, Status> {
    let n = vm.check_extension(cap)?;
    u32::try_from(n).map_err(|_| Status::Fail(format!("capability {cap} is {n}")))
}

fn basic_slot_is_accepted(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(4));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 4, &mem)));
    check_ok!(vm.set_user_memory_region(&region(1, 0x10_0000, 1, &mem)));
    Ok(())
}

fn setting_the_same_slot_again_is_a_no_op(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(2));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 2, &mem)));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 2, &mem)));
    Ok(())
}

fn unaligned_gpa_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(2));
    check_errno!(
        vm.set_user_memory_region(&region(0, 0x800, 1, &mem)),
        libc::EINVAL
    );
    check_errno!(
        vm.set_user_memory_region(&region(0, 1, 1, &mem)),
        libc::EINVAL
    );
    Ok(())
}

fn unaligned_size_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(2));
    let r = MemoryRegion {
        memory_size: PAGE + 1,
        ..MemoryRegion::new(0, 0, &mem)
    };
    check_errno!(vm.set_user_memory_region(&r), libc::EINVAL);
    let r = MemoryRegion {
        memory_size: PAGE / 2,
        ..MemoryRegion::new(0, 0, &mem)
    };
    check_errno!(vm.set_user_memory_region(&r), libc::EINVAL);
    Ok(())
}

fn unaligned_userspace_addr_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(2));
    let r = MemoryRegion {
        memory_size: PAGE,
        userspace: UserAddr::Memory {
            mem: &mem,
            offset: 0x800,
        },
        ..MemoryRegion::new(0, 0, &mem)
    };
    check_errno!(vm.set_user_memory_region(&r), libc::EINVAL);
    Ok(())
}

fn slot_id_at_nr_memslots_is_einval(ctx: &Ctx) -> TestResult {
    let nr = ctx.nr_memslots()?;
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(1));
    check_ok!(vm.set_user_memory_region(&region(nr - 1, 0, 1, &mem)));
    check_errno!(
        vm.set_user_memory_region(&region(nr, PAGE, 1, &mem)),
        libc::EINVAL,
        "slot {nr}"
    );
    check_errno!(
        vm.set_user_memory_region(&region(0xffff, PAGE, 1, &mem)),
        libc::EINVAL,
        "slot 0xffff"
    );
    Ok(())
}

fn address_space_beyond_cap_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let spaces = vm_cap(&vm, KVM_CAP_MULTI_ADDRESS_SPACE)?.max(1);
    diag!("address spaces: {spaces}");
    let mem = check_ok!(memory(1));
    let slot = spaces << 16;
    check_errno!(
        vm.set_user_memory_region(&region(slot, 0, 1, &mem)),
        libc::EINVAL,
        "slot {slot:#x}"
    );
    Ok(())
}

fn second_address_space_is_separate_when_reported(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let spaces = vm_cap(&vm, KVM_CAP_MULTI_ADDRESS_SPACE)?;
    if spaces < 2 {
        skip!("KVM_CAP_MULTI_ADDRESS_SPACE is {spaces}");
    }
    let mem = check_ok!(memory(1));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 1, &mem)));
    // The same slot id and range in address space 1 do not overlap slot 0.
    check_ok!(vm.set_user_memory_region(&region(1 << 16, 0, 1, &mem)));
    Ok(())
}

fn overlapping_slots_are_eexist(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(4));
    check_ok!(vm.set_user_memory_region(&region(0, 0x10_0000, 2, &mem)));
    check_errno!(
        vm.set_user_memory_region(&region(1, 0x10_0000, 2, &mem)),
        libc::EEXIST,
        "same range"
    );
    check_errno!(
        vm.set_user_memory_region(&region(1, 0x10_1000, 2, &mem)),
        libc::EEXIST,
        "overlaps the end"
    );
    check_errno!(
        vm.set_user_memory_region(&region(1, 0x0f_f000, 2, &mem)),
        libc::EEXIST,
        "overlaps the start"
    );
    check_errno!(
        vm.set_user_memory_region(&region(1, 0x0f_f000, 4, &mem)),
        libc::EEXIST,
        "covers it"
    );
    // Adjacent ranges do not overlap.
    check_ok!(vm.set_user_memory_region(&region(1, 0x10_2000, 2, &mem)));
    check_ok!(vm.set_user_memory_region(&region(2, 0x0f_e000, 2, &mem)));
    Ok(())
}

fn size_zero_deletes_the_slot(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(2));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 2, &mem)));
    check_errno!(
        vm.set_user_memory_region(&region(1, 0, 2, &mem)),
        libc::EEXIST,
        "before deletion"
    );
    check_ok!(vm.set_user_memory_region(&MemoryRegion::delete(0)));
    check_ok!(vm.set_user_memory_region(&region(1, 0, 2, &mem)));
    // The deleted slot id can be used again, elsewhere.
    check_ok!(vm.set_user_memory_region(&region(0, 0x10_0000, 2, &mem)));
    Ok(())
}

/// kvm_set_memory_region() refuses to delete a slot that does not exist.
fn deleting_a_missing_slot_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check_errno!(
        vm.set_user_memory_region(&MemoryRegion::delete(5)),
        libc::EINVAL
    );
    Ok(())
}

fn moving_a_slot_frees_the_old_range(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(4));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 2, &mem)));
    check_ok!(vm.set_user_memory_region(&region(0, 0x10_0000, 2, &mem)));
    check_ok!(vm.set_user_memory_region(&region(1, 0, 2, &mem)));
    check_errno!(
        vm.set_user_memory_region(&region(2, 0x10_0000, 1, &mem)),
        libc::EEXIST,
        "new range"
    );
    Ok(())
}

fn moving_onto_another_slot_is_eexist(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(4));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 2, &mem)));
    check_ok!(vm.set_user_memory_region(&region(1, 0x10_0000, 2, &mem)));
    check_errno!(
        vm.set_user_memory_region(&region(0, 0x10_1000, 2, &mem)),
        libc::EEXIST
    );
    Ok(())
}

fn resizing_a_slot_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(4));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 2, &mem)));
    check_errno!(
        vm.set_user_memory_region(&region(0, 0, 3, &mem)),
        libc::EINVAL,
        "grow"
    );
    check_errno!(
        vm.set_user_memory_region(&region(0, 0, 1, &mem)),
        libc::EINVAL,
        "shrink"
    );
    check_errno!(
        vm.set_user_memory_region(&region(0, 0x10_0000, 3, &mem)),
        libc::EINVAL,
        "move and grow"
    );
    Ok(())
}

fn changing_userspace_addr_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(4));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 2, &mem)));
    let r = MemoryRegion {
        userspace: UserAddr::Memory {
            mem: &mem,
            offset: PAGE,
        },
        ..region(0, 0, 2, &mem)
    };
    check_errno!(vm.set_user_memory_region(&r), libc::EINVAL);
    Ok(())
}

fn dirty_logging_can_be_toggled(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(2));
    let plain = region(0, 0, 2, &mem);
    let logged = MemoryRegion {
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        ..plain
    };
    check_ok!(vm.set_user_memory_region(&logged));
    check_ok!(vm.set_user_memory_region(&plain));
    check_ok!(vm.set_user_memory_region(&logged));
    // The log comes and goes with the flag: a slot that stopped logging has none.
    let mut bitmap = [0u64; 1];
    check_ok!(vm.get_dirty_log(0, 2, &mut bitmap));
    check_ok!(vm.set_user_memory_region(&plain));
    check_errno!(
        vm.get_dirty_log(0, 2, &mut bitmap),
        libc::ENOENT,
        "logging off"
    );
    Ok(())
}

fn unknown_flags_are_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(1));
    for flag in [1 << 3, 1 << 7, 1 << 31] {
        let r = MemoryRegion {
            flags: flag,
            ..region(0, 0, 1, &mem)
        };
        check_errno!(
            vm.set_user_memory_region(&r),
            libc::EINVAL,
            "flags {flag:#x}"
        );
    }
    Ok(())
}

/// KVM_MEM_GUEST_MEMFD is not among KVM_SET_USER_MEMORY_REGION's flags.
fn guest_memfd_flag_is_einval_in_v1(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(1));
    let r = MemoryRegion {
        flags: KVM_MEM_GUEST_MEMFD,
        ..region(0, 0, 1, &mem)
    };
    check_errno!(vm.set_user_memory_region(&r), libc::EINVAL);
    Ok(())
}

fn readonly_flag_follows_the_capability(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let readonly = vm_cap(&vm, KVM_CAP_READONLY_MEM)?;
    diag!("KVM_CAP_READONLY_MEM (VM) = {readonly}");
    let mem = check_ok!(memory(2));
    let r = MemoryRegion {
        flags: KVM_MEM_READONLY,
        ..region(0, 0, 2, &mem)
    };
    if readonly == 0 {
        check_errno!(vm.set_user_memory_region(&r), libc::EINVAL);
    } else {
        check_ok!(vm.set_user_memory_region(&r));
        // Making a read-only slot writable (or back) is refused.
        check_errno!(
            vm.set_user_memory_region(&region(0, 0, 2, &mem)),
            libc::EINVAL,
            "clear READONLY"
        );
    }
    Ok(())
}

fn kernel_userspace_addr_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    for addr in [0xffff_8000_0000_0000, 0xffff_ffff_ffff_f000] {
        let r = MemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: 2 * PAGE,
            userspace: UserAddr::Kernel(addr),
            guest_memfd: 0,
            guest_memfd_offset: 0,
        };
        check_errno!(
            vm.set_user_memory_region(&r),
            libc::EINVAL,
            "userspace_addr {addr:#x}"
        );
    }
    Ok(())
}

fn gpa_range_overflow_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(2));
    check_errno!(
        vm.set_user_memory_region(&region(0, !(PAGE - 1), 2, &mem)),
        libc::EINVAL
    );
    Ok(())
}

fn bad_pointer_is_efault(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    for req in [
        ioctls::KVM_SET_USER_MEMORY_REGION,
        ioctls::KVM_SET_USER_MEMORY_REGION2,
    ] {
        check_errno!(
            raw::ioctl(vm.as_fd(), req, Arg::UnmappedPointer),
            libc::EFAULT,
            "request {req:#x}"
        );
    }
    Ok(())
}

fn needs_memory2(vm: &Vm) -> TestResult {
    let n = vm.check_extension(KVM_CAP_USER_MEMORY2)?;
    if n == 0 {
        skip!("KVM_CAP_USER_MEMORY2 is 0");
    }
    Ok(())
}

fn memory_region2_follows_the_same_rules(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    needs_memory2(&vm)?;
    let mem = check_ok!(memory(4));
    check_ok!(vm.set_user_memory_region2(&region(0, 0, 2, &mem)));
    check_errno!(
        vm.set_user_memory_region2(&region(1, 0x1000, 2, &mem)),
        libc::EEXIST,
        "overlap"
    );
    check_errno!(
        vm.set_user_memory_region2(&region(1, 0x800, 1, &mem)),
        libc::EINVAL,
        "unaligned gpa"
    );
    check_errno!(
        vm.set_user_memory_region2(&region(0, 0, 3, &mem)),
        libc::EINVAL,
        "resize"
    );
    let r = MemoryRegion {
        flags: 1 << 7,
        ..region(1, 0x10_0000, 1, &mem)
    };
    check_errno!(vm.set_user_memory_region2(&r), libc::EINVAL, "unknown flag");
    // Slots made with either request are the same slots.
    check_errno!(
        vm.set_user_memory_region(&region(1, 0, 1, &mem)),
        libc::EEXIST,
        "v1 sees v2 slot"
    );
    check_ok!(vm.set_user_memory_region(&MemoryRegion::delete(0)));
    check_ok!(vm.set_user_memory_region2(&region(1, 0, 1, &mem)));
    Ok(())
}

/// Without KVM_CAP_GUEST_MEMFD the flag is unknown (EINVAL); with it, an fd
/// that is not a guest_memfd (here the VM fd) is refused with EINVAL too
/// (kvm_gmem_prepare_memory_region).
fn guest_memfd_flag_without_guest_memfd_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    needs_memory2(&vm)?;
    diag!(
        "KVM_CAP_GUEST_MEMFD (VM) = {}",
        vm_cap(&vm, KVM_CAP_GUEST_MEMFD)?
    );
    let mem = check_ok!(memory(1));
    let not_gmem = u32::try_from(vm.as_fd().as_raw_fd())?;
    let r = MemoryRegion {
        flags: KVM_MEM_GUEST_MEMFD,
        guest_memfd: not_gmem,
        ..region(0, 0, 1, &mem)
    };
    check_errno!(vm.set_user_memory_region2(&r), libc::EINVAL);
    Ok(())
}

fn tss_addr_is_accepted_on_a_new_vm(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check_ok!(vm.set_tss_addr(0xfffb_d000));
    Ok(())
}

/// The three TSS pages must end at or below 4 GiB (kvm_vm_ioctl_set_tss_addr).
fn tss_addr_above_4g_minus_3_pages_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check_errno!(vm.set_tss_addr(0xffff_f000), libc::EINVAL);
    check_errno!(vm.set_tss_addr(0x1_0000_0000), libc::EINVAL);
    Ok(())
}

fn identity_map_addr_is_accepted_before_vcpus(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check_ok!(vm.set_identity_map_addr(0xfffb_c000));
    Ok(())
}

/// x86.c refuses KVM_SET_IDENTITY_MAP_ADDR once a vCPU was created.
fn identity_map_addr_after_vcpu_creation_is_einval(ctx: &Ctx) -> TestResult {
    let (vm, _vcpu) = check_ok!(ctx.vm_with_vcpu());
    check_errno!(vm.set_identity_map_addr(0xfffb_c000), libc::EINVAL);
    Ok(())
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            basic_slot_is_accepted,
            setting_the_same_slot_again_is_a_no_op,
            unaligned_gpa_is_einval,
            unaligned_size_is_einval,
            unaligned_userspace_addr_is_einval,
            slot_id_at_nr_memslots_is_einval,
            address_space_beyond_cap_is_einval,
            second_address_space_is_separate_when_reported,
            overlapping_slots_are_eexist,
            size_zero_deletes_the_slot,
            deleting_a_missing_slot_is_einval,
            moving_a_slot_frees_the_old_range,
            moving_onto_another_slot_is_eexist,
            resizing_a_slot_is_einval,
            changing_userspace_addr_is_einval,
            dirty_logging_can_be_toggled,
            unknown_flags_are_einval,
            guest_memfd_flag_is_einval_in_v1,
            readonly_flag_follows_the_capability,
            kernel_userspace_addr_is_einval,
            gpa_range_overflow_is_einval,
            bad_pointer_is_efault,
            memory_region2_follows_the_same_rules,
            guest_memfd_flag_without_guest_memfd_is_einval,
            tss_addr_is_accepted_on_a_new_vm,
            tss_addr_above_4g_minus_3_pages_is_einval,
            identity_map_addr_is_accepted_before_vcpus,
            identity_map_addr_after_vcpu_creation_is_einval,
        ],
    )
}
