// SPDX-License-Identifier: GPL-2.0

//! Virtual-processor identifiers: the tag VMX puts on a vCPU's cached
//! linear translations, so that they survive VM entries and exits without
//! mixing with the host's (VPID 0) or another vCPU's. SDM Vol. 3C 29.1.
//!
//! One bit per VPID in use, in 64-bit words, set and cleared with atomic
//! operations so that vCPU creation needs no lock. Pure logic, tested on
//! the host (`userspace/module-logic`).

use core::sync::atomic::{AtomicU64, Ordering};

/// Words in the map: 1024 × 64 bits cover the 16-bit VPID space.
pub(crate) const WORDS: usize = 1024;

/// The value word `i` starts with: VPID 0 is the host's, so its bit is
/// set from the start and never handed out.
pub(crate) const fn initial(i: usize) -> u64 {
    if i == 0 {
        1
    } else {
        0
    }
}

/// Takes the lowest free VPID of `words` (made with [`initial`]), or
/// `None` if every one is taken.
pub(crate) fn alloc(words: &[AtomicU64]) -> Option<u16> {
    for (w, word) in words.iter().enumerate().take(WORDS) {
        let mut cur = word.load(Ordering::Relaxed);
        while cur != u64::MAX {
            let bit = (!cur).trailing_zeros();
            match word.compare_exchange(cur, cur | 1 << bit, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some((w * 64) as u16 + bit as u16),
                // Another vCPU took a bit of this word meanwhile: look again.
                Err(now) => cur = now,
            }
        }
    }
    None
}

/// Gives `vpid` back. VPID 0 is never freed.
pub(crate) fn free(words: &[AtomicU64], vpid: u16) {
    if vpid == 0 {
        return;
    }
    if let Some(word) = words.get(usize::from(vpid) / 64) {
        word.fetch_and(!(1 << (vpid % 64)), Ordering::AcqRel);
    }
}
