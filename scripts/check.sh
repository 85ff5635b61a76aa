#!/usr/bin/env bash
# Boots the test VM in check mode and judges the TAP stream it prints.
#
# Fails if any test fails, if the plan or the totals line is missing (a
# panic, hang or timeout), or if the count of results does not match the
# plan. The in-VM suite (scripts/vm/run-suite.sh) checks kmemleak and the
# kernel log itself; this side also refuses a console showing a panic.
#
# Usage: check.sh [EXTRA_TESTS_DIR]
. "$(dirname "$0")/lib.sh"

extra=${1:-}
initrd=$RKVM_OUT/initramfs-check.cpio
args=()
[ -n "$extra" ] && args+=(--extra "$(cd "$extra" && pwd)")
"$RKVM_TOP/scripts/mkinitramfs.sh" "$initrd" "${args[@]}"

log=$RKVM_OUT/check.log
say "booting the test VM and running the selftests (console log: $log)"
start=$(date +%s)
set +e
"$RKVM_TOP/scripts/run-vm.sh" "$initrd" check "$log.raw"
vm_status=$?
set -e
tr -d '\r' <"$log.raw" >"$log"
say "the VM ran for $(($(date +%s) - start)) s"

problems=()
[ "$vm_status" = 0 ] || problems+=("QEMU exited with status $vm_status (124: timed out)")
plan=$(grep -m1 -E '^1\.\.[0-9]+$' "$log" | cut -d. -f3 || true)
results=$(grep -cE '^(not )?ok [0-9]+ ' "$log" || true)
failed=$(grep -cE '^not ok [0-9]+ ' "$log" || true)
[ -n "$plan" ] || problems+=("no TAP plan: the suite did not start")
[ -n "$plan" ] && [ "$results" != "$plan" ] && problems+=("$results results for a plan of $plan")
grep -q '^# Totals: ' "$log" || problems+=("no '# Totals:' line: the suite did not finish")
[ "$failed" = 0 ] || problems+=("$failed test(s) failed")
grep -q '^rkvm-suite: exit status [04]$' "$log" || problems+=("the suite did not report success")
grep -Eq 'Kernel panic|BUG: |Oops' "$log" && problems+=("the console shows a kernel panic or oops")

if [ ${#problems[@]} -gt 0 ]; then
	for p in "${problems[@]}"; do printf 'rkvm: check FAILED: %s\n' "$p" >&2; done
	exit 1
fi
say "check passed: $results results, none failed"
