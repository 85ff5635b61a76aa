/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Two speculation steps that run right after a VM exit, before the first
 * unbalanced RET (module/spec.rs names the advisories). The world-switch
 * assembly (sys/svm.rs, sys/vmx.rs) calls them when the speculation plan
 * asks for them; both are assembled here, against the kernel's headers,
 * because each depends on the host kernel's own choices at boot.
 */

#include <linux/linkage.h>
#include <linux/objtool.h>
#include <asm/nospec-branch.h>

/*
 * Return untraining and call-depth reset (Retbleed, SRSO).
 *
 * The guest may have trained the return predictor; the host's return
 * thunk only protects once the predictor is untrained against it. The
 * kernel patches the untraining call in at boot for its chosen mitigation
 * (CALL_UNTRAIN_RET: entry_untrain_ret with X86_FEATURE_UNRET,
 * srso_alias_untrain_ret with X86_FEATURE_SRSO_ALIAS, both exported), and
 * with call-depth tracking (X86_FEATURE_CALL_DEPTH) the per-CPU depth
 * counter is reset so that the next returns refill the RSB, as after any
 * kernel entry. On a host with neither, both alternatives stay empty and
 * this is a plain RET. Clobbers RAX.
 */
SYM_FUNC_START(rkvm_untrain_ret_vm)
	CALL_UNTRAIN_RET
#ifdef CONFIG_MITIGATION_CALL_DEPTH_TRACKING
	ALTERNATIVE "", __stringify(RESET_CALL_DEPTH), X86_FEATURE_CALL_DEPTH
#endif
	RET
SYM_FUNC_END(rkvm_untrain_ret_vm)

/*
 * Branch history clearing (Branch History Injection, Intel SA-00598).
 *
 * The guest's taken branches remain in the branch history buffer and
 * steer the host's indirect-branch predictions. Intel's guidance for CPUs
 * that cannot set BHI_DIS_S is a sequence of enough taken branches to
 * replace the history: five nested calls, each followed by five taken
 * jumps, then the five returns, then an LFENCE so that nothing after it
 * runs speculatively on the old history. The calls and returns are
 * balanced, so the RSB is left as it was found. The targets are
 * cache-line aligned as in Intel's sequence. Clobbers RAX and RCX.
 */
SYM_FUNC_START(rkvm_clear_bhb)
	push	%rbp
	mov	%rsp, %rbp
	mov	$5, %ecx
	ANNOTATE_INTRA_FUNCTION_CALL
	call	.Lbhb_nest
	jmp	.Lbhb_done

	.align 64, 0xcc
	/* One level deeper per round: call the jumps, return afterwards. */
.Lbhb_nest:
	ANNOTATE_INTRA_FUNCTION_CALL
	call	.Lbhb_jumps
	RET

	.align 64, 0xcc
.Lbhb_jumps:
	mov	$5, %eax
.Lbhb_jump:
	jmp	.Lbhb_landed
	nop
.Lbhb_landed:
	sub	$1, %eax
	jnz	.Lbhb_jump
	sub	$1, %ecx
	jnz	.Lbhb_nest
	/* All five rounds done: unwind them. */
	RET

.Lbhb_done:
	lfence
	pop	%rbp
	RET
SYM_FUNC_END(rkvm_clear_bhb)
/* The nested calls leave the stack deeper than any one frame: objtool
 * cannot follow it, as it cannot follow the kernel's own loop. */
STACK_FRAME_NON_STANDARD(rkvm_clear_bhb)
