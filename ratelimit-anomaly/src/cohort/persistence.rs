//! How persistently newcomers come: active ticks per session, in fixed memory.

use std::sync::atomic::{AtomicU64, Ordering};

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
