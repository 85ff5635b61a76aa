//! Memory mappings: anonymous guest memory and the vCPU fd's shared pages.

use core::ffi::c_void;
use core::ptr::NonNull;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;

use crate::PAGE_SIZE;
use crate::error::{Error, Result};
use crate::sys::kvm_run;
use crate::vm::MemoryKeepAlive;

/// Maps `len` bytes with `mmap`, returning the start.
///
/// # Safety
///
/// `flags` must not contain `MAP_FIXED` (which could replace existing
/// mappings); then the new mapping overlaps no memory of the program.
unsafe fn map(
    len: usize,
    prot: i32,
    flags: i32,
    fd: Option<BorrowedFd<'_>>,
    offset: u64,
    op: &'static str,
) -> Result<NonNull<c_void>> {
    let raw_fd = fd.map_or(-1, |f| f.as_raw_fd());
    let offset = libc::off_t::try_from(offset).map_err(|_| Error::new(op, Errno::EOVERFLOW))?;
    // SAFETY: without MAP_FIXED (the caller's promise) the kernel picks an
    // address that overlaps no existing mapping, so no memory the program
    // uses changes; the result is checked before use.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, raw_fd, offset) };
    if p == libc::MAP_FAILED {
        return Err(Error::last(op));
    }
    NonNull::new(p).ok_or(Error::new(op, Errno::EFAULT))
}

/// Unmaps a mapping made by [`map`].
///
/// # Safety
///
/// `ptr`/`len` must be exactly a mapping made by [`map`] that nothing
/// references any more.
unsafe fn unmap(ptr: NonNull<c_void>, len: usize) {
    // SAFETY: the caller guarantees that the range is our own mapping and
    // unreferenced. A failure could only mean the range was not mapped, which
    // leaves nothing to undo.
    let _ = unsafe { libc::munmap(ptr.as_ptr(), len) };
}

/// Whether the bytes `[ptr, ptr + len)` can be read, found without touching
/// them: the kernel copies one byte of every page into a pipe and reports
/// `EFAULT` for a page whose fault handler refuses it (instead of the SIGBUS
/// that a load from this process would raise).
fn probe(ptr: NonNull<c_void>, len: usize) -> core::result::Result<(), Errno> {
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let mut offset = 0;
    while offset < len {
        // SAFETY: `write` reads one byte at the address from this process's
        // memory with a fault-checked user copy; it cannot modify memory, and
        // an unreadable address makes it fail with EFAULT.
        let r = unsafe {
            libc::write(
                writer.as_fd().as_raw_fd(),
                ptr.as_ptr()
                    .cast::<u8>()
                    .wrapping_add(offset)
                    .cast::<c_void>(),
                1,
            )
        };
        if r != 1 {
            return Err(if r < 0 { Errno::last() } else { Errno::EIO });
        }
        let mut byte = [0u8; 1];
        reader
            .read_exact(&mut byte)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        offset += PAGE_SIZE;
    }
    Ok(())
}

/// Anonymous, private, read-write memory to back guest memory slots.
///
/// # Invariants
///
/// `addr`/`len` is a readable and writable mapping made by this value and
/// unmapped only by its drop. No reference to its contents is ever handed
/// out (they are copied in and out with volatile accesses), so the guest or
/// the kernel may change them at any time.
#[derive(Debug)]
pub struct GuestMemory {
    addr: usize,
    len: usize,
}

