//! vCPUs: creation, the shared mmap area, register state at reset and its
//! round trips, the SET_SREGS consistency checks, CPUID and MSRs, the FPU
//! registers, the MP state and the TSC frequency; and the VM ioctls a VMM
//! issues around them without an in-kernel irqchip (GSI routing,
//! KVM_ENABLE_CAP). KVM_RUN is not exercised here.
//!
//! Usage: `vcpu [DEVICE]` (default `/dev/rkvm`).

use std::os::fd::AsFd;
use std::process::ExitCode;

use ksft::{Status, TestResult, check, check_eq, check_eq_hex, check_errno, check_ok, diag, tests};
use kvm_abi::raw;
use kvm_abi::sys::{
    KVM_CAP_GET_TSC_KHZ, KVM_CAP_IRQ_ROUTING, KVM_CAP_JOIN_MEMORY_REGIONS_WORKS,
    KVM_CAP_MAX_VCPU_ID, KVM_CAP_MMU_SHADOW_CACHE_CONTROL, KVM_CAP_MP_STATE, KVM_CAP_TSC_CONTROL,
    KVM_CAP_XCRS, KVM_CAP_XSAVE, KVM_CAP_XSAVE2, KVM_EXIT_UNKNOWN, KVM_MP_STATE_HALTED,
    KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED,
    KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET, KVM_VCPUEVENT_VALID_NMI_PENDING,
    KVM_VCPUEVENT_VALID_PAYLOAD, KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SMM,
    KVM_VCPUEVENT_VALID_TRIPLE_FAULT, KVM_X86_SHADOW_INT_STI, kvm_debugregs, kvm_fpu, kvm_regs,
    kvm_segment, kvm_sregs, kvm_xcrs,
};
use kvm_abi::{
    CpuidEntries, KVM_MAX_CPUID_ENTRIES, MAX_IO_MSRS, MsrEntries, PAGE_SIZE, Vcpu, XSAVE_SIZE,
};
use rkvm_selftests::msr::{
    MSR_APIC_BASE, MSR_CSTAR, MSR_EFER, MSR_HWCR, MSR_KERNEL_GS_BASE, MSR_KVM_SYSTEM_TIME,
    MSR_KVM_WALL_CLOCK, MSR_LSTAR, MSR_MISC_ENABLE, MSR_PAT, MSR_SFMASK, MSR_STAR, MSR_SYSENTER_CS,
    MSR_SYSENTER_EIP, MSR_SYSENTER_ESP, MSR_TSC,
};
use rkvm_selftests::{Ctx, check_efault};

// Control-register and EFER bits: SDM Vol. 3A 2.5 and 2.2.1.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// x86 RFLAGS bit 1 always reads as 1 (SDM Vol. 1 3.4.3).
const RFLAGS_FIXED: u64 = 1 << 1;

/// No processor defines this MSR.
const MSR_BOGUS: u32 = 0x1234_5678;

/// The local APIC's reset base (SDM Vol. 3A 11.4.4) with the enable (bit 11)
/// and bootstrap-processor (bit 8) flags that vCPU 0 gets.
const APIC_BASE_BSP_RESET: u64 = 0xfee0_0000 | (1 << 11) | (1 << 8);

/// The supported CPUID, set on `vcpu` (what a VMM does before anything else).
fn set_supported_cpuid(ctx: &Ctx, vcpu: &Vcpu) -> Result<CpuidEntries, Status> {
    let mut cpuid = CpuidEntries::new(KVM_MAX_CPUID_ENTRIES)?;
    ctx.sys.get_supported_cpuid(&mut cpuid)?;
    vcpu.set_cpuid2(&cpuid)?;
    Ok(cpuid)
}

fn create_vcpu_0_returns_cloexec_fd(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let vcpu = check_ok!(vm.create_vcpu(0));
    check!(
        check_ok!(raw::is_cloexec(&vcpu)),
        "vCPU fd lacks FD_CLOEXEC"
    );
    Ok(())
}

fn same_vcpu_id_twice_is_eexist(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let _vcpu = check_ok!(vm.create_vcpu(0));
    check_errno!(vm.create_vcpu(0), libc::EEXIST);
    let _vcpu1 = check_ok!(vm.create_vcpu(1));
    check_errno!(vm.create_vcpu(1), libc::EEXIST);
    Ok(())
}

fn vcpu_id_at_max_vcpu_id_is_einval(ctx: &Ctx) -> TestResult {
    let max_id = ctx.max_vcpu_id()?;
    let vm = check_ok!(ctx.vm());
    check_errno!(vm.create_vcpu(max_id), libc::EINVAL, "id {max_id}");
    check_errno!(vm.create_vcpu(1 << 32), libc::EINVAL, "id 1 << 32");
    check_errno!(vm.create_vcpu(u64::MAX), libc::EINVAL, "id u64::MAX");
    // The largest valid id works.
    let _vcpu = check_ok!(vm.create_vcpu(max_id - 1));
    Ok(())
}

fn vcpu_mmap_pages_are_readable(ctx: &Ctx) -> TestResult {
    let size = check_ok!(ctx.sys.vcpu_mmap_size());
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let run = check_ok!(vcpu.map_run(size));
    check_ok!(run.mapping().probe_readable());
    Ok(())
}

/// kvm_run is a zeroed page at creation: no exit has happened, no request
/// is pending, and no registers are synced through it.
fn kvm_run_starts_with_no_exit(ctx: &Ctx) -> TestResult {
    let size = check_ok!(ctx.sys.vcpu_mmap_size());
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let run = check_ok!(check_ok!(vcpu.map_run(size)).snapshot());
    check_eq!(run.exit_reason, KVM_EXIT_UNKNOWN);
    check_eq!(run.request_interrupt_window, 0);
    check_eq!(run.immediate_exit, 0);
    check_eq!(run.flags, 0);
    check_eq!(run.kvm_valid_regs, 0);
    check_eq!(run.kvm_dirty_regs, 0);
    Ok(())
}

/// The port-I/O data page is at KVM_PIO_PAGE_OFFSET (page 1).
fn pio_data_page_is_mappable(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let page = check_ok!(vcpu.map(PAGE_SIZE as u64, PAGE_SIZE));
    check_ok!(page.probe_readable());
    Ok(())
}

/// Past KVM_GET_VCPU_MMAP_SIZE there is nothing to map. KVM's mmap()
/// succeeds and its fault handler refuses the page (SIGBUS on access); a
/// failing mmap() is just as good.
fn mmap_beyond_mmap_size_is_unusable(ctx: &Ctx) -> TestResult {
    let size = check_ok!(ctx.sys.vcpu_mmap_size());
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    for offset in [size as u64, size as u64 + 16 * PAGE_SIZE as u64] {
        match vcpu.map(offset, PAGE_SIZE) {
            Err(e) => diag!("mmap at {offset:#x} refused: {e}"),
            Ok(page) => {
                check_errno!(
                    page.probe_readable(),
                    libc::EFAULT,
                    "page at offset {offset:#x}"
                );
            }
        }
    }
    Ok(())
}

/// RESET state from kvm_vcpu_reset() (arch/x86/kvm/x86.c): RIP 0xfff0,
/// RFLAGS 0x2, RDX = CPUID.1.EAX, which is 0x600 while no CPUID is set;
/// every other GPR 0.
fn regs_after_reset(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let r = check_ok!(vcpu.get_regs());
    check_eq_hex!(r.rip, 0xfff0);
    check_eq_hex!(r.rflags, RFLAGS_FIXED);
    check_eq_hex!(r.rdx, 0x600);
    for (name, v) in [
        ("rax", r.rax),
        ("rbx", r.rbx),
        ("rcx", r.rcx),
        ("rsi", r.rsi),
        ("rdi", r.rdi),
        ("rsp", r.rsp),
        ("rbp", r.rbp),
        ("r8", r.r8),
        ("r9", r.r9),
        ("r10", r.r10),
        ("r11", r.r11),
        ("r12", r.r12),
        ("r13", r.r13),
        ("r14", r.r14),
        ("r15", r.r15),
    ] {
        check_eq_hex!(v, 0u64, "{name}");
    }
    Ok(())
}

/// The registers in kvm_regs order (rax ... r15, rip, rflags).
fn regs_array(r: &kvm_regs) -> [u64; 18] {
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.rflags,
    ]
}

