//! The table behind every keyed limiter: one GCRA state per key, sharded, with bounded memory.
//!
//! - **Hot path.** A key is hashed once (foldhash); its shard is read-locked and its bucket decided
//!   with the same single compare-and-swap as [`TokenBucket`](crate::TokenBucket). Shards are
//!   cache-padded so that threads on different shards never share a cache line.
//! - **Memory.** A bucket that is full again (`TAT <= now`) decides exactly like a missing one, so
//!   such buckets are dropped as the limiter goes: a shard sweeps itself whenever it has doubled since
//!   its last sweep, which keeps the cost amortised O(1) per new key.
//! - **The key limit.** The table never holds more than `max_keys` buckets. When it is full and a
//!   sweep frees nothing, a key without a bucket is **refused** (denied, with one emission interval as
//!   its retry-after) instead of evicting a key that is still in use: evicting would hand that key a
//!   fresh, full bucket and let it exceed its limit. Refusals are counted in
//!   [`refused_when_full`](KeyedState::refused_when_full).
//! - **Several keys at once.** A multi-limit check write-locks the shards involved, in ascending order
//!   (so two such checks can never deadlock), decides every limit, and writes all or nothing. With
//!   the shards locked nobody else can move those buckets in between, so all-or-nothing is exact;
//!   an optimistic CAS-then-refund scheme cannot undo a debit exactly once others have seen it.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
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
        }
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
        let step = gcra::decide_valid(0, now, policy, cost);
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
            None => gcra::decide_valid(0, now, policy, cost).decision,
        }
    }

    /// Forgets `key`'s bucket: its next request finds a full one.
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
            let step = gcra::decide_valid(existing.unwrap_or(0), now, &item.policy, item.cost);
            allowed &= step.decision.is_allowed();
            steps.push((step, existing.is_some()));
        }

        // A newcomer needs a slot in the table; without one the whole request is refused.
        let newcomers = steps
            .iter()
            .filter(|(step, exists)| !exists && step.new_tat.is_some())
            .count();
        if allowed && newcomers > 0 && !self.take_slots(newcomers) {
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
        // try_write: we hold one shard's write lock already, and blocking on a second one could
        // deadlock with a multi-limit check that holds it and waits for ours.
        let next = self.sweep_cursor.fetch_add(1, Ordering::Relaxed) & self.shard_mask;
        if let Some(mut other) = self.shards.get(next).and_then(|s| s.try_write()) {
            self.sweep(&mut other, now);
        }
        self.take_slot()
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
