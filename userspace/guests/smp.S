/*
 * smp: a guest for two vCPUs (`rkvm run --cpus 2 smp.bin`). Both start
 * here, each with its own stack, in the same memory. Each prints one '*'
 * on the debug port (one KVM_EXIT_IO per vCPU), counts itself in
 * `arrived` with a locked increment, and spins until both have arrived.
 * Only then does either leave through the exit port 0xf4, so a vCPU whose
 * thread starts late still runs before the machine stops.
 *
 * The spin runs with interrupts on: Bochs's Intel models never interrupt
 * a guest looping with IF=0, which would keep the other vCPU's thread off
 * a shared host CPU for good. Nothing is injected, so no IDT is needed.
 */
	.code64
	.set	NCPUS, 2
	.globl _start
_start:
	mov	$'*', %al
	out	%al, $0xe9
	lock incl arrived(%rip)
	sti
1:	pause
	cmpl	$NCPUS, arrived(%rip)
	jb	1b
	mov	$0, %al			/* exit status 0 */
	out	%al, $0xf4
	hlt

	.balign	4
arrived: .long	0
