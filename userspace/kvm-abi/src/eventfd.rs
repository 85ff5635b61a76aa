//! `eventfd(2)`, the doorbell `KVM_IRQFD` and `KVM_IOEVENTFD` take.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, Result};

/// An eventfd: a 64-bit counter that `signal` adds to and `take` reads
/// and clears.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd, count 0, non-blocking and close-on-exec.
    pub fn new() -> Result<Self> {
        // SAFETY: eventfd(2) takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::new("eventfd", Errno::last()));
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// The descriptor number, as the KVM structs take it.
    pub fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Adds one to the count.
    pub fn signal(&self) -> Result<()> {
        let one = 1u64.to_ne_bytes();
        nix::unistd::write(self.fd.as_fd(), &one)
            .map(drop)
            .map_err(|e| Error::new("eventfd write", e))
    }

    /// Reads and clears the count; 0 if nothing was signalled.
    pub fn take(&self) -> Result<u64> {
        let mut buf = [0u8; 8];
        match nix::unistd::read(self.fd.as_fd(), &mut buf) {
            Ok(_) => Ok(u64::from_ne_bytes(buf)),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(Error::new("eventfd read", e)),
        }
    }

    /// Waits up to `timeout` for a signal, then reads and clears the count
    /// (0 if none came).
    pub fn wait(&self, timeout: Duration) -> Result<u64> {
        let mut pfd = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if n < 0 {
            return Err(Error::new("poll", Errno::last()));
        }
        self.take()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
