// SPDX-License-Identifier: GPL-2.0

//! Debugfs directories of read-only text files: the module's
//! `/sys/kernel/debug/rkvm/stats`, and one directory per VM.
//!
//! The kernel's Rust debugfs abstraction builds file operations without an
//! `owner`, so an open debugfs file would not pin the module and closing it
//! after `rmmod` would run freed code. These operations name this module as
//! owner: while the file is open, `rmmod` is refused, as for every other fd.

use core::fmt::{self, Write};
use core::marker::PhantomData;
use kernel::bindings;
use kernel::ffi::{c_char, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;

// Pointers to kernel structs are passed through unchanged; the structs' own layout is
// the C side's business (bindgen marks some of their fields as not FFI-safe).
#[allow(improper_ctypes)]
extern "C" {
    fn rkvm_debugfs_create_file(
        name: *const c_char,
        mode: u16,
        parent: *mut bindings::dentry,
        data: *mut c_void,
        fops: *const bindings::file_operations,
    ) -> *mut bindings::dentry;
}

/// The longest text a file shows; longer output is cut.
const MAX_TEXT: usize = 512;

/// The file operations of a text file showing a `T` (its `Display`).
#[repr(transparent)]
pub(crate) struct TextFileOps<T>(bindings::file_operations, PhantomData<T>);

// SAFETY: The table is immutable; it holds function pointers and this module's address.
unsafe impl<T> Sync for TextFileOps<T> {}

impl<T: fmt::Display + Send + Sync + 'static> TextFileOps<T> {
    /// Use as `static OPS: TextFileOps<T> = TextFileOps::new();`.
    pub(crate) const fn new() -> Self {
        // SAFETY: An all-zero `file_operations` is valid (nullable pointers and integers).
        let mut fops: bindings::file_operations = unsafe { core::mem::zeroed() };
        fops.owner = crate::sys::file::owner();
        // `simple_open` copies the inode's private data (our `T`) to the file's.
        fops.open = Some(bindings::simple_open);
        fops.read = Some(read::<T>);
        fops.llseek = Some(bindings::default_llseek);
        Self(fops, PhantomData)
    }
}

/// A fixed buffer that formatted text is written into, cut at its size.
struct TextBuf {
    bytes: [u8; MAX_TEXT],
    len: usize,
}

impl Write for TextBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(MAX_TEXT - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// # Safety
///
/// `file` must be an open file of a [`TextFileOps<T>`] table created by
/// [`DebugDir::text_file`], `buf` a user buffer of `count` bytes, `ppos` the
/// file position.
unsafe extern "C" fn read<T: fmt::Display>(
    file: *mut bindings::file,
    buf: *mut c_char,
    count: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: `simple_open` set the private data to the `T` registered with the file, which
    // `DebugDir` keeps alive until the file is removed (debugfs waits for readers to leave).
    let value = unsafe { &*(*file).private_data.cast::<T>() };
    let mut text = TextBuf {
        bytes: [0; MAX_TEXT],
        len: 0,
    };
    let _ = write!(text, "{value}");
    // SAFETY: `buf`, `count` and `ppos` come from the VFS for this read; the source is a
    // kernel buffer of `text.len` initialised bytes.
    unsafe {
        bindings::simple_read_from_buffer(
            buf.cast(),
            count,
            ppos,
            text.bytes.as_ptr().cast(),
            text.len,
        )
    }
}

/// A debugfs directory whose text files show `T` or parts of it; the
/// directory and its files are removed on drop.
///
/// # Invariants
///
/// `dir` is a dentry from `debugfs_create_dir` (or an error pointer, which
/// debugfs accepts everywhere and ignores), and `_data` is the value the
/// files show (or contains it), alive until `dir` is removed.
pub(crate) struct DebugDir<T: Send + Sync + 'static> {
    dir: *mut bindings::dentry,
    _data: Arc<T>,
}

// SAFETY: The dentry pointer is only passed back to debugfs, which may be called from any
// thread; `T` is `Send + Sync`.
unsafe impl<T: Send + Sync + 'static> Send for DebugDir<T> {}
// SAFETY: `&DebugDir` gives no access to anything.
unsafe impl<T: Send + Sync + 'static> Sync for DebugDir<T> {}

