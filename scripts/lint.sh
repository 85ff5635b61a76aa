#!/usr/bin/env bash
# Host-side checks that need no VM: formatting of the module (the kernel's
# .rustfmt.toml) and of userspace, userspace clippy with warnings denied,
# and userspace unit tests. (The module itself is built with CLIPPY=1 and
# warnings as errors by build-module.sh.)
. "$(dirname "$0")/lib.sh"

src=$(kernel_src_dir)
rustfmt --edition 2021 --config-path "$src/.rustfmt.toml" --check "$RKVM_TOP/module/rkvm_main.rs" ||
	die "module/ is not rustfmt-formatted: run rustfmt --config-path $src/.rustfmt.toml module/rkvm_main.rs"

cd "$RKVM_TOP/userspace"
cargo fmt --all --check || die "userspace/ or selftests/ is not formatted: run cargo fmt in userspace/"
# The Rust demo guest is built by scripts/build-guests.sh, not cargo.
rustfmt --edition 2024 --check guests/primes.rs || die "userspace/guests/primes.rs is not formatted: run rustfmt --edition 2024 on it"
run_logged "$RKVM_LOGS/userspace-clippy.log" "cargo clippy (userspace)" \
	cargo clippy --release --workspace --all-targets --locked -- -D warnings
# Unit tests run on the host (they need no device).
log=$RKVM_LOGS/userspace-test.log
if ! cargo test --release --workspace --locked >"$log" 2>&1; then
	grep -E '^(test .* FAILED|failures:|---- )' "$log" | head -n 40 >&2 || true
	die "userspace unit tests failed; log: $log"
fi
passed=$(awk '/^test result:/ { n += $4 } END { print n + 0 }' "$log")
say "userspace unit tests: $passed passed"
say "lint and unit tests passed"
