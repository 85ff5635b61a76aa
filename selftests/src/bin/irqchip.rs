//! The in-kernel irqchip (`KVM_CREATE_IRQCHIP`): guests that program the
//! local APIC's timer and sleep in HLT until it fires, send themselves and
//! each other IPIs, take level-triggered IOAPIC lines that user space
//! raises with `KVM_IRQ_LINE` and EOI them, and take PIC interrupts
//! through LINT0; the state ioctls (`KVM_GET/SET_LAPIC`, `KVM_GET/SET_IRQCHIP`)
//! the PIT's ticks and its speaker port, irqfds (edge, and resampling for level lines) signalled from another
//! thread, ioeventfds on ports and MMIO, and what each ioctl answers to
//! bad input.
//!
//! The guests install their own handler for the vectors they use (the
//! framework's handlers report an interrupt to the host and return, but do
//! not EOI): the handler counts in `%r15`, EOIs and returns.
//!
//! Usage: `irqchip [DEVICE]` (default `/dev/rkvm`).

use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ksft::{Status, TestResult, check, check_eq, check_eq_hex, check_errno, check_ok, tests};
use kvm_abi::MsrEntries;
use kvm_abi::VcpuExit;
use kvm_abi::eventfd::EventFd;
use kvm_abi::sys::{
    KVM_CAP_HLT, KVM_CAP_HYPERV_SEND_IPI, KVM_CAP_IOEVENTFD, KVM_CAP_IOEVENTFD_ANY_LENGTH,
    KVM_CAP_IRQ_INJECT_STATUS, KVM_CAP_IRQ_ROUTING, KVM_CAP_IRQCHIP, KVM_CAP_IRQFD,
    KVM_CAP_IRQFD_RESAMPLE, KVM_CAP_PIT, KVM_CAP_PIT_STATE2, KVM_CAP_PIT2,
    KVM_CAP_REINJECT_CONTROL, KVM_CAP_SET_BOOT_CPU_ID, KVM_CAP_SIGNAL_MSI, KVM_CAP_SPLIT_IRQCHIP,
    KVM_CAP_TSC_DEADLINE_TIMER, KVM_CAP_USER_NMI, KVM_CAP_X2APIC_API,
    KVM_CAP_X86_APIC_BUS_CYCLES_NS, KVM_EXIT_INTR, KVM_IRQFD_FLAG_DEASSIGN,
    KVM_IRQFD_FLAG_RESAMPLE, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_UNINITIALIZED, KVM_PIT_SPEAKER_DUMMY,
};
use nix::sys::signal::Signal;
use rkvm_selftests::guest::{
    DATA_GPA, GuestVcpu, GuestVm, MMIO_GPA, Mode, describe, hyper_v_cpuid,
};
use rkvm_selftests::{Ctx, guest};

/// The local APIC's registers (SDM Vol. 3A Table 11-1), as offsets into
/// `KVM_GET_LAPIC`'s page.
const APIC_ID: usize = 0x20;
const APIC_VERSION: usize = 0x30;
const APIC_TPR: usize = 0x80;
const APIC_SVR: usize = 0xf0;
const APIC_LVT_TIMER: usize = 0x320;
const APIC_DFR: usize = 0xe0;
const APIC_LVT_LINT0: usize = 0x350;
const APIC_TMICT: usize = 0x380;
const APIC_TMCCT: usize = 0x390;
const APIC_TDCR: usize = 0x3e0;

/// `struct kvm_ioeventfd`'s flags (an anonymous enum of bit numbers in
/// `linux/kvm.h`).
const IOEVENTFD_DATAMATCH: u32 = 1 << 0;
const IOEVENTFD_PIO: u32 = 1 << 1;
const IOEVENTFD_DEASSIGN: u32 = 1 << 2;

/// `KVM_GET/SET_IRQCHIP` chip ids.
const PIC_MASTER: u32 = 0;
const IOAPIC: u32 = 2;

fn reg(page: &[u8; 1024], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&page[offset..offset + 4]);
    u32::from_le_bytes(b)
}

/// IOAPIC redirection entry `pin` in `KVM_GET_IRQCHIP`'s state (after the
/// base address, IOREGSEL, ID, IRR and padding).
fn ioapic_entry(state: &[u8; 512], pin: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&state[24 + 8 * pin..32 + 8 * pin]);
    u64::from_le_bytes(b)
}

fn set_reg(page: &mut [u8; 1024], offset: usize, value: u32) {
    page[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// A VM with an in-kernel irqchip and vCPU 0 (and `more` vCPUs after it).
fn irqchip_vm(ctx: &Ctx, code: &[u8], vcpus: u64) -> Result<(GuestVm, Vec<GuestVcpu>), Status> {
    let vm = GuestVm::new(ctx, Mode::Long, code)?;
    check_ok!(vm.vm.create_irqchip());
    let mut out = Vec::new();
    for id in 0..vcpus {
        out.push(vm.add_vcpu(id)?);
    }
    Ok((vm, out))
}

/// The guest prologue shared by the guests below: a `set_gate VECTOR,
/// LABEL` macro that points the IDT's 64-bit gate for VECTOR (the IDT is
/// at 0x2000, 16 bytes a gate; selector and type stay) at LABEL; `%rbp`
/// holds the xAPIC page's address and `%r14` the IOAPIC's.
macro_rules! irq_guest {
    ($(#[$meta:meta])* fn $name:ident; $($tmpl:expr),+ $(,)?) => {
        guest! {
            $(#[$meta])* fn $name;
            ".code64",
            // %rbp: the xAPIC page; %r14: the IOAPIC (absolute addresses above
            // 2 GiB do not fit a sign-extended 32-bit displacement).
            "mov $0xfee00000, %ebp",
            "mov $0xfec00000, %r14d",
            ".macro set_gate vec, handler",
            "    lea \\handler(%rip), %rax",
            "    mov $(0x2000 + \\vec * 16), %rdx",
            "    mov %ax, (%rdx)",
            "    shr $16, %rax",
            "    mov %ax, 6(%rdx)",
            "    shr $16, %rax",
            "    mov %eax, 8(%rdx)",
            ".endm",
            // Sleeps in HLT until REG >= N (unsigned), with IF clear on
            // return. The test runs with interrupts off and STI's shadow
            // covers the HLT, so an interrupt cannot come between the test
            // and the sleep, which would then wait past it.
            ".macro halt_until reg, n",
            ".Lhalt\\@: cli",
            "    cmp $\\n, \\reg",
            "    jae .Lawake\\@",
            "    sti",
            "    hlt",
            "    jmp .Lhalt\\@",
            ".Lawake\\@:",
            ".endm",
            // Points IOAPIC pin PIN at LOW (vector, delivery mode, trigger,
            // mask) with destination APIC 0: the high half first, so the
            // entry is complete when it is unmasked.
            ".macro set_pin pin, low",
            "    movl $(0x11 + 2 * \\pin), (%r14)",
            "    movl $0, 0x10(%r14)",
            "    movl $(0x10 + 2 * \\pin), (%r14)",
            "    movl $\\low, 0x10(%r14)",
            ".endm",
            // Spins N times: the guest's way to let time pass.
            ".macro spin n",
            "    mov $\\n, %ecx",
            ".Lspin\\@: pause",
            "    dec %ecx",
            "    jnz .Lspin\\@",
            ".endm",
            $($tmpl),+,
            ".purgem set_gate",
            ".purgem halt_until",
            ".purgem set_pin",
            ".purgem spin",
        }
    };
}

irq_guest! {
    /// Periodic APIC timer, 10 ms, vector 0x30: HLT until five ticks came,
    /// then mask the timer and report the count.
    fn periodic_timer_guest;
    "set_gate 0x30, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0xb, 0x3e0(%rbp)",
    "movl $0x20030, 0x320(%rbp)",
    "movl $10000000, 0x380(%rbp)",
    "halt_until %r15, 5",
    "movl $0x10000, 0x320(%rbp)",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// The APIC timer in periodic mode wakes a vCPU halted in the kernel: five
/// 10 ms periods take at least 45 ms and end in exactly the guest's report
/// (no HLT reaches user space). The debugfs counters KVM and rkvm share
/// (`irq_injections`, `halt_wakeup`) and rkvm's `apic_timer_fires` saw
/// them.
fn periodic_timer_wakes_a_halted_vcpu(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, periodic_timer_guest(), 1)?;
    let stat = |name: &str| ctx.vm_stat(&vm.vm, name).map_err(Status::Fail);
    let start = Instant::now();
    let [count, _, _] = vcpus[0].sync()?;
    let elapsed = start.elapsed();
    check_eq!(count, 5u64, "timer interrupts counted by the guest");
    check!(
        elapsed >= Duration::from_millis(45),
        "five 10 ms periods took {elapsed:?}"
    );
    check!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    check!(stat("irq_injections")? >= 5, "irq_injections");
    check!(stat("halt_wakeup")? >= 1, "halt_wakeup");
    if ctx.is_rkvm() {
        check!(stat("apic_timer_fires")? >= 5, "apic_timer_fires");
    }
    vcpus[0].done()
}

irq_guest! {
    /// One-shot timer, 20 ms at divide-by-1, vector 0x31: the current count
    /// runs down from the initial count; one interrupt, then the count
    /// stays 0 and no second one comes.
    fn one_shot_timer_guest;
    "set_gate 0x31, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0xb, 0x3e0(%rbp)",
    "movl $0x31, 0x320(%rbp)",
    "movl $20000000, 0x380(%rbp)",
    "mov 0x390(%rbp), %ebx",
    "mov 0x390(%rbp), %ecx",
    "halt_until %r15, 1",
    "sti",
    "mov 0x390(%rbp), %esi",
    "ucall UCALL_SYNC",
    // Wait as long again: no second interrupt.
    "spin 2000000",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// A one-shot timer counts down from its initial count (two reads in a row
/// are at most the initial count and do not increase), fires once, and
/// then reads 0.
fn one_shot_timer_counts_down_and_fires_once(ctx: &Ctx) -> TestResult {
    let (_vm, mut vcpus) = irqchip_vm(ctx, one_shot_timer_guest(), 1)?;
    let [first, second, after] = vcpus[0].sync()?;
    check!(
        first <= 20_000_000 && first > 0,
        "TMCCT right after TMICT: {first}"
    );
    check!(second <= first, "TMCCT went up: {first} then {second}");
    check_eq!(after, 0u64, "TMCCT once expired");
    let [count, _, _] = vcpus[0].sync()?;
    check_eq!(count, 1u64, "interrupts from one one-shot");
    vcpus[0].done()
}

irq_guest! {
    /// A self-IPI through the ICR (shorthand "self", vector 0x50).
    fn self_ipi_guest;
    "set_gate 0x50, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "sti",
    "movl $0x40050, 0x300(%rbp)",
    "nop",
    "mov %r15, %rbx",
    "mov 0x300(%rbp), %ecx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// An IPI a vCPU sends itself is taken right after the ICR write, and the
/// ICR reads back what was written (with the delivery status idle).
fn self_ipi_is_delivered_at_once(ctx: &Ctx) -> TestResult {
    let (_vm, mut vcpus) = irqchip_vm(ctx, self_ipi_guest(), 1)?;
    let [count, icr, _] = vcpus[0].sync()?;
    check_eq!(count, 1u64, "self-IPIs taken");
    check_eq_hex!(icr, 0x40050u64, "ICR low");
    vcpus[0].done()
}

irq_guest! {
    /// vCPU 0 sends vector 0x51 to APIC ID 1 once the host says so; vCPU 1
    /// halts until it has it.
    fn ipi_guest;
    "set_gate 0x51, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "test %rdi, %rdi",
    "jnz 2f",
    "ucall UCALL_SYNC",
    "movl $0x01000000, 0x310(%rbp)",
    "movl $0x51, 0x300(%rbp)",
    "ucall UCALL_DONE",
    "2:",
    "halt_until %r15, 1",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// A fixed IPI from vCPU 0 wakes vCPU 1, halted in the kernel on another
/// thread, and runs its handler once.
fn ipi_wakes_another_halted_vcpu(ctx: &Ctx) -> TestResult {
    let (_vm, mut vcpus) = irqchip_vm(ctx, ipi_guest(), 2)?;
    let (Some(mut ap), Some(mut bsp)) = (vcpus.pop(), vcpus.pop()) else {
        ksft::fail!("two vCPUs were created");
    };
    // With an in-kernel APIC an application processor waits for INIT and
    // SIPI (KVM_MP_STATE_UNINITIALIZED); this test starts it directly, as
    // KVM's own selftests do.
    check_ok!(ap.vcpu.set_mp_state(KVM_MP_STATE_RUNNABLE));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = ap.sync().map(|[count, _, _]| count);
        // Closed before the test hears back: it checks that no fd is left open.
        drop(ap);
        let _ = tx.send(result);
    });
    bsp.sync()?;
    // Give vCPU 1 time to halt, then send.
    thread::sleep(Duration::from_millis(50));
    bsp.done()?;
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(count)) => check_eq!(count, 1u64, "IPIs taken by vCPU 1"),
        Ok(Err(e)) => return Err(e),
        Err(_) => ksft::fail!("vCPU 1 did not wake in 10 s"),
    }
    Ok(())
}

irq_guest! {
    /// vCPU 0 starts vCPU 1 the way firmware does (SDM Vol. 3A 9.4.4.1):
    /// INIT, INIT de-assert, then a SIPI with vector 9 (start at 0x9000).
    fn init_sipi_guest;
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0x01000000, 0x310(%rbp)",
    "movl $0x4500, 0x300(%rbp)",
    "movl $0x01000000, 0x310(%rbp)",
    "movl $0x8500, 0x300(%rbp)",
    "movl $0x01000000, 0x310(%rbp)",
    "movl $0x4609, 0x300(%rbp)",
    "ucall UCALL_DONE",
}

guest! {
    /// What vCPU 1 runs after the SIPI: real mode, at 0x0900:0000.
    fn ap_real_mode_guest;
    ".code16",
    "mov $0x1234, %bx",
    "mov %cs, %cx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// With an in-kernel APIC an application processor waits for INIT and
/// SIPI (`KVM_MP_STATE_UNINITIALIZED`, its `KVM_RUN` sleeping in the
/// kernel, then returning `EAGAIN` once woken, as KVM's: user space calls
/// it again) while the BSP is runnable; vCPU 0's INIT-SIPI then starts it
/// in real mode at the SIPI's vector (CS 0x0900, base 0x9000, IP 0),
/// whatever state user space had set before.
fn init_sipi_starts_an_application_processor(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, init_sipi_guest(), 2)?;
    vm.write(0x9000, ap_real_mode_guest())?;
    let (Some(mut ap), Some(mut bsp)) = (vcpus.pop(), vcpus.pop()) else {
        ksft::fail!("two vCPUs were created");
    };
    check_eq!(
        check_ok!(bsp.vcpu.get_mp_state()),
        KVM_MP_STATE_RUNNABLE,
        "BSP"
    );
    check_eq!(
        check_ok!(ap.vcpu.get_mp_state()),
        KVM_MP_STATE_UNINITIALIZED,
        "AP before INIT"
    );
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // The first KVM_RUN sleeps until the INIT and comes back with EAGAIN.
        let first = ap.vcpu.run().err().map(|e| e.errno());
        let result = ap.sync().and_then(|[bx, cx, _]| {
            if first != Some(nix::errno::Errno::EAGAIN) {
                return Err(Status::Fail(format!(
                    "first KVM_RUN of the waiting AP: {first:?}, expected EAGAIN"
                )));
            }
            let sregs = ap
                .vcpu
                .get_sregs()
                .map_err(|e| Status::Fail(e.to_string()))?;
            ap.done()?;
            Ok((
                bx,
                cx,
                sregs.cs.base,
                ap.vcpu.get_mp_state().unwrap_or(u32::MAX),
            ))
        });
        // Closed before the test hears back: it checks that no fd is left open.
        drop(ap);
        let _ = tx.send(result);
    });
    thread::sleep(Duration::from_millis(50));
    bsp.done()?;
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok((bx, cs, base, mp))) => {
            check_eq_hex!(bx & 0xffff, 0x1234u64, "AP's code ran");
            check_eq_hex!(cs & 0xffff, 0x900u64, "AP's CS");
            check_eq_hex!(base, 0x9000u64, "AP's CS base");
            check_eq!(mp, KVM_MP_STATE_RUNNABLE, "AP after SIPI");
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => ksft::fail!("vCPU 1 did not start in 10 s"),
    }
    Ok(())
}

