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

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

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

    /// Adds every member of `other` (of the same size).
    fn union(&self, other: &Bloom) {
        for (mine, theirs) in self.words.iter().zip(other.words.iter()) {
            mine.fetch_or(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Becomes a copy of `other` (of the same size).
    fn copy_from(&self, other: &Bloom) {
        for (mine, theirs) in self.words.iter().zip(other.words.iter()) {
            mine.store(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
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

/// How long newcomers have been coming, in fixed memory: per identity, the ticks it was active in
/// during its current session (a session ends after [`PersistenceConfig::session_gap`] idle
/// ticks). Only newcomers are recorded.
///
/// Why: a flash crowd is people, in short sessions at human rates, with pauses between pages; a
/// flood that no per-client limit sees is machines, sending every tick for as long as the attack
/// lasts. Identity alone cannot tell them apart (both are new); how persistently they come can.
/// Newcomers active in at least [`PersistenceConfig::persistent_ticks`] ticks of one session are
/// *persistent*, and the controller holds them to a budget of their own, so that the crowd's
/// budget is not spent by the flood.
///
/// Each of four rows of cells keeps `(last tick active, active ticks)` packed in one atomic word;
/// an identity's count is the smallest of its four cells. A collision can only make an identity
/// look more persistent (its cells also count their other identities' ticks), and only when it
/// collides in all four rows. Cells are indexed with the per-process seeded hash
/// ([`hash_key`](crate::sketch::hash_key)), so nobody can aim identities at a victim's cells.
pub struct Persistence {
    config: PersistenceConfig,
    rows: [Box<[AtomicU64]>; 4],
    mask: u64,
    // Relaxed: the tick counter is read by the hot path to date its sightings; one that reads the
    // previous tick counts the sighting there, which is as good.
    now: AtomicU64,
}

/// Sizes and thresholds of [`Persistence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistenceConfig {
    /// Cells per row (rounded up to a power of two): memory is `4 × 8 × width` bytes.
    pub width: usize,
    /// Idle ticks after which an identity's session is over and its count starts again.
    pub session_gap: u32,
    /// Active ticks in one session from which a newcomer is persistent. People browsing pause
    /// between pages (a request every few seconds, sessions of tens of seconds); a source sending
    /// every second reaches this in as many seconds.
    pub persistent_ticks: u32,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            width: 1 << 14,
            session_gap: 30,
            persistent_ticks: 8,
        }
    }
}

/// The low half of a cell: active ticks; the high half: the last tick active.
fn unpack(cell: u64) -> (u32, u32) {
    ((cell >> 32) as u32, cell as u32)
}

fn pack(last: u32, active: u32) -> u64 {
    (u64::from(last) << 32) | u64::from(active)
}

impl Persistence {
    /// Empty cells sized by `config`.
    pub fn new(config: PersistenceConfig) -> Self {
        let width = config.width.clamp(64, 1 << 16).next_power_of_two();
        let row = || (0..width).map(|_| AtomicU64::new(0)).collect();
        Persistence {
            config,
            rows: [row(), row(), row(), row()],
            mask: width as u64 - 1,
            // Tick 0 is "never seen" in a fresh cell: start at 1.
            now: AtomicU64::new(1),
        }
    }

    /// The settings.
    pub fn config(&self) -> PersistenceConfig {
        self.config
    }

    fn cells(&self, hash: u64) -> impl Iterator<Item = &AtomicU64> + '_ {
        // 16 bits of the hash per row: four independent indexes from one 64-bit hash.
        self.rows
            .iter()
            .enumerate()
            .filter_map(move |(row, cells)| cells.get(((hash >> (16 * row)) & self.mask) as usize))
    }

    fn tick_now(&self) -> u32 {
        self.now.load(Ordering::Relaxed) as u32
    }

    /// What a cell says now: its active ticks if its session is still open, else 0.
    fn live(&self, cell: u64, now: u32) -> u32 {
        let (last, active) = unpack(cell);
        if last == 0 || now.wrapping_sub(last) > self.config.session_gap {
            0
        } else {
            active
        }
    }

    /// Records that the identity of `hash` is active this tick; returns its active ticks in the
    /// session so far (this one included). A few relaxed loads, and one compare-and-swap per cell
    /// at most once a tick.
    #[inline]
    pub fn observe(&self, hash: u64) -> u32 {
        let now = self.tick_now();
        let mut estimate = u32::MAX;
        for cell in self.cells(hash) {
            let mut current = cell.load(Ordering::Relaxed);
            let count = loop {
                let (last, _) = unpack(current);
                if last == now {
                    break unpack(current).1;
                }
                let active = self.live(current, now).saturating_add(1);
                // Relaxed: the cell is a statistic on its own; losing the race means another
                // request counted this tick already, which the retry sees.
                match cell.compare_exchange_weak(
                    current,
                    pack(now, active),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break active,
                    Err(actual) => current = actual,
                }
            };
            estimate = estimate.min(count);
        }
        if estimate == u32::MAX { 0 } else { estimate }
    }

    /// The identity's active ticks in its current session, recording nothing.
    #[inline]
    pub fn active(&self, hash: u64) -> u32 {
        let now = self.tick_now();
        self.cells(hash)
            .map(|cell| self.live(cell.load(Ordering::Relaxed), now))
            .min()
            .unwrap_or(0)
    }

    /// Whether the identity of `hash` is persistent now.
    #[inline]
    pub fn is_persistent(&self, hash: u64) -> bool {
        self.active(hash) >= self.config.persistent_ticks
    }

    /// Once a tick.
    pub fn tick(&self) {
        let next = self.now.load(Ordering::Relaxed) + 1;
        // Tick 0 marks empty cells; after 2^32 ticks the counter wraps past it.
        let next = if next as u32 == 0 { next + 1 } else { next };
        self.now.store(next, Ordering::Relaxed);
    }

    /// Bytes held.
    pub fn memory(&self) -> usize {
        self.rows.iter().map(|r| r.len() * 8).sum()
    }
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("config", &self.config)
            .field("memory", &self.memory())
            .finish_non_exhaustive()
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
    fn a_client_seen_in_two_epochs_apart_is_established() {
        let cohorts = small();
        let a = hash_key("203.0.113.1");
        assert!(!cohorts.observe(a));
        for _ in 0..10 {
            cohorts.tick();
        }
        assert!(
            !cohorts.observe(a),
            "seen in the previous epoch and this one"
        );
        for _ in 0..10 {
            cohorts.tick();
        }
        assert!(
            cohorts.observe(a),
            "seen two epochs ago and again in this one"
        );
        assert!(cohorts.is_established(a));
        assert!(!cohorts.is_established(hash_key("203.0.113.2")));
    }

    /// A flood that starts in the last tick of an epoch, while the controller still learns, and
    /// goes on into the next must not be established by the boundary it straddles: an attacker
    /// who knows the epoch length could otherwise time its start to pass as "already here".
    #[test]
    fn a_flood_straddling_an_epoch_boundary_is_not_established() {
        let cohorts = small();
        for _ in 0..9 {
            cohorts.tick();
        }
        let flood: Vec<u64> = (0..100)
            .map(|i| hash_key(&format!("172.16.0.{i}")))
            .collect();
        // Tick 9, the epoch's last, and ticks 10-12 of the next: learning all along (the
        // controller has not yet turned suspicious, or watches while the backend is healthy).
        for _ in 0..4 {
            for &h in &flood {
                cohorts.observe(h);
            }
            cohorts.tick();
        }
        let passed = flood.iter().filter(|h| cohorts.is_established(**h)).count();
        assert_eq!(passed, 0, "established by straddling one epoch boundary");
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

    #[test]
    fn a_source_active_every_tick_is_persistent_and_a_browsing_person_is_not() {
        let persistence = Persistence::new(PersistenceConfig::default());
        let (machine, person) = (hash_key("172.16.0.1"), hash_key("198.51.100.7"));
        let mut person_peak = 0;
        for tick in 0..60u32 {
            persistence.observe(machine);
            persistence.observe(machine); // several requests a tick count once
            // A page every five seconds for twenty seconds, then gone; back a minute later.
            if tick % 5 == 0 && !(20..55).contains(&tick) {
                person_peak = person_peak.max(persistence.observe(person));
            }
            persistence.tick();
        }
        assert!(persistence.is_persistent(machine));
        assert_eq!(persistence.active(machine), 60);
        assert!(person_peak < PersistenceConfig::default().persistent_ticks);
        assert!(!persistence.is_persistent(person));
        assert_eq!(
            persistence.active(hash_key("never seen")),
            0,
            "an unseen identity has no history"
        );
    }

    #[test]
    fn a_session_ends_after_the_gap() {
        let persistence = Persistence::new(PersistenceConfig::default());
        let source = hash_key("172.16.0.2");
        for _ in 0..20 {
            persistence.observe(source);
            persistence.tick();
        }
        assert!(persistence.is_persistent(source));
        for _ in 0..=PersistenceConfig::default().session_gap {
            persistence.tick();
        }
        assert_eq!(persistence.active(source), 0);
        assert_eq!(persistence.observe(source), 1, "a new session");
    }
}
