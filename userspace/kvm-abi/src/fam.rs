//! Owned buffers for KVM's flexible-array structs (`kvm_cpuid2`, `kvm_msrs`,
//! `kvm_msr_list`): a fixed header with a count, followed by that many entries.
//!
//! # Invariants
//!
//! A [`FamBuf`] owns zero-initialised storage for its header and `capacity`
//! entries, aligned for both, and its header's count is at most `capacity`
//! whenever the buffer is handed to the kernel. KVM reads or writes at most
//! `count` entries behind the header, so it never leaves the buffer.

use core::mem::{align_of, size_of};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::sys::{kvm_cpuid_entry2, kvm_cpuid2, kvm_msr_entry, kvm_msr_list, kvm_msrs};

/// The header of a flexible-array struct.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` plain-old-data structs for which every
/// bit pattern is valid, whose entry array (of `Entry`, also valid for every
/// bit pattern) starts at offset `size_of::<Self>()`, and whose alignment is
/// at least that of `Entry` and at most 8.
unsafe trait FamHeader {
    /// The array element.
    type Entry: Copy;
    /// The count field.
    fn count(&self) -> u32;
    /// Sets the count field.
    fn set_count(&mut self, n: u32);
}

// SAFETY: kvm_cpuid2 is { u32 nent; u32 padding; kvm_cpuid_entry2 entries[]; },
// 8 bytes, 4-aligned; the entries (u32 fields only) start at offset 8.
unsafe impl FamHeader for kvm_cpuid2 {
    type Entry = kvm_cpuid_entry2;
    fn count(&self) -> u32 {
        self.nent
    }
    fn set_count(&mut self, n: u32) {
        self.nent = n;
    }
}

// SAFETY: kvm_msrs is { u32 nmsrs; u32 pad; kvm_msr_entry entries[]; }, 8 bytes,
// 8-aligned by its u64-carrying entries, which start at offset 8.
unsafe impl FamHeader for kvm_msrs {
    type Entry = kvm_msr_entry;
    fn count(&self) -> u32 {
        self.nmsrs
    }
    fn set_count(&mut self, n: u32) {
        self.nmsrs = n;
    }
}

// SAFETY: kvm_msr_list is { u32 nmsrs; u32 indices[]; }, 4 bytes, 4-aligned;
// the indices start at offset 4.
unsafe impl FamHeader for kvm_msr_list {
    type Entry = u32;
    fn count(&self) -> u32 {
        self.nmsrs
    }
    fn set_count(&mut self, n: u32) {
        self.nmsrs = n;
    }
}

/// A header of type `H` followed by room for `capacity` entries.
struct FamBuf<H: FamHeader> {
    /// Zero-initialised, 8-byte aligned storage.
    words: Vec<u64>,
    capacity: usize,
    _header: core::marker::PhantomData<H>,
}

impl<H: FamHeader> FamBuf<H> {
    const LAYOUT_OK: () = {
        assert!(align_of::<H>() <= align_of::<u64>());
        assert!(align_of::<H::Entry>() <= align_of::<H>());
        assert!(size_of::<H>().is_multiple_of(align_of::<H::Entry>()));
    };

    /// Room for `capacity` entries, count set to `capacity`.
    fn new(capacity: usize) -> Result<Self> {
        let () = Self::LAYOUT_OK;
        let count =
            u32::try_from(capacity).map_err(|_| Error::new("allocate KVM array", Errno::E2BIG))?;
        let bytes = size_of::<H>() + capacity * size_of::<H::Entry>();
        let mut buf = Self {
            words: vec![0u64; bytes.div_ceil(size_of::<u64>())],
            capacity,
            _header: core::marker::PhantomData,
        };
        buf.header_mut().set_count(count);
        Ok(buf)
    }

    fn header(&self) -> &H {
        // SAFETY: `words` is 8-aligned (enough for H by LAYOUT_OK), at least
        // size_of::<H>() bytes long and initialised; H is valid for any bits.
        unsafe { &*self.words.as_ptr().cast::<H>() }
    }

    fn header_mut(&mut self) -> &mut H {
        // SAFETY: as in `header`, and the borrow of `self` is exclusive.
        unsafe { &mut *self.words.as_mut_ptr().cast::<H>() }
    }

