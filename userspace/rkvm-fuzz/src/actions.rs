//! The actions a worker thread draws from, and the worker's loop.
//!
//! Every action picks its targets in the shared [`World`] under its lock,
//! writes one trace line saying exactly what it is about to do, and then
//! makes its system calls without the lock.

use std::ffi::CString;
use std::fmt::Arguments;
use std::sync::Arc;

use kvm_abi::ioctls as req;
use kvm_abi::sys::{
    kvm_cpuid_entry2, kvm_fpu, kvm_interrupt, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_translation, kvm_userspace_memory_region, kvm_userspace_memory_region2,
};
use nix::errno::Errno;
use x86_modes::Mode;

use crate::guest;
use crate::rng::Rng;
use crate::sys::{self, RunPage};
use crate::trace::Trace;
use crate::world::{Shared, VcpuFd};

/// What a worker thread needs.
pub(crate) struct Worker {
    pub(crate) rng: Rng,
    pub(crate) world: Arc<Shared>,
    pub(crate) trace: Trace,
    pub(crate) device: CString,
    /// This thread's index in the epoch (its trace slot).
    pub(crate) thread: usize,
    pub(crate) epoch: u64,
    pub(crate) step: u64,
    /// Print every action as it happens (the replay mode).
    pub(crate) verbose: bool,
    /// The kernel's id of the thread running the worker (in trace lines).
    tid: i32,
}

