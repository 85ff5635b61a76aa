//! The error type of the safe wrappers: which operation failed, and the errno.

use core::fmt;

use nix::errno::Errno;

/// A failed KVM operation: what was attempted and the errno the kernel gave.
///
/// Tests compare [`Error::errno`] against the exact value KVM documents;
/// [`Display`](fmt::Display) prints a line a user can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    op: &'static str,
    errno: Errno,
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// An error for operation `op` with `errno`.
    pub const fn new(op: &'static str, errno: Errno) -> Self {
        Self { op, errno }
    }

    /// An error for `op` from the calling thread's current `errno`.
    pub fn last(op: &'static str) -> Self {
        Self::new(op, Errno::last())
    }

    /// The operation that failed, e.g. `"KVM_CREATE_VM"`.
    pub const fn op(&self) -> &'static str {
        self.op
    }

    /// The errno the kernel returned.
    pub const fn errno(&self) -> Errno {
        self.errno
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {:?} ({})",
            self.op,
            self.errno,
            self.errno.desc()
        )?;
        match self.errno {
            Errno::ENOENT => write!(f, "; is the module loaded and the device path right?"),
            Errno::EACCES | Errno::EPERM => {
                write!(f, "; run as root or fix the device's permissions")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for Errno {
    fn from(e: Error) -> Self {
        e.errno
    }
}
