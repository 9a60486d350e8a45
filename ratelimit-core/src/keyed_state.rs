//! The table behind every keyed limiter: one GCRA state per key, sharded, with bounded memory.
//!
//! - **Hot path.** A key is hashed once (foldhash); its shard is read-locked and its bucket decided
//!   with the same single compare-and-swap as [`TokenBucket`](crate::TokenBucket). Shards are
//!   cache-padded so that threads on different shards never share a cache line.
//! - **Memory.** A bucket that is full again (`TAT <= now`) decides exactly like a missing one, so
//!   such buckets are dropped as the limiter goes: a shard sweeps itself whenever it has doubled since
//!   its last sweep, which keeps the cost amortised O(1) per new key.
//! - **The key limit.** The table never holds more than `max_keys` buckets. When it is full and a
//!   sweep frees nothing, the eighth of the shard's buckets with the least debt (the earliest
//!   theoretical arrival times) are **evicted into an overflow sketch** ([`Overflow`]): a count-min
//!   of maxima, where each evicted bucket raises its cells to its arrival time. A key without a
//!   bucket starts from the sketch's estimate, the least of its cells, which is never below the
//!   arrival time it left with. So a key that comes back is never under-charged (the bound holds),
//!   and a newcomer is not refused because an attacker filled the table: at worst a collision in
//!   every row over-charges it by the debt of a recently evicted key. Only when no shard can give
//!   up a bucket is a newcomer refused, counted in
//!   [`refused_when_full`](KeyedState::refused_when_full).
//! - **Several keys at once.** A multi-limit check write-locks the shards involved, in ascending order
//!   (so two such checks can never deadlock), decides every limit, and writes all or nothing. With
//!   the shards locked nobody else can move those buckets in between, so all-or-nothing is exact;
//!   an optimistic CAS-then-refund scheme cannot undo a debit exactly once others have seen it.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::{RwLock, RwLockWriteGuard};

use crate::decision::Decision;
use crate::gcra;
use crate::policy::Policy;

/// A shard never sweeps below this many entries: sweeping tiny tables would cost more than it saves.
const MIN_SWEEP_AT: usize = 64;

/// A shard sweeps once it holds this share of its part of `max_keys` (or has doubled since its last
/// sweep). Sweeping earlier would make keys that are used often but fill up quickly (a generous
/// limit) leave and re-enter the table on every sweep, paying an insert each time.
const SWEEP_SHARE_DIVISOR: usize = 8;

struct Entry<K> {
    key: K,
    // Relaxed, as in TokenBucket: the word is the bucket's whole state. Structural changes (insert,
    // remove) happen under the shard's write lock, which orders them with every reader.
    tat: AtomicU64,
}

struct Shard<K> {
    table: HashTable<Entry<K>>,
    next_sweep_at: usize,
    sweep_floor: usize,
}

/// One limit of a multi-limit check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyedItem<'a, Q: ?Sized> {
    pub(crate) key: &'a Q,
    pub(crate) policy: Policy,
    pub(crate) cost: u32,
}

pub(crate) struct KeyedState<K> {
    shards: Box<[CachePadded<RwLock<Shard<K>>>]>,
    shard_mask: usize,
    hasher: foldhash::fast::RandomState,
    len: AtomicUsize,
    max_keys: usize,
    sweep_cursor: AtomicUsize,
    refused_when_full: AtomicU64,
    evicted: AtomicU64,
    // Allocated at the first eviction: a table that never fills costs nothing here.
    overflow: OnceLock<Overflow>,
}

/// How many rows the overflow sketch has: a newcomer is over-charged only when all of its cells
/// collide with recently evicted keys, and each row makes that rarer by its own factor.
const OVERFLOW_ROWS: usize = 4;

/// Evicted buckets, folded into a count-min sketch of maxima: `OVERFLOW_ROWS` rows of
/// `width` theoretical arrival times. A cell is the latest arrival time of every key evicted into
/// it, so the least of a key's cells can only over-estimate that key's own.
///
/// Memory: `OVERFLOW_ROWS × width × 8` bytes, with `width` the power of two at or above
/// `max_keys` (32 bytes per key of that power of two: 4 MiB for 100,000 keys).
struct Overflow {
    // Relaxed: a cell is written only by `fetch_max` under the write lock of the shard that held
    // the evicted key, and read for a key only under that same shard's lock (the key's shard), so
    // the lock orders every write before the reads that must see it. Reads for other keys may see
    // a stale cell: a stale cell is a lower value of a *different* key, which that key never had.
    cells: Box<[AtomicU64]>,
    width_bits: u32,
    seeds: [u64; OVERFLOW_ROWS],
}