impl GuestMemory {
    /// Maps `len` bytes (a non-zero multiple of the page size) of zeroed memory.
    pub fn new(len: usize) -> Result<Self> {
        const OP: &str = "mmap guest memory";
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(Error::new(OP, Errno::EINVAL));
        }
        // SAFETY: no MAP_FIXED.
        let ptr = unsafe {
            map(
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                None,
                0,
                OP,
            )
        }?;
        // INVARIANT: the mapping was just made and is owned by the result.
        Ok(Self {
            addr: ptr.as_ptr().expose_provenance(),
            len,
        })
    }

    /// Maps `len` bytes (a non-zero multiple of 2 MiB) of zeroed memory
    /// aligned to 2 MiB and asks for transparent huge pages there
    /// (`MADV_HUGEPAGE`). Whether the kernel really backs it with huge
    /// pages depends on its THP settings and free memory: see
    /// [`GuestMemory::huge_bytes`].
    pub fn with_huge_pages(len: usize) -> Result<Self> {
        const OP: &str = "mmap huge-page guest memory";
        const HUGE: usize = 2 << 20;
        if len == 0 || !len.is_multiple_of(HUGE) {
            return Err(Error::new(OP, Errno::EINVAL));
        }
        let whole = len + HUGE;
        // SAFETY: no MAP_FIXED.
        let ptr = unsafe {
            map(
                whole,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                None,
                0,
                OP,
            )
        }?;
        let start = ptr.as_ptr().expose_provenance();
        let aligned = start.next_multiple_of(HUGE);
        let (head, tail) = (aligned - start, start + whole - (aligned + len));
        for (from, bytes) in [(start, head), (aligned + len, tail)] {
            if let (Some(p), true) = (
                NonNull::new(core::ptr::with_exposed_provenance_mut(from)),
                bytes != 0,
            ) {
                // SAFETY: the head and the tail are the parts of our fresh,
                // unreferenced mapping outside the aligned range we keep.
                unsafe { unmap(p, bytes) };
            }
        }
        // INVARIANT: `aligned`/`len` is what is left of the mapping we made.
        let mem = Self { addr: aligned, len };
        // SAFETY: advice on our own mapping; it changes no contents.
        let r = unsafe {
            libc::madvise(
                core::ptr::with_exposed_provenance_mut(aligned),
                len,
                libc::MADV_HUGEPAGE,
            )
        };
        if r != 0 {
            return Err(Error::last("madvise(MADV_HUGEPAGE)"));
        }
        Ok(mem)
    }

    /// How many bytes of this memory the kernel backs with transparent huge
    /// pages now (`AnonHugePages` of its mapping in `/proc/self/smaps`).
    pub fn huge_bytes(&self) -> Result<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(|e| {
            Error::new(
                "read /proc/self/smaps",
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        })?;
        // A mapping's header line starts with its range `start-end`; its
        // fields (`Name:   value kB`) follow.
        let ours = format!("{:x}-", self.addr);
        let mut in_ours = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if !first.ends_with(':') {
                in_ours = first.starts_with(&ours);
            } else if in_ours && first == "AnonHugePages:" {
                let kb = line
                    .trim_start_matches("AnonHugePages:")
                    .trim()
                    .trim_end_matches("kB")
                    .trim();
                return Ok(kb.parse::<u64>().unwrap_or(0) * 1024);
            }
        }
        Ok(0)
    }

    /// The user address of the first byte, for `userspace_addr`.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: a mapping has at least a page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of `len` bytes at `offset`, checked to be inside.
    fn range(&self, offset: usize, len: usize, op: &'static str) -> Result<*mut u8> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {
                Ok(core::ptr::with_exposed_provenance_mut::<u8>(self.addr).wrapping_add(offset))
            }
            _ => Err(Error::new(op, Errno::EFAULT)),
        }
    }

    /// Copies `data` into the memory at byte `offset`; `EFAULT` if it does
    /// not fit. The guest may be running: the copy is byte-wise volatile, and
    /// a guest writing the same bytes at the same time sees either value.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        let base = self.range(offset, data.len(), "write guest memory")?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `range` checked that the bytes are inside our live,
            // writable mapping (type invariant), of which no reference exists.
            unsafe { base.wrapping_add(i).write_volatile(*b) };
        }
        Ok(())
    }

    /// Copies the memory at byte `offset` into `buf`; `EFAULT` if it is not
    /// all inside. Byte-wise volatile, like [`GuestMemory::write`].
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let base = self.range(offset, buf.len(), "read guest memory")?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: as in `write`; the mapping is readable.
            *b = unsafe { base.wrapping_add(i).read_volatile() };
        }
        Ok(())
    }

    /// Writes `value` little-endian at byte `offset`.
    pub fn write_u64(&self, offset: usize, value: u64) -> Result<()> {
        self.write(offset, &value.to_le_bytes())
    }

    /// Reads a little-endian `u64` at byte `offset`.
    pub fn read_u64(&self, offset: usize) -> Result<u64> {
        let mut buf = [0u8; 8];
        self.read(offset, &mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        if let Some(ptr) = NonNull::new(core::ptr::with_exposed_provenance_mut::<c_void>(self.addr))
        {
            // SAFETY: by the type invariant this is our mapping, and nothing
            // references its contents.
            unsafe { unmap(ptr, self.len) };
        }
    }
}

