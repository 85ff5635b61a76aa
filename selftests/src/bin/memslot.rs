//! Memory slots: the rules of KVM_SET_USER_MEMORY_REGION(2) as
//! virt/kvm/kvm_main.c (kvm_set_memory_region) enforces them, guest_memfd
//! files and the slots bound to them (virt/kvm/guest_memfd.c), and the x86
//! VM addresses KVM_SET_TSS_ADDR / KVM_SET_IDENTITY_MAP_ADDR.
//!
//! Usage: `memslot [DEVICE]` (default `/dev/rkvm`).

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Arc;

use ksft::{
    Status, TestResult, check, check_eq, check_eq_hex, check_errno, check_ok, diag, skip, tests,
};
use kvm_abi::ioctls;
use kvm_abi::raw::{self, Arg};
use kvm_abi::sys::{
    KVM_CAP_GUEST_MEMFD, KVM_CAP_GUEST_MEMFD_FLAGS, KVM_CAP_MULTI_ADDRESS_SPACE,
    KVM_CAP_READONLY_MEM, KVM_CAP_USER_MEMORY2, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
};
use kvm_abi::{GuestMemory, MemoryRegion, PAGE_SIZE, UserAddr, Vm};
use nix::fcntl::{FallocateFlags, FcntlArg, FdFlag, fallocate, fcntl};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::stat::{SFlag, fstat};
use rkvm_selftests::Ctx;
use rkvm_selftests::guest::{GuestVm, Mode};

const PAGE: u64 = PAGE_SIZE as u64;
/// The page size as a file offset or length (`off_t`).
const PAGE_OFF: i64 = 4096;

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

/// KVM_MEM_GUEST_MEMFD is not among KVM_SET_USER_MEMORY_REGION's flags:
/// refused before anything else is looked at (here the range overlaps a
/// slot, which would be EEXIST, and there is no guest_memfd).
fn guest_memfd_flag_is_einval_in_v1(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let mem = check_ok!(memory(1));
    check_ok!(vm.set_user_memory_region(&region(0, 0, 1, &mem)));
    let r = MemoryRegion {
        flags: KVM_MEM_GUEST_MEMFD,
        ..region(1, 0, 1, &mem)
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

/// KVM_CAP_GUEST_MEMFD on the VM (with KVM_CAP_USER_MEMORY2), or a skip.
fn needs_guest_memfd(vm: &Vm) -> TestResult {
    needs_memory2(vm)?;
    if vm_cap(vm, KVM_CAP_GUEST_MEMFD)? == 0 {
        skip!("KVM_CAP_GUEST_MEMFD is 0");
    }
    Ok(())
}

/// A guest_memfd of `pages` pages, without flags.
fn gmem(vm: &Vm, pages: u64) -> Result<OwnedFd, Status> {
    Ok(check_ok!(vm.create_guest_memfd(pages * PAGE, 0)))
}

/// A slot of `pages` pages at `gpa`, backed by `mem` and bound to `fd`
/// from byte `offset`.
fn gmem_region<'a>(
    slot: u32,
    gpa: u64,
    pages: u64,
    mem: &'a Arc<GuestMemory>,
    fd: &impl AsRawFd,
    offset: u64,
) -> MemoryRegion<'a> {
    MemoryRegion {
        flags: KVM_MEM_GUEST_MEMFD,
        guest_memfd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        guest_memfd_offset: offset,
        ..region(slot, gpa, pages, mem)
    }
}

/// A shared mapping of `len` bytes of `fd`, undone at once if made.
fn try_mmap(fd: BorrowedFd<'_>, len: usize) -> nix::Result<()> {
    let len = NonZeroUsize::new(len).ok_or(nix::errno::Errno::EINVAL)?;
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a new mapping where the kernel chooses; nothing refers to it
    // and it is unmapped right away.
    let addr = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) }?;
    // SAFETY: the mapping made just above, of `len` bytes, unused.
    unsafe { munmap(addr, len.get()) }
}

