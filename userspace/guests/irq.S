/*
 * irq: takes timer interrupts that rkvm injects with KVM_INTERRUPT (there
 * is no interrupt controller in the kernel: userspace decides when an
 * interrupt is due and asks KVM to deliver it on the next entry).
 *
 * The guest installs an IDT whose vector 32 counts ticks, starts rkvm's
 * tick timer (port 0x610, period in microseconds) and enables interrupts.
 * Ticks 1-5 wake it from HLT (KVM_EXIT_HLT: rkvm waits for the tick, then
 * injects). Ticks 6-10 interrupt a busy loop (rkvm kicks the vCPU out of
 * KVM_RUN with a signal and injects). Then it stops the timer and exits 0.
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
	mov	$2000, %eax			/* a tick every 2 ms */
	mov	$TIMER_PORT, %dx
	out	%eax, (%dx)
	sti

	/* Ticks 1-5: halt until each one. */
	xor	%r12d, %r12d			/* ticks seen */
1:	hlt
	cmp	ticks(%rip), %r12
	je	1b
	mov	ticks(%rip), %r12
	lea	s_hlt(%rip), %rsi
	call	puts
	mov	%r12, %rax
	call	putdec
	mov	$'\n', %al
	out	%al, $0xe9
	cmp	$5, %r12
	jb	1b

	/* Ticks 6-10: spin; the interrupt arrives in the middle of the loop. */
2:	pause
	cmp	ticks(%rip), %r12
	je	2b
	mov	ticks(%rip), %r12
	lea	s_busy(%rip), %rsi
	call	puts
	mov	%r12, %rax
	call	putdec
	mov	$'\n', %al
	out	%al, $0xe9
	cmp	$10, %r12
	jb	2b

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

/* puts: prints the NUL-terminated string at %rsi (clobbers %al, %rsi). */
puts:	lodsb
	test	%al, %al
	jz	1f
	out	%al, $0xe9
	jmp	puts
1:	ret

/* putdec: prints %rax in decimal. */
putdec:
	push	%rax
	push	%rbx
	push	%rcx
	push	%rdx
	mov	$10, %rbx
	xor	%ecx, %ecx
1:	xor	%edx, %edx
	div	%rbx
	push	%rdx
	inc	%ecx
	test	%rax, %rax
	jnz	1b
2:	pop	%rax
	add	$'0', %al
	out	%al, $0xe9
	loop	2b
	pop	%rdx
	pop	%rcx
	pop	%rbx
	pop	%rax
	ret

s_start:	.asciz "timer every 2 ms, vector 32\n"
s_hlt:		.asciz "woken from HLT by tick "
s_busy:		.asciz "interrupted a busy loop: tick "
s_done:		.asciz "10 timer interrupts taken\n"

	.balign 8
ticks:	.quad	0
	.balign 8
	.word	0, 0, 0
idtr:	.word	16 * (VECTOR + 1) - 1
	.quad	0
	.balign 16
idt:	.fill	16 * (VECTOR + 1), 1, 0
