/*
 * irq: takes timer interrupts that rkvm injects with KVM_INTERRUPT (there
 * is no interrupt controller in the kernel: userspace decides when an
 * interrupt is due and asks KVM to deliver it on the next entry).
 *
 * The guest installs an IDT whose vector 32 counts ticks, starts rkvm's
 * tick timer (port 0x610, period in microseconds) and enables interrupts.
 * Five times a tick wakes it from HLT (KVM_EXIT_HLT: rkvm waits for the
 * tick, then injects); five times a tick interrupts a busy loop (rkvm kicks
 * the vCPU out of KVM_RUN with a signal and injects). Then it stops the
 * timer and exits 0.
 */
	.code64
	.set	TIMER_PORT, 0x610
	.set	VECTOR, 32
	.globl _start
_start:
	/* The gate for VECTOR: a 64-bit interrupt gate (type 0xe, present,
	 * DPL 0) to `tick` through the 64-bit code selector 0x08
	 * (SDM Vol. 3A 6.14.1). */
	lea	tick(%rip), %rax
	lea	idt + 16 * VECTOR(%rip), %rdi
	mov	%ax, (%rdi)
	movw	$0x08, 2(%rdi)
	movw	$0x8e00, 4(%rdi)
	shr	$16, %rax
	mov	%ax, 6(%rdi)
	shr	$16, %rax
	mov	%eax, 8(%rdi)
	movl	$0, 12(%rdi)
	lea	idt(%rip), %rax
	mov	%rax, idtr + 2(%rip)
	lidt	idtr(%rip)

	lea	s_start(%rip), %rsi
	call	puts
	mov	$10000, %eax			/* a tick every 10 ms */
	mov	$TIMER_PORT, %dx
	out	%eax, (%dx)
	sti

	/* Five times: halt until a tick has come. (Each wake-up is counted,
	 * not each tick: under emulation, printing may take longer than a
	 * period, and ticks that come meanwhile are taken too.) */
	mov	$1, %r13d			/* wake-ups */
1:	mov	ticks(%rip), %r12
2:	hlt
	cmp	ticks(%rip), %r12
	je	2b
	lea	s_hlt(%rip), %rsi
	call	puts
	mov	%r13, %rax
	call	putdec
	mov	$'\n', %al
	out	%al, $0xe9
	inc	%r13d
	cmp	$5, %r13d
	jbe	1b

	/* Five times: spin until a tick interrupts the loop. */
	mov	$1, %r13d
3:	mov	ticks(%rip), %r12
4:	pause
	cmp	ticks(%rip), %r12
	je	4b
	lea	s_busy(%rip), %rsi
	call	puts
	mov	%r13, %rax
	call	putdec
	mov	$'\n', %al
	out	%al, $0xe9
	inc	%r13d
	cmp	$5, %r13d
	jbe	3b

	cli
	xor	%eax, %eax			/* stop the timer */
	mov	$TIMER_PORT, %dx
	out	%eax, (%dx)
	lea	s_done(%rip), %rsi
	call	puts
	mov	$0, %al
	out	%al, $0xf4
	hlt

/* The handler of vector 32: count, return. */
tick:	incq	ticks(%rip)
	iretq

#include "print.inc"

s_start:	.asciz "timer every 10 ms, vector 32\n"
s_hlt:		.asciz "a timer interrupt woke the guest from HLT: "
s_busy:		.asciz "a timer interrupt came during a busy loop: "
s_done:		.asciz "timer stopped, done\n"

	.balign 8
ticks:	.quad	0
	.balign 8
	.word	0, 0, 0
idtr:	.word	16 * (VECTOR + 1) - 1
	.quad	0
	.balign 16
idt:	.fill	16 * (VECTOR + 1), 1, 0