/// A guest_memfd is a file of the size asked for, with an inode of its
/// own, whose size and mode cannot change, that cannot be read, written,
/// sought or mapped without GUEST_MEMFD_FLAG_MMAP, and is not closed on
/// exec (KVM installs it without O_CLOEXEC). rkvm's inode keeps the
/// anonymous inodes' operations (docs/abi.md, "guest_memfd"): fstat hides
/// its type and a change of size or mode is EOPNOTSUPP, where KVM's own
/// operations show S_IFREG and say EINVAL.
fn guest_memfd_is_a_regular_file_of_its_size(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    needs_guest_memfd(&vm)?;
    let one = gmem(&vm, 1)?;
    let two = gmem(&vm, 2)?;
    let (st1, st2) = (check_ok!(fstat(&one)), check_ok!(fstat(&two)));
    let (file_type, no_change) = if ctx.is_rkvm() {
        (0, libc::EOPNOTSUPP)
    } else {
        (SFlag::S_IFREG.bits(), libc::EINVAL)
    };
    check_eq_hex!(st1.st_mode & SFlag::S_IFMT.bits(), file_type, "st_mode");
    check_eq!(st1.st_size, PAGE_OFF);
    check_eq!(st2.st_size, 2 * PAGE_OFF);
    check_eq!(st1.st_blksize, PAGE_OFF);
    check!(
        st1.st_ino != st2.st_ino,
        "both files have inode {}",
        st1.st_ino
    );
    let fd_flags = check_ok!(fcntl(&one, FcntlArg::F_GETFD));
    check!(
        !FdFlag::from_bits_truncate(fd_flags).contains(FdFlag::FD_CLOEXEC),
        "close-on-exec"
    );
    // Its size and mode are fixed.
    check_errno!(
        nix::unistd::ftruncate(&one, 2 * PAGE_OFF),
        no_change,
        "ftruncate"
    );
    check_errno!(
        nix::sys::stat::fchmod(&one, nix::sys::stat::Mode::S_IRUSR),
        no_change,
        "fchmod"
    );
    check_eq!(check_ok!(fstat(&one)).st_size, PAGE_OFF);
    check_errno!(
        nix::unistd::lseek(&one, 0, nix::unistd::Whence::SeekSet),
        libc::ESPIPE,
        "lseek"
    );
    let mut buf = [0u8; 64];
    check_errno!(nix::unistd::read(&one, &mut buf), libc::EINVAL, "read");
    check_errno!(nix::unistd::write(&one, &buf), libc::EINVAL, "write");
    check_errno!(try_mmap(one.as_fd(), PAGE_SIZE), libc::ENODEV, "mmap");
    // No ioctls either.
    check_errno!(
        raw::ioctl(one.as_fd(), ioctls::KVM_CHECK_EXTENSION, Arg::Value(0)),
        libc::ENOTTY
    );
    Ok(())
}

/// KVM_CREATE_GUEST_MEMFD takes a positive multiple of the page size and
/// only the flags KVM_CAP_GUEST_MEMFD_FLAGS offers (as Linux's
/// guest_memfd_test asks, one bit at a time).
fn guest_memfd_creation_checks_size_and_flags(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    needs_guest_memfd(&vm)?;
    for size in [0, 1, PAGE - 1, PAGE + 1, 1 << 63] {
        check_errno!(
            vm.create_guest_memfd(size, 0),
            libc::EINVAL,
            "size {size:#x}"
        );
    }
    let offered = u64::try_from(check_ok!(vm.check_extension(KVM_CAP_GUEST_MEMFD_FLAGS)))?;
    diag!("KVM_CAP_GUEST_MEMFD_FLAGS (VM) = {offered:#x}");
    for bit in 0..64 {
        let flag = 1u64 << bit;
        if offered & flag != 0 {
            if let Err(e) = vm.create_guest_memfd(PAGE, flag) {
                ksft::fail!("flag {flag:#x} is offered but refused: {e}");
            }
        } else {
            check_errno!(
                vm.create_guest_memfd(PAGE, flag),
                libc::EINVAL,
                "flag {flag:#x}"
            );
        }
    }
    check_errno!(
        raw::ioctl(
            vm.as_fd(),
            ioctls::KVM_CREATE_GUEST_MEMFD,
            Arg::UnmappedPointer
        ),
        libc::EFAULT
    );
    Ok(())
}

const KEEP: FallocateFlags = FallocateFlags::FALLOC_FL_KEEP_SIZE;
const PUNCH: FallocateFlags =
    FallocateFlags::FALLOC_FL_KEEP_SIZE.union(FallocateFlags::FALLOC_FL_PUNCH_HOLE);

