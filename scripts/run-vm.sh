#!/usr/bin/env bash
# Boots the test kernel in QEMU (software emulation of AMD SVM with nested
# paging, two CPUs) with an initramfs from mkinitramfs.sh.
#
# Usage: run-vm.sh INITRAMFS MODE [LOG]
#   MODE check: runs the selftests; console to stdout (and LOG), no input.
#   MODE nodev: checks that rkvm refuses a CPU without virtualization
#               (boot it with RKVM_QEMU_CPU set to such a CPU).
#   MODE cmd:   runs /etc/rkvm/cmd; console to stdout (and LOG), no input.
#   MODE shell: interactive console on this terminal.
# RKVM_KERNEL_ARGS adds kernel parameters (see below).
. "$(dirname "$0")/lib.sh"

initrd=${1:?usage: run-vm.sh INITRAMFS MODE [LOG]}
mode=${2:?usage: run-vm.sh INITRAMFS MODE [LOG]}
log=${3:-}
kernel=$(kernel_build_dir)/arch/x86/boot/bzImage
[ -f "$kernel" ] || die "no test kernel at $kernel: run make first"

# The VM's init knows "check" and "shell"; "cmd" is the shell mode with a
# command file present.
append="console=ttyS0 panic=-1 rkvm_mode=${mode/cmd/shell} rkvm_emulator=qemu"
# In check mode the console carries the TAP stream: kernel messages go only
# to the log buffer, which the suite checks itself.
[ "$mode" = check ] || [ "$mode" = nodev ] && append="$append loglevel=1"
# What the suite runs (lib.sh, suite_kernel_args).
append="$append$(suite_kernel_args)"
# The KASAN kernel says so to the suite (init passes rkvm_kasan=1 on as an
# environment variable): `qemu` skips its nested Linux boots there.
[ "$RKVM_KASAN" = 1 ] && append="$append rkvm_kasan=1"
# RKVM_KERNEL_ARGS: more kernel parameters, last so they win (for a hunt:
# "oops=panic loglevel=8" stops at the first oops and shows it whole).
[ -n "${RKVM_KERNEL_ARGS:-}" ] && append="$append $RKVM_KERNEL_ARGS"

# RKVM_QEMU_ACCEL: QEMU's accelerator options; the default gives each
# emulated CPU its own host thread. `tcg,thread=single` interleaves them on
# one thread instead (docs/testing.md, "An open bug", says what each shows).
qemu=(qemu-system-x86_64 -machine q35 -accel "${RKVM_QEMU_ACCEL:-tcg}" -cpu "${RKVM_QEMU_CPU:-qemu64,+svm,+npt,+vgif}"
	-smp "${RKVM_SMP:-2}" -m "${RKVM_MEM:-1024}" -nographic -no-reboot
	-kernel "$kernel" -initrd "$initrd" -append "$append")
# RKVM_QEMU_MONITOR=PATH: QEMU's human monitor on a unix socket (make fuzz
# dumps the CPUs' state through it when something stalls).
[ -n "${RKVM_QEMU_MONITOR:-}" ] && qemu+=(-monitor "unix:$RKVM_QEMU_MONITOR,server,nowait")

if [ "$mode" = check ] && [ -n "$log" ]; then
	# The suite: a console silent too long stops the VM (watch_silence).
	rm -f "$log.silent"
	# tee runs apart so that $vm is the `timeout` the watchdog stops; once
	# QEMU is gone its pipe is closed, and tee is waited for to the last
	# line (the verdict reads the log: a line short is a false failure).
	exec {console}> >(tee "$log")
	tee_pid=$!
	timeout --foreground "${RKVM_VM_TIMEOUT:-1800}" "${qemu[@]}" </dev/null >&"$console" &
	vm=$!
	watch_silence "$vm" "$log" &
	watchdog=$!
	set +e
	wait "$vm"
	status=$?
	set -e
	kill "$watchdog" 2>/dev/null || true
	wait "$watchdog" 2>/dev/null || true
	exec {console}>&-
	wait "$tee_pid" 2>/dev/null || true
	[ -e "$log.silent" ] && exit 124
	exit "$status"
elif [ "$mode" != shell ]; then
	timeout --foreground "${RKVM_VM_TIMEOUT:-1800}" "${qemu[@]}" </dev/null | tee "${log:-/dev/null}"
	exit "${PIPESTATUS[0]}"
else
	exec "${qemu[@]}"
fi
