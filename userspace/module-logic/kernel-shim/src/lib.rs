//! Host stand-ins for the `kernel::alloc` items rkvm's pure logic uses, so
//! that those module files compile unchanged in a host test crate.
//!
//! Behaviour follows the kernel's types where tests could observe it:
//! `push` can fail (it never does here), `remove` checks its index.

/// `kernel::alloc`.
pub mod alloc {
    use std::ops::{Deref, DerefMut};

    /// `kernel::alloc::AllocError`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AllocError;

    /// `kernel::alloc::flags`.
    pub mod flags {
        /// `kernel::alloc::Flags` (ignored on the host).
        #[derive(Debug, Clone, Copy)]
        pub struct Flags;
        /// `GFP_KERNEL_ACCOUNT`.
        pub const GFP_KERNEL_ACCOUNT: Flags = Flags;
        /// `GFP_KERNEL`.
        pub const GFP_KERNEL: Flags = Flags;
    }

    /// The error of [`KVec::remove`] with an index out of bounds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RemoveError;

    /// `kernel::alloc::KVec`, over `Vec`.
    #[derive(Debug, Default)]
    pub struct KVec<T>(Vec<T>);

    impl<T> KVec<T> {
        /// An empty vector.
        pub const fn new() -> Self {
            Self(Vec::new())
        }

        /// Appends `value`.
        pub fn push(&mut self, value: T, _flags: flags::Flags) -> Result<(), AllocError> {
            self.0.push(value);
            Ok(())
        }

        /// Removes and returns element `i`.
        pub fn remove(&mut self, i: usize) -> Result<T, RemoveError> {
            if i < self.0.len() {
                Ok(self.0.remove(i))
            } else {
                Err(RemoveError)
            }
        }

        /// Makes room for `additional` more elements.
        pub fn reserve(
            &mut self,
            additional: usize,
            _flags: flags::Flags,
        ) -> Result<(), AllocError> {
            self.0.reserve(additional);
            Ok(())
        }

        /// `n` copies of `value`.
        pub fn from_elem(value: T, n: usize, _flags: flags::Flags) -> Result<Self, AllocError>
        where
            T: Clone,
        {
            Ok(Self(vec![value; n]))
        }

        /// Keeps only the elements `keep` says yes to, in order.
        pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
            self.0.retain(keep);
        }
    }

    /// `kernel::alloc::KVVec` (kmalloc, falling back to vmalloc): the same
    /// vector on the host.
    pub type KVVec<T> = KVec<T>;

    impl<T> Deref for KVec<T> {
        type Target = [T];
        fn deref(&self) -> &[T] {
            &self.0
        }
    }

    impl<T> DerefMut for KVec<T> {
        fn deref_mut(&mut self) -> &mut [T] {
            &mut self.0
        }
    }
}