/// fallocate on a guest_memfd: KEEP_SIZE always (the size is fixed),
/// PUNCH_HOLE the only other mode, page-aligned ranges, allocation inside
/// the file and holes anywhere (Linux's guest_memfd_test, and the modes
/// it does not try).
fn guest_memfd_fallocate_follows_kvm(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    needs_guest_memfd(&vm)?;
    let fd = gmem(&vm, 4)?;
    let (p, size) = (PAGE_OFF, 4 * PAGE_OFF);
    check_ok!(fallocate(&fd, KEEP, 0, size));
    check_errno!(
        fallocate(&fd, PUNCH, p - 1, p),
        libc::EINVAL,
        "unaligned offset"
    );
    check_errno!(
        fallocate(&fd, PUNCH, p, p - 1),
        libc::EINVAL,
        "unaligned length"
    );
    check_errno!(
        fallocate(&fd, KEEP, 1, p),
        libc::EINVAL,
        "unaligned allocation"
    );
    check_errno!(
        fallocate(&fd, KEEP, size, p),
        libc::EINVAL,
        "allocate at the end"
    );
    check_errno!(
        fallocate(&fd, KEEP, size + p, p),
        libc::EINVAL,
        "allocate past the end"
    );
    check_errno!(
        fallocate(&fd, KEEP, 3 * p, 2 * p),
        libc::EINVAL,
        "allocate across the end"
    );
    check_ok!(fallocate(&fd, PUNCH, size, p));
    check_ok!(fallocate(&fd, PUNCH, size + p, p));
    check_ok!(fallocate(&fd, PUNCH, p, p));
    check_ok!(fallocate(&fd, KEEP, p, p));
    // A successful fallocate updates the file's times; a refused one not.
    let before = check_ok!(fstat(&fd));
    std::thread::sleep(std::time::Duration::from_millis(20));
    check_errno!(fallocate(&fd, KEEP, size, p), libc::EINVAL);
    let refused = check_ok!(fstat(&fd));
    check_ok!(fallocate(&fd, PUNCH, 0, p));
    let after = check_ok!(fstat(&fd));
    let mtime = |st: &nix::sys::stat::FileStat| (st.st_mtime, st.st_mtime_nsec);
    check_eq!(
        mtime(&refused),
        mtime(&before),
        "mtime after a refused fallocate"
    );
    check!(
        mtime(&after) > mtime(&before),
        "mtime {:?} after fallocate, {:?} before",
        mtime(&after),
        mtime(&before)
    );
    for (mode, what) in [
        (FallocateFlags::empty(), "without KEEP_SIZE"),
        (FallocateFlags::FALLOC_FL_ZERO_RANGE, "ZERO_RANGE"),
        (
            FallocateFlags::FALLOC_FL_ZERO_RANGE | KEEP,
            "ZERO_RANGE | KEEP_SIZE",
        ),
        (FallocateFlags::FALLOC_FL_COLLAPSE_RANGE, "COLLAPSE_RANGE"),
        (FallocateFlags::FALLOC_FL_INSERT_RANGE, "INSERT_RANGE"),
    ] {
        check_errno!(fallocate(&fd, mode, 0, p), libc::EOPNOTSUPP, "{what}");
    }
    Ok(())
}

/// `Unevictable:` of /proc/meminfo, in bytes: where a guest_memfd's pages
/// are counted (its pages are never evicted, in KVM and in rkvm).
fn unevictable_bytes() -> Result<u64, Status> {
    let meminfo = check_ok!(std::fs::read_to_string("/proc/meminfo"));
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Unevictable:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or_else(|| Status::Fail("no Unevictable: line in /proc/meminfo".into()))?;
    Ok(kib * 1024)
}

