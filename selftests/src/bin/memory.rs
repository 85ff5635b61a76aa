//! Guest memory beyond plain slots: read-only slots (reads see the host's
//! memory, writes exit to user space as MMIO) and slots backed by
//! transparent huge pages (mapped with 2 MiB second-level pages, counted in
//! the VM's debugfs `pages_2m`, which rkvm and KVM both have), and dirty
//! page logging (`KVM_GET_DIRTY_LOG`, `KVM_CLEAR_DIRTY_LOG` with manual
//! protection).
//!
//! Usage: `memory [DEVICE]` (default `/dev/rkvm`).

use std::process::ExitCode;
use std::sync::Arc;

use ksft::{TestResult, check, check_eq, check_eq_hex, check_errno, check_ok, diag, tests};
use kvm_abi::sys::{
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_CAP_PRE_FAULT_MEMORY, KVM_DIRTY_LOG_INITIALLY_SET,
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
};
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

/// The logging slot of the dirty-log tests: 130 pages, so that its bitmap
/// has two whole words and one with two valid bits.
const LOG_PAGES: u32 = 130;

guest! {
    /// Round 0 reads page 100 of SLOT1 (its first touch); round 1 writes
    /// pages 0, 5, 70, 100 and 129; round 2 writes pages 5 (twice) and
    /// 129; round 3 only reads pages 0 and 5; round 4 writes page 0. Each
    /// round ends with a sync.
    fn dirty_guest;
    ".code64",
    "mov $0x40000000, %r12",
    "mov 0x64000(%r12), %rbx",
    "ucall UCALL_SYNC",
    "movq $9, 0x64000(%r12)",
    "movq $1, (%r12)",
    "movq $2, 0x5000(%r12)",
    "movq $3, 0x46000(%r12)",
    "movq $4, 0x81000(%r12)",
    "ucall UCALL_SYNC",
    "movq $5, 0x5000(%r12)",
    "movq $6, 0x5008(%r12)",
    "movq $7, 0x81000(%r12)",
    "ucall UCALL_SYNC",
    "mov (%r12), %rbx",
    "add 0x5000(%r12), %rbx",
    "ucall UCALL_SYNC",
    "movq $8, (%r12)",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// The rounds of `dirty_guest` and the pages each writes.
const ROUND1: [u64; 5] = [0, 5, 70, 100, 129];
const ROUND2: [u64; 2] = [5, 129];

/// A VM running `dirty_guest` with a 130-page logging slot at SLOT1.
fn dirty_vm(ctx: &Ctx) -> Result<(GuestVm, guest::GuestVcpu), ksft::Status> {
    let vm = GuestVm::new(ctx, Mode::Long, dirty_guest())?;
    let mem = Arc::new(check_ok!(GuestMemory::new(LOG_PAGES as usize * 4096)));
    check_ok!(vm.vm.set_user_memory_region(&MemoryRegion {
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        ..MemoryRegion::new(1, SLOT1_GPA, &mem)
    }));
    let vcpu = vm.add_vcpu(0)?;
    Ok((vm, vcpu))
}

/// The pages whose bits are set in slot 1's dirty log.
fn dirty_pages(vm: &kvm_abi::Vm) -> Result<Vec<u64>, ksft::Status> {
    dirty_pages_of(vm, LOG_PAGES.into())
}

/// The pages whose bits are set in the dirty log of slot 1, of `pages`
/// pages (at most 512). The word after the bitmap must stay as it was:
/// the kernel writes exactly `ceil(pages / 64)` words.
fn dirty_pages_of(vm: &kvm_abi::Vm, pages: u64) -> Result<Vec<u64>, ksft::Status> {
    const UNTOUCHED: u64 = 0x5a5a_5a5a_5a5a_5a5a;
    let mut bitmap = [UNTOUCHED; 9];
    check_ok!(vm.get_dirty_log(1, pages, &mut bitmap));
    check_eq_hex!(
        bitmap[usize::try_from(pages.div_ceil(64)).map_or(8, |w| w.min(8))],
        UNTOUCHED,
        "the word after the bitmap"
    );
    Ok((0..pages)
        .filter(|p| bitmap[(p / 64) as usize] & (1 << (p % 64)) != 0)
        .collect())
}

/// Without manual protection, `KVM_GET_DIRTY_LOG` reports each page the
/// guest wrote since the last call exactly once, however often it wrote
/// it, and clears the log: the pages are write-protected again, so the
/// next round's writes are seen. Reads dirty nothing, and a page first
/// touched by a read is still caught when written; the host sees the data
/// the guest wrote.
fn dirty_log_reports_each_written_page_once_per_round(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpu) = dirty_vm(ctx)?;
    check_eq!(dirty_pages(&vm.vm)?, [], "before the guest ran");
    vcpu.sync()?;
    check_eq!(dirty_pages(&vm.vm)?, [], "round 0: a fresh page read");
    vcpu.sync()?;
    check_eq!(dirty_pages(&vm.vm)?, ROUND1, "round 1 (100 read first)");
    check_eq!(dirty_pages(&vm.vm)?, [], "round 1, read again");
    vcpu.sync()?;
    check_eq!(dirty_pages(&vm.vm)?, ROUND2, "round 2: written again");
    let [sum, ..] = vcpu.sync()?;
    check_eq!(sum, 1 + 5, "round 3 reads the guest's data");
    check_eq!(dirty_pages(&vm.vm)?, [], "round 3: reads only");
    vcpu.sync()?;
    check_eq!(dirty_pages(&vm.vm)?, [0], "round 4");
    vcpu.done()
}

