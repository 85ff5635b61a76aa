#!/bin/sh
# `make bench`, inside the test VM: the same benchmark binary on rkvm and
# then on the real KVM (rkvm unloaded, kvm_amd or kvm_intel loaded) in
# this one boot, then both side by side between two marker lines that
# scripts/bench.sh cuts out.
set -e
echo "# rkvm bench: rkvm"
rkvm bench --device /dev/rkvm --output /tmp/rkvm.tsv --linux /usr/share/rkvm/linux
rmmod rkvm
vendor=kvm_amd
grep -qw vmx /proc/cpuinfo && vendor=kvm_intel
modprobe $vendor
echo "# rkvm bench: KVM ($vendor)"
rkvm bench --device /dev/kvm --output /tmp/kvm.tsv --linux /usr/share/rkvm/linux
echo "rkvm-bench-table-begin"
rkvm compare /tmp/rkvm.tsv /tmp/kvm.tsv
echo "rkvm-bench-table-end"
