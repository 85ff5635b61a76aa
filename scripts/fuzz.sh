#!/usr/bin/env bash
# `make fuzz`: boots the test VM and runs rkvm-fuzz (userspace/rkvm-fuzz)
# against rkvm (and, with RKVM_FUZZ_KVM=1, with the same seed against the
# real KVM in the same boot), and fails on a stall, a worker killed by a signal, a kernel warning,
# oops, lockdep or KASAN report, a kmemleak report, or a failed `rmmod`.
#
# Settings (environment or make variables):
#   RKVM_FUZZ_SECONDS  how long each device is fuzzed (default 300)
#   RKVM_FUZZ_SEED     the seed (default: the time; printed either way)
#   RKVM_FUZZ_KVM      1: also fuzz /dev/kvm; 0 (default): rkvm only, since
#                      fuzzing kvm_amd aborts QEMU 7.2 itself within minutes
#                      (docs/testing.md, "Fuzzing")
#   RKVM_KASAN=1       on the KASAN kernel (as CI does)
# When the fuzzer or the kernel reports a stall, QEMU's state is dumped
# through its monitor (see the watcher below).
. "$(dirname "$0")/lib.sh"

seconds=${RKVM_FUZZ_SECONDS:-300}
seed=${RKVM_FUZZ_SEED:-$(date +%s)}
kvm=${RKVM_FUZZ_KVM:-0}
initrd=$RKVM_OUT/initramfs-fuzz.cpio
log=$RKVM_OUT/fuzz.log
mon=$RKVM_OUT/fuzz-monitor.sock
stall=$RKVM_OUT/fuzz-stall.txt
rm -f "$log" "$log.raw" "$stall" "$stall.slow" "$mon" "$RKVM_OUT/fuzz-nested.txt" "$RKVM_OUT/fuzz-wedged.txt"
"$RKVM_TOP/scripts/mkinitramfs.sh" "$initrd" --cmd "sh /etc/rkvm/fuzz.sh $seconds $seed $kvm"
say "fuzzing for ${seconds} s per device, seed $seed; console: $log.raw"

# A watcher. On the fuzzer's first report of a KVM_RUN that its signals do
# not end (the vCPU is then still in the guest), it dumps every CPU's state
# through QEMU's monitor into build/fuzz-stall.txt.slow. On the first RCU
# stall report it dumps the state into build/fuzz-stall.txt and lets the run
# go on (the CPU comes back; the kernel-log check fails the run at the end).
# On a fuzzer STALL or a soft lockup (the VM is wedged) it dumps the state,
# waits for the fuzzer's report to reach the console, and ends the VM.
# When the console stays silent for 150 s while the fuzzer runs (the VM
# prints a heartbeat every 30 s meanwhile), the whole VM is wedged: it dumps the state into
# build/fuzz-wedged.txt, injects an NMI into every CPU through the monitor
# (a CPU that takes it prints "NMI received" on the console; one whose GIF
# is clear cannot: `info registers` does not show GIF), dumps again, and
# ends the VM.
(
	slow=0 rcu=0 size=0 quiet=0
	dump() { python3 "$RKVM_TOP/scripts/qemu-monitor.py" "$mon" 'info registers -a' \
		'cpu 0' 'info lapic' 'x/8i $pc' 'cpu 1' 'info lapic' 'x/8i $pc' >"$1" 2>&1; }
	while sleep 1; do
		[ -S "$mon" ] || continue
		if [ $slow = 0 ] && grep -q 'rkvm-fuzz: SLOW' "$log.raw" 2>/dev/null; then
			slow=1
			dump "$stall.slow"
		fi
		if [ $rcu = 0 ] && grep -q 'detected stalls on CPUs' "$log.raw" 2>/dev/null; then
			rcu=1
			dump "$stall"
		fi
		now=$(stat -c %s "$log.raw" 2>/dev/null || echo 0)
		if [ "$now" != "$size" ]; then
			size=$now quiet=0
		elif grep -q '^# fuzzing: uptime' "$log.raw" && ! grep -q '^# Totals' "$log.raw" &&
			[ $((quiet += 1)) -ge 150 ]; then
			wedged=$RKVM_OUT/fuzz-wedged.txt
			dump "$wedged"
			python3 "$RKVM_TOP/scripts/qemu-monitor.py" "$mon" nmi >/dev/null 2>&1
			sleep 15
			echo "### 15 s after an NMI to every CPU" >>"$wedged"
			dump "$wedged.tmp"
			cat "$wedged.tmp" >>"$wedged" && rm -f "$wedged.tmp"
			python3 "$RKVM_TOP/scripts/qemu-monitor.py" "$mon" quit >/dev/null 2>&1
			exit 0
		fi
		if grep -Eq 'rkvm-fuzz: STALL|soft lockup' "$log.raw" 2>/dev/null; then
			dump "$stall"
			sleep 20
			python3 "$RKVM_TOP/scripts/qemu-monitor.py" "$mon" quit >/dev/null 2>&1
			exit 0
		fi
	done
) &
watcher=$!
# And one that catches a CPU staying in a nested guest (build/fuzz-nested.txt).
python3 "$RKVM_TOP/scripts/qemu-monitor.py" --watch-nested "$mon" "$RKVM_OUT/fuzz-nested.txt" &
nested=$!
trap 'kill $watcher $nested 2>/dev/null || true' EXIT

RKVM_QEMU_MONITOR=$mon RKVM_VM_TIMEOUT=$((seconds * (1 + kvm) + 900)) \
	"$RKVM_TOP/scripts/run-vm.sh" "$initrd" cmd "$log.raw" </dev/null || true
tr -d '\r' <"$log.raw" >"$log"
[ -s "$stall" ] && say "a stall was reported: QEMU's CPU state is in $stall"
[ -s "$RKVM_OUT/fuzz-wedged.txt" ] && say "the VM wedged: QEMU's CPU state is in $RKVM_OUT/fuzz-wedged.txt"
status=$(sed -n 's/^rkvm-run: exit status \([0-9]*\)$/\1/p' "$log" | tail -n 1)
[ "$status" = 0 ] || die "make fuzz failed (status ${status:-none: the VM did not finish}); console: $log"
say "make fuzz passed (seed $seed)"
