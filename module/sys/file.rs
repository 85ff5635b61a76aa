// SPDX-License-Identifier: GPL-2.0

//! File descriptors: the `/dev/rkvm` misc device and anonymous-inode fds.
//!
//! KVM's object model is three kinds of fd: the device (`/dev/kvm`), a VM
//! fd per `KVM_CREATE_VM` and a vCPU fd per `KVM_CREATE_VCPU`, the latter two
//! anonymous inodes. Each kind here is a type implementing [`FileObject`];
//! its `Arc` is the file's private data, so a VM lives as long as its fd or
//! any object holding a reference (a vCPU holds its VM).
//!
//! All three kinds share one mechanism: a `file_operations` table per type,
//! built here, naming this module as its owner (so the VFS holds a module
//! reference for each open file and `rmmod` is refused while any fd
//! exists), with KVM's fault-driven mapping for vCPU fds (pages supplied on
//! first touch, `SIGBUS` past the end), which the kernel's Rust
//! `miscdevice` abstraction, serving only the device node, does not offer.
//!
//! guest_memfd files (crate::gmem) are the one kind with an inode of their
//! own: a regular file with a size, whose `fallocate` allocates and frees
//! pages in the inode's page cache ([`PageCache`]). A memory-slot request
//! names one by fd; [`Held::lookup`] finds the object behind an fd when it
//! is a file of a given kind.

use core::marker::{PhantomData, PhantomPinned};
use kernel::bindings;
use kernel::error::to_result;
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};
use kernel::types::{ForeignOwnable, Opaque};

// Pointers to kernel structs are passed through unchanged; the structs' own layout is
// the C side's business (bindgen marks some of their fields as not FFI-safe).
#[allow(improper_ctypes)]
extern "C" {
    fn anon_inode_getfd(
        name: *const c_char,
        fops: *const bindings::file_operations,
        private: *mut c_void,
        flags: c_int,
    ) -> c_int;
    fn anon_inode_getfile_fmode(
        name: *const c_char,
        fops: *const bindings::file_operations,
        private: *mut c_void,
        flags: c_int,
        f_mode: c_uint,
    ) -> *mut bindings::file;
    fn anon_inode_create_getfile(
        name: *const c_char,
        fops: *const bindings::file_operations,
        private: *mut c_void,
        flags: c_int,
        context_inode: *const bindings::inode,
    ) -> *mut bindings::file;
    fn rkvm_file_set_size(file: *mut bindings::file, size: bindings::loff_t);
    fn rkvm_file_grab_page(file: *mut bindings::file, index: c_ulong) -> c_int;
    fn rkvm_file_punch(file: *mut bindings::file, start: bindings::loff_t, end: bindings::loff_t);
}

/// An object behind a file descriptor.
pub(crate) trait FileObject: Send + Sync + Sized + 'static {
    /// Handles an ioctl. `arg` is the raw argument (usually a user pointer).
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize>;

    /// Whether the fd can be mapped. Pages are supplied one at a time as
    /// they are first touched, by [`FileObject::page`], as KVM does.
    const MAPPABLE: bool = false;

    /// The page `pgoff` pages into the file, or `None`: touching it then
    /// raises `SIGBUS` in the process (the mapping itself succeeds).
    fn page(&self, _pgoff: usize) -> Option<&Page> {
        None
    }

    /// Whether the fd can be read: each read (or `pread`) gets its bytes
    /// from a fresh [`FileObject::contents`].
    const READABLE: bool = false;

    /// The file's whole contents now, for a read at any position.
    fn contents(&self) -> Result<KVec<u8>> {
        Err(EINVAL)
    }

    /// Whether the fd is a file of a fixed size, made with
    /// [`new_sized_anon_fd`] (guest_memfd): it takes `fallocate`, and
    /// `lseek` is `ESPIPE` (as KVM's guest_memfd, which has no `llseek`).
    const SIZED: bool = false;

    /// `fallocate(mode, offset, len)`, the arguments as `vfs_fallocate`
    /// passes them on (a non-negative offset, a positive length, no wrap),
    /// on the file whose page cache is `pages`.
    fn fallocate(&self, _pages: &PageCache<'_>, _mode: u32, _offset: i64, _len: i64) -> Result {
        Err(EOPNOTSUPP)
    }

    /// Called once when the file is closed for good, before the file's
    /// reference to the object is dropped.
    fn release(&self) {}
}