irq_guest! {
    /// IOAPIC pin 5: vector 0x41, level-triggered, physical destination
    /// APIC 0. The handler reports each interrupt before its EOI, so the
    /// host can lower the line in between.
    fn ioapic_level_guest;
    "set_gate 0x41, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    // LINT0 masked: the same GSI reaches the (uninitialized) PIC too.
    "movl $0x10000, 0x350(%rbp)",
    "set_pin 5, 0x8041",
    "sti",
    "ucall UCALL_SYNC",
    "halt_until %r15, 2",
    "sti",
    // Some time for a third (wrong) delivery.
    "spin 1000000",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// A level-triggered IOAPIC line raised with `KVM_IRQ_LINE` is delivered,
/// delivered again after the EOI while it is still high (remote IRR), and
/// not again once lowered before the EOI.
fn ioapic_level_line_is_redelivered_until_lowered(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, ioapic_level_guest(), 1)?;
    let v = &mut vcpus[0];
    v.sync()?;
    check_ok!(vm.vm.irq_line(5, true));
    let [first, _, _] = v.sync()?;
    check_eq!(first, 1u64, "first delivery");
    // Still high at the EOI: delivered again.
    let [second, _, _] = v.sync()?;
    check_eq!(second, 2u64, "second delivery");
    check_ok!(vm.vm.irq_line(5, false));
    let [total, _, _] = v.sync()?;
    check_eq!(total, 2u64, "deliveries in all");
    // The redirection entry reads back as the guest wrote it.
    let state = check_ok!(vm.vm.get_irqchip(IOAPIC));
    let entry5 = ioapic_entry(&state, 5);
    check_eq_hex!(entry5 & 0x1_ffff & !(1 << 14), 0x8041u64, "pin 5's entry");
    v.done()
}

irq_guest! {
    /// The PIC: master at vectors 0x20-0x27 with only IRQ 3 unmasked, the
    /// slave masked, LINT0 in ExtINT mode. The handler EOIs the PIC.
    fn pic_guest;
    "set_gate 0x23, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0x700, 0x350(%rbp)",
    "mov $0x11, %al",
    "out %al, $0x20",
    "mov $0x20, %al",
    "out %al, $0x21",
    "mov $0x04, %al",
    "out %al, $0x21",
    "mov $0x01, %al",
    "out %al, $0x21",
    "mov $0xf7, %al",
    "out %al, $0x21",
    "mov $0xff, %al",
    "out %al, $0xa1",
    "in $0x21, %al",
    "movzbl %al, %ebx",
    "sti",
    "ucall UCALL_SYNC",
    "halt_until %r15, 1",
    "sti",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "mov $0x20, %al",
    "out %al, $0x20",
    "iretq",
}

/// An edge on PIC IRQ 3 (`KVM_IRQ_LINE` up and down) reaches the guest
/// through LINT0 as vector 0x23, after the guest initialized the PIC
/// itself through its ports; the mask register reads back.
fn pic_interrupt_reaches_the_guest_through_lint0(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, pic_guest(), 1)?;
    let v = &mut vcpus[0];
    let [imr, _, _] = v.sync()?;
    check_eq_hex!(imr, 0xf7u64, "master IMR read by the guest");
    let pic = check_ok!(vm.vm.get_irqchip(PIC_MASTER));
    check_eq_hex!(pic[5], 0x20u8, "master irq_base in KVM_GET_IRQCHIP");
    check_eq_hex!(pic[2], 0xf7u8, "master imr in KVM_GET_IRQCHIP");
    check_ok!(vm.vm.irq_line(3, true));
    check_ok!(vm.vm.irq_line(3, false));
    let [count, _, _] = v.sync()?;
    check_eq!(count, 1u64, "PIC interrupts taken");
    v.done()
}

irq_guest! {
    /// Vectors 0x60 and 0x61 (from MSIs) add 1 and 0x10 to `%r15`.
    fn msi_guest;
    "set_gate 0x60, 8f",
    "set_gate 0x61, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "sti",
    "ucall UCALL_SYNC",
    "halt_until %r15, 0x11",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "8: add $1, %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
    "9: add $0x10, %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// A `kvm_irq_routing_entry` (gsi, type, flags, padding, union words).
fn route(gsi: u32, kind: u32, flags: u32, u: [u32; 3]) -> [u8; 48] {
    let mut b = [0u8; 48];
    for (i, w) in [gsi, kind, flags, 0, u[0], u[1], u[2]].iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    b
}

const ROUTE_IRQCHIP: u32 = 1;
const ROUTE_MSI: u32 = 2;

/// A GSI routed to an MSI (`KVM_SET_GSI_ROUTING`) sends it when raised
/// with `KVM_IRQ_LINE`, and `KVM_SIGNAL_MSI` sends one directly (its
/// result: one APIC took it); both reach the guest's handlers.
fn msi_routes_and_kvm_signal_msi_reach_the_guest(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, msi_guest(), 1)?;
    let v = &mut vcpus[0];
    v.sync()?;
    check_ok!(vm.vm.set_gsi_routing(
        &[
            route(0, ROUTE_IRQCHIP, 0, [2, 2, 0]),
            route(30, ROUTE_MSI, 0, [0xfee0_0000, 0, 0x60]),
        ],
        0
    ));
    check_ok!(vm.vm.irq_line(30, true));
    check_ok!(vm.vm.irq_line(30, false));
    check_eq!(
        check_ok!(vm.vm.signal_msi(0xfee0_0000, 0x61, 0)),
        1,
        "APICs that took the MSI"
    );
    let [sum, _, _] = v.sync()?;
    check_eq_hex!(sum, 0x11u64, "vectors 0x60 and 0x61 taken once each");
    v.done()
}

/// Routing tables and MSIs KVM refuses with `EINVAL`: no irqchip, header
/// flags, more than 4096 entries, a GSI of 4096, entry flags, an unknown
/// type or chip, a pin beyond the chip's, a GSI routed twice to one chip
/// or an MSI GSI with another route; `KVM_SIGNAL_MSI` flags other than
/// `KVM_MSI_VALID_DEVID`, or no irqchip.
fn bad_routing_tables_and_msis_are_refused(ctx: &Ctx) -> TestResult {
    let plain = ctx.vm()?;
    let ok_route = route(1, ROUTE_IRQCHIP, 0, [2, 1, 0]);
    check_errno!(
        plain.set_gsi_routing(&[ok_route], 0),
        libc::EINVAL,
        "no irqchip"
    );
    check_errno!(
        plain.signal_msi(0xfee0_0000, 0x30, 0),
        libc::EINVAL,
        "MSI without an irqchip"
    );
    let vm = ctx.vm()?;
    check_ok!(vm.create_irqchip());
    check_ok!(vm.set_gsi_routing(&[ok_route], 0));
    check_ok!(vm.set_gsi_routing(&[], 0));
    check_errno!(
        vm.set_gsi_routing(&[ok_route], 1),
        libc::EINVAL,
        "header flags"
    );
    check_errno!(
        vm.set_gsi_routing(&vec![ok_route; 4097], 0),
        libc::EINVAL,
        "4097 entries"
    );
    let bad = [
        ("GSI 4096", route(4096, ROUTE_IRQCHIP, 0, [2, 1, 0])),
        ("entry flags", route(1, ROUTE_IRQCHIP, 1, [2, 1, 0])),
        ("type 99", route(1, 99, 0, [2, 1, 0])),
        ("irqchip 3", route(1, ROUTE_IRQCHIP, 0, [3, 1, 0])),
        ("IOAPIC pin 24", route(1, ROUTE_IRQCHIP, 0, [2, 24, 0])),
        ("PIC pin 8", route(1, ROUTE_IRQCHIP, 0, [0, 8, 0])),
    ];
    for (what, entry) in bad {
        check_errno!(vm.set_gsi_routing(&[entry], 0), libc::EINVAL, "{what}");
    }
    check_errno!(
        vm.set_gsi_routing(&[ok_route, route(1, ROUTE_IRQCHIP, 0, [2, 2, 0])], 0),
        libc::EINVAL,
        "GSI 1 to two IOAPIC pins"
    );
    check_errno!(
        vm.set_gsi_routing(
            &[ok_route, route(1, ROUTE_MSI, 0, [0xfee0_0000, 0, 0x30])],
            0
        ),
        libc::EINVAL,
        "GSI 1 to a pin and an MSI"
    );
    check_ok!(vm.set_gsi_routing(&[ok_route, route(1, ROUTE_IRQCHIP, 0, [0, 1, 0])], 0));
    check_errno!(
        vm.signal_msi(0xfee0_0000, 0x30, 2),
        libc::EINVAL,
        "MSI flags"
    );
    Ok(())
}

irq_guest! {
    /// x2APIC mode through IA32_APIC_BASE, then only MSRs: the ID and the
    /// derived logical ID, a SELF_IPI (vector 0x52), and the TSC-deadline
    /// timer (vector 0x53, about 10 ms of TSC ahead), whose MSR reads 0
    /// once it fired. The handlers keep the registers the main code uses.
    fn x2apic_guest;
    "set_gate 0x52, 9f",
    "set_gate 0x53, 8f",
    "xor %r15d, %r15d",
    "xor %r13d, %r13d",
    "mov $0x1b, %ecx",
    "rdmsr",
    "or $0xc00, %eax",
    "wrmsr",
    "mov $0x80f, %ecx",
    "mov $0x1ff, %eax",
    "xor %edx, %edx",
    "wrmsr",
    "mov $0x802, %ecx",
    "rdmsr",
    "mov %eax, %ebx",
    "mov $0x80d, %ecx",
    "rdmsr",
    "mov %eax, %esi",
    "sti",
    "mov $0x83f, %ecx",
    "mov $0x52, %eax",
    "xor %edx, %edx",
    "wrmsr",
    "nop",
    "mov %r15, %rcx",
    "ucall UCALL_SYNC",
    "mov $0x832, %ecx",
    "mov $0x40053, %eax",
    "xor %edx, %edx",
    "wrmsr",
    "rdtsc",
    "shl $32, %rdx",
    "or %rdx, %rax",
    "add $26000000, %rax",
    "mov %rax, %rdx",
    "shr $32, %rdx",
    "mov $0x6e0, %ecx",
    "wrmsr",
    "halt_until %r13, 1",
    "sti",
    "mov $0x6e0, %ecx",
    "rdmsr",
    "shl $32, %rdx",
    "or %rdx, %rax",
    "mov %rax, %rsi",
    "mov %r13, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "jmp 7f",
    "8: inc %r13",
    "7: push %rax",
    "push %rcx",
    "push %rdx",
    "xor %eax, %eax",
    "xor %edx, %edx",
    "mov $0x80b, %ecx",
    "wrmsr",
    "pop %rdx",
    "pop %rcx",
    "pop %rax",
    "iretq",
}

/// A guest whose CPUID offers x2APIC and the TSC-deadline timer switches
/// its APIC to x2APIC mode and uses only MSRs: its x2APIC ID and logical
/// ID (cluster 0, bit 0 for ID 0), a self-IPI through SELF_IPI, EOIs
/// through the EOI MSR, and a TSC-deadline interrupt that wakes it from
/// HLT and disarms the deadline MSR.
fn x2apic_msrs_and_the_tsc_deadline_timer(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, x2apic_guest())?;
    check_ok!(vm.vm.create_irqchip());
    let mut v = vm.add_vcpu_with_cpuid(0, |cpuid| {
        for e in cpuid.entries_mut() {
            if e.function == 1 {
                e.ecx |= (1 << 21) | (1 << 24);
            }
        }
    })?;
    let [id, ipis, ldr] = v.sync()?;
    check_eq_hex!(id, 0u64, "x2APIC ID");
    check_eq_hex!(ldr, 1u64, "x2APIC logical ID");
    check_eq!(ipis, 1u64, "self-IPIs taken");
    let [fired, _, deadline] = v.sync()?;
    check_eq!(fired, 1u64, "TSC-deadline interrupts");
    check_eq!(deadline, 0u64, "IA32_TSC_DEADLINE once fired");
    v.done()
}

