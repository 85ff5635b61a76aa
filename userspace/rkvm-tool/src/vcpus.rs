//! The vCPU threads of both of the tool's machines (`rkvm run`,
//! machine.rs, and `rkvm boot`, boot/): one thread per vCPU looping in
//! `KVM_RUN`, and a kicker thread that signals them out of it ([`KICK`],
//! which makes `KVM_RUN` return `EINTR`) when the machine stops or, for
//! `rkvm run`, when a vCPU's timer tick is due. The first failure is kept
//! and ends the machine; `--trace` lines are stamped from the machine's
//! start; the exits no device model can go on from are reported the same
//! way by both.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kvm_abi::{IoDirection, IoExit, Vcpu, VcpuExit};
use nix::sys::pthread::{Pthread, pthread_kill, pthread_self};
use nix::sys::signal::Signal;

use crate::devices::Access;
use crate::machine::register_dump;
use crate::stats::Stats;
use crate::{Failure, stderr_line};

/// The signal that kicks a vCPU thread out of KVM_RUN (installed with
/// `kvm_abi::process::interrupt_syscalls_with`: no `SA_RESTART`).
pub(crate) const KICK: Signal = Signal::SIGUSR1;

/// A mutex's guard, also after a thread panicked holding it (the data a
/// machine keeps under its locks stays consistent at every unlock).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a machine's vCPU threads and its kicker share.
pub(crate) struct VcpuThreads {
    /// `--trace`: each exit on stderr.
    pub(crate) tracing: bool,
    /// When the machine started, for trace stamps and timer deadlines.
    pub(crate) start: Instant,
    /// Set when the machine must stop: the guest's doing, a crash, ^C.
    stop: AtomicBool,
    /// Why the machine failed, first one wins.
    failure: Mutex<Option<Failure>>,
    /// Each vCPU thread while it runs, for kicking it out of KVM_RUN.
    threads: Mutex<Vec<Option<Pthread>>>,
    /// vCPU threads still running.
    alive: AtomicUsize,
}

impl VcpuThreads {
    /// The state of a machine of `cpus` vCPUs, starting now.
    pub(crate) fn new(cpus: usize, tracing: bool) -> Self {
        Self {
            tracing,
            start: Instant::now(),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            threads: Mutex::new(vec![None; cpus]),
            alive: AtomicUsize::new(cpus),
        }
    }

    /// With `--trace`, one line on stderr about vCPU `id`.
    pub(crate) fn trace(&self, id: u32, what: &str) {
        if self.tracing {
            let t = self.start.elapsed().as_secs_f64();
            stderr_line(&format!("[{t:>11.6}] vcpu{id} {what}"));
        }
    }

    /// Stops the machine: every vCPU thread leaves its loop.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the machine is stopping.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops the machine because the guest crashed (status 126).
    pub(crate) fn crash(&self, msg: String) {
        self.fail(Failure::Guest(msg));
    }

    /// Stops the machine with `failure`, unless one came first.
    pub(crate) fn fail(&self, failure: Failure) {
        lock(&self.failure).get_or_insert(failure);
        self.stop();
    }

    /// The failure that stopped the machine, if any.
    fn take_failure(&self) -> Option<Failure> {
        lock(&self.failure).take()
    }

    /// Nanoseconds from the start to `at` (at least 1, so that 0 can mean
    /// "none").
    pub(crate) fn since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Runs `vcpu_loop(id, vcpu)` on a thread of its own for each of
    /// `vcpus`, and `kicker` (which should be [`VcpuThreads::kicker`]) on
    /// another, until every vCPU thread has returned; their statistics
    /// summed. A vCPU thread that panics stops the machine with a crash.
    pub(crate) fn run_all<T: Send>(
        &self,
        vcpus: &mut [T],
        vcpu_loop: impl Fn(u32, &mut T) -> Stats + Sync,
        kicker: impl FnOnce() + Send,
    ) -> Stats {
        let mut total = Stats::default();
        let vcpu_loop = &vcpu_loop;
        std::thread::scope(|s| {
            let handles: Vec<_> = vcpus
                .iter_mut()
                .zip(0u32..)
                .map(|(vcpu, id)| {
                    s.spawn(move || {
                        lock(&self.threads)[id as usize] = Some(pthread_self());
                        // However the thread ends (a panic too), it leaves
                        // the kicker's list and count, so nobody signals a
                        // thread that is gone and the machine still stops.
                        let _leave = Leave { threads: self, id };
                        vcpu_loop(id, vcpu)
                    })
                })
                .collect();
            let kick = s.spawn(kicker);
            for h in handles {
                if let Ok(stats) = h.join() {
                    total.merge(&stats);
                }
            }
            kick.thread().unpark();
        });
        total
    }

    /// After [`VcpuThreads::run_all`]: the guest's output flushed, with
    /// `--stats` the table of `total` on stderr, and the failure that
    /// stopped the machine, if one did.
    pub(crate) fn finish(&self, total: &Stats, stats: bool, cpus: u32) -> Result<(), Failure> {
        let _ = std::io::stdout().flush();
        if stats {
            stderr_line(total.table(cpus, self.start.elapsed()).trim_end());
        }
        self.take_failure().map_or(Ok(()), Err)
    }

