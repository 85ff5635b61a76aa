#!/usr/bin/env bash
# Builds Linux's own KVM selftests (tools/testing/selftests/kvm, x86_64)
# from the test kernel's source, unmodified, as static binaries the test
# VM runs (scripts/vm/kvm-selftests.sh, `make check`'s kvm-selftests
# boot). Cached outside the checkout by kernel version and flags, like the
# kernel: a second run does nothing.
#
# Two changes of build flags, none of the source:
# - The selftests' Makefile adds -march=x86-64-v2 whenever the compiler
#   knows it; the test VM's CPU (QEMU's qemu64, Bochs's models) lacks
#   parts of v2 (POPCNT on qemu64), so the binaries would die of #UD.
#   TARGET_ARCH comes after CFLAGS on every compile and link line, and the
#   last -march wins: -march=x86-64 there.
# - -static (also through TARGET_ARCH, which every link line has): the
#   initramfs has no C library.
# The kernel headers come from `make headers_install` into the cache (the
# source tree stays clean: the kernel builds out of tree from it).
. "$(dirname "$0")/lib.sh"

src=$(kernel_src_dir)
flags="-march=x86-64 -static"
key=$(printf '%s\n' "$(kernel_version)" "$flags" "$(gcc --version | head -n 1)" | sha256sum | cut -c1-12)
out=$RKVM_CACHE/kvm-selftests/$(kernel_version)-$key
link=$RKVM_OUT/kvm-selftests

if [ ! -f "$out/.done" ]; then
	say "building Linux's KVM selftests (x86_64, static) into $out: about 3 minutes on 2 cores"
	rm -rf "$out"
	mkdir -p "$out/hdr" "$out/obj" "$out/bin"
	log=$RKVM_LOGS/kvm-selftests-build.log
	run_logged "$log" "make headers_install for the KVM selftests" \
		make -C "$src" O="$out/obj" ARCH=x86_64 INSTALL_HDR_PATH="$out/hdr" headers_install
	run_logged "$log.2" "the KVM selftests' build" \
		make -C "$src/tools/testing/selftests/kvm" -j"$(nproc)" ARCH=x86_64 \
		OUTPUT="$out/bin" KHDR_INCLUDES="-isystem $out/hdr/include" TARGET_ARCH="$flags"
	rm -rf "$out/obj"
	touch "$out/.done"
fi

# The programs the x86_64 Makefile lists (TEST_GEN_PROGS_x86), stripped:
# the test VM keeps them in its initramfs.
rm -rf "$link"
mkdir -p "$link"
n=0
while read -r t; do
	[ -x "$out/bin/$t" ] || die "the KVM selftests' build made no $t"
	mkdir -p "$link/$(dirname "$t")"
	strip -o "$link/$t" "$out/bin/$t"
	n=$((n + 1))
done < <(make -s -C "$src/tools/testing/selftests/kvm" ARCH=x86_64 OUTPUT="$out/bin" \
	KHDR_INCLUDES="-isystem $out/hdr/include" TARGET_ARCH="$flags" -f Makefile -f - print-tests <<'EOF'
print-tests:
	@printf '%s\n' $(patsubst $(OUTPUT)/%,%,$(TEST_GEN_PROGS))
EOF
)
say "the KVM selftests: $n programs in $link"
