//! Who was here before: the established clients, in fixed memory, so that an aggregate anomaly
//! can be met by limiting the identities that arrived with it rather than everyone.
//!
//! A client is **established** once it has been seen in two epochs (of
//! [`CohortConfig::epoch_ticks`] ticks) with at least one whole epoch between them, while the
//! controller was learning (its normal state). Two epochs in a row would not do: a flood first
//! seen in the last tick of an epoch and again in the first tick of the next, before the controller
//! has stopped learning, would be established within two ticks of its start.
//! Identities that appear with a flood are therefore newcomers for as long as the anomaly lasts:
//! learning stops the tick the controller becomes suspicious. Membership is kept in Bloom filters
//! on atomic words (no false negatives: an established client is never taken for a newcomer;
//! false positives at the configured capacity are about 2%), in two generations that are rotated
//! every [`CohortConfig::generation_epochs`] epochs, so a client that stops coming is forgotten
//! after one to two generations. Hashes come from [`hash_key`](crate::sketch::hash_key), seeded per
//! process, so an attacker cannot aim its keys at the filter's bits.

mod bloom;
mod persistence;
#[cfg(test)]
mod tests;

pub use persistence::{Persistence, PersistenceConfig};

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use bloom::Bloom;

/// Sizes and periods of the cohort sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CohortConfig {
    /// Clients the sets are sized for (memory: about `capacity` bytes per filter, six filters).
    pub capacity: usize,
    /// Ticks per epoch: a client seen in two epochs with a whole epoch between them is
    /// established.
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
    /// As `On`, except that persistent newcomers ([`Persistence`]) are not established: while
    /// traffic is suspicious but the backend healthy (a daily peak, a flash crowd being watched),
    /// people keep becoming established, but sources that have sent every tick since the traffic
    /// turned odd do not, so that a flood ramping up slowly is still new when it starts to hurt.
    Watchful,
    /// Nothing (while anything is mitigated): whoever arrives now stays a newcomer.
    Off,
}

/// The established clients and the sightings that make them so.
pub struct Cohorts {
    config: CohortConfig,
    // Who was seen in the current epoch.
    this_epoch: Bloom,
    // Who was seen in the epoch before: not yet history, so that a sighting now and one in the
    // previous epoch (perhaps a tick ago) do not make a client established.
    previous_epoch: Bloom,
    // Who was seen in an epoch before the previous one, by generation: `history[generation % 2]`
    // receives each finished epoch's sightings.
    history: [Bloom; 2],
    // Established generations: `established[generation % 2]` receives new members; a client is
    // established while it is in either.
    established: [Bloom; 2],
    // Relaxed: counters and flags read and written by the tick and the hot path; a stale read
    // misfiles at most a request or two around an epoch boundary.
    epoch: AtomicUsize,
    generation: AtomicUsize,
    ticks: AtomicU64,
    // The `Learning` in force, as `Learning::code`.
    learning: AtomicU8,
}

impl Learning {
    fn code(self) -> u8 {
        match self {
            Learning::Off => 0,
            Learning::On => 1,
            Learning::Watchful => 2,
        }
    }

    fn of(code: u8) -> Self {
        match code {
            1 => Learning::On,
            2 => Learning::Watchful,
            _ => Learning::Off,
        }
    }
}

impl Cohorts {
    /// Empty sets sized by `config`.
    pub fn new(config: CohortConfig) -> Self {
        let bits = config.capacity.saturating_mul(8);
        Cohorts {
            config,
            this_epoch: Bloom::new(bits),
            previous_epoch: Bloom::new(bits),
            history: [Bloom::new(bits), Bloom::new(bits)],
            established: [Bloom::new(bits), Bloom::new(bits)],
            epoch: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            ticks: AtomicU64::new(0),
            learning: AtomicU8::new(1),
        }
    }

    /// Records a sighting of the client of `hash` and says whether it is established. While not
    /// learning nothing is recorded: identities that arrive during an anomaly stay newcomers.
    #[inline]
    pub fn observe(&self, hash: u64) -> bool {
        self.observe_persistent(hash, false)
    }

    /// [`observe`](Self::observe) of a client that [`Persistence`] says is `persistent`: while
    /// [`Learning::Watchful`] it is not established, nor is its sighting recorded.
    #[inline]
    pub fn observe_persistent(&self, hash: u64, persistent: bool) -> bool {
        let established = self.is_established(hash);
        let learning = self.learning();
        if learning == Learning::Off
            || (learning == Learning::Watchful && persistent && !established)
            || self.this_epoch.contains(hash)
        {
            return established;
        }
        // The first sighting this epoch: seen before means seen in an epoch before the previous.
        let generation = self.generation.load(Ordering::Relaxed) % 2;
        let seen_before = self.history.iter().any(|b| b.contains(hash));
        if seen_before || established {
            // New, or still active and carried into the current generation.
            self.established[generation].insert(hash);
        }
        self.this_epoch.insert(hash);
        established || seen_before
    }

    /// Whether the client of `hash` is established, recording nothing.
    #[inline]
    pub fn is_established(&self, hash: u64) -> bool {
        self.established.iter().any(|b| b.contains(hash))
    }

    /// Whether sightings are recorded now.
    pub fn is_learning(&self) -> bool {
        self.learning() != Learning::Off
    }

    /// What is recorded now.
    pub fn learning(&self) -> Learning {
        Learning::of(self.learning.load(Ordering::Relaxed))
    }

    /// Sets what is recorded ([`Controller::learning`](crate::Controller::learning) says).
    pub fn set_learning(&self, learning: Learning) {
        self.learning.store(learning.code(), Ordering::Relaxed);
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
        // The epoch before the one ending becomes history of the generation it belonged to; the
        // ending one becomes the previous.
        let generation = self.generation.load(Ordering::Relaxed);
        self.history[generation % 2].union(&self.previous_epoch);
        self.previous_epoch.copy_from(&self.this_epoch);
        self.this_epoch.clear();
        self.epoch.store(epoch, Ordering::Relaxed);
        if epoch as u64 % self.config.generation_epochs.max(1) == 0 {
            let generation = generation + 1;
            self.established[generation % 2].clear();
            self.history[generation % 2].clear();
            self.generation.store(generation, Ordering::Relaxed);
        }
    }

    /// Bytes held.
    pub fn memory(&self) -> usize {
        [&self.this_epoch, &self.previous_epoch]
            .into_iter()
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