    fn entries_ptr(&self) -> *const H::Entry {
        // SAFETY: size_of::<H>() bytes in is still inside the allocation
        // (or one past its end when capacity is 0).
        unsafe { self.words.as_ptr().cast::<u8>().add(size_of::<H>()) }.cast::<H::Entry>()
    }

    fn entries_mut_ptr(&mut self) -> *mut H::Entry {
        // SAFETY: as in `entries_ptr`.
        unsafe { self.words.as_mut_ptr().cast::<u8>().add(size_of::<H>()) }.cast::<H::Entry>()
    }

    /// The first `min(count, capacity)` entries.
    fn entries(&self) -> &[H::Entry] {
        let n = self.valid_len();
        // SAFETY: the entries start aligned (LAYOUT_OK) at size_of::<H>(), the
        // storage holds `capacity >= n` initialised entries, and Entry is
        // valid for any bits.
        unsafe { core::slice::from_raw_parts(self.entries_ptr(), n) }
    }

    /// The first `min(count, capacity)` entries, mutably.
    fn entries_mut(&mut self) -> &mut [H::Entry] {
        let n = self.valid_len();
        // SAFETY: as in `entries`, and the borrow of `self` is exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.entries_mut_ptr(), n) }
    }

    fn valid_len(&self) -> usize {
        usize::try_from(self.header().count()).map_or(self.capacity, |c| c.min(self.capacity))
    }

    fn set_count(&mut self, n: u32, what: &'static str) -> Result<()> {
        if usize::try_from(n).map_or(true, |n| n > self.capacity) {
            return Err(Error::new(what, Errno::E2BIG));
        }
        self.header_mut().set_count(n);
        Ok(())
    }

    /// Restores the invariant after the kernel may have written the count.
    fn clamp_count(&mut self) {
        let n = self.valid_len();
        if let Ok(n) = u32::try_from(n) {
            self.header_mut().set_count(n);
        }
    }

    fn as_ptr(&self) -> *const H {
        self.words.as_ptr().cast::<H>()
    }

    fn as_mut_ptr(&mut self) -> *mut H {
        self.words.as_mut_ptr().cast::<H>()
    }
}

/// An owned `struct kvm_cpuid2` with room for a fixed number of entries.
pub struct CpuidEntries(FamBuf<kvm_cpuid2>);

impl CpuidEntries {
    /// Room for `capacity` zeroed entries; `nent` is set to `capacity`.
    pub fn new(capacity: usize) -> Result<Self> {
        FamBuf::new(capacity).map(Self)
    }

    /// A buffer holding exactly `entries`.
    pub fn from_entries(entries: &[kvm_cpuid_entry2]) -> Result<Self> {
        let mut buf = Self::new(entries.len())?;
        buf.entries_mut().copy_from_slice(entries);
        Ok(buf)
    }

    /// The number of entries the buffer has room for.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// The `nent` field.
    pub fn nent(&self) -> u32 {
        self.0.header().nent
    }

    /// Sets `nent`; fails with `E2BIG` above [`capacity`](Self::capacity).
    pub fn set_nent(&mut self, n: u32) -> Result<()> {
        self.0.set_count(n, "CpuidEntries::set_nent")
    }

    /// The first `nent` entries.
    pub fn entries(&self) -> &[kvm_cpuid_entry2] {
        self.0.entries()
    }

    /// The first `nent` entries, mutably.
    pub fn entries_mut(&mut self) -> &mut [kvm_cpuid_entry2] {
        self.0.entries_mut()
    }

    /// The entry for leaf `function`, subleaf `index` (ignored for leaves
    /// without the `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` flag).
    pub fn find(&self, function: u32, index: u32) -> Option<&kvm_cpuid_entry2> {
        self.entries().iter().find(|e| {
            e.function == function
                && (e.flags & crate::sys::KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == index)
        })
    }

    pub(crate) fn as_ptr(&self) -> *const kvm_cpuid2 {
        self.0.as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut kvm_cpuid2 {
        self.0.as_mut_ptr()
    }

    pub(crate) fn clamp(&mut self) {
        self.0.clamp_count();
    }
}

/// An owned `struct kvm_msrs` with room for a fixed number of entries.
pub struct MsrEntries(FamBuf<kvm_msrs>);

impl MsrEntries {
    /// Room for `capacity` zeroed entries; `nmsrs` is set to `capacity`.
    pub fn new(capacity: usize) -> Result<Self> {
        FamBuf::new(capacity).map(Self)
    }

