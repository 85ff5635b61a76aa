#!/usr/bin/env bash
# Boots the test VMs and judges the TAP they print:
#   svm: the selftest suite in QEMU, on a CPU with SVM and nested paging
#        (both rkvm and the real kvm_amd, in the same boot;
#        scripts/vm/run-suite.sh), then a short boot on a CPU without
#        SVM, where rkvm must refuse to load (scripts/vm/run-nodev.sh);
#   vmx: the same suite in Bochs, on a CPU with VMX, EPT and unrestricted
#        guest (rkvm and the real kvm_intel in the same boot), then a short
#        boot on a CPU with VMX but no unrestricted guest, which rkvm must
#        refuse, then the run-loop programs (`run`, `qemu`) in Bochs on an
#        AMD CPU with SVM and next-RIP save (`zambezi`), which QEMU's SVM
#        lacks: rkvm's NRIPS path, against rkvm and kvm_amd (whose `run`
#        is recorded there), then a subset
#        of Linux's KVM selftests on VMX (kst_boot vmx). (This is the
#        Bochs half; both vendors are in it.)
# RKVM_CHECK says which: "svm kvm-selftests vmx" (the default, `make
# check`), "svm" (`make check-svm`), "kvm-selftests" (`make
# check-kvm-selftests`: Linux's own KVM selftests in QEMU, see kst_boot),
# "vmx" (`make check-vmx`), "kvm-selftests-vmx" (`make
# check-kvm-selftests-vmx`: the Bochs subset alone) or "svm-nrips" (the
# zambezi boot alone).
# Called directly, it uses the rkvm.ko `make module` built last: after a
# KASAN build, rebuild it first (or use make).
#
# A run fails if any test fails, if the plan or the totals line is missing
# (a panic, hang or timeout), or if the count of results does not match the
# plan. The in-VM suite checks kmemleak and the kernel log itself; this side
# also refuses a console showing a panic or oops.
#
# Usage: check.sh [EXTRA_TESTS_DIR]
. "$(dirname "$0")/lib.sh"

extra=${1:-}
initrd=$RKVM_OUT/initramfs-check.cpio
args=()
[ -n "$extra" ] && args+=(--extra "$(cd "$extra" && pwd)")
"$RKVM_TOP/scripts/mkinitramfs.sh" "$initrd" "${args[@]}"

