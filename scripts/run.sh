#!/usr/bin/env bash
# `make run`: boots the test VM with rkvm loaded. With a command, runs it in
# the VM and exits with its status; without, gives an interactive shell.
#
# Usage: run.sh [COMMAND]
# With EXTRA_TESTS=DIR in the environment, DIR's executables are in the VM's
# /extra-tests too (handy for trying a program without adding a selftest).
# With VMX=1 the VM is Bochs (Intel VMX; RKVM_BOCHS_CPU=zambezi for AMD SVM
# with next-RIP save) instead of QEMU.
. "$(dirname "$0")/lib.sh"

cmd=${1:-}
vm=$RKVM_TOP/scripts/run-vm.sh
[ "${VMX:-0}" = 1 ] && vm=$RKVM_TOP/scripts/run-bochs.sh
initrd=$RKVM_OUT/initramfs-run.cpio
extra=()
[ -n "${EXTRA_TESTS:-}" ] && extra=(--extra "$EXTRA_TESTS")
if [ -z "$cmd" ]; then
	"$RKVM_TOP/scripts/mkinitramfs.sh" "$initrd" "${extra[@]}"
	exec "$vm" "$initrd" shell
fi

"$RKVM_TOP/scripts/mkinitramfs.sh" "$initrd" --cmd "$cmd" "${extra[@]}"
log=$RKVM_OUT/run.log
"$vm" "$initrd" cmd "$log.raw" </dev/null || true
status=$(tr -d '\r' <"$log.raw" | sed -n 's/^rkvm-run: exit status \([0-9]*\)$/\1/p' | tail -n 1)
[ -n "$status" ] || die "the VM ended without running the command (console log: $log.raw)"
exit "$status"
