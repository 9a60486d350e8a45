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
//!
//! The table and one key's decisions are in this file; several keys at once in `many.rs`, making
//! room for a new key (sweeps, eviction, refusal) in `room.rs`, and the overflow sketch in
//! `overflow.rs`.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::decision::Decision;
use crate::gcra;
use crate::policy::Policy;

mod many;
mod overflow;
mod room;

use overflow::Overflow;

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
    pub(crate) fn acquire<Q>(&self, key: &Q, policy: &Policy, cost: u32, now: u64) -> Decision
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
        self.acquire_new_key(shard, hash, key, policy, cost, now)
    }

    #[cold]
    fn acquire_new_key<Q>(
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

    /// What [`acquire`](Self::acquire) would answer, consuming nothing.
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
}
