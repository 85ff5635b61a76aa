# rkvm: the two commands of the README are `make run` and `make check`.
# Every step is a script under scripts/ that does nothing when its output is
# already there, so a second run only rebuilds what changed (the module,
# the test programs, the initramfs) and boots the VM.
#
#   make            set up the host, build the kernel, rkvm.ko and userspace
#   make run        ... then boot the test VM with rkvm loaded and a shell
#   make run CMD='...'   ... run one command in the VM, exit with its status
#   make run VMX=1 CMD='...'   ... the same in Bochs (Intel VMX; with
#                   RKVM_BOCHS_CPU=zambezi, AMD SVM with next-RIP save)
#   make check      ... then run every selftest in the VMs (rkvm and KVM):
#                   QEMU for AMD SVM, then Bochs for Intel VMX
#   make check-svm  ... only the QEMU half (SVM); make check-vmx only the
#                   Bochs half (VMX, then SVM with next-RIP save)
#   make check-kvm-selftests  ... only Linux's own KVM selftests (QEMU, SVM;
#                   part of make check); make check-kvm-selftests-vmx the
#                   subset Bochs runs (VMX; part of make check and check-vmx)
#   make check EXTRA_TESTS=DIR   ... plus every executable in DIR
#   make check RKVM_KASAN=1   ... the same on the KASAN test kernel (CI runs both)
#   make bench      rkvm bench on rkvm and on KVM in one VM boot, side by side
#   make bench VMX=1   ... the same in Bochs (Intel VMX, against kvm_intel)
#   make fuzz       rkvm-fuzz on rkvm in the test VM (RKVM_FUZZ_SECONDS, RKVM_FUZZ_SEED,
#                   RKVM_FUZZ_KVM=1 for KVM too in the same boot; RKVM_KASAN=1)
#   make lint       formatting, userspace clippy and unit tests (part of check)
#   make clean      remove build/ (the kernel cache stays, see README)

SHELL := /bin/bash
S := scripts

.PHONY: all setup kernel module userspace lint run check check-svm check-vmx check-kvm-selftests check-kvm-selftests-vmx bench fuzz clean

# RKVM_KASAN=1 (make check RKVM_KASAN=1) selects the KASAN test kernel.
export RKVM_KASAN
# VMX=1 (make run VMX=1) boots Bochs instead of QEMU.
export VMX

all: module userspace

setup:
	@$(S)/setup-host.sh

kernel: setup
	@$(S)/fetch-kernel.sh
	@$(S)/build-kernel.sh

module: kernel
	@$(S)/build-module.sh

userspace: kernel
	@$(S)/build-userspace.sh

run: all
	@$(S)/run.sh $(if $(CMD),'$(subst ','\'',$(CMD))')

lint: userspace
	@$(S)/lint.sh

check: all lint
	@$(S)/check.sh $(EXTRA_TESTS)

check-svm: all lint
	@RKVM_CHECK=svm $(S)/check.sh $(EXTRA_TESTS)

check-vmx: all lint
	@RKVM_CHECK=vmx $(S)/check.sh $(EXTRA_TESTS)

# RKVM_KST_KVM=1 runs KVM's column too; RKVM_KST_TESTS="x86/a b" only those.
export RKVM_KST_KVM RKVM_KST_TESTS RKVM_KST_TIMEOUT RKVM_KST_XFAIL_TIMEOUT
check-kvm-selftests: all lint
	@RKVM_CHECK=kvm-selftests $(S)/check.sh

check-kvm-selftests-vmx: all lint
	@RKVM_CHECK=kvm-selftests-vmx $(S)/check.sh

bench: all
	@$(S)/bench.sh

# RKVM_FUZZ_SECONDS, RKVM_FUZZ_SEED, RKVM_FUZZ_KVM: see scripts/fuzz.sh.
export RKVM_FUZZ_SECONDS RKVM_FUZZ_SEED RKVM_FUZZ_KVM
fuzz: all
	@$(S)/fuzz.sh

clean:
	rm -rf build
	find module -name '*.o' -o -name '*.ko' -o -name '*.cmd' -o -name '*.mod*' -o -name '.*.cmd' | xargs rm -f
