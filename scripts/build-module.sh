#!/usr/bin/env bash
# Builds rkvm.ko against the cached test kernel. The KVM ABI bindings are
# generated first from that kernel's headers (scripts/gen-uapi.sh).
. "$(dirname "$0")/lib.sh"

mapfile -t mk < <(kernel_make_vars)
kbuild=$(kernel_build_dir)
[ -f "$kbuild/.rkvm-built" ] || die "the test kernel is not built yet: run scripts/build-kernel.sh (or make)"

"$RKVM_TOP/scripts/gen-uapi.sh" "$RKVM_OUT/gen/kvm_uapi.rs"
export RKVM_UAPI_RS=$RKVM_OUT/gen/kvm_uapi.rs

# Always with clippy (the kernel's own lint set) and W=1: every warning is
# an error below. RKVM_CLIPPY=0 skips clippy for a faster edit loop.
extra=(W=1)
[ "${RKVM_CLIPPY:-1}" = 1 ] && extra+=(CLIPPY=1)
log=$RKVM_LOGS/module-build.log
if ! make -C "$kbuild" M="$RKVM_TOP" "${mk[@]}" "${extra[@]}" -j"$(nproc)" modules >"$log" 2>&1; then
	grep -E '^(error|warning)|^ERROR: |: error: |^ *--> |^[0-9 ]+\||^ *= ' "$log" | head -n 80 >&2 || true
	die "module build failed; full log: $log"
fi
# Rust warnings start their line; C warnings (helpers.c, with W=1) name
# their file and line; the assembler's (vmexit.S) say "Warning"; objtool's
# (which checks the world switches' and vmexit.S's control flow and
# annotations) name the object.
warn='^warning|\.[chS]:[0-9]+:([0-9]+:)? ([Ww]arning|[Ee]rror):|: (warning|error): objtool:'
if grep -Eq "$warn" "$log"; then
	grep -E "$warn|^ *--> " "$log" >&2
	# Kbuild would call the objects up to date next time, and that build
	# would pass without a word: make it compile (and warn) again.
	rm -f "$RKVM_TOP"/module/*.o "$RKVM_TOP"/module/rkvm.ko
	die "module build has warnings (treated as errors); full log: $log"
fi
mkdir -p "$RKVM_OUT"
cp "$RKVM_TOP/module/rkvm.ko" "$RKVM_OUT/rkvm.ko"
say "built $RKVM_OUT/rkvm.ko"
