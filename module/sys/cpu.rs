// SPDX-License-Identifier: GPL-2.0

//! The CPU: CPUID, model-specific registers, and per-CPU set-up through
//! CPU hotplug, suspend/resume and shutdown.

use core::marker::PhantomPinned;
use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use kernel::prelude::*;
use kernel::types::Opaque;

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuidRegs {
    pub(crate) eax: u32,
    pub(crate) ebx: u32,
    pub(crate) ecx: u32,
    pub(crate) edx: u32,
}

/// Executes CPUID for `leaf` and `subleaf` on the current CPU.
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> CpuidRegs {
    // SAFETY: CPUID is available on every x86_64 CPU and has no side effects beyond its
    // output registers.
    #[allow(unused_unsafe)]
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
    CpuidRegs {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads CR0.
pub(crate) fn read_cr0() -> u64 {
    let cr0: u64;
    // SAFETY: Reading CR0 at CPL 0 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags))
    };
    cr0
}

/// Reads CR4 (the register, not the kernel's shadow of it).
pub(crate) fn read_cr4() -> u64 {
    let cr4: u64;
    // SAFETY: Reading CR4 at CPL 0 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags))
    };
    cr4
}

/// Per CPU, the guest that entered there last (named by the physical
/// address of its VMCB or VMCS), so that an indirect-branch prediction
/// barrier keeps one guest's branch predictions from steering the next one
/// on that CPU, as KVM's `kvm_arch_vcpu_load` does with its per-CPU
/// `last_vcpu`.
pub(crate) struct LastGuest {
    last: KVec<core::sync::atomic::AtomicU64>,
    /// The host wants IBPB between guests (`crate::spec::Plan`).
    ibpb: bool,
}

impl LastGuest {
    /// A table for `possible` CPUs; `ibpb` says whether to issue the barrier
    /// (the host has IBPB and its mitigations are on).
    pub(crate) fn new(possible: usize, ibpb: bool) -> Result<Self> {
        let mut last = KVec::with_capacity(possible, GFP_KERNEL)?;
        for _ in 0..possible {
            last.push(core::sync::atomic::AtomicU64::new(0), GFP_KERNEL)?;
        }
        Ok(Self { last, ibpb })
    }

    /// The guest `guest` enters on `cpu`: a barrier if another guest ran
    /// there last.
    pub(crate) fn entering(&self, cpu: u32, guest: u64) {
        let Some(last) = self.last.get(cpu as usize) else {
            return;
        };
        if last.swap(guest, core::sync::atomic::Ordering::Relaxed) != guest && self.ibpb {
            super::spec::ibpb();
        }
    }

    /// The guest `guest` is gone (its VMCB or VMCS is being freed): no CPU may
    /// remember it as the last guest, or a new guest whose VMCB or VMCS gets
    /// the same address would enter there without the barrier, with the old
    /// guest's branch predictions. KVM's `kvm_arch_vcpu_destroy` clears its
    /// per-CPU `last_vcpu` the same way.
    pub(crate) fn forget(&self, guest: u64) {
        for last in self.last.iter() {
            let _ = last.compare_exchange(
                guest,
                0,
                core::sync::atomic::Ordering::Relaxed,
                core::sync::atomic::Ordering::Relaxed,
            );
        }
    }
}

/// Hands a machine check that hit while a guest ran to the host's handler
/// (`do_machine_check`, as if from user mode), as KVM's
/// `kvm_machine_check` does; not `int 18`, which a FRED host does not take
/// for a machine check. SDM Vol. 3B 16.
///
/// # Safety
///
/// Call right after a guest exit for #MC, with the host's state restored
/// (on SVM, GIF set; on VMX, out of VMX operation).
pub(crate) unsafe fn raise_machine_check() {
    // SAFETY: The host's state is back (the caller's guarantee); the handler takes a
    // pt_regs built on the C side.
    unsafe { rkvm_machine_check() };
}

