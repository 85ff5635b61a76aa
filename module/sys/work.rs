// SPDX-License-Identifier: GPL-2.0

//! Work items: what the kernel crate's `workqueue` module leaves out.

use kernel::bindings;
use kernel::workqueue::Work;

/// Waits until `work` is neither queued nor running (`flush_work`): a
/// queued run holds a reference to its owner, so after this the owner
/// can be let go knowing no run of it is left.
pub(crate) fn flush<T: ?Sized, const ID: u64>(work: &Work<T, ID>) {
    // SAFETY: `work` is an initialised, pinned work item (a `Work` exists only so); flushing
    // it only waits.
    unsafe { bindings::flush_work(Work::raw_get(work)) };
}
