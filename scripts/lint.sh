#!/usr/bin/env bash
# Host-side checks that need no VM: formatting of the module (the kernel's
# .rustfmt.toml) and of userspace, userspace clippy with warnings denied,
# and userspace unit tests. (The module itself is built with CLIPPY=1 and
# warnings as errors by build-module.sh.)
. "$(dirname "$0")/lib.sh"

src=$(kernel_src_dir)
rustfmt --edition 2021 --config-path "$src/.rustfmt.toml" --check "$RKVM_TOP/module/rkvm_main.rs" ||
	die "module/ is not rustfmt-formatted: run rustfmt --config-path $src/.rustfmt.toml module/rkvm_main.rs"

# Every unsafe block of the module lives in module/sys/, except those the
# README's conventions name, for the reason given there: a new one elsewhere
# (or one more in those files) fails here.
allowed="module/svm/mod.rs:5 module/svm/vcpu.rs:3 module/vm.rs:1 module/vmx/mod.rs:2 module/vmx/vcpu.rs:7"
found=$(cd "$RKVM_TOP" && grep -rc --include='*.rs' -E '\bunsafe \{' module | grep -v '^module/sys/' |
	grep -v ':0$' | sort | tr '\n' ' ' | sed 's/ $//')
[ "$found" = "$allowed" ] ||
	die "unsafe blocks outside module/sys/ are [$found], the conventions allow [$allowed]: move the new one into sys/ behind a safe function (README, Conventions)"

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