extern "C" {
    fn rkvm_machine_check();
    fn rkvm_rdmsr_safe(msr: u32, value: *mut u64) -> c_int;
    fn rkvm_wrmsr_safe(msr: u32, value: u64) -> c_int;
    fn rkvm_cpuhp_setup_multi(
        name: *const c_char,
        online: unsafe extern "C" fn(c_uint, *mut bindings::hlist_node) -> c_int,
        offline: unsafe extern "C" fn(c_uint, *mut bindings::hlist_node) -> c_int,
    ) -> c_int;
    fn rkvm_cpuhp_add_instance(state: c_int, node: *mut bindings::hlist_node) -> c_int;
    fn rkvm_cpuhp_remove_instance(state: c_int, node: *mut bindings::hlist_node);
    fn rkvm_cpuhp_remove_multi(state: c_int);
    fn rkvm_local_irq_save() -> c_ulong;
    fn rkvm_local_irq_restore(flags: c_ulong);
    fn rkvm_num_online_cpus() -> c_uint;
    fn rkvm_tsc_khz() -> c_uint;
    fn rkvm_cpu_smt_possible() -> bool;
    fn rkvm_ktime_ns() -> u64;
    fn rkvm_ktime_real_ns() -> u64;
    fn rkvm_run_delay() -> u64;
    fn rkvm_kick_cpu_async(cpu: c_int);
    fn rkvm_on_each_cpu(func: unsafe extern "C" fn(*mut c_void), info: *mut c_void);
    fn rkvm_syscore_register(
        suspend: unsafe extern "C" fn(*mut c_void) -> c_int,
        resume: unsafe extern "C" fn(*mut c_void),
        shutdown: unsafe extern "C" fn(*mut c_void),
        data: *mut c_void,
    ) -> *mut c_void;
    fn rkvm_syscore_unregister(syscore: *mut c_void);
    fn rkvm_need_resched() -> bool;
    fn rkvm_guest_enter_rcu_qs();
    fn rkvm_cond_resched();
    fn rkvm_yield();
    fn rkvm_signal_pending() -> bool;
    fn rkvm_current_pid() -> c_int;
    fn rkvm_host_mem_encrypted() -> bool;
    fn rkvm_smp_call_function_single(
        cpu: c_int,
        func: unsafe extern "C" fn(*mut c_void),
        info: *mut c_void,
    ) -> c_int;
}

/// Whether the host encrypts its memory (AMD SME): then every physical
/// address given to the hardware would need the encryption bit.
pub(crate) fn host_mem_encrypted() -> bool {
    // SAFETY: A query of the platform's confidential-computing attributes.
    unsafe { rkvm_host_mem_encrypted() }
}

/// CR4.LA57: the host uses 5-level paging. SDM Vol. 3A 2.5.
const CR4_LA57: u64 = 1 << 12;

/// Whether the host kernel runs with 5-level paging (CR4.LA57), which is
/// the same on every CPU.
pub(crate) fn host_la57() -> bool {
    let cr4: u64;
    // SAFETY: Reading CR4 at CPL 0 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags))
    };
    cr4 & CR4_LA57 != 0
}

/// Whether the scheduler wants this CPU for something else.
pub(crate) fn need_resched() -> bool {
    // SAFETY: Reads the current task's flag; always allowed.
    unsafe { rkvm_need_resched() }
}

/// Lets the scheduler run something else if it wants to. May sleep.
pub(crate) fn cond_resched() {
    // SAFETY: Called from process context with no spinlock held (callers are ioctls).
    unsafe { rkvm_cond_resched() }
}

/// Gives the CPU to another runnable task, if there is one
/// (`sched_yield`). May sleep.
pub(crate) fn yield_now() {
    // SAFETY: Called from process context with no spinlock held (the run loop).
    unsafe { rkvm_yield() }
}

/// The calling task's pid (thread id), as KVM names debugfs directories.
///
/// Read in C: bindgen lays out the empty, cache-line-aligned
/// `sched_statistics` of a kernel without `CONFIG_SCHEDSTATS` with no
/// alignment, so in Rust every `task_struct` field after it (`pid`, `mm`)
/// is 48 bytes early (docs/architecture.md, "a bindgen layout bug").
pub(crate) fn current_pid() -> i32 {
    // SAFETY: Reads the current task's pid; always allowed.
    unsafe { rkvm_current_pid() }
}