/// A shared mapping of part of a vCPU fd (`kvm_run`, the PIO data page, ...).
///
/// The mapping stays valid after the vCPU fd is closed: it holds its own
/// reference to the file.
///
/// # Invariants
///
/// `ptr`/`len` is a mapping made by this value and unmapped only by its drop.
#[derive(Debug)]
pub struct VcpuMapping {
    ptr: NonNull<c_void>,
    len: usize,
    offset: u64,
    /// The mapping keeps the VM alive, and so its memory slots' memory.
    _memory: MemoryKeepAlive,
}

// SAFETY: a mapping belongs to the process, not to a thread: any thread
// may use and unmap it. VcpuMapping hands out no references into it (every
// access is a volatile copy or a probing system call), so moving it to
// another thread cannot create aliasing the type does not already allow.
unsafe impl Send for VcpuMapping {}

impl VcpuMapping {
    /// Maps `len` bytes of `fd` at `offset`, shared and read-write.
    pub(crate) fn new(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        memory: MemoryKeepAlive,
    ) -> Result<Self> {
        // SAFETY: no MAP_FIXED.
        let ptr = unsafe {
            map(
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                Some(fd),
                offset,
                "mmap vCPU fd",
            )
        }?;
        // INVARIANT: the mapping was just made and is owned by the result.
        Ok(Self {
            ptr,
            len,
            offset,
            _memory: memory,
        })
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: mmap refuses length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file offset the mapping starts at.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The first byte of the mapping, for the accessors of this crate.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.ptr.as_ptr()
    }

    /// Checks that every page of the mapping can be read, without risking
    /// the SIGBUS an unbacked page would raise: `EFAULT` if one cannot.
    pub fn probe_readable(&self) -> core::result::Result<(), Errno> {
        probe(self.ptr, self.len)
    }

    /// Reads the byte at `offset` (after checking its page is readable).
    pub fn read_u8(&self, offset: usize) -> Result<u8> {
        const OP: &str = "read vCPU mapping";
        if offset >= self.len {
            return Err(Error::new(OP, Errno::EINVAL));
        }
        // The mapping is in bounds for `offset`, checked above.
        let p = self.ptr.as_ptr().cast::<u8>().wrapping_add(offset);
        let page = NonNull::new(p.cast::<c_void>()).ok_or(Error::new(OP, Errno::EFAULT))?;
        probe(page, 1).map_err(|e| Error::new(OP, e))?;
        // SAFETY: `p` is inside our live mapping and its page is readable;
        // the kernel may change the byte at any time, hence the volatile read.
        Ok(unsafe { p.read_volatile() })
    }
}

impl VcpuMapping {
    /// The address of `len` bytes at `offset`, checked to be inside the
    /// mapping and readable.
    fn checked(&self, offset: usize, len: usize, op: &'static str) -> Result<*mut u8> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::new(op, Errno::EINVAL));
        }
        let p = self.ptr.as_ptr().cast::<u8>().wrapping_add(offset);
        let start = NonNull::new(p.cast::<c_void>()).ok_or(Error::new(op, Errno::EFAULT))?;
        probe(start, len.max(1)).map_err(|e| Error::new(op, e))?;
        Ok(p)
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let p = self.checked(offset, buf.len(), "read vCPU mapping")?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `checked` found the bytes inside our live mapping and
            // readable; volatile, as the kernel shares them.
            *b = unsafe { p.wrapping_add(i).read_volatile() };
        }
        Ok(())
    }

    /// Copies `data` into the mapping at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        let p = self.checked(offset, data.len(), "write vCPU mapping")?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read`; the mapping is shared read-write.
            unsafe { p.wrapping_add(i).write_volatile(*b) };
        }
        Ok(())
    }

    /// The little-endian `u32` at `offset`.
    pub fn read_u32(&self, offset: usize) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian `u32` at `offset`.
    pub fn write_u32(&self, offset: usize, value: u32) -> Result<()> {
        self.write(offset, &value.to_le_bytes())
    }
}

