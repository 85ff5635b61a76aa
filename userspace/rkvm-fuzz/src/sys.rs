//! The fuzzer's system calls. Every `unsafe` block of the fuzzer is here.
//!
//! The rest of the userspace keeps its `unsafe` code in `kvm-abi`, whose
//! safe wrappers own their fds and mappings. A fuzzer must do what those
//! wrappers exist to prevent: use fd numbers after another thread closed
//! them, hand the kernel memory that is being unmapped, map a vCPU fd at any
//! offset. So it works on raw numbers, and this module argues, call by call,
//! why none of that can corrupt the fuzzer's own memory:
//! - pointers passed to the kernel point into buffers owned by the calling
//!   thread and at least as large as the request's argument, or into the
//!   thread's scratch page, whose every 8-byte word is a kernel-half address
//!   (so a pointer the kernel finds inside it reaches no user memory);
//! - guest memory is only ever mapped here, and "unmapping" it replaces it
//!   with an inaccessible reservation (`PROT_NONE`, `MAP_FIXED` over the same
//!   range), so an address the kernel still follows never lands in memory
//!   the program reuses for something else.

use kvm_abi::ioctls::Request;
use nix::errno::Errno;

/// `ioctl(fd, req, arg)` with `arg` an integer (for `_IO` requests) or the
/// address of memory owned as described in the module's documentation.
///
/// # Safety
///
/// When `arg` is an address of this process, the memory there must belong
/// to the caller for the duration of the call, be at least as large as the
/// request's size field, and hold no user address the kernel could write
/// through other than memory the caller owns the same way.
pub(crate) unsafe fn ioctl(fd: i32, req: Request, arg: u64) -> Result<i32, Errno> {
    // SAFETY: the caller's contract: the kernel reads and writes only memory
    // that belongs to the caller for this call (or none).
    let r = unsafe { libc::ioctl(fd, libc::Ioctl::from(req), arg) };
    Errno::result(r)
}

/// `ioctl` with a pointer to `value`: the kernel reads and writes at most
/// `size_of::<T>()` bytes of it for a request whose size field is that size.
pub(crate) fn ioctl_with<T>(fd: i32, req: Request, value: &mut T) -> Result<i32, Errno> {
    debug_assert!(kvm_abi::ioctls::size(req) as usize <= size_of::<T>());
    // SAFETY: `value` is ours, exclusively borrowed for the call, and as large
    // as the request's argument (the caller pairs each request with its own
    // argument type; the KVM structs passed here embed no user pointers
    // except in `kvm_userspace_memory_region*`, whose range always lies in
    // one of this module's guest mappings or starts at a kernel-half address).
    unsafe { ioctl(fd, req, core::ptr::from_mut(value) as u64) }
}

/// `ioctl` with the request's argument in the calling thread's scratch page.
///
/// The scratch page is refilled with `words`, each forced into the kernel
/// half of the address space, so that a pointer the kernel reads from it
/// reaches no memory of this process; the page is larger than any `_IOC`
/// size (at most 16 KiB), so the kernel's copies stay inside it.
pub(crate) fn ioctl_scratch(
    fd: i32,
    req: Request,
    words: impl Iterator<Item = u64>,
) -> Result<i32, Errno> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        for (slot, w) in s.iter_mut().zip(words) {
            *slot = w | 1 << 63;
        }
        // SAFETY: the scratch buffer is this thread's own and exclusively
        // borrowed for the call; it is 32 KiB, more than any size an `_IOC`
        // request can name, and every word in it is a kernel-half address.
        unsafe { ioctl(fd, req, s.as_mut_ptr() as u64) }
    })
}

thread_local! {
    /// Each thread's scratch page for requests of unknown layout.
    static SCRATCH: core::cell::RefCell<Vec<u64>> = core::cell::RefCell::new(vec![1 << 63; 4096]);
}

