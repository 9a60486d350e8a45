//! The Bloom filter the cohort sets are made of: atomic words, so the hot path inserts without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits set per key.
const HASHES: u64 = 4;

/// A Bloom filter on atomic words: inserted from any thread with `fetch_or`.
pub(super) struct Bloom {
    // Relaxed: a bit is a fact on its own; a reader that misses a bit set a moment ago treats a
    // client as a newcomer for one more request, which is the conservative side.
    words: Box<[AtomicU64]>,
    mask: u64,
}

impl Bloom {
    pub(super) fn new(bits: usize) -> Self {
        let bits = bits.max(1 << 12).next_power_of_two();
        Bloom {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits as u64 - 1,
        }
    }

    /// Kirsch–Mitzenmacher: `HASHES` positions from one 64-bit hash.
    fn positions(&self, hash: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        let (h1, h2) = (hash, hash.rotate_left(32) | 1);
        (0..HASHES).map(move |i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    pub(super) fn contains(&self, hash: u64) -> bool {
        self.positions(hash).all(|(word, bit)| {
            self.words
                .get(word)
                .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
        })
    }

    pub(super) fn insert(&self, hash: u64) {
        for (word, bit) in self.positions(hash) {
            if let Some(w) = self.words.get(word) {
                w.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn clear(&self) {
        for word in self.words.iter() {
            word.store(0, Ordering::Relaxed);
        }
    }

    /// Adds every member of `other` (of the same size).
    pub(super) fn union(&self, other: &Bloom) {
        for (mine, theirs) in self.words.iter().zip(other.words.iter()) {
            mine.fetch_or(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Becomes a copy of `other` (of the same size).
    pub(super) fn copy_from(&self, other: &Bloom) {
        for (mine, theirs) in self.words.iter().zip(other.words.iter()) {
            mine.store(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub(super) fn memory(&self) -> usize {
        self.words.len() * 8
    }
}
