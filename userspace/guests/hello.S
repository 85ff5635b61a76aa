/*
 * hello: the smallest rkvm guest. 64-bit code (rkvm starts a flat binary
 * in long mode at its load address, 0x100000), printing one line on the
 * 16550 UART at port 0x3f8 and leaving through the exit port 0xf4.
 *
 * Each OUT is one KVM_EXIT_IO to rkvm: `rkvm run --trace hello.bin`
 * shows them.
 */
	.code64
	.globl _start
_start:
	lea	msg(%rip), %rsi
	mov	$msg_len, %ecx
1:	mov	$0x3fd, %dx		/* line status register */
2:	in	(%dx), %al
	test	$0x20, %al		/* transmit holding register empty? */
	jz	2b
	mov	$0x3f8, %dx		/* transmit holding register */
	lodsb
	out	%al, (%dx)
	loop	1b
	mov	$0, %al			/* exit status 0 */
	out	%al, $0xf4
	hlt

msg:	.ascii "Hello from a guest of rkvm!\n"
	.set msg_len, . - msg