/// `KVM_GET_LAPIC` after RESET shows the vCPU's APIC ID, version 0x14 with
/// six LVT entries, the APIC software-disabled, LVTs masked and the flat
/// model; a TPR changed with `KVM_SET_LAPIC` reads back.
fn lapic_state_at_reset_and_round_trip(ctx: &Ctx) -> TestResult {
    let (_vm, vcpus) = irqchip_vm(ctx, periodic_timer_guest(), 2)?;
    let v = &vcpus[1].vcpu;
    let mut page = check_ok!(v.get_lapic());
    check_eq_hex!(reg(&page, APIC_ID), 1u32 << 24, "APIC ID of vCPU 1");
    check_eq_hex!(reg(&page, APIC_VERSION), 0x5_0014u32, "version");
    check_eq_hex!(reg(&page, APIC_SVR), 0xffu32, "SVR");
    check_eq_hex!(reg(&page, APIC_LVT_TIMER), 0x1_0000u32, "LVT timer");
    check_eq_hex!(reg(&page, APIC_DFR), 0xffff_ffffu32, "DFR");
    set_reg(&mut page, APIC_TPR, 0x20);
    check_ok!(v.set_lapic(&page));
    let back = check_ok!(v.get_lapic());
    check_eq_hex!(reg(&back, APIC_TPR), 0x20u32, "TPR after KVM_SET_LAPIC");
    // CR8 is the TPR's priority class.
    check_eq!(check_ok!(v.get_sregs()).cr8, 2u64, "CR8");
    Ok(())
}

/// `KVM_ENABLE_CAP(KVM_CAP_X86_APIC_BUS_CYCLES_NS)` (Linux's
/// apic_bus_clock_test): the VM's answer to the capability is its bus
/// cycle (1 ns until set); 0 and cycles whose longest count overflows are
/// `EINVAL`, no irqchip is `ENXIO`, a vCPU already created `EINVAL`. A
/// 100 ns cycle makes the timer count at 10 MHz: a one-shot timer of a
/// million counts (divide by 1) restored with `KVM_SET_LAPIC` and read
/// back with `KVM_GET_LAPIC` 20 ms later has counted the time passed in
/// 100 ns steps.
fn apic_bus_cycle_sets_the_timers_rate(ctx: &Ctx) -> TestResult {
    const CYCLE_NS: u8 = 100;
    const COUNTS: u32 = 1_000_000;
    let enable =
        |vm: &kvm_abi::Vm, ns: u64| vm.enable_cap(KVM_CAP_X86_APIC_BUS_CYCLES_NS, [ns, 0, 0, 0]);
    check_eq!(
        check_ok!(ctx.sys.check_extension(KVM_CAP_X86_APIC_BUS_CYCLES_NS)),
        1
    );
    let without = ctx.vm()?;
    check_errno!(enable(&without, CYCLE_NS.into()), libc::ENXIO);
    let vm = ctx.vm()?;
    check_ok!(vm.create_irqchip());
    check_eq!(
        check_ok!(vm.check_extension(KVM_CAP_X86_APIC_BUS_CYCLES_NS)),
        1,
        "the bus cycle by default"
    );
    check_errno!(enable(&vm, 0), libc::EINVAL);
    check_errno!(enable(&vm, u64::MAX / 128), libc::EINVAL);
    check_ok!(enable(&vm, CYCLE_NS.into()));
    check_eq!(
        check_ok!(vm.check_extension(KVM_CAP_X86_APIC_BUS_CYCLES_NS)),
        i32::from(CYCLE_NS),
        "the bus cycle set"
    );
    let v = check_ok!(vm.create_vcpu(0));
    check_errno!(enable(&vm, 10), libc::EINVAL);
    let mut page = check_ok!(v.get_lapic());
    set_reg(&mut page, APIC_SVR, 0x1ff);
    set_reg(&mut page, APIC_LVT_TIMER, 0x1_0040); // one-shot, masked
    set_reg(&mut page, APIC_TDCR, 0xb); // divide by 1
    set_reg(&mut page, APIC_TMICT, COUNTS);
    // KVM_SET_LAPIC starts the timer from the saved current count.
    set_reg(&mut page, APIC_TMCCT, COUNTS);
    let start = Instant::now();
    check_ok!(v.set_lapic(&page));
    let least = Instant::now();
    thread::sleep(Duration::from_millis(20));
    let most_before = start.elapsed();
    let back = check_ok!(v.get_lapic());
    let most = start.elapsed();
    let least = least.elapsed().min(most_before);
    let counted = u64::from(COUNTS - reg(&back, APIC_TMCCT).min(COUNTS));
    let cycle = u128::from(CYCLE_NS);
    let counted_ns = u128::from(counted) * cycle;
    // Slack either way: a count for the rounding of TMCCT, and 1% for the
    // clocks the two sides read (kvm_intel under Bochs counted 0.9 µs
    // short of the host's 21 ms). At the default 1 ns cycle the count
    // would be off a hundredfold.
    let slack = cycle + most.as_nanos() / 100;
    check!(
        counted_ns + slack >= least.as_nanos() && counted_ns <= most.as_nanos() + slack,
        "{counted} counts of {CYCLE_NS} ns in between {least:?} and {most:?}"
    );
    Ok(())
}

/// `KVM_SET_IRQCHIP` then `KVM_GET_IRQCHIP` returns the state set: the
/// PIC's mask and vector base, an IOAPIC redirection entry.
fn irqchip_state_round_trips(ctx: &Ctx) -> TestResult {
    let vm = ctx.vm()?;
    check_ok!(vm.create_irqchip());
    let mut pic = check_ok!(vm.get_irqchip(PIC_MASTER));
    pic[2] = 0x5a; // imr
    pic[5] = 0x68; // irq_base
    check_ok!(vm.set_irqchip(PIC_MASTER, &pic));
    let back = check_ok!(vm.get_irqchip(PIC_MASTER));
    check_eq_hex!(back[2], 0x5au8, "imr");
    check_eq_hex!(back[5], 0x68u8, "irq_base");
    let mut io = check_ok!(vm.get_irqchip(IOAPIC));
    // Reset: every entry masked.
    let entry = ioapic_entry;
    check_eq_hex!(
        entry(&io, 7) & (1 << 16),
        1u64 << 16,
        "pin 7 masked at reset"
    );
    io[24 + 8 * 7..32 + 8 * 7].copy_from_slice(&0x0300_0000_0001_0055u64.to_le_bytes());
    check_ok!(vm.set_irqchip(IOAPIC, &io));
    let back = check_ok!(vm.get_irqchip(IOAPIC));
    check_eq_hex!(entry(&back, 7), 0x0300_0000_0001_0055u64, "pin 7");
    Ok(())
}

/// Bad input, as KVM answers it: a second `KVM_CREATE_IRQCHIP` is
/// `EEXIST`, one after a vCPU exists `EINVAL`; without an irqchip
/// `KVM_IRQ_LINE` and `KVM_GET_IRQCHIP` are `ENXIO` and `KVM_GET_LAPIC`
/// `EINVAL`; chip id 3 is `EINVAL`; `KVM_INTERRUPT` with an in-kernel
/// irqchip is `ENXIO`.
fn bad_irqchip_requests_are_refused(ctx: &Ctx) -> TestResult {
    let vm = ctx.vm()?;
    check_errno!(
        vm.irq_line(1, true),
        libc::ENXIO,
        "KVM_IRQ_LINE without an irqchip"
    );
    check_errno!(
        vm.get_irqchip(0),
        libc::ENXIO,
        "KVM_GET_IRQCHIP without an irqchip"
    );
    let vcpu = check_ok!(vm.create_vcpu(0));
    check_errno!(
        vcpu.get_lapic(),
        libc::EINVAL,
        "KVM_GET_LAPIC without an irqchip"
    );
    check_errno!(
        vm.create_irqchip(),
        libc::EINVAL,
        "KVM_CREATE_IRQCHIP after a vCPU"
    );

    let vm = ctx.vm()?;
    check_ok!(vm.create_irqchip());
    check_errno!(
        vm.create_irqchip(),
        libc::EEXIST,
        "a second KVM_CREATE_IRQCHIP"
    );
    check_errno!(vm.get_irqchip(3), libc::EINVAL, "chip id 3");
    check_errno!(
        vm.set_irqchip(3, &[0; 512]),
        libc::EINVAL,
        "KVM_SET_IRQCHIP chip id 3"
    );
    let vcpu = check_ok!(vm.create_vcpu(0));
    check_errno!(
        vcpu.interrupt(0x30),
        libc::ENXIO,
        "KVM_INTERRUPT with an irqchip"
    );
    // A GSI beyond the routing table goes nowhere, successfully.
    check_ok!(vm.irq_line(1000, true));
    Ok(())
}

irq_guest! {
    /// IOAPIC pin 6: vector 0x42, edge-triggered, to APIC 0. Sleeps until
    /// each of three interrupts came, reporting the count after each; then
    /// waits a while with interrupts on and reports the count again.
    fn irqfd_edge_guest;
    "set_gate 0x42, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0x10000, 0x350(%rbp)",
    "set_pin 6, 0x42",
    "ucall UCALL_SYNC",
    "halt_until %r15, 1",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "halt_until %r15, 2",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "sti",
    "spin 1000000",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// Signals `efd` from another thread after `delay`, while the caller's
/// thread is in `KVM_RUN`.
fn signal_later(efd: &Arc<EventFd>, delay: Duration) -> thread::JoinHandle<bool> {
    let efd = Arc::clone(efd);
    thread::spawn(move || {
        thread::sleep(delay);
        efd.signal().is_ok()
    })
}

/// `KVM_IRQFD`: a count already in the eventfd fires when the irqfd is
/// assigned; a signal from another thread wakes the halted vCPU with the
/// pin's interrupt; after `KVM_IRQFD_FLAG_DEASSIGN` a signal stays in the
/// eventfd (no one consumes it) and the guest gets nothing.
fn irqfd_raises_a_gsi_from_another_thread(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, irqfd_edge_guest(), 1)?;
    let v = &mut vcpus[0];
    let efd = Arc::new(check_ok!(EventFd::new()));
    v.sync()?;
    // Signalled before the irqfd exists: assigning it delivers the count.
    check_ok!(efd.signal());
    check_ok!(vm.vm.irqfd(efd.raw(), 6, 0, 0));
    let [first, _, _] = v.sync()?;
    check_eq!(first, 1u64, "interrupts after assigning a signalled irqfd");
    let signaller = signal_later(&efd, Duration::from_millis(20));
    let [second, _, _] = v.sync()?;
    check!(signaller.join().unwrap_or(false), "signal from the thread");
    check_eq!(
        second,
        2u64,
        "interrupts after a signal from another thread"
    );
    check_eq!(
        check_ok!(efd.take()),
        0u64,
        "count left in a consumed eventfd"
    );
    if ctx.is_rkvm() {
        let fires = ctx.vm_stat(&vm.vm, "irqfd_fires").map_err(Status::Fail)?;
        check_eq!(fires, 2u64, "irqfd_fires");
    }
    check_ok!(vm.vm.irqfd(efd.raw(), 6, KVM_IRQFD_FLAG_DEASSIGN, 0));
    check_ok!(efd.signal());
    let [after, _, _] = v.sync()?;
    check_eq!(
        after,
        2u64,
        "interrupts after the deassign and another signal"
    );
    check_eq!(check_ok!(efd.take()), 1u64, "the signal after the deassign");
    v.done()
}

irq_guest! {
    /// IOAPIC pin 6: vector 0x44, edge-triggered, to APIC 0. Executes
    /// CPUID in a loop with interrupts on until the interrupt came, at most
    /// 2,000,000 times; reports the interrupts taken and the rounds left.
    fn cpuid_loop_irq_guest;
    "set_gate 0x44, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0x10000, 0x350(%rbp)",
    "set_pin 6, 0x44",
    "ucall UCALL_SYNC",
    "mov $2000000, %r13d",
    "sti",
    "1: xor %eax, %eax",
    "cpuid",
    "test %r15, %r15",
    "jnz 2f",
    "dec %r13d",
    "jnz 1b",
    "2: cli",
    "mov %r15, %rbx",
    "mov %r13, %rcx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// An irqfd signalled from another thread interrupts a guest that loops
/// on CPUID, each answered in the kernel: on rkvm, on its fast path
/// (run/fastpath.rs), which must give way to the interrupt's kick. The
/// guest takes it in its loop, long before the loop runs out.
fn an_interrupt_reaches_a_guest_looping_on_cpuid(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, cpuid_loop_irq_guest(), 1)?;
    let v = &mut vcpus[0];
    let efd = Arc::new(check_ok!(EventFd::new()));
    check_ok!(vm.vm.irqfd(efd.raw(), 6, 0, 0));
    v.sync()?;
    let signaller = signal_later(&efd, Duration::from_millis(50));
    let [taken, left, _] = v.sync()?;
    check!(signaller.join().unwrap_or(false), "signal from the thread");
    check_eq!(taken, 1u64, "interrupts taken in the CPUID loop");
    check!(left > 0, "the CPUID loop ran out before the interrupt came");
    if ctx.is_rkvm() && rkvm_selftests::cpu::gives_the_next_rip() {
        let fast = ctx
            .vm_stat(&vm.vm, "fastpath_exits")
            .map_err(Status::Fail)?;
        check!(fast > 0, "no CPUID of the loop took the fast path");
    }
    v.done()
}

