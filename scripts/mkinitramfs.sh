#!/usr/bin/env bash
# Builds the test VM's initramfs: busybox, the kernel's modules (the real
# KVM among them), rkvm.ko, the selftest binaries, the rkvm tool
# (/usr/bin/rkvm), the fuzzer (/usr/bin/rkvm-fuzz), the demo guests (/usr/share/rkvm/guests)
# and a Linux guest (/usr/share/rkvm/linux: the test kernel, a tiny initramfs), the in-VM
# scripts, Debian's QEMU with its libraries and SeaBIOS (the third-party
# KVM client the `qemu` selftest runs), and optionally extra test binaries
# and a command to run.
#
# Usage: mkinitramfs.sh OUTPUT.cpio [--extra DIR] [--cmd 'COMMAND']
#                       [--kvm-selftests | --kvm-selftests-recorded]
#   --kvm-selftests: also Linux's KVM selftests (build/kvm-selftests, from
#   build-kvm-selftests.sh) in /kvm-selftests, with their list and the
#   recorded results for this VM's emulator (RKVM_KST_EXPECTED).
#   --kvm-selftests-recorded: only the programs RKVM_KST_EXPECTED names (a
#   subset, for an emulator too slow to run them all).
. "$(dirname "$0")/lib.sh"

out=${1:?usage: mkinitramfs.sh OUTPUT.cpio [--extra DIR] [--cmd COMMAND]}
shift
extra="" cmd="" kst=0
while [ $# -gt 0 ]; do
	case $1 in
	--kvm-selftests) kst=1; shift ;;
	--kvm-selftests-recorded) kst=recorded; shift ;;
	--extra) extra=$2; shift 2 ;;
	--cmd) cmd=$2; shift 2 ;;
	*) die "mkinitramfs.sh: unknown argument $1" ;;
	esac
done

kbuild=$(kernel_build_dir)
root=$RKVM_OUT/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,etc/rkvm,proc,sys,dev,tmp,lib/modules,selftests,extra-tests,root,usr/bin,usr/share/rkvm/guests}

cp /bin/busybox "$root/bin/busybox"
file -L "$root/bin/busybox" 2>/dev/null | grep -q 'statically linked' ||
	ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' || die "/bin/busybox is not static (install busybox-static)"

# The kernel's modules, with modules.dep so modprobe finds kvm for kvm_amd.
cp -a "$kbuild"/modinst/lib/modules/* "$root/lib/modules/"
cp "$RKVM_OUT/rkvm.ko" "$root/lib/modules/rkvm.ko"

install -m 0755 "$RKVM_TOP/scripts/vm/init" "$root/init"
install -m 0644 "$RKVM_TOP/scripts/vm/run-suite.sh" "$root/etc/rkvm/run-suite.sh"
install -m 0644 "$RKVM_TOP/scripts/vm/run-nodev.sh" "$root/etc/rkvm/run-nodev.sh"
install -m 0644 "$RKVM_TOP/scripts/vm/bench.sh" "$root/etc/rkvm/bench.sh"
install -m 0644 "$RKVM_TOP/scripts/vm/fuzz.sh" "$root/etc/rkvm/fuzz.sh"
install -m 0644 "$RKVM_TOP/scripts/vm/health.sh" "$root/etc/rkvm/health.sh"

for t in "$RKVM_OUT"/selftests/*; do
	[ -x "$t" ] && install -m 0755 "$t" "$root/selftests/"
done
install -m 0644 "$RKVM_TOP/scripts/vm/kvm-selftests.sh" "$root/etc/rkvm/kvm-selftests.sh"
if [ "$kst" != 0 ]; then
	[ -d "$RKVM_OUT/kvm-selftests" ] || die "no build/kvm-selftests: run scripts/build-kvm-selftests.sh"
	expected=${RKVM_KST_EXPECTED:?RKVM_KST_EXPECTED names the recorded results}
	if [ "$kst" = 1 ]; then
		cp -a "$RKVM_OUT/kvm-selftests" "$root/kvm-selftests"
	else
		for t in $(awk '!/^#/ && NF { print $1 }' "$expected"); do
			[ -f "$RKVM_OUT/kvm-selftests/$t" ] || die "$expected names $t, which is not built"
			install -D -m 0755 "$RKVM_OUT/kvm-selftests/$t" "$root/kvm-selftests/$t"
		done
	fi
	(cd "$root/kvm-selftests" && find . -type f | sed 's|^\./||' | sort) >"$RKVM_OUT/kvm-selftests.list"
	mv "$RKVM_OUT/kvm-selftests.list" "$root/kvm-selftests/list"
	install -m 0644 "$expected" "$root/kvm-selftests/expected"
fi
install -m 0755 "$RKVM_OUT/rkvm" "$root/usr/bin/rkvm"
install -m 0755 "$RKVM_OUT/rkvm-fuzz" "$root/usr/bin/rkvm-fuzz"
for g in "$RKVM_OUT"/guests/*; do
	install -m 0644 "$g" "$root/usr/share/rkvm/guests/"
done
# QEMU as the host has it: the binary, every shared library it loads (and
# the dynamic loader), and the firmware an `-M pc` machine on KVM reads.
qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found (make setup installs it)"
install -D -m 0755 "$qemu" "$root/usr/bin/qemu-system-x86_64"
ldd "$qemu" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
	while read -r lib; do
		install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
	done
for fw in /usr/share/seabios/bios-256k.bin /usr/share/qemu/kvmvapic.bin /usr/share/qemu/linuxboot_dma.bin; do
	[ -f "$fw" ] || die "$fw not found (packages seabios, qemu-system-data)"
	install -D -m 0644 "$(readlink -f "$fw")" "$root$fw"
done

# A Linux guest for VMMs in the VM to boot: the test kernel itself and an
# initramfs of busybox and scripts/vm/guest-init (the `qemu` selftest boots
# it with two vCPUs on the in-kernel irqchip; the `tool` selftest with `rkvm boot`).
guest=$RKVM_OUT/guest-initramfs
rm -rf "$guest"
mkdir -p "$guest"/{bin,proc}
cp /bin/busybox "$guest/bin/busybox"
install -m 0755 "$RKVM_TOP/scripts/vm/guest-init" "$guest/init"
mkdir -p "$root/usr/share/rkvm/linux"
(cd "$guest" && find . -print0 | cpio --null -o -H newc --quiet) >"$root/usr/share/rkvm/linux/initrd"
install -m 0644 "$kbuild/arch/x86/boot/bzImage" "$root/usr/share/rkvm/linux/bzImage"

if [ -n "$extra" ]; then
	[ -d "$extra" ] || die "EXTRA_TESTS=$extra is not a directory"
	for t in "$extra"/*; do
		[ -f "$t" ] && [ -x "$t" ] && install -m 0755 "$t" "$root/extra-tests/"
	done
fi
[ -n "$cmd" ] && printf '%s\n' "$cmd" >"$root/etc/rkvm/cmd"

(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
