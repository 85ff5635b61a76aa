// SPDX-License-Identifier: GPL-2.0

//! The binary statistics format: what a file from `KVM_GET_STATS_FD` reads
//! (`Documentation/virt/kvm/api.rst`, "KVM_GET_STATS_FD").
//!
//! The file is four blocks, one after the other, all little-endian:
//!
//! | offset | block |
//! |---|---|
//! | 0 | `struct kvm_stats_header` (24 bytes): flags 0, the name size, the number of statistics, and the three offsets below |
//! | 24 | the id string (`kvm-<pid>`, or `kvm-<pid>/vcpu-<id>`), NUL-padded to the name size |
//! | 24 + name size | one descriptor per statistic: `struct kvm_stats_desc` (16 bytes: type, unit and base flags, exponent, size in `u64`s, offset into the data block, bucket size) and its name, NUL-padded to the name size |
//! | after the descriptors | the data: one `u64` per statistic here, in descriptor order |
//!
//! The layout never changes for a file; only the data does, and each read
//! copies what the counters hold at that moment. Pure logic: the kernel
//! glue (`stats/fd.rs`) supplies the values and copies the bytes out.

/// Room for a name or the id, NUL included: `KVM_STATS_NAME_SIZE`.
pub(crate) const NAME_SIZE: usize = 48;
/// `struct kvm_stats_header`.
const HEADER_SIZE: usize = 24;
/// `struct kvm_stats_desc` before its name.
const DESC_HEAD_SIZE: usize = 16;
/// One descriptor with its name.
const DESC_SIZE: usize = DESC_HEAD_SIZE + NAME_SIZE;

/// How a statistic behaves: the type bits of a descriptor's flags
/// (`KVM_STATS_TYPE_*`); the unit is "none" and the base 10 for every
/// statistic rkvm has, so those bits are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only grows (`KVM_STATS_TYPE_CUMULATIVE`).
    Cumulative = 0,
    /// A value now, which may go down (`KVM_STATS_TYPE_INSTANT`).
    Instant = 1,
}

/// One statistic: its name (at most `NAME_SIZE - 1` bytes) and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Desc {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

impl Desc {
    pub(crate) const fn cumulative(name: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Cumulative,
        }
    }

    pub(crate) const fn instant(name: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Instant,
        }
    }
}

/// Where the blocks of a file with `count` statistics start, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) id_offset: usize,
    pub(crate) desc_offset: usize,
    pub(crate) data_offset: usize,
    pub(crate) len: usize,
}

impl Layout {
    pub(crate) const fn of(count: usize) -> Self {
        let id_offset = HEADER_SIZE;
        let desc_offset = id_offset + NAME_SIZE;
        let data_offset = desc_offset + count * DESC_SIZE;
        Self {
            id_offset,
            desc_offset,
            data_offset,
            len: data_offset + count * 8,
        }
    }
}

/// Byte `i` of `field` (little-endian), 0 past its end.
fn le_byte(field: u64, i: usize) -> u8 {
    field.to_le_bytes().get(i).copied().unwrap_or(0)
}

/// Byte `i` of `s`, NUL-padded.
fn str_byte(s: &str, i: usize) -> u8 {
    s.as_bytes().get(i).copied().unwrap_or(0)
}

/// Byte `pos` of the file of statistics `descs` with `values` (one per
/// descriptor) and id `id`; `None` past its end.
fn byte_at(id: &str, descs: &[Desc], values: &[u64], pos: usize) -> Option<u8> {
    let layout = Layout::of(descs.len());
    if pos < layout.id_offset {
        // flags, name_size, num_desc, id_offset, desc_offset, data_offset:
        // six u32s.
        let field = match pos / 4 {
            0 => 0,
            1 => NAME_SIZE,
            2 => descs.len(),
            3 => layout.id_offset,
            4 => layout.desc_offset,
            _ => layout.data_offset,
        };
        return Some(le_byte(field as u64, pos % 4));
    }
    if pos < layout.desc_offset {
        return Some(str_byte(id, pos - layout.id_offset));
    }
    if pos < layout.data_offset {
        let n = (pos - layout.desc_offset) / DESC_SIZE;
        let at = (pos - layout.desc_offset) % DESC_SIZE;
        let desc = descs[n];
        return Some(match at {
            // flags: the type; unit none, base 10.
            0..=3 => le_byte(desc.kind as u64, at),
            // exponent 0.
            4..=5 => 0,
            // size: one u64.
            6..=7 => le_byte(1, at - 6),
            // offset into the data block.
            8..=11 => le_byte((n * 8) as u64, at - 8),
            // bucket_size 0.
            12..=15 => 0,
            _ => str_byte(desc.name, at - DESC_HEAD_SIZE),
        });
    }
    if pos < layout.len {
        let n = (pos - layout.data_offset) / 8;
        return Some(le_byte(
            values.get(n).copied().unwrap_or(0),
            (pos - layout.data_offset) % 8,
        ));
    }
    None
}

/// Fills `out` with the file's bytes from `offset` on; returns how many
/// there were (fewer than `out.len()` at the end, 0 past it).
pub(crate) fn read(id: &str, descs: &[Desc], values: &[u64], offset: u64, out: &mut [u8]) -> usize {
    let Ok(start) = usize::try_from(offset) else {
        return 0;
    };
    let mut n = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        let Some(byte) = start
            .checked_add(i)
            .and_then(|pos| byte_at(id, descs, values, pos))
        else {
            break;
        };
        *slot = byte;
        n += 1;
    }
    n
}

/// Whether every name fits with its NUL: checked for each table at build
/// time by its user.
pub(crate) const fn names_fit(descs: &[Desc]) -> bool {
    let mut i = 0;
    while i < descs.len() {
        if descs[i].name.len() >= NAME_SIZE {
            return false;
        }
        i += 1;
    }
    true
}
