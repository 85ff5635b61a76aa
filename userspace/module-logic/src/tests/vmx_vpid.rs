//! `module/vmx/vpid.rs`: the VPID map.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::vpid::{alloc, free, initial, WORDS};

fn map() -> Vec<AtomicU64> {
    (0..WORDS).map(|i| AtomicU64::new(initial(i))).collect()
}

#[test]
fn vpid_0_is_never_handed_out_and_ids_are_unique() {
    let m = map();
    let mut seen = HashSet::new();
    while let Some(v) = alloc(&m) {
        assert_ne!(v, 0, "VPID 0 is the host's");
        assert!(seen.insert(v), "VPID {v} handed out twice");
    }
    // Every VPID but 0, then none.
    assert_eq!(seen.len(), 65535);
    assert_eq!(alloc(&m), None);
    // Freeing 0 does not make it allocatable.
    free(&m, 0);
    assert_eq!(alloc(&m), None);
}

#[test]
fn a_freed_vpid_is_reused() {
    let m = map();
    let a = alloc(&m).unwrap();
    let b = alloc(&m).unwrap();
    assert_eq!((a, b), (1, 2));
    free(&m, a);
    assert_eq!(alloc(&m), Some(a));
    assert_eq!(alloc(&m), Some(3));
}

#[test]
fn threads_allocating_at_once_never_share_a_vpid() {
    let m = Arc::new(map());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || (0..2000).map(|_| alloc(&m).unwrap()).collect::<Vec<_>>())
        })
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for v in h.join().unwrap() {
            assert!(all.insert(v), "VPID {v} handed out twice");
        }
    }
    assert_eq!(all.len(), 8000);
}
