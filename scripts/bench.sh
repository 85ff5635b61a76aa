#!/usr/bin/env bash
# `make bench`: boots the test VM once and runs `rkvm bench` on rkvm and
# then on the real KVM in that same boot (scripts/vm/bench.sh), prints the
# side-by-side table and writes it to build/bench.txt. Under software
# emulation only the ratios mean something: see the README.
. "$(dirname "$0")/lib.sh"

initrd=$RKVM_OUT/initramfs-bench.cpio
log=$RKVM_OUT/bench.log
"$RKVM_TOP/scripts/mkinitramfs.sh" "$initrd" --cmd 'sh /etc/rkvm/bench.sh'
# The first-touch benchmark fills a 1 GiB slot: give the VM room for it.
say "benchmarking rkvm and KVM in one VM boot (a few minutes under emulation); console: $log"
RKVM_MEM=${RKVM_MEM:-3072} "$RKVM_TOP/scripts/run-vm.sh" "$initrd" cmd "$log.raw" >/dev/null </dev/null || true
tr -d '\r' <"$log.raw" >"$log"
status=$(sed -n 's/^rkvm-run: exit status \([0-9]*\)$/\1/p' "$log" | tail -n 1)
[ "$status" = 0 ] || { grep -v '^\[' "$log" | tail -n 30 >&2; die "the benchmark run failed (status ${status:-none}); console: $log"; }
{
	echo "rkvm vs KVM, $(date -u '+%Y-%m-%d %H:%M UTC'), QEMU ${RKVM_QEMU_CPU:-qemu64,+svm,+npt,+vgif} (software emulation: compare ratios only)"
	sed -n '/^rkvm-bench-table-begin$/,/^rkvm-bench-table-end$/p' "$log" | sed '1d;$d'
} >"$RKVM_OUT/bench.txt"
cat "$RKVM_OUT/bench.txt"
say "written to $RKVM_OUT/bench.txt"