/// An action: its name (for the summary) and weight, and what it does.
type Action = (&'static str, u64, fn(&mut Worker));

/// The action table.
const ACTIONS: &[Action] = &[
    ("open", 2, Worker::open_device),
    ("create_vm", 3, Worker::create_vm),
    ("create_vcpu", 4, Worker::create_vcpu),
    ("close", 2, Worker::close_fd),
    ("map", 3, Worker::map_region),
    ("unmap", 2, Worker::unmap_region),
    ("discard", 1, Worker::discard_region),
    ("set_memory_region", 4, Worker::set_memory_region),
    ("guest_slot", 4, Worker::guest_slot),
    ("set_mode", 4, Worker::set_mode),
    ("set_regs", 3, Worker::set_regs),
    ("set_sregs", 3, Worker::set_sregs),
    ("get_state", 2, Worker::get_state),
    ("msrs", 3, Worker::msrs),
    ("set_cpuid", 2, Worker::set_cpuid),
    ("fpu", 2, Worker::fpu),
    ("mp_state", 1, Worker::mp_state),
    ("interrupt", 2, Worker::interrupt),
    ("irqchip", 3, Worker::irqchip),
    ("eventfds", 2, Worker::eventfds),
    ("pit", 2, Worker::pit),
    ("dirty_log", 2, Worker::dirty_log),
    ("run", 10, Worker::run),
    ("mmap_vcpu", 1, Worker::mmap_vcpu),
    ("random_ioctl", 3, Worker::random_ioctl),
    ("scribble", 2, Worker::scribble),
    ("translate", 1, Worker::translate),
    ("fork", 1, Worker::fork),
];

/// Requests that carry an integer argument, safe to send from a forked child.
const FORK_REQUESTS: &[req::Request] = &[
    req::KVM_RUN,
    req::KVM_CREATE_VCPU,
    req::KVM_CHECK_EXTENSION,
    req::KVM_CREATE_VM,
];

/// MSRs worth writing: the syscall and segment-base MSRs, EFER, APIC base,
/// TSC, PAT, kvmclock, SYSENTER, debug control, and a few unknown ones.
const MSRS: &[u32] = &[
    0xc000_0080,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0100,
    0xc000_0101,
    0xc000_0102,
    0xc000_0103,
    0x10,
    0x1b,
    0x277,
    0x11,
    0x12,
    0x174,
    0x175,
    0x176,
    0x1d9,
    0x3a,
    0x48,
    0x49,
    0xc001_0117,
    0xc001_0114,
    0x4b56_4d00,
    0x4b56_4d01,
    0x7d63_5147,
];

impl Worker {
    /// A worker for thread `thread` of `epoch`, seeded with `seed`.
    pub(crate) fn new(
        seed: u64,
        world: Arc<Shared>,
        trace: Trace,
        device: CString,
        thread: usize,
        epoch: u64,
        verbose: bool,
    ) -> Self {
        Self {
            rng: Rng::new(seed),
            world,
            trace,
            device,
            thread,
            epoch,
            step: 0,
            verbose,
            tid: 0,
        }
    }

    /// Runs `steps` actions (or until the supervisor asks to stop), on the
    /// calling thread.
    pub(crate) fn run_steps(&mut self, steps: u64) {
        self.tid = sys::gettid();
        let total: u64 = ACTIONS.iter().map(|a| a.1).sum();
        for step in 0..steps {
            if self.trace.stopping() {
                return;
            }
            self.step = step;
            let mut x = self.rng.below(total);
            for (i, (_, weight, action)) in ACTIONS.iter().enumerate() {
                if x < *weight {
                    action(self);
                    self.trace.count_action(i);
                    break;
                }
                x -= weight;
            }
            self.trace.step_done();
        }
        self.log(format_args!("done"));
    }

    /// The names of the actions, in table order (for the summary).
    pub(crate) fn action_names() -> Vec<&'static str> {
        ACTIONS.iter().map(|a| a.0).collect()
    }

    /// Records what is about to happen.
    fn log(&self, what: Arguments<'_>) {
        let line = format!("{}:{} [{}] {}", self.epoch, self.step, self.tid, what);
        if self.verbose {
            println!("{line}");
        }
        self.trace.record(self.thread, &line);
    }

    fn open_device(&mut self) {
        self.log(format_args!("open {}", self.device.to_string_lossy()));
        if let Ok(fd) = sys::open(&self.device) {
            self.world.lock().systems.push(fd);
        }
    }

    fn create_vm(&mut self) {
        let Some(sys_fd) = self.world.lock().system(&mut self.rng) else {
            return self.open_device();
        };
        let ty = if self.rng.chance(85) {
            0
        } else {
            self.rng.interesting()
        };
        self.log(format_args!("CREATE_VM sys {sys_fd} type {ty:#x}"));
        // SAFETY: `_IO` request: the argument is an integer.
        if let Ok(fd) = unsafe { sys::ioctl(sys_fd, req::KVM_CREATE_VM, ty) } {
            self.world.lock().vms.push(fd);
        }
    }

    fn create_vcpu(&mut self) {
        let Some(vm) = self.world.lock().vm(&mut self.rng) else {
            return self.create_vm();
        };
        let id = if self.rng.chance(85) {
            self.rng.below(8)
        } else {
            self.rng.interesting()
        };
        self.log(format_args!("CREATE_VCPU vm {vm} id {id:#x}"));
        // SAFETY: `_IO` request: the argument is an integer.
        if let Ok(fd) = unsafe { sys::ioctl(vm, req::KVM_CREATE_VCPU, id) } {
            let run = RunPage::map(fd).ok();
            self.world.lock().vcpus.push(VcpuFd { fd, run });
        }
    }

    fn close_fd(&mut self) {
        let Some((kind, fd)) = self.world.lock().take_fd(&mut self.rng) else {
            return;
        };
        self.log(format_args!("close {kind} fd {fd}"));
        sys::close(fd);
    }

    fn map_region(&mut self) {
        let len = match self.rng.below(4) {
            0 => 0x1000,
            1 => 0x2000,
            2 => 0x20_0000,
            _ => 0x40_0000,
        };
        let kind = self.rng.below(3);
        let Ok(addr) = sys::map_guest(len, kind) else {
            return;
        };
        let id = self.world.lock().add_region(addr, len);
        let kind = ["private", "shared", "memfd"][kind as usize % 3];
        self.log(format_args!("region {id} {addr:#x}+{len:#x} {kind}"));
    }

    fn unmap_region(&mut self) {
        let mut w = self.world.lock();
        let Some(r) = w.live_region(&mut self.rng) else {
            return;
        };
        let (off, len, what) = if self.rng.chance(60) || r.len == 0x1000 {
            (0, r.len, "whole")
        } else {
            let pages = r.len / 0x1000;
            let first = self.rng.index(pages);
            let n = 1 + self.rng.index(pages - first);
            (first * 0x1000, n * 0x1000, "part")
        };
        self.log(format_args!(
            "munmap region {} {what} {:#x}+{len:#x}",
            r.id,
            r.addr + off
        ));
        // SAFETY: the range lies inside region `r`, a guest mapping that is
        // live; the world's lock is held, so no scribble writes to it now.
        if unsafe { sys::unmap_guest(r.addr + off, len) }.is_ok() {
            if let Some(x) = w.regions.iter_mut().find(|x| x.id == r.id) {
                x.unmapped = true;
            }
        }
    }

    fn discard_region(&mut self) {
        let Some(r) = self.world.lock().region(&mut self.rng) else {
            return;
        };
        self.log(format_args!("madvise DONTNEED region {}", r.id));
        let _ = sys::discard_guest(r.addr, r.len);
    }

    /// A memory region request with mostly sensible, sometimes wrong, fields.
    fn region_request(&mut self) -> Option<(i32, kvm_userspace_memory_region2)> {
        let w = self.world.lock();
        let vm = w.vm(&mut self.rng)?;
        let region = w.region(&mut self.rng);
        drop(w);
        let r = &mut self.rng;
        let slot = if r.chance(80) {
            r.below(4) as u32
        } else {
            r.interesting() as u32
        };
        let flags = match r.below(6) {
            0 => 2, // KVM_MEM_READONLY
            1 => 1, // KVM_MEM_LOG_DIRTY_PAGES
            2 => r.next() as u32,
            _ => 0,
        };
        let gpa = match r.below(8) {
            0 => 0xa0000,
            1 => 0x20_0000,
            2 => r.interesting() & !0xfff,
            3 => r.interesting(),
            4 => 0x8000_0000_0000,
            _ => 0,
        };
        let (ua, len) = match region {
            Some(reg) if r.chance(85) => {
                let size = if r.chance(70) {
                    reg.len
                } else {
                    r.range(0, reg.len as u64 / 0x1000) as usize * 0x1000
                };
                (reg.addr as u64, size as u64)
            }
            _ => (kvm_abi::raw::KERNEL_ADDRESS, 0x1000 * r.below(4)),
        };
        // Any size at all, but then at a kernel address: a size past the
        // region at a region's address would let the guest write into the
        // fuzzer's own memory beyond it.
        let (ua, len) = if r.chance(10) {
            (kvm_abi::raw::KERNEL_ADDRESS, r.interesting())
        } else {
            (ua, len)
        };
        let m = kvm_userspace_memory_region2 {
            slot,
            flags,
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: ua,
            ..Default::default()
        };
        Some((vm, m))
    }

    fn set_memory_region(&mut self) {
        let Some((vm, m)) = self.region_request() else {
            return;
        };
        let two = self.rng.chance(50);
        let name = if two {
            "SET_USER_MEMORY_REGION2"
        } else {
            "SET_USER_MEMORY_REGION"
        };
        self.log(format_args!(
            "{name} vm {vm} slot {:#x} flags {:#x} gpa {:#x} size {:#x} ua {:#x}",
            m.slot, m.flags, m.guest_phys_addr, m.memory_size, m.userspace_addr
        ));
        if two {
            let mut m = m;
            let _ = sys::ioctl_with(vm, req::KVM_SET_USER_MEMORY_REGION2, &mut m);
        } else {
            let mut one = kvm_userspace_memory_region {
                slot: m.slot,
                flags: m.flags,
                guest_phys_addr: m.guest_phys_addr,
                memory_size: m.memory_size,
                userspace_addr: m.userspace_addr,
            };
            let _ = sys::ioctl_with(vm, req::KVM_SET_USER_MEMORY_REGION, &mut one);
        }
    }

    /// Maps 4 MiB of guest memory holding the GDT, page tables and random
    /// code at the places `x86-modes` expects, and makes it slot 0 (or
    /// another) of a VM at guest-physical 0.
    fn guest_slot(&mut self) {
        let Some(vm) = self.world.lock().vm(&mut self.rng) else {
            return self.create_vm();
        };
        let len = 0x40_0000;
        let Ok(addr) = sys::map_guest(len, self.rng.below(3)) else {
            return;
        };
        let mut w = self.world.lock();
        let id = w.add_region(addr, len);
        let code = guest::code(&mut self.rng, 256);
        let mut idt = vec![0u8; 4096];
        for b in &mut idt {
            *b = self.rng.next() as u8;
        }
        let mut pieces = vec![
            (x86_modes::GDT_GPA, x86_modes::gdt_bytes()),
            (x86_modes::CODE_GPA, code),
        ];
        pieces.extend(x86_modes::page_tables());
        if self.rng.chance(50) {
            pieces.push((x86_modes::IDT_GPA, idt));
        }
        for (gpa, bytes) in pieces {
            // SAFETY: every piece lies below 0x80000, inside the 4 MiB just
            // mapped, which is live (only `unmap_region`, under this same lock,
            // could change that).
            unsafe { sys::write_guest(addr + gpa as usize, &bytes) };
        }
        drop(w);
        let slot = if self.rng.chance(70) {
            0
        } else {
            self.rng.below(4) as u32
        };
        self.log(format_args!(
            "guest slot vm {vm} slot {slot} region {id} {addr:#x}"
        ));
        let mut m = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: len as u64,
            userspace_addr: addr as u64,
        };
        let _ = sys::ioctl_with(vm, req::KVM_SET_USER_MEMORY_REGION, &mut m);
    }

    /// Puts a vCPU into one of the `x86-modes` modes at the guest code.
    fn set_mode(&mut self) {
        let w = self.world.lock();
        let Some(v) = w.vcpu(&mut self.rng) else {
            drop(w);
            return self.create_vcpu();
        };
        let cpuid = w.cpuid.clone();
        drop(w);
        let mode = self.rng.pick(&Mode::ALL).unwrap_or(Mode::Long);
        self.log(format_args!("set mode {mode:?} vcpu {}", v.fd));
        let _ = set_cpuid2(v.fd, &cpuid, cpuid.len());
        let mut s = kvm_sregs::default();
        if sys::ioctl_with(v.fd, req::KVM_GET_SREGS, &mut s).is_err() {
            return;
        }
        // From a clean slate: setup_sregs sets EFER and CR4 only for the modes
        // that need them.
        s.efer = 0;
        s.cr4 = 0;
        x86_modes::setup_sregs(&mut s, mode);
        keep_tr_usable(&mut s);
        let _ = sys::ioctl_with(v.fd, req::KVM_SET_SREGS, &mut s);
        let rip = if matches!(mode, Mode::Real | Mode::Protected16) {
            0
        } else {
            x86_modes::CODE_GPA
        };
        let mut r = kvm_regs {
            rip,
            rsp: x86_modes::STACK_TOP,
            rflags: if self.rng.chance(50) { 0x202 } else { 0x2 },
            rdx: 0x3f8,
            ..Default::default()
        };
        let _ = sys::ioctl_with(v.fd, req::KVM_SET_REGS, &mut r);
    }

    fn set_regs(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        let r = &mut self.rng;
        let mut regs = kvm_regs::default();
        let _ = sys::ioctl_with(v.fd, req::KVM_GET_REGS, &mut regs);
        regs.rip = match r.below(4) {
            0 => 0xfff0,
            1 => x86_modes::CODE_GPA + r.below(256),
            2 => r.interesting(),
            _ => regs.rip,
        };
        regs.rflags = match r.below(3) {
            0 => 0x2,
            1 => 0x202,
            _ => (r.next() & 0x3f_7fd7) | 0x2,
        };
        regs.rax = r.interesting();
        regs.rbx = r.interesting();
        regs.rcx = r.interesting();
        regs.rdx = r.interesting();
        self.log(format_args!(
            "SET_REGS vcpu {} rip {:#x} rflags {:#x}",
            v.fd, regs.rip, regs.rflags
        ));
        let _ = sys::ioctl_with(v.fd, req::KVM_SET_REGS, &mut regs);
    }

    fn set_sregs(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        let mut s = kvm_sregs::default();
        let _ = sys::ioctl_with(v.fd, req::KVM_GET_SREGS, &mut s);
        let r = &mut self.rng;
        // CR0: PE MP EM TS ET NE WP AM NW CD PG, and a reserved bit.
        const CR0: &[u64] = &[
            1,
            2,
            4,
            8,
            0x10,
            0x20,
            1 << 16,
            1 << 18,
            1 << 29,
            1 << 30,
            1 << 31,
            1 << 11,
        ];
        // CR4: VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT UMIP LA57 VMXE OSXSAVE SMEP SMAP PKE.
        const CR4: &[u64] = &[
            1,
            2,
            4,
            8,
            0x10,
            0x20,
            0x40,
            0x80,
            0x100,
            0x200,
            0x400,
            0x800,
            0x1000,
            0x2000,
            1 << 18,
            1 << 20,
            1 << 21,
            1 << 22,
            1 << 28,
        ];
        // EFER: SCE LME LMA NXE SVME FFXSR and a reserved bit.
        const EFER: &[u64] = &[1, 1 << 8, 1 << 10, 1 << 11, 1 << 12, 1 << 14, 1 << 3];
        for _ in 0..r.below(3) {
            s.cr0 ^= r.pick(CR0).unwrap_or(0);
        }
        for _ in 0..r.below(3) {
            s.cr4 ^= r.pick(CR4).unwrap_or(0);
        }
        for _ in 0..r.below(2) {
            s.efer ^= r.pick(EFER).unwrap_or(0);
        }
        if r.chance(20) {
            s.cr3 = r.interesting();
        }
        if r.chance(20) {
            let seg = match r.below(4) {
                0 => &mut s.cs,
                1 => &mut s.ss,
                2 => &mut s.ds,
                _ => &mut s.fs,
            };
            seg.type_ = r.below(16) as u8;
            seg.dpl = r.below(4) as u8;
            seg.db = r.below(2) as u8;
            seg.l = r.below(2) as u8;
            seg.present = u8::from(r.chance(90));
            seg.unusable = u8::from(r.chance(10));
            seg.base = if r.chance(50) {
                seg.base
            } else {
                r.interesting()
            };
        }
        if r.chance(10) {
            s.apic_base = r.interesting();
        }
        if r.chance(10) {
            s.cr8 = r.below(32);
        }
        if r.chance(10) {
            s.interrupt_bitmap[0] = r.next();
        }
        keep_tr_usable(&mut s);
        avoid_qemu_vmexit_hang(&mut s);
        self.log(format_args!(
            "SET_SREGS vcpu {} cr0 {:#x} cr4 {:#x} efer {:#x}",
            v.fd, s.cr0, s.cr4, s.efer
        ));
        let _ = sys::ioctl_with(v.fd, req::KVM_SET_SREGS, &mut s);
    }

    fn get_state(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        self.log(format_args!("GET_REGS+GET_SREGS vcpu {}", v.fd));
        let _ = sys::ioctl_with(v.fd, req::KVM_GET_REGS, &mut kvm_regs::default());
        let _ = sys::ioctl_with(v.fd, req::KVM_GET_SREGS, &mut kvm_sregs::default());
    }

    fn msrs(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        let r = &mut self.rng;
        let n = r.range(1, 8) as usize;
        let mut buf = MsrBuf {
            nmsrs: n as u32,
            pad: 0,
            entries: [kvm_msr_entry::default(); 8],
        };
        for e in buf.entries.iter_mut().take(n) {
            e.index = if r.chance(90) {
                r.pick(MSRS).unwrap_or(0x10)
            } else {
                r.next() as u32
            };
            e.data = r.interesting();
            // EFER.LME could complete the state that hangs QEMU's emulated
            // #VMEXIT (`avoid_qemu_vmexit_hang`); the vCPU's CR0 and CR4 are
            // not known here, so LME is never set through KVM_SET_MSRS.
            if e.index == MSR_EFER {
                e.data &= !EFER_LME;
            }
        }
        let write = r.chance(60);
        let first = buf.entries[0];
        self.log(format_args!(
            "{} vcpu {} n {n} first {:#x}={:#x}",
            if write { "SET_MSRS" } else { "GET_MSRS" },
            v.fd,
            first.index,
            first.data
        ));
        let request = if write {
            req::KVM_SET_MSRS
        } else {
            req::KVM_GET_MSRS
        };
        let _ = sys::ioctl_with(v.fd, request, &mut buf);
    }

    fn set_cpuid(&mut self) {
        let w = self.world.lock();
        let Some(v) = w.vcpu(&mut self.rng) else {
            return;
        };
        let mut cpuid = w.cpuid.clone();
        drop(w);
        let r = &mut self.rng;
        let nent = match r.below(4) {
            0 => MAX_CPUID,
            1 => r.below(MAX_CPUID as u64 + 1) as usize,
            _ => cpuid.len(),
        };
        for e in &mut cpuid {
            if r.chance(5) {
                e.eax ^= 1 << r.below(32);
                e.ecx ^= 1 << r.below(32);
                e.edx ^= 1 << r.below(32);
            }
        }
        self.log(format_args!("SET_CPUID2 vcpu {} nent {nent}", v.fd));
        let _ = set_cpuid2(v.fd, &cpuid, nent);
    }

    fn fpu(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        let mut f = kvm_fpu::default();
        if self.rng.chance(50) {
            self.log(format_args!("GET_FPU vcpu {}", v.fd));
            let _ = sys::ioctl_with(v.fd, req::KVM_GET_FPU, &mut f);
            return;
        }
        let r = &mut self.rng;
        f.fcw = r.next() as u16;
        f.fsw = r.next() as u16;
        f.mxcsr = if r.chance(50) {
            0x1f80
        } else {
            r.next() as u32
        };
        for b in f.xmm.iter_mut().flatten() {
            *b = r.next() as u8;
        }
        self.log(format_args!(
            "SET_FPU vcpu {} fcw {:#x} fsw {:#x}",
            v.fd, f.fcw, f.fsw
        ));
        let _ = sys::ioctl_with(v.fd, req::KVM_SET_FPU, &mut f);
    }

    fn mp_state(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        let mut m = kvm_mp_state {
            mp_state: if self.rng.chance(70) {
                self.rng.below(10) as u32
            } else {
                self.rng.next() as u32
            },
        };
        if self.rng.chance(50) {
            self.log(format_args!("SET_MP_STATE vcpu {} {}", v.fd, m.mp_state));
            let _ = sys::ioctl_with(v.fd, req::KVM_SET_MP_STATE, &mut m);
        } else {
            self.log(format_args!("GET_MP_STATE vcpu {}", v.fd));
            let _ = sys::ioctl_with(v.fd, req::KVM_GET_MP_STATE, &mut m);
        }
    }

    fn interrupt(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        let irq = if self.rng.chance(90) {
            self.rng.below(256) as u32
        } else {
            self.rng.next() as u32
        };
        self.log(format_args!("INTERRUPT vcpu {} irq {irq}", v.fd));
        let _ = sys::ioctl_with(v.fd, req::KVM_INTERRUPT, &mut kvm_interrupt { irq });
    }

    /// The in-kernel irqchip's ioctls: create it, raise and lower lines,
    /// and read, mutate and write back PIC, IOAPIC and local APIC state.
    fn irqchip(&mut self) {
        let r = &mut self.rng;
        match r.below(4) {
            0 => {
                let Some(vm) = self.world.lock().vm(&mut self.rng) else {
                    return;
                };
                self.log(format_args!("CREATE_IRQCHIP vm {vm}"));
                // SAFETY: `_IO` request: the argument is an integer (ignored).
                let _ = unsafe { sys::ioctl(vm, req::KVM_CREATE_IRQCHIP, 0) };
            }
            1 => {
                let Some(vm) = self.world.lock().vm(&mut self.rng) else {
                    return;
                };
                let r = &mut self.rng;
                let gsi = if r.chance(90) {
                    r.below(26) as u32
                } else {
                    r.next() as u32
                };
                let level = if r.chance(80) {
                    r.below(2) as u32
                } else {
                    r.next() as u32
                };
                self.log(format_args!("IRQ_LINE vm {vm} gsi {gsi} level {level}"));
                let _ = sys::ioctl_with(vm, req::KVM_IRQ_LINE, &mut [gsi, level]);
            }
            2 => {
                let Some(vm) = self.world.lock().vm(&mut self.rng) else {
                    return;
                };
                let r = &mut self.rng;
                let chip = if r.chance(90) {
                    r.below(3) as u32
                } else {
                    r.next() as u32
                };
                let mut buf = [0u8; 520];
                buf[..4].copy_from_slice(&chip.to_le_bytes());
                let _ = sys::ioctl_with(vm, req::KVM_GET_IRQCHIP, &mut buf);
                let flips = self.rng.below(8);
                for _ in 0..flips {
                    let i = 8 + self.rng.index(512);
                    buf[i] = self.rng.next() as u8;
                }
                self.log(format_args!(
                    "GET/SET_IRQCHIP vm {vm} chip {chip} ({flips} bytes changed)"
                ));
                let _ = sys::ioctl_with(vm, req::KVM_SET_IRQCHIP, &mut buf);
            }
            _ => {
                let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
                    return;
                };
                let mut page = [0u8; 1024];
                let _ = sys::ioctl_with(v.fd, req::KVM_GET_LAPIC, &mut page);
                let flips = self.rng.below(8);
                for _ in 0..flips {
                    let i = self.rng.index(1024);
                    page[i] = self.rng.next() as u8;
                }
                self.log(format_args!(
                    "GET/SET_LAPIC vcpu {} ({flips} bytes changed)",
                    v.fd
                ));
                let _ = sys::ioctl_with(v.fd, req::KVM_SET_LAPIC, &mut page);
            }
        }
    }

    /// irqfds and ioeventfds: an eventfd assigned (or deassigned) with
    /// random GSIs, flags, addresses and lengths, signalled a few times,
    /// then closed (an irqfd stays, holding it, until the VM goes).
    fn eventfds(&mut self) {
        let Some(vm) = self.world.lock().vm(&mut self.rng) else {
            return;
        };
        let Ok(efd) = kvm_abi::eventfd::EventFd::new() else {
            return;
        };
        let Ok(resample) = kvm_abi::eventfd::EventFd::new() else {
            return;
        };
        let r = &mut self.rng;
        if r.chance(50) {
            let gsi = if r.chance(90) {
                r.below(26) as u32
            } else {
                r.next() as u32
            };
            let flags = if r.chance(80) {
                r.below(4) as u32
            } else {
                r.next() as u32
            };
            // struct kvm_irqfd: fd, gsi, flags, resamplefd, pad[16].
            let mut arg = [0u32; 8];
            arg[0] = efd.raw().cast_unsigned();
            arg[1] = gsi;
            arg[2] = flags;
            arg[3] = resample.raw().cast_unsigned();
            self.log(format_args!("IRQFD vm {vm} gsi {gsi} flags {flags:#x}"));
            let _ = sys::ioctl_with(vm, req::KVM_IRQFD, &mut arg);
        } else {
            let addr = match r.below(3) {
                0 => r.below(0x10000),
                1 => 0xc000_0000 + r.below(0x1000),
                _ => r.next(),
            };
            let len = if r.chance(90) {
                [0, 1, 2, 4, 8][r.index(5)]
            } else {
                r.next() as u32
            };
            let flags = if r.chance(80) {
                r.below(8) as u32
            } else {
                r.next() as u32
            };
            let mut arg = kvm_abi::sys::kvm_ioeventfd {
                datamatch: r.below(256),
                addr,
                len,
                fd: efd.raw(),
                flags,
                pad: [0; 36],
            };
            self.log(format_args!(
                "IOEVENTFD vm {vm} addr {addr:#x} len {len} flags {flags:#x}"
            ));
            let _ = sys::ioctl_with(vm, req::KVM_IOEVENTFD, &mut arg);
        }
        for _ in 0..self.rng.below(4) {
            let _ = efd.signal();
        }
    }

    /// The in-kernel PIT: create it, read, mutate and write back its
    /// state, and switch reinjection.
    fn pit(&mut self) {
        let Some(vm) = self.world.lock().vm(&mut self.rng) else {
            return;
        };
        match self.rng.below(3) {
            0 => {
                let mut config = [0u32; 16];
                config[0] = self.rng.below(2) as u32;
                self.log(format_args!("CREATE_PIT2 vm {vm} flags {}", config[0]));
                let _ = sys::ioctl_with(vm, req::KVM_CREATE_PIT2, &mut config);
            }
            1 => {
                let mut state = [0u8; 112];
                let _ = sys::ioctl_with(vm, req::KVM_GET_PIT2, &mut state);
                let flips = self.rng.below(8);
                for _ in 0..flips {
                    let i = self.rng.index(112);
                    state[i] = self.rng.next() as u8;
                }
                self.log(format_args!("GET/SET_PIT2 vm {vm} ({flips} bytes changed)"));
                let _ = sys::ioctl_with(vm, req::KVM_SET_PIT2, &mut state);
            }
            _ => {
                let mut control = [0u8; 32];
                control[0] = self.rng.below(2) as u8;
                self.log(format_args!("REINJECT_CONTROL vm {vm} {}", control[0]));
                let _ = sys::ioctl_with(vm, req::KVM_REINJECT_CONTROL, &mut control);
            }
        }
    }

    /// Dirty logging: manual protection turned on or off (or refused),
    /// `KVM_GET_DIRTY_LOG` and `KVM_CLEAR_DIRTY_LOG` on any slot number,
    /// with ranges near the rules' edges, into a guarded buffer or to an
    /// address that is no user memory.
    fn dirty_log(&mut self) {
        let Some(vm) = self.world.lock().vm(&mut self.rng) else {
            return;
        };
        let r = &mut self.rng;
        let slot = if r.chance(80) {
            r.below(4) as u32
        } else {
            r.interesting() as u32
        };
        let bitmap = match (r.below(8), sys::bitmap_buffer()) {
            (0, _) | (_, Err(_)) => r.interesting(),
            (_, Ok(addr)) => addr,
        };
        match r.below(3) {
            0 => {
                let args0 = if r.chance(80) { r.below(4) } else { r.next() };
                self.log(format_args!(
                    "ENABLE_CAP MANUAL_DIRTY_LOG_PROTECT2 vm {vm} {args0:#x}"
                ));
                // struct kvm_enable_cap: cap, flags, args[4], pad[64].
                let mut cap = [0u64; 14];
                cap[0] = u64::from(kvm_abi::sys::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
                cap[1] = args0;
                let _ = sys::ioctl_with(vm, req::KVM_ENABLE_CAP, &mut cap);
            }
            1 => {
                self.log(format_args!(
                    "GET_DIRTY_LOG vm {vm} slot {slot:#x} to {bitmap:#x}"
                ));
                // struct kvm_dirty_log: slot, padding, bitmap address.
                let mut log = [u64::from(slot), bitmap];
                let _ = sys::ioctl_with(vm, req::KVM_GET_DIRTY_LOG, &mut log);
            }
            _ => {
                let first = match r.below(4) {
                    0 => r.interesting(),
                    n => (n - 1) * 64,
                };
                let pages = match r.below(4) {
                    0 => r.next() as u32,
                    n => [64, 65, 512][(n - 1) as usize],
                };
                self.log(format_args!(
                    "CLEAR_DIRTY_LOG vm {vm} slot {slot:#x} pages {first}+{pages} from {bitmap:#x}"
                ));
                // struct kvm_clear_dirty_log: slot, num_pages, first_page, bitmap address.
                let mut log = [u64::from(slot) | u64::from(pages) << 32, first, bitmap];
                let _ = sys::ioctl_with(vm, req::KVM_CLEAR_DIRTY_LOG, &mut log);
            }
        }
    }

    /// KVM_RUN until a signal (the epoch's ticker thread sends one every few
    /// milliseconds), an error, or a few exits to user space.
    fn run(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        if let Some(run) = v.run {
            run.set_immediate_exit(self.rng.chance(5));
        }
        self.log(format_args!("KVM_RUN vcpu {}", v.fd));
        for _ in 0..self.rng.range(1, 16) {
            // SAFETY: `_IO` request: the argument is an integer (ignored).
            match unsafe { sys::ioctl(v.fd, req::KVM_RUN, 0) } {
                Ok(_) => {
                    let reason = v.run.map_or(0, RunPage::exit_reason);
                    // Shutdown, failed entry, internal error: the vCPU is done.
                    if matches!(reason, 8 | 9 | 17) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn mmap_vcpu(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        let r = &mut self.rng;
        let off = 0x1000 * r.below(5);
        let len = 0x1000 * r.range(1, 4) as usize;
        let prot = r.below(8) as i32;
        self.log(format_args!(
            "mmap vcpu fd {} off {off:#x} len {len:#x} prot {prot}",
            v.fd
        ));
        let _ = sys::map_and_unmap(v.fd, off, len, prot);
    }

    /// A request on any KVM fd: a KVM request number with a scratch argument,
    /// or an integer request, or a fully random number.
    fn random_ioctl(&mut self) {
        let Some(fd) = self.world.lock().any_fd(&mut self.rng) else {
            return;
        };
        let r = &mut self.rng;
        let nr = r.below(256) as u32;
        let request = match r.below(4) {
            0 => req::io(req::KVMIO, nr),
            1 => req::ioc(
                req::IOC_READ | req::IOC_WRITE,
                req::KVMIO,
                nr,
                r.below(0x400) as usize,
            ),
            2 => req::ioc(r.below(4) as u32, req::KVMIO, nr, r.below(0x4000) as usize),
            _ => r.next() as u32,
        };
        let words: Vec<u64> = (0..64).map(|_| r.interesting()).collect();
        let integer = req::dir(request) == req::IOC_NONE && r.chance(50);
        let value = r.interesting() & 0xffff;
        self.log(format_args!("random ioctl {request:#x} fd {fd}"));
        if integer {
            // Some `_IO` requests (KVM_CREATE_VCPU, KVM_SET_TSS_ADDR...) take an
            // integer: give one.
            // SAFETY: an integer argument is never a pointer for `_IO` requests.
            let _ = unsafe { sys::ioctl(fd, request, value) };
        } else {
            let _ = sys::ioctl_scratch(fd, request, words.into_iter());
        }
    }

    fn scribble(&mut self) {
        let w = self.world.lock();
        let Some(reg) = w.live_region(&mut self.rng) else {
            return;
        };
        let n = self.rng.range(1, 8);
        self.log(format_args!("scribble {n} qwords into region {}", reg.id));
        for _ in 0..n {
            // Mostly into the page tables and GDT at the start.
            let limit = if self.rng.chance(70) {
                (x86_modes::TABLES_END as usize).min(reg.len)
            } else {
                reg.len
            };
            let off = self.rng.index(limit / 8) * 8;
            let v = self.rng.interesting();
            // SAFETY: `off + 8 <= reg.len` in the live region `reg`, and the
            // world's lock (`w`) is held, so it stays mapped.
            unsafe { sys::write_guest(reg.addr + off, &v.to_le_bytes()) };
        }
        drop(w);
    }

    fn translate(&mut self) {
        let Some(v) = self.world.lock().vcpu(&mut self.rng) else {
            return;
        };
        let mut t = kvm_translation {
            linear_address: self.rng.interesting(),
            ..Default::default()
        };
        self.log(format_args!(
            "TRANSLATE vcpu {} {:#x}",
            v.fd, t.linear_address
        ));
        let _ = sys::ioctl_with(v.fd, req::KVM_TRANSLATE, &mut t);
    }

    /// Forks; the child uses the inherited fds (KVM refuses a VM's fds to a
    /// process with another mm) and exits.
    fn fork(&mut self) {
        let w = self.world.lock();
        let mut calls = Vec::new();
        for _ in 0..3 {
            if let (Some(fd), Some(r)) = (w.any_fd(&mut self.rng), self.rng.pick(FORK_REQUESTS)) {
                calls.push((fd, r, self.rng.below(4)));
            }
        }
        drop(w);
        self.log(format_args!("fork, child: {calls:x?}"));
        let _ = sys::fork_and_ioctl(&calls);
    }
}

/// The most CPUID entries the fuzzer sends (one more than KVM's limit).
pub(crate) const MAX_CPUID: usize = 257;

/// `kvm_msrs` with room for 8 entries.
#[repr(C)]
struct MsrBuf {
    nmsrs: u32,
    pad: u32,
    entries: [kvm_msr_entry; 8],
}

/// `kvm_cpuid2` with room for [`MAX_CPUID`] entries.
#[repr(C)]
struct CpuidBuf {
    nent: u32,
    pad: u32,
    entries: [kvm_cpuid_entry2; MAX_CPUID],
}

/// KVM_SET_CPUID2 with the first `nent` of `entries` (padded with zeros).
fn set_cpuid2(fd: i32, entries: &[kvm_cpuid_entry2], nent: usize) -> Result<i32, Errno> {
    let mut buf = Box::new(CpuidBuf {
        nent: nent.min(MAX_CPUID) as u32,
        pad: 0,
        entries: [kvm_cpuid_entry2::default(); MAX_CPUID],
    });
    for (d, s) in buf.entries.iter_mut().zip(entries) {
        *d = *s;
    }
    sys::ioctl_with(fd, req::KVM_SET_CPUID2, &mut *buf)
}

/// KVM_GET_SUPPORTED_CPUID on system fd `fd`.
pub(crate) fn supported_cpuid(fd: i32) -> Vec<kvm_cpuid_entry2> {
    let mut buf = Box::new(CpuidBuf {
        nent: (MAX_CPUID - 1) as u32,
        pad: 0,
        entries: [kvm_cpuid_entry2::default(); MAX_CPUID],
    });
    match sys::ioctl_with(fd, req::KVM_GET_SUPPORTED_CPUID, &mut *buf) {
        Ok(_) => buf
            .entries
            .iter()
            .take(buf.nent as usize)
            .copied()
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// EFER.
const MSR_EFER: u32 = 0xc000_0080;
/// EFER.LME. SDM Vol. 3A 2.2.1.
const EFER_LME: u64 = 1 << 8;
/// CR0.PG. SDM Vol. 3A 2.5.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE. SDM Vol. 3A 2.5.
const CR4_PAE: u64 = 1 << 5;

/// Never leaves a vCPU with EFER.LME=1, CR0.PG=0 and CR4.PAE=0, a legal
/// state (legacy mode, long mode enabled but not active) that QEMU 7.2's
/// emulated #VMEXIT cannot leave: it loads the host's CR0 while the guest's
/// EFER and CR4 are still in place, takes that for an entry into long mode
/// without PAE and keeps the guest's CR0, so the emulated host CPU runs on
/// without paging and with GIF clear, and the whole test VM hangs, on
/// kvm_amd as on rkvm. docs/testing.md, "The stuck CPU".
fn avoid_qemu_vmexit_hang(s: &mut kvm_sregs) {
    if s.efer & EFER_LME != 0 && s.cr0 & CR0_PG == 0 && s.cr4 & CR4_PAE == 0 {
        s.efer &= !EFER_LME;
    }
}

/// Keeps TR present with a type QEMU's emulation accepts: it aborts the whole
/// test VM ("invalid tss type") when a nested guest delivers an interrupt
/// through a TR whose cached type is "busy", which real CPUs allow (QEMU's
/// own LTR caches the "available" type). docs/testing.md.
fn keep_tr_usable(s: &mut kvm_sregs) {
    s.tr.present = 1;
    s.tr.unusable = 0;
    s.tr.s = 0;
    s.tr.type_ = if s.efer & (1 << 10) != 0 { 0xb } else { 0x9 };
}
