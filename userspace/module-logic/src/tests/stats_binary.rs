//! `module/stats/binary.rs`: the bytes a `KVM_GET_STATS_FD` file reads,
//! laid out as `Documentation/virt/kvm/api.rst` describes and Linux's
//! kvm_binary_stats_test checks them.

use crate::stats::binary::{names_fit, read, Desc, Layout, NAME_SIZE};

const DESCS: [Desc; 2] = [Desc::cumulative("halt_exits"), Desc::instant("pages_4k")];

fn file(values: &[u64]) -> Vec<u8> {
    let mut out = vec![0xaa; 4096];
    let n = read("kvm-42/vcpu-3", &DESCS, values, 0, &mut out);
    out.truncate(n);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

#[test]
fn the_header_names_the_blocks_which_do_not_overlap() {
    let f = file(&[7, 9]);
    let layout = Layout::of(2);
    assert_eq!(f.len(), layout.len);
    assert_eq!(u32_at(&f, 0), 0, "flags");
    assert_eq!(u32_at(&f, 4) as usize, NAME_SIZE, "name_size");
    assert_eq!(u32_at(&f, 8), 2, "num_desc");
    assert_eq!(u32_at(&f, 12), 24, "id_offset: right after the header");
    assert_eq!(u32_at(&f, 16) as usize, 24 + NAME_SIZE, "desc_offset");
    assert_eq!(
        u32_at(&f, 20) as usize,
        24 + NAME_SIZE + 2 * (16 + NAME_SIZE),
        "data_offset: after the descriptors"
    );
    assert_eq!(layout.len, layout.data_offset + 16);
}

#[test]
fn the_id_and_names_are_nul_padded_and_descriptors_point_at_their_data() {
    let f = file(&[7, 9]);
    let id = &f[24..24 + NAME_SIZE];
    assert!(id.starts_with(b"kvm-42/vcpu-3\0"));
    assert!(id[13..].iter().all(|&b| b == 0));
    let desc = |i: usize| &f[24 + NAME_SIZE + i * (16 + NAME_SIZE)..][..16 + NAME_SIZE];
    // Cumulative (type 0), instant (type 1); unit none, base 10.
    assert_eq!(u32_at(desc(0), 0), 0);
    assert_eq!(u32_at(desc(1), 0), 1);
    for i in 0..2 {
        let d = desc(i);
        assert_eq!(&d[4..6], &[0, 0], "exponent");
        assert_eq!(u16::from_le_bytes([d[6], d[7]]), 1, "size: one u64");
        assert_eq!(u32_at(d, 8) as usize, i * 8, "offset in the data block");
        assert_eq!(u32_at(d, 12), 0, "bucket_size");
    }
    assert!(desc(0)[16..].starts_with(b"halt_exits\0"));
    assert!(desc(1)[16..].starts_with(b"pages_4k\0"));
    let data = Layout::of(2).data_offset;
    assert_eq!(u64::from_le_bytes(f[data..data + 8].try_into().unwrap()), 7);
    assert_eq!(
        u64::from_le_bytes(f[data + 8..data + 16].try_into().unwrap()),
        9
    );
}

#[test]
fn a_read_at_any_offset_is_that_window_and_ends_at_the_end() {
    let whole = file(&[1, 2]);
    let mut window = [0u8; 10];
    assert_eq!(read("kvm-42/vcpu-3", &DESCS, &[1, 2], 20, &mut window), 10);
    assert_eq!(&window, &whole[20..30]);
    let end = whole.len() as u64;
    assert_eq!(
        read("kvm-42/vcpu-3", &DESCS, &[1, 2], end - 3, &mut window),
        3
    );
    assert_eq!(read("kvm-42/vcpu-3", &DESCS, &[1, 2], end, &mut window), 0);
    assert_eq!(
        read("kvm-42/vcpu-3", &DESCS, &[1, 2], u64::MAX, &mut window),
        0
    );
}

#[test]
fn a_name_must_leave_room_for_its_nul() {
    assert!(names_fit(&DESCS));
    const LONG: &str = "a_name_of_exactly_forty_eight_characters_1234567";
    assert_eq!(LONG.len(), NAME_SIZE);
    assert!(!names_fit(&[Desc::cumulative(LONG)]));
}
