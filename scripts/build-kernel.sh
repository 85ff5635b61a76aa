#!/usr/bin/env bash
# Configures and builds the test kernel (bzImage and the in-tree modules,
# among them the real KVM) in the cache, keyed by kernel version and config
# hash. A build that already completed is reused.
. "$(dirname "$0")/lib.sh"

src=$(kernel_src_dir)
out=$(kernel_build_dir)
stamp=$out/.rkvm-built
# Logs are per build (the KASAN variant has its own).
logs=$RKVM_LOGS/$(basename "$out")
if [ -f "$stamp" ]; then
	say "kernel $(kernel_version) already built in $out"
	exit 0
fi

# The toolchain against this tree's own minimums (scripts/min-tool-version.sh),
# before anything is built.
need_rustc=$("$src/scripts/min-tool-version.sh" rustc)
need_bindgen=$("$src/scripts/min-tool-version.sh" bindgen)
have_rustc=$("$KRUSTC" --version | awk '{ print $2 }')
have_bindgen=$("$BINDGEN" --version | awk '{ print $2 }')
ver_ge "$have_rustc" "$need_rustc" ||
	die "$KRUSTC is $have_rustc; this kernel needs rustc $need_rustc or newer (scripts/min-tool-version.sh)"
ver_ge "$have_bindgen" "$need_bindgen" ||
	die "$BINDGEN is $have_bindgen; this kernel needs bindgen $need_bindgen or newer"
if [ "$RKVM_KASAN" = 1 ]; then
	need_llvm=$("$src/scripts/min-tool-version.sh" llvm)
	have_llvm=$(clang-19 --version | sed -n 's/.*clang version \([0-9.]*\).*/\1/p' | head -n 1)
	ver_ge "$have_llvm" "$need_llvm" || die "clang-19 is $have_llvm; this kernel needs LLVM $need_llvm or newer"
fi

mapfile -t mk < <(kernel_make_vars)
mkdir -p "$out"
mkdir -p "$logs"
log=$logs/config.log
: >"$log"
kmake() { make -C "$src" O="$out" "${mk[@]}" "$@" >>"$log" 2>&1; }

say "configuring kernel $(kernel_version) in $out"
kmake rustavailable || { tail -n 20 "$log" >&2; die "the kernel's Rust toolchain check failed; log: $log"; }
kmake tinyconfig || die "make tinyconfig failed; log: $log"
mapfile -t fragments < <(kernel_fragments)
(cd "$out" && ARCH=x86_64 "$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" \
	"${fragments[@]}") >>"$log" 2>&1 || die "merge_config.sh failed; log: $log"
kmake olddefconfig || die "make olddefconfig failed; log: $log"

# Dependencies can silently drop options: every line must have survived.
dropped=()
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*) grep -qxF "$line" "$out/.config" || dropped+=("$line") ;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }
		opt=${opt%% *}
		grep -q "^$opt=" "$out/.config" && dropped+=("$line")
		;;
	esac
done < <(kernel_fragments | xargs cat)
[ ${#dropped[@]} -eq 0 ] || die "config lines that did not survive olddefconfig: ${dropped[*]}"

jobs=${RKVM_JOBS:-$(nproc)}
if [ "$RKVM_KASAN" = 1 ]; then about="about 9 minutes on 2 cores (clang, KASAN)"; else about="about 6 minutes on 2 cores"; fi
say "building kernel $(kernel_version) with -j$jobs: $about (log: $logs/build.log)"
start=$(date +%s)
run_logged "$logs/build.log" "kernel build" \
	make -C "$src" O="$out" "${mk[@]}" -j"$jobs" bzImage modules
rm -rf "$out/modinst"
run_logged "$logs/modules-install.log" "kernel modules_install" \
	make -C "$src" O="$out" "${mk[@]}" INSTALL_MOD_PATH="$out/modinst" INSTALL_MOD_STRIP=1 \
	DEPMOD=/sbin/depmod modules_install
say "kernel built in $(($(date +%s) - start)) s"
touch "$stamp"
