#!/bin/sh
# Runs the selftest suite inside the test VM and prints one TAP 13 stream.
#
# Every selftest binary runs twice in the same boot: against rkvm
# (/dev/rkvm) and against the real KVM (/dev/kvm, with rkvm unloaded and
# kvm_amd or kvm_intel loaded). A test that passes on rkvm but fails on KVM
# asserts the wrong thing (under QEMU a failing KVM program runs once more:
# see run_kvm). Then the extra tests (EXTRA_TESTS) run once
# against rkvm, and the kernel's own health is checked: no kmemleak report
# and no warning, BUG, oops or lockdep splat logged during the suite.
#
# Each sub-test's own TAP is shown indented under '# ', kselftest style.

export RKVM_KO=/lib/modules/rkvm.ko
# rkvm_tests=a,b on the kernel command line runs only those programs.
if [ -n "${rkvm_tests:-}" ]; then
	TESTS=$(echo "$rkvm_tests" | tr , ' ')
else
	TESTS=$(ls /selftests 2>/dev/null)
fi
EXTRA=$(ls /extra-tests 2>/dev/null)
TIMEOUT=${RKVM_TEST_TIMEOUT:-600}

count() { set -- $1; echo $#; }
plan=$(( 2 * $(count "$TESTS") + $(count "$EXTRA") + 4 ))
n=0 pass=0 fail=0 skip=0
summary=/tmp/summary
: > $summary

echo "TAP version 13"
echo "1..$plan"

result() { # result NAME STATUS [REASON]
	n=$((n + 1))
	case $2 in
	0) echo "ok $n $1"; pass=$((pass + 1)); s=pass ;;
	4) echo "ok $n $1 # SKIP ${3:-skipped}"; skip=$((skip + 1)); s=skip ;;
	*) echo "not ok $n $1${3:+ # $3}"; fail=$((fail + 1)); s=FAIL ;;
	esac
	echo "$1 $s" >> $summary
}

uptime_s() { # whole seconds since boot, by the test VM's clock
	local up rest
	read -r up rest < /proc/uptime
	echo "${up%.*}"
}

run_prog() { # run_prog NAME CMD...: runs it, prints its output and its time; sets rc
	local name=$1 start
	echo "# selftests: $name"
	shift
	start=$(uptime_s)
	timeout "$TIMEOUT" "$@" > /tmp/out 2>&1
	rc=$?
	sed 's/^/# /' /tmp/out
	# Under Bochs the clock counts emulated instructions (clock:
	# sync=none), not wall time: the shares of the boot are what it tells.
	echo "# $name: $(($(uptime_s) - start)) s by the test VM's clock"
}

report() { # report NAME  (rc and /tmp/out from run_prog; RKVM_STRICT=1: a program that skips everything fails)
	case $rc in
	124 | 143) result "$1" 1 "TIMEOUT after ${TIMEOUT}s" ;;
	4) if [ "${RKVM_STRICT:-0}" = 1 ]; then
		result "$1" 1 "every test skipped: $(sed -n 's/.*# SKIP //p' /tmp/out | head -n 1)"
	else
		result "$1" 4 "$(sed -n 's/.*# SKIP //p' /tmp/out | head -n 1)"
	fi ;;
	0) result "$1" 0 ;;
	*) result "$1" 1 "exit status $rc" ;;
	esac
}

run_one() { # run_one NAME CMD...
	run_prog "$@"
	report "$1"
}

# Under QEMU's SVM, kvm_amd meets the emulator's intermittent fault too (a
# vCPU stuck or shut down; docs/testing.md, "An open bug"). KVM's column is
# the oracle, not the subject: a program of it that fails there runs once
# more, after its first run's output. A test asserting the wrong thing
# fails both runs; rkvm's column is never run again.
#
# rkvm_kvm_recorded=a,b on the kernel command line: KVM's column skips
# these programs, whose result on KVM is recorded (docs/testing.md, "KVM's
# recorded results": kvm_intel's `lifetime` under Bochs, kvm_amd's `qemu`
# under QEMU); rkvm's column runs them all.
run_kvm() { # run_kvm PROGRAM
	case ",${rkvm_kvm_recorded:-}," in *",$1,"*)
		result "kvm:$1" 4 "KVM's result is recorded, not run again here (docs/testing.md, \"KVM's recorded results\")"
		return ;;
	esac
	run_prog "kvm:$1" /selftests/$1 /dev/kvm
	case $rc in 0 | 4) ;; *)
		if [ "${rkvm_emulator:-}" = qemu ]; then
			echo "# kvm:$1 failed (status $rc) under QEMU: running it once more"
			run_prog "kvm:$1" /selftests/$1 /dev/kvm
		fi ;;
	esac
	report "kvm:$1"
}