fn regs_round_trip(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let pattern = |i: u64| 0x0101_0101_0101_0101u64.wrapping_mul(i + 1) ^ 0x8000_0000_0000_0000;
    let regs = kvm_regs {
        rax: pattern(0),
        rbx: pattern(1),
        rcx: pattern(2),
        rdx: pattern(3),
        rsi: pattern(4),
        rdi: pattern(5),
        rsp: pattern(6),
        rbp: pattern(7),
        r8: pattern(8),
        r9: pattern(9),
        r10: pattern(10),
        r11: pattern(11),
        r12: pattern(12),
        r13: pattern(13),
        r14: pattern(14),
        r15: pattern(15),
        rip: 0x1234,
        // CF, PF, ZF, IF and the fixed bit.
        rflags: 0x247,
    };
    check_ok!(vcpu.set_regs(&regs));
    let back = check_ok!(vcpu.get_regs());
    check_eq!(regs_array(&back), regs_array(&regs));
    // KVM forces the fixed bit 1 of RFLAGS.
    check_ok!(vcpu.set_regs(&kvm_regs { rflags: 0, ..regs }));
    check_eq_hex!(check_ok!(vcpu.get_regs()).rflags, RFLAGS_FIXED);
    Ok(())
}

/// Checks the fields of a segment that both VMX and SVM report alike.
fn check_segment(name: &str, s: &kvm_segment, selector: u16, base: u64, code: bool) -> TestResult {
    check_eq_hex!(s.selector, selector, "{name}.selector");
    check_eq_hex!(s.base, base, "{name}.base");
    check_eq_hex!(s.limit, 0xffffu32, "{name}.limit");
    check_eq!(s.present, 1, "{name}.present");
    check_eq!(s.s, 1, "{name}.s (code/data)");
    check_eq!(s.dpl, 0, "{name}.dpl");
    check_eq!(s.l, 0, "{name}.l");
    check_eq!(s.db, 0, "{name}.db");
    if code {
        check_eq_hex!(s.type_ & 0xa, 0xa, "{name}.type: execute/read code");
    } else {
        check_eq_hex!(s.type_ & 0xa, 0x2, "{name}.type: read/write data");
    }
    Ok(())
}

/// RESET state (SDM Vol. 3A 10.1.1, Table 10-1) as KVM reports it: real
/// mode at CS 0xf000 / base 0xffff0000, CR0 = CD | NW | ET, and the APIC
/// base MSR of the bootstrap processor (kvm_lapic_reset() sets it even
/// without an in-kernel APIC).
fn sregs_after_reset(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let s = check_ok!(vcpu.get_sregs());
    check_segment("cs", &s.cs, 0xf000, 0xffff_0000, true)?;
    for (name, seg) in [
        ("ds", &s.ds),
        ("es", &s.es),
        ("fs", &s.fs),
        ("gs", &s.gs),
        ("ss", &s.ss),
    ] {
        check_segment(name, seg, 0, 0, false)?;
    }
    check_eq_hex!(s.ldt.limit, 0xffffu32, "ldt.limit");
    check_eq_hex!(s.ldt.type_, 2, "ldt.type: LDT");
    check_eq_hex!(s.tr.limit, 0xffffu32, "tr.limit");
    check_eq_hex!(s.gdt.base, 0u64, "gdt.base");
    check_eq_hex!(s.gdt.limit, 0xffffu16, "gdt.limit");
    check_eq_hex!(s.idt.base, 0u64, "idt.base");
    check_eq_hex!(s.idt.limit, 0xffffu16, "idt.limit");
    check_eq_hex!(s.cr0, CR0_CD | CR0_NW | CR0_ET);
    check_eq_hex!(s.cr2, 0u64);
    check_eq_hex!(s.cr3, 0u64);
    check_eq_hex!(s.cr4, 0u64);
    check_eq_hex!(s.cr8, 0u64);
    check_eq_hex!(s.efer, 0u64);
    check_eq_hex!(s.apic_base, APIC_BASE_BSP_RESET);
    check_eq!(s.interrupt_bitmap, [0u64; 4]);
    Ok(())
}

fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Flat 32-bit protected mode without paging, starting from `base` (for the
/// fields not listed, e.g. the APIC base).
fn protected_mode(base: &kvm_sregs) -> kvm_sregs {
    let data = flat_segment(0x10, 0x3);
    kvm_sregs {
        cs: flat_segment(0x08, 0xb),
        ds: data,
        es: data,
        fs: kvm_segment {
            base: 0x7000,
            ..data
        },
        gs: kvm_segment {
            base: 0x8000,
            ..data
        },
        ss: data,
        // A busy 32-bit TSS (type 11), byte granular.
        tr: kvm_segment {
            base: 0x1000,
            limit: 0x67,
            selector: 0x18,
            type_: 0xb,
            s: 0,
            db: 0,
            g: 0,
            ..data
        },
        ldt: kvm_segment {
            base: 0x4000,
            limit: 0xff,
            selector: 0x20,
            type_: 0x2,
            s: 0,
            db: 0,
            g: 0,
            ..data
        },
        gdt: kvm_abi::sys::kvm_dtable {
            base: 0x2000,
            limit: 0x27,
            padding: [0; 3],
        },
        idt: kvm_abi::sys::kvm_dtable {
            base: 0x3000,
            limit: 0x7ff,
            padding: [0; 3],
        },
        cr0: CR0_PE | CR0_ET,
        cr2: 0x5000,
        cr3: 0x6000,
        cr4: CR4_PSE,
        cr8: 2,
        efer: 0,
        ..*base
    }
}

/// 64-bit long mode with 4-level paging (SDM Vol. 3A 10.8.5).
fn long_mode(base: &kvm_sregs) -> kvm_sregs {
    let p = protected_mode(base);
    kvm_sregs {
        cs: kvm_segment {
            l: 1,
            db: 0,
            ..p.cs
        },
        cr0: CR0_PE | CR0_ET | CR0_PG,
        cr3: 0x9000,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        ..p
    }
}

fn check_same_segment(name: &str, got: &kvm_segment, want: &kvm_segment) -> TestResult {
    check_eq_hex!(got.base, want.base, "{name}.base");
    check_eq_hex!(got.limit, want.limit, "{name}.limit");
    check_eq_hex!(got.selector, want.selector, "{name}.selector");
    check_eq_hex!(got.type_, want.type_, "{name}.type");
    for (field, g, w) in [
        ("present", got.present, want.present),
        ("dpl", got.dpl, want.dpl),
        ("db", got.db, want.db),
        ("s", got.s, want.s),
        ("l", got.l, want.l),
        ("g", got.g, want.g),
        ("avl", got.avl, want.avl),
    ] {
        check_eq!(g, w, "{name}.{field}");
    }
    Ok(())
}

fn check_same_sregs(got: &kvm_sregs, want: &kvm_sregs) -> TestResult {
    for (name, g, w) in [
        ("cs", &got.cs, &want.cs),
        ("ds", &got.ds, &want.ds),
        ("es", &got.es, &want.es),
        ("fs", &got.fs, &want.fs),
        ("gs", &got.gs, &want.gs),
        ("ss", &got.ss, &want.ss),
        ("tr", &got.tr, &want.tr),
        ("ldt", &got.ldt, &want.ldt),
    ] {
        check_same_segment(name, g, w)?;
    }
    check_eq_hex!(got.gdt.base, want.gdt.base);
    check_eq_hex!(got.gdt.limit, want.gdt.limit);
    check_eq_hex!(got.idt.base, want.idt.base);
    check_eq_hex!(got.idt.limit, want.idt.limit);
    check_eq_hex!(got.cr0, want.cr0);
    check_eq_hex!(got.cr2, want.cr2);
    check_eq_hex!(got.cr3, want.cr3);
    check_eq_hex!(got.cr4, want.cr4);
    check_eq_hex!(got.cr8, want.cr8);
    check_eq_hex!(got.efer, want.efer);
    check_eq_hex!(got.apic_base, want.apic_base);
    Ok(())
}

fn sregs_round_trip_protected_mode(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let want = protected_mode(&check_ok!(vcpu.get_sregs()));
    check_ok!(vcpu.set_sregs(&want));
    check_same_sregs(&check_ok!(vcpu.get_sregs()), &want)
}

fn sregs_paging_without_protection_is_einval(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let reset = check_ok!(vcpu.get_sregs());
    let bad = kvm_sregs {
        cr0: CR0_PG | CR0_ET,
        ..protected_mode(&reset)
    };
    check_errno!(vcpu.set_sregs(&bad), libc::EINVAL);
    // Nothing changed.
    check_eq_hex!(check_ok!(vcpu.get_sregs()).cr0, reset.cr0);
    Ok(())
}

fn sregs_nw_without_cd_is_einval(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let base = protected_mode(&check_ok!(vcpu.get_sregs()));
    check_errno!(
        vcpu.set_sregs(&kvm_sregs {
            cr0: base.cr0 | CR0_NW,
            ..base
        }),
        libc::EINVAL
    );
    check_errno!(
        vcpu.set_sregs(&kvm_sregs {
            cr0: base.cr0 | (1 << 32),
            ..base
        }),
        libc::EINVAL,
        "CR0 bit 32"
    );
    Ok(())
}

fn sregs_reserved_cr4_bit_is_einval(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let base = protected_mode(&check_ok!(vcpu.get_sregs()));
    // Bit 15 and bit 63 are reserved on every processor (SDM Vol. 3A 2.5).
    for bit in [15, 63] {
        check_errno!(
            vcpu.set_sregs(&kvm_sregs {
                cr4: base.cr4 | (1 << bit),
                ..base
            }),
            libc::EINVAL,
            "CR4 bit {bit}"
        );
    }
    Ok(())
}

fn sregs_reserved_efer_bit_is_einval(ctx: &Ctx) -> TestResult {
    ctx.upstream_semantics(|| {
        let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
        let base = protected_mode(&check_ok!(vcpu.get_sregs()));
        // Bits 1-7 and 63 are reserved (SDM Vol. 3A 2.2.1, Table 2-1).
        for bit in [3, 63] {
            check_errno!(
                vcpu.set_sregs(&kvm_sregs {
                    efer: 1 << bit,
                    ..base
                }),
                libc::EINVAL,
                "EFER bit {bit}"
            );
        }
        Ok(())
    })
}

/// With a CPUID that has long mode, EFER.LMA must still agree with
/// EFER.LME && CR0.PG (kvm_is_valid_sregs in arch/x86/kvm/regs.c).
fn sregs_lma_inconsistent_with_lme_and_pg_is_einval(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    set_supported_cpuid(ctx, &vcpu)?;
    let long = long_mode(&check_ok!(vcpu.get_sregs()));
    let no_lma = kvm_sregs {
        efer: EFER_LME,
        ..long
    };
    check_errno!(
        vcpu.set_sregs(&no_lma),
        libc::EINVAL,
        "LME and PG without LMA"
    );
    let no_paging = kvm_sregs {
        cr0: CR0_PE | CR0_ET,
        cs: kvm_segment {
            l: 0,
            db: 1,
            ..long.cs
        },
        ..long
    };
    check_errno!(vcpu.set_sregs(&no_paging), libc::EINVAL, "LMA without PG");
    let no_lme = kvm_sregs {
        efer: EFER_LMA,
        ..long
    };
    check_errno!(
        vcpu.set_sregs(&no_lme),
        libc::EINVAL,
        "LMA and PG without LME"
    );
    let no_pae = kvm_sregs { cr4: 0, ..long };
    check_errno!(
        vcpu.set_sregs(&no_pae),
        libc::EINVAL,
        "long mode without CR4.PAE"
    );
    let cs_l_outside_long_mode = kvm_sregs {
        cs: kvm_segment {
            l: 1,
            db: 0,
            ..long.cs
        },
        ..protected_mode(&long)
    };
    check_errno!(
        vcpu.set_sregs(&cs_l_outside_long_mode),
        libc::EINVAL,
        "CS.L outside long mode"
    );
    Ok(())
}

/// EFER.LME/LMA are reserved until the guest's CPUID reports long mode
/// (__kvm_valid_efer in arch/x86/kvm/msrs.c), and a new vCPU has no CPUID.
fn sregs_long_mode_before_set_cpuid_is_einval(ctx: &Ctx) -> TestResult {
    ctx.upstream_semantics(|| {
        let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
        let long = long_mode(&check_ok!(vcpu.get_sregs()));
        check_errno!(vcpu.set_sregs(&long), libc::EINVAL);
        check_eq_hex!(check_ok!(vcpu.get_sregs()).efer, 0u64);
        Ok(())
    })
}

fn sregs_long_mode_after_set_cpuid_round_trips(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    set_supported_cpuid(ctx, &vcpu)?;
    let long = long_mode(&check_ok!(vcpu.get_sregs()));
    check_ok!(vcpu.set_sregs(&long));
    check_same_sregs(&check_ok!(vcpu.get_sregs()), &long)
}

/// KVM_GET_CPUID2 gives back the entries KVM_SET_CPUID2 took: the same
/// leaves, and the same values outside the bits KVM keeps up to date from
/// other state (APIC and OSXSAVE/OSPKE flags, XSAVE sizes).
fn cpuid2_round_trip(ctx: &Ctx) -> TestResult {
    ctx.upstream_semantics(|| {
        let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
        let set = set_supported_cpuid(ctx, &vcpu)?;
        let mut got = check_ok!(CpuidEntries::new(KVM_MAX_CPUID_ENTRIES));
        check_ok!(vcpu.get_cpuid2(&mut got));
        check_eq!(got.nent(), set.nent());
        for want in set.entries() {
            let Some(e) = got.find(want.function, want.index) else {
                ksft::fail!("leaf {:#x}.{} missing", want.function, want.index);
            };
            check_eq_hex!(
                e.flags,
                want.flags,
                "leaf {:#x}.{} flags",
                want.function,
                want.index
            );
            if matches!(want.function, 0x1 | 0x7 | 0xd) {
                continue;
            }
            for (reg, g, w) in [
                ("eax", e.eax, want.eax),
                ("ebx", e.ebx, want.ebx),
                ("ecx", e.ecx, want.ecx),
                ("edx", e.edx, want.edx),
            ] {
                check_eq_hex!(g, w, "leaf {:#x}.{} {reg}", want.function, want.index);
            }
        }
        // Leaf 0 (vendor and maximum leaf) is never adjusted.
        check_eq!(
            got.find(0, 0).map(|e| (e.eax, e.ebx, e.ecx, e.edx)),
            set.find(0, 0).map(|e| (e.eax, e.ebx, e.ecx, e.edx))
        );
        Ok(())
    })
}

fn get_cpuid2_before_set_is_empty(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let mut got = check_ok!(CpuidEntries::new(4));
    check_ok!(vcpu.get_cpuid2(&mut got));
    check_eq!(got.nent(), 0);
    Ok(())
}

fn get_cpuid2_too_small_is_e2big(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    set_supported_cpuid(ctx, &vcpu)?;
    let mut all = check_ok!(CpuidEntries::new(KVM_MAX_CPUID_ENTRIES));
    check_ok!(vcpu.get_cpuid2(&mut all));
    let n = all.entries().len();
    check!(
        n > 0,
        "KVM_GET_CPUID2 returned no entries after KVM_SET_CPUID2"
    );
    let mut got = check_ok!(CpuidEntries::new(n - 1));
    check_errno!(
        vcpu.get_cpuid2(&mut got),
        libc::E2BIG,
        "room for {} of {n}",
        n - 1
    );
    let mut exact = check_ok!(CpuidEntries::new(n));
    check_ok!(vcpu.get_cpuid2(&mut exact));
    Ok(())
}

fn set_cpuid2_above_256_entries_is_e2big(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let mut supported = check_ok!(CpuidEntries::new(KVM_MAX_CPUID_ENTRIES));
    check_ok!(ctx.sys.get_supported_cpuid(&mut supported));
    let mut too_many = check_ok!(CpuidEntries::new(KVM_MAX_CPUID_ENTRIES + 1));
    too_many.entries_mut()[..supported.entries().len()].copy_from_slice(supported.entries());
    check_errno!(vcpu.set_cpuid2(&too_many), libc::E2BIG);
    Ok(())
}

/// The MSRs a 64-bit guest kernel programs, with canonical addresses.
const GUEST_MSRS: [(u32, u64); 10] = [
    (MSR_STAR, 0x0023_0010_0000_0000),
    (MSR_LSTAR, 0xffff_ffff_8100_0000),
    (MSR_CSTAR, 0xffff_ffff_8100_1000),
    (MSR_SFMASK, 0x4_7700),
    (MSR_KERNEL_GS_BASE, 0xffff_8880_1234_0000),
    (MSR_SYSENTER_CS, 0x10),
    // 32-bit: with an AMD vendor id in the guest CPUID, KVM keeps only the
    // low half of SYSENTER_ESP/EIP, as AMD processors do (svm_set_msr).
    (MSR_SYSENTER_ESP, 0xc200_0000),
    (MSR_SYSENTER_EIP, 0xc100_2000),
    // WB, WC, UC-, UC in PA0-3 and PA4-7 (SDM Vol. 3A 13.12.2).
    (MSR_PAT, 0x0007_0106_0007_0106),
    // Fast strings plus the reset value's PEBS/BTS-unavailable bits.
    (MSR_MISC_ENABLE, 0x1801),
];

fn msrs_of_a_64bit_guest_round_trip(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    set_supported_cpuid(ctx, &vcpu)?;
    let set = check_ok!(MsrEntries::from_pairs(&GUEST_MSRS));
    check_eq!(
        check_ok!(vcpu.set_msrs(&set)),
        GUEST_MSRS.len(),
        "MSRs written"
    );
    let indices: Vec<u32> = GUEST_MSRS.iter().map(|&(i, _)| i).collect();
    let mut got = check_ok!(MsrEntries::from_indices(&indices));
    check_eq!(
        check_ok!(vcpu.get_msrs(&mut got)),
        GUEST_MSRS.len(),
        "MSRs read"
    );
    for &(index, data) in &GUEST_MSRS {
        check_eq_hex!(got.get(index).unwrap_or(!data), data, "MSR {index:#x}");
    }
    Ok(())
}

fn msrs_at_reset(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let mut got = check_ok!(MsrEntries::from_indices(&[
        MSR_EFER,
        MSR_APIC_BASE,
        MSR_PAT,
        MSR_MISC_ENABLE
    ]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut got)), 4);
    let sregs = check_ok!(vcpu.get_sregs());
    check_eq_hex!(
        got.get(MSR_EFER).unwrap_or(u64::MAX),
        sregs.efer,
        "EFER = sregs.efer"
    );
    check_eq_hex!(
        got.get(MSR_APIC_BASE).unwrap_or(u64::MAX),
        sregs.apic_base,
        "APIC_BASE = sregs.apic_base"
    );
    check_eq_hex!(
        got.get(MSR_APIC_BASE).unwrap_or(u64::MAX),
        APIC_BASE_BSP_RESET,
        "APIC_BASE"
    );
    // The power-on PAT (SDM Vol. 3A 13.12.4).
    check_eq_hex!(
        got.get(MSR_PAT).unwrap_or(u64::MAX),
        0x0007_0406_0007_0406u64,
        "PAT"
    );
    Ok(())
}