/// With `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`, `KVM_GET_DIRTY_LOG` only
/// reads; `KVM_CLEAR_DIRTY_LOG` clears the bits asked for and
/// write-protects those pages again, so their next write is logged, while
/// pages still dirty stay so. With `KVM_DIRTY_LOG_INITIALLY_SET` too, a
/// new logging slot starts with every page (and no more) dirty.
fn manual_protection_clears_only_what_user_space_clears(ctx: &Ctx) -> TestResult {
    let caps = check_ok!(ctx.cap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2));
    let both = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;
    check_eq!(
        i64::from(caps),
        i64::from(both),
        "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2"
    );
    let (vm, mut vcpu) = dirty_vm(ctx)?;
    let protect = u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
    check_ok!(
        vm.vm
            .enable_cap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [protect, 0, 0, 0])
    );
    vcpu.sync()?;
    vcpu.sync()?;
    check_eq!(dirty_pages(&vm.vm)?, ROUND1, "round 1");
    check_eq!(dirty_pages(&vm.vm)?, ROUND1, "read again: not cleared");
    // Clear page 5 and the last word (pages 128 and 129).
    check_ok!(vm.vm.clear_dirty_log(1, 0, 64, &[1 << 5]));
    check_ok!(vm.vm.clear_dirty_log(1, 128, 2, &[u64::MAX]));
    check_eq!(
        dirty_pages(&vm.vm)?,
        [0, 70, 100],
        "after clearing 5 and 128-129"
    );
    vcpu.sync()?;
    check_eq!(
        dirty_pages(&vm.vm)?,
        ROUND1,
        "round 2 wrote 5 and 129 again"
    );
    check_ok!(vm.vm.clear_dirty_log(1, 0, LOG_PAGES, &[u64::MAX; 3]));
    check_eq!(dirty_pages(&vm.vm)?, [], "all cleared");
    vcpu.sync()?;
    vcpu.sync()?;
    check_eq!(dirty_pages(&vm.vm)?, [0], "round 4 wrote page 0 again");
    vcpu.done()?;

    // INITIALLY_SET: a slot made logging now starts all dirty.
    let both = u64::from(both);
    check_ok!(
        vm.vm
            .enable_cap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [both, 0, 0, 0])
    );
    let mem = Arc::new(check_ok!(GuestMemory::new(LOG_PAGES as usize * 4096)));
    check_ok!(vm.vm.set_user_memory_region(&MemoryRegion {
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        ..MemoryRegion::new(2, 2 * SLOT1_GPA, &mem)
    }));
    let mut bitmap = [0u64; 3];
    check_ok!(vm.vm.get_dirty_log(2, LOG_PAGES.into(), &mut bitmap));
    check_eq!(
        bitmap,
        [u64::MAX, u64::MAX, 0b11],
        "a new slot, initially set"
    );
    Ok(())
}