irq_guest! {
    /// IOAPIC pin 7: vector 0x43, level-triggered, to APIC 0. The handler
    /// reports each interrupt before its EOI; the guest sleeps until two
    /// came, then waits with interrupts on and reports the total.
    fn irqfd_level_guest;
    "set_gate 0x43, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0x10000, 0x350(%rbp)",
    "set_pin 7, 0x8043",
    "ucall UCALL_SYNC",
    "halt_until %r15, 2",
    "sti",
    "spin 1000000",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// A resampling irqfd (`KVM_IRQFD_FLAG_RESAMPLE`) is a level-triggered
/// line: its signal raises the pin, which stays high until the guest's
/// EOI; the EOI lowers it (so the level-triggered pin is not delivered
/// again, as it would be for a line user space held high) and signals the
/// resample eventfd, and a "device" thread that re-signals on that gets
/// exactly one more interrupt.
fn resampling_irqfd_is_lowered_and_notified_at_eoi(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, irqfd_level_guest(), 1)?;
    let v = &mut vcpus[0];
    let efd = Arc::new(check_ok!(EventFd::new()));
    let resample = Arc::new(check_ok!(EventFd::new()));
    check_ok!(
        vm.vm
            .irqfd(efd.raw(), 7, KVM_IRQFD_FLAG_RESAMPLE, resample.raw())
    );
    v.sync()?;
    check_ok!(efd.signal());
    let [first, _, _] = v.sync()?;
    check_eq!(first, 1u64, "first delivery");
    check_eq!(
        check_ok!(resample.take()),
        0u64,
        "resample signals before the EOI"
    );
    // The device: on the resample signal, it still needs service once more.
    let device = {
        let (efd, resample) = (Arc::clone(&efd), Arc::clone(&resample));
        thread::spawn(move || {
            let n = resample.wait(Duration::from_secs(10)).unwrap_or(0);
            if n > 0 {
                let _ = efd.signal();
            }
            n
        })
    };
    let [second, _, _] = v.sync()?;
    check_eq!(second, 2u64, "second delivery, after the resample signal");
    check_eq!(
        device.join().unwrap_or(0),
        1u64,
        "resample signals at the first EOI"
    );
    let [total, _, _] = v.sync()?;
    check_eq!(total, 2u64, "deliveries in all (the EOI lowered the line)");
    check_eq!(
        check_ok!(resample.wait(Duration::from_secs(5))),
        1u64,
        "resample signals at the second EOI"
    );
    let state = check_ok!(vm.vm.get_irqchip(IOAPIC));
    let entry7 = ioapic_entry(&state, 7);
    check_eq!(entry7 & (1 << 14), 0u64, "pin 7's remote IRR after the EOI");
    check_ok!(vm.vm.irqfd(efd.raw(), 7, KVM_IRQFD_FLAG_DEASSIGN, 0));
    v.done()
}

guest! {
    /// Port 0x700: OUT 0x5a (an ioeventfd's data match), OUT 0x11 (no
    /// match); MMIO at 0xc0000000: a 4-byte store (a wildcard ioeventfd),
    /// a 2-byte store (not its length); each unmatched write exits.
    fn ioeventfd_guest;
    ".code64",
    "mov $0x700, %dx",
    "mov $0x5a, %al",
    "out %al, %dx",
    "mov $0x11, %al",
    "out %al, %dx",
    "mov $0xc0000000, %edi",
    "movl $0x12345678, (%rdi)",
    "movw $0x4321, (%rdi)",
    "ucall UCALL_DONE",
}

/// `KVM_IOEVENTFD`: a guest write that an ioeventfd matches (port I/O
/// with a data match; MMIO with any data) signals its eventfd and does
/// not exit; a write with other data or another length exits to user
/// space as before.
fn ioeventfds_signal_guest_writes_without_an_exit(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, ioeventfd_guest())?;
    let mut v = vm.add_vcpu(0)?;
    let pio = check_ok!(EventFd::new());
    let mmio = check_ok!(EventFd::new());
    check_ok!(vm.vm.ioeventfd(
        0x5a,
        0x700,
        1,
        pio.raw(),
        IOEVENTFD_DATAMATCH | IOEVENTFD_PIO
    ));
    check_ok!(vm.vm.ioeventfd(0, 0xc000_0000, 4, mmio.raw(), 0));
    v.run()?;
    match v.exit() {
        VcpuExit::Io(io) if io.port == 0x700 => {
            check_eq!(check_ok!(io.data()), vec![0x11u8], "the OUT that exits");
        }
        other => {
            return Err(Status::Fail(format!(
                "expected OUT 0x11, got {}",
                describe(&other)
            )));
        }
    }
    check_eq!(check_ok!(pio.take()), 1u64, "port ioeventfd signals");
    v.run()?;
    match v.exit() {
        VcpuExit::Mmio(m) if m.phys_addr == 0xc000_0000 => {
            check_eq!(m.len, 2u32, "the store that exits");
        }
        other => {
            return Err(Status::Fail(format!(
                "expected a 2-byte MMIO store, got {}",
                describe(&other)
            )));
        }
    }
    check_eq!(check_ok!(mmio.take()), 1u64, "MMIO ioeventfd signals");
    if ctx.is_rkvm() {
        let n = ctx
            .vm_stat(&vm.vm, "ioeventfd_signals")
            .map_err(Status::Fail)?;
        check_eq!(n, 2u64, "ioeventfd_signals");
    }
    v.done()
}

/// What `KVM_IRQFD` and `KVM_IOEVENTFD` answer to bad requests: KVM's
/// errnos, and the VM stays usable.
fn bad_eventfd_requests_are_refused(ctx: &Ctx) -> TestResult {
    let efd = check_ok!(EventFd::new());
    let other = check_ok!(EventFd::new());
    let vm = ctx.vm()?;
    check_errno!(
        vm.irqfd(efd.raw(), 1, 0, 0),
        libc::EINVAL,
        "KVM_IRQFD without an irqchip"
    );
    check_ok!(vm.create_irqchip());
    check_errno!(
        vm.irqfd(efd.raw(), 1, 4, 0),
        libc::EINVAL,
        "KVM_IRQFD flag 4"
    );
    check_errno!(vm.irqfd(-1, 1, 0, 0), libc::EBADF, "KVM_IRQFD fd -1");
    check_errno!(
        vm.irqfd(vm.as_fd().as_raw_fd(), 1, 0, 0),
        libc::EINVAL,
        "KVM_IRQFD of the VM fd"
    );
    check_errno!(
        vm.irqfd(efd.raw(), 1, KVM_IRQFD_FLAG_RESAMPLE, -1),
        libc::EBADF,
        "a resample fd of -1"
    );
    check_ok!(vm.irqfd(efd.raw(), 1, 0, 0));
    check_errno!(
        vm.irqfd(efd.raw(), 2, 0, 0),
        libc::EBUSY,
        "one eventfd for two irqfds"
    );
    check_ok!(vm.irqfd(other.raw(), 1, KVM_IRQFD_FLAG_DEASSIGN, 0));
    check_ok!(vm.irqfd(efd.raw(), 1, KVM_IRQFD_FLAG_DEASSIGN, 0));
    check_ok!(vm.irqfd(efd.raw(), 2, 0, 0));

    let pio = IOEVENTFD_PIO;
    let dm = IOEVENTFD_DATAMATCH;
    check_errno!(
        vm.ioeventfd(0, 0x700, 3, efd.raw(), pio),
        libc::EINVAL,
        "length 3"
    );
    check_errno!(
        vm.ioeventfd(0, u64::MAX, 4, efd.raw(), 0),
        libc::EINVAL,
        "a wrapping range"
    );
    check_errno!(
        vm.ioeventfd(0, 0x700, 1, efd.raw(), 1 << 5),
        libc::EINVAL,
        "flag 1 << 5"
    );
    check_errno!(
        vm.ioeventfd(1, 0x700, 0, efd.raw(), pio | dm),
        libc::EINVAL,
        "length 0 with a data match"
    );
    check_errno!(vm.ioeventfd(0, 0x700, 1, -1, pio), libc::EBADF, "fd -1");
    check_errno!(
        vm.ioeventfd(0, 0x700, 1, vm.as_fd().as_raw_fd(), pio),
        libc::EINVAL,
        "the VM fd"
    );
    check_ok!(vm.ioeventfd(1, 0x700, 1, efd.raw(), pio | dm));
    check_ok!(vm.ioeventfd(2, 0x700, 1, efd.raw(), pio | dm));
    check_ok!(vm.ioeventfd(0, 0x700, 2, efd.raw(), pio));
    check_ok!(vm.ioeventfd(0, 0x700, 1, efd.raw(), 0));
    check_errno!(
        vm.ioeventfd(1, 0x700, 1, other.raw(), pio | dm),
        libc::EEXIST,
        "the same data match"
    );
    check_errno!(
        vm.ioeventfd(0, 0x700, 1, other.raw(), pio),
        libc::EEXIST,
        "a wildcard over data matches"
    );
    check_errno!(
        vm.ioeventfd(0, 0x700, 0, other.raw(), pio),
        libc::EEXIST,
        "length 0 over others"
    );
    check_errno!(
        vm.ioeventfd(3, 0x700, 1, other.raw(), pio | dm | IOEVENTFD_DEASSIGN),
        libc::ENOENT,
        "deassigning what is not there"
    );
    check_errno!(
        vm.ioeventfd(1, 0x700, 1, other.raw(), pio | dm | IOEVENTFD_DEASSIGN),
        libc::ENOENT,
        "deassigning with another eventfd"
    );
    check_ok!(vm.ioeventfd(1, 0x700, 1, efd.raw(), pio | dm | IOEVENTFD_DEASSIGN));
    check_ok!(vm.ioeventfd(1, 0x700, 1, other.raw(), pio | dm));
    check_ok!(vm.ioeventfd(0, 0x800, 0, other.raw(), pio));
    Ok(())
}