/// Whether the calling task has a signal to handle.
pub(crate) fn signal_pending() -> bool {
    // SAFETY: Reads the current task's signal state; always allowed.
    unsafe { rkvm_signal_pending() }
}

/// An IPI function that does nothing: the interrupt itself is the point.
///
/// # Safety
///
/// Any `info`; it is not used.
unsafe extern "C" fn nothing(_info: *mut c_void) {}

/// Interrupts `cpu` and waits until it has handled the interrupt. A CPU
/// running a guest leaves it (a physical interrupt is a #VMEXIT) and only
/// takes the interrupt once it is back in the host with interrupts on, so
/// when this returns, the guest that ran there has exited. May sleep;
/// call with interrupts enabled.
pub(crate) fn kick(cpu: u32) {
    // SAFETY: `nothing` touches nothing; `smp_call_function_single` with wait=1 returns
    // once it ran (or at once with an error for an offline CPU, which runs no guest).
    let _ = unsafe { rkvm_smp_call_function_single(cpu as c_int, nothing, core::ptr::null_mut()) };
}

/// Tells RCU that this CPU is about to run a guest, a quiescent state as
/// user space is (KVM's `guest_context_enter_irqoff`): a vCPU that stays in
/// `KVM_RUN`, its guest exiting only for the host's interrupts, must not
/// hold up RCU grace periods on its CPU, where every timer tick lands while
/// the guest runs and so never finds the CPU in user space. `_irqs` proves
/// that interrupts are off, as RCU requires.
pub(crate) fn guest_enter_rcu_quiescent(_irqs: &IrqsDisabled) {
    // SAFETY: Interrupts are off (the guard); no RCU read-side critical section is held by
    // the caller, which is about to enter the guest.
    unsafe { rkvm_guest_enter_rcu_qs() };
}

