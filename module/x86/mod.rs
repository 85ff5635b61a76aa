// SPDX-License-Identifier: GPL-2.0

//! Architectural x86 state and rules, independent of SVM and VMX.
//!
//! Pure logic: nothing here calls a kernel service or touches hardware, so
//! a reader can check it against the manuals line by line, and it can be
//! unit-tested. The references are to the Intel SDM (Vol. 3A) and the AMD
//! APM (Vol. 2).

pub(crate) mod cpuid;
pub(crate) mod decode;
pub(crate) mod emulate;
pub(crate) mod guest_debug;
pub(crate) mod msr;
pub(crate) mod msr_filter;
pub(crate) mod pvclock;
pub(crate) mod regs;
pub(crate) mod smm;
pub(crate) mod tsc;
pub(crate) mod walk;
pub(crate) mod xsave;