/// Maps `len` bytes of fresh anonymous memory (shared or private), or of a
/// new memfd, for guest memory. Returns its address.
pub(crate) fn map_guest(len: usize, kind: u64) -> Result<usize, Errno> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let (flags, fd) = match kind {
        0 => (
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
        ),
        1 => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        _ => {
            // SAFETY: the name is a NUL-terminated string; memfd_create only
            // reads it and returns a new fd that we own.
            let fd = unsafe { libc::memfd_create(c"rkvm-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
            let fd = Errno::result(fd)?;
            let size = libc::off_t::try_from(len).map_err(|_| Errno::EINVAL)?;
            // SAFETY: `fd` is the memfd just created, owned here.
            if let Err(e) = Errno::result(unsafe { libc::ftruncate(fd, size) }) {
                // SAFETY: closing our own fd.
                unsafe { libc::close(fd) };
                return Err(e);
            }
            (libc::MAP_SHARED, fd)
        }
    };
    // SAFETY: no MAP_FIXED: the kernel picks a range that overlaps nothing of
    // this process. The mapping keeps the memfd alive after its fd is closed.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, fd, 0) };
    if fd >= 0 {
        // SAFETY: closing our own fd; the mapping keeps the file.
        unsafe { libc::close(fd) };
    }
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    Ok(p as usize)
}

/// "Unmaps" `[addr, addr + len)` of a guest mapping: replaces it with an
/// inaccessible reservation, which tells the kernel's memory users (MMU
/// notifiers, pinned-page holders) exactly what `munmap` would, but keeps the
/// range from being reused by this process.
///
/// # Safety
///
/// The range must lie inside a mapping made by [`map_guest`] that this
/// process never touches except through [`write_guest`] under the same lock
/// the caller holds.
pub(crate) unsafe fn unmap_guest(addr: usize, len: usize) -> Result<(), Errno> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
    // SAFETY: MAP_FIXED replaces only the caller's range, which belongs to a
    // guest mapping nothing else in this process references (the contract).
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    Ok(())
}

/// `madvise(MADV_DONTNEED)` on part of a guest mapping: its pages are freed
/// and read back as zeros (private) or from the shared object.
pub(crate) fn discard_guest(addr: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: DONTNEED changes only the contents of the range, which is guest
    // memory this process never reads except through the kernel; the range
    // came from a guest mapping (`addr` is page-aligned, the kernel checks it).
    Errno::result(unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) })
        .map(drop)
}

/// Writes `bytes` to guest memory at `addr` with volatile stores (the guest
/// and the kernel may access the same bytes at any time).
///
/// # Safety
///
/// `[addr, addr + bytes.len())` must lie inside a live (not unmapped) range of
/// a mapping made by [`map_guest`], and the caller must hold the lock that
/// [`unmap_guest`]'s callers hold, so that the range stays mapped.
pub(crate) unsafe fn write_guest(addr: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        // SAFETY: the range is mapped read-write and stays so (the contract);
        // volatile because another agent (the guest) shares it.
        unsafe { core::ptr::write_volatile((addr + i) as *mut u8, *b) };
    }
}

/// Maps `len` bytes of `fd` at `offset` with `prot` (a vCPU fd's pages);
/// the mapping is removed again at once, and never touched.
pub(crate) fn map_and_unmap(fd: i32, offset: u64, len: usize, prot: i32) -> Result<(), Errno> {
    let offset = libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
    // SAFETY: no MAP_FIXED: the new mapping overlaps nothing of this process,
    // and it is unmapped below without being accessed.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: exactly the mapping made above, referenced by nothing.
    unsafe { libc::munmap(p, len) };
    Ok(())
}

/// A vCPU's `kvm_run` page, mapped read-write for the life of the process
/// (never unmapped: other threads may read it at any time).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunPage(usize);

impl RunPage {
    /// Maps the first page of vCPU fd `fd`.
    pub(crate) fn map(fd: i32) -> Result<Self, Errno> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: no MAP_FIXED: the mapping overlaps nothing of this process.
        // It is never unmapped, so the address stays valid for `RunPage`.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), 4096, prot, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Self(p as usize))
    }

    /// The exit reason the kernel last wrote.
    pub(crate) fn exit_reason(self) -> u32 {
        let offset = core::mem::offset_of!(kvm_abi::sys::kvm_run, exit_reason);
        // SAFETY: the page is mapped for the life of the process; the field is
        // aligned and inside it; volatile because the kernel writes it.
        unsafe { core::ptr::read_volatile((self.0 + offset) as *const u32) }
    }

    /// Sets the `immediate_exit` byte.
    pub(crate) fn set_immediate_exit(self, on: bool) {
        let offset = core::mem::offset_of!(kvm_abi::sys::kvm_run, immediate_exit);
        // SAFETY: as in `exit_reason`; the byte is user space's to write.
        unsafe { core::ptr::write_volatile((self.0 + offset) as *mut u8, u8::from(on)) };
    }
}

/// Opens `path` read-write, close-on-exec; the fd is the caller's.
pub(crate) fn open(path: &std::ffi::CStr) -> Result<i32, Errno> {
    // SAFETY: `path` is NUL-terminated; open returns a new fd.
    Errno::result(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })
}

