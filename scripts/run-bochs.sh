#!/usr/bin/env bash
# Boots the test kernel in Bochs, which emulates Intel VMX (with EPT, VPID
# and unrestricted guest) and, with the `zambezi` CPU model, AMD SVM with
# next-RIP save (which QEMU's emulation lacks). Same interface as
# run-vm.sh; `make run VMX=1` uses it.
#
# Usage: run-bochs.sh INITRAMFS MODE [LOG]
#   MODE check, nodev, cmd: as run-vm.sh (console to stdout and LOG).
#   MODE shell: interactive console on this terminal (Bochs's serial port
#               in "term" mode on our tty); needs a terminal.
# Environment: RKVM_BOCHS_CPU (default corei7_haswell_4770; zambezi for
# SVM), RKVM_BOCHS_CPUS (how many, default 2, as QEMU's -smp 2), RKVM_MEM
# (MiB, default 1024), RKVM_VM_TIMEOUT (seconds, default 2700: the whole
# suite takes about 20 minutes here), and what the suite runs as for
# run-vm.sh (RKVM_SUITE_TESTS, RKVM_SUITE=kvm-selftests...: lib.sh's
# suite_kernel_args).
#
# Pitfalls (../shared/PLATFORM.md): Debian's Bochs has no headless display
# but rfb with timeout=0 works; it is built with its debugger and waits at
# a prompt unless told to continue (`-rc` with `c`); it powers off with exit
# status 1 ("ACPI control: soft power off"), which is success here; its UART
# runs at real speed, so the kernel boots with loglevel=4. On a host without
# a sound card its ALSA output crashes it at start ("buffer overflow
# detected"): the sound driver is the dummy one.
. "$(dirname "$0")/lib.sh"

initrd=${1:?usage: run-bochs.sh INITRAMFS MODE [LOG]}
mode=${2:?usage: run-bochs.sh INITRAMFS MODE [LOG]}
log=${3:-}
kernel=$(kernel_build_dir)/arch/x86/boot/bzImage
[ -f "$kernel" ] || die "no test kernel at $kernel: run make first"
if [ "$mode" = shell ]; then
	tty=$(tty) || die "make run VMX=1 without CMD needs a terminal (or use CMD='...')"
fi
command -v bochs >/dev/null || die "bochs not installed: run scripts/setup-host.sh"

cpu=${RKVM_BOCHS_CPU:-corei7_haswell_4770}
# RKVM_BOCHS_WORK: the boot's own directory (check.sh runs two Bochs boots
# at once, each in its own).
work=${RKVM_BOCHS_WORK:-$RKVM_OUT/bochs}
rm -rf "$work"
mkdir -p "$work/iso/isolinux"

# The kernel command line: as run-vm.sh's, quieter (the UART is slow).
# rkvm_drain: init waits that long before powering off, so the slow UART
# (9600 baud, about 1 KB a second of the emulated clock) gets its last
# lines out: `make bench VMX=1` ends with two tables, about 3 KB, and 2 s
# cut the last of them off.
append="console=ttyS0 panic=-1 rkvm_mode=${mode/cmd/shell} rkvm_emulator=bochs rkvm_drain=6 loglevel=4"
[ "$mode" = check ] || [ "$mode" = nodev ] && append="${append/loglevel=4/loglevel=1}"
# What the suite runs (lib.sh, suite_kernel_args).
append="$append$(suite_kernel_args)"

# A CD image booted by ISOLINUX: the kernel and the initramfs, one entry.
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$work/iso/isolinux/"
cp "$kernel" "$work/iso/bzImage"
cp "$initrd" "$work/iso/initrd.cpio"
cat >"$work/iso/isolinux/isolinux.cfg" <<EOF
DEFAULT rkvm
PROMPT 0
TIMEOUT 0
LABEL rkvm
  KERNEL /bzImage
  APPEND initrd=/initrd.cpio $append
EOF
run_logged "$RKVM_LOGS/xorriso.log" "xorriso" \
	xorriso -as mkisofs -quiet -o "$work/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
	-no-emul-boot -boot-load-size 4 -boot-info-table "$work/iso"

cat >"$work/bochsrc" <<EOF
megs: ${RKVM_MEM:-1024}
cpu: model=$cpu, count=${RKVM_BOCHS_CPUS:-2}, ips=200000000
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
ata0-master: type=cdrom, path=$work/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, $([ "$mode" = shell ] && echo "mode=term, dev=$tty" || echo "mode=file, dev=$work/console.log")
display_library: rfb, options="timeout=0"
sound: waveoutdrv=dummy
clock: sync=none, time0=local
log: $work/bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
EOF
echo c >"$work/continue"

if [ "$mode" = shell ]; then
	# The serial port is this terminal: Bochs reads and writes it directly.
	say "Bochs is starting (the kernel takes about 10 s to boot); poweroff -f leaves"
	set +e
	bochs -q -f "$work/bochsrc" -rc "$work/continue" >"$work/bochs.out" 2>&1
	status=$?
	set -e
	stty sane 2>/dev/null || true
	[ "$status" = 1 ] && exit 0
	exit "$status"
fi

# Bochs writes the console to a file: follow it on stdout while it runs.
: >"$work/console.log"
tail -n +1 -f "$work/console.log" &
follower=$!
set +e
timeout --foreground "${RKVM_VM_TIMEOUT:-2700}" bochs -q -f "$work/bochsrc" -rc "$work/continue" \
	</dev/null >"$work/bochs.out" 2>&1 &
vm=$!
# The suite: a console silent too long stops the VM (watch_silence, lib.sh).
watchdog=
if [ "$mode" = check ]; then
	watch_silence "$vm" "$work/console.log" &
	watchdog=$!
fi
wait "$vm"
status=$?
set -e
[ -n "$watchdog" ] && { kill "$watchdog" 2>/dev/null || true; wait "$watchdog" 2>/dev/null || true; }
sleep 1
kill "$follower" 2>/dev/null || true
wait "$follower" 2>/dev/null || true
[ -n "$log" ] && cp "$work/console.log" "$log"
if [ -e "$work/console.log.silent" ]; then
	echo "rkvm: Bochs stopped: its console was silent for ${RKVM_VM_SILENCE:-900} s" >&2
	exit 124
fi
# A soft power-off ends Bochs with status 1; anything else is a failure.
if [ "$status" = 1 ] && grep -q "ACPI control: soft power off" "$work/bochs.out" "$work/bochs.log" 2>/dev/null; then
	exit 0
fi
echo "rkvm: Bochs ended with status $status (its output: $work/bochs.out, log: $work/bochs.log)" >&2
exit "$status"