impl Drop for VcpuMapping {
    fn drop(&mut self) {
        // SAFETY: by the type invariant this is our mapping; references to
        // its contents never outlive a borrow of `self`.
        unsafe { unmap(self.ptr, self.len) };
    }
}

/// The vCPU's `struct kvm_run`, mapped at offset 0 of the vCPU fd.
///
/// # Invariants
///
/// The mapping is at least `size_of::<kvm_run>()` bytes long and its
/// `kvm_run` bytes were found readable when it was made. The kernel keeps
/// that page for as long as the vCPU's file lives, and the mapping holds the
/// file, so the page stays readable and writable: the accessors in
/// `run.rs` read and write its fields without probing again.
#[derive(Debug)]
pub struct RunMapping(VcpuMapping);

impl RunMapping {
    /// Maps `len` bytes (KVM_GET_VCPU_MMAP_SIZE) at offset 0 of `fd`.
    ///
    /// Fails with `EFAULT` if the `kvm_run` page cannot be read.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize, memory: MemoryKeepAlive) -> Result<Self> {
        if len < size_of::<kvm_run>() {
            return Err(Error::new("mmap kvm_run", Errno::EINVAL));
        }
        let mapping = VcpuMapping::new(fd, 0, len, memory)?;
        probe(mapping.ptr, size_of::<kvm_run>()).map_err(|e| Error::new("read kvm_run", e))?;
        // INVARIANT: long enough (checked above) and readable (just probed).
        Ok(Self(mapping))
    }

    /// The whole mapping (kvm_run and the pages after it).
    pub fn mapping(&self) -> &VcpuMapping {
        &self.0
    }

    /// A copy of `kvm_run` as it is now; `EFAULT` if the page cannot be read.
    pub fn snapshot(&self) -> Result<kvm_run> {
        probe(self.0.ptr, size_of::<kvm_run>()).map_err(|e| Error::new("read kvm_run", e))?;
        // SAFETY: the mapping is at least size_of::<kvm_run>() bytes (checked
        // at creation), page-aligned, and readable (just probed); kvm_run is
        // plain data valid for any bits. The kernel writes it only during
        // KVM_RUN, and the volatile read takes no reference that could alias.
        Ok(unsafe { self.0.ptr.as_ptr().cast::<kvm_run>().read_volatile() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_memory_copies_in_and_out() {
        let mem = GuestMemory::new(2 * PAGE_SIZE).unwrap();
        mem.write(PAGE_SIZE - 2, &[1, 2, 3, 4]).unwrap();
        let mut buf = [0u8; 6];
        mem.read(PAGE_SIZE - 3, &mut buf).unwrap();
        assert_eq!(buf, [0, 1, 2, 3, 4, 0]);
        mem.write_u64(8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(mem.read_u64(8).unwrap(), 0x1122_3344_5566_7788);
    }

    #[test]
    fn guest_memory_refuses_out_of_bounds() {
        let mem = GuestMemory::new(PAGE_SIZE).unwrap();
        assert_eq!(
            mem.write(PAGE_SIZE - 1, &[0, 0]).unwrap_err().errno(),
            Errno::EFAULT
        );
        assert_eq!(
            mem.read(usize::MAX, &mut [0]).unwrap_err().errno(),
            Errno::EFAULT
        );
        assert!(mem.write(PAGE_SIZE, &[]).is_ok());
    }
}
