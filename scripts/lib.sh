# shellcheck shell=bash
# Common settings and helpers for rkvm's scripts. Sourced, never executed.
#
# Everything that is downloaded or built outside the checkout lives under
# $RKVM_CACHE, keyed by version and configuration, so that a second run on the
# same machine reuses it.

set -euo pipefail

RKVM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RKVM_CACHE=${RKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rkvm}

# The kernel we build against: Debian's linux-source package. The pinned
# version is tried first; if the archive no longer carries it, the newest
# 7.3.x is used and the scripts say so.
KERNEL_SERIES=7.3
KERNEL_PKG=linux-source-$KERNEL_SERIES
KERNEL_PIN=${RKVM_KERNEL_PIN:-7.3.4-1~bpo13+1}
KERNEL_SUITE=trixie-backports

# bindgen for the kernel's Rust build: pinned, built from crates.io.
BINDGEN_VERSION=0.73.2
BINDGEN_ROOT=$RKVM_CACHE/tools/bindgen-$BINDGEN_VERSION
BINDGEN=$BINDGEN_ROOT/bin/bindgen

# The kernel's Rust must be built by Debian's rustc-web (it ships the matching
# library source); rustup's compiler on PATH is for userspace only.
KRUSTC=/usr/bin/rustc
KRUSTDOC=/usr/bin/rustdoc
KCLIPPY=/usr/bin/clippy-driver
LIBCLANG_PATH=/usr/lib/llvm-19/lib
export LIBCLANG_PATH

RKVM_LOGS=$RKVM_CACHE/logs
mkdir -p "$RKVM_CACHE" "$RKVM_LOGS"

# The directory under the checkout where per-checkout outputs go (module,
# test binaries, initramfs); the kernel itself is in the cache.
RKVM_OUT=${RKVM_OUT:-$RKVM_TOP/build}

say() { printf 'rkvm: %s\n' "$*" >&2; }
# ver_ge A B: whether version A is B or newer.
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }
die() { printf 'rkvm: error: %s\n' "$*" >&2; exit 1; }

# run_logged LOG DESCRIPTION CMD...: runs CMD with its output in LOG and, on
# failure, prints the last lines and the log's path.
run_logged() {
	local log=$1 what=$2
	shift 2
	if ! "$@" >"$log" 2>&1; then
		tail -n 30 "$log" >&2 || true
		die "$what failed; full log: $log"
	fi
}

# watch_silence PID FILE: stops the VM whose `timeout` process is PID
# (it passes the signal on to the emulator) once FILE, its console, has
# not grown for RKVM_VM_SILENCE seconds (default 900), and then creates
# FILE.silent. In check mode the suite prints a line before every program
# and each program has a 600 s limit inside the VM, so a console silent
# for longer means a wedged test VM (its CPUs stuck, no timer firing):
# waiting for the whole boot's limit would only spend CI's time budget.
watch_silence() {
	local pid=$1 file=$2 limit=${RKVM_VM_SILENCE:-900} size last=-1 quiet=0
	while kill -0 "$pid" 2>/dev/null; do
		sleep 10
		size=$(stat -c %s "$file" 2>/dev/null || echo 0)
		if [ "$size" = "$last" ]; then quiet=$((quiet + 10)); else quiet=0 last=$size; fi
		if [ "$quiet" -ge "$limit" ]; then
			say "the test VM's console has been silent for $limit s: stopping it (RKVM_VM_SILENCE)"
			: >"$file.silent"
			kill "$pid" 2>/dev/null
			return 0
		fi
	done
}

# RKVM_KASAN=1 selects the KASAN variant of the test kernel: the extra
# config fragment kconfig/kasan.config, built with clang (LLVM=-19), which
# the kernel requires for KASAN together with Rust. A separate cache entry.
RKVM_KASAN=${RKVM_KASAN:-0}
kernel_fragments() {
	echo "$RKVM_TOP/kconfig/rkvm.config"
	[ "$RKVM_KASAN" = 1 ] && echo "$RKVM_TOP/kconfig/kasan.config"
	return 0
}

# The variables every kernel or module build needs for its Rust part.
kernel_make_vars() {
	printf '%s\n' ARCH=x86_64 "RUSTC=$KRUSTC" "HOSTRUSTC=$KRUSTC" \
		"RUSTDOC=$KRUSTDOC" "CLIPPY_DRIVER=$KCLIPPY" "BINDGEN=$BINDGEN"
	[ "$RKVM_KASAN" = 1 ] && echo LLVM=-19
	return 0
}

# Where the selected kernel source and build live. These files are written
# by fetch-kernel.sh and build-kernel.sh.
kernel_version_file() { echo "$RKVM_CACHE/kernel-version"; }
kernel_version() {
	local f
	f=$(kernel_version_file)
	[ -s "$f" ] || die "no kernel source yet: run scripts/fetch-kernel.sh (or make)"
	cat "$f"
}
kernel_src_dir() { echo "$RKVM_CACHE/src/linux-$(kernel_version)"; }

# The configuration hash keys the build directory: kernel version, the
# config fragment and the compilers that build it.
kernel_config_hash() {
	{
		kernel_version
		kernel_fragments | xargs cat
		"$KRUSTC" --version
		if [ "$RKVM_KASAN" = 1 ]; then clang-19 --version | head -n 1; else gcc --version | head -n 1; fi
		echo "bindgen $BINDGEN_VERSION"
	} | sha256sum | cut -c1-12
}
kernel_build_dir() { echo "$RKVM_CACHE/build/linux-$(kernel_version)-$(kernel_config_hash)"; }

# suite_kernel_args: the kernel parameters that tell the test VM's init
# what to run, from the environment, for run-vm.sh and run-bochs.sh alike.
# RKVM_SUITE_TESTS="a b": the suite runs only those programs.
# RKVM_SUITE=kvm-selftests: check mode runs Linux's KVM selftests
# (scripts/vm/kvm-selftests.sh; RKVM_KST_KVM=1 adds KVM's column,
# RKVM_KST_TESTS="x86/a b" runs only those, RKVM_KST_TIMEOUT per program,
# RKVM_KST_XFAIL_TIMEOUT for one rkvm is not recorded as passing).
# RKVM_KVM_RECORDED="a b": KVM's column skips these (scripts/vm/run-suite.sh).
suite_kernel_args() {
	local a=""
	[ -n "${RKVM_SUITE_TESTS:-}" ] && a="$a rkvm_tests=${RKVM_SUITE_TESTS// /,}"
	[ -n "${RKVM_SUITE:-}" ] && a="$a rkvm_suite=$RKVM_SUITE"
	[ -n "${RKVM_KVM_RECORDED:-}" ] && a="$a rkvm_kvm_recorded=${RKVM_KVM_RECORDED// /,}"
	[ "${RKVM_KST_KVM:-0}" = 1 ] && a="$a rkvm_kst_kvm=1"
	[ -n "${RKVM_KST_TESTS:-}" ] && a="$a rkvm_kst_tests=${RKVM_KST_TESTS// /,}"
	[ -n "${RKVM_KST_TIMEOUT:-}" ] && a="$a rkvm_kst_timeout=$RKVM_KST_TIMEOUT"
	[ -n "${RKVM_KST_XFAIL_TIMEOUT:-}" ] && a="$a rkvm_kst_xfail_timeout=$RKVM_KST_XFAIL_TIMEOUT"
	echo "$a"
}
