#!/usr/bin/env bash
# Builds the demo guests of userspace/guests/ into build/guests/: the
# assembly ones as flat binaries (64-bit ones linked at rkvm's default load
# address 0x100000, the real-mode one at 0), and primes.rs, a no_std Rust
# program, as a static ELF executable. Only the host's toolchain is used:
# gcc/as and ld from binutils, and rustc for x86_64-unknown-linux-gnu.
. "$(dirname "$0")/lib.sh"

src=$RKVM_TOP/userspace/guests
out=$RKVM_OUT/guests
tmp=$RKVM_OUT/guests.tmp
rm -rf "$tmp"
mkdir -p "$tmp" "$out"
log=$RKVM_LOGS/guests-build.log
: >"$log"

flat() { # flat NAME LOAD-ADDRESS
	run_logged "$log" "assembling guest $1" gcc -c -o "$tmp/$1.o" "$src/$1.S"
	run_logged "$log" "linking guest $1" ld -m elf_x86_64 --oformat binary -Ttext "$2" -e _start \
		-o "$tmp/$1.bin" "$tmp/$1.o"
}
flat hello 0x100000
flat mmio 0x100000
flat irq 0x100000
flat smp 0x100000
flat hello-real 0

# The Rust guest: a static library (core included), linked without libc.
run_logged "$log" "compiling guest primes.rs" rustc --edition 2024 -O --crate-type staticlib \
	--crate-name primes --target x86_64-unknown-linux-gnu -C panic=abort \
	-C relocation-model=static -C debuginfo=0 -o "$tmp/libprimes.a" "$src/primes.rs"
run_logged "$log" "linking guest primes" ld -m elf_x86_64 -static -nostdlib --gc-sections -s \
	--no-warn-rwx-segments -u _start -T "$src/guest.ld" -o "$tmp/primes.elf" "$tmp/libprimes.a"

for f in "$tmp"/*.bin "$tmp"/*.elf; do
	cmp -s "$f" "$out/${f##*/}" || cp "$f" "$out/"
done
rm -rf "$tmp"
say "built guests: $(cd "$out" && echo *)"