/// A device opened through a misc device node: its open creates the object
/// from the registration's shared context.
pub(crate) trait DeviceFile: FileObject {
    /// What every open of the device shares (owned by the registration).
    type Context: Send + Sync;

    /// Creates the object for one open of the device.
    fn open(ctx: &Self::Context) -> Result<Arc<Self>>;
}

/// A `file_operations` table for objects of type `T`, owned by this module,
/// with the `vm_operations_struct` its mappings use.
///
/// # Invariants
///
/// `fops` is the first field, so a file's `f_op` pointer to it is also a
/// pointer to the whole table.
#[repr(C)]
pub(crate) struct FileOps<T> {
    fops: bindings::file_operations,
    vm_ops: bindings::vm_operations_struct,
    _t: PhantomData<T>,
}

// SAFETY: The table is immutable after construction; the raw pointers in it are to functions
// and to this module's `struct module`, which any thread may read.
unsafe impl<T> Sync for FileOps<T> {}

/// The owner of every file operation table rkvm builds: this module (the
/// kernel's `THIS_MODULE`).
pub(crate) const fn owner() -> *mut bindings::module {
    kernel::module::this_module::<crate::LocalModule>().as_ptr()
}

impl<T: FileObject> FileOps<T> {
    /// The table for anonymous-inode fds of `T`, owned by this module. Use
    /// as `static OPS: FileOps<T> = FileOps::new();`.
    pub(crate) const fn new() -> Self {
        // SAFETY: An all-zero `file_operations` is valid: every field is a nullable pointer or
        // an integer.
        let mut fops: bindings::file_operations = unsafe { core::mem::zeroed() };
        fops.owner = owner();
        fops.release = Some(release::<T>);
        fops.unlocked_ioctl = Some(ioctl::<T>);
        if !T::SIZED {
            fops.llseek = Some(bindings::noop_llseek);
        }
        if T::MAPPABLE {
            fops.mmap = Some(mmap::<T>);
        }
        if T::READABLE {
            fops.read = Some(read::<T>);
        }
        if T::SIZED {
            fops.fallocate = Some(fallocate::<T>);
        }
        // SAFETY: As above, all-zero is a valid `vm_operations_struct`.
        let mut vm_ops: bindings::vm_operations_struct = unsafe { core::mem::zeroed() };
        vm_ops.fault = Some(fault::<T>);
        // INVARIANT: `fops` is the first field of a `repr(C)` struct.
        Self {
            fops,
            vm_ops,
            _t: PhantomData,
        }
    }
}

impl<T> FileOps<T> {
    /// The table as the kernel sees it: a pointer to its `file_operations`,
    /// derived from the whole table so that [`mmap`] may widen it back.
    fn raw(ops: &'static Self) -> *const bindings::file_operations {
        // INVARIANT (of `FileOps`): `fops` is the first field of this `repr(C)` struct.
        core::ptr::from_ref(ops).cast()
    }
}

impl<T: DeviceFile> FileOps<T> {
    /// The table for a misc device whose opens create `T`s.
    pub(crate) const fn new_device() -> Self {
        let mut ops = Self::new();
        ops.fops.open = Some(device_open::<T>);
        ops
    }
}