/// Closes fd `fd` (which another thread may still be using: it then gets
/// `EBADF`, or the fd number's next owner, which is what the fuzzer wants).
pub(crate) fn close(fd: i32) {
    // SAFETY: fd numbers are plain integers to the fuzzer; no Rust object owns
    // the fds it closes (every KVM fd is held by number in the world).
    unsafe { libc::close(fd) };
}

/// This thread's kernel id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Forks; the child runs `requests` (`(fd, request, integer argument)`, only
/// `_IO` requests, so no memory is involved) and exits at once, without
/// running anything of the parent's Rust runtime (which another thread may
/// have left locked). Returns after reaping the child.
pub(crate) fn fork_and_ioctl(requests: &[(i32, Request, u64)]) -> Result<(), Errno> {
    // SAFETY: the child calls only async-signal-safe functions (ioctl with
    // integer arguments, _exit) on data copied before the fork; it never
    // returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        for &(fd, req, arg) in requests {
            // SAFETY: integer arguments only (the caller's `_IO` requests).
            unsafe { libc::ioctl(fd, libc::Ioctl::from(req), arg) };
        }
        // SAFETY: _exit ends the child without touching the parent's state.
        unsafe { libc::_exit(0) };
    }
    let pid = Errno::result(pid)?;
    let mut status = 0;
    loop {
        // SAFETY: `status` is ours; waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if r >= 0 || Errno::last() != Errno::EINTR {
            return Ok(());
        }
    }
}

/// `n` 64-bit words of memory shared with every process forked later (the
/// supervisor's view of its workers' progress and last actions), zeroed.
pub(crate) fn shared_words(n: usize) -> Result<&'static [core::sync::atomic::AtomicU64], Errno> {
    let len = n * size_of::<u64>();
    let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: no MAP_FIXED: the mapping overlaps nothing of this process.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: the mapping is `len` bytes, page-aligned (so aligned for
    // AtomicU64), zero-filled (a valid AtomicU64 is any bit pattern), never
    // unmapped (so 'static), and only ever accessed through these atomics.
    Ok(unsafe { core::slice::from_raw_parts(p.cast::<core::sync::atomic::AtomicU64>(), n) })
}

/// Forks a process that runs `f` and exits with its result; returns the
/// child's pid.
///
/// # Safety
///
/// The calling process must have exactly one thread (then the child's Rust
/// runtime, allocator included, is in a consistent state).
pub(crate) unsafe fn spawn(f: impl FnOnce() -> i32) -> Result<i32, Errno> {
    // SAFETY: single-threaded caller (the contract), so the child may run
    // arbitrary Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = f();
        std::process::exit(code);
    }
    Errno::result(pid)
}

/// Set when the process receives SIGUSR2 (see [`dump_on_sigusr2`]).
pub(crate) static DUMP_REQUESTED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// The SIGUSR2 handler: only an atomic store, so async-signal-safe.
extern "C" fn request_dump(_: libc::c_int) {
    DUMP_REQUESTED.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Makes SIGUSR2 set [`DUMP_REQUESTED`] (with `SA_RESTART`, so it
/// interrupts nothing): the supervisor then prints the workers' last
/// actions, for a kernel that reports a problem while the fuzzer goes on.
pub(crate) fn dump_on_sigusr2() -> Result<(), Errno> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(request_dump),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe
    // and breaks no invariant of the code it interrupts.
    unsafe { sigaction(Signal::SIGUSR2, &action) }.map(drop)
}

/// Bytes of [`bitmap_buffer`] before its guard page: a dirty log of a slot
/// of up to 2^28 pages (1 TiB) fits.
pub(crate) const BITMAP_BYTES: usize = 32 << 20;

/// The address of a buffer for dirty bitmaps: [`BITMAP_BYTES`] of
/// read-write memory, reserved lazily, followed by an inaccessible page, so
/// that a kernel writing a bigger slot's bitmap, or reading one, stops at
/// the guard with `EFAULT` instead of reaching other memory of this
/// process. Mapped once per process and never unmapped; the kernel is its
/// only writer (the fuzzer never reads it as Rust data).
pub(crate) fn bitmap_buffer() -> Result<u64, Errno> {
    static BUFFER: std::sync::OnceLock<Result<u64, Errno>> = std::sync::OnceLock::new();
    *BUFFER.get_or_init(|| {
        let len = BITMAP_BYTES + 4096;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: no MAP_FIXED: the mapping overlaps nothing of this process.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: the first BITMAP_BYTES of the mapping just made, which nothing references.
        if unsafe { libc::mprotect(p, BITMAP_BYTES, prot) } != 0 {
            return Err(Errno::last());
        }
        Ok(p as u64)
    })
}