fn msr_tsc_write_is_read_back(ctx: &Ctx) -> TestResult {
    ctx.upstream_semantics(|| {
        let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
        const START: u64 = 1 << 40;
        check_eq!(
            check_ok!(vcpu.set_msrs(&check_ok!(MsrEntries::from_pairs(&[(MSR_TSC, START)])))),
            1
        );
        let mut got = check_ok!(MsrEntries::from_indices(&[MSR_TSC]));
        check_eq!(check_ok!(vcpu.get_msrs(&mut got)), 1);
        let tsc = got.get(MSR_TSC).unwrap_or(0);
        // The TSC keeps counting; 2^38 cycles is more than a minute at 4 GHz.
        check!(
            (START..START + (1 << 38)).contains(&tsc),
            "TSC {tsc:#x} after writing {START:#x}"
        );
        Ok(())
    })
}

/// The guest's TSC through `KVM_GET_MSRS`.
fn read_tsc(vcpu: &Vcpu) -> Result<u64, Status> {
    let mut got = check_ok!(MsrEntries::from_indices(&[MSR_TSC]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut got)), 1, "KVM_GET_MSRS(TSC)");
    Ok(got.get(MSR_TSC).unwrap_or(u64::MAX))
}

/// A new vCPU's TSC starts near 0, and a VM's vCPUs count in step: one
/// created later, and one the VMM writes 0 to (QEMU at every reset), get
/// the first one's TSC, not a fresh 0 (KVM's `kvm_synchronize_tsc`).
fn a_new_vcpus_tsc_starts_near_zero_and_the_vms_vcpus_keep_in_step(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    let v0 = check_ok!(vm.create_vcpu(0));
    let cycles_per_ms = u64::from(check_ok!(v0.get_tsc_khz()));
    let t0 = read_tsc(&v0)?;
    diag!("vCPU 0's TSC just after its creation: {t0}");
    // Ten seconds of cycles: far more than this took, far less than the
    // host's uptime in any VM that booted.
    check!(t0 < 10_000 * cycles_per_ms, "TSC {t0} at creation");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let v1 = check_ok!(vm.create_vcpu(1));
    // Within 100 ms of each other (read one after the other), and both
    // past the 200 ms slept: vCPU 1 did not start from 0.
    let in_step = |what: &str| -> TestResult {
        let a = read_tsc(&v0)?;
        let b = read_tsc(&v1)?;
        check!(
            b >= a && b - a < 100 * cycles_per_ms,
            "{what}: vCPU 0 read {a}, then vCPU 1 {b}"
        );
        check!(b >= 200 * cycles_per_ms, "{what}: vCPU 1's TSC {b}");
        Ok(())
    };
    in_step("vCPU 1 created later")?;
    check_eq!(
        check_ok!(v1.set_msrs(&check_ok!(MsrEntries::from_pairs(&[(MSR_TSC, 0)])))),
        1
    );
    in_step("vCPU 1 set to 0 by the VMM")
}

/// `KVM_GET_VCPU_EVENTS` / `KVM_SET_VCPU_EVENTS`: a new vCPU has no
/// event, with KVM's three valid flags (NMI pending, shadow, SMM); what is
/// set reads back (an injected exception with its error code, an NMI
/// waiting and NMIs masked, the interrupt shadow); unknown flags, the
/// payload and triple-fault flags (their capabilities are off), and an
/// exception vector above 31 or NMI's are `EINVAL`, and but for the
/// triple-fault flag change nothing.
fn vcpu_events_round_trip_and_bad_ones_are_einval(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let fresh = check_ok!(vcpu.get_vcpu_events());
    let valid =
        KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM;
    check_eq_hex!(fresh.flags, valid, "flags of a new vCPU");
    check_eq!(fresh.exception.injected, 0);
    check_eq!(fresh.interrupt.injected, 0);
    check_eq!(fresh.nmi.pending, 0);
    check_eq!(fresh.nmi.masked, 0);
    let mut ev = fresh;
    ev.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
    ev.exception.injected = 1;
    ev.exception.nr = 13;
    ev.exception.has_error_code = 1;
    ev.exception.error_code = 0x18;
    ev.nmi.pending = 1;
    ev.nmi.masked = 1;
    ev.interrupt.shadow = u8::try_from(KVM_X86_SHADOW_INT_STI).unwrap_or(2);
    check_ok!(vcpu.set_vcpu_events(&ev));
    let back = check_ok!(vcpu.get_vcpu_events());
    check_eq!(back.exception.injected, 1, "exception injected");
    check_eq!(back.exception.nr, 13, "its vector");
    check_eq!(back.exception.has_error_code, 1);
    check_eq_hex!(back.exception.error_code, 0x18u32, "its error code");
    check_eq!(back.nmi.pending, 1, "NMIs pending");
    check_eq!(back.nmi.masked, 1, "NMIs masked");
    check!(back.interrupt.shadow != 0, "the interrupt shadow");
    for (what, bad) in [
        ("unknown flag", {
            let mut e = fresh;
            e.flags |= 1 << 10;
            e
        }),
        ("payload flag", {
            let mut e = fresh;
            e.flags |= KVM_VCPUEVENT_VALID_PAYLOAD;
            e
        }),
        ("vector 32", {
            let mut e = fresh;
            e.exception.injected = 1;
            e.exception.nr = 32;
            e
        }),
        ("NMI's vector", {
            let mut e = fresh;
            e.exception.injected = 1;
            e.exception.nr = 2;
            e
        }),
    ] {
        check_errno!(vcpu.set_vcpu_events(&bad), libc::EINVAL, "{what}");
    }
    let after = check_ok!(vcpu.get_vcpu_events());
    check_eq!(after.exception.nr, 13, "unchanged by the refused ones");
    check_eq!(after.nmi.pending, 1, "unchanged by the refused ones");
    // Refused too, but KVM applies the rest of the struct before it looks
    // at this flag (docs/abi.md): what it leaves is not checked.
    let mut e = fresh;
    e.flags |= KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
    check_errno!(vcpu.set_vcpu_events(&e), libc::EINVAL, "triple-fault flag");
    Ok(())
}