/// Creates an anonymous-inode fd for `obj` (read-write, close-on-exec), as
/// KVM does for VM and vCPU fds, and returns its number. The fd is
/// installed in the caller's table at once: this must be the last fallible
/// step of an ioctl, as userspace may use or close it immediately.
pub(crate) fn new_anon_fd<T: FileObject>(
    name: &'static CStr,
    ops: &'static FileOps<T>,
    obj: Arc<T>,
) -> Result<i32> {
    let private = obj.into_foreign();
    // SAFETY: `name` is a static C string; `ops` is a static table for `T` whose `release`
    // takes back the `Arc<T>` passed as private data; the flags are valid open flags.
    let fd = unsafe {
        anon_inode_getfd(
            name.as_char_ptr(),
            FileOps::raw(ops),
            private,
            (bindings::O_RDWR | bindings::O_CLOEXEC) as c_int,
        )
    };
    if fd < 0 {
        // SAFETY: The fd was not created, so `private` was not handed to any file and we
        // still own the reference from `into_foreign` above.
        drop(unsafe { Arc::<T>::from_foreign(private) });
        return Err(Error::from_errno(fd));
    }
    Ok(fd)
}

/// As [`new_anon_fd`], but calls `before_install` with the fd number once
/// it is known and before the fd is installed, when user space cannot use
/// it yet (a VM names its debugfs directory after its fd there, as KVM
/// does).
pub(crate) fn new_anon_fd_then<T: FileObject>(
    name: &'static CStr,
    ops: &'static FileOps<T>,
    obj: Arc<T>,
    before_install: impl FnOnce(i32),
) -> Result<i32> {
    let how = NewFile::Shared {
        access: bindings::O_RDWR,
        f_mode: 0,
    };
    anon_file_fd(name, ops, obj, how, before_install)
}

/// `FMODE_PREAD` (`linux/fs.h`, a cast bindgen does not expand): the file
/// can be read at a position (`pread`).
const FMODE_PREAD: c_uint = 1 << 3;

/// As [`new_anon_fd`], but read-only and readable with `pread`, as KVM's
/// statistics fds.
pub(crate) fn new_readonly_anon_fd<T: FileObject>(
    name: &'static CStr,
    ops: &'static FileOps<T>,
    obj: Arc<T>,
) -> Result<i32> {
    let how = NewFile::Shared {
        access: bindings::O_RDONLY,
        f_mode: FMODE_PREAD,
    };
    anon_file_fd(name, ops, obj, how, |_| {})
}

/// How [`anon_file_fd`] makes a file.
#[derive(Clone, Copy)]
enum NewFile {
    /// On the shared anonymous inode, with `access` (`O_RDWR` or
    /// `O_RDONLY`) and the extra `f_mode` bits; close-on-exec.
    Shared { access: u32, f_mode: c_uint },
    /// A regular file of `size` bytes on an anonymous inode of its own,
    /// read-write, not close-on-exec.
    Sized { size: bindings::loff_t },
}

/// Creates the file `how` says, then installs it in a new fd after
/// `before_install`.
fn anon_file_fd<T: FileObject>(
    name: &'static CStr,
    ops: &'static FileOps<T>,
    obj: Arc<T>,
    how: NewFile,
    before_install: impl FnOnce(i32),
) -> Result<i32> {
    let fd_flags = match how {
        NewFile::Shared { .. } => bindings::O_CLOEXEC,
        NewFile::Sized { .. } => 0,
    };
    // SAFETY: Reserves an fd number in the current task's table; always allowed.
    let fd = unsafe { bindings::get_unused_fd_flags(fd_flags) };
    if fd < 0 {
        return Err(Error::from_errno(fd));
    }
    let private = obj.into_foreign();
    let file = match how {
        // SAFETY: As in `new_anon_fd`: a static name and a table whose `release` takes back
        // the `Arc<T>` passed as private data.
        NewFile::Shared { access, f_mode } => unsafe {
            anon_inode_getfile_fmode(
                name.as_char_ptr(),
                FileOps::raw(ops),
                private,
                (access | bindings::O_CLOEXEC) as c_int,
                f_mode,
            )
        },
        // SAFETY: As above, with no context inode.
        NewFile::Sized { .. } => unsafe {
            anon_inode_create_getfile(
                name.as_char_ptr(),
                FileOps::raw(ops),
                private,
                bindings::O_RDWR as c_int,
                core::ptr::null(),
            )
        },
    };
    if let Err(e) = kernel::error::from_err_ptr(file) {
        // SAFETY: `fd` was reserved above and not installed; no file took `private`, so the
        // reference from `into_foreign` is still ours.
        unsafe {
            bindings::put_unused_fd(fd as c_uint);
            drop(Arc::<T>::from_foreign(private));
        }
        return Err(e);
    }
    if let NewFile::Sized { size } = how {
        // SAFETY: `file` is a new file with its own inode, which no one else can reach yet;
        // the helper makes the inode a regular file of `size` bytes.
        unsafe { rkvm_file_set_size(file, size) };
    }
    before_install(fd);
    // SAFETY: `fd` is reserved and unused, `file` is a new file we hold the only reference
    // to; installing hands both to the task's fd table.
    unsafe { bindings::fd_install(fd as c_uint, file) };
    Ok(fd)
}

