//! Guest memory beyond plain slots: read-only slots (reads see the host's
//! memory, writes exit to user space as MMIO) and slots backed by
//! transparent huge pages (mapped with 2 MiB second-level pages, counted in
//! the VM's debugfs `pages_2m`, which rkvm and KVM both have).
//!
//! Usage: `memory [DEVICE]` (default `/dev/rkvm`).

use std::process::ExitCode;
use std::sync::Arc;

use ksft::{TestResult, check, check_eq, check_eq_hex, check_errno, check_ok, diag, tests};
use kvm_abi::sys::{KVM_CAP_PRE_FAULT_MEMORY, KVM_MEM_READONLY};
use kvm_abi::{GuestMemory, MemoryRegion, VcpuExit};
use rkvm_selftests::guest::{GuestVm, Mode, describe};
use rkvm_selftests::{Ctx, guest};

/// Where the tests put their second slot (identity-mapped by the guest's
/// page tables, far from slot 0).
const SLOT1_GPA: u64 = 0x4000_0000;
const HUGE: usize = 2 << 20;

guest! {
    /// Reads the u64 at SLOT1 and reports it; writes the u64 after it; reads
    /// that back and reports it.
    fn readonly_guest;
    ".code64",
    "mov $0x40000000, %r12",
    "mov (%r12), %rbx",
    "ucall UCALL_SYNC",
    "movabs $0x1122334455667788, %rax",
    "mov %rax, 8(%r12)",
    "mov 8(%r12), %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// A read-only slot: the guest reads the host's data; its write becomes a
/// `KVM_EXIT_MMIO` write with the address and data, and the memory stays
/// as it was (the guest reads back the old value).
fn readonly_slot_reads_memory_and_writes_exit_as_mmio(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, readonly_guest())?;
    let mem = Arc::new(check_ok!(GuestMemory::new(HUGE)));
    check_ok!(mem.write(0, &0xfeed_f00d_0000_0001u64.to_le_bytes()));
    check_ok!(mem.write(8, &0x5a5a_5a5a_5a5a_5a5au64.to_le_bytes()));
    check_ok!(vm.vm.set_user_memory_region(&MemoryRegion {
        flags: KVM_MEM_READONLY,
        ..MemoryRegion::new(1, SLOT1_GPA, &mem)
    }));
    let mut vcpu = vm.add_vcpu(0)?;
    let [first, ..] = vcpu.sync()?;
    check_eq_hex!(
        first,
        0xfeed_f00d_0000_0001u64,
        "read through the read-only slot"
    );
    vcpu.run()?;
    match vcpu.exit() {
        VcpuExit::Mmio(m) => {
            check!(m.is_write, "the exit is a write");
            check_eq_hex!(m.phys_addr, SLOT1_GPA + 8, "MMIO address");
            check_eq!(m.len, 8, "MMIO length");
            check_eq_hex!(m.value(), 0x1122_3344_5566_7788u64, "MMIO data");
        }
        other => ksft::fail!("expected an MMIO write, got {}", describe(&other)),
    }
    let [after, ..] = vcpu.sync()?;
    check_eq_hex!(
        after,
        0x5a5a_5a5a_5a5a_5a5au64,
        "the write did not reach memory"
    );
    check_eq_hex!(
        check_ok!(mem.read_u64(8)),
        0x5a5a_5a5a_5a5a_5a5au64,
        "host memory"
    );
    vcpu.done()
}

