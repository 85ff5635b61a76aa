// SPDX-License-Identifier: GPL-2.0

//! The binary statistics fds of `KVM_GET_STATS_FD`, on VM and vCPU fds.
//!
//! A read-only anonymous-inode file; a read (or `pread`) at any position
//! gets the bytes [`super::binary`] lays out, with the counters' values at
//! that moment. The file holds the counters, not the VM or vCPU, so it stays
//! readable after they are closed (KVM keeps a reference to the VM for the
//! same reason). It has no ioctls (`ENOTTY`).

use super::binary::{self, Desc, NAME_SIZE};
use super::{VcpuStats, VmStats};
use crate::sys::cpu;
use crate::sys::file::{new_readonly_anon_fd, FileObject, FileOps};
use crate::vm::NameBuf;
use core::fmt::Write;
use kernel::alloc::flags::GFP_KERNEL_ACCOUNT;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};

/// Whose counters a statistics fd reads.
enum Source {
    Vm(Arc<VmStats>),
    Vcpu(Arc<VcpuStats>),
}

/// One statistics fd.
pub(crate) struct StatsFd {
    /// The id string: `kvm-<pid>` for a VM, `kvm-<pid>/vcpu-<id>` for a
    /// vCPU, as KVM names them (`pid` the process asking for the fd).
    id: NameBuf,
    source: Source,
}

static STATS_FOPS: FileOps<StatsFd> = FileOps::new();

impl StatsFd {
    /// A new statistics fd of a VM's counters; returns its number.
    pub(crate) fn new_vm(stats: Arc<VmStats>) -> Result<isize> {
        let mut id = NameBuf::default();
        write!(id, "kvm-{}", cpu::current_pid()).map_err(|_| EINVAL)?;
        Self::install(id, Source::Vm(stats))
    }

    /// A new statistics fd of vCPU `vcpu_id`'s counters; returns its
    /// number.
    pub(crate) fn new_vcpu(stats: Arc<VcpuStats>, vcpu_id: u32) -> Result<isize> {
        let mut id = NameBuf::default();
        write!(id, "kvm-{}/vcpu-{vcpu_id}", cpu::current_pid()).map_err(|_| EINVAL)?;
        Self::install(id, Source::Vcpu(stats))
    }

    fn install(id: NameBuf, source: Source) -> Result<isize> {
        // The id and its NUL must fit the name size (KVM_STATS_NAME_SIZE).
        if id.len >= NAME_SIZE {
            return Err(EINVAL);
        }
        let fd = Arc::new(StatsFd { id, source }, GFP_KERNEL_ACCOUNT)?;
        let n = new_readonly_anon_fd(c"rkvm-stats", &STATS_FOPS, fd)?;
        Ok(n as isize)
    }

    /// The file's bytes with `descs` and their `values`.
    fn render(&self, descs: &[Desc], values: &[u64]) -> Result<KVec<u8>> {
        let id = core::str::from_utf8(&self.id.bytes[..self.id.len]).map_err(|_| EINVAL)?;
        let len = binary::Layout::of(descs.len()).len;
        let mut bytes = KVec::from_elem(0u8, len, GFP_KERNEL_ACCOUNT)?;
        let n = binary::read(id, descs, values, 0, &mut bytes);
        bytes.truncate(n);
        Ok(bytes)
    }
}

impl FileObject for StatsFd {
    fn ioctl(_this: ArcBorrow<'_, Self>, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }

    const READABLE: bool = true;

    fn contents(&self) -> Result<KVec<u8>> {
        match &self.source {
            Source::Vm(stats) => self.render(&VmStats::DESCS, &stats.values()),
            Source::Vcpu(stats) => self.render(&VcpuStats::DESCS, &stats.values()),
        }
    }
}