guest! {
    /// Turns kvmclock on with its time structure at page 20 of SLOT1,
    /// which the guest itself never touches, then reports.
    fn kvmclock_in_log_guest;
    ".code64",
    "mov $0x4b564d01, %ecx",
    "mov $0x40014001, %eax",
    "xor %edx, %edx",
    "wrmsr",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// What the kernel writes into guest memory for the guest is logged too:
/// kvmclock's time structure, placed in a logging slot, dirties its page.
fn kernel_writes_to_guest_memory_are_logged(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, kvmclock_in_log_guest())?;
    let mem = Arc::new(check_ok!(GuestMemory::new(LOG_PAGES as usize * 4096)));
    check_ok!(vm.vm.set_user_memory_region(&MemoryRegion {
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        ..MemoryRegion::new(1, SLOT1_GPA, &mem)
    }));
    let mut vcpu = vm.add_vcpu(0)?;
    vcpu.sync()?;
    // The structure's version is even and non-zero once written.
    let version = check_ok!(mem.read_u64(20 * 4096)) & 0xffff_ffff;
    check!(
        version != 0 && version.is_multiple_of(2),
        "kvmclock version {version}"
    );
    check_eq!(dirty_pages(&vm.vm)?, [20], "the kvmclock page");
    vcpu.done()
}

/// Bad dirty-log requests get KVM's errors: a slot that does not log or
/// does not exist `ENOENT`, an address space past the last `EINVAL` (KVM
/// and rkvm have two, the second for SMM), a clear not
/// starting on a 64-page word `EINVAL` before the slot is looked for, one
/// ending inside a word short of the slot's end or past it `EINVAL`, a
/// bitmap the kernel cannot write `EFAULT`, manual protection with an
/// unknown flag or INITIALLY_SET alone `EINVAL`.
fn dirty_log_refuses_bad_requests(ctx: &Ctx) -> TestResult {
    let (vm, _vcpu) = dirty_vm(ctx)?;
    let mut bitmap = [0u64; 3];
    check_errno!(
        vm.vm.get_dirty_log(0, 1, &mut bitmap),
        libc::ENOENT,
        "slot 0 does not log"
    );
    check_errno!(
        vm.vm.get_dirty_log(9, 1, &mut bitmap),
        libc::ENOENT,
        "no slot 9"
    );
    check_errno!(
        vm.vm.get_dirty_log(2 << 16 | 1, 1, &mut bitmap),
        libc::EINVAL,
        "address space 2"
    );
    check_errno!(
        vm.vm
            .get_dirty_log_to_kernel_address(1, 0xffff_8000_0000_0000),
        libc::EFAULT,
        "a bitmap in the kernel half"
    );
    check_errno!(
        vm.vm.clear_dirty_log(1, 1, 1, &[1]),
        libc::EINVAL,
        "first page 1"
    );
    check_errno!(
        vm.vm.clear_dirty_log(9, 1, 1, &[1]),
        libc::EINVAL,
        "first page 1 of no slot: the range is checked first"
    );
    check_errno!(
        vm.vm.clear_dirty_log(1, 0, 65, &[1, 1]),
        libc::EINVAL,
        "65 of 130 pages"
    );
    check_errno!(
        vm.vm.clear_dirty_log(1, 64, 67, &[1, 1]),
        libc::EINVAL,
        "past the end"
    );
    check_errno!(
        vm.vm.clear_dirty_log(1, 192, 0, &[]),
        libc::EINVAL,
        "starts past the end"
    );
    check_errno!(
        vm.vm.clear_dirty_log(0, 0, 64, &[1]),
        libc::ENOENT,
        "slot 0 does not log"
    );
    for bad in [2u64, 4, 1 << 32] {
        check_errno!(
            vm.vm
                .enable_cap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [bad, 0, 0, 0]),
            libc::EINVAL,
            "manual protection flags {bad:#x}"
        );
    }
    Ok(())
}