guest! {
    /// Reads one byte of each 4 KiB page of the 2 MiB at SLOT1 and reports
    /// their sum.
    fn touch_guest;
    ".code64",
    "mov $0x40000000, %r12",
    "xor %ebx, %ebx",
    "mov $512, %ecx",
    "1: movzbl (%r12), %eax",
    "add %eax, %ebx",
    "add $4096, %r12",
    "dec %ecx",
    "jnz 1b",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// A slot whose memory is one transparent huge page is mapped with one
/// 2 MiB second-level page (`pages_2m` goes from 0 to exactly 1: slot 0,
/// ordinary memory, stays in 4 KiB pages), and the guest reads the right
/// bytes through it.
fn huge_page_backed_slot_is_mapped_with_one_2m_page(ctx: &Ctx) -> TestResult {
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !thp.contains("[madvise]") && !thp.contains("[always]") {
        ksft::skip!(
            "transparent huge pages are off in this kernel ({})",
            thp.trim()
        );
    }
    let mem = Arc::new(check_ok!(GuestMemory::with_huge_pages(HUGE)));
    for page in 0..HUGE / 4096 {
        check_ok!(mem.write(page * 4096, &[1]));
    }
    let huge = check_ok!(mem.huge_bytes());
    if huge < HUGE as u64 {
        ksft::skip!("the kernel backed the memory with {huge} bytes of huge pages, not 2 MiB");
    }
    let vm = GuestVm::new(ctx, Mode::Long, touch_guest())?;
    check_ok!(
        vm.vm
            .set_user_memory_region(&MemoryRegion::new(1, SLOT1_GPA, &mem))
    );
    let mut vcpu = vm.add_vcpu(0)?;
    let before = ctx
        .vm_stat(&vm.vm, "pages_2m")
        .map_err(ksft::Status::Fail)?;
    check_eq!(before, 0, "pages_2m before the guest ran");
    let [sum, ..] = vcpu.sync()?;
    check_eq!(sum, 512, "sum of one byte per page");
    let after = ctx
        .vm_stat(&vm.vm, "pages_2m")
        .map_err(ksft::Status::Fail)?;
    let small = ctx
        .vm_stat(&vm.vm, "pages_4k")
        .map_err(ksft::Status::Fail)?;
    diag!("pages_2m {after}, pages_4k {small}");
    check_eq!(after, 1, "pages_2m after the guest touched the huge page");
    check!(small > 0, "slot 0 is mapped with 4 KiB pages");
    vcpu.done()
}

guest! {
    /// Reads the u64 at SLOT1 + 0x1000 and reports it.
    fn unaligned_slot_guest;
    ".code64",
    "mov $0x40001000, %r12",
    "mov (%r12), %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// A slot that does not start on a 2 MiB boundary (as a VMM's slot at
/// 0x100000 does not) works: its first page is mapped with a 4 KiB page
/// and the guest reads the host's bytes.
fn a_slot_not_aligned_to_2m_works(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, unaligned_slot_guest())?;
    let mem = Arc::new(check_ok!(GuestMemory::new(0x10000)));
    check_ok!(mem.write(0, &0x0123_4567_89ab_cdefu64.to_le_bytes()));
    check_ok!(
        vm.vm
            .set_user_memory_region(&MemoryRegion::new(1, SLOT1_GPA + 0x1000, &mem))
    );
    let mut vcpu = vm.add_vcpu(0)?;
    let [value, ..] = vcpu.sync()?;
    check_eq_hex!(
        value,
        0x0123_4567_89ab_cdefu64,
        "read at the slot's first byte"
    );
    vcpu.done()
}

guest! {
    /// Touches each 4 KiB page of the 1 MiB at SLOT1, then reports.
    fn touch_1m_guest;
    ".code64",
    "mov $0x40000000, %r12",
    "mov $256, %ecx",
    "1: movb $1, (%r12)",
    "add $4096, %r12",
    "dec %ecx",
    "jnz 1b",
    "ucall UCALL_DONE",
}

/// The child's verdict in `pinned_memory_counts_against_rlimit_memlock`.
const PINNED_ENOMEM: i32 = 0;
const PINNED_RAN_THROUGH: i32 = 10;
const PINNED_SETUP_FAILED: i32 = 11;
const PINNED_OTHER_ERROR: i32 = 12;

/// rkvm pins the guest memory it maps, and counts it against the owner's
/// `RLIMIT_MEMLOCK` as VFIO does: a process without `CAP_IPC_LOCK` whose
/// limit is 512 KiB cannot make its guest touch 1 MiB (`KVM_RUN` fails
/// with `ENOMEM`). KVM does not pin guest memory, so there is nothing to
/// compare with: skipped there.
fn pinned_memory_counts_against_rlimit_memlock(ctx: &Ctx) -> TestResult {
    if !ctx.is_rkvm() {
        ksft::skip!("KVM does not pin guest memory (it follows it with MMU notifiers)");
    }
    let child = check_ok!(kvm_abi::process::fork(|| {
        let Ok(vm) = GuestVm::new(ctx, Mode::Long, touch_1m_guest()) else {
            return PINNED_SETUP_FAILED;
        };
        let Ok(mem) = GuestMemory::new(1 << 20) else {
            return PINNED_SETUP_FAILED;
        };
        let mem = Arc::new(mem);
        if vm
            .vm
            .set_user_memory_region(&MemoryRegion::new(1, SLOT1_GPA, &mem))
            .is_err()
        {
            return PINNED_SETUP_FAILED;
        }
        let Ok(mut vcpu) = vm.add_vcpu(0) else {
            return PINNED_SETUP_FAILED;
        };
        let limit = libc::rlimit {
            rlim_cur: 512 << 10,
            rlim_max: 512 << 10,
        };
        // SAFETY: setrlimit reads one rlimit and changes this (child) process's limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) } != 0 {
            return PINNED_SETUP_FAILED;
        }
        // SAFETY: setuid changes this (child) process's credentials; leaving root also
        // drops CAP_IPC_LOCK.
        if unsafe { libc::setuid(65534) } != 0 {
            return PINNED_SETUP_FAILED;
        }
        loop {
            match vcpu.vcpu.run() {
                Err(e) if e.errno() == kvm_abi::Errno::ENOMEM => return PINNED_ENOMEM,
                Err(_) => return PINNED_OTHER_ERROR,
                Ok(()) => {}
            }
            // The only exits are the final ucall's OUT: the guest got through.
            if let VcpuExit::Io(_) = vcpu.run.exit() {
                return PINNED_RAN_THROUGH;
            }
        }
    }));
    match check_ok!(child.wait()) {
        kvm_abi::process::Exit::Code(PINNED_ENOMEM) => Ok(()),
        kvm_abi::process::Exit::Code(PINNED_RAN_THROUGH) => {
            ksft::fail!("the guest pinned 1 MiB under a 512 KiB RLIMIT_MEMLOCK")
        }
        other => ksft::fail!("the child ended with {other:?}"),
    }
}

