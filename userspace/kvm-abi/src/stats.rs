//! Binary statistics fds (`KVM_GET_STATS_FD` on a VM or vCPU fd): the
//! header, id, descriptors and data of `Documentation/virt/kvm/api.rst`,
//! read with `pread`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::sys::kvm_stats_header;

/// One statistic's descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatDesc {
    /// Its name.
    pub name: String,
    /// `KVM_STATS_TYPE_*`, `KVM_STATS_UNIT_*` and `KVM_STATS_BASE_*` bits.
    pub flags: u32,
    /// The unit's power of the base.
    pub exponent: i16,
    /// How many `u64`s it has.
    pub size: u16,
    /// Its byte offset in the data block.
    pub offset: u32,
    /// A linear histogram's bucket size (0 otherwise).
    pub bucket_size: u32,
}

/// A statistics fd, its header and descriptors read once.
#[derive(Debug)]
pub struct BinaryStats {
    fd: OwnedFd,
    /// The header.
    pub header: kvm_stats_header,
    /// The id string (without its NUL padding).
    pub id: String,
    /// The descriptors, in file order.
    pub descs: Vec<StatDesc>,
}

/// `pread` of `buf.len()` bytes at `offset`; how many were read.
fn pread(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> Result<usize> {
    let offset = libc::off_t::try_from(offset).map_err(|_| Error::new("pread", Errno::EINVAL))?;
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) };
    usize::try_from(n).map_err(|_| Error::new("pread", Errno::last()))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl BinaryStats {
    /// Reads the header, id and descriptors of statistics fd `fd`.
    pub fn new(fd: OwnedFd) -> Result<Self> {
        let mut raw = [0u8; size_of::<kvm_stats_header>()];
        if pread(&fd, &mut raw, 0)? != raw.len() {
            return Err(Error::new("KVM stats header", Errno::EIO));
        }
        let header = kvm_stats_header {
            flags: le_u32(&raw, 0),
            name_size: le_u32(&raw, 4),
            num_desc: le_u32(&raw, 8),
            id_offset: le_u32(&raw, 12),
            desc_offset: le_u32(&raw, 16),
            data_offset: le_u32(&raw, 20),
        };
        let name_size = header.name_size as usize;
        let mut id = vec![0u8; name_size];
        if pread(&fd, &mut id, header.id_offset.into())? != name_size {
            return Err(Error::new("KVM stats id", Errno::EIO));
        }
        let desc_size = 16 + name_size;
        let mut descs_raw = vec![0u8; desc_size * header.num_desc as usize];
        if pread(&fd, &mut descs_raw, header.desc_offset.into())? != descs_raw.len() {
            return Err(Error::new("KVM stats descriptors", Errno::EIO));
        }
        let descs = descs_raw
            .chunks_exact(desc_size)
            .map(|d| StatDesc {
                flags: le_u32(d, 0),
                exponent: i16::from_le_bytes([d[4], d[5]]),
                size: u16::from_le_bytes([d[6], d[7]]),
                offset: le_u32(d, 8),
                bucket_size: le_u32(d, 12),
                name: c_string(&d[16..]),
            })
            .collect();
        Ok(Self {
            fd,
            header,
            id: c_string(&id),
            descs,
        })
    }

    /// The first `u64` of statistic `name` now, if it exists.
    pub fn get(&self, name: &str) -> Result<Option<u64>> {
        let Some(desc) = self.descs.iter().find(|d| d.name == name) else {
            return Ok(None);
        };
        let mut value = [0u8; 8];
        let at = u64::from(self.header.data_offset) + u64::from(desc.offset);
        if pread(&self.fd, &mut value, at)? != 8 {
            return Err(Error::new("KVM stats data", Errno::EIO));
        }
        Ok(Some(u64::from_le_bytes(value)))
    }

    /// `pread` of the file's raw bytes at `offset`; how many were read.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        pread(&self.fd, buf, offset)
    }
}

impl AsFd for BinaryStats {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