/// A directory other directories may be created in: the module's own.
///
/// # Invariants
///
/// `dir` is the dentry of a live [`DebugDir`] (or an error pointer); the
/// holder keeps that directory alive (VMs pin the module, which owns it).
#[derive(Clone, Copy)]
pub(crate) struct DebugParent {
    dir: *mut bindings::dentry,
}

impl DebugParent {
    /// Whether `name` exists in this directory.
    pub(crate) fn has(&self, name: &CStr) -> bool {
        // SAFETY: `name` is a C string; `self.dir` is a live directory or an error pointer
        // by the invariant, both of which `debugfs_lookup` accepts (it finds nothing in the
        // latter).
        let dentry = unsafe { bindings::debugfs_lookup(name.as_char_ptr(), self.dir) };
        if dentry.is_null() {
            return false;
        }
        // SAFETY: `debugfs_lookup` returned a referenced dentry; this drops the reference.
        unsafe { bindings::dput(dentry) };
        true
    }
}

// SAFETY: Only passed back to debugfs, from any thread.
unsafe impl Send for DebugParent {}
// SAFETY: As above.
unsafe impl Sync for DebugParent {}

impl<T: Send + Sync + 'static> DebugDir<T> {
    /// This directory, as a parent for others.
    pub(crate) fn parent(&self) -> DebugParent {
        // INVARIANT: Our own directory; callers keep us alive while they use it.
        DebugParent { dir: self.dir }
    }

    /// Creates the directory `name` in `parent`, for files showing parts of
    /// `data` ([`DebugDir::file`]). Debugfs being unavailable is not an
    /// error: the files are just absent.
    pub(crate) fn new_in(parent: DebugParent, name: &CStr, data: Arc<T>) -> Self {
        // SAFETY: `name` is a C string (debugfs copies it); `parent.dir` is a live directory
        // by its invariant.
        let dentry = unsafe { bindings::debugfs_create_dir(name.as_char_ptr(), parent.dir) };
        // INVARIANT: `dentry` came from `debugfs_create_dir`, and `data` is kept.
        Self {
            dir: dentry,
            _data: data,
        }
    }

    /// Adds the file `name` (mode 0444) showing the part of the data that
    /// `part` picks.
    pub(crate) fn file<F: fmt::Display + Send + Sync + 'static>(
        &self,
        name: &'static CStr,
        ops: &'static TextFileOps<F>,
        part: impl FnOnce(&T) -> &F,
    ) {
        let shown: *const F = part(&self._data);
        // SAFETY: `name` is a static C string; `dir` is our directory; `shown` points into
        // `_data`, which outlives the file (type invariant).
        unsafe {
            rkvm_debugfs_create_file(
                name.as_char_ptr(),
                0o444,
                self.dir,
                shown.cast_mut().cast(),
                &ops.0,
            )
        };
    }
}

impl<T: fmt::Display + Send + Sync + 'static> DebugDir<T> {
    /// Creates `/sys/kernel/debug/<dir>/<file>` (mode 0444) showing `data`.
    /// Debugfs being unavailable is not an error: the files are just absent.
    pub(crate) fn text_file(
        dir: &'static CStr,
        file: &'static CStr,
        ops: &'static TextFileOps<T>,
        data: Arc<T>,
    ) -> Self {
        // SAFETY: `dir` is a static C string; a null parent means the debugfs root.
        let dentry =
            unsafe { bindings::debugfs_create_dir(dir.as_char_ptr(), core::ptr::null_mut()) };
        // SAFETY: `file` is a static C string; `dentry` is the directory just created (or an
        // error pointer, which debugfs ignores); the data outlives the file (type invariant).
        unsafe {
            rkvm_debugfs_create_file(
                file.as_char_ptr(),
                0o444,
                dentry,
                Arc::as_ptr(&data).cast_mut().cast(),
                &ops.0,
            )
        };
        // INVARIANT: `dentry` came from `debugfs_create_dir`, and `data` is kept.
        Self {
            dir: dentry,
            _data: data,
        }
    }
}

impl<T: Send + Sync + 'static> Drop for DebugDir<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `dir` came from `debugfs_create_dir`. Removal waits
        // for readers in progress, so no read runs after this and `_data` may go.
        unsafe { bindings::debugfs_remove(self.dir) };
    }
}
