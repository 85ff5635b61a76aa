#!/usr/bin/env bash
# Builds the userspace workspace (static binaries), collects the selftest
# programs into build/selftests/, the rkvm tool into build/rkvm and the
# fuzzer into build/rkvm-fuzz, and
# builds the demo guests into build/guests/.
. "$(dirname "$0")/lib.sh"

"$RKVM_TOP/scripts/gen-uapi.sh" "$RKVM_OUT/gen/kvm_uapi.rs"
cd "$RKVM_TOP/userspace"
log=$RKVM_LOGS/userspace-build.log
run_logged "$log" "cargo build of userspace/" cargo build --release --workspace --locked

# Every binary target of the selftests package is one selftest program.
bins=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
for p in meta["packages"]:
    if p["name"] == "rkvm-selftests":
        for t in p["targets"]:
            if "bin" in t["kind"]:
                print(t["name"])
')
[ -n "$bins" ] || die "no selftest binaries found in the rkvm-selftests package"
rm -rf "$RKVM_OUT/selftests"
mkdir -p "$RKVM_OUT/selftests"
for b in $bins; do
	cp "target/release/$b" "$RKVM_OUT/selftests/$b"
done
cmp -s target/release/rkvm "$RKVM_OUT/rkvm" || cp target/release/rkvm "$RKVM_OUT/rkvm"
cmp -s target/release/rkvm-fuzz "$RKVM_OUT/rkvm-fuzz" || cp target/release/rkvm-fuzz "$RKVM_OUT/rkvm-fuzz"
"$RKVM_TOP/scripts/build-guests.sh"
say "built userspace; selftests: $(echo $bins); the rkvm tool; the fuzzer"