irq_guest! {
    /// The PIT: counter 0 in mode 2 (rate generator) with a 10 ms count,
    /// its IRQ 0 through IOAPIC pin 0 (KVM's default routing of GSI 0),
    /// edge-triggered, vector 0x50. Sleeps until five ticks came; reads
    /// the count back with a latch command; stops the counter (mode 0, no
    /// count) and reports the tick count and the latched count.
    fn pit_guest;
    "set_gate 0x50, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0x10000, 0x350(%rbp)",
    "set_pin 0, 0x50",
    // Counter 0, low then high byte, mode 2: 11932 = 10 ms at 1.193 MHz.
    "mov $0x34, %al",
    "out %al, $0x43",
    "mov $0x9c, %al",
    "out %al, $0x40",
    "mov $0x2e, %al",
    "out %al, $0x40",
    "halt_until %r15, 5",
    // Latch counter 0 and read it, low byte first.
    "xor %eax, %eax",
    "out %al, $0x43",
    "in $0x40, %al",
    "mov %al, %cl",
    "in $0x40, %al",
    "mov %al, %ch",
    "movzwl %cx, %ecx",
    "mov $0x30, %al",
    "out %al, $0x43",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// The in-kernel PIT (`KVM_CREATE_PIT2`): counter 0 as a 10 ms rate
/// generator wakes the halted vCPU with IRQ 0 five times, which takes at
/// least 40 ms (each tick waits for the EOI of the one before: KVM's
/// reinjection), and a latched read of the counter is within its count.
/// `KVM_GET_PIT2` then shows the guest's programming of counter 0.
fn pit_ticks_wake_a_halted_vcpu(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = {
        let vm = GuestVm::new(ctx, Mode::Long, pit_guest())?;
        check_ok!(vm.vm.create_irqchip());
        check_ok!(vm.vm.create_pit2(0));
        let v = vm.add_vcpu(0)?;
        (vm, vec![v])
    };
    let start = Instant::now();
    let [ticks, latched, _] = vcpus[0].sync()?;
    let elapsed = start.elapsed();
    // At least five: a tick held back for reinjection may follow the fifth
    // before the guest disables interrupts again.
    check!(
        (5..=7).contains(&ticks),
        "PIT ticks counted by the guest: {ticks}"
    );
    check!(
        elapsed >= Duration::from_millis(40),
        "five 10 ms ticks took {elapsed:?}"
    );
    check!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    check!(latched <= 11932, "latched count {latched}");
    let state = check_ok!(vm.vm.get_pit2());
    // Channel 0: count (u32 at 0), rw_mode (byte 12), mode (13).
    let count = u32::from_le_bytes([state[0], state[1], state[2], state[3]]);
    check_eq!(count, 11932u32, "counter 0's count in KVM_GET_PIT2");
    check_eq!(state[12], 3u8, "counter 0's access mode (low then high)");
    check_eq!(
        state[13],
        0u8,
        "counter 0's mode after the guest's last control word"
    );
    if ctx.is_rkvm() {
        let n = ctx.vm_stat(&vm.vm, "pit_ticks").map_err(Status::Fail)?;
        check!(n >= 5, "pit_ticks {n}");
    }
    vcpus[0].done()
}

irq_guest! {
    /// Linux's TSC calibration on the PIT: counter 2's gate on through
    /// port 0x61, a 1 ms one-shot (mode 0) count, then port 0x61 polled
    /// until counter 2's output (bit 5) goes high (or 10^8 reads passed).
    fn speaker_guest;
    "in $0x61, %al",
    "and $0xfd, %al",
    "or $0x01, %al",
    "out %al, $0x61",
    "mov $0xb0, %al",
    "out %al, $0x43",
    "mov $0xa9, %al",
    "out %al, $0x42",
    "mov $0x04, %al",
    "out %al, $0x42",
    "xor %ecx, %ecx",
    "1: inc %rcx",
    "cmp $100000000, %rcx",
    "jae 2f",
    "in $0x61, %al",
    "test $0x20, %al",
    "jz 1b",
    "2: movzbl %al, %ebx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// Port 0x61 is the kernel's with `KVM_PIT_SPEAKER_DUMMY`: counter 2
/// gated through it runs out and its output shows in bit 5, without an
/// exit. Without the flag the port goes to user space.
fn speaker_port_follows_kvm_pit_speaker_dummy(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, speaker_guest())?;
    check_ok!(vm.vm.create_irqchip());
    check_ok!(vm.vm.create_pit2(KVM_PIT_SPEAKER_DUMMY));
    let mut v = vm.add_vcpu(0)?;
    let [port61, _, _] = v.sync()?;
    check_eq_hex!(
        port61 & 0x21,
        0x21u64,
        "gate 2 and counter 2's output in port 0x61"
    );
    let state = check_ok!(vm.vm.get_pit2());
    // Channel 2 starts at byte 48: count, rw_mode (+12), mode (+13), gate (+15).
    check_eq!(state[48 + 13], 0u8, "counter 2's mode");
    check_eq!(state[48 + 15], 1u8, "counter 2's gate");
    v.done()?;

    let vm = GuestVm::new(ctx, Mode::Long, speaker_guest())?;
    check_ok!(vm.vm.create_irqchip());
    check_ok!(vm.vm.create_pit2(0));
    let mut v = vm.add_vcpu(0)?;
    v.run()?;
    match v.exit() {
        VcpuExit::Io(io) if io.port == 0x61 => Ok(()),
        other => Err(Status::Fail(format!(
            "expected port 0x61 in user space, got {}",
            describe(&other)
        ))),
    }
}

/// `KVM_GET/SET_PIT2` round trip, and KVM's errnos for the PIT's
/// ioctls: `ENOENT` without an irqchip, `EEXIST` the second time, `ENXIO`
/// without a PIT.
fn pit_state_round_trip_and_bad_requests(ctx: &Ctx) -> TestResult {
    let vm = ctx.vm()?;
    check_errno!(
        vm.create_pit2(0),
        libc::ENOENT,
        "KVM_CREATE_PIT2 without an irqchip"
    );
    check_errno!(vm.get_pit2(), libc::ENXIO, "KVM_GET_PIT2 without a PIT");
    check_errno!(
        vm.set_pit2(&[0; 112]),
        libc::ENXIO,
        "KVM_SET_PIT2 without a PIT"
    );
    check_errno!(
        vm.reinject_control(false),
        libc::ENXIO,
        "KVM_REINJECT_CONTROL without a PIT"
    );
    check_ok!(vm.create_irqchip());
    check_ok!(vm.create_pit2(0));
    check_errno!(vm.create_pit2(0), libc::EEXIST, "a second KVM_CREATE_PIT2");
    check_ok!(vm.reinject_control(false));
    let reset = check_ok!(vm.get_pit2());
    // At reset: counts 65536, no mode (0xff), gates 1, 1, 0.
    for ch in 0..3 {
        let b = &reset[24 * ch..24 * ch + 24];
        check_eq!(
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            0x10000u32,
            "count {ch}"
        );
        check_eq!(b[13], 0xffu8, "mode {ch}");
        check_eq!(b[15], u8::from(ch != 2), "gate {ch}");
    }
    // Counter 1: count 1000, low-then-high, mode 3; the speaker data flag.
    let mut state = reset;
    state[24..28].copy_from_slice(&1000u32.to_le_bytes());
    state[24 + 12] = 3;
    state[24 + 13] = 3;
    state[72..76].copy_from_slice(&2u32.to_le_bytes());
    check_ok!(vm.set_pit2(&state));
    let back = check_ok!(vm.get_pit2());
    check_eq!(
        &back[24..28],
        &1000u32.to_le_bytes()[..],
        "counter 1's count"
    );
    check_eq!(
        (back[24 + 12], back[24 + 13]),
        (3u8, 3u8),
        "counter 1's access mode and mode"
    );
    check_eq!(&back[72..76], &2u32.to_le_bytes()[..], "flags");
    // Hostile bytes are taken without harm.
    check_ok!(vm.set_pit2(&[0xff; 112]));
    check_ok!(vm.get_pit2());
    Ok(())
}

/// The capabilities behind this program's ioctls are reported, on the
/// device fd and on a VM fd, as KVM reports them: each is what QEMU,
/// kvmtool or Firecracker look at before they call the ioctls tested
/// here.
fn irqchip_capabilities_are_reported(ctx: &Ctx) -> TestResult {
    let caps = [
        ("KVM_CAP_IRQCHIP", KVM_CAP_IRQCHIP),
        ("KVM_CAP_HLT", KVM_CAP_HLT),
        ("KVM_CAP_IRQ_INJECT_STATUS", KVM_CAP_IRQ_INJECT_STATUS),
        ("KVM_CAP_TSC_DEADLINE_TIMER", KVM_CAP_TSC_DEADLINE_TIMER),
        ("KVM_CAP_SIGNAL_MSI", KVM_CAP_SIGNAL_MSI),
        ("KVM_CAP_PIT", KVM_CAP_PIT),
        ("KVM_CAP_PIT2", KVM_CAP_PIT2),
        ("KVM_CAP_PIT_STATE2", KVM_CAP_PIT_STATE2),
        ("KVM_CAP_REINJECT_CONTROL", KVM_CAP_REINJECT_CONTROL),
        ("KVM_CAP_IRQFD", KVM_CAP_IRQFD),
        ("KVM_CAP_IRQFD_RESAMPLE", KVM_CAP_IRQFD_RESAMPLE),
        ("KVM_CAP_IOEVENTFD", KVM_CAP_IOEVENTFD),
        ("KVM_CAP_IOEVENTFD_ANY_LENGTH", KVM_CAP_IOEVENTFD_ANY_LENGTH),
        ("KVM_CAP_IRQ_ROUTING", KVM_CAP_IRQ_ROUTING),
        ("KVM_CAP_USER_NMI", KVM_CAP_USER_NMI),
        ("KVM_CAP_SET_BOOT_CPU_ID", KVM_CAP_SET_BOOT_CPU_ID),
    ];
    let vm = ctx.vm()?;
    for (name, cap) in caps {
        check!(check_ok!(ctx.cap(cap)) > 0, "{name} on the device fd");
        check!(check_ok!(vm.check_extension(cap)) > 0, "{name} on a VM fd");
    }
    Ok(())
}

/// `KVM_IRQ_LINE_STATUS` writes back KVM's delivery status, summed over
/// the GSI's routes: -1 for no route or only masked pins; 1 for a new PIC
/// request, a PIC edge line that stays high, or a lowered line (2 for a
/// GSI with a PIC and an IOAPIC route); 0 for a PIC request still pending
/// from before (coalesced). At reset the PIC's inputs are unmasked and the
/// IOAPIC's pins masked.
fn irq_line_status_reports_kvms_delivery_status(ctx: &Ctx) -> TestResult {
    let vm = ctx.vm()?;
    check_ok!(vm.create_irqchip());
    check_eq!(
        check_ok!(vm.irq_line_status(1000, true)),
        -1,
        "a GSI with no route"
    );
    check_eq!(
        check_ok!(vm.irq_line_status(16, true)),
        -1,
        "a masked IOAPIC pin"
    );
    check_eq!(check_ok!(vm.irq_line_status(16, false)), 1, "lowering it");
    check_eq!(
        check_ok!(vm.irq_line_status(3, true)),
        1,
        "a new PIC request"
    );
    check_eq!(
        check_ok!(vm.irq_line_status(3, true)),
        1,
        "an edge line already high"
    );
    check_eq!(
        check_ok!(vm.irq_line_status(3, false)),
        2,
        "lowering, on the PIC and the IOAPIC"
    );
    check_eq!(
        check_ok!(vm.irq_line_status(3, true)),
        0,
        "the PIC request still pending"
    );
    Ok(())
}

irq_guest! {
    /// The TPR through the virtual-APIC word at DATA_GPA: the guest reads
    /// the word and reports it; then it writes 0x30 into the word's low
    /// byte and reads TPR back through the APIC page.
    fn vapic_guest;
    // DATA_GPA (asserted in the test).
    "mov $0x20000, %edi",
    "mov (%rdi), %ebx",
    "ucall UCALL_SYNC",
    "movb $0x30, (%rdi)",
    "mov 0x80(%rbp), %ebx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// `KVM_SET_VAPIC_ADDR` (QEMU's TPR-patching ROM): the word shows the
/// TPR of the software-enabled APIC (set here with `KVM_SET_LAPIC`) when
/// the guest next runs,
/// and a TPR the guest writes into the word is the APIC's after the next
/// exit. `EINVAL` without an in-kernel APIC or for an address no memory
/// backs; 0 turns it off.
fn vapic_word_mirrors_the_tpr(ctx: &Ctx) -> TestResult {
    let vm = ctx.vm()?;
    let vcpu = check_ok!(vm.create_vcpu(0));
    check_errno!(
        vcpu.set_vapic_addr(0x1000),
        libc::EINVAL,
        "without an irqchip"
    );

    check_eq_hex!(DATA_GPA, 0x20000u64, "the guest's idea of DATA_GPA");
    let (_vm, mut vcpus) = irqchip_vm(ctx, vapic_guest(), 1)?;
    let v = &mut vcpus[0];
    check_errno!(
        v.vcpu.set_vapic_addr(MMIO_GPA),
        libc::EINVAL,
        "an address no slot backs"
    );
    check_ok!(v.vcpu.set_vapic_addr(0));
    check_ok!(v.vcpu.set_vapic_addr(DATA_GPA));
    let mut page = check_ok!(v.vcpu.get_lapic());
    // KVM writes the word only for a software-enabled APIC.
    set_reg(&mut page, APIC_SVR, 0x1ff);
    set_reg(&mut page, APIC_TPR, 0x20);
    check_ok!(v.vcpu.set_lapic(&page));
    let [word, _, _] = v.sync()?;
    check_eq_hex!(word & 0xff, 0x20u64, "the TPR in the word");
    let [tpr, _, _] = v.sync()?;
    check_eq_hex!(tpr, 0x30u64, "TPR after the guest wrote the word");
    check_ok!(v.vcpu.set_vapic_addr(0));
    v.done()
}

irq_guest! {
    /// A hostile guest, on every vCPU at once: its APIC timer at period 1
    /// (the 200 µs floor), IOAPIC pin 5 (raised by a host thread in a
    /// loop) at vector 0x32, then 5000 ICR writes of a fixed IPI to all
    /// vCPUs including itself with interrupts on, then 5000 self-IPIs with
    /// interrupts off; then the timer off, one instant with interrupts on
    /// to take what is pending, and a report of how many it handled.
    fn hostile_guest;
    "set_gate 0x30, 9f",
    "set_gate 0x31, 9f",
    "set_gate 0x32, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0x10000, 0x350(%rbp)",
    "set_pin 5, 0x32",
    "movl $0xb, 0x3e0(%rbp)",
    "movl $0x20030, 0x320(%rbp)",
    "movl $1, 0x380(%rbp)",
    "sti",
    "mov $5000, %ecx",
    "1: movl $0, 0x310(%rbp)",
    "movl $0x80031, 0x300(%rbp)",
    "dec %ecx",
    "jnz 1b",
    "cli",
    "mov $5000, %ecx",
    "2: movl $0x40031, 0x300(%rbp)",
    "dec %ecx",
    "jnz 2b",
    "movl $0, 0x380(%rbp)",
    "movl $0x10000, 0x320(%rbp)",
    "sti",
    "nop",
    "cli",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// How one vCPU's run of the hostile guest ended.
enum Ended {
    /// The guest reported how many interrupts it handled.
    Done(u64),
    /// The run failed the way QEMU's emulated SVM fails with two busy
    /// CPUs, for KVM as for rkvm (docs/testing.md, "An open bug"): a
    /// triple fault, or an exit at a host kernel address, where this
    /// guest's code is all in its first megabytes.
    EmulatorFault(String),
    Failed(Status),
}

/// Whether the failed run of `v` has the signature of QEMU's emulator
/// fault (see [`Ended::EmulatorFault`]); never under Bochs.
fn emulator_fault(v: &mut GuestVcpu) -> bool {
    if rkvm_selftests::emulator() != "qemu" {
        return false;
    }
    matches!(v.exit(), VcpuExit::Shutdown)
        || v.vcpu
            .get_regs()
            .is_ok_and(|r| r.rip >= 0xffff_8000_0000_0000)
}

/// One round of [`hostile_guests_leave_the_host_responsive`]: both
/// guests' ends and the host's worst sleep overshoot.
fn hostile_round(ctx: &Ctx) -> Result<(Vec<Ended>, Duration), Status> {
    let (vm, mut vcpus) = irqchip_vm(ctx, hostile_guest(), 2)?;
    let (Some(ap), Some(bsp)) = (vcpus.pop(), vcpus.pop()) else {
        ksft::fail!("two vCPUs were created");
    };
    check_ok!(ap.vcpu.set_mp_state(KVM_MP_STATE_RUNNABLE));
    let run = |mut v: GuestVcpu| {
        thread::spawn(
            move || match v.sync().and_then(|[n, _, _]| v.done().map(|()| n)) {
                Ok(n) => Ended::Done(n),
                Err(Status::Fail(what)) if emulator_fault(&mut v) => Ended::EmulatorFault(what),
                Err(e) => Ended::Failed(e),
            },
        )
    };
    let threads = [run(bsp), run(ap)];
    let vm = Arc::new(vm);
    let storm = {
        let vm = Arc::clone(&vm);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
                let _ = vm.vm.irq_line(5, n.is_multiple_of(2));
                n += 1;
            }
            n
        });
        (stop, handle)
    };
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    while threads.iter().any(|t| !t.is_finished()) && start.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        thread::sleep(Duration::from_millis(10));
        worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(10)));
    }
    storm.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let toggles = storm.1.join().unwrap_or(0);
    ksft::diag!(
        "guests ran {:.1} s; {toggles} line toggles; worst sleep overshoot {worst:?}",
        start.elapsed().as_secs_f64()
    );
    let mut ended = Vec::new();
    for (i, t) in threads.into_iter().enumerate() {
        if !t.is_finished() {
            ksft::fail!("vCPU {i} did not finish in 120 s");
        }
        match t.join() {
            Ok(e) => ended.push(e),
            Err(_) => ksft::fail!("vCPU {i}'s thread panicked"),
        }
    }
    // The VM is still usable.
    check_ok!(vm.vm.get_irqchip(IOAPIC));
    Ok((ended, worst))
}