/// Creates a regular file of `size` bytes on an anonymous inode of its own
/// for `obj`, read-write and without close-on-exec, as KVM's guest_memfd
/// files (`__kvm_gmem_create`), and installs it in a new fd. As for
/// [`new_anon_fd`], this must be the ioctl's last fallible step.
pub(crate) fn new_sized_anon_fd<T: FileObject>(
    name: &'static CStr,
    ops: &'static FileOps<T>,
    obj: Arc<T>,
    size: u64,
) -> Result<i32> {
    let size = bindings::loff_t::try_from(size).map_err(|_| EINVAL)?;
    anon_file_fd(name, ops, obj, NewFile::Sized { size }, |_| {})
}

/// The page cache of a file made by [`new_sized_anon_fd`], during one of
/// its file operations.
pub(crate) struct PageCache<'a> {
    file: *mut bindings::file,
    _call: PhantomData<&'a ()>,
}

impl PageCache<'_> {
    /// Makes sure page `index` of the file exists: a new page is zeroed. It
    /// stays until punched out or the inode goes (the mapping is
    /// unevictable). `ENOMEM` if no page can be had.
    pub(crate) fn allocate(&self, index: u64) -> Result {
        let index = c_ulong::try_from(index).map_err(|_| EINVAL)?;
        // SAFETY: `file` is a live file with its own inode for the duration of the operation
        // this `PageCache` was made for.
        to_result(unsafe { rkvm_file_grab_page(self.file, index) })
    }

    /// Frees the pages in bytes `start..end` (page aligned, `start < end`).
    pub(crate) fn punch(&self, start: u64, end: u64) {
        let (Ok(start), Ok(end)) = (
            bindings::loff_t::try_from(start),
            bindings::loff_t::try_from(end),
        ) else {
            return;
        };
        if start < end {
            // SAFETY: As in `allocate`; the range is a valid, non-empty byte range.
            unsafe { rkvm_file_punch(self.file, start, end) };
        }
    }
}

/// A reference to an open file of `T`s, found by its fd; the file stays
/// open (and its object alive) until this is dropped.
///
/// # Invariants
///
/// `file` is a file created with a `FileOps<T>` table, of which this holds
/// a reference (from `fget`).
pub(crate) struct Held<T: FileObject> {
    file: *mut bindings::file,
    _t: PhantomData<T>,
}

impl<T: FileObject> Held<T> {
    /// The file `fd` names in the current task if it is a `T` file (made
    /// with `ops`): `Ok(None)` if it is another kind of file, `EBADF` if
    /// `fd` is not an open fd.
    pub(crate) fn lookup(fd: u32, ops: &'static FileOps<T>) -> Result<Option<Self>> {
        // SAFETY: Looks `fd` up in the current task's table, taking a reference; any value.
        let file = unsafe { bindings::fget(fd) };
        if file.is_null() {
            return Err(EBADF);
        }
        // SAFETY: `file` is a live file we hold a reference to.
        if unsafe { (*file).f_op } != FileOps::raw(ops) {
            // SAFETY: Drops the reference `fget` took.
            unsafe { bindings::fput(file) };
            return Ok(None);
        }
        // INVARIANT: A file whose table is `ops` was created with it; we hold a reference.
        Ok(Some(Self {
            file,
            _t: PhantomData,
        }))
    }

