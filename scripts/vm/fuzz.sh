#!/bin/sh
# `make fuzz`, inside the test VM: rkvm-fuzz against rkvm, then (optionally)
# the same seed against the real KVM in the same boot, and the kernel's
# health around both. TAP 13 on the console.
#
# Usage: fuzz.sh SECONDS SEED KVM(0|1) [THREADS]
# rkvm is loaded by the VM's init.
seconds=${1:-60} seed=${2:-1} kvm=${3:-0} threads=${4:-3}
n=0 pass=0 fail=0 skip=0
result() { # result NAME STATUS [REASON]
	n=$((n + 1))
	case $2 in
	0) echo "ok $n $1"; pass=$((pass + 1)) ;;
	4) echo "ok $n $1 # SKIP ${3:-skipped}"; skip=$((skip + 1)) ;;
	*) echo "not ok $n $1${3:+ # $3}"; fail=$((fail + 1)) ;;
	esac
}
fuzz() { # fuzz NAME DEVICE
	echo "# rkvm-fuzz on $2 for $seconds s, seed $seed"
	rkvm-fuzz --device "$2" --seconds "$seconds" --seed "$seed" --threads "$threads" > /tmp/fuzz.out 2>&1 &
	pid=$!
	# When the kernel reports an RCU stall, ask the fuzzer for its workers'
	# last actions (SIGUSR2), once: it goes on, and the log check fails later.
	stalls=$(dmesg | grep -c 'detected stalls')
	(
		while kill -0 $pid 2>/dev/null; do
			if [ "$(dmesg | grep -c 'detected stalls')" -gt "$stalls" ]; then
				kill -USR2 $pid
				# Which CPUs still take timer interrupts (LOC), and where
				# every fuzzer thread is (state, CPU: fields 3 and 39).
				for i in 1 2; do
					grep -E '^ *(LOC|RES|CAL|NMI):' /proc/interrupts | sed 's/^/# interrupts: /'
					sleep 1
				done
				for t in /proc/[0-9]*/task/*; do
					grep -q rkvm-fuzz "$t/comm" 2>/dev/null &&
						awk '{ print "# thread " $1 " state " $3 " cpu " $39 }' "$t/stat"
				done
				break
			fi
			sleep 2
		done
	) &
	# A heartbeat on the console: the host side takes a long silence for a
	# wedged VM and dumps QEMU's state (scripts/fuzz.sh).
	( while kill -0 $pid 2>/dev/null; do sleep 30; echo "# fuzzing: uptime $(cut -d' ' -f1 /proc/uptime) s"; done ) &
	beat=$!
	wait $pid
	rc=$?
	kill $beat 2>/dev/null
	sed 's/^/# /' /tmp/fuzz.out
	case $rc in
	0) result "$1" 0 ;;
	3) result "$1" 1 "a worker stalled in the kernel" ;;
	*) result "$1" 1 "rkvm-fuzz exit status $rc" ;;
	esac
}

. /etc/rkvm/health.sh
health_begin
echo "TAP version 13"
echo "1..$((4 + kvm))"
if [ -e /dev/rkvm ]; then
	fuzz fuzz:rkvm /dev/rkvm
else
	result fuzz:rkvm 1 "/dev/rkvm is missing: insmod rkvm.ko failed"
fi
# Everything the fuzzer made is gone with its processes: the module must go too.
if rmmod rkvm; then
	result module:rmmod_after_fuzz 0
else
	result module:rmmod_after_fuzz 1 "rmmod rkvm failed (something still holds it)"
fi
if [ "$kvm" = 1 ]; then
	vendor=kvm_amd
	grep -qw vmx /proc/cpuinfo && vendor=kvm_intel
	if modprobe $vendor; then
		fuzz fuzz:kvm /dev/kvm
		rmmod $vendor kvm
	else
		result fuzz:kvm 1 "modprobe $vendor failed"
	fi
fi
health_check_leaks
health_check_log
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:$skip error:0"
[ $fail -eq 0 ]
