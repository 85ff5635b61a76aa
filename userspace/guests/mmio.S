/*
 * mmio: talks to rkvm's MMIO demo device at 0xd0000000, which is in no
 * memory slot: every load and store there is a KVM_EXIT_MMIO that rkvm
 * emulates (the hypervisor decodes the instruction to tell it the
 * address, size and data). Registers: 0x0 id ("RKVM"), 0x8 a counter of
 * its own reads, 0x10 scratch, 0x18 scratch squared.
 *
 * Prints the id, three counter reads, and 12345 squared computed by the
 * device, through the debug port; exits 0 if every value is right, 1 if
 * not.
 */
	.code64
	.set	MMIO, 0xd0000000
	.globl _start
_start:
	xor	%r15d, %r15d			/* failures */
	mov	$MMIO, %edi			/* zero-extended: 0xd0000000 */
	lea	s_id(%rip), %rsi
	call	puts
	mov	(%rdi), %eax			/* 32-bit read of the id */
	mov	%eax, %ebx
	call	put4chars
	cmp	$0x4d564b52, %ebx
	setne	%al
	movzbl	%al, %eax
	add	%eax, %r15d

	lea	s_counter(%rip), %rsi
	call	puts
	mov	$1, %r12
1:	mov	8(%rdi), %rax			/* 64-bit read, counts itself */
	cmp	%r12, %rax
	setne	%bl
	movzbl	%bl, %ebx
	add	%ebx, %r15d
	call	putdec
	mov	$' ', %al
	out	%al, $0xe9
	inc	%r12
	cmp	$4, %r12
	jne	1b

	lea	s_square(%rip), %rsi
	call	puts
	movq	$12345, 0x10(%rdi)		/* 64-bit write to scratch */
	mov	0x18(%rdi), %rax		/* the device squares it */
	cmp	$152399025, %rax
	setne	%bl
	movzbl	%bl, %ebx
	add	%ebx, %r15d
	call	putdec
	mov	$'\n', %al
	out	%al, $0xe9
	mov	%r15d, %eax
	test	%eax, %eax
	setne	%al
	out	%al, $0xf4			/* exit: 0 if all was right */
	hlt

/* put4chars: prints the four bytes of %ebx as characters. */
put4chars:
	mov	%ebx, %edx
	mov	$4, %ecx
1:	mov	%dl, %al
	out	%al, $0xe9
	shr	$8, %edx
	loop	1b
	ret

#include "print.inc"

s_id:		.asciz "mmio-demo id: "
s_counter:	.asciz "\nread counter: "
s_square:	.asciz "\n12345 squared by the device: "