    /// The object behind the file.
    pub(crate) fn object(&self) -> ArcBorrow<'_, T> {
        // SAFETY: By the type invariant the file is a live `T` file, whose private data is an
        // `Arc<T>` (see `release`) that lives while the file does, so at least as long as
        // `self`.
        unsafe { <Arc<T> as ForeignOwnable>::borrow((*self.file).private_data) }
    }
}

impl<T: FileObject> Drop for Held<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we hold a reference from `fget`; this drops it.
        unsafe { bindings::fput(self.file) };
    }
}

/// # Safety
///
/// `file` must be a file created with a [`FileOps<T>`] table, being released.
unsafe extern "C" fn release<T: FileObject>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The private data was set from `Arc<T>::into_foreign` when the file was created
    // (by `new_anon_fd` or `device_open`), and release is its last use.
    let this = unsafe { Arc::<T>::from_foreign((*file).private_data) };
    this.release();
    drop(this);
    0
}

/// # Safety
///
/// `file` must be a live file created with a [`FileOps<T>`] table by
/// [`new_sized_anon_fd`]; the other arguments are the VFS's for this call.
unsafe extern "C" fn fallocate<T: FileObject>(
    file: *mut bindings::file,
    mode: c_int,
    offset: bindings::loff_t,
    len: bindings::loff_t,
) -> c_long {
    // SAFETY: As in `ioctl`: the private data is an `Arc<T>` alive for this call.
    let this = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
    let pages = PageCache {
        file,
        _call: PhantomData,
    };
    match this.fallocate(&pages, mode as u32, offset, len) {
        Ok(()) => {
            // The file's times change, as after any successful `fallocate`
            // (KVM's `kvm_gmem_fallocate`); a failure here changes nothing.
            // SAFETY: `file` is live for this call.
            unsafe { bindings::file_modified(file) };
            0
        }
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// `file` must be a live file created with a [`FileOps<T>`] table.
unsafe extern "C" fn ioctl<T: FileObject>(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: The private data is an `Arc<T>` (see `release`), and ioctl runs between the
    // file's creation and its release, so borrowing it is valid for this call.
    let this = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
    match T::ioctl(this, cmd, arg) {
        Ok(r) => r as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// `file` must be a live file created with a [`FileOps<T>`] table; `buf`,
/// `count` and `ppos` are the VFS's for this read.
unsafe extern "C" fn read<T: FileObject>(
    file: *mut bindings::file,
    buf: *mut c_char,
    count: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: As in `ioctl`: the private data is an `Arc<T>` alive for this call.
    let this = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
    let bytes = match this.contents() {
        Ok(bytes) => bytes,
        Err(e) => return e.to_errno() as isize,
    };
    // SAFETY: `buf`, `count` and `ppos` come from the VFS for this read; the source is a
    // kernel buffer of `bytes.len()` initialised bytes, alive for the call.
    unsafe {
        bindings::simple_read_from_buffer(
            buf.cast(),
            count,
            ppos,
            bytes.as_ptr().cast(),
            bytes.len(),
        )
    }
}

/// # Safety
///
/// `file` must be a live file created with a [`FileOps<T>`] table and `vma`
/// a mapping of it under initial set-up.
unsafe extern "C" fn mmap<T: FileObject>(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: The file was created with a `FileOps<T>`, whose first field is the
    // `file_operations` that `f_op` points to (type invariant), and the table is static.
    let ops = unsafe { &*(*file).f_op.cast::<FileOps<T>>() };
    // SAFETY: The vma is being set up for this file and is ours to configure; pages are
    // provided by `fault`, which reads the file's private data (the vma holds the file).
    unsafe { (*vma).vm_ops = &ops.vm_ops };
    0
}

// Pointers to kernel structs are passed through unchanged; the structs' own layout is
// the C side's business (bindgen marks some of their fields as not FFI-safe).
#[allow(improper_ctypes)]
extern "C" {
    fn rkvm_fault_set_page(
        vmf: *mut bindings::vm_fault,
        page: *mut bindings::page,
    ) -> bindings::vm_fault_t;
}

/// # Safety
///
/// `vmf` must be a fault on a mapping set up by [`mmap`] for a `T` file.
unsafe extern "C" fn fault<T: FileObject>(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: The fault's vma is a mapping of a live `T` file (the vma holds a reference to
    // the file), whose private data is an `Arc<T>`.
    let (this, pgoff) = unsafe {
        let vma = (*vmf).__bindgen_anon_1.vma;
        let this = <Arc<T> as ForeignOwnable>::borrow((*(*vma).vm_file).private_data);
        (this, (*vmf).__bindgen_anon_1.pgoff)
    };
    match T::page(&this, pgoff) {
        // SAFETY: `page` is a live page owned by the object; the helper takes a reference on
        // it for the mapping, so it stays valid after the object is gone.
        Some(page) => unsafe { rkvm_fault_set_page(vmf, page.as_ptr()) },
        None => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
    }
}

/// # Safety
///
/// `file` must be a file being opened through a misc device registered by a
/// [`MiscRegistration<T>`].
unsafe extern "C" fn device_open<T: DeviceFile>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `misc_open()` sets the private data to the `struct miscdevice` being opened and
    // keeps it registered (so its containing registration alive) for the duration of open.
    let misc = unsafe { (*file).private_data }.cast::<bindings::miscdevice>();
    // SAFETY: The miscdevice is the `misc` field of a `MiscRegistration<T>`
    // (`Opaque` is `repr(transparent)`).
    let reg: *const MiscRegistration<T> = unsafe {
        kernel::container_of!(
            misc.cast::<Opaque<bindings::miscdevice>>(),
            MiscRegistration<T>,
            misc
        )
    };
    // SAFETY: The registration is alive while the device is being opened (see above).
    let ctx = unsafe { &(*reg).ctx };
    match T::open(ctx) {
        Ok(obj) => {
            // SAFETY: Open may set the private data; `release` takes it back.
            unsafe { (*file).private_data = obj.into_foreign() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// A registered misc device whose opens create `T`s sharing `ctx`.
///
/// # Invariants
///
/// `misc` is registered with `misc_register` from a successful
/// [`MiscRegistration::register`] until drop.
#[pin_data(PinnedDrop)]
pub(crate) struct MiscRegistration<T: DeviceFile> {
    ctx: T::Context,
    #[pin]
    misc: Opaque<bindings::miscdevice>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The registration only holds the context (which is `Send + Sync`) and the
// `miscdevice`, which the misc core protects with its own lock.
unsafe impl<T: DeviceFile> Send for MiscRegistration<T> {}
// SAFETY: As above; `&self` gives no access to the `miscdevice`.
unsafe impl<T: DeviceFile> Sync for MiscRegistration<T> {}

impl<T: DeviceFile> MiscRegistration<T> {
    /// Registers `/dev/<name>` with permissions `mode`, its opens creating
    /// `T`s from `ctx`. Until the registration is dropped.
    pub(crate) fn register(
        name: &'static CStr,
        mode: u16,
        ops: &'static FileOps<T>,
        ctx: T::Context,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            ctx,
            misc <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                // SAFETY: An all-zero `miscdevice` is a valid starting point (as `misc_register`
                // expects); the slot is ours to write.
                unsafe { slot.write(core::mem::zeroed()) };
                // SAFETY: The slot was initialised just above.
                unsafe {
                    (*slot).minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                    (*slot).name = name.as_char_ptr();
                    (*slot).fops = FileOps::raw(ops);
                    (*slot).mode = mode;
                }
                // SAFETY: The `miscdevice` is initialised, pinned and outlives its registration
                // (`PinnedDrop` deregisters it); `ctx` is initialised before it (field order).
                // INVARIANT: On success the device is registered.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
            _pin: PhantomPinned,
        }? Error)
    }
}

#[pinned_drop]
impl<T: DeviceFile> PinnedDrop for MiscRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the device is registered.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}