/// Hostile guests on two vCPUs (a timer at its shortest period, IPIs to
/// every vCPU in a loop, self-IPIs with interrupts off) while a host
/// thread toggles an IOAPIC line as fast as it can: both guests finish,
/// each took interrupts, and the host stays responsive throughout (a
/// 10 ms sleep never overshoots by a second). Nothing leaks (the suite
/// checks kmemleak and the kernel log after every program).
///
/// Under QEMU's emulated SVM, some rounds (1 in 30 to 1 in 5) end in the
/// emulator's fault ([`Ended::EmulatorFault`]) on KVM and on rkvm alike;
/// such a round is reported and run again, up to three rounds in all,
/// and a third such round fails the test. Any other failure fails it at
/// once. Under QEMU the test runs on rkvm's column only: kvm_amd meets the
/// fault as a vCPU stuck for the whole 120 s, which no round can tell from
/// a real hang; its passes are recorded in docs/testing.md.
fn hostile_guests_leave_the_host_responsive(ctx: &Ctx) -> TestResult {
    const ROUNDS: u32 = 3;
    if !ctx.is_rkvm() && rkvm_selftests::emulator() == "qemu" {
        ksft::skip!(
            "kvm_amd's baseline is recorded (docs/testing.md): under QEMU's SVM its runs of this test hang a vCPU for 120 s on the emulator's fault (twice on the KASAN kernel)"
        );
    }
    for round in 1..=ROUNDS {
        // A round after one lost to QEMU's SVM fault runs its guests, and
        // the host's threads, on one of the test VM's CPUs: the fault needs
        // guests on two at once (docs/testing.md, "An open bug"). The first
        // round runs everywhere.
        let _one_cpu = if round > 1 {
            rkvm_selftests::cpu::one_cpu_under_qemu()?
        } else {
            None
        };
        let (ended, worst) = hostile_round(ctx)?;
        check!(
            worst < Duration::from_secs(1),
            "a 10 ms sleep overshot by {worst:?}"
        );
        let mut fault = None;
        for (i, e) in ended.into_iter().enumerate() {
            match e {
                Ended::Done(n) => check!(n > 0, "vCPU {i} handled no interrupt"),
                Ended::Failed(e) => return Err(e),
                Ended::EmulatorFault(what) => fault = Some(format!("vCPU {i}: {what}")),
            }
        }
        match fault {
            None => return Ok(()),
            Some(what) if round < ROUNDS => ksft::diag!(
                "round {round} hit QEMU's SVM fault (docs/testing.md, \"An open bug\"), running again on one CPU: {what}"
            ),
            Some(what) => ksft::fail!("QEMU's SVM fault in {ROUNDS} rounds in a row: {what}"),
        }
    }
    Ok(())
}

irq_guest! {
    /// NMIs with interrupts off: the NMI handler (vector 2) counts and
    /// returns with IRET. The guest spins long enough for an NMI that
    /// waits behind a blocked one to follow (on SVM at the next exit) and
    /// reports the count, twice.
    fn nmi_guest;
    "set_gate 2, 9f",
    "xor %r15d, %r15d",
    "cli",
    "ucall UCALL_SYNC",
    "spin 20000000",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "spin 20000000",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "iretq",
}

/// `KVM_NMI`, without an in-kernel irqchip: NMIs are delivered with
/// interrupts off, one after the other (the second once the handler's
/// IRET unblocked NMIs), and at most two wait: three sent while the guest
/// is stopped make two, one more makes a third.
fn kvm_nmi_is_delivered_with_interrupts_off(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, nmi_guest())?;
    let mut v = vm.add_vcpu(0)?;
    // The guest installs its handler first.
    v.sync()?;
    for _ in 0..3 {
        check_ok!(v.vcpu.nmi());
    }
    let [first, _, _] = v.sync()?;
    check_eq!(first, 2u64, "NMIs taken of three sent (two wait at most)");
    check_ok!(v.vcpu.nmi());
    let [second, _, _] = v.sync()?;
    check_eq!(second, 3u64, "NMIs taken after one more");
    v.done()
}

irq_guest! {
    /// IOAPIC pin 9 in NMI delivery mode to APIC 0; HLT with interrupts
    /// off (only an NMI wakes it), report; then a self-NMI through the
    /// ICR, report.
    fn apic_nmi_guest;
    "set_gate 2, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "movl $0x10000, 0x350(%rbp)",
    "set_pin 9, 0x400",
    "cli",
    "ucall UCALL_SYNC",
    "hlt",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "movl $0, 0x310(%rbp)",
    "movl $0x40400, 0x300(%rbp)",
    "spin 1000000",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "iretq",
}

/// NMI messages through the in-kernel APIC: an IOAPIC pin in NMI delivery
/// mode, raised from another thread, wakes a vCPU halted with interrupts
/// off; a self-NMI through the ICR is taken at once.
fn apic_nmis_wake_a_vcpu_halted_with_interrupts_off(ctx: &Ctx) -> TestResult {
    let (vm, mut vcpus) = irqchip_vm(ctx, apic_nmi_guest(), 1)?;
    let v = &mut vcpus[0];
    v.sync()?;
    let vm = Arc::new(vm);
    let raiser = {
        let vm = Arc::clone(&vm);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            vm.vm.irq_line(9, true).is_ok() && vm.vm.irq_line(9, false).is_ok()
        })
    };
    let [woken, _, _] = v.sync()?;
    check!(
        raiser.join().unwrap_or(false),
        "KVM_IRQ_LINE from the thread"
    );
    check_eq!(woken, 1u64, "NMIs after HLT with IF=0");
    let [total, _, _] = v.sync()?;
    check_eq!(total, 2u64, "NMIs after the self-NMI");
    v.done()
}

irq_guest! {
    /// An NMI handler that reports and then halts with interrupts off,
    /// NMIs blocked (no IRET yet): nothing the guest can take wakes it.
    fn nmi_handler_halt_guest;
    "set_gate 2, 9f",
    "cli",
    "ucall UCALL_SYNC",
    "spin 100000000",
    "ucall UCALL_DONE",
    "9: mov $2, %ebx",
    "ucall UCALL_SYNC",
    "hlt",
    "mov $3, %ebx",
    "ucall UCALL_SYNC",
    "iretq",
}

