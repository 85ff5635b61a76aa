//! A small seeded random number generator (SplitMix64 to seed, xorshift64*
//! to draw): the same seed gives the same choices, on every machine.

/// Mixes `x` into a well-spread 64-bit value (SplitMix64's finalizer).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The seed of thread `thread` of epoch `epoch` of a run seeded with `seed`.
pub(crate) fn derive(seed: u64, epoch: u64, thread: u64) -> u64 {
    mix(mix(mix(seed) ^ epoch) ^ thread)
}

/// A xorshift64* generator.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub(crate) fn new(seed: u64) -> Self {
        Self(mix(seed) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// An index into a collection of `len` elements (0 when empty).
    pub(crate) fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    /// True with probability `percent`/100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.index(items.len())).copied()
    }

    /// A value in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// An "interesting" 64-bit value: small numbers, boundaries, powers of
    /// two, or plain random bits.
    pub(crate) fn interesting(&mut self) -> u64 {
        match self.below(6) {
            0 => self.below(16),
            1 => u64::MAX - self.below(4),
            2 => 1 << self.below(64),
            3 => (1 << self.below(64)) - 1,
            4 => u64::from(u32::MAX) - self.below(4),
            _ => self.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..8).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        let mut c = Rng::new(43);
        assert_ne!(xs, (0..8).map(|_| c.next()).collect::<Vec<_>>());
    }

    #[test]
    fn derived_seeds_differ_per_epoch_and_thread() {
        assert_ne!(derive(1, 0, 0), derive(1, 0, 1));
        assert_ne!(derive(1, 0, 0), derive(1, 1, 0));
        assert_eq!(derive(7, 3, 2), derive(7, 3, 2));
    }

    #[test]
    fn below_and_range_stay_in_bounds() {
        let mut r = Rng::new(0);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
            let v = r.range(3, 5);
            assert!((3..=5).contains(&v));
        }
        assert_eq!(r.below(0), 0);
    }
}