impl Overflow {
    fn new(max_keys: usize) -> Self {
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
    fn estimate(&self, hash: u64) -> u64 {
        (0..OVERFLOW_ROWS)
            .map(|row| self.cell(row, hash).load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    fn fold(&self, hash: u64, tat: u64) {
        for row in 0..OVERFLOW_ROWS {
            self.cell(row, hash).fetch_max(tat, Ordering::Relaxed);
        }
    }
}

impl<K: Hash + Eq> KeyedState<K> {
    /// A table of at most `max_keys` buckets in `shards` shards (rounded up to a power of two).
    pub(crate) fn new(max_keys: usize, shards: usize) -> Self {
        let count = shards.clamp(1, 1 << 16).next_power_of_two();
        let sweep_floor = (max_keys / count / SWEEP_SHARE_DIVISOR).max(MIN_SWEEP_AT);
        let shards = (0..count)
            .map(|_| {
                CachePadded::new(RwLock::new(Shard {
                    table: HashTable::new(),
                    next_sweep_at: sweep_floor,
                    sweep_floor,
                }))
            })
            .collect();
        KeyedState {
            shards,
            shard_mask: count.saturating_sub(1),
            hasher: foldhash::fast::RandomState::default(),
            len: AtomicUsize::new(0),
            max_keys,
            sweep_cursor: AtomicUsize::new(0),
            refused_when_full: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            overflow: OnceLock::new(),
        }
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Where a key without a bucket starts: full (0) unless buckets were evicted, else the
    /// sketch's estimate. Call it under the lock of the key's shard.
    #[inline]
    fn start_of(&self, hash: u64) -> u64 {
        self.overflow.get().map_or(0, |o| o.estimate(hash))
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }

    pub(crate) fn refused_when_full(&self) -> u64 {
        self.refused_when_full.load(Ordering::Relaxed)
    }

    #[inline]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        // Bits 40.. pick the shard: hashbrown uses the low bits for the bucket index and the top
        // seven for its control bytes, so these do not skew either.
        (hash >> 40) as usize & self.shard_mask
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<Shard<K>> {
        // The index is masked to the (power-of-two) shard count, so it is always in range.
        &self.shards[self.shard_index(hash)]
    }

    /// Decides and debits `cost` for `key`; `cost` must have passed [`gcra::validate_cost`].
    #[inline]
    pub(crate) fn check<Q>(&self, key: &Q, policy: &Policy, cost: u32, now: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        {
            let guard = shard.read();
            if let Some(entry) = guard.table.find(hash, |e| e.key.borrow() == key) {
                return gcra::decide_atomic(&entry.tat, now, policy, cost);
            }
        }
        self.check_new_key(shard, hash, key, policy, cost, now)
    }

    #[cold]
    fn check_new_key<Q>(
        &self,
        shard: &RwLock<Shard<K>>,
        hash: u64,
        key: &Q,
        policy: &Policy,
        cost: u32,
        now: u64,
    ) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut guard = shard.write();
        if let Some(entry) = guard.table.find(hash, |e| e.key.borrow() == key) {
            // Another thread inserted it between our read and write locks.
            return gcra::decide_atomic(&entry.tat, now, policy, cost);
        }
        let step = gcra::decide_valid(self.start_of(hash), now, policy, cost);
        let Some(new_tat) = step.new_tat else {
            return step.decision; // a denial writes nothing, not even a new entry
        };
        if !self.reserve_slot(&mut guard, now) {
            return self.refuse(policy);
        }
        guard.table.insert_unique(
            hash,
            Entry {
                key: key.to_owned(),
                tat: AtomicU64::new(new_tat),
            },
            |e| self.hasher.hash_one(&e.key),
        );
        step.decision
    }

    /// What [`check`](Self::check) would answer, consuming nothing.
    pub(crate) fn peek<Q>(&self, key: &Q, policy: &Policy, cost: u32, now: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let guard = self.shard(hash).read();
        match guard.table.find(hash, |e| e.key.borrow() == key) {
            Some(entry) => {
                gcra::decide_valid(entry.tat.load(Ordering::Relaxed), now, policy, cost).decision
            }
            None => gcra::decide_valid(self.start_of(hash), now, policy, cost).decision,
        }
    }

    /// Forgets `key`'s bucket: its next request finds a full one, unless the key was once evicted
    /// and the overflow sketch still holds its debt (a sketch of maxima cannot forget one key);
    /// that errs toward denying, until the debt runs out.
    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let mut guard = self.shard(hash).write();
        if let Ok(entry) = guard.table.find_entry(hash, |e| e.key.borrow() == key) {
            entry.remove();
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Decides several limits as one: all are debited, or none. Keys must be distinct and costs
    /// valid. Returns whether the request was admitted and each limit's decision, in order.
    pub(crate) fn check_all<Q>(&self, items: &[KeyedItem<'_, Q>], now: u64) -> (bool, Vec<Decision>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hashes: Vec<u64> = items.iter().map(|item| self.hash(item.key)).collect();
        let mut shard_ids: Vec<usize> = hashes.iter().map(|h| self.shard_index(*h)).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        // Which of the locked shards each item lives in.
        let slots: Vec<usize> = hashes
            .iter()
            .map(|h| {
                let id = self.shard_index(*h);
                shard_ids.binary_search(&id).unwrap_or_default()
            })
            .collect();
        // Ascending shard order: every multi-limit check locks in the same order, so none can wait
        // on another in a cycle. Single-key paths hold at most one shard lock at a time.
        let mut guards: Vec<RwLockWriteGuard<'_, Shard<K>>> = shard_ids
            .iter()
            .filter_map(|id| self.shards.get(*id).map(|s| s.write()))
            .collect();

        // Sweep before any lookup, so that no entry looked at below disappears before the write.
        if self.len() >= self.max_keys {
            for guard in guards.iter_mut() {
                self.sweep(guard, now);
            }
        }

        // Decide every limit on the locked state.
        let mut steps = Vec::with_capacity(items.len());
        let mut allowed = true;
        for ((item, hash), slot) in items.iter().zip(&hashes).zip(&slots) {
            let existing = guards.get(*slot).and_then(|g| {
                g.table
                    .find(*hash, |e| e.key.borrow() == item.key)
                    .map(|e| e.tat.load(Ordering::Relaxed))
            });
            let start = existing.unwrap_or_else(|| self.start_of(*hash));
            let step = gcra::decide_valid(start, now, &item.policy, item.cost);
            allowed &= step.decision.is_allowed();
            steps.push((step, existing.is_some()));
        }

        // A newcomer needs a slot in the table; without one the whole request is refused.
        let newcomers = steps
            .iter()
            .filter(|(step, exists)| !exists && step.new_tat.is_some())
            .count();
        let mut room = !allowed || newcomers == 0 || self.take_slots(newcomers);
        if !room {
            // Make room in the shards already held; their buckets of this request stay.
            for guard in guards.iter_mut() {
                self.evict(guard, now, |key| {
                    items.iter().any(|item| key.borrow() == item.key)
                });
            }
            room = self.take_slots(newcomers);
        }
        if !room {
            let decisions = steps
                .iter()
                .zip(items)
                .map(|((step, exists), item)| match exists {
                    false => self.refuse(&item.policy),
                    true => step.decision,
                })
                .collect();
            return (false, decisions);
        }

        if allowed {
            for (((item, hash), slot), (step, exists)) in
                items.iter().zip(&hashes).zip(&slots).zip(&steps)
            {
                let (Some(guard), Some(tat)) = (guards.get_mut(*slot), step.new_tat) else {
                    continue;
                };
                if *exists {
                    if let Some(entry) = guard.table.find(*hash, |e| e.key.borrow() == item.key) {
                        entry.tat.store(tat, Ordering::Relaxed);
                    }
                } else {
                    guard.table.insert_unique(
                        *hash,
                        Entry {
                            key: item.key.to_owned(),
                            tat: AtomicU64::new(tat),
                        },
                        |e| self.hasher.hash_one(&e.key),
                    );
                }
            }
        }
        (
            allowed,
            steps.into_iter().map(|(step, _)| step.decision).collect(),
        )
    }

    /// Drops every bucket that is full at `now`, in every shard.
    pub(crate) fn retain_recent(&self, now: u64) {
        for shard in self.shards.iter() {
            self.sweep(&mut shard.write(), now);
        }
    }

    /// Finds room for one more bucket in the shard held by `guard`, sweeping it as needed and, when
    /// the table is full, one other shard too (round robin), so idle buckets anywhere get dropped.
    fn reserve_slot(&self, guard: &mut Shard<K>, now: u64) -> bool {
        if guard.table.len() >= guard.next_sweep_at {
            self.sweep(guard, now);
        }
        if self.take_slot() {
            return true;
        }
        self.sweep(guard, now);
        if self.take_slot() {
            return true;
        }
        // Buckets that are full again elsewhere go before any bucket in debt.
        let next = self.sweep_cursor.fetch_add(1, Ordering::Relaxed) & self.shard_mask;
        if let Some(mut other) = self.shards.get(next).and_then(|s| s.try_write()) {
            self.sweep(&mut other, now);
            if self.take_slot() {
                return true;
            }
        }
        // Every bucket here is in use: evict the least indebted ones of our own shard.
        self.evict(guard, now, |_| false);
        if self.take_slot() {
            return true;
        }
        // Our shard had nothing to give: the others, round robin. try_write: we hold one shard's
        // write lock already, and blocking on a second one could deadlock with a multi-limit check
        // that holds it and waits for ours.
        for _ in 0..self.shards.len() {
            let next = self.sweep_cursor.fetch_add(1, Ordering::Relaxed) & self.shard_mask;
            if let Some(mut other) = self.shards.get(next).and_then(|s| s.try_write()) {
                self.sweep(&mut other, now);
                if self.take_slot() {
                    return true;
                }
                self.evict(&mut other, now, |_| false);
                if self.take_slot() {
                    return true;
                }
            }
        }
        false
    }

    /// Moves the eighth of `shard`'s buckets with the earliest arrival times (all of them when the
    /// shard is small) into the overflow sketch, keeping those for which `keep` says so. One pass
    /// per eighth of a shard keeps the cost amortised O(1) per eviction.
    #[cold]
    fn evict(&self, shard: &mut Shard<K>, now: u64, keep: impl Fn(&K) -> bool) {
        let len = shard.table.len();
        if len == 0 {
            return;
        }
        let mut tats: Vec<u64> = shard
            .table
            .iter()
            .map(|e| e.tat.load(Ordering::Relaxed))
            .collect();
        let nth = (len / SWEEP_SHARE_DIVISOR).min(len - 1);
        let (_, threshold, _) = tats.select_nth_unstable(nth);
        let threshold = (*threshold).max(now);
        let overflow = self.overflow.get_or_init(|| Overflow::new(self.max_keys));
        let mut removed = 0u64;
        shard.table.retain(|e| {
            let tat = e.tat.load(Ordering::Relaxed);
            if tat > threshold || keep(&e.key) {
                return true;
            }
            // A bucket that is full needs no memory of it; one in debt leaves its arrival time.
            if tat > now {
                overflow.fold(self.hasher.hash_one(&e.key), tat);
            }
            removed += 1;
            false
        });
        self.len.fetch_sub(
            usize::try_from(removed).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
        self.evicted.fetch_add(removed, Ordering::Relaxed);
        shard.next_sweep_at = shard.table.len().saturating_mul(2).max(shard.sweep_floor);
    }

    /// Counts one more bucket if the table has room.
    fn take_slot(&self) -> bool {
        self.take_slots(1)
    }

    /// Counts `n` more buckets if the table has room for all of them.
    fn take_slots(&self, n: usize) -> bool {
        // Relaxed: the counter only has to be exact, which the RMW guarantees; it publishes nothing.
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |len| {
                len.checked_add(n).filter(|after| *after <= self.max_keys)
            })
            .is_ok()
    }

    fn sweep(&self, shard: &mut Shard<K>, now: u64) {
        let before = shard.table.len();
        shard
            .table
            .retain(|e| !gcra::is_full(e.tat.load(Ordering::Relaxed), now));
        let after = shard.table.len();
        self.len
            .fetch_sub(before.saturating_sub(after), Ordering::Relaxed);
        // Give memory back when most of the table went, so memory follows the active keys.
        if shard.table.capacity() > MIN_SWEEP_AT.saturating_mul(4)
            && after < shard.table.capacity() / 4
        {
            shard
                .table
                .shrink_to(after.saturating_mul(2), |e| self.hasher.hash_one(&e.key));
        }
        shard.next_sweep_at = after.saturating_mul(2).max(shard.sweep_floor);
    }

    /// The answer for a key that has no bucket while the table is full of active ones.
    fn refuse(&self, policy: &Policy) -> Decision {
        self.refused_when_full.fetch_add(1, Ordering::Relaxed);
        Decision::from_gcra(
            false,
            policy.burst(),
            0,
            policy.emission_interval_ns(),
            policy.emission_interval_ns(),
            policy.tolerance_ns(),
        )
    }
}
