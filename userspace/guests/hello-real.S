/*
 * hello-real: a real-mode guest (`rkvm run --mode real hello-real.bin`).
 * rkvm bases every segment at the load address and starts at IP 0, so
 * the program is assembled at offset 0. It prints through the debug
 * port 0xe9 and exits with status 7, to show that the status is the
 * guest's.
 */
	.code16
	.globl _start
_start:
	mov	$msg, %si
	mov	$msg_len, %cx
	cld
1:	lodsb
	out	%al, $0xe9
	loop	1b
	mov	$7, %al
	out	%al, $0xf4
	hlt

msg:	.ascii "Hello from real mode!\n"
	.set msg_len, . - msg