/// fallocate allocates real memory and a hole gives it back; creating a
/// file allocates none, and closing it frees what it held.
fn guest_memfd_pages_are_allocated_and_freed(ctx: &Ctx) -> TestResult {
    const MIB: u64 = 1 << 20;
    const SIZE: u64 = 32 * MIB;
    const SIZE_OFF: i64 = 32 << 20;
    let vm = check_ok!(ctx.vm());
    needs_guest_memfd(&vm)?;
    let size = SIZE;
    let before = unevictable_bytes()?;
    let fd = gmem(&vm, size / PAGE)?;
    let created = unevictable_bytes()?;
    check_ok!(fallocate(&fd, KEEP, 0, SIZE_OFF));
    let allocated = unevictable_bytes()?;
    check_ok!(fallocate(&fd, PUNCH, 0, SIZE_OFF / 2));
    let punched = unevictable_bytes()?;
    check_ok!(fallocate(&fd, KEEP, 0, SIZE_OFF));
    drop(fd);
    let closed = unevictable_bytes()?;
    diag!(
        "Unevictable (KiB): {} before, {} created, {} allocated, {} half punched, {} closed",
        before / 1024,
        created / 1024,
        allocated / 1024,
        punched / 1024,
        closed / 1024
    );
    // Per-CPU LRU batches hold back a few pages from the counter.
    let slack = 2 * MIB;
    check!(created < before + slack, "creating allocated memory");
    check!(
        allocated >= created + size - slack,
        "fallocate allocated too little"
    );
    check!(
        punched + size / 2 - slack <= allocated && punched < allocated,
        "the hole freed too little"
    );
    check!(closed < before + slack, "closing the file kept its memory");
    Ok(())
}

/// A slot binds a range of a guest_memfd of its own VM; ranges of one file
/// never overlap, whatever the address space; a guest_memfd slot cannot log dirty pages, be read-only,
/// move or change, only be deleted; a fd that is no guest_memfd is EINVAL,
/// no fd EBADF (kvm_set_memory_region, kvm_gmem_bind).
fn guest_memfd_slots_bind_ranges_of_their_vms_files(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    needs_guest_memfd(&vm)?;
    let mem = check_ok!(memory(16));
    let fd = gmem(&vm, 16)?;
    let other = gmem(&vm, 16)?;
    // Pages 4..8 of the file.
    check_ok!(vm.set_user_memory_region2(&gmem_region(1, 0, 4, &mem, &fd, 4 * PAGE)));
    for (offset, pages, what) in [
        (7, 2, "pages 7..9"),
        (0, 5, "pages 0..5"),
        (4, 4, "the same pages"),
    ] {
        check_errno!(
            vm.set_user_memory_region2(&gmem_region(2, 0x10_0000, pages, &mem, &fd, offset * PAGE)),
            libc::EEXIST,
            "{what}"
        );
    }
    // In the SMM address space too, where there is one: a file's page backs
    // one slot of the VM.
    if check_ok!(vm.check_extension(KVM_CAP_MULTI_ADDRESS_SPACE)) > 1 {
        check_errno!(
            vm.set_user_memory_region2(&gmem_region(1 << 16 | 1, 0, 4, &mem, &fd, 4 * PAGE)),
            libc::EEXIST,
            "the same pages in address space 1"
        );
    }
    check_ok!(vm.set_user_memory_region2(&gmem_region(2, 0x10_0000, 4, &mem, &fd, 0)));
    check_ok!(vm.set_user_memory_region2(&gmem_region(3, 0x20_0000, 4, &mem, &other, 4 * PAGE)));
    // Outside the file, unaligned, wrapping (Linux's test: ALIGN_DOWN(INT64_MAX)).
    let far = i64::MAX.cast_unsigned() & !(PAGE - 1);
    for (offset, pages, what) in [
        (12 * PAGE, 5, "past the end"),
        (8 * PAGE + 1, 1, "unaligned"),
        (far, 1, "INT64_MAX"),
        (!(PAGE - 1), 2, "wrapping"),
    ] {
        check_errno!(
            vm.set_user_memory_region2(&gmem_region(4, 0x30_0000, pages, &mem, &fd, offset)),
            libc::EINVAL,
            "{what}"
        );
    }
    // Another VM's guest_memfd, and a closed fd.
    let vm2 = check_ok!(ctx.vm());
    let foreign = gmem(&vm2, 16)?;
    check_errno!(
        vm.set_user_memory_region2(&gmem_region(4, 0x30_0000, 1, &mem, &foreign, 0)),
        libc::EINVAL,
        "another VM's file"
    );
    let closed = foreign.as_raw_fd();
    drop(foreign);
    check_errno!(
        vm.set_user_memory_region2(&gmem_region(4, 0x30_0000, 1, &mem, &closed, 0)),
        libc::EBADF,
        "a closed fd"
    );
    // With dirty logging or read-only: not a flag a guest_memfd slot takes.
    for flag in [KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY] {
        let r = MemoryRegion {
            flags: KVM_MEM_GUEST_MEMFD | flag,
            ..gmem_region(4, 0x30_0000, 1, &mem, &fd, 8 * PAGE)
        };
        check_errno!(
            vm.set_user_memory_region2(&r),
            libc::EINVAL,
            "flag {flag:#x}"
        );
    }
    // Slot 1 as it is, moved, without the flag: all refused; deleted, its
    // pages can be bound again.
    check_errno!(
        vm.set_user_memory_region2(&gmem_region(1, 0, 4, &mem, &fd, 4 * PAGE)),
        libc::EINVAL,
        "slot 1 again"
    );
    check_errno!(
        vm.set_user_memory_region2(&gmem_region(1, 0x40_0000, 4, &mem, &fd, 4 * PAGE)),
        libc::EINVAL,
        "slot 1 moved"
    );
    check_errno!(
        vm.set_user_memory_region2(&region(1, 0, 4, &mem)),
        libc::EINVAL,
        "slot 1 without the flag"
    );
    check_ok!(vm.set_user_memory_region2(&MemoryRegion::delete(1)));
    check_ok!(vm.set_user_memory_region2(&gmem_region(1, 0x40_0000, 4, &mem, &fd, 4 * PAGE)));
    Ok(())
}