/// Logging turned on for a slot the guest has written already (its pages
/// mapped writable, with one 2 MiB mapping when `huge`) catches the next
/// writes and only those; turned off again, the guest writes on unlogged
/// and the host sees its data. On rkvm, the 2 MiB mapping is gone while
/// the slot logs.
fn logging_a_mapped_slot(ctx: &Ctx, huge: bool) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, dirty_guest())?;
    let mem = if huge {
        let mem = check_ok!(GuestMemory::with_huge_pages(HUGE));
        check_ok!(mem.write(0, &[0]));
        let backed = check_ok!(mem.huge_bytes());
        if backed < HUGE as u64 {
            ksft::skip!(
                "the kernel backed the memory with {backed} bytes of huge pages, not 2 MiB"
            );
        }
        Arc::new(mem)
    } else {
        Arc::new(check_ok!(GuestMemory::new(HUGE)))
    };
    let plain = MemoryRegion::new(1, SLOT1_GPA, &mem);
    let logged = MemoryRegion {
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        ..plain
    };
    check_ok!(vm.vm.set_user_memory_region(&plain));
    let mut vcpu = vm.add_vcpu(0)?;
    let large = |what: &str| -> Result<(), ksft::Status> {
        if huge && ctx.is_rkvm() {
            let n = ctx
                .vm_stat(&vm.vm, "pages_2m")
                .map_err(ksft::Status::Fail)?;
            let want = u64::from(what == "before logging");
            check_eq!(n, want, "pages_2m {what}");
        }
        Ok(())
    };
    vcpu.sync()?;
    vcpu.sync()?;
    large("before logging")?;
    check_ok!(vm.vm.set_user_memory_region(&logged));
    let pages = (HUGE / 4096) as u64;
    check_eq!(dirty_pages_of(&vm.vm, pages)?, [], "logging just turned on");
    vcpu.sync()?;
    check_eq!(dirty_pages_of(&vm.vm, pages)?, ROUND2, "round 2");
    large("while logging")?;
    check_ok!(vm.vm.set_user_memory_region(&plain));
    let mut bitmap = [0u64; 8];
    check_errno!(
        vm.vm.get_dirty_log(1, pages, &mut bitmap),
        libc::ENOENT,
        "logging off"
    );
    let [sum, ..] = vcpu.sync()?;
    check_eq!(sum, 1 + 5, "round 3 reads the guest's data");
    vcpu.sync()?;
    check_eq!(check_ok!(mem.read_u64(0)), 8, "round 4's write, unlogged");
    vcpu.done()
}

/// See [`logging_a_mapped_slot`]: 4 KiB pages.
fn logging_turned_on_catches_the_next_writes(ctx: &Ctx) -> TestResult {
    logging_a_mapped_slot(ctx, false)
}

/// See [`logging_a_mapped_slot`]: the slot mapped with a 2 MiB page first,
/// then logged 4 KiB at a time.
fn logging_splits_a_2m_mapping(ctx: &Ctx) -> TestResult {
    logging_a_mapped_slot(ctx, true)
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
            dirty_log_reports_each_written_page_once_per_round,
            manual_protection_clears_only_what_user_space_clears,
            kernel_writes_to_guest_memory_are_logged,
            dirty_log_refuses_bad_requests,
            logging_turned_on_catches_the_next_writes,
            logging_splits_a_2m_mapping,
        ],
    )
}
