//! `rkvm-fuzz`: a seeded, reproducible fuzzer for KVM-ABI devices.
//!
//! ```text
//! rkvm-fuzz [--device PATH] [--seed N] [--seconds S] [--actions N]
//!           [--threads T] [--steps K] [--stall S] [--epoch E] [--verbose]
//! ```
//!
//! The device is `/dev/rkvm` unless `--device` names another (`/dev/kvm`).
//!
//! The supervisor (this process, single-threaded) runs *epochs* one after
//! another, each in a fresh child process, until the time or action budget
//! is spent. An epoch's process opens the device, then `T` worker threads
//! each draw `K` random actions (see `actions.rs`: fds, VMs and vCPUs created
//! and closed in any order, memory slots with good and bad arguments over
//! memory that is unmapped, discarded and scribbled on, register, MSR, CPUID
//! and FPU states, random guest code run with KVM_RUN, random requests,
//! forks) on the objects they share, while a ticker thread sends every
//! worker a signal every 1 to 50 ms, so each KVM_RUN ends with `EINTR` soon.
//! The process exits at the end of the epoch, which closes whatever is
//! still open in whatever order the kernel chooses.
//!
//! Every choice comes from a generator seeded with (seed, epoch, thread):
//! `--seed N --epoch E --verbose` replays epoch E and prints each action
//! (the threads' interleaving, and so the exact race, may differ).
//!
//! The supervisor fails (exit status 3) when no action completes for
//! `--stall` seconds: a worker stuck in the kernel. It then prints each
//! thread's last actions, oldest first, from memory the workers share with
//! it, and leaves the stuck process as it is. A worker process killed by a
//! signal fails the run too (exit status 1). Exit status 2: a usage error or
//! a device that cannot be opened. SIGUSR2 makes the supervisor print the
//! workers' last actions and go on (`scripts/vm/fuzz.sh` sends it when the
//! kernel reports an RCU stall).

// A fuzzer narrows random 64-bit draws into register fields, selectors and
// flags on purpose: truncation there is the intent, not a loss.
#![allow(clippy::cast_possible_truncation)]

mod actions;
mod guest;
mod rng;
mod sys;
mod trace;
mod world;

use std::ffi::CString;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::pthread::pthread_kill;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::actions::Worker;
use crate::trace::{MAX_THREADS, Trace};
use crate::world::Shared;

/// The command line.
struct Options {
    device: String,
    seed: u64,
    seconds: u64,
    actions: u64,
    threads: usize,
    steps: u64,
    stall: u64,
    epoch: Option<u64>,
    verbose: bool,
}

/// The device fuzzed without `--device`: rkvm's, as for the `rkvm` tool.
const DEFAULT_DEVICE: &str = "/dev/rkvm";

const USAGE: &str = "usage: rkvm-fuzz [--device PATH] [--seed N] [--seconds S] [--actions N] \
                     [--threads T] [--steps K] [--stall S] [--epoch E] [--verbose]";