/// A vCPU halted inside its NMI handler (NMIs blocked until its IRET,
/// interrupts off) is not woken by another NMI, which it could not take:
/// `KVM_RUN` sleeps until a signal ends it (`EINTR`), as KVM's
/// `kvm_vcpu_has_events` asks whether an NMI is allowed. The processor
/// would stay halted the same way (SDM Vol. 3A 6.7.1).
fn a_blocked_nmi_does_not_wake_a_vcpu_halted_in_its_nmi_handler(ctx: &Ctx) -> TestResult {
    let (_vm, mut vcpus) = irqchip_vm(ctx, nmi_handler_halt_guest(), 1)?;
    let mut v = vcpus.remove(0);
    v.sync()?;
    check_ok!(v.vcpu.nmi());
    let [stage, _, _] = v.sync()?;
    check_eq!(stage, 2u64, "in the NMI handler");
    // A second NMI while the first one's handler runs: it waits.
    check_ok!(v.vcpu.nmi());
    check_eq!(
        check_ok!(v.vcpu.get_vcpu_events()).nmi.pending,
        1,
        "the second NMI waits"
    );
    let old = check_ok!(kvm_abi::process::interrupt_syscalls_with(Signal::SIGUSR1));
    let (tid_tx, tid_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let runner = thread::spawn(move || {
        let _ = tid_tx.send(nix::sys::pthread::pthread_self());
        let r = v.vcpu.run();
        let _ = done_tx.send((r, v.run.exit_reason()));
        v
    });
    let thread_id = tid_rx
        .recv()
        .map_err(|_| Status::Fail("the runner thread did not start".into()))?;
    // Long enough for a wrong wake-up to run the guest to its next ucall.
    let early = done_rx.recv_timeout(Duration::from_millis(500)).ok();
    let mut outcome = early;
    let start = Instant::now();
    while outcome.is_none() && start.elapsed() < Duration::from_secs(20) {
        let _ = nix::sys::pthread::pthread_kill(thread_id, Signal::SIGUSR1);
        outcome = done_rx.recv_timeout(Duration::from_millis(20)).ok();
    }
    let Some((r, reason)) = outcome else {
        ksft::fail!("KVM_RUN still running after 20 s of SIGUSR1 every 20 ms");
    };
    let _v = runner.join();
    check_ok!(kvm_abi::process::restore_signal(Signal::SIGUSR1, &old));
    check_errno!(
        r,
        libc::EINTR,
        "KVM_RUN of the halted vCPU (exit reason {reason})"
    );
    check_eq!(reason, KVM_EXIT_INTR);
    Ok(())
}

/// `KVM_SET_BOOT_CPU_ID`: vCPU 1 made the bootstrap processor has the BSP
/// flag in its APIC base, starts runnable and has LINT0 as the PIC's
/// virtual wire; vCPU 0 is then an application processor waiting for
/// INIT. `EBUSY` once a vCPU exists, `EINVAL` for an id far above any.
fn boot_cpu_id_chooses_the_bootstrap_processor(ctx: &Ctx) -> TestResult {
    let vm = ctx.vm()?;
    check_ok!(vm.create_irqchip());
    check_errno!(
        vm.set_boot_cpu_id(1 << 20),
        libc::EINVAL,
        "an id above any vCPU id"
    );
    check_ok!(vm.set_boot_cpu_id(1));
    let ap = check_ok!(vm.create_vcpu(0));
    let bsp = check_ok!(vm.create_vcpu(1));
    check_errno!(
        vm.set_boot_cpu_id(0),
        libc::EBUSY,
        "after a vCPU was created"
    );
    check_eq_hex!(
        check_ok!(bsp.get_sregs()).apic_base,
        0xfee0_0900u64,
        "vCPU 1's APIC base"
    );
    check_eq_hex!(
        check_ok!(ap.get_sregs()).apic_base,
        0xfee0_0800u64,
        "vCPU 0's APIC base"
    );
    check_eq!(
        check_ok!(bsp.get_mp_state()),
        KVM_MP_STATE_RUNNABLE,
        "vCPU 1's MP state"
    );
    check_eq!(
        check_ok!(ap.get_mp_state()),
        KVM_MP_STATE_UNINITIALIZED,
        "vCPU 0's MP state"
    );
    let lint0 = |v: &kvm_abi::Vcpu| v.get_lapic().map(|p| reg(&p, APIC_LVT_LINT0));
    check_eq_hex!(check_ok!(lint0(&bsp)), 0x700u32, "vCPU 1's LINT0 (ExtINT)");
    check_eq_hex!(check_ok!(lint0(&ap)), 0x10000u32, "vCPU 0's LINT0 (masked)");
    Ok(())
}

/// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`'s argument: the user-space
/// IOAPIC's pins, as QEMU asks for.
const SPLIT_PINS: u64 = 24;

/// A VM with a split irqchip (local APICs in the kernel, IOAPIC and PIC
/// in user space) and vCPU 0.
fn split_vm(ctx: &Ctx, code: &[u8]) -> Result<(GuestVm, GuestVcpu), Status> {
    let vm = GuestVm::new(ctx, Mode::Long, code)?;
    check_eq!(
        check_ok!(
            vm.vm
                .enable_cap(KVM_CAP_SPLIT_IRQCHIP, [SPLIT_PINS, 0, 0, 0])
        ),
        0,
        "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)"
    );
    let v = vm.add_vcpu(0)?;
    Ok((vm, v))
}

/// What KVM answers around a split irqchip: the capability is reported;
/// more reserved pins than routes is `EINVAL`; a second irqchip of either
/// kind, or one after a vCPU, is `EEXIST`; without an in-kernel PIC and
/// IOAPIC, `KVM_GET/SET_IRQCHIP` are `ENXIO`, `KVM_CREATE_PIT2` is
/// `ENOENT`, routes to their pins and resampling irqfds are `EINVAL`;
/// `KVM_INTERRUPT` takes one ExtINT vector at a time (`EEXIST` for a
/// second, `EINVAL` above 255), where a full irqchip says `ENXIO`.
fn split_irqchip_requests_get_kvms_answers(ctx: &Ctx) -> TestResult {
    let vm = ctx.vm()?;
    check_eq!(
        check_ok!(vm.check_extension(KVM_CAP_SPLIT_IRQCHIP)),
        1,
        "KVM_CHECK_EXTENSION(KVM_CAP_SPLIT_IRQCHIP)"
    );
    check_errno!(
        vm.enable_cap(KVM_CAP_SPLIT_IRQCHIP, [4097, 0, 0, 0]),
        libc::EINVAL,
        "4097 reserved pins"
    );
    check_ok!(vm.enable_cap(KVM_CAP_SPLIT_IRQCHIP, [SPLIT_PINS, 0, 0, 0]));
    check_errno!(
        vm.enable_cap(KVM_CAP_SPLIT_IRQCHIP, [SPLIT_PINS, 0, 0, 0]),
        libc::EEXIST,
        "a second split irqchip"
    );
    check_errno!(
        vm.create_irqchip(),
        libc::EEXIST,
        "KVM_CREATE_IRQCHIP after it"
    );
    check_errno!(vm.get_irqchip(PIC_MASTER), libc::ENXIO, "KVM_GET_IRQCHIP");
    check_errno!(
        vm.set_irqchip(IOAPIC, &[0; 512]),
        libc::ENXIO,
        "KVM_SET_IRQCHIP"
    );
    check_errno!(vm.create_pit2(0), libc::ENOENT, "KVM_CREATE_PIT2");
    check_errno!(
        vm.set_gsi_routing(&[route(4, ROUTE_IRQCHIP, 0, [IOAPIC, 4, 0])], 0),
        libc::EINVAL,
        "a route to an IOAPIC pin"
    );
    check_ok!(vm.set_gsi_routing(&[route(4, ROUTE_MSI, 0, [0xfee0_0000, 0, 0x8030])], 0));
    let efd = check_ok!(EventFd::new());
    let resample = check_ok!(EventFd::new());
    check_errno!(
        vm.irqfd(efd.raw(), 4, KVM_IRQFD_FLAG_RESAMPLE, resample.raw()),
        libc::EINVAL,
        "a resampling irqfd"
    );
    check_ok!(vm.irqfd(efd.raw(), 4, 0, 0));
    let vcpu = check_ok!(vm.create_vcpu(0));
    check_errno!(vcpu.interrupt(256), libc::EINVAL, "KVM_INTERRUPT 256");
    check_ok!(vcpu.interrupt(0x40));
    check_errno!(vcpu.interrupt(0x41), libc::EEXIST, "a second KVM_INTERRUPT");

    let late = ctx.vm()?;
    check_ok!(late.create_vcpu(0));
    check_errno!(
        late.enable_cap(KVM_CAP_SPLIT_IRQCHIP, [SPLIT_PINS, 0, 0, 0]),
        libc::EEXIST,
        "a split irqchip after a vCPU"
    );
    let full = ctx.vm()?;
    check_ok!(full.create_irqchip());
    check_errno!(
        full.enable_cap(KVM_CAP_SPLIT_IRQCHIP, [SPLIT_PINS, 0, 0, 0]),
        libc::EEXIST,
        "a split irqchip after KVM_CREATE_IRQCHIP"
    );
    let vcpu = check_ok!(full.create_vcpu(0));
    check_errno!(
        vcpu.interrupt(0x40),
        libc::ENXIO,
        "KVM_INTERRUPT with the in-kernel PIC"
    );
    Ok(())
}

irq_guest! {
    /// Takes vector 0x40 (the user-space PIC's ExtINT, no EOI: it never
    /// reaches the APIC's ISR) in HLT, twice, reporting each.
    fn extint_guest;
    "set_gate 0x40, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "ucall UCALL_SYNC",
    "halt_until %r15, 1",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "halt_until %r15, 2",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    // LINT0 masked: no ExtINT can come in; the guest runs on with IF=1.
    "movl $0x10700, 0x350(%rbp)",
    "sti",
    "spin 1000",
    "ucall UCALL_SYNC",
    "cli",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "iretq",
}

/// A split irqchip's ExtINT path, as QEMU drives it for its PIC: with
/// `request_interrupt_window`, a vCPU that halts with interrupts on
/// returns `KVM_EXIT_IRQ_WINDOW_OPEN` (halted, ready for injection)
/// instead of sleeping; `KVM_INTERRUPT` then wakes it and the guest takes
/// the vector through LINT0 (the BSP's, ExtINT at reset). A vector given
/// before the guest halts is taken when it can. Once the guest masks
/// LINT0, a requested window does not open (the guest runs on; KVM's
/// `kvm_cpu_accept_dm_intr`) and the vCPU is not ready for injection.
fn split_irqchip_extint_comes_through_kvm_interrupt(ctx: &Ctx) -> TestResult {
    let (_vm, mut v) = split_vm(ctx, extint_guest())?;
    v.sync()?;
    v.run.set_request_interrupt_window(true);
    v.run()?;
    let exit = describe(&v.exit());
    check!(
        matches!(v.exit(), VcpuExit::IrqWindowOpen),
        "expected KVM_EXIT_IRQ_WINDOW_OPEN, got {exit}"
    );
    check!(
        v.run.ready_for_interrupt_injection(),
        "ready_for_interrupt_injection"
    );
    check_eq!(
        check_ok!(v.vcpu.get_mp_state()),
        KVM_MP_STATE_HALTED,
        "the vCPU's MP state at the window"
    );
    v.run.set_request_interrupt_window(false);
    check_ok!(v.vcpu.interrupt(0x40));
    let [count, _, _] = v.sync()?;
    check_eq!(count, 1u64, "ExtINTs taken after the window");
    // Given while the guest runs on (it halts next): taken all the same.
    check_ok!(v.vcpu.interrupt(0x40));
    let [count, _, _] = v.sync()?;
    check_eq!(count, 2u64, "ExtINTs taken");
    // With LINT0 masked the window never opens, and the guest runs on.
    v.run.set_request_interrupt_window(true);
    v.sync()?;
    check!(
        !v.run.ready_for_interrupt_injection(),
        "ready_for_interrupt_injection with LINT0 masked"
    );
    v.run.set_request_interrupt_window(false);
    v.done()
}

irq_guest! {
    /// Vectors 0x51, 0x52 and 0x53 add 1, 0x10 and 0x100 to `%r15` and
    /// EOI; the guest reports after each arrives, then after two more
    /// 0x51s that arrive while its interrupts are off.
    fn split_eoi_guest;
    "set_gate 0x51, 7f",
    "set_gate 0x52, 8f",
    "set_gate 0x53, 9f",
    "xor %r15d, %r15d",
    "movl $0x1ff, 0xf0(%rbp)",
    "ucall UCALL_SYNC",
    "halt_until %r15, 0x1",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "halt_until %r15, 0x11",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "halt_until %r15, 0x111",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "halt_until %r15, 0x112",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "halt_until %r15, 0x113",
    "mov %r15, %rbx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
    "7: add $1, %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
    "8: add $0x10, %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
    "9: add $0x100, %r15",
    "movl $0, 0xb0(%rbp)",
    "iretq",
}

/// Runs `v` until its next exit and checks that it is `KVM_EXIT_IOAPIC_EOI`
/// for `vector`.
fn expect_ioapic_eoi(v: &mut GuestVcpu, vector: u8) -> TestResult {
    v.run()?;
    let exit = describe(&v.exit());
    check!(
        matches!(v.exit(), VcpuExit::IoapicEoi { vector: got } if got == vector),
        "expected KVM_EXIT_IOAPIC_EOI for {vector:#x}, got {exit}"
    );
    Ok(())
}

/// A split irqchip tells user space's IOAPIC of EOIs (KVM's
/// `kvm_ioapic_send_eoi`): the guest's EOI of a level-triggered MSI routed
/// from a reserved pin (GSI 5, vector 0x51) exits with
/// `KVM_EXIT_IOAPIC_EOI`; an edge-triggered one (GSI 6) and one from a GSI
/// beyond the reserved pins (30) do not. When `KVM_SET_GSI_ROUTING`
/// points GSI 5 at another APIC while 0x51 is pending, its EOI is still
/// reported (KVM's scan marks vectors still outstanding); a level-
/// triggered 0x51 sent with `KVM_SIGNAL_MSI` after GSI 5's route is gone
/// is not.
fn split_irqchip_eois_of_ioapic_routes_exit_to_user_space(ctx: &Ctx) -> TestResult {
    let (vm, mut v) = split_vm(ctx, split_eoi_guest())?;
    let gsi6 = route(6, ROUTE_MSI, 0, [0xfee0_0000, 0, 0x52]);
    let gsi30 = route(30, ROUTE_MSI, 0, [0xfee0_0000, 0, 0x8053]);
    let gsi5 = |apic: u32| route(5, ROUTE_MSI, 0, [0xfee0_0000 | (apic << 12), 0, 0x8051]);
    check_ok!(vm.vm.set_gsi_routing(&[gsi5(0), gsi6, gsi30], 0));
    v.sync()?;
    check_ok!(vm.vm.irq_line(5, true));
    expect_ioapic_eoi(&mut v, 0x51)?;
    let [sum, _, _] = v.sync()?;
    check_eq_hex!(sum, 0x1u64, "after GSI 5");
    check_ok!(vm.vm.irq_line(6, true));
    let [sum, _, _] = v.sync()?;
    check_eq_hex!(sum, 0x11u64, "after GSI 6 (edge: no EOI exit)");
    check_ok!(vm.vm.irq_line(30, true));
    let [sum, _, _] = v.sync()?;
    check_eq_hex!(
        sum,
        0x111u64,
        "after GSI 30 (not a reserved pin: no EOI exit)"
    );
    // The guest reported with interrupts off: 0x51 waits in IRR while GSI 5
    // moves to APIC 1.
    check_ok!(vm.vm.irq_line(5, true));
    check_ok!(vm.vm.set_gsi_routing(&[gsi5(1), gsi6, gsi30], 0));
    expect_ioapic_eoi(&mut v, 0x51)?;
    let [sum, _, _] = v.sync()?;
    check_eq_hex!(sum, 0x112u64, "after the second 0x51");
    // A level-triggered 0x51 again, with no route using that vector.
    check_eq!(
        check_ok!(vm.vm.signal_msi(0xfee0_0000, 0x8051, 0)),
        1,
        "APICs that took the MSI"
    );
    check_ok!(vm.vm.set_gsi_routing(&[gsi6, gsi30], 0));
    let [sum, _, _] = v.sync()?;
    check_eq_hex!(
        sum,
        0x113u64,
        "after the third 0x51 (no route: no EOI exit)"
    );
    v.done()
}

/// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)`'s flags (`_BITULL` in
/// `asm/kvm.h`, which bindgen does not expand).
const X2APIC_API_USE_32BIT_IDS: u64 = 1 << 0;
const X2APIC_API_DISABLE_BROADCAST_QUIRK: u64 = 1 << 1;

/// vCPU `id` of `vm` with x2APIC in its CPUID, put in x2APIC mode by the
/// host (IA32_APIC_BASE.EXTD through `KVM_SET_SREGS`) and software-enabled
/// (SVR through `KVM_SET_LAPIC`). It never runs.
fn host_x2apic_vcpu(vm: &GuestVm, id: u64) -> Result<GuestVcpu, Status> {
    let v = vm.add_vcpu_with_cpuid(id, |cpuid| {
        for e in cpuid.entries_mut() {
            if e.function == 1 {
                e.ecx |= 1 << 21;
            }
        }
    })?;
    let mut sregs = check_ok!(v.vcpu.get_sregs());
    sregs.apic_base |= 1 << 10;
    check_ok!(v.vcpu.set_sregs(&sregs));
    let mut page = check_ok!(v.vcpu.get_lapic());
    set_reg(&mut page, APIC_SVR, 0x1ff);
    check_ok!(v.vcpu.set_lapic(&page));
    Ok(v)
}

/// `KVM_CAP_X2APIC_API`, on two vCPUs in x2APIC mode. Before it: the
/// x2APIC ID is in the xAPIC position in `KVM_GET_LAPIC` and a different
/// one in `KVM_SET_LAPIC` is ignored; an MSI's high address is ignored;
/// an xAPIC broadcast MSI reaches both (KVM's broadcast quirk). After
/// `KVM_X2APIC_API_USE_32BIT_IDS`: the ID is as is and a different one is
/// `EINVAL`; the high address extends the destination, and its bits 7:0
/// set are `EINVAL` for `KVM_SIGNAL_MSI` and routes. After
/// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`, the xAPIC broadcast reaches
/// neither. Unknown flags are `EINVAL`.
fn x2apic_api_ids_and_broadcast_quirk(ctx: &Ctx) -> TestResult {
    let vm = GuestVm::new(ctx, Mode::Long, periodic_timer_guest())?;
    let flags = u64::try_from(check_ok!(vm.vm.check_extension(KVM_CAP_X2APIC_API))).unwrap_or(0);
    let both = X2APIC_API_USE_32BIT_IDS | X2APIC_API_DISABLE_BROADCAST_QUIRK;
    check_eq_hex!(flags & both, both, "KVM_CAP_X2APIC_API's flags");
    check_ok!(vm.vm.create_irqchip());
    let _v0 = host_x2apic_vcpu(&vm, 0)?;
    let v1 = host_x2apic_vcpu(&vm, 1)?;
    let broadcast = 0xfee0_0000 | (0xff << 12);
    let apic1_high = (0x100 << 32) | 0xfee0_1000;

    let mut page = check_ok!(v1.vcpu.get_lapic());
    check_eq_hex!(reg(&page, APIC_ID), 1u32 << 24, "x2APIC ID, legacy format");
    set_reg(&mut page, APIC_ID, 7 << 24);
    check_ok!(v1.vcpu.set_lapic(&page));
    let page = check_ok!(v1.vcpu.get_lapic());
    check_eq_hex!(reg(&page, APIC_ID), 1u32 << 24, "x2APIC ID after setting 7");
    check_eq!(
        check_ok!(vm.vm.signal_msi(broadcast, 0x40, 0)),
        2,
        "APICs an xAPIC broadcast MSI reached (the quirk)"
    );
    check_eq!(
        check_ok!(vm.vm.signal_msi(apic1_high, 0x40, 0)),
        1,
        "APICs an MSI to 1 with a high address reached (ignored)"
    );

    check_errno!(
        vm.vm.enable_cap(KVM_CAP_X2APIC_API, [1 << 4, 0, 0, 0]),
        libc::EINVAL,
        "an unknown flag"
    );
    check_ok!(
        vm.vm
            .enable_cap(KVM_CAP_X2APIC_API, [X2APIC_API_USE_32BIT_IDS, 0, 0, 0])
    );
    let mut page = check_ok!(v1.vcpu.get_lapic());
    check_eq_hex!(reg(&page, APIC_ID), 1u32, "x2APIC ID, 32-bit format");
    check_ok!(v1.vcpu.set_lapic(&page));
    set_reg(&mut page, APIC_ID, 7);
    check_errno!(v1.vcpu.set_lapic(&page), libc::EINVAL, "another x2APIC ID");
    check_eq!(
        check_ok!(vm.vm.signal_msi(apic1_high, 0x41, 0)),
        0,
        "APICs an MSI to 0x101 reached"
    );
    check_eq!(
        check_ok!(vm.vm.signal_msi(0xfee0_1000, 0x41, 0)),
        1,
        "APICs an MSI to 1 reached"
    );
    check_errno!(
        vm.vm.signal_msi((1 << 32) | 0xfee0_1000, 0x41, 0),
        libc::EINVAL,
        "an MSI with high address bits 7:0 set"
    );
    check_errno!(
        vm.vm
            .set_gsi_routing(&[route(7, ROUTE_MSI, 0, [0xfee0_1000, 1, 0x41])], 0),
        libc::EINVAL,
        "a route with high address bits 7:0 set"
    );
    check_eq!(
        check_ok!(vm.vm.signal_msi(broadcast, 0x42, 0)),
        2,
        "APICs an xAPIC broadcast MSI reached (still the quirk)"
    );
    check_ok!(vm.vm.enable_cap(
        KVM_CAP_X2APIC_API,
        [X2APIC_API_DISABLE_BROADCAST_QUIRK, 0, 0, 0]
    ));
    check_eq!(
        check_ok!(vm.vm.signal_msi(broadcast, 0x42, 0)),
        0,
        "APICs an xAPIC broadcast MSI reached without the quirk"
    );
    Ok(())
}

irq_guest! {
    /// In x2APIC mode: MOV to CR8 (5), then reads the TPR MSR (into
    /// %rbx); writes the TPR MSR (0x30), then reads CR8 (into %rcx).
    fn cr8_tpr_guest;
    "mov $0x1b, %ecx",
    "rdmsr",
    "or $0xc00, %eax",
    "wrmsr",
    "mov $5, %eax",
    "mov %rax, %cr8",
    "mov $0x808, %ecx",
    "rdmsr",
    "mov %eax, %ebx",
    "mov $0x30, %eax",
    "xor %edx, %edx",
    "wrmsr",
    "mov %cr8, %rcx",
    "ucall UCALL_SYNC",
    "ucall UCALL_DONE",
}

/// CR8 and the TPR are one register (SDM Vol. 3A 11.8.6): a MOV to CR8
/// (which need not exit: SVM's V_TPR) is what a TPR read that exits
/// right after sees, and a TPR write is what CR8 then reads, not undone
/// by the CR8 written before it (KVM's `sync_cr8_to_lapic` after every
/// exit).
fn tpr_and_cr8_agree_across_exits(ctx: &Ctx) -> TestResult {
    let (_vm, mut vcpus) = irqchip_vm(ctx, cr8_tpr_guest(), 1)?;
    let [tpr, cr8, _] = vcpus[0].sync()?;
    check_eq_hex!(tpr, 0x50u64, "the TPR MSR after MOV CR8, 5");
    check_eq_hex!(cr8, 3u64, "CR8 after the TPR MSR got 0x30");
    vcpus[0].done()
}

/// Hyper-V's APIC-access MSRs and its synthetic-cluster IPI hypercalls.
const HV_EOI: u32 = 0x4000_0070;
const HV_ICR: u32 = 0x4000_0071;
const HV_TPR: u32 = 0x4000_0072;
const HV_VP_INDEX: u32 = 0x4000_0002;
const HV_SEND_IPI: u64 = 0x000b;
const HV_SEND_IPI_EX: u64 = 0x0015;
const HV_FAST: u64 = 1 << 16;
/// The next call's input value, RDX, R8 and XMM0-1 (7 words; an input
/// value of 0 ends the sender), and the slow calls' input.
const HV_NEXT_CALL: u64 = DATA_GPA + 0x400;
const HV_INPUT: u64 = DATA_GPA + 0x3000;
/// Each vCPU's count of vector 0xfe, at `HV_COUNTS + 8 * id`, and its
/// word saying its APIC is enabled, at `HV_READY + 8 * id`.
const HV_COUNTS: u64 = DATA_GPA + 0x100;
const HV_READY: u64 = DATA_GPA + 0x180;

irq_guest! {
    /// Hyper-V IPIs. Every vCPU enables its APIC and says so (HV_READY +
    /// 8 * %rdi: an APIC that is not enabled drops fixed interrupts), and
    /// counts vector 0xfe (at HV_COUNTS + 8 * %rdi), ending each with
    /// Hyper-V's EOI MSR. vCPU 0 sets up hypercalls and makes the calls
    /// the host leaves at HV_NEXT_CALL, reporting each status, with
    /// interrupts off; the others halt until they counted 2, then report
    /// done.
    fn hv_ipi_guest;
    "set_gate 0xfe, 9f",
    "movl $0x1ff, 0xf0(%rbp)",
    "movq $1, (DATA_GPA + 0x180)(,%rdi,8)",
    "xor %r15d, %r15d",
    "test %rdi, %rdi",
    "jnz 5f",
    "enable_sse",
    "mov $0x40000000, %ecx",
    "xor %eax, %eax",
    "mov $0x81000000, %edx",
    "wrmsr",
    "mov $0x40000001, %ecx",
    "mov $(DATA_GPA + 0x1001), %eax",
    "xor %edx, %edx",
    "wrmsr",
    "ucall UCALL_SYNC",
    "2: mov $(DATA_GPA + 0x400), %r12d",
    "mov (%r12), %rcx",
    "test %rcx, %rcx",
    "jz 3f",
    "mov 8(%r12), %rdx",
    "mov 16(%r12), %r8",
    "movdqu 24(%r12), %xmm0",
    "movdqu 40(%r12), %xmm1",
    "mov $(DATA_GPA + 0x1000), %eax",
    "call *%rax",
    "mov %rax, %rbx",
    "ucall UCALL_SYNC",
    "jmp 2b",
    "3: ucall UCALL_DONE",
    "5: halt_until %r15, 2",
    "ucall UCALL_DONE",
    "9: inc %r15",
    "incq (DATA_GPA + 0x100)(,%rdi,8)",
    "push %rax",
    "push %rcx",
    "push %rdx",
    "mov $0x40000070, %ecx",
    "mov $1, %eax",
    "xor %edx, %edx",
    "wrmsr",
    "pop %rdx",
    "pop %rcx",
    "pop %rax",
    "iretq",
}

/// Hyper-V's IPI hypercalls (`HvCallSendSyntheticClusterIpi` and `...Ex`,
/// KVM_CAP_HYPERV_SEND_IPI), as Linux's hyperv_ipi test makes them:
/// receivers with VP indices 2 and 65 (set by the VMM), a slow call with a
/// mask, a fast `Ex` call with its sparse set in XMM registers, a slow
/// `Ex` call to every processor; each receiver ends each interrupt with
/// Hyper-V's EOI MSR (a second one would wait behind the first
/// otherwise). A vector below 16, a variable header that does not count
/// the banks, or a rep count are HV_STATUS_INVALID_HYPERCALL_INPUT (3)
/// and send nothing; a VP index no vCPU has gets nothing.
fn hyper_v_ipis_reach_the_vp_indices_they_name(ctx: &Ctx) -> TestResult {
    if check_ok!(ctx.cap(KVM_CAP_HYPERV_SEND_IPI)) == 0 {
        ksft::skip!("KVM_CAP_HYPERV_SEND_IPI is 0");
    }
    let vm = GuestVm::new(ctx, Mode::Long, hv_ipi_guest())?;
    check_ok!(vm.vm.create_irqchip());
    let table = hyper_v_cpuid(ctx, &vm)?;
    let mut vcpus = Vec::new();
    for id in 0..3 {
        let cpuid = check_ok!(kvm_abi::CpuidEntries::from_entries(table.entries()));
        vcpus.push(vm.add_vcpu_with_cpuid(id, move |c| *c = cpuid)?);
    }
    for (vcpu, vp) in vcpus[1..].iter().zip([2u64, 65]) {
        let index = check_ok!(MsrEntries::from_pairs(&[(HV_VP_INDEX, vp)]));
        check_eq!(check_ok!(vcpu.vcpu.set_msrs(&index)), 1, "VP index {vp}");
        check_ok!(vcpu.vcpu.set_mp_state(KVM_MP_STATE_RUNNABLE));
    }
    let mut sender = vcpus.remove(0);
    let receivers: Vec<_> = vcpus
        .into_iter()
        .map(|mut v| thread::spawn(move || v.done()))
        .collect();
    let counts = |vm: &GuestVm| -> Result<[u64; 2], Status> {
        Ok([vm.read_u64(HV_COUNTS + 8)?, vm.read_u64(HV_COUNTS + 16)?])
    };
    // Waits until the receivers' counts are `want`, or 20 s.
    let wait_for = |vm: &GuestVm, want: [u64; 2], what: &str| -> TestResult {
        let start = Instant::now();
        loop {
            let got = counts(vm)?;
            if got == want {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(20) {
                ksft::fail!("{what}: counts {got:?}, expected {want:?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    };
    sender.sync()?;
    // The receivers' APICs are enabled before the first IPI.
    let start = Instant::now();
    while vm.read_u64(HV_READY + 8)? == 0 || vm.read_u64(HV_READY + 16)? == 0 {
        if start.elapsed() > Duration::from_secs(20) {
            ksft::fail!("the receivers did not start in 20 s");
        }
        thread::sleep(Duration::from_millis(5));
    }
    // (input value, RDX, R8, XMM0 and XMM1 halves, slow input, expected
    // status, counts after).
    type Step = (
        u64,
        u64,
        u64,
        [u64; 4],
        Vec<u64>,
        u64,
        [u64; 2],
        &'static str,
    );
    let steps: Vec<Step> = vec![
        (
            HV_SEND_IPI,
            HV_INPUT,
            0,
            [0; 4],
            vec![0xfe, 1 << 2],
            0,
            [1, 0],
            "slow, VP 2",
        ),
        (
            HV_SEND_IPI | HV_FAST,
            0x0f,
            1 << 2,
            [0; 4],
            vec![],
            3,
            [1, 0],
            "vector 0x0f",
        ),
        (
            HV_SEND_IPI | HV_FAST | 1 << 32,
            0xfe,
            1 << 2,
            [0; 4],
            vec![],
            3,
            [1, 0],
            "a rep count",
        ),
        (
            HV_SEND_IPI | HV_FAST,
            0xfe,
            1 << 3,
            [0; 4],
            vec![],
            0,
            [1, 0],
            "VP 3, nobody",
        ),
        (
            HV_SEND_IPI_EX | HV_FAST | 2 << 17,
            0xfe,
            0,
            [0b10, 1 << 1, 0, 0],
            vec![],
            3,
            [1, 0],
            "two banks said, one given",
        ),
        (
            HV_SEND_IPI_EX | HV_FAST | 1 << 17,
            0xfe,
            0,
            [0b10, 1 << 1, 0, 0],
            vec![],
            0,
            [1, 1],
            "fast Ex, VP 65 from XMM",
        ),
        (
            HV_SEND_IPI_EX,
            HV_INPUT,
            0,
            [0; 4],
            vec![0xfe, 1, 0],
            0,
            [2, 2],
            "slow Ex, all",
        ),
    ];
    let mut before = [0, 0];
    for (control, rdx, r8, xmm, input, status, want, what) in steps {
        vm.write(
            HV_INPUT,
            &input
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect::<Vec<_>>(),
        )?;
        let next: Vec<u8> = [control, rdx, r8]
            .iter()
            .chain(xmm.iter())
            .flat_map(|w| w.to_le_bytes())
            .collect();
        vm.write(HV_NEXT_CALL, &next)?;
        let [rax, _, _] = sender.sync()?;
        check_eq!(rax, status, "{what}: status");
        if want == before {
            // Nothing may arrive: give a stray IPI time to be counted.
            thread::sleep(Duration::from_millis(50));
        }
        wait_for(&vm, want, what)?;
        before = want;
    }
    vm.write(HV_NEXT_CALL, &[0; 8])?;
    sender.done()?;
    for r in receivers {
        match r.join() {
            Ok(result) => result?,
            Err(_) => ksft::fail!("a receiver's thread panicked"),
        }
    }
    Ok(())
}

/// Hyper-V's APIC-access MSRs reach the in-kernel APIC in xAPIC mode too:
/// the VMM's TPR write is the APIC's TPR (KVM_GET_LAPIC); an ICR write
/// (an IPI to APIC ID 0x55, which no vCPU has) reads back as one 64-bit
/// register, one with a bit the x2APIC ICR reserves is refused; EOI
/// cannot be read; without an in-kernel APIC all three are refused.
fn hyper_v_apic_access_msrs_are_the_apics_registers(ctx: &Ctx) -> TestResult {
    let (_vm, vcpus) = irqchip_vm(ctx, hv_ipi_guest(), 1)?;
    let vcpu = &vcpus[0].vcpu;
    check_eq!(
        check_ok!(vcpu.set_msrs(&check_ok!(MsrEntries::from_pairs(&[(HV_TPR, 0x30)])))),
        1
    );
    let lapic = check_ok!(vcpu.get_lapic());
    check_eq_hex!(reg(&lapic, 0x80), 0x30u32, "the APIC's TPR");
    let icr = 0x55 << 56 | 0x4040;
    let write = check_ok!(MsrEntries::from_pairs(&[(HV_ICR, icr)]));
    check_eq!(check_ok!(vcpu.set_msrs(&write)), 1, "ICR");
    let reserved = check_ok!(MsrEntries::from_pairs(&[(HV_ICR, icr | 1 << 13)]));
    check_eq!(check_ok!(vcpu.set_msrs(&reserved)), 0, "ICR bit 13");
    let mut read = check_ok!(MsrEntries::from_indices(&[HV_TPR, HV_ICR]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut read)), 2);
    check_eq_hex!(read.entries()[0].data, 0x30u64, "TPR");
    check_eq_hex!(read.entries()[1].data, icr, "ICR");
    let mut eoi = check_ok!(MsrEntries::from_indices(&[HV_EOI]));
    check_eq!(check_ok!(vcpu.get_msrs(&mut eoi)), 0, "reading EOI");
    // A TPR value above 32 bits is refused.
    let wide = check_ok!(MsrEntries::from_pairs(&[(HV_TPR, 1 << 32)]));
    check_eq!(check_ok!(vcpu.set_msrs(&wide)), 0, "TPR bit 32");
    let plain = GuestVm::new(ctx, Mode::Long, hv_ipi_guest())?;
    let v = plain.add_vcpu(0)?;
    for index in [HV_EOI, HV_ICR, HV_TPR] {
        let mut m = check_ok!(MsrEntries::from_indices(&[index]));
        check_eq!(
            check_ok!(v.vcpu.get_msrs(&mut m)),
            0,
            "{index:#x} without an APIC"
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    ksft::run(
        &Ctx::from_args(),
        &tests![
            irqchip_capabilities_are_reported,
            bad_irqchip_requests_are_refused,
            irq_line_status_reports_kvms_delivery_status,
            vapic_word_mirrors_the_tpr,
            boot_cpu_id_chooses_the_bootstrap_processor,
            split_irqchip_requests_get_kvms_answers,
            split_irqchip_extint_comes_through_kvm_interrupt,
            split_irqchip_eois_of_ioapic_routes_exit_to_user_space,
            x2apic_api_ids_and_broadcast_quirk,
            hyper_v_ipis_reach_the_vp_indices_they_name,
            tpr_and_cr8_agree_across_exits,
            hyper_v_apic_access_msrs_are_the_apics_registers,
            irqchip_state_round_trips,
            lapic_state_at_reset_and_round_trip,
            apic_bus_cycle_sets_the_timers_rate,
            self_ipi_is_delivered_at_once,
            periodic_timer_wakes_a_halted_vcpu,
            one_shot_timer_counts_down_and_fires_once,
            ipi_wakes_another_halted_vcpu,
            init_sipi_starts_an_application_processor,
            ioapic_level_line_is_redelivered_until_lowered,
            pic_interrupt_reaches_the_guest_through_lint0,
            msi_routes_and_kvm_signal_msi_reach_the_guest,
            x2apic_msrs_and_the_tsc_deadline_timer,
            bad_routing_tables_and_msis_are_refused,
            irqfd_raises_a_gsi_from_another_thread,
            resampling_irqfd_is_lowered_and_notified_at_eoi,
            ioeventfds_signal_guest_writes_without_an_exit,
            bad_eventfd_requests_are_refused,
            pit_state_round_trip_and_bad_requests,
            pit_ticks_wake_a_halted_vcpu,
            an_interrupt_reaches_a_guest_looping_on_cpuid,
            speaker_port_follows_kvm_pit_speaker_dummy,
            kvm_nmi_is_delivered_with_interrupts_off,
            apic_nmis_wake_a_vcpu_halted_with_interrupts_off,
            a_blocked_nmi_does_not_wake_a_vcpu_halted_in_its_nmi_handler,
            hostile_guests_leave_the_host_responsive,
        ],
    )
}
