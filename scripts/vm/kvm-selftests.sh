#!/bin/sh
# Runs Linux's own KVM selftests (tools/testing/selftests/kvm of the test
# kernel's source, unmodified, built by scripts/build-kvm-selftests.sh)
# inside the test VM and prints one TAP 13 stream, kselftest style.
#
# rkvm's column: each program runs in a private mount namespace whose
# /dev/kvm is a node with /dev/rkvm's numbers, and whose /sys/module holds
# the module parameters the selftests' library reads (kvm, kvm_amd,
# kvm_intel) with rkvm's answers, so that nothing outside sees either and
# no test is changed. KVM's column (rkvm_kst_kvm=1 on the kernel command
# line): the same programs on the real /dev/kvm and /sys, kvm_amd or
# kvm_intel loaded, in the same boot.
#
# The verdicts come from the recorded results (/kvm-selftests/expected,
# from selftests/linux/expected-*.txt): a program recorded as passing on a
# column fails the suite if it does not pass; one recorded as failing is
# reported as XFAIL (or as a new pass, to be recorded). So the check fails
# exactly when rkvm passes fewer than the recorded set.

DIR=/kvm-selftests
EXPECTED=$DIR/expected
# The limit per program: the selftests' own (their `settings` file says
# 120 s). On rkvm's column a program not recorded as passing gets 30 s
# (rkvm_kst_xfail_timeout): it cannot fail the check, only show progress,
# and waiting for the ones that hang would cost minutes of every run. To
# see whether one passes given longer, run it alone (RKVM_KST_TESTS).
TIMEOUT=${rkvm_kst_timeout:-120}
XFAIL_TIMEOUT=${rkvm_kst_xfail_timeout:-30}
TESTS=$(cat $DIR/list)
[ -n "${rkvm_kst_tests:-}" ] && TESTS=$(echo "$rkvm_kst_tests" | tr , ' ')
COLUMNS=rkvm
[ "${rkvm_kst_kvm:-0}" = 1 ] && COLUMNS="rkvm kvm"

count() { set -- $1; echo $#; }
ncols=$(count "$COLUMNS")
plan=$((ncols * $(count "$TESTS") + 3))
n=0 pass=0 fail=0 skip=0 xfail=0
summary=/tmp/kst-summary
: > $summary

echo "TAP version 13"
echo "1..$plan"

# result NAME STATUS [REASON]: STATUS is ok (or 0), skip (or 4), xfail or
# fail (anything else; health.sh passes 0, 1 and 4, as run-suite.sh's).
result() {
	n=$((n + 1))
	case $2 in
	ok | 0) echo "ok $n $1"; pass=$((pass + 1)) ;;
	skip | 4) echo "ok $n $1 # SKIP $3"; skip=$((skip + 1)) ;;
	xfail) echo "ok $n $1 # XFAIL $3"; xfail=$((xfail + 1)) ;;
	*) echo "not ok $n $1 # $3"; fail=$((fail + 1)) ;;
	esac
}

# expected COLUMN TEST: the recorded result (pass, fail, skip or timeout).
expected() {
	awk -v t="$2" -v c="$1" '$1 == t { print (c == "rkvm" ? $2 : $3); found = 1 }
		END { if (!found) print "new" }' $EXPECTED
}

# The private namespace for rkvm's column (see the top of this file).
# kvm_get_module_param_bool reads the first character: Y or N.
PRIVATE='
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /dev
mknod -m 0666 /dev/kvm c "$KVM_MAJOR" "$KVM_MINOR"
mknod -m 0666 /dev/null c 1 3
mknod -m 0666 /dev/zero c 1 5
mknod -m 0666 /dev/random c 1 8
mknod -m 0666 /dev/urandom c 1 9
mount -t tmpfs -o mode=0755 tmpfs /sys/module
param() { mkdir -p /sys/module/$1/parameters; echo "$3" > /sys/module/$1/parameters/$2; }
# kvm.ko: rkvm has no PMU, ignores no MSR, has no forced-emulation prefix,
# no TDP MMU, and does not split huge pages when dirty logging starts (it
# drops them; they fault back in 4 KiB at a time).
param kvm enable_pmu N
param kvm ignore_msrs N
param kvm force_emulation_prefix 0
param kvm tdp_mmu N
param kvm eager_page_split N
# The vendor modules: nested paging yes, nested virtualization no, no AVIC,
# no LBR virtualization, no mediated PMU.
param kvm_amd npt Y
param kvm_amd nested 0
param kvm_amd avic N
param kvm_amd lbrv 0
param kvm_amd enable_mediated_pmu N
param kvm_intel ept Y
param kvm_intel unrestricted_guest Y
param kvm_intel nested N
param kvm_intel enable_mediated_pmu N
cd /tmp
exec "$@"
'

# args_for TEST: the program's own options where its defaults assume a
# machine much faster than this nested emulation (the same on both
# columns). memslot_perf_test's host waits 10 s (`-t`) for the guest at
# each sync with alarm(); its RW test's first pass faults in 512 MiB, which
# takes 8 to 11 s here: a timing failure, not a wrong result, on either
# device. Its own documented option raises the wait.
args_for() {
	case $1 in
	memslot_perf_test) echo "-t 60" ;;
	esac
}