    /// Entries for reading the MSRs `indices` (data zero).
    pub fn from_indices(indices: &[u32]) -> Result<Self> {
        let mut buf = Self::new(indices.len())?;
        for (e, &index) in buf.entries_mut().iter_mut().zip(indices) {
            e.index = index;
        }
        Ok(buf)
    }

    /// Entries for writing `(index, data)` pairs.
    pub fn from_pairs(pairs: &[(u32, u64)]) -> Result<Self> {
        let mut buf = Self::new(pairs.len())?;
        for (e, &(index, data)) in buf.entries_mut().iter_mut().zip(pairs) {
            e.index = index;
            e.data = data;
        }
        Ok(buf)
    }

    /// The number of entries the buffer has room for.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// The `nmsrs` field.
    pub fn nmsrs(&self) -> u32 {
        self.0.header().nmsrs
    }

    /// Sets `nmsrs`; fails with `E2BIG` above [`capacity`](Self::capacity).
    pub fn set_nmsrs(&mut self, n: u32) -> Result<()> {
        self.0.set_count(n, "MsrEntries::set_nmsrs")
    }

    /// The first `nmsrs` entries.
    pub fn entries(&self) -> &[kvm_msr_entry] {
        self.0.entries()
    }

    /// The first `nmsrs` entries, mutably.
    pub fn entries_mut(&mut self) -> &mut [kvm_msr_entry] {
        self.0.entries_mut()
    }

    /// The data of MSR `index`, if it is among the entries.
    pub fn get(&self, index: u32) -> Option<u64> {
        self.entries()
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.data)
    }

    pub(crate) fn as_ptr(&self) -> *const kvm_msrs {
        self.0.as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut kvm_msrs {
        self.0.as_mut_ptr()
    }

    pub(crate) fn clamp(&mut self) {
        self.0.clamp_count();
    }
}

/// An owned `struct kvm_msr_list` with room for a fixed number of indices.
pub struct MsrIndexList(FamBuf<kvm_msr_list>);

impl MsrIndexList {
    /// Room for `capacity` indices; `nmsrs` is set to `capacity`.
    pub fn new(capacity: usize) -> Result<Self> {
        FamBuf::new(capacity).map(Self)
    }

    /// The `nmsrs` field (after KVM_GET_MSR_INDEX_LIST: the number needed).
    pub fn nmsrs(&self) -> u32 {
        self.0.header().nmsrs
    }

    /// The first `nmsrs` indices.
    pub fn indices(&self) -> &[u32] {
        self.0.entries()
    }

    /// Sets `nmsrs` back to the capacity before the buffer goes to the kernel
    /// (which replaces it with the number it needs).
    pub(crate) fn offer_full_capacity(&mut self) {
        if let Ok(n) = u32::try_from(self.0.capacity) {
            self.0.header_mut().set_count(n);
        }
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut kvm_msr_list {
        self.0.as_mut_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_layout_and_count() {
        let mut c = CpuidEntries::new(3).unwrap();
        assert_eq!(c.nent(), 3);
        assert_eq!(c.entries().len(), 3);
        c.entries_mut()[2].function = 7;
        c.set_nent(1).unwrap();
        assert_eq!(c.entries().len(), 1);
        assert!(c.set_nent(4).is_err());
        // The entries start right after the 8-byte header.
        let base = c.as_ptr() as usize;
        let first = c.entries().as_ptr() as usize;
        assert_eq!(first - base, 8);
    }

    #[test]
    fn msrs_pairs() {
        let m = MsrEntries::from_pairs(&[(0x10, 5), (0x1b, 6)]).unwrap();
        assert_eq!(m.nmsrs(), 2);
        assert_eq!(m.get(0x1b), Some(6));
        assert_eq!(m.get(0x99), None);
        assert_eq!(m.entries().as_ptr() as usize - m.as_ptr() as usize, 8);
    }

    #[test]
    fn kernel_written_count_is_clamped() {
        let mut m = MsrEntries::new(2).unwrap();
        m.0.header_mut().nmsrs = 1000;
        assert_eq!(m.entries().len(), 2);
        m.clamp();
        assert_eq!(m.nmsrs(), 2);
    }

    #[test]
    fn empty_buffer() {
        let c = CpuidEntries::new(0).unwrap();
        assert_eq!(c.nent(), 0);
        assert!(c.entries().is_empty());
    }
}