/// Closing a guest_memfd leaves the slots bound to it in place: their
/// range stays taken, and they can still only be deleted.
fn closing_a_guest_memfd_leaves_its_slots(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    needs_guest_memfd(&vm)?;
    let mem = check_ok!(memory(4));
    let fd = gmem(&vm, 4)?;
    check_ok!(vm.set_user_memory_region2(&gmem_region(1, 0, 4, &mem, &fd, 0)));
    drop(fd);
    check_errno!(
        vm.set_user_memory_region2(&region(2, 0, 1, &mem)),
        libc::EEXIST,
        "the slot's range"
    );
    check_errno!(
        vm.set_user_memory_region2(&region(1, 0x10_0000, 4, &mem)),
        libc::EINVAL,
        "changing the slot"
    );
    check_ok!(vm.set_user_memory_region2(&MemoryRegion::delete(1)));
    check_ok!(vm.set_user_memory_region2(&region(2, 0, 1, &mem)));
    Ok(())
}

/// Guest-physical address of the guest_memfd slot the guest uses.
const GMEM_SLOT_GPA: u64 = 0x1000_0000;

rkvm_selftests::guest! {
    fn gmem_slot_guest;
    ".code64",
    "mov $0x10000000, %edi",
    "mov 0x1008(%rdi), %rbx",
    "movq $0x6e3e, 0x2010(%rdi)",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// Without GUEST_MEMFD_FLAG_MMAP the file's pages are private memory, which
/// a default VM does not have: its guest reads and writes a guest_memfd
/// slot through the slot's user memory, as any other slot.
fn the_guest_uses_a_guest_memfd_slots_user_memory(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, gmem_slot_guest())?;
    needs_guest_memfd(&vm.vm)?;
    let mem = check_ok!(memory(4));
    check_ok!(mem.write_u64(0x1008, 0x9e3_f00d));
    let fd = gmem(&vm.vm, 4)?;
    check_ok!(fallocate(&fd, KEEP, 0, 4 * PAGE_OFF));
    check_ok!(
        vm.vm
            .set_user_memory_region2(&gmem_region(1, GMEM_SLOT_GPA, 4, &mem, &fd, 0))
    );
    let mut vcpu = vm.add_vcpu(0)?;
    let [rbx, _, _] = vcpu.sync()?;
    check_eq_hex!(rbx, 0x9e3_f00du64, "the guest's read");
    check_eq_hex!(
        check_ok!(mem.read_u64(0x2010)),
        0x6e3eu64,
        "the guest's write"
    );
    vcpu.done()
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
            guest_memfd_is_a_regular_file_of_its_size,
            guest_memfd_creation_checks_size_and_flags,
            guest_memfd_fallocate_follows_kvm,
            guest_memfd_pages_are_allocated_and_freed,
            guest_memfd_slots_bind_ranges_of_their_vms_files,
            closing_a_guest_memfd_leaves_its_slots,
            the_guest_uses_a_guest_memfd_slots_user_memory,
            tss_addr_is_accepted_on_a_new_vm,
            tss_addr_above_4g_minus_3_pages_is_einval,
            identity_map_addr_is_accepted_before_vcpus,
            identity_map_addr_after_vcpu_creation_is_einval,
        ],
    )
}