/// `KVM_VCPU_TSC_OFFSET` in group `KVM_VCPU_TSC_CTRL`, a vCPU's one
/// device attribute (Linux's system_counter_offset_test): it exists,
/// nothing else does (`ENXIO`), and the offset set is the one read back
/// and the one the guest's TSC runs at: the host's TSC plus it.
fn tsc_offset_attribute_sets_the_guests_tsc(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let offset = u64::from(KVM_VCPU_TSC_OFFSET);
    check_ok!(vcpu.has_device_attr(KVM_VCPU_TSC_CTRL, offset));
    check_errno!(vcpu.has_device_attr(KVM_VCPU_TSC_CTRL, 1), libc::ENXIO);
    check_errno!(vcpu.has_device_attr(1, offset), libc::ENXIO);
    check_errno!(vcpu.get_device_attr_u64(KVM_VCPU_TSC_CTRL, 1), libc::ENXIO);
    check_errno!(vcpu.set_device_attr_u64(1, offset, 0), libc::ENXIO);
    // 180 s of cycles at 4 GHz, forwards then backwards (as Linux's test).
    for want in [720_000_000_000u64, 0u64.wrapping_sub(720_000_000_000)] {
        check_ok!(vcpu.set_device_attr_u64(KVM_VCPU_TSC_CTRL, offset, want));
        check_eq_hex!(
            check_ok!(vcpu.get_device_attr_u64(KVM_VCPU_TSC_CTRL, offset)),
            want,
            "the offset read back"
        );
        // SAFETY: RDTSC has no side effect; every x86-64 CPU has it.
        let before = unsafe { core::arch::x86_64::_rdtsc() }.wrapping_add(want);
        let tsc = read_tsc(&vcpu)?;
        // SAFETY: as above.
        let after = unsafe { core::arch::x86_64::_rdtsc() }.wrapping_add(want);
        check!(
            tsc.wrapping_sub(before) <= after.wrapping_sub(before),
            "the guest's TSC {tsc} outside [{before}, {after}]"
        );
    }
    Ok(())
}

/// HWCR (AMD's hardware configuration register; KVM keeps it on both
/// vendors): McStatusWrEn (18) and TscFreqSel (24) are kept, bits 3, 6
/// and 8 are taken and read as 0, any other is refused.
fn hwcr_keeps_two_bits_and_refuses_the_others(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let hwcr = |vcpu: &Vcpu| -> Result<u64, Status> {
        let mut got = check_ok!(MsrEntries::from_indices(&[MSR_HWCR]));
        check_eq!(check_ok!(vcpu.get_msrs(&mut got)), 1, "KVM_GET_MSRS(HWCR)");
        Ok(got.get(MSR_HWCR).unwrap_or(u64::MAX))
    };
    check_eq_hex!(hwcr(&vcpu)?, 0u64, "HWCR at reset");
    for (bit, taken, reads) in [
        (24, true, 1u64 << 24),
        (18, true, 1 << 18),
        (3, true, 0),
        (8, true, 0),
        (0, false, 0),
        (17, false, 0),
        (63, false, 0),
    ] {
        let set = check_ok!(vcpu.set_msrs(&check_ok!(MsrEntries::from_pairs(&[(
            MSR_HWCR,
            1u64 << bit
        )]))));
        check_eq!(set, usize::from(taken), "HWCR bit {bit} taken");
        check_eq_hex!(hwcr(&vcpu)?, reads, "HWCR after writing bit {bit}");
        check_eq!(
            check_ok!(vcpu.set_msrs(&check_ok!(MsrEntries::from_pairs(&[(MSR_HWCR, 0)])))),
            1
        );
    }
    Ok(())
}

fn get_msrs_stops_at_an_unsupported_msr(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let mut msrs = check_ok!(MsrEntries::from_indices(&[
        MSR_SYSENTER_CS,
        MSR_PAT,
        MSR_BOGUS,
        MSR_EFER
    ]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut msrs)), 2, "entries processed");
    let mut first = check_ok!(MsrEntries::from_indices(&[MSR_BOGUS, MSR_PAT]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut first)), 0, "entries processed");
    Ok(())
}

fn set_msrs_stops_at_an_unsupported_msr(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let msrs = check_ok!(MsrEntries::from_pairs(&[
        (MSR_SYSENTER_CS, 0x10),
        (MSR_BOGUS, 0),
        (MSR_SYSENTER_ESP, 0x1000)
    ]));
    check_eq!(check_ok!(vcpu.set_msrs(&msrs)), 1, "entries processed");
    let mut got = check_ok!(MsrEntries::from_indices(&[
        MSR_SYSENTER_CS,
        MSR_SYSENTER_ESP
    ]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut got)), 2);
    check_eq_hex!(
        got.get(MSR_SYSENTER_CS).unwrap_or(0),
        0x10u64,
        "written before the bad MSR"
    );
    check_eq_hex!(
        got.get(MSR_SYSENTER_ESP).unwrap_or(u64::MAX),
        0u64,
        "not written after it"
    );
    Ok(())
}

/// msr_io() in arch/x86/kvm/msrs.c refuses nmsrs >= MAX_IO_MSRS (256).
fn msrs_nmsrs_at_limit_is_e2big(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let mut at_limit = check_ok!(MsrEntries::from_indices(&[MSR_SYSENTER_CS; MAX_IO_MSRS]));
    check_errno!(
        vcpu.get_msrs(&mut at_limit),
        libc::E2BIG,
        "KVM_GET_MSRS with {MAX_IO_MSRS}"
    );
    check_errno!(
        vcpu.set_msrs(&at_limit),
        libc::E2BIG,
        "KVM_SET_MSRS with {MAX_IO_MSRS}"
    );
    let mut below = check_ok!(MsrEntries::from_indices(
        &[MSR_SYSENTER_CS; MAX_IO_MSRS - 1]
    ));
    check_eq!(check_ok!(vcpu.get_msrs(&mut below)), MAX_IO_MSRS - 1);
    Ok(())
}

/// The x87 control word after RESET/INIT (SDM Vol. 3A 10.1.1, Table 10-1).
const FCW_RESET: u16 = 0x37f;

/// Byte offsets in `struct kvm_xsave` (the XSAVE standard format, SDM
/// Vol. 1 13.4): MXCSR, XSTATE_BV, XCOMP_BV and the header's reserved bytes.
const XSAVE_MXCSR: usize = 24;
const XSAVE_XSTATE_BV: usize = 512;
const XSAVE_XCOMP_BV: usize = 520;
const XSAVE_HEADER_END: usize = 576;
/// XSTATE_BV's x87, SSE and AVX bits (SDM Vol. 1 13.1).
const XFEATURE_FPSSE: u64 = 0b11;
const XFEATURE_YMM: u64 = 1 << 2;

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut q = [0u8; 8];
    q.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(q)
}

/// The XSAVE components the device offers guests: x87 and SSE always, and
/// what leaf 0xD of KVM_GET_SUPPORTED_CPUID lists.
fn supported_xcr0(ctx: &Ctx) -> Result<u64, Status> {
    let mut cpuid = CpuidEntries::new(KVM_MAX_CPUID_ENTRIES)?;
    ctx.sys.get_supported_cpuid(&mut cpuid)?;
    let leaf = cpuid
        .find(0xd, 0)
        .map_or(0, |e| u64::from(e.eax) | u64::from(e.edx) << 32);
    Ok(leaf | XFEATURE_FPSSE)
}

