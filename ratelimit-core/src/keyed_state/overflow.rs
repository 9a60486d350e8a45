//! The overflow sketch: a count-min of maxima that remembers the debt of evicted buckets.
//!
//! Apart because it is what keeps the bound when the table is full: a key that comes back starts
//! from the sketch's estimate, never below the arrival time it left with.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many rows the overflow sketch has: a newcomer is over-charged only when all of its cells
/// collide with recently evicted keys, and each row makes that rarer by its own factor.
const OVERFLOW_ROWS: usize = 4;

/// Evicted buckets, folded into a count-min sketch of maxima: `OVERFLOW_ROWS` rows of
/// `width` theoretical arrival times. A cell is the latest arrival time of every key evicted into
/// it, so the least of a key's cells can only over-estimate that key's own.
///
/// Memory: `OVERFLOW_ROWS × width × 8` bytes, with `width` the power of two at or above
/// `max_keys` (32 bytes per key of that power of two: 4 MiB for 100,000 keys).
pub(super) struct Overflow {
    // Relaxed: a cell is written only by `fetch_max` under the write lock of the shard that held
    // the evicted key, and read for a key only under that same shard's lock (the key's shard), so
    // the lock orders every write before the reads that must see it. Reads for other keys may see
    // a stale cell: a stale cell is a lower value of a *different* key, which that key never had.
    cells: Box<[AtomicU64]>,
    width_bits: u32,
    seeds: [u64; OVERFLOW_ROWS],
}

impl Overflow {
    pub(super) fn new(max_keys: usize) -> Self {
        let width = max_keys.max(1024).next_power_of_two();
        // Per process and secret: an attacker who could predict the cells could pick keys that
        // collide with a victim's and over-charge it.
        let mut rng = fastrand::Rng::new();
        Overflow {
            cells: (0..width * OVERFLOW_ROWS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            width_bits: width.trailing_zeros(),
            seeds: std::array::from_fn(|_| rng.u64(..) | 1),
        }
    }

    #[inline]
    fn cell(&self, row: usize, hash: u64) -> &AtomicU64 {
        let seed = self.seeds.get(row).copied().unwrap_or(1);
        // A multiply-shift hash per row over the table's (already keyed) hash.
        let column =
            ((hash ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.width_bits)) as usize;
        let index = (row << self.width_bits) | column;
        // The index is below OVERFLOW_ROWS × width by construction.
        &self.cells[index]
    }

    /// The least of the key's cells: at or above the arrival time of the key when it was evicted.
    pub(super) fn estimate(&self, hash: u64) -> u64 {
        (0..OVERFLOW_ROWS)
            .map(|row| self.cell(row, hash).load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    pub(super) fn fold(&self, hash: u64, tat: u64) {
        for row in 0..OVERFLOW_ROWS {
            self.cell(row, hash).fetch_max(tat, Ordering::Relaxed);
        }
    }
}
