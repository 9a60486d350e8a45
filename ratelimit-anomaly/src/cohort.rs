//! Who was here before: the established clients, in fixed memory, so that an aggregate anomaly
//! can be met by limiting the identities that arrived with it rather than everyone.
//!
//! A client is **established** once it has been seen in two different epochs (of
//! [`CohortConfig::epoch_ticks`] ticks, not necessarily in a row) while the controller was learning
//! (its normal state).
//! Identities that appear with a flood are therefore newcomers for as long as the anomaly lasts:
//! learning stops the tick the controller becomes suspicious. Membership is kept in Bloom filters
//! on atomic words (no false negatives: an established client is never taken for a newcomer;
//! false positives at the configured capacity are about 2%), in two generations that are rotated
//! every [`CohortConfig::generation_epochs`] epochs, so a client that stops coming is forgotten
//! after one to two generations. Hashes come from [`hash_key`](crate::sketch::hash_key), seeded per
//! process, so an attacker cannot aim its keys at the filter's bits.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Sizes and periods of the cohort sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CohortConfig {
    /// Clients the sets are sized for (memory: about `capacity` bytes per filter, five filters).
    pub capacity: usize,
    /// Ticks per epoch: a client seen in two epochs is established.
    pub epoch_ticks: u64,
    /// Epochs per generation of the established set.
    pub generation_epochs: u64,
}

impl Default for CohortConfig {
    fn default() -> Self {
        CohortConfig {
            capacity: 1 << 20,
            epoch_ticks: 30,
            generation_epochs: 2 * 24 * 120, // two days of one-second ticks
        }
    }
}

/// What the cohort sets record, as the controller's state allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learning {
    /// Every sighting: first sightings go into the history, returning clients are established.
    On,
    /// Nothing (while anything is mitigated): whoever arrives now stays a newcomer.
    Off,
}

/// Bits set per key.
const HASHES: u64 = 4;

/// A Bloom filter on atomic words: inserted from any thread with `fetch_or`.
struct Bloom {
    // Relaxed: a bit is a fact on its own; a reader that misses a bit set a moment ago treats a
    // client as a newcomer for one more request, which is the conservative side.
    words: Box<[AtomicU64]>,
    mask: u64,
}