/// KVM_GET_XSAVE at reset: FNINIT's x87 control word and MXCSR 0x1F80 in
/// the legacy region, the standard (not compacted) format, nothing beyond
/// what the device offers in XSTATE_BV; KVM_GET_XSAVE2 with the VM's
/// `KVM_CAP_XSAVE2` size (at least 4096) returns the same bytes; and
/// `KVM_CAP_XSAVE` is offered (KVM 7.3 offers it on every host; whether the
/// host uses XSAVE is `KVM_CAP_XCRS`).
fn xsave_after_reset_and_xsave2(ctx: &Ctx) -> TestResult {
    let (vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let region = check_ok!(vcpu.get_xsave());
    check_eq!(region.len(), XSAVE_SIZE);
    check_eq_hex!(u16::from_le_bytes([region[0], region[1]]), FCW_RESET, "FCW");
    check_eq_hex!(
        u64_at(&region, XSAVE_MXCSR) & 0xffff_ffff,
        0x1f80u64,
        "MXCSR"
    );
    let xstate_bv = u64_at(&region, XSAVE_XSTATE_BV);
    let offered = supported_xcr0(ctx)?;
    check!(
        xstate_bv & !offered == 0,
        "XSTATE_BV {xstate_bv:#x} has a component beyond the offered {offered:#x}"
    );
    check_eq_hex!(u64_at(&region, XSAVE_XCOMP_BV), 0u64, "XCOMP_BV");
    let cap = check_ok!(vm.check_extension(KVM_CAP_XSAVE2));
    let size = usize::try_from(cap).unwrap_or(0);
    check!(
        size >= XSAVE_SIZE,
        "KVM_CAP_XSAVE2 is {cap}, below struct kvm_xsave"
    );
    let two = check_ok!(vcpu.get_xsave2(size));
    check_eq!(two.len(), size);
    check!(
        two[..XSAVE_SIZE] == region[..],
        "KVM_GET_XSAVE2 differs from KVM_GET_XSAVE"
    );
    check_eq!(
        check_ok!(ctx.sys.check_extension(KVM_CAP_XSAVE)),
        1,
        "KVM_CAP_XSAVE"
    );
    let xcrs = check_ok!(ctx.sys.check_extension(KVM_CAP_XCRS));
    diag!("KVM_CAP_XCRS {xcrs}, KVM_CAP_XSAVE2 {size}, XSTATE_BV at reset {xstate_bv:#x}");
    Ok(())
}

/// KVM_SET_XSAVE refuses (`EINVAL`) what KVM refuses and changes nothing:
/// an MXCSR bit the processor does not have, a component the device does
/// not offer (bit 62; AVX where leaf 0xD does not list it), and on a host
/// that uses XSAVE (`KVM_CAP_XCRS`) a compacted region or a reserved
/// header byte, which a host without it (the region is an FXSAVE image
/// then) does not look at. What KVM_GET_XSAVE returned is taken back.
fn xsave_refusals_change_nothing(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let mut region = check_ok!(vcpu.get_xsave());
    // Take x87 and SSE out of their initial state, so that the check below
    // sees a refused region leave them as they were.
    region[0..2].copy_from_slice(&0x027fu16.to_le_bytes());
    region[160..176].copy_from_slice(&[0x5a; 16]);
    let bv = u64_at(&region, XSAVE_XSTATE_BV) | XFEATURE_FPSSE;
    region[XSAVE_XSTATE_BV..XSAVE_XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
    check_ok!(vcpu.set_xsave(&region));
    let before = check_ok!(vcpu.get_xsave());
    check_eq!(before[..2], region[..2], "FCW taken");
    check_eq!(before[160..176], region[160..176], "XMM0 taken");
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut r = before.clone();
        f(&mut r);
        r
    };
    let set_bv = |r: &mut Vec<u8>, v: u64| {
        r[XSAVE_XSTATE_BV..XSAVE_XSTATE_BV + 8].copy_from_slice(&v.to_le_bytes())
    };
    let mxcsr = with(&|r| r[XSAVE_MXCSR + 3] = 0xff);
    check_errno!(vcpu.set_xsave(&mxcsr), libc::EINVAL, "reserved MXCSR bits");
    let bit62 = with(&|r| set_bv(r, XFEATURE_FPSSE | 1 << 62));
    check_errno!(vcpu.set_xsave(&bit62), libc::EINVAL, "XSTATE_BV bit 62");
    if supported_xcr0(ctx)? & XFEATURE_YMM == 0 {
        let ymm = with(&|r| set_bv(r, XFEATURE_FPSSE | XFEATURE_YMM));
        check_errno!(vcpu.set_xsave(&ymm), libc::EINVAL, "AVX, not offered");
    }
    let compacted = with(&|r| r[XSAVE_XCOMP_BV + 7] = 0x80);
    let reserved = with(&|r| r[XSAVE_HEADER_END - 1] = 1);
    if check_ok!(ctx.sys.check_extension(KVM_CAP_XCRS)) != 0 {
        check_errno!(vcpu.set_xsave(&compacted), libc::EINVAL, "XCOMP_BV");
        check_errno!(
            vcpu.set_xsave(&reserved),
            libc::EINVAL,
            "a reserved header byte"
        );
    }
    let after = check_ok!(vcpu.get_xsave());
    check!(after == before, "a refused KVM_SET_XSAVE changed the state");
    Ok(())
}

/// KVM_GET/SET_XCRS: where the host uses XSAVE, XCR0 is 1 at reset (x87
/// only) and the vCPU (no CPUID set: no XSAVE component offered) takes
/// only 1; 0, SSE without x87 offered, a flag or more than 16 entries are
/// `EINVAL`; an entry for another XCR is skipped. With the offered CPUID
/// set, XCR0 takes every offered component (x87|SSE|AVX where the host
/// has AVX) and refuses a bit not offered and AVX without SSE. Without
/// host XSAVE there is no XCR to report (`nr_xcrs` 0) and KVM_SET_XCRS is
/// `EINVAL`.
fn xcrs_hold_xcr0(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let xcrs = check_ok!(vcpu.get_xcrs());
    let one = |xcr: u32, value: u64| {
        let mut x = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        x.xcrs[0].xcr = xcr;
        x.xcrs[0].value = value;
        x
    };
    if check_ok!(ctx.sys.check_extension(KVM_CAP_XCRS)) == 0 {
        check_eq!(xcrs.nr_xcrs, 0u32, "nr_xcrs without host XSAVE");
        check_errno!(vcpu.set_xcrs(&one(0, 1)), libc::EINVAL, "no host XSAVE");
        diag!("the host does not use XSAVE: no XCR0 to hold");
        return Ok(());
    }
    check_eq!(xcrs.nr_xcrs, 1u32, "nr_xcrs");
    check_eq!(xcrs.xcrs[0].xcr, 0u32, "XCR index");
    check_eq_hex!(xcrs.xcrs[0].value, 1u64, "XCR0 at reset");
    check_ok!(vcpu.set_xcrs(&one(0, 1)));
    check_errno!(vcpu.set_xcrs(&one(0, 0)), libc::EINVAL, "XCR0 without x87");
    check_errno!(vcpu.set_xcrs(&one(0, 3)), libc::EINVAL, "SSE, not offered");
    let mut flags = one(0, 1);
    flags.flags = 1;
    check_errno!(vcpu.set_xcrs(&flags), libc::EINVAL, "a flag");
    let mut many = one(0, 1);
    many.nr_xcrs = 17;
    check_errno!(vcpu.set_xcrs(&many), libc::EINVAL, "17 entries");
    check_ok!(vcpu.set_xcrs(&one(1, 0x1234)));
    check_eq_hex!(
        check_ok!(vcpu.get_xcrs()).xcrs[0].value,
        1u64,
        "XCR0 after all that"
    );
    // With the offered CPUID, XCR0 may hold what leaf 0xD lists.
    let offered = supported_xcr0(ctx)?;
    let mut cpuid = CpuidEntries::new(KVM_MAX_CPUID_ENTRIES)?;
    check_ok!(ctx.sys.get_supported_cpuid(&mut cpuid));
    check_ok!(vcpu.set_cpuid2(&cpuid));
    check_ok!(vcpu.set_xcrs(&one(0, offered)));
    check_eq_hex!(
        check_ok!(vcpu.get_xcrs()).xcrs[0].value,
        offered,
        "XCR0 as offered"
    );
    check_errno!(
        vcpu.set_xcrs(&one(0, offered | 1 << 62)),
        libc::EINVAL,
        "bit 62"
    );
    if offered & XFEATURE_YMM != 0 {
        check_errno!(vcpu.set_xcrs(&one(0, 5)), libc::EINVAL, "AVX without SSE");
    }
    check_eq_hex!(
        check_ok!(vcpu.get_xcrs()).xcrs[0].value,
        offered,
        "XCR0 kept"
    );
    diag!("XCR0 offered: {offered:#x}");
    Ok(())
}

/// KVM_GET/SET_DEBUGREGS: DR6 0xFFFF0FF0 and DR7 0x400 at reset, DR0-DR3
/// zero; what is set reads back; a flag or a bit in DR6's or DR7's upper
/// half is `EINVAL` and changes nothing.
fn debugregs_round_trip_and_refusals(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let reset = check_ok!(vcpu.get_debugregs());
    check_eq!(reset.db, [0u64; 4], "DR0-DR3 at reset");
    check_eq_hex!(reset.dr6, 0xffff_0ff0u64, "DR6 at reset");
    check_eq_hex!(reset.dr7, 0x400u64, "DR7 at reset");
    check_eq!(reset.flags, 0u64, "flags");
    let set = kvm_debugregs {
        db: [0x1000, 0xffff_ffff_ffff_f000, 0x3003, 0x4000_0000],
        dr6: 0xffff_4ff0,
        // LE and GE only: no breakpoint enabled.
        dr7: 0x700,
        ..Default::default()
    };
    check_ok!(vcpu.set_debugregs(&set));
    let got = check_ok!(vcpu.get_debugregs());
    check_eq!(got.db, set.db, "DR0-DR3");
    check_eq_hex!(got.dr6, set.dr6, "DR6");
    check_eq_hex!(got.dr7, set.dr7, "DR7");
    for (what, bad) in [
        ("a flag", kvm_debugregs { flags: 1, ..reset }),
        (
            "DR6 bit 32",
            kvm_debugregs {
                dr6: 1 << 32 | 0xffff_0ff0,
                ..reset
            },
        ),
        (
            "DR7 bit 63",
            kvm_debugregs {
                dr7: 1 << 63 | 0x400,
                ..reset
            },
        ),
    ] {
        check_errno!(vcpu.set_debugregs(&bad), libc::EINVAL, "{what}");
    }
    let after = check_ok!(vcpu.get_debugregs());
    check_eq!(after.db, set.db, "DR0-DR3 after the refusals");
    check_eq_hex!(after.dr7, set.dr7, "DR7 after the refusals");
    Ok(())
}

/// KVM_GET_FPU before anything ran: x87 and SSE in their reset state. MXCSR
/// is not carried by this ioctl on KVM 7.3 (0), so it is not looked at.
fn fpu_after_reset(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let fpu = check_ok!(vcpu.get_fpu());
    check_eq_hex!(fpu.fcw, FCW_RESET, "FCW");
    check_eq_hex!(fpu.fsw, 0u16, "FSW");
    check_eq_hex!(fpu.ftwx, 0u8, "abridged tag word: every register empty");
    check_eq!(fpu.fpr, [[0u8; 16]; 8], "ST0-ST7");
    check_eq!(fpu.xmm, [[0u8; 16]; 16], "XMM0-XMM15");
    Ok(())
}

/// What KVM_SET_FPU stores, KVM_GET_FPU returns: every x87 field and all 16
/// XMM registers (a pattern distinct per byte).
fn fpu_round_trip(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let mut fpu = kvm_fpu {
        fcw: 0x027f,
        fsw: 0x3800,
        ftwx: 0x81,
        last_opcode: 0x7ff,
        last_ip: 0x1234_5678_9abc,
        last_dp: 0xfedc_ba98_7654,
        ..Default::default()
    };
    // A distinct byte everywhere: 80-bit ST registers (the 6 bytes above are
    // reserved), then the XMM registers.
    let mut next = 0x10u8;
    for st in &mut fpu.fpr {
        for b in st.iter_mut().take(10) {
            *b = next;
            next = next.wrapping_add(1);
        }
    }
    for x in &mut fpu.xmm {
        for b in x.iter_mut() {
            *b = next;
            next = next.wrapping_add(1);
        }
    }
    check_ok!(vcpu.set_fpu(&fpu));
    let got = check_ok!(vcpu.get_fpu());
    check_eq_hex!(got.fcw, fpu.fcw, "FCW");
    check_eq_hex!(got.fsw, fpu.fsw, "FSW");
    check_eq_hex!(got.ftwx, fpu.ftwx, "abridged tag word");
    check_eq_hex!(got.last_opcode, fpu.last_opcode, "last opcode");
    check_eq_hex!(got.last_ip, fpu.last_ip, "last instruction pointer");
    check_eq_hex!(got.last_dp, fpu.last_dp, "last data pointer");
    for i in 0..8 {
        check_eq!(got.fpr[i][..10], fpu.fpr[i][..10], "ST{i}");
    }
    check_eq!(got.xmm, fpu.xmm, "XMM0-XMM15");
    check_efault!(vcpu.as_fd(), KVM_SET_FPU, KVM_GET_FPU);
    Ok(())
}

/// Without an in-kernel local APIC a vCPU is always runnable: HLT, INIT and
/// SIPI belong to the VMM. KVM_SET_MP_STATE takes RUNNABLE and refuses the
/// states only an in-kernel APIC can leave, and anything unknown.
fn mp_state_without_an_irqchip_is_always_runnable(ctx: &Ctx) -> TestResult {
    check_eq!(check_ok!(ctx.cap(KVM_CAP_MP_STATE)), 1, "KVM_CAP_MP_STATE");
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    check_eq!(check_ok!(vcpu.get_mp_state()), KVM_MP_STATE_RUNNABLE);
    check_ok!(vcpu.set_mp_state(KVM_MP_STATE_RUNNABLE));
    for state in [
        KVM_MP_STATE_UNINITIALIZED,
        KVM_MP_STATE_HALTED,
        KVM_MP_STATE_INIT_RECEIVED,
        1000,
    ] {
        check_errno!(
            vcpu.set_mp_state(state),
            libc::EINVAL,
            "KVM_SET_MP_STATE({state})"
        );
    }
    check_eq!(check_ok!(vcpu.get_mp_state()), KVM_MP_STATE_RUNNABLE);
    Ok(())
}

/// KVM_GET_TSC_KHZ gives the guest's TSC rate: the host's (no scaling), the
/// same on every vCPU and on the VM fd (the rate new vCPUs get), and a
/// plausible clock.
fn tsc_khz_is_the_hosts_on_every_vcpu(ctx: &Ctx) -> TestResult {
    check_eq!(
        check_ok!(ctx.cap(KVM_CAP_GET_TSC_KHZ)),
        1,
        "KVM_CAP_GET_TSC_KHZ"
    );
    let vm = check_ok!(ctx.vm());
    let v0 = check_ok!(vm.create_vcpu(0));
    let v1 = check_ok!(vm.create_vcpu(1));
    let khz = check_ok!(v0.get_tsc_khz());
    diag!("KVM_GET_TSC_KHZ = {khz}");
    check!((100_000..100_000_000).contains(&khz), "{khz} kHz");
    check_eq!(check_ok!(v1.get_tsc_khz()), khz, "vCPU 1");
    check_eq!(check_ok!(vm.get_tsc_khz()), khz, "the VM fd");
    Ok(())
}

/// KVM_SET_TSC_KHZ on a device without TSC scaling (`KVM_CAP_TSC_CONTROL`
/// 0; skipped with it), as KVM: on the VM fd before any vCPU, the rate new
/// vCPUs report, then `EINVAL`; on a vCPU, a rate within 250 ppm of the
/// host's is reported as asked and 0 is the host's; half the host's rate
/// is `EINVAL`. Twice the host's rate KVM emulates by pushing the guest's
/// TSC forward at every entry, which rkvm refuses (`EINVAL`, docs/abi.md).
fn set_tsc_khz_takes_what_the_device_can_give(ctx: &Ctx) -> TestResult {
    if check_ok!(ctx.cap(KVM_CAP_TSC_CONTROL)) != 0 {
        ksft::skip!("the device scales the TSC: other rates are its to give");
    }
    let vm = check_ok!(ctx.vm());
    let host = check_ok!(vm.get_tsc_khz());
    // 100 ppm above the host's rate.
    let near = host + host / 10_000;
    check_ok!(vm.set_tsc_khz(near));
    check_eq!(check_ok!(vm.get_tsc_khz()), near, "the VM's rate");
    let vcpu = check_ok!(vm.create_vcpu(0));
    check_eq!(check_ok!(vcpu.get_tsc_khz()), near, "a new vCPU's rate");
    check_errno!(vm.set_tsc_khz(host), libc::EINVAL, "the VM's, after a vCPU");
    check_ok!(vcpu.set_tsc_khz(0));
    check_eq!(check_ok!(vcpu.get_tsc_khz()), host, "0: the host's rate");
    check_ok!(vcpu.set_tsc_khz(host - host / 10_000));
    check_eq!(
        check_ok!(vcpu.get_tsc_khz()),
        host - host / 10_000,
        "100 ppm below"
    );
    check_errno!(
        vcpu.set_tsc_khz(host / 2),
        libc::EINVAL,
        "half the host's rate"
    );
    let twice = vcpu.set_tsc_khz(host * 2);
    if ctx.is_rkvm() {
        check_errno!(twice, libc::EINVAL, "twice the host's rate");
    } else {
        check_ok!(twice);
        diag!("KVM takes twice the host's rate (its TSC catch-up mode)");
    }
    Ok(())
}

/// VMMs written for old KVMs (QEMU 7.2) reset the first kvmclock MSRs to 0
/// whatever the guest's CPUID; 0 ("no clock structure") is taken and read
/// back.
fn kvmclock_msrs_take_zero(ctx: &Ctx) -> TestResult {
    let (_vm, vcpu) = check_ok!(ctx.vm_with_vcpu());
    let zero = check_ok!(MsrEntries::from_pairs(&[
        (MSR_KVM_WALL_CLOCK, 0),
        (MSR_KVM_SYSTEM_TIME, 0)
    ]));
    check_eq!(check_ok!(vcpu.set_msrs(&zero)), 2, "MSRs written");
    let mut got = check_ok!(MsrEntries::from_indices(&[
        MSR_KVM_WALL_CLOCK,
        MSR_KVM_SYSTEM_TIME
    ]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut got)), 2, "MSRs read");
    check_eq_hex!(got.get(MSR_KVM_WALL_CLOCK).unwrap_or(1), 0u64, "WALL_CLOCK");
    check_eq_hex!(
        got.get(MSR_KVM_SYSTEM_TIME).unwrap_or(1),
        0u64,
        "SYSTEM_TIME"
    );
    Ok(())
}

