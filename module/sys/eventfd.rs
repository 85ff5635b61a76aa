// SPDX-License-Identifier: GPL-2.0

//! Eventfds (`eventfd(2)`), the doorbells between a device model and the
//! kernel: an irqfd is an eventfd whose signal raises a guest interrupt, an
//! ioeventfd one rkvm signals when the guest writes a chosen address.
//!
//! - [`EventFd`] holds a reference to an eventfd's context, so the
//!   eventfd lives while rkvm uses it even if user space closes the fd;
//!   [`EventFd::signal`] adds one to its count, from any context.
//! - [`Waiter`] hooks into an eventfd and calls [`Fire::fire`] once for
//!   every signal, in process context (`eventfd.c` has the mechanics: a
//!   wait-queue entry with its own wake-up function, and a work item).

use core::ptr::NonNull;
use kernel::error::from_err_ptr;
use kernel::ffi::c_void;
use kernel::prelude::*;

/// `struct rkvm_eventfd_waiter` of `eventfd.c`; only its address crosses.
#[repr(C)]
struct RawWaiter {
    _opaque: [u8; 0],
}

extern "C" {
    fn rkvm_eventfd_waiter_create(
        fd: i32,
        fire: unsafe extern "C" fn(*mut c_void),
        owner: *mut c_void,
    ) -> *mut RawWaiter;
    fn rkvm_eventfd_waiter_destroy(w: *mut RawWaiter);
    fn rkvm_eventfd_waiter_ctx(w: *mut RawWaiter) -> *mut c_void;
    fn rkvm_eventfd_ctx_get(fd: i32) -> *mut c_void;
    fn rkvm_eventfd_ctx_put(ctx: *mut c_void);
    fn rkvm_eventfd_ctx_signal(ctx: *mut c_void);
}

/// A counted reference to an eventfd.
pub(crate) struct EventFd(NonNull<c_void>);

// SAFETY: An eventfd context is reference counted and its operations
// (`eventfd_signal`, `eventfd_ctx_put`) may run on any thread.
unsafe impl Send for EventFd {}
// SAFETY: See `Send`; `signal` takes the context's own lock.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// The eventfd behind file descriptor `fd` of the calling process:
    /// `EBADF` if there is none, `EINVAL` if it is not an eventfd.
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: Any number may be passed: the C side looks it up in the caller's fd table.
        let ctx = from_err_ptr(unsafe { rkvm_eventfd_ctx_get(fd) })?;
        NonNull::new(ctx).map(EventFd).ok_or(EBADF)
    }

    /// Adds one to the eventfd's count, waking its readers.
    pub(crate) fn signal(&self) {
        // SAFETY: `self.0` is a context this value holds a reference to.
        unsafe { rkvm_eventfd_ctx_signal(self.0.as_ptr()) }
    }

    /// The eventfd's identity: two references to one eventfd compare equal.
    pub(crate) fn id(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: The reference taken in `from_fd`, dropped once.
        unsafe { rkvm_eventfd_ctx_put(self.0.as_ptr()) }
    }
}

/// What a [`Waiter`] does when its eventfd is signalled.
pub(crate) trait Fire: Send + Sync {
    /// Called once per signal (several signals between two calls make
    /// one), in process context: it may sleep and take mutexes.
    fn fire(&self);
}

/// An eventfd hooked so that each signal calls `T::fire`.
pub(crate) struct Waiter<T: Fire> {
    raw: NonNull<RawWaiter>,
    /// Boxed: the C side keeps its address until `drop`.
    owner: KBox<T>,
}

// SAFETY: The waiter is created and destroyed in process context on any thread; `T` is
// `Send + Sync` because the work item calls it on a kernel worker thread.
unsafe impl<T: Fire> Send for Waiter<T> {}
// SAFETY: `&Waiter` gives only `&T` and the eventfd's identity.
unsafe impl<T: Fire> Sync for Waiter<T> {}

/// # Safety
///
/// `owner` must be the address of a live `T` (the waiter's box).
unsafe extern "C" fn fire_trampoline<T: Fire>(owner: *mut c_void) {
    // SAFETY: The box outlives the work item: `Waiter::drop` cancels it before the box goes.
    unsafe { &*owner.cast::<T>() }.fire();
}

impl<T: Fire> Waiter<T> {
    /// Hooks `owner` into the eventfd behind `fd`. A count already
    /// pending fires at once. `EBADF`/`EINVAL` as [`EventFd::from_fd`],
    /// `EBUSY` if another irqfd (of any VM) waits on that eventfd.
    pub(crate) fn new(fd: i32, owner: T) -> Result<Self> {
        let owner = KBox::new(owner, GFP_KERNEL_ACCOUNT)?;
        let ptr = core::ptr::from_ref::<T>(&owner).cast_mut().cast::<c_void>();
        // SAFETY: `ptr` stays valid until `drop` destroys the waiter (the box is dropped after).
        let raw =
            from_err_ptr(unsafe { rkvm_eventfd_waiter_create(fd, fire_trampoline::<T>, ptr) })?;
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        Ok(Waiter { raw, owner })
    }

    /// What fires.
    pub(crate) fn owner(&self) -> &T {
        &self.owner
    }

    /// Whether this waits on `eventfd`.
    pub(crate) fn waits_on(&self, eventfd: &EventFd) -> bool {
        // SAFETY: `raw` is live until `drop`.
        unsafe { rkvm_eventfd_waiter_ctx(self.raw.as_ptr()) as usize == eventfd.id() }
    }
}

impl<T: Fire> Drop for Waiter<T> {
    fn drop(&mut self) {
        // SAFETY: Created in `new`, destroyed once; after this no `fire` runs or will run,
        // so the box (dropped after this body) is no longer referenced.
        unsafe { rkvm_eventfd_waiter_destroy(self.raw.as_ptr()) }
    }
}
