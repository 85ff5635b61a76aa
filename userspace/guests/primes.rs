//! primes: a long-mode guest written in `no_std` Rust, loaded as a static
//! ELF executable. It does real work (a sieve of Eratosthenes over the
//! numbers below 1,000,000, then a checksum of the primes) and prints the
//! result on the serial port, then exits with status 0 if the count is
//! the known one.
//!
//! Built by scripts/build-guests.sh with the host's rustc for
//! x86_64-unknown-linux-gnu as a static library, linked by `ld` with
//! `guest.ld` at 0x200000. rkvm gives it a stack at the top of memory.

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::panic::PanicInfo;

/// The sieve's limit.
const LIMIT: usize = 1_000_000;
/// The number of primes below [`LIMIT`].
const EXPECTED: usize = 78_498;
/// The serial port (COM1) and the exit port.
const COM1: u16 = 0x3f8;
const EXIT_PORT: u16 = 0xf4;

// The entry point: call `main` with the stack rkvm set up, then report
// its result through the exit port. The memory functions the compiler
// may call are string instructions.
global_asm!(
    ".section .text._start, \"ax\"",
    ".globl _start",
    "_start:",
    "    and $-16, %rsp",
    "    call guest_main",
    "    out %al, ${exit}",
    "1:  hlt",
    "    jmp 1b",
    ".text",
    ".globl memcpy, memmove, memset, memcmp, bcmp",
    "memcpy:",
    "    mov %rdi, %rax",
    "    mov %rdx, %rcx",
    "    rep movsb",
    "    ret",
    "memmove:",
    "    mov %rdi, %rax",
    "    mov %rdx, %rcx",
    "    cmp %rsi, %rdi",
    "    jbe 2f",
    "    lea -1(%rsi, %rcx), %rsi",
    "    lea -1(%rdi, %rcx), %rdi",
    "    std",
    "    rep movsb",
    "    cld",
    "    ret",
    "2:  rep movsb",
    "    ret",
    "memset:",
    "    mov %rdi, %r8",
    "    mov %esi, %eax",
    "    mov %rdx, %rcx",
    "    rep stosb",
    "    mov %r8, %rax",
    "    ret",
    "memcmp:",
    "bcmp:",
    "    xor %eax, %eax",
    "    mov %rdx, %rcx",
    "    test %rcx, %rcx",
    "    jz 3f",
    "    repe cmpsb",
    "    je 3f",
    "    movzbl -1(%rdi), %eax",
    "    movzbl -1(%rsi), %edx",
    "    sub %edx, %eax",
    "3:  ret",
    exit = const EXIT_PORT,
    options(att_syntax)
);

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O in the guest: it exits to rkvm, which emulates
    // the device; no memory is touched.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
    value
}

/// The 16550 UART, polled.
struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // Wait for the transmit holding register to be empty (LSR bit 5).
            while inb(COM1 + 5) & 0x20 == 0 {}
            outb(COM1, b);
        }
        Ok(())
    }
}

/// The sieve: one byte per number, in the guest's zeroed .bss.
static mut SIEVE: [u8; LIMIT] = [0; LIMIT];

#[unsafe(no_mangle)]
extern "C" fn guest_main() -> u8 {
    // SAFETY: the guest has one thread and this is the only reference.
    let composite = unsafe { &mut *core::ptr::addr_of_mut!(SIEVE) };
    let mut i = 2;
    while i * i < LIMIT {
        if composite[i] == 0 {
            let mut j = i * i;
            while j < LIMIT {
                composite[j] = 1;
                j += i;
            }
        }
        i += 1;
    }
    let (mut count, mut sum, mut largest) = (0usize, 0u64, 0usize);
    for (n, c) in composite.iter().enumerate().skip(2) {
        if *c == 0 {
            count += 1;
            sum += n as u64;
            largest = n;
        }
    }
    let _ = writeln!(
        Serial,
        "primes below {LIMIT}: {count} (largest {largest}, sum {sum})"
    );
    u8::from(count != EXPECTED)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let _ = writeln!(Serial, "guest panic: {info}");
    outb(EXIT_PORT, 101);
    loop {
        // SAFETY: halting the vCPU touches no memory.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}