/// The capabilities QEMU requires before it creates a VM, answered as KVM
/// 7.3 answers them.
fn caps_a_vmm_requires(ctx: &Ctx) -> TestResult {
    check_eq!(
        check_ok!(ctx.cap(KVM_CAP_JOIN_MEMORY_REGIONS_WORKS)),
        1,
        "KVM_CAP_JOIN_MEMORY_REGIONS_WORKS"
    );
    // KVM_MAX_IRQ_ROUTES: the size a routing table may have.
    check_eq!(
        check_ok!(ctx.cap(KVM_CAP_IRQ_ROUTING)),
        4096,
        "KVM_CAP_IRQ_ROUTING"
    );
    Ok(())
}

/// A routing table maps GSIs to an in-kernel irqchip's pins: on a VM
/// without one, KVM_SET_GSI_ROUTING is EINVAL once the header is read
/// (EFAULT if it cannot be).
fn gsi_routing_without_an_irqchip_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check_errno!(vm.set_empty_gsi_routing(), libc::EINVAL, "empty table");
    check_efault!(vm.as_fd(), KVM_SET_GSI_ROUTING);
    Ok(())
}

/// KVM_ENABLE_CAP of a capability nobody defines is EINVAL (EFAULT if the
/// argument cannot be read).
/// `KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID)`: the VM's vCPU ids must be below
/// the limit set; a limit above the device's, below the boot CPU's id, or
/// different from one already set is `EINVAL`; the same one again is not.
fn max_vcpu_id_cap_bounds_the_vms_vcpu_ids(ctx: &Ctx) -> TestResult {
    let device = ctx.max_vcpu_id()?;
    let vm = check_ok!(ctx.vm());
    let set = |limit: u64| vm.enable_cap(KVM_CAP_MAX_VCPU_ID, [limit, 0, 0, 0]);
    check_errno!(set(device + 1), libc::EINVAL, "above the device's");
    check_ok!(vm.set_boot_cpu_id(5));
    check_errno!(set(4), libc::EINVAL, "below the boot CPU's id");
    check_ok!(vm.set_boot_cpu_id(0));
    check_ok!(set(4));
    check_ok!(set(4));
    check_errno!(set(5), libc::EINVAL, "a second, different limit");
    check_errno!(vm.set_boot_cpu_id(5), libc::EINVAL, "a boot CPU above it");
    check_errno!(
        vm.create_vcpu(4),
        libc::EINVAL,
        "vCPU id 4 under a limit of 4"
    );
    check_ok!(vm.create_vcpu(3));
    Ok(())
}

