#!/usr/bin/env bash
# Installs everything the host needs to build rkvm and its test kernel and to
# run the test VM: Debian packages (apt), and bindgen from crates.io (cargo).
# Idempotent: a second run finds everything in place and returns quickly.
. "$(dirname "$0")/lib.sh"

# Debian packages. rustc-web, rust-web-src and libclang-19-dev come from
# bookworm-updates; the rest from bookworm. Bochs is for the VMX backend.
PACKAGES=(
	rustc-web rust-web-src rust-web-clippy libclang-19-dev
	gcc make bc flex bison libelf-dev libssl-dev cpio kmod pahole rsync xz-utils
	busybox-static qemu-system-x86
	bochs bochsbios vgabios isolinux syslinux-common xorriso
)
# The KASAN variant of the test kernel is built with clang.
[ "$RKVM_KASAN" = 1 ] && PACKAGES+=(clang-19 lld-19 llvm-19)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]}"
	say "installing Debian packages: ${missing[*]}"
	run_logged "$RKVM_LOGS/apt-get-update.log" "apt-get update" apt-get update -q
	run_logged "$RKVM_LOGS/apt-get-install.log" "apt-get install" \
		env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# bindgen, pinned; Debian's is older than the kernel's minimum.
if [ ! -x "$BINDGEN" ]; then
	command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain for userspace (rustup)"
	say "building bindgen-cli $BINDGEN_VERSION from crates.io (a few minutes)"
	run_logged "$RKVM_LOGS/bindgen-install.log" "cargo install bindgen-cli" \
		cargo install --locked --root "$BINDGEN_ROOT" "bindgen-cli@$BINDGEN_VERSION"
fi

# Versions against the kernel's minimums (scripts/min-tool-version.sh in 7.3:
# rustc 1.85, bindgen 0.71.1, libclang 17.0.1). Re-checked against the
# downloaded tree by build-kernel.sh (`make rustavailable`).
rv=$("$KRUSTC" --version | awk '{ print $2 }')
ver_ge "$rv" 1.85.0 || die "$KRUSTC is $rv; the kernel needs rustc 1.85 or newer (Debian's rustc-web)"
bv=$("$BINDGEN" --version | awk '{ print $2 }')
ver_ge "$bv" 0.71.1 || die "$BINDGEN is $bv; the kernel needs bindgen 0.71.1 or newer"
[ -f "$LIBCLANG_PATH/libclang.so" ] || ls "$LIBCLANG_PATH"/libclang-*.so* >/dev/null 2>&1 ||
	die "libclang not found in $LIBCLANG_PATH (install libclang-19-dev)"
[ -d /usr/lib/rustlib/src/rust/library ] || die "Rust library source missing (install rust-web-src)"
say "host tools ready: rustc $rv, bindgen $bv, libclang 19"
