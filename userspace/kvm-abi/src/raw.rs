//! Raw requests: the kernel's answer, unmodified, as `Result<i32, Errno>`.
//!
//! The safe wrappers in this crate decide the argument for each request. The
//! selftests also need to issue requests with numbers and arguments that no
//! wrapper would produce (unknown numbers, pointers the kernel cannot read) and
//! see the exact errno. [`ioctl`] allows that for the argument kinds in [`Arg`],
//! each of which is harmless to this process whatever the kernel does with it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::PAGE_SIZE;
use crate::ioctls::{self, Request};

/// The argument of a raw request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// An integer, for requests encoded without a data direction (`_IO`).
    Value(u64),
    /// The user address 8, inside page 0, which this process never maps:
    /// any copy from or to it fails with `EFAULT`.
    UnmappedPointer,
    /// An address in the kernel half of the address space: no user access
    /// can reach it, so any copy fails with `EFAULT`.
    KernelPointer,
}

/// The user address [`Arg::UnmappedPointer`] passes.
pub const UNMAPPED_ADDRESS: u64 = 8;
/// The address [`Arg::KernelPointer`] passes: the start of the kernel half.
pub const KERNEL_ADDRESS: u64 = 0xffff_8000_0000_0000;

/// `Errno` that [`ioctl`] returns, without asking the kernel, for an argument
/// it cannot pass safely; KVM never returns it, so a test cannot mistake it
/// for the kernel's answer.
pub const REFUSED: Errno = Errno::EBADRQC;

/// Issues `req` on `fd` with `arg` and returns the kernel's result.
///
/// Returns [`REFUSED`] without a system call when `arg` is an
/// [`Arg::Value`] for a request that encodes a data direction (the kernel
/// would take the integer as a pointer), or [`Arg::UnmappedPointer`] while
/// page 0 is mapped.
pub fn ioctl(fd: BorrowedFd<'_>, req: Request, arg: Arg) -> Result<i32, Errno> {
    let value: u64 = match arg {
        Arg::Value(v) => {
            if ioctls::dir(req) != ioctls::IOC_NONE {
                return Err(REFUSED);
            }
            v
        }
        Arg::UnmappedPointer => {
            if !page_zero_is_unmapped() {
                return Err(REFUSED);
            }
            UNMAPPED_ADDRESS
        }
        Arg::KernelPointer => KERNEL_ADDRESS,
    };
    // SAFETY: the kernel can only act on this process's memory through the
    // argument. A request without a data direction carries an integer by the
    // `_IOC` convention (Documentation/userspace-api/ioctl/ioctl-decoding.rst)
    // that every KVM request follows; the two pointer kinds point where no
    // memory of this process is (page 0 was just found unmapped, and the
    // kernel half is never user-accessible), so every copy fails with EFAULT.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::Ioctl::from(req), value) };
    Errno::result(r)
}

/// Whether page 0 is unmapped in this process (`mincore` fails with `ENOMEM`).
fn page_zero_is_unmapped() -> bool {
    let mut vec = [0u8; 1];
    // SAFETY: `mincore` only writes one byte per page of the range to `vec`,
    // which has room for the single page asked about; the address is only
    // looked up, never accessed.
    let r = unsafe { libc::mincore(core::ptr::null_mut(), PAGE_SIZE, vec.as_mut_ptr()) };
    r == -1 && Errno::last() == Errno::ENOMEM
}

/// Whether `fd` has `FD_CLOEXEC` set.
pub fn is_cloexec(fd: impl AsFd) -> Result<bool, Errno> {
    let flags = fcntl(fd, FcntlArg::F_GETFD)?;
    Ok(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
}

/// Issues `req` with an integer argument.
///
/// # Safety
///
/// The kernel must not interpret `arg` as a pointer for `req` on `fd`.
pub(crate) unsafe fn ioctl_val(fd: BorrowedFd<'_>, req: Request, arg: u64) -> Result<i32, Errno> {
    // SAFETY: the caller guarantees the integer is not used as a pointer, so
    // the kernel accesses no memory of this process.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::Ioctl::from(req), arg) };
    Errno::result(r)
}

/// Issues `req` with a pointer to `arg`, which the kernel may read.
///
/// # Safety
///
/// For `req` on `fd` the kernel must only read, and at most
/// `size_of::<T>()` bytes (plus, for flexible-array structs, the entries the
/// count in `*arg` announces, which must be inside the same allocation).
pub(crate) unsafe fn ioctl_ref<T>(
    fd: BorrowedFd<'_>,
    req: Request,
    arg: *const T,
) -> Result<i32, Errno> {
    // SAFETY: the caller guarantees the kernel only reads valid bytes of `arg`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::Ioctl::from(req), arg) };
    Errno::result(r)
}

/// Issues `req` with a pointer to `arg`, which the kernel may read and write.
///
/// # Safety
///
/// For `req` on `fd` the kernel must access at most `size_of::<T>()` bytes
/// (plus, for flexible-array structs, the entries the count in `*arg`
/// announces, inside the same allocation), and any bits it writes must be a
/// valid `T`.
pub(crate) unsafe fn ioctl_mut<T>(
    fd: BorrowedFd<'_>,
    req: Request,
    arg: *mut T,
) -> Result<i32, Errno> {
    // SAFETY: the caller guarantees the kernel stays inside `arg`, which we
    // hold exclusively for the duration of the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::Ioctl::from(req), arg) };
    Errno::result(r)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn integer_for_a_pointer_request_is_refused_without_a_syscall() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let r = ioctl(null.as_fd(), ioctls::KVM_GET_REGS, Arg::Value(0x1000));
        assert_eq!(r, Err(REFUSED));
    }

    #[test]
    fn the_kernel_answers_the_allowed_kinds() {
        let null = std::fs::File::open("/dev/null").unwrap();
        // /dev/null implements no ioctl: the kernel says ENOTTY for each kind.
        assert_eq!(
            ioctl(null.as_fd(), ioctls::KVM_RUN, Arg::Value(0)),
            Err(Errno::ENOTTY)
        );
        assert_eq!(
            ioctl(null.as_fd(), ioctls::KVM_GET_REGS, Arg::UnmappedPointer),
            Err(Errno::ENOTTY)
        );
        assert_eq!(
            ioctl(null.as_fd(), ioctls::KVM_GET_REGS, Arg::KernelPointer),
            Err(Errno::ENOTTY)
        );
    }

    #[test]
    fn page_zero_is_not_mapped() {
        assert!(page_zero_is_unmapped());
    }

    #[test]
    fn cloexec_is_reported() {
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(is_cloexec(&null).unwrap());
    }
}