/// `KVM_SET_NR_MMU_PAGES`: 64 pages or more, as KVM.
fn set_nr_mmu_pages_takes_64_or_more(ctx: &Ctx) -> TestResult {
    check_eq!(
        check_ok!(ctx.cap(KVM_CAP_MMU_SHADOW_CACHE_CONTROL)),
        1,
        "KVM_CAP_MMU_SHADOW_CACHE_CONTROL"
    );
    let vm = check_ok!(ctx.vm());
    check_errno!(vm.set_nr_mmu_pages(63), libc::EINVAL, "63 pages");
    check_errno!(vm.set_nr_mmu_pages(0), libc::EINVAL, "0 pages");
    check_ok!(vm.set_nr_mmu_pages(64));
    check_ok!(vm.set_nr_mmu_pages(1 << 20));
    Ok(())
}

fn enable_cap_of_an_unknown_cap_is_einval(ctx: &Ctx) -> TestResult {
    let vm = check_ok!(ctx.vm());
    check_errno!(
        vm.enable_cap(0xffff_0000, [0; 4]),
        libc::EINVAL,
        "cap 0xffff0000"
    );
    check_efault!(vm.as_fd(), KVM_ENABLE_CAP);
    Ok(())
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            create_vcpu_0_returns_cloexec_fd,
            same_vcpu_id_twice_is_eexist,
            vcpu_id_at_max_vcpu_id_is_einval,
            vcpu_mmap_pages_are_readable,
            kvm_run_starts_with_no_exit,
            pio_data_page_is_mappable,
            mmap_beyond_mmap_size_is_unusable,
            regs_after_reset,
            regs_round_trip,
            sregs_after_reset,
            sregs_round_trip_protected_mode,
            sregs_paging_without_protection_is_einval,
            sregs_nw_without_cd_is_einval,
            sregs_reserved_cr4_bit_is_einval,
            sregs_reserved_efer_bit_is_einval,
            sregs_lma_inconsistent_with_lme_and_pg_is_einval,
            sregs_long_mode_before_set_cpuid_is_einval,
            sregs_long_mode_after_set_cpuid_round_trips,
            cpuid2_round_trip,
            get_cpuid2_before_set_is_empty,
            get_cpuid2_too_small_is_e2big,
            set_cpuid2_above_256_entries_is_e2big,
            msrs_of_a_64bit_guest_round_trip,
            msrs_at_reset,
            msr_tsc_write_is_read_back,
            get_msrs_stops_at_an_unsupported_msr,
            set_msrs_stops_at_an_unsupported_msr,
            msrs_nmsrs_at_limit_is_e2big,
            fpu_after_reset,
            fpu_round_trip,
            xsave_after_reset_and_xsave2,
            xsave_refusals_change_nothing,
            xcrs_hold_xcr0,
            debugregs_round_trip_and_refusals,
            mp_state_without_an_irqchip_is_always_runnable,
            tsc_khz_is_the_hosts_on_every_vcpu,
            set_tsc_khz_takes_what_the_device_can_give,
            kvmclock_msrs_take_zero,
            caps_a_vmm_requires,
            gsi_routing_without_an_irqchip_is_einval,
            enable_cap_of_an_unknown_cap_is_einval,
            a_new_vcpus_tsc_starts_near_zero_and_the_vms_vcpus_keep_in_step,
            hwcr_keeps_two_bits_and_refuses_the_others,
            tsc_offset_attribute_sets_the_guests_tsc,
            vcpu_events_round_trip_and_bad_ones_are_einval,
            max_vcpu_id_cap_bounds_the_vms_vcpu_ids,
            set_nr_mmu_pages_takes_64_or_more,
        ],
    )
}
