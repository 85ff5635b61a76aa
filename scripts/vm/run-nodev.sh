#!/bin/sh
# Runs inside a test VM whose CPU has no usable virtualization extension
# (check.sh boots QEMU with -svm): rkvm must refuse to load with ENODEV and
# say why in one line of the kernel log. Prints TAP 13.
n=0 fail=0
result() { # result NAME OK [REASON]
	n=$((n + 1))
	if [ "$2" = 1 ]; then echo "ok $n $1"; else echo "not ok $n $1 # $3"; fail=$((fail + 1)); fi
}
echo "TAP version 13"
echo "1..3"
before=$(dmesg | wc -l)
insmod /lib/modules/rkvm.ko > /tmp/insmod.out 2>&1
rc=$?
sed 's/^/# insmod: /' /tmp/insmod.out
if [ $rc -ne 0 ] && grep -q "No such device" /tmp/insmod.out; then
	result "nodev:insmod_fails_with_enodev" 1
else
	result "nodev:insmod_fails_with_enodev" 0 "insmod exit $rc, expected ENODEV"
fi
# rkvm's own lines (not the kernel's "loading out-of-tree module taints
# kernel"). busybox insmod retries a failed finit_module() with
# init_module(), so the module's init runs twice: one line per run, both
# the same line.
dmesg | tail -n +$((before + 1)) | grep 'rkvm:' | grep -v 'taints kernel' |
	sed 's/^\[[ 0-9.]*\] //' > /tmp/rkvm.log
sed 's/^/# dmesg: /' /tmp/rkvm.log
lines=$(wc -l < /tmp/rkvm.log)
distinct=$(sort -u /tmp/rkvm.log | wc -l)
if [ "$distinct" = 1 ] && [ "$lines" -le 2 ] && grep -q 'no usable hardware virtualization' /tmp/rkvm.log; then
	result "nodev:one_clear_line_in_the_kernel_log" 1
else
	result "nodev:one_clear_line_in_the_kernel_log" 0 "expected one rkvm line naming the reason per init attempt"
fi
if [ ! -e /dev/rkvm ] && ! grep -q '^rkvm ' /proc/modules; then
	result "nodev:nothing_left_behind" 1
else
	result "nodev:nothing_left_behind" 0 "/dev/rkvm or the module is still there"
fi
echo "# Totals: pass:$((n - fail)) fail:$fail xfail:0 xpass:0 skip:0 error:0"
[ $fail -eq 0 ]
