//! What this process last saw of each busy bucket, to pick the right conditional write first.
//!
//! A decision is one `UpdateItem` whose update and condition depend on whether the bucket is full
//! (state at or before now) or partly spent. Guessing wrong costs one extra request, never a wrong
//! decision: the failed condition returns the item and the next attempt uses its true state. So
//! the hint need not be exact or even consistent: a fixed, direct-mapped table of (key hash, state)
//! pairs, lock-free and bounded, where a collision just loses a hint.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in the table: 4096 × 16 bytes = 64 KiB per store.
const SLOTS: usize = 4096;

/// A bounded, lossy map from key to the last bucket state seen for it.
pub(crate) struct Hints {
    hasher: std::collections::hash_map::RandomState,
    // Each slot is [key hash, state]. The two words are written separately, so a reader may pair a
    // hash with another key's state; that only makes a guess wrong, which the condition catches.
    slots: Box<[[AtomicU64; 2]]>,
}

impl Hints {
    pub(crate) fn new() -> Self {
        Hints {
            hasher: std::collections::hash_map::RandomState::new(),
            slots: (0..SLOTS)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
        }
    }

    fn slot(&self, key: &str) -> (u64, &[AtomicU64; 2]) {
        // A hash of 0 marks an empty slot; map it elsewhere.
        let hash = self.hasher.hash_one(key).max(1);
        // SLOTS is a power of two far below u64::MAX, so the cast cannot truncate what matters.
        let index = (hash as usize) & (SLOTS - 1);
        (hash, &self.slots[index])
    }

    /// The state last recorded for `key`, if its slot still holds it.
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        let (hash, slot) = self.slot(key);
        // Relaxed: a hint publishes no other memory, and a stale or torn pair is tolerated (above).
        (slot[0].load(Ordering::Relaxed) == hash).then(|| slot[1].load(Ordering::Relaxed))
    }

    /// Records the state just seen or written for `key`.
    pub(crate) fn set(&self, key: &str, state: u64) {
        let (hash, slot) = self.slot(key);
        slot[0].store(hash, Ordering::Relaxed);
        slot[1].store(state, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Hints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hints").field("slots", &SLOTS).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_forgets() {
        let hints = Hints::new();
        assert_eq!(hints.get("a"), None);
        hints.set("a", 42);
        assert_eq!(hints.get("a"), Some(42));
        // Four times as many keys as slots: "a" may be evicted or kept, and whatever is kept is
        // the key's own state, never another key's.
        let keys = SLOTS * 4;
        for i in 0..keys {
            hints.set(&format!("k{i}"), i as u64);
        }
        assert!(matches!(hints.get("a"), None | Some(42)));
        let mut remembered = 0;
        for i in 0..keys {
            match hints.get(&format!("k{i}")) {
                None => {}
                Some(state) => {
                    assert_eq!(state, i as u64, "k{i} answered with another key's state");
                    remembered += 1;
                }
            }
        }
        // Never more than the fixed table: a map that grew with its keys would remember them all.
        assert!(
            remembered <= SLOTS,
            "{remembered} hints remembered in a table of {SLOTS} slots"
        );
        // And the table is used: the last key written to each slot is there.
        assert!(
            remembered >= SLOTS / 2,
            "only {remembered} of {SLOTS} slots hold a hint"
        );
    }
}
