// SPDX-License-Identifier: GPL-2.0

//! Dirty page logging: which pages of a slot the guest wrote since user
//! space last asked (`KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`,
//! `KVM_CLEAR_DIRTY_LOG`). Live migration is built on it: copy all memory
//! while the guest runs, then copy again only what it dirtied meanwhile,
//! round after round, until little enough is left to stop the guest.
//!
//! # How a write is caught
//!
//! A slot that logs is mapped in 4 KiB leaves only (one dirty bit per
//! leaf) and, while a page's bit is clear, its leaf is *write-protected*:
//! readable, but a guest write takes a second-level fault. The fault sets
//! the page's bit and makes the leaf writable, and the guest's write
//! retries and goes through: each page costs one fault per round, however
//! often the guest writes it. Collecting the log clears the bits and
//! write-protects those pages again, then flushes every vCPU's TLB so that
//! no cached writable translation lets a write past unlogged. Writes the
//! kernel makes to guest memory for the guest (kvmclock, steal time,
//! emulated instructions) set the bits too. This is KVM's write-protection
//! scheme (`kvm_mmu_slot_apply_flags`, `kvm_arch_mmu_enable_log_dirty_pt_masked`);
//! KVM can also use the hardware's dirty bits (Intel's PML) or a per-vCPU
//! ring (`KVM_CAP_DIRTY_LOG_RING`), which rkvm does not.
//!
//! # The two protocols
//!
//! By default `KVM_GET_DIRTY_LOG` hands out the bitmap and clears it in one
//! step, write-protecting what it cleared. With
//! `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` enabled, `KVM_GET_DIRTY_LOG` only
//! reads, and user space clears (and so re-protects) what it chooses with
//! `KVM_CLEAR_DIRTY_LOG`, in 64-page steps, just before it copies those
//! pages; with `KVM_DIRTY_LOG_INITIALLY_SET` too, a slot starts with every
//! bit set, so nothing needs write-protecting until user space first
//! clears. The rules and errors below are KVM's (`virt/kvm/kvm_main.c`).
//!
//! This file is pure logic; the VM (`vm.rs`) holds one [`DirtyBitmap`] per
//! logging slot (`memslot.rs`) and does the protecting and flushing.

use crate::abi::{KVM_DIRTY_LOG_INITIALLY_SET, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE};
use kernel::alloc::{flags::GFP_KERNEL_ACCOUNT, AllocError, KVVec};

/// What `KVM_CHECK_EXTENSION(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)` answers and
/// `KVM_ENABLE_CAP` accepts: x86's `KVM_DIRTY_LOG_MANUAL_CAPS`.
pub(crate) const MANUAL_CAPS: u64 =
    (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET) as u64;

/// Pages per bitmap word: the bitmap is an array of 64-bit words, bit `i`
/// of word `w` for page `64 * w + i` of the slot, as user space reads it.
pub(crate) const PAGES_PER_WORD: u64 = 64;

/// Checks `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)`'s argument:
/// `INITIALLY_SET` only with `PROTECT_ENABLE`, nothing else (`EINVAL`).
/// 0 turns manual protection off again.
pub(crate) fn manual_caps_ok(args0: u64) -> bool {
    let allowed = if args0 & u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) != 0 {
        MANUAL_CAPS
    } else {
        u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)
    };
    args0 & !allowed == 0
}

/// Whether the settings `manual` (as enabled) make a new logging slot
/// start with every bit set.
pub(crate) fn starts_all_dirty(manual: u64) -> bool {
    let both = MANUAL_CAPS;
    manual & both == both
}

/// Checks a `KVM_CLEAR_DIRTY_LOG` range against a slot of `slot_pages`
/// pages: it starts on a bitmap word, lies inside the slot, and is a whole
/// number of words unless it runs to the slot's end. KVM's checks, in its
/// order (`kvm_clear_dirty_log_protect`); `false` is `EINVAL`.
pub(crate) fn clear_range_ok(first_page: u64, num_pages: u32, slot_pages: u64) -> bool {
    let num_pages = u64::from(num_pages);
    if first_page % PAGES_PER_WORD != 0 || first_page > slot_pages {
        return false;
    }
    let left = slot_pages - first_page;
    num_pages <= left && (num_pages == left || num_pages % PAGES_PER_WORD == 0)
}

/// Bytes of user memory a `KVM_CLEAR_DIRTY_LOG` of `num_pages` reads: whole
/// words (KVM's `ALIGN(num_pages, BITS_PER_LONG) / 8`).
pub(crate) fn clear_bytes(num_pages: u32) -> usize {
    u64::from(num_pages).div_ceil(PAGES_PER_WORD) as usize * 8
}

/// One slot's dirty bits.
///
/// # Invariants
///
/// `words` has `pages.div_ceil(64)` words, and no bit at or past `pages`
/// is ever set, so user space never sees a page the slot does not have.
pub(crate) struct DirtyBitmap {
    words: KVVec<u64>,
    pages: u64,
}

impl DirtyBitmap {
    /// A bitmap for a slot of `pages` pages: all clear, or every page
    /// dirty if `all_set`.
    pub(crate) fn new(pages: u64, all_set: bool) -> Result<Self, AllocError> {
        let n = usize::try_from(pages.div_ceil(PAGES_PER_WORD)).map_err(|_| AllocError)?;
        let mut words = KVVec::from_elem(0u64, n, GFP_KERNEL_ACCOUNT)?;
        if all_set {
            for (w, word) in words.iter_mut().enumerate() {
                *word = Self::valid_bits(pages, w);
            }
        }
        // INVARIANT: `n` words, and `valid_bits` sets no bit past `pages`.
        Ok(Self { words, pages })
    }

    /// The bits of word `w` that stand for pages of a slot of `pages`.
    fn valid_bits(pages: u64, w: usize) -> u64 {
        let first = w as u64 * PAGES_PER_WORD;
        match pages.saturating_sub(first) {
            n if n >= PAGES_PER_WORD => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }

    /// The number of words (`KVM_GET_DIRTY_LOG` copies `8 * words()` bytes).
    pub(crate) fn words(&self) -> usize {
        self.words.len()
    }

    /// Marks page `page` of the slot dirty; pages past the slot's end are
    /// ignored.
    pub(crate) fn mark(&mut self, page: u64) {
        if page < self.pages {
            if let Some(word) = self.words.get_mut((page / PAGES_PER_WORD) as usize) {
                *word |= 1 << (page % PAGES_PER_WORD);
            }
        }
    }

    /// Whether page `page` is dirty.
    pub(crate) fn is_dirty(&self, page: u64) -> bool {
        self.words
            .get((page / PAGES_PER_WORD) as usize)
            .is_some_and(|w| w & (1 << (page % PAGES_PER_WORD)) != 0)
    }

    /// Word `w` as it is (0 past the end).
    pub(crate) fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }

    /// Word `w`, cleared: the pages user space now knows are dirty and
    /// that must be write-protected again.
    pub(crate) fn take(&mut self, w: usize) -> u64 {
        self.words.get_mut(w).map_or(0, core::mem::take)
    }

    /// Clears the bits of `mask` in word `w` and returns those that were
    /// set: the pages to write-protect again (KVM's
    /// `atomic_long_fetch_andnot`). Bits past the slot's end are never set,
    /// so a mask that has them clears nothing there.
    pub(crate) fn clear(&mut self, w: usize, mask: u64) -> u64 {
        match self.words.get_mut(w) {
            Some(word) => {
                let cleared = *word & mask;
                *word &= !mask;
                cleared
            }
            None => 0,
        }
    }
}