    /// The kicker's loop, until no vCPU thread runs: once the machine
    /// stops (or SIGINT/SIGTERM was noted, `rkvm boot`'s ^C), every vCPU
    /// thread is signalled out of KVM_RUN (the others may wait for a SIPI
    /// or sit in HLT in the kernel); before that, those `due(i)` names (a
    /// timer tick due). It looks again after 1 ms while stopping or while
    /// `soon()`, else after 20 ms; the last vCPU thread to end unparks it.
    pub(crate) fn kicker(&self, due: impl Fn(usize) -> bool, soon: impl Fn() -> bool) {
        while self.alive.load(Ordering::SeqCst) > 0 {
            if kvm_abi::process::signal_noted() {
                self.stop();
            }
            let stop = self.stopping();
            for (i, t) in lock(&self.threads).iter().enumerate() {
                if let Some(t) = t {
                    if stop || due(i) {
                        // A thread that ends takes itself out of the list
                        // under this lock first, so it is alive here.
                        let _ = pthread_kill(*t, KICK);
                    }
                }
            }
            std::thread::park_timeout(Duration::from_millis(if stop || soon() { 1 } else { 20 }));
        }
    }
}

/// A vCPU thread's way out: off the kicker's list, one fewer alive; a
/// thread that panicked also stops the machine.
struct Leave<'a> {
    threads: &'a VcpuThreads,
    id: u32,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.threads
                .crash(format!("the thread of vCPU {} panicked", self.id));
        }
        lock(&self.threads.threads)[self.id as usize] = None;
        self.threads.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The crash report for an exit the machine cannot go on from (KVM's
/// shutdown, failed entry and internal error, or an exit this tool has no
/// device model for), with the vCPU's registers.
pub(crate) fn fatal_exit(id: u32, exit: &VcpuExit<'_>, vcpu: &Vcpu) -> String {
    let what = match exit {
        VcpuExit::Shutdown => format!(
            "guest triple fault on vCPU {id} (KVM_EXIT_SHUTDOWN): an exception it could not \
             handle"
        ),
        VcpuExit::FailEntry {
            hardware_entry_failure_reason,
            cpu,
        } => format!(
            "the CPU refused to enter the guest on vCPU {id} (KVM_EXIT_FAIL_ENTRY, hardware \
             reason {hardware_entry_failure_reason:#x}, host CPU {cpu})"
        ),
        VcpuExit::InternalError { suberror, data } => format!(
            "the hypervisor could not go on with vCPU {id} (KVM_EXIT_INTERNAL_ERROR, suberror \
             {suberror}, data {data:x?})"
        ),
        other => format!("vCPU {id}: an exit the rkvm tool does not handle: {other:?}"),
    };
    format!("{what}\n{}", register_dump(vcpu))
}

impl VcpuThreads {
    /// Hands vCPU `id`'s `KVM_EXIT_IO` to the machine's port devices one
    /// element at a time (a string instruction's `count` elements of `size`
    /// bytes each): `write(port, bytes)` for each element of an OUT,
    /// `read(port, size)` for each of an IN, whose values (their `size` low
    /// bytes) go back into `kvm_run` for the guest; with `--trace`, one
    /// line with the first four elements' notes. Returns the last effect
    /// other than the default (none) an element asked for, or `None` once
    /// it stopped the machine because `kvm_run` could not be read or
    /// written.
    pub(crate) fn port_io<E: Default + PartialEq>(
        &self,
        id: u32,
        io: &mut IoExit<'_>,
        write: impl Fn(u16, &[u8]) -> Access<E>,
        read: impl Fn(u16, u8) -> Access<E>,
    ) -> Option<E> {
        let data = match io.data() {
            Ok(data) => data,
            Err(e) => {
                self.crash(format!("vCPU {id}: {e}"));
                return None;
            }
        };
        let size = usize::from(io.size.max(1));
        let mut effect = E::default();
        let mut notes = Vec::new();
        let mut bytes = Vec::with_capacity(data.len());
        for element in data.chunks(size) {
            let a = if io.direction == IoDirection::Out {
                bytes.extend_from_slice(element);
                write(io.port, element)
            } else {
                let a = read(io.port, io.size);
                bytes.extend_from_slice(&a.data.to_le_bytes()[..size.min(8)]);
                a
            };
            if a.effect != E::default() {
                effect = a.effect;
            }
            if self.tracing && notes.len() < 4 {
                notes.push(a.note);
            }
        }
        if io.direction == IoDirection::In {
            if let Err(e) = io.set_data(&bytes) {
                self.crash(format!("vCPU {id}: {e}"));
                return None;
            }
        }
        if self.tracing {
            self.trace(
                id,
                &format!(
                    "KVM_EXIT_IO         {} port {:#06x} size {} count {} data {} | {}",
                    if io.direction == IoDirection::In {
                        "in "
                    } else {
                        "out"
                    },
                    io.port,
                    io.size,
                    io.count,
                    hex_bytes(&bytes),
                    notes.join("; ")
                ),
            );
        }
        Some(effect)
    }
}

/// Up to 8 bytes in hex, in memory order, `..` if there are more.
fn hex_bytes(b: &[u8]) -> String {
    let mut s: String = b.iter().take(8).map(|x| format!("{x:02x}")).collect();
    if b.len() > 8 {
        s += "..";
    }
    s
}