# The kernel log from here on is the suite's: remember where it starts, and
# forget leaks reported before the suite.
. /etc/rkvm/health.sh
health_begin

# Column 1: rkvm.
if insmod /lib/modules/rkvm.ko; then
	# What rkvm found (hardware virtualization, next-RIP save...), for the log.
	dmesg | grep 'rkvm: /dev/rkvm ready' | tail -n 1 | sed 's/^\[[^]]*\] /# /'
	# Against rkvm nothing may skip wholesale: a device that cannot be opened
	# is a failure here, not a reason to skip.
	for t in $TESTS; do RKVM_STRICT=1 run_one "rkvm:$t" /selftests/$t /dev/rkvm; done
	for t in $EXTRA; do run_one "extra:$t" /extra-tests/$t /dev/rkvm; done
else
	for t in $TESTS; do result "rkvm:$t" 1 "insmod rkvm.ko failed"; done
	for t in $EXTRA; do result "extra:$t" 1 "insmod rkvm.ko failed"; done
fi

# Column 2: the real KVM, in the same boot.
rmmod rkvm 2>/dev/null
vendor=kvm_amd
grep -qw vmx /proc/cpuinfo && vendor=kvm_intel
if modprobe $vendor; then
	for t in $TESTS; do run_kvm "$t"; done
	rmmod $vendor kvm
else
	for t in $TESTS; do result "kvm:$t" 1 "modprobe $vendor failed"; done
fi

# rkvm must still load and unload cleanly after all that.
if insmod /lib/modules/rkvm.ko && rmmod rkvm; then
	result "module:reload_after_suite" 0
else
	result "module:reload_after_suite" 1 "insmod/rmmod rkvm failed"
fi

# Speculation hygiene: the test kernel runs without CPU mitigations, so
# the RSB fill after each exit, the VERW before each entry, the call to
# the return untraining and, on VMX, the software L1D flush and the branch
# history clearing never ran above. Load rkvm with them forced on
# (module/spec.rs, `with_every_sequence`) and run guests
# once more: `tool` (many entries and exits through the rkvm tool) when
# the suite has it, else its first program (the Bochs boot on an AMD CPU
# runs only `run` and `qemu`: `tool`'s triple-faulting guest resets the
# whole emulated CPU there, docs/testing.md).
set -- $TESTS
spec_prog=$1
for t in "$@"; do [ "$t" = tool ] && spec_prog=tool; done
spec_line='speculation: RSB fill after exit, VERW before entry'
if grep -qw vmx /proc/cpuinfo; then
	spec_line="$spec_line, software L1D flush before entry, return untraining after exit (Retbleed/SRSO), branch history clearing after exit (BHI) (speculation_test)"
else
	spec_line="$spec_line, return untraining after exit (Retbleed/SRSO) (speculation_test)"
fi
if insmod /lib/modules/rkvm.ko speculation_test=1; then
	if dmesg | tail -n 30 | grep -qF "$spec_line"; then
		RKVM_STRICT=1 run_one "speculation:$spec_prog" /bin/busybox env RKVM_SPECULATION_PASS=1 "/selftests/$spec_prog" /dev/rkvm
	else
		result "speculation:$spec_prog" 1 "rkvm did not log '$spec_line' with speculation_test=1"
	fi
	rmmod rkvm
else
	result "speculation:$spec_prog" 1 "insmod rkvm.ko speculation_test=1 failed"
fi

# No leaks, and no warnings logged since the suite started.
health_check_leaks
health_check_log

# Both columns side by side.
echo "# ----------------------------------------------"
printf '# %-22s %-6s %-6s\n' test rkvm kvm
for t in $TESTS; do
	r=$(grep "^rkvm:$t " $summary | cut -d' ' -f2)
	k=$(grep "^kvm:$t " $summary | cut -d' ' -f2)
	printf '# %-22s %-6s %-6s\n' "$t" "$r" "$k"
done
echo "# ----------------------------------------------"
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:$skip error:0"
[ $fail -eq 0 ] || exit 1
[ $pass -eq 0 ] && exit 4
exit 0