fn parse() -> Result<Options, String> {
    let mut o = Options {
        device: DEFAULT_DEVICE.to_string(),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
        seconds: 60,
        actions: u64::MAX,
        threads: 3,
        steps: 200,
        stall: 60,
        epoch: None,
        verbose: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.map_err(|_| format!("{name}: not a number: {v}"))
        };
        match a.as_str() {
            "--device" => o.device = args.next().ok_or("--device needs a path")?,
            "--seed" => o.seed = value("--seed")?,
            "--seconds" => o.seconds = value("--seconds")?,
            "--actions" => o.actions = value("--actions")?,
            "--threads" => o.threads = usize::try_from(value("--threads")?).unwrap_or(0),
            "--steps" => o.steps = value("--steps")?,
            "--stall" => o.stall = value("--stall")?,
            "--epoch" => o.epoch = Some(value("--epoch")?),
            "--verbose" => o.verbose = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.threads == 0 || o.threads > MAX_THREADS {
        return Err(format!("--threads must be 1 to {MAX_THREADS}"));
    }
    if o.stall == 0 {
        return Err("--stall must be at least 1 second".into());
    }
    Ok(o)
}

/// One epoch, in its own process: the workers and their ticker.
fn epoch_process(o: &Options, trace: Trace, epoch: u64) -> i32 {
    let Ok(device) = CString::new(o.device.clone()) else {
        return 2;
    };
    if let Err(e) = kvm_abi::process::interrupt_syscalls_with(Signal::SIGUSR1) {
        println!("rkvm-fuzz: cannot install the SIGUSR1 handler: {e}");
        return 2;
    }
    let fd = match sys::open(&device) {
        Ok(fd) => fd,
        Err(e) => {
            println!(
                "rkvm-fuzz: cannot open {}: {e} (is the module loaded?)",
                o.device
            );
            return 2;
        }
    };
    let world = Arc::new(Shared::default());
    {
        let mut w = world.lock();
        w.cpuid = actions::supported_cpuid(fd);
        w.systems.push(fd);
    }
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..o.threads)
        .map(|t| {
            let mut worker = Worker::new(
                rng::derive(o.seed, epoch, t as u64),
                Arc::clone(&world),
                trace,
                device.clone(),
                t,
                epoch,
                o.verbose,
            );
            let steps = o.steps;
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                worker.run_steps(steps);
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    // The ticker: every 1-50 ms, a signal to every worker.
    let mut tick = rng::Rng::new(rng::derive(o.seed, epoch, u64::MAX));
    while done.load(Ordering::SeqCst) < workers.len() {
        std::thread::sleep(Duration::from_millis(tick.range(1, 50)));
        for w in &workers {
            if !w.is_finished() {
                let _ = pthread_kill(w.as_pthread_t(), Signal::SIGUSR1);
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
    0
}

/// How long one KVM_RUN may last before the supervisor says so (the ticker
/// signals every worker every 50 ms at most).
const SLOW_RUN: Duration = Duration::from_secs(5);

/// How a supervised epoch ended.
enum Outcome {
    Finished,
    /// Why, and the exit status to give: 2 when the device could not be
    /// used, 1 for anything else.
    Failed(String, i32),
    Stalled,
}

/// Waits for the epoch process `pid`, watching the trace for progress.
fn supervise(o: &Options, trace: Trace, pid: i32, deadline: Instant) -> Outcome {
    let pid = Pid::from_raw(pid);
    let mut last = (trace.progress(), Instant::now());
    // Per thread: lines written, since when, and whether that was reported.
    let mut threads = vec![(0u64, Instant::now(), false); o.threads];
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 0)) => return Outcome::Finished,
            Ok(WaitStatus::Exited(_, 2)) => {
                return Outcome::Failed("the device could not be used".into(), 2);
            }
            Ok(WaitStatus::Exited(_, c)) => {
                return Outcome::Failed(format!("the worker process exited with status {c}"), 1);
            }
            Ok(WaitStatus::Signaled(_, s, _)) => {
                return Outcome::Failed(format!("the worker process was killed by {s:?}"), 1);
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Outcome::Failed(format!("waitpid: {e}"), 1),
        }
        if Instant::now() >= deadline || trace.progress() >= o.actions {
            trace.request_stop();
        }
        if sys::DUMP_REQUESTED.swap(false, Ordering::Relaxed) {
            println!("rkvm-fuzz: SIGUSR2: the workers' last actions so far");
            print_last_actions(trace, o.threads);
        }
        for (t, (count, since, reported)) in threads.iter_mut().enumerate() {
            let c = trace.lines_written(t);
            if c != *count {
                (*count, *since, *reported) = (c, Instant::now(), false);
            } else if !*reported && since.elapsed() >= SLOW_RUN {
                // A KVM_RUN the ticker's signals have not ended: the vCPU is
                // likely still in the guest. Said now, while it is (the
                // kernel's RCU stall report comes later and ends it).
                let line = trace.last_lines(t, 1).pop().unwrap_or_default();
                if line.contains("KVM_RUN") {
                    println!("rkvm-fuzz: SLOW: thread {t} in one KVM_RUN for {SLOW_RUN:?}: {line}");
                }
                *reported = true;
            }
        }
        let now = trace.progress();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(o.stall) {
            return Outcome::Stalled;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Prints each thread's last actions.
fn print_last_actions(trace: Trace, threads: usize) {
    println!("last actions (epoch:step [tid] what), oldest first:");
    for t in 0..threads {
        for line in trace.last_lines(t, 40) {
            println!("  {line}");
        }
    }
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                println!("rkvm-fuzz: {e}");
            }
            println!("{USAGE}");
            std::process::exit(2);
        }
    };
    let trace = match Trace::new() {
        Ok(t) => t,
        Err(e) => {
            println!("rkvm-fuzz: cannot map the shared trace: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = sys::dump_on_sigusr2() {
        println!("rkvm-fuzz: cannot install the SIGUSR2 handler: {e}");
        std::process::exit(2);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(o.seconds);
    let (first, last) = match o.epoch {
        Some(e) => (e, e),
        None => (0, u64::MAX),
    };
    println!(
        "rkvm-fuzz: device {} seed {:#x} threads {} steps {} budget {} s{}",
        o.device,
        o.seed,
        o.threads,
        o.steps,
        o.seconds,
        if o.actions == u64::MAX {
            String::new()
        } else {
            format!(" / {} actions", o.actions)
        }
    );
    let mut epochs = 0;
    for epoch in first..=last {
        if (Instant::now() >= deadline || trace.progress() >= o.actions) && o.epoch.is_none() {
            break;
        }
        trace.begin_epoch(epoch);
        // SAFETY: the supervisor never starts a thread: it is single-threaded.
        let pid = match unsafe { sys::spawn(|| epoch_process(&o, trace, epoch)) } {
            Ok(pid) => pid,
            Err(e) => {
                println!("rkvm-fuzz: fork: {e}");
                std::process::exit(2);
            }
        };
        epochs += 1;
        match supervise(&o, trace, pid, deadline) {
            Outcome::Finished => {}
            Outcome::Failed(why, status) => {
                println!(
                    "rkvm-fuzz: FAIL in epoch {epoch} (seed {:#x}): {why}",
                    o.seed
                );
                print_last_actions(trace, o.threads);
                std::process::exit(status);
            }
            Outcome::Stalled => {
                println!(
                    "rkvm-fuzz: STALL in epoch {epoch} (seed {:#x}): no action completed for {} s; \
                     worker process {pid} is stuck in the kernel",
                    o.seed, o.stall
                );
                print_last_actions(trace, o.threads);
                std::process::exit(3);
            }
        }
    }
    println!(
        "rkvm-fuzz: {} actions in {epochs} epochs, {:.0} s, no stall (seed {:#x})",
        trace.progress(),
        start.elapsed().as_secs_f64(),
        o.seed
    );
    let names = Worker::action_names();
    let counts: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n} {}", trace.action_count(i)))
        .collect();
    println!("rkvm-fuzz: by action: {}", counts.join(", "));
}