failures=0 all_problems=()
all_pass=0 all_fail=0 all_skip=0 all_xfail=0
# A boot's status file says how its emulator ended (boot writes it, judge
# reads it): none may survive from an earlier run, or a lane that stopped
# before a boot would have that boot judged on old results.
rm -f "$RKVM_OUT"/*.status

# boot NAME MODE: boots in MODE and shows the TAP as it comes; the console
# goes to $RKVM_OUT/NAME.log, the emulator's status to NAME.status (judge
# reads both). A Bochs boot works in its own directory, so that two can run
# at once (boot_lane).
boot() {
	local name=$1 mode=$2 log=$RKVM_OUT/$1.log status start
	local vm=$RKVM_TOP/scripts/run-vm.sh
	[ "${BOCHS:-0}" = 1 ] && vm=$RKVM_TOP/scripts/run-bochs.sh
	say "$name: booting the test VM (console log: $log)"
	start=$(date +%s)
	# The TAP stream is shown as it comes, from its header on (what precedes
	# it, even on the header's line, is the firmware's screen control); the
	# whole console goes to the log.
	set +e
	RKVM_BOCHS_WORK=$RKVM_OUT/bochs-$name "$vm" "${BOOT_INITRD:-$initrd}" "$mode" "$log.raw" |
		tr -d '\r' | sed -u -n '/TAP version 13$/,$ { /^# /!s/.*\(TAP version 13\)$/\1/; p }'
	status=${PIPESTATUS[0]}
	set -e
	tr -d '\r' <"$log.raw" >"$log"
	echo "$status" >"$RKVM_OUT/$name.status"
	say "$name: the VM ran for $(($(date +%s) - start)) s"
}

# boot_and_judge NAME MODE: boots in MODE, shows the TAP, judges it.
boot_and_judge() {
	boot "$1" "$2"
	judge "$1" "$2"
}

# boot_lane FILE BOOT...: runs boots one after another in the background,
# their output to FILE; `wait` for it, then judge each. Bochs emulates on
# one host thread, so two Bochs boots at once use the machine's two cores
# (docs/testing.md, "Time").
boot_lane() {
	local out=$1
	shift
	("$@") >"$out" 2>&1 &
}

# judge NAME MODE: judges a boot's console log (boot wrote it), with the
# same environment the boot had (BOCHS, RKVM_REQUIRE).
judge() {
	local name=$1 mode=$2 log=$RKVM_OUT/$1.log status emulator=QEMU
	[ "${BOCHS:-0}" = 1 ] && emulator=Bochs
	status=$(cat "$RKVM_OUT/$name.status" 2>/dev/null || echo "no status")
	local problems=() plan results failed
	[ "$status" = 0 ] || problems+=("$emulator exited with status $status (124: timed out)")
	plan=$(grep -a -m1 -E '^1\.\.[0-9]+$' "$log" | cut -d. -f3 || true)
	results=$(grep -acE '^(not )?ok [0-9]+ ' "$log" || true)
	failed=$(grep -acE '^not ok [0-9]+ ' "$log" || true)
	[ -n "$plan" ] || problems+=("no TAP plan: the suite did not start")
	[ -n "$plan" ] && [ "$results" != "$plan" ] && problems+=("$results results for a plan of $plan")
	grep -aq '^# Totals: ' "$log" || problems+=("no '# Totals:' line: the suite did not finish")
	[ "$failed" = 0 ] || problems+=("$failed test(s) failed")
	# RKVM_REQUIRE: a line the console must show (what the boot is for).
	[ -n "${RKVM_REQUIRE:-}" ] && ! grep -aqF "$RKVM_REQUIRE" "$log" &&
		problems+=("the console lacks '$RKVM_REQUIRE'")
	all_fail=$((all_fail + failed))
	all_skip=$((all_skip + $(grep -acE '^ok [0-9]+ .*# SKIP' "$log" || true)))
	all_xfail=$((all_xfail + $(grep -acE '^ok [0-9]+ .*# XFAIL' "$log" || true)))
	all_pass=$((all_pass + $(grep -acE '^ok [0-9]+ ' "$log" || true)))
	grep -aq '^rkvm-suite: exit status [04]$' "$log" || problems+=("the suite did not report success")
	# The test VM's own kernel: lines a test quotes as TAP diagnostics
	# ("# ...", say a nested guest's console after a boot it retries) are
	# the test's to judge.
	grep -aEq '^[^#]*(Kernel panic|BUG: |Oops)' "$log" &&
		problems+=("the console shows a kernel panic or oops")
	# A QEMU suite ends by powering off with guests running (scripts/vm/init):
	# from that marker on, the console carries every kernel message.
	if [ "$mode" = check ] && [ "$emulator" = QEMU ]; then
		local off='rkvm: powering off with 2 vCPUs in their guest'
		if ! grep -aqF "$off" "$log"; then
			problems+=("the power-off check with running guests did not start: $(grep -a -m1 '^rkvm: .*power-off\|^rkvm: the spinning' "$log" || echo 'no marker')")
		else
			local report
			report=$(sed -n "/$off/,\$p" "$log" |
				grep -aEm1 'invalid opcode|WARNING:|BUG:|Oops|general protection|Call Trace:' || true)
			[ -z "$report" ] || problems+=("powering off with guests running logged a kernel report: $report")
		fi
	fi

	if [ ${#problems[@]} -gt 0 ]; then
		for p in "${problems[@]}"; do
			printf 'rkvm: %s FAILED: %s\n' "$name" "$p" >&2
			all_problems+=("$name: $p")
		done
		failures=$((failures + 1))
	else
		say "$name passed: $results results, none failed"
	fi
}

# AMD SVM with next-RIP save under Bochs (`zambezi`): rkvm must see it and
# use it. Part of the vmx half; RKVM_CHECK=svm-nrips runs it alone.
# STEP (here and in kst_boot): boot_and_judge (the default), or boot and
# judge apart, for a boot run in a lane (boot_lane).
nrips_boot() {
	local step=${1:-boot_and_judge}
	# kvm_amd's `run` is recorded here: QEMU's boot runs it every time
	# (docs/testing.md, "KVM's recorded results"); its `qemu` runs here only.
	BOCHS=1 RKVM_BOCHS_CPU=zambezi RKVM_SUITE_TESTS="run qemu" RKVM_KVM_RECORDED=run \
		RKVM_REQUIRE="next-RIP save yes" $step check-svm-nrips check
}

# Linux's own KVM selftests (tools/testing/selftests/kvm), unmodified:
# `kst_boot svm`, all of them in QEMU (SVM) with 3 GiB; `kst_boot vmx`, the
# subset selftests/linux/expected-vmx.txt names in Bochs (VMX) with 2 GiB.
# rkvm's column is judged against the results recorded in
# selftests/linux/expected-<vendor>.txt (scripts/vm/kvm-selftests.sh).
# KVM's column is recorded there too; RKVM_KST_KVM=1 runs it again in the
# same boot (to record it anew: docs/testing.md).
kst_boot() {
	local vendor=$1 step=${2:-boot_and_judge} kst_initrd=$RKVM_OUT/initramfs-kvm-selftests-$1.cpio
	if [ "$step" = judge ]; then
		BOCHS=1 judge check-kvm-selftests-vmx check
		return
	fi
	"$RKVM_TOP/scripts/build-kvm-selftests.sh"
	if [ "$vendor" = svm ]; then
		RKVM_KST_EXPECTED=$RKVM_TOP/selftests/linux/expected-svm.txt \
			"$RKVM_TOP/scripts/mkinitramfs.sh" "$kst_initrd" --kvm-selftests
		BOOT_INITRD=$kst_initrd RKVM_MEM=${RKVM_MEM:-3072} RKVM_SUITE=kvm-selftests \
			boot_and_judge check-kvm-selftests check
	else
		RKVM_KST_EXPECTED=$RKVM_TOP/selftests/linux/expected-vmx.txt \
			"$RKVM_TOP/scripts/mkinitramfs.sh" "$kst_initrd" --kvm-selftests-recorded
		BOCHS=1 BOOT_INITRD=$kst_initrd RKVM_MEM=${RKVM_MEM:-1024} RKVM_SUITE=kvm-selftests \
			$step check-kvm-selftests-vmx check
	fi
}

# The second Bochs lane of the vmx half: a CPU with VMX but without EPT and
# unrestricted guest (a Nehalem), which rkvm must refuse, saying what is
# missing; SVM with next-RIP save; Linux's KVM selftests on VMX (the subset
# Bochs has time for).
vmx_second_lane() {
	BOCHS=1 RKVM_BOCHS_CPU=corei5_lynnfield_750 RKVM_BOCHS_CPUS=1 boot check-vmx-nodev nodev
	nrips_boot boot
	kst_boot vmx boot
}

backends=${RKVM_CHECK:-svm kvm-selftests vmx}
for b in $backends; do
	case $b in
	svm)
		# kvm_amd's `qemu` is recorded (docs/testing.md, "KVM's recorded
		# results"): under QEMU's SVM its nested boots can reset the whole
		# test VM. rkvm's column runs it; Bochs's boots run KVM's.
		RKVM_KVM_RECORDED=qemu boot_and_judge check check
		RKVM_QEMU_CPU=qemu64,-svm boot_and_judge check-nodev nodev
		;;
	vmx)
		# Two Bochs lanes at once, one per host core (Bochs emulates on
		# one thread): the suite on VMX here, the other three boots in
		# the second lane; their TAP is shown after the suite's.
		lane_log=$RKVM_OUT/bochs-lane.log
		boot_lane "$lane_log" vmx_second_lane
		lane=$!
		# kvm_intel's `lifetime` and `irqchip` are recorded (docs/testing.md,
		# "KVM's recorded results"); rkvm's run.
		BOCHS=1 RKVM_KVM_RECORDED=lifetime,irqchip boot_and_judge check-vmx check
		wait "$lane" || true
		cat "$lane_log"
		BOCHS=1 judge check-vmx-nodev nodev
		nrips_boot judge
		kst_boot vmx judge
		;;
	svm-nrips) nrips_boot ;;
	kvm-selftests) kst_boot svm ;;
	kvm-selftests-vmx) kst_boot vmx ;;
	*) die "RKVM_CHECK: unknown backend '$b' (svm, kvm-selftests, vmx, kvm-selftests-vmx or svm-nrips)" ;;
	esac
done

all_pass=$((all_pass - all_skip - all_xfail))
# The closing line: one count over every boot (XFAIL: a KVM selftest that
# fails on rkvm as recorded).
echo "$all_pass passed, $all_fail failed, $all_skip skipped, $all_xfail expected failures"
# Each boot's problems again, last: CI shows the end of the output, and a
# boot that failed early scrolled out of it long ago.
for p in "${all_problems[@]}"; do printf 'rkvm: FAILED: %s\n' "$p" >&2; done
[ "$failures" = 0 ] || die "make check failed (logs in $RKVM_OUT)"
say "make check passed"
