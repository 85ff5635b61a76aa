#!/bin/sh
# `make bench`, inside the test VM: the same benchmark binary on rkvm and
# then on the real KVM (rkvm unloaded, kvm_amd or kvm_intel loaded) in
# this one boot, then both side by side between two marker lines that
# scripts/bench.sh cuts out. With the Linux guest in the VM, rkvm boot
# and unmodified QEMU boot it too (`linux_boot`, `qemu_linux_boot`).
set -e
linux=/usr/share/rkvm/linux
qemu=/usr/bin/qemu-system-x86_64
opts="--linux $linux"
[ -x "$qemu" ] && opts="$opts --qemu $qemu"
# Under Bochs (make bench VMX=1) a benchmark pass is minutes, a Linux
# boot two: three repeats, not five (the boots take three anyway).
[ "${rkvm_emulator:-}" = bochs ] && opts="$opts --repeats 3"
echo "# rkvm bench: rkvm"
rkvm bench --device /dev/rkvm --output /tmp/rkvm.tsv $opts
rmmod rkvm
vendor=kvm_amd
grep -qw vmx /proc/cpuinfo && vendor=kvm_intel
modprobe $vendor
echo "# rkvm bench: KVM ($vendor)"
rkvm bench --device /dev/kvm --output /tmp/kvm.tsv $opts
echo "rkvm-bench-table-begin"
rkvm compare /tmp/rkvm.tsv /tmp/kvm.tsv
echo "rkvm-bench-table-end"