/// Bytes the VM has mapped, by its debugfs counters (4 KiB and 2 MiB leaves).
fn mapped_bytes(ctx: &Ctx, vm: &kvm_abi::Vm) -> Result<u64, ksft::Status> {
    let small = ctx.vm_stat(vm, "pages_4k").map_err(ksft::Status::Fail)?;
    let huge = ctx.vm_stat(vm, "pages_2m").map_err(ksft::Status::Fail)?;
    Ok(small * 4096 + huge * HUGE as u64)
}

/// `KVM_PRE_FAULT_MEMORY` (Linux's `pre_fault_memory_test` in this suite's
/// terms): a flag, an unaligned, empty or wrapping range is `EINVAL`; a
/// range in a slot is mapped before the guest touches it (the VM's mapped
/// bytes grow by at least the range) and written back as done (`gpa` past
/// it, `size` 0); a range running past the slot maps what the slot has and
/// returns 0 with the rest left in `size`; a range with no slot at its
/// start is `ENOENT` with nothing done.
fn pre_fault_memory_maps_a_slot_ahead(ctx: &Ctx) -> TestResult {
    check_eq!(
        check_ok!(ctx.cap(KVM_CAP_PRE_FAULT_MEMORY)),
        1,
        "KVM_CAP_PRE_FAULT_MEMORY"
    );
    let (vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    const SIZE: u64 = HUGE as u64 + 4096;
    let mem = Arc::new(check_ok!(GuestMemory::new(HUGE + 4096)));
    check_ok!(vm.set_user_memory_region(&MemoryRegion::new(1, SLOT1_GPA, &mem)));
    for (what, gpa, size, flags) in [
        ("a flag", SLOT1_GPA, 4096, 1),
        ("an unaligned address", SLOT1_GPA + 8, 4096, 0),
        ("an unaligned size", SLOT1_GPA, 100, 0),
        ("an empty range", SLOT1_GPA, 0, 0),
        ("a wrapping range", 0xffff_ffff_ffff_f000, 0x2000, 0),
    ] {
        let (r, left_gpa, left) = vcpu.pre_fault_memory(gpa, size, flags);
        check_errno!(r, libc::EINVAL, "{what}");
        check_eq!(
            (left_gpa, left),
            (gpa, size),
            "{what}: the range, untouched"
        );
    }
    let before = mapped_bytes(ctx, &vm)?;
    let (r, gpa, left) = vcpu.pre_fault_memory(SLOT1_GPA, 0x2000, 0);
    check_ok!(r);
    check_eq!(
        (gpa, left),
        (SLOT1_GPA + 0x2000, 0),
        "the range written back"
    );
    let after = mapped_bytes(ctx, &vm)?;
    check!(after >= before + 0x2000, "mapped bytes {before} -> {after}");
    // Past the slot's end: its last page is mapped, the page after is not.
    let (r, gpa, left) = vcpu.pre_fault_memory(SLOT1_GPA + HUGE as u64, 0x2000, 0);
    check_ok!(r);
    check_eq!(
        (gpa, left),
        (SLOT1_GPA + SIZE, 0x1000),
        "what is left past the slot"
    );
    let (r, gpa, left) = vcpu.pre_fault_memory(SLOT1_GPA + SIZE, 0x1000, 0);
    check_errno!(r, libc::ENOENT, "a page no slot backs");
    check_eq!((gpa, left), (SLOT1_GPA + SIZE, 0x1000), "nothing done");
    Ok(())
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            readonly_slot_reads_memory_and_writes_exit_as_mmio,
            huge_page_backed_slot_is_mapped_with_one_2m_page,
            a_slot_not_aligned_to_2m_works,
            pinned_memory_counts_against_rlimit_memlock,
            pre_fault_memory_maps_a_slot_ahead,
        ],
    )
}
