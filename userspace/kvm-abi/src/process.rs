//! Child processes for lifetime tests: fork, kill, reap.
//!
//! A [`Child`] that is dropped without being waited for is killed and reaped,
//! so a failing test leaves no process behind.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork as nix_fork};

use crate::error::{Error, Result};

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
}

/// A forked child process, reaped at the latest when dropped.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    reaped: bool,
}

/// The exit status of a child whose closure panicked.
pub const PANIC_EXIT: i32 = 101;

/// Whether this process has exactly one thread.
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.strip_prefix("Threads:").is_some_and(|n| n.trim() == "1"))
    })
}

/// Whether this process has one thread, or comes down to one within 2 s.
///
/// A joined thread is not gone yet: `pthread_join` returns when the kernel
/// clears the thread's id, early in its exit, while `Threads:` counts it
/// until the kernel releases it a little later.
fn single_threaded_soon() -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        if single_threaded() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Forks; the child runs `f` and exits with its result (or [`PANIC_EXIT`]
/// if it panics) without running the parent's destructors or exit handlers.
///
/// Fails with `EDEADLK` if the process has more than one thread: a forked
/// child of a multithreaded process could inherit a lock held by another
/// thread (e.g. the allocator's) and hang.
pub fn fork(f: impl FnOnce() -> i32) -> Result<Child> {
    if !single_threaded_soon() {
        return Err(Error::new("fork", Errno::EDEADLK));
    }
    // Flush what the parent has buffered, or the child would print it again.
    let _ = std::io::stdout().flush();
    // SAFETY: the process has a single thread (checked above; only this
    // thread could start another), so no lock can be held across the fork and
    // the child may use any function, including the allocator.
    match unsafe { nix_fork() }.map_err(|e| Error::new("fork", e))? {
        ForkResult::Parent { child } => Ok(Child {
            pid: child,
            reaped: false,
        }),
        ForkResult::Child => {
            let code = catch_unwind(AssertUnwindSafe(f)).unwrap_or(PANIC_EXIT);
            let _ = std::io::stdout().flush();
            // SAFETY: _exit ends the process at once; the parent's objects
            // copied into this child are abandoned without their destructors,
            // which is what a forked child must do (their fds close with it).
            unsafe { libc::_exit(code) }
        }
    }
}

impl Child {
    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Sends `sig` to the child.
    pub fn kill(&self, sig: Signal) -> Result<()> {
        if self.reaped {
            return Err(Error::new("kill child", Errno::ESRCH));
        }
        kill(self.pid, sig).map_err(|e| Error::new("kill child", e))
    }

    /// Waits for the child to end and reaps it.
    pub fn wait(mut self) -> Result<Exit> {
        self.wait_inner()
    }

    fn wait_inner(&mut self) -> Result<Exit> {
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.reaped = true;
                    return Ok(Exit::Code(code));
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.reaped = true;
                    return Ok(Exit::Signal(sig));
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    self.reaped = true;
                    return Err(Error::new("waitpid", e));
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.wait_inner();
        }
    }
}

/// The handler [`interrupt_syscalls_with`] installs: it does nothing, so it
/// is async-signal-safe; its only effect is that the signal is *handled*.
extern "C" fn ignore_signal(_: libc::c_int) {}

/// Makes `signal` interrupt blocking system calls of this process: installs
/// a handler that does nothing, without `SA_RESTART`, so a call such as
/// KVM_RUN that the signal interrupts fails with `EINTR` instead of being
/// restarted or the process being killed. Returns the previous action so
/// that it can be restored with [`restore_signal`].
pub fn interrupt_syscalls_with(signal: Signal) -> Result<SigAction> {
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe and
    // cannot break any invariant of the interrupted code.
    unsafe { sigaction(signal, &action) }.map_err(|e| Error::new("sigaction", e))
}

/// Whether a signal [`note_signal`] watches has arrived.
static SIGNAL_NOTED: AtomicBool = AtomicBool::new(false);

/// The handler [`note_signal`] installs: one atomic store, which is
/// async-signal-safe.
extern "C" fn note(_: libc::c_int) {
    SIGNAL_NOTED.store(true, Ordering::SeqCst);
}

/// Makes `signal` (SIGINT, SIGTERM...) set a flag instead of ending the
/// process, so that the program can stop its guest and clean up (the
/// terminal's settings) first; [`signal_noted`] reads the flag. Like
/// [`interrupt_syscalls_with`], without `SA_RESTART`: a blocking call the
/// signal interrupts fails with `EINTR`. Returns the previous action.
pub fn note_signal(signal: Signal) -> Result<SigAction> {
    let action = SigAction::new(SigHandler::Handler(note), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic: async-signal-safe, and
    // nothing the interrupted code holds is touched.
    unsafe { sigaction(signal, &action) }.map_err(|e| Error::new("sigaction", e))
}

/// Whether a signal given to [`note_signal`] has arrived.
pub fn signal_noted() -> bool {
    SIGNAL_NOTED.load(Ordering::SeqCst)
}

/// Restores the action `old` that [`interrupt_syscalls_with`] returned.
pub fn restore_signal(signal: Signal, old: &SigAction) -> Result<()> {
    // SAFETY: `old` was this process's action for `signal` before; putting
    // it back restores the state the program was written for.
    unsafe { sigaction(signal, old) }
        .map(drop)
        .map_err(|e| Error::new("sigaction", e))
}

/// The shell script [`command_with_device_as_dev_kvm`] runs under
/// `unshare -m`: its own `/dev`, a tmpfs holding the device under test as
/// `/dev/kvm` and the few nodes a VMM opens besides, then the program.
const PRIVATE_DEV: &str = r#"
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /dev
mknod -m 0600 /dev/kvm c "$KVM_MAJOR" "$KVM_MINOR"
mknod -m 0666 /dev/null c 1 3
mknod -m 0666 /dev/zero c 1 5
mknod -m 0666 /dev/random c 1 8
mknod -m 0666 /dev/urandom c 1 9
exec "$@"
"#;

/// A command that runs `program` with `device` as its `/dev/kvm`, for a
/// VMM that only knows that name (QEMU): `unshare -m` gives the child a
/// private mount namespace whose `/dev` is a tmpfs with a node of the
/// device's numbers, so the same program runs on `/dev/rkvm` and on
/// `/dev/kvm` and the system's `/dev` is untouched. Needs root (or
/// `CAP_SYS_ADMIN` and `CAP_MKNOD`) and `unshare`, `mount` and `mknod`
/// on the `PATH`. Add the program's arguments to the result.
///
/// Fails with the `stat` error of `device`, or `ENOTTY` when it is not a
/// character device.
pub fn command_with_device_as_dev_kvm(
    device: &std::path::Path,
    program: impl AsRef<std::ffi::OsStr>,
) -> Result<std::process::Command> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(device).map_err(|e| {
        Error::new(
            "stat",
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    })?;
    if !meta.file_type().is_char_device() {
        return Err(Error::new("stat", Errno::ENOTTY));
    }
    let rdev = meta.rdev();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--", "sh", "-c", PRIVATE_DEV, "sh"])
        .env("KVM_MAJOR", nix::sys::stat::major(rdev).to_string())
        .env("KVM_MINOR", nix::sys::stat::minor(rdev).to_string())
        .arg(program);
    Ok(cmd)
}
