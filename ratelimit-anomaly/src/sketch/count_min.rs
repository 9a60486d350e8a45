//! A count-min sketch on atomic counters, over two rotating windows.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Counters per key: the estimate is the smallest of `DEPTH` counters, so it overestimates only
/// when a key collides with heavier keys in all of them.
const DEPTH: usize = 4;

/// Counters in one 64-byte cache line. A key's `DEPTH` counters all lie in one line (a "blocked"
/// count-min sketch): one cache miss per request instead of `DEPTH`, for slightly more collisions.
const LINE: usize = 16;

/// Approximate per-key counts for the current window and the one before it, in constant memory.
///
/// `add` counts into the current window; [`rotate`](Self::rotate) (once a tick, from one thread)
/// makes it the previous window and starts a new one. An estimate is never below the true count
/// and, with probability `1 - (1/2)^DEPTH`, at most `e / width` of the window's total above it.
#[derive(Debug)]
pub struct CountMin {
    width_mask: usize,
    windows: [Box<[AtomicU32]>; 2],
    current: AtomicUsize,
}

impl CountMin {
    /// A sketch of `4 × width` counters (`width` rounded up to a power of two, at least 64).
    pub fn new(width: usize) -> Self {
        let width = width.max(64).next_power_of_two();
        let window = || (0..width * DEPTH).map(|_| AtomicU32::new(0)).collect();
        CountMin {
            width_mask: width - 1,
            windows: [window(), window()],
            current: AtomicUsize::new(0),
        }
    }

    fn cells(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        // The line from the hash's low bits; within it, DEPTH distinct slots of 16 from four
        // nibbles of the high bits (offsets by row keep them distinct: row r uses slots
        // 4r..4r+3).
        let lines = (self.width_mask + 1) * DEPTH / LINE;
        let line = (hash as usize) & (lines - 1);
        let high = hash >> 40;
        (0..DEPTH).map(move |row| line * LINE + row * 4 + ((high >> (2 * row)) & 3) as usize)
    }

    /// Counts `count` for the key of `hash` in the current window; returns its new estimate there.
    #[inline]
    pub fn add(&self, hash: u64, count: u32) -> u32 {
        // Relaxed: counters are statistics; a count that lands in the window being rotated out is
        // counted in that window, which is as good as either.
        let window = &self.windows[self.current.load(Ordering::Relaxed) & 1];
        let mut estimate = u32::MAX;
        for cell in self.cells(hash) {
            let after = window[cell]
                .fetch_add(count, Ordering::Relaxed)
                .saturating_add(count);
            estimate = estimate.min(after);
        }
        estimate
    }

    /// The key's estimated count in the current window.
    pub fn current(&self, hash: u64) -> u32 {
        self.estimate(self.current.load(Ordering::Relaxed) & 1, hash)
    }

    /// The key's estimated count in the previous (complete) window.
    pub fn previous(&self, hash: u64) -> u32 {
        self.estimate((self.current.load(Ordering::Relaxed) + 1) & 1, hash)
    }

    fn estimate(&self, window: usize, hash: u64) -> u32 {
        self.cells(hash)
            .map(|cell| self.windows[window][cell].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Ends the current window: it becomes the previous one, and the oldest is cleared and reused.
    /// Call from one thread (the tick).
    pub fn rotate(&self) {
        let next = (self.current.load(Ordering::Relaxed) + 1) & 1;
        for counter in self.windows[next].iter() {
            counter.store(0, Ordering::Relaxed);
        }
        self.current.store(next, Ordering::Relaxed);
    }

    /// Bytes of counters held.
    pub fn memory(&self) -> usize {
        2 * (self.width_mask + 1) * DEPTH * std::mem::size_of::<AtomicU32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::hash_key;

    #[test]
    fn never_underestimates_and_rarely_overestimates_much() {
        let sketch = CountMin::new(1024);
        let mut truth = Vec::new();
        for i in 0..5000u32 {
            let key = format!("k{i}");
            let count = 1 + i % 7;
            sketch.add(hash_key(&key), count);
            truth.push((key, count));
        }
        let total: u32 = truth.iter().map(|(_, c)| c).sum();
        let mut far_off = 0;
        for (key, count) in &truth {
            let estimate = sketch.current(hash_key(key));
            assert!(estimate >= *count);
            // e / width of the total: 2.72 / 1024 · 20,000 ≈ 53.
            if estimate - count > total * 3 / 1024 {
                far_off += 1;
            }
        }
        assert!(far_off < truth.len() / 10, "{far_off} far-off estimates");
    }

    #[test]
    fn rotation_keeps_one_window() {
        let sketch = CountMin::new(64);
        let key = hash_key("a");
        sketch.add(key, 5);
        sketch.rotate();
        assert_eq!(sketch.previous(key), 5);
        assert_eq!(sketch.current(key), 0);
        sketch.add(key, 2);
        sketch.rotate();
        assert_eq!(sketch.previous(key), 2);
        assert_eq!(sketch.current(key), 0);
    }
}