impl Bloom {
    fn new(bits: usize) -> Self {
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

    fn contains(&self, hash: u64) -> bool {
        self.positions(hash).all(|(word, bit)| {
            self.words
                .get(word)
                .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
        })
    }

    fn insert(&self, hash: u64) {
        for (word, bit) in self.positions(hash) {
            if let Some(w) = self.words.get(word) {
                w.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    fn clear(&self) {
        for word in self.words.iter() {
            word.store(0, Ordering::Relaxed);
        }
    }

    fn memory(&self) -> usize {
        self.words.len() * 8
    }
}

/// The established clients and the sightings that make them so.
pub struct Cohorts {
    config: CohortConfig,
    // Who was seen in the current epoch.
    this_epoch: Bloom,
    // Who was seen at all, by generation: `history[generation % 2]` receives sightings.
    history: [Bloom; 2],
    // Established generations: `established[generation % 2]` receives new members; a client is
    // established while it is in either.
    established: [Bloom; 2],
    // Relaxed: counters and flags read and written by the tick and the hot path; a stale read
    // misfiles at most a request or two around an epoch boundary.
    epoch: AtomicUsize,
    generation: AtomicUsize,
    ticks: AtomicU64,
    learning: AtomicBool,
}

impl Cohorts {
    /// Empty sets sized by `config`.
    pub fn new(config: CohortConfig) -> Self {
        let bits = config.capacity.saturating_mul(8);
        Cohorts {
            config,
            this_epoch: Bloom::new(bits),
            history: [Bloom::new(bits), Bloom::new(bits)],
            established: [Bloom::new(bits), Bloom::new(bits)],
            epoch: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            ticks: AtomicU64::new(0),
            learning: AtomicBool::new(true),
        }
    }

    /// Records a sighting of the client of `hash` and says whether it is established. While not
    /// learning nothing is recorded: identities that arrive during an anomaly stay newcomers.
    #[inline]
    pub fn observe(&self, hash: u64) -> bool {
        let established = self.is_established(hash);
        if !self.learning.load(Ordering::Relaxed) || self.this_epoch.contains(hash) {
            return established;
        }
        // The first sighting this epoch: seen before means seen in an earlier epoch.
        let generation = self.generation.load(Ordering::Relaxed) % 2;
        let seen_before = self.history.iter().any(|b| b.contains(hash));
        if seen_before || established {
            // New, or still active and carried into the current generation.
            self.established[generation].insert(hash);
        }
        self.this_epoch.insert(hash);
        self.history[generation].insert(hash);
        established || seen_before
    }

    /// Whether the client of `hash` is established, recording nothing.
    #[inline]
    pub fn is_established(&self, hash: u64) -> bool {
        self.established.iter().any(|b| b.contains(hash))
    }

    /// Whether sightings are recorded now.
    pub fn is_learning(&self) -> bool {
        self.learning.load(Ordering::Relaxed)
    }

    /// Sets what is recorded ([`Controller::learning`](crate::Controller::learning) says).
    pub fn set_learning(&self, learning: Learning) {
        self.learning
            .store(learning == Learning::On, Ordering::Relaxed);
    }

    /// Once a tick: while learning, every `epoch_ticks` ticks the older epoch is forgotten and a
    /// new one starts, and every `generation_epochs` epochs the older generation is.
    pub fn tick(&self) {
        if !self.is_learning() {
            return;
        }
        let ticks = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if ticks % self.config.epoch_ticks.max(1) != 0 {
            return;
        }
        let epoch = self.epoch.load(Ordering::Relaxed) + 1;
        self.this_epoch.clear();
        self.epoch.store(epoch, Ordering::Relaxed);
        if epoch as u64 % self.config.generation_epochs.max(1) == 0 {
            let generation = self.generation.load(Ordering::Relaxed) + 1;
            self.established[generation % 2].clear();
            self.history[generation % 2].clear();
            self.generation.store(generation, Ordering::Relaxed);
        }
    }

    /// Bytes held.
    pub fn memory(&self) -> usize {
        std::iter::once(&self.this_epoch)
            .chain(&self.history)
            .chain(&self.established)
            .map(Bloom::memory)
            .sum()
    }
}

impl std::fmt::Debug for Cohorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cohorts")
            .field("config", &self.config)
            .field("learning", &self.is_learning())
            .field("memory", &self.memory())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::hash_key;

    fn small() -> Cohorts {
        Cohorts::new(CohortConfig {
            capacity: 10_000,
            epoch_ticks: 10,
            generation_epochs: 6,
        })
    }

    #[test]
    fn a_client_seen_in_two_epochs_is_established() {
        let cohorts = small();
        let a = hash_key("203.0.113.1");
        assert!(!cohorts.observe(a));
        for _ in 0..10 {
            cohorts.tick();
        }
        assert!(
            cohorts.observe(a),
            "seen in the previous epoch and this one"
        );
        assert!(cohorts.is_established(a));
        assert!(!cohorts.is_established(hash_key("203.0.113.2")));
    }

    #[test]
    fn a_client_that_comes_back_after_a_gap_is_established() {
        let cohorts = small();
        let a = hash_key("203.0.113.9");
        cohorts.observe(a);
        for _ in 0..35 {
            cohorts.tick();
        }
        assert!(!cohorts.is_established(a));
        assert!(cohorts.observe(a), "seen three epochs ago and again now");
    }

    #[test]
    fn newcomers_during_an_anomaly_stay_newcomers() {
        let cohorts = small();
        cohorts.set_learning(Learning::Off);
        let flood: Vec<u64> = (0..1000)
            .map(|i| hash_key(&format!("172.16.{i}")))
            .collect();
        for _ in 0..100 {
            for &h in &flood {
                cohorts.observe(h);
            }
            cohorts.tick();
        }
        let passed = flood.iter().filter(|h| cohorts.is_established(**h)).count();
        assert_eq!(passed, 0);
    }

    #[test]
    fn clients_that_stop_coming_are_forgotten_and_active_ones_kept() {
        let cohorts = small();
        let (gone, active) = (hash_key("gone"), hash_key("active"));
        for tick in 0..200 {
            if tick < 20 {
                cohorts.observe(gone);
            }
            cohorts.observe(active);
            cohorts.tick();
        }
        assert!(cohorts.is_established(active));
        assert!(!cohorts.is_established(gone));
    }

    #[test]
    fn false_positives_stay_rare_at_capacity() {
        let cohorts = small();
        for i in 0..10_000 {
            cohorts.observe(hash_key(&format!("old-{i}")));
        }
        for _ in 0..10 {
            cohorts.tick();
        }
        for i in 0..10_000 {
            cohorts.observe(hash_key(&format!("old-{i}")));
        }
        let false_positives = (0..10_000)
            .filter(|i| cohorts.is_established(hash_key(&format!("new-{i}"))))
            .count();
        assert!(false_positives < 500, "{false_positives} of 10,000");
    }
}
