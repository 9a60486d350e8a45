//! The heaviest keys of a window: a small Space-Saving table fed by count-min estimates.

use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

/// A key and its estimated count in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeavyHitter {
    /// The key.
    pub key: String,
    /// Its hash ([`hash_key`](super::hash_key)).
    pub hash: u64,
    /// Its estimated count.
    pub count: u32,
}

/// The `capacity` keys with the highest counts in the current window.
///
/// A request offers its key with its count-min estimate. Keys below the table's smallest count
/// (most of them) return after one atomic load. Heavier ones take the table's lock with
/// `try_lock`: if another request holds it, the offer is dropped rather than waited for, so the
/// hot path never blocks; a heavy key is offered again by its next request.
#[derive(Debug)]
pub struct TopK {
    capacity: usize,
    entries: Mutex<Vec<HeavyHitter>>,
    // Relaxed: a hint that lets light keys skip the lock; a stale value only costs a try_lock.
    floor: AtomicU32,
}

impl TopK {
    /// A table of `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        TopK {
            capacity: capacity.max(1),
            entries: Mutex::new(Vec::with_capacity(capacity.max(1))),
            floor: AtomicU32::new(0),
        }
    }

    /// Offers `key` (of `hash`) with its estimated count in the current window.
    #[inline]
    pub fn offer(&self, key: &str, hash: u64, estimate: u32) {
        if estimate <= self.floor.load(Ordering::Relaxed) {
            return;
        }
        let Some(mut entries) = self.entries.try_lock() else {
            return;
        };
        if let Some(entry) = entries.iter_mut().find(|e| e.hash == hash && e.key == key) {
            entry.count = entry.count.max(estimate);
        } else if entries.len() < self.capacity {
            entries.push(HeavyHitter {
                key: key.to_string(),
                hash,
                count: estimate,
            });
        } else if let Some(lightest) = entries.iter_mut().min_by_key(|e| e.count) {
            // Space-Saving: the newcomer takes the lightest entry's place.
            if estimate > lightest.count {
                *lightest = HeavyHitter {
                    key: key.to_string(),
                    hash,
                    count: estimate,
                };
            }
        }
        if entries.len() == self.capacity {
            let floor = entries.iter().map(|e| e.count).min().unwrap_or(0);
            self.floor.store(floor, Ordering::Relaxed);
        }
    }

    /// Ends the window: returns its heavy hitters, heaviest first, and starts an empty table.
    pub fn rotate(&self) -> Vec<HeavyHitter> {
        let mut entries = std::mem::take(&mut *self.entries.lock());
        self.floor.store(0, Ordering::Relaxed);
        entries.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::{CountMin, hash_key};

    #[test]
    fn finds_the_heavy_keys_among_many_light_ones() {
        let (sketch, top) = (CountMin::new(4096), TopK::new(8));
        let mut rng = fastrand::Rng::with_seed(1);
        for i in 0..50_000u32 {
            // Three heavy keys send a tenth of the traffic each; the rest is spread over 20,000.
            let key = match i % 10 {
                0 => "heavy-a".to_string(),
                1 => "heavy-b".to_string(),
                2 => "heavy-c".to_string(),
                _ => format!("light-{}", rng.u32(0..20_000)),
            };
            let hash = hash_key(&key);
            let estimate = sketch.add(hash, 1);
            top.offer(&key, hash, estimate);
        }
        let heavy = top.rotate();
        let names: Vec<&str> = heavy.iter().take(3).map(|h| h.key.as_str()).collect();
        for name in ["heavy-a", "heavy-b", "heavy-c"] {
            assert!(names.contains(&name), "{name} missing from {heavy:?}");
        }
        assert!(heavy[0].count >= 5_000);
        assert!(top.rotate().is_empty());
    }
}