/// Interrupts are disabled on this CPU while this guard lives, so a
/// read-modify-write of per-CPU hardware state cannot be interleaved with
/// another claimant on the same CPU (task or interrupt).
pub(crate) struct IrqsDisabled {
    flags: c_ulong,
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl IrqsDisabled {
    /// Disables interrupts on the current CPU until the guard is dropped.
    pub(crate) fn new() -> Self {
        // SAFETY: Saving and disabling the interrupt flag is always allowed; `Drop` restores it
        // on the same CPU (the guard is not `Send`, and the task cannot migrate with
        // interrupts off).
        let flags = unsafe { rkvm_local_irq_save() };
        Self {
            flags,
            _not_send: core::marker::PhantomData,
        }
    }
}

impl Drop for IrqsDisabled {
    fn drop(&mut self) {
        // SAFETY: `flags` came from `rkvm_local_irq_save` on this CPU (see `new`).
        unsafe { rkvm_local_irq_restore(self.flags) };
    }
}

/// Runs CPUID with the arguments and result as a tuple, for the pure logic
/// in `x86` that takes a CPUID function.
pub(crate) fn cpuid_tuple(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    let r = cpuid(leaf, subleaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Reads the time-stamp counter. SDM Vol. 2B "RDTSC".
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter, which the kernel leaves readable.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// The host's monotonic clock in nanoseconds (`ktime_get_ns`).
pub(crate) fn now_ns() -> u64 {
    // SAFETY: Reads the monotonic clock; no preconditions.
    unsafe { rkvm_ktime_ns() }
}

/// The host's wall-clock time (`CLOCK_REALTIME`) in nanoseconds since the
/// epoch (`ktime_get_real_ns`).
pub(crate) fn realtime_ns() -> u64 {
    // SAFETY: Reads the real-time clock; no preconditions.
    unsafe { rkvm_ktime_real_ns() }
}

/// How long the calling task has waited, runnable, for a CPU, in
/// nanoseconds (the scheduler's `sched_info.run_delay`).
pub(crate) fn run_delay_ns() -> u64 {
    // SAFETY: Reads the current task's scheduler statistics; no preconditions.
    unsafe { rkvm_run_delay() }
}

/// Makes `cpu` take an interrupt, so that a guest running there exits,
/// without waiting: callable with interrupts off and from a timer
/// callback. Pairs with the vCPU's check, with interrupts off, of the
/// reason it was kicked (`irq::VcpuApic::kick`).
pub(crate) fn kick_async(cpu: u32) {
    // SAFETY: Sends a reschedule IPI; an offline CPU is skipped, and `cpu` comes from a
    // vCPU's `running_on`, a CPU id the kernel gave.
    unsafe { rkvm_kick_cpu_async(cpu as c_int) };
}

/// The host's TSC frequency in kHz, as the kernel calibrated it (0 if it
/// could not).
pub(crate) fn tsc_khz() -> u32 {
    // SAFETY: Reading the calibrated TSC frequency has no preconditions.
    unsafe { rkvm_tsc_khz() }
}

/// Whether the host may run SMT siblings (`cpu_smt_possible`): false when
/// the CPU has none or SMT was forced off at boot.
pub(crate) fn smt_possible() -> bool {
    // SAFETY: Reading the SMT control state has no preconditions.
    unsafe { rkvm_cpu_smt_possible() }
}

/// Reads a model-specific register of the current CPU. A fault (an MSR the
/// CPU does not have) is caught by the kernel's exception table and
/// returned as `EIO` rather than crashing.
pub(crate) fn rdmsr(msr: u32) -> Result<u64> {
    let mut value = 0u64;
    // SAFETY: `rdmsrq_safe` reads the MSR with an exception-table fixup, so a missing MSR
    // returns an error; `value` is a valid place to write the result.
    let r = unsafe { rkvm_rdmsr_safe(msr, &mut value) };
    if r != 0 {
        return Err(EIO);
    }
    Ok(value)
}

/// Writes a model-specific register of the current CPU; a fault is returned
/// as `EIO`.
///
/// # Safety
///
/// The write must not break anything the rest of the kernel relies on: the
/// caller owns the state it changes (for example EFER.SVME after checking
/// that no one else set it, or VM_HSAVE_PA while it holds SVM on this CPU).
pub(crate) unsafe fn wrmsr(msr: u32, value: u64) -> Result {
    // SAFETY: The caller guarantees the write is sound for the kernel; a faulting write is
    // caught by the exception table in `wrmsrq_safe`.
    let r = unsafe { rkvm_wrmsr_safe(msr, value) };
    if r != 0 {
        return Err(EIO);
    }
    Ok(())
}

/// Work to do on each CPU while it runs: set up as it comes online, undone
/// as it goes offline, suspends or the system shuts down.
pub(crate) trait PerCpu: Send + Sync {
    /// Called on `cpu` itself: at registration for every online CPU (with
    /// preemption possible but the task bound to that CPU), for every CPU
    /// that comes online later, and on resume from suspend (interrupts off).
    /// An error refuses the registration (which is then undone on the CPUs
    /// that had succeeded) or the CPU's onlining.
    fn online(&self, cpu: u32) -> Result;
    /// Called on `cpu` itself: as it goes offline, on every online CPU when
    /// the registration is dropped, on suspend and at shutdown (reboot,
    /// kexec; then in interrupt context).
    fn offline(&self, cpu: u32);
    /// The system is shutting down (reboot, kexec, power-off): called once,
    /// on one CPU with interrupts off, before `offline` runs on every CPU.
    /// Other CPUs may still run tasks until the very end.
    fn shutting_down(&self);
}

/// Runs `T`'s hooks on every CPU while this object exists, through a
/// dynamic CPU hotplug state (with this as its one instance) and the
/// system-core suspend, resume and shutdown callbacks, as KVM does for its
/// own enabling (`kvm_main.c`).
///
/// # Invariants
///
/// `state` is a multi-instance hotplug state set up by this object, with
/// `node` as its only instance, and `syscore` is a registration from
/// `rkvm_syscore_register` whose data points to `hooks`, from a successful
/// [`EveryCpu::register`] until drop.
#[pin_data(PinnedDrop)]
pub(crate) struct EveryCpu<T: PerCpu> {
    hooks: T,
    state: c_int,
    #[pin]
    node: Opaque<bindings::hlist_node>,
    syscore: core::ptr::NonNull<c_void>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The raw-pointer state (`hlist_node`, `syscore`) is owned by the hotplug and
// syscore cores, which protect it with their own locks; `T` is `Send + Sync`.
unsafe impl<T: PerCpu> Send for EveryCpu<T> {}
// SAFETY: As above: `&self` gives access only to `hooks`, which is `Sync`.
unsafe impl<T: PerCpu> Sync for EveryCpu<T> {}

/// The current CPU's number. Meaningful when the caller is bound to its CPU
/// (interrupts off, or a hotplug or per-CPU callback).
pub(crate) fn this_cpu() -> u32 {
    kernel::cpu::CpuId::current().as_u32()
}

impl<T: PerCpu> EveryCpu<T> {
    /// Runs `hooks.online` on every online CPU and keeps the hooks running
    /// for CPU hotplug, suspend and shutdown until the returned object is
    /// dropped.
    pub(crate) fn register(name: &'static CStr, hooks: T) -> Result<Pin<KBox<Self>>> {
        // SAFETY: `name` is a static C string; the callbacks have the signatures cpuhp expects
        // for multi-instance states and only touch the instance they are given.
        let state_id = unsafe {
            rkvm_cpuhp_setup_multi(name.as_char_ptr(), Self::online_cb, Self::offline_cb)
        };
        if state_id < 0 {
            return Err(Error::from_errno(state_id));
        }
        let init = try_pin_init!(&this in Self {
            hooks,
            state: state_id,
            node <- Opaque::try_ffi_init(move |node: *mut bindings::hlist_node| {
                // SAFETY: `node` is pinned inside the containing `Self` whose `hooks` field is
                // already initialised (fields are initialised in order), which is all the
                // callbacks read. It stays registered until `PinnedDrop` removes it.
                let r = unsafe { rkvm_cpuhp_add_instance(state_id, node) };
                if r < 0 {
                    return Err(Error::from_errno(r));
                }
                Ok(())
            }),
            // SAFETY: `hooks` (initialised above) stays at this pinned address until
            // `PinnedDrop` unregisters the callbacks, which only read it.
            syscore: match core::ptr::NonNull::new(unsafe {
                rkvm_syscore_register(
                    Self::suspend_cb,
                    Self::resume_cb,
                    Self::shutdown_cb,
                    core::ptr::addr_of!((*this.as_ptr()).hooks).cast_mut().cast(),
                )
            }) {
                Some(syscore) => syscore,
                None => {
                    // The node is registered already, and its memory goes with this error:
                    // take it out first (which turns every CPU off again), or the hotplug
                    // core would keep a freed instance.
                    // SAFETY: `node` was initialised above, so it is the registered instance
                    // of `state_id`; nothing else removes it on this path.
                    unsafe {
                        rkvm_cpuhp_remove_instance(
                            state_id,
                            Opaque::cast_into(core::ptr::addr_of!((*this.as_ptr()).node)),
                        )
                    };
                    return Err(ENOMEM);
                }
            },
            _pin: PhantomPinned,
        }? Error);
        // INVARIANT: on success the node is registered as the instance of `state`, and the
        // syscore callbacks are registered.
        KBox::pin_init(init, GFP_KERNEL).inspect_err(|_| {
            // SAFETY: The state was set up above and has no instance: adding it failed, the
            // allocation failed before anything was added, or the syscore registration failed
            // and removed it again.
            unsafe { rkvm_cpuhp_remove_multi(state_id) };
        })
    }

    /// Recovers the hooks from the hotplug instance's node.
    ///
    /// # Safety
    ///
    /// `node` must be the `node` field of a live `EveryCpu<T>` whose `hooks`
    /// field is initialised.
    unsafe fn hooks_of<'a>(node: *mut bindings::hlist_node) -> &'a T {
        // SAFETY: By the caller's guarantee `node` is the `node` field of a `Self`
        // (`Opaque<hlist_node>` is `repr(transparent)`).
        let this: *const Self = unsafe {
            kernel::container_of!(node.cast::<Opaque<bindings::hlist_node>>(), Self, node)
        };
        // SAFETY: `hooks` is initialised and lives as long as the registration.
        unsafe { &*core::ptr::addr_of!((*this).hooks) }
    }

    /// # Safety
    ///
    /// Called by cpuhp only, with the node registered by [`EveryCpu::register`].
    unsafe extern "C" fn online_cb(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: cpuhp passes the node registered by `register`, whose hooks are initialised.
        let hooks = unsafe { Self::hooks_of(node) };
        match hooks.online(cpu) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As for [`EveryCpu::online_cb`].
    unsafe extern "C" fn offline_cb(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: As in `online_cb`.
        let hooks = unsafe { Self::hooks_of(node) };
        hooks.offline(cpu);
        0
    }

    /// # Safety
    ///
    /// `data` must be the `syscore.data` set by [`EveryCpu::register`].
    unsafe fn syscore_hooks<'a>(data: *mut c_void) -> &'a T {
        // SAFETY: `data` points to the `hooks` of a live registration (type invariant).
        unsafe { &*data.cast::<T>() }
    }

    /// Suspend: only the boot CPU is left, with interrupts off.
    ///
    /// # Safety
    ///
    /// Called by the syscore core only, with the data registered in
    /// [`EveryCpu::register`].
    unsafe extern "C" fn suspend_cb(data: *mut c_void) -> c_int {
        // SAFETY: Called by the syscore core with our registration's data.
        unsafe { Self::syscore_hooks(data) }.offline(this_cpu());
        0
    }

    /// Resume: the boot CPU again, interrupts off; the others come back
    /// through hotplug.
    ///
    /// # Safety
    ///
    /// As for [`EveryCpu::suspend_cb`].
    unsafe extern "C" fn resume_cb(data: *mut c_void) {
        let cpu = this_cpu();
        // SAFETY: Called by the syscore core with our registration's data.
        if let Err(e) = unsafe { Self::syscore_hooks(data) }.online(cpu) {
            pr_err!(
                "CPU {} could not be set up again after resume: {:?}\n",
                cpu,
                e
            );
        }
    }

    /// Shutdown (reboot, kexec): every CPU still online, in interrupt
    /// context, so that the next kernel finds them as the firmware left them.
    ///
    /// # Safety
    ///
    /// As for [`EveryCpu::suspend_cb`].
    unsafe extern "C" fn shutdown_cb(data: *mut c_void) {
        // SAFETY: Called by the syscore core with our registration's data.
        unsafe { Self::syscore_hooks(data) }.shutting_down();
        // SAFETY: `shutdown_each` only reads `data`, which outlives this synchronous call.
        unsafe { rkvm_on_each_cpu(Self::shutdown_each, data) };
    }

    /// One CPU's part of [`EveryCpu::shutdown_cb`], in interrupt context.
    ///
    /// # Safety
    ///
    /// `data` must be the data [`EveryCpu::shutdown_cb`] was given.
    unsafe extern "C" fn shutdown_each(data: *mut c_void) {
        // SAFETY: `data` is what `shutdown_cb` got from the syscore core.
        unsafe { Self::syscore_hooks(data) }.offline(this_cpu());
    }
}

#[pinned_drop]
impl<T: PerCpu> PinnedDrop for EveryCpu<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the syscore ops are registered and the node is the
        // instance of `state`. Unregistering the syscore ops first means no suspend runs the
        // hooks afterwards; removing the instance runs `offline` on every online CPU while
        // `hooks` is still alive; then the state (with no instance left) is removed.
        unsafe {
            rkvm_syscore_unregister(self.syscore.as_ptr());
            rkvm_cpuhp_remove_instance(self.state, self.node.get());
            rkvm_cpuhp_remove_multi(self.state);
        }
    }
}

/// The number of online CPUs.
pub(crate) fn num_online() -> u32 {
    // SAFETY: Reading the online CPU count has no preconditions.
    unsafe { rkvm_num_online_cpus() }
}