# run_test COLUMN TEST LIMIT: runs it for at most LIMIT seconds; sets st
# (pass, skip, fail or timeout) and leaves its output in /tmp/kst-out.
run_test() {
	# shellcheck disable=SC2046 # args_for's words are separate options
	if [ "$1" = rkvm ]; then
		KVM_MAJOR=$KVM_MAJOR KVM_MINOR=$KVM_MINOR timeout "$3" \
			unshare -m -- sh -c "$PRIVATE" sh "$DIR/$2" $(args_for "$2") > /tmp/kst-out 2>&1
	else
		(cd /tmp && timeout "$3" "$DIR/$2" $(args_for "$2")) > /tmp/kst-out 2>&1
	fi
	case $? in
	0) st=pass ;;
	4) st=skip ;;
	124 | 143) st=timeout ;;
	*) st=fail ;;
	esac
	reap_leftovers
}

# reap_leftovers: kills whatever still runs from $DIR. A program that
# forked and ran out of time leaves its children behind (timeout signals
# only the one it started): they would keep the device open, so that the
# module could not be unloaded at the end, and compete with the next
# program for the CPUs. (A process's files are closed when it exits, so a
# zombie among them holds nothing.)
reap_leftovers() {
	for p in /proc/[0-9]*; do
		cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
		case $cmd in
		"$DIR"/*) kill -KILL "${p#/proc/}" 2>/dev/null && echo "# killed a leftover: $cmd" ;;
		esac
	done
}

judge() { # judge COLUMN TEST: runs it and prints its verdict
	c=$1 t=$2
	echo "# selftests: $c:$t"
	want=$(expected "$c" "$t")
	limit=$TIMEOUT
	[ "$c" = rkvm ] && [ "$want" != pass ] && limit=$XFAIL_TIMEOUT
	start=$(date +%s)
	run_test "$c" "$t" "$limit"
	# Each program's own lines, the last 30 of them (some print hundreds),
	# printable ASCII only (a few print control characters).
	tail -n 30 /tmp/kst-out | tr -cd '\11\12\40-\176' | sed 's/^/# /'
	echo "# $c:$t: $st after $(($(date +%s) - start)) s (limit $limit s)"
	# Why, in one line: the failed assertion's place and expression (the
	# line after the library's banner), else its skip or first error line.
	why=$(awk '/Test Assertion Failure/ { getline; sub(/^ +/, ""); print; exit }' /tmp/kst-out)
	[ -n "$why" ] || why=$(grep -m1 -E 'SKIP|Requirement|Illegal|error|failed' /tmp/kst-out)
	why=$(echo "$why" | tr -cd '\11\40-\176' | cut -c1-120)
	echo "$c:$t $st $want" >> $summary
	case $st:$want in
	pass:pass) result "$c:$t" ok ;;
	pass:*) echo "# $c:$t passes; the record says $want: record it"; result "$c:$t" ok ;;
	*:pass) result "$c:$t" fail "$st (recorded: pass): $why" ;;
	skip:*) result "$c:$t" skip "${why:-the program skipped}" ;;
	*) result "$c:$t" xfail "$st, as recorded ($want): $why" ;;
	esac
}

. /etc/rkvm/health.sh
health_begin

for c in $COLUMNS; do
	if [ "$c" = rkvm ]; then
		rmmod kvm_amd kvm_intel kvm 2>/dev/null
		if ! insmod /lib/modules/rkvm.ko; then
			for t in $TESTS; do result "rkvm:$t" fail "insmod rkvm.ko failed"; done
			continue
		fi
		KVM_MAJOR=$(( 0x$(stat -c %t /dev/rkvm) ))
		KVM_MINOR=$(( 0x$(stat -c %T /dev/rkvm) ))
	else
		rmmod rkvm 2>/dev/null
		vendor=kvm_amd
		grep -qw vmx /proc/cpuinfo && vendor=kvm_intel
		if ! modprobe $vendor; then
			for t in $TESTS; do result "kvm:$t" fail "modprobe $vendor failed"; done
			continue
		fi
	fi
	for t in $TESTS; do judge "$c" "$t"; done
	[ "$c" = rkvm ] && rmmod rkvm
	[ "$c" = kvm ] && rmmod $vendor kvm
done

# rkvm must still load and unload cleanly after all that, and the kernel
# stays healthy: no leak, no warning logged.
if insmod /lib/modules/rkvm.ko && rmmod rkvm; then
	result "module:reload_after_kvm_selftests" ok
else
	result "module:reload_after_kvm_selftests" fail "insmod/rmmod rkvm failed"
fi
health_check_leaks
health_check_log

# Both columns side by side: this run's result, then the recorded one.
echo "# ----------------------------------------------------------------"
printf '# %-44s %-16s %-16s\n' test "rkvm (recorded)" "kvm (recorded)"
for t in $TESTS; do
	r=$(awk -v k="rkvm:$t" '$1 == k { print $2 " (" $3 ")" }' $summary)
	k=$(awk -v k="kvm:$t" '$1 == k { print $2 " (" $3 ")" }' $summary)
	[ -n "$k" ] || k="- ($(expected kvm "$t"))"
	printf '# %-44s %-16s %-16s\n' "$t" "$r" "$k"
done
echo "# ----------------------------------------------------------------"
rp=$(grep -c '^rkvm:[^ ]* pass ' $summary)
echo "# rkvm passes $rp of $(count "$TESTS") (recorded: $(awk '$2 == "pass"' $EXPECTED | wc -l))"
echo "# Totals: pass:$pass fail:$fail xfail:$xfail xpass:0 skip:$skip error:0"
[ $fail -eq 0 ] || exit 1
exit 0
