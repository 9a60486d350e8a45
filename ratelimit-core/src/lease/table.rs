//! The lease table of a limiter: slots in shards, a bounded number of them, swept of stale ones.
//!
//! Apart from the slot because memory is bounded here, not in a lease: a full shard sends new keys
//! to the exact path.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use parking_lot::RwLock;

use crate::policy::Policy;

use super::{LeaseConfig, Slot};

const SHARDS: usize = 16;

struct Shard {
    slots: HashMap<Box<str>, Arc<Slot>, foldhash::fast::RandomState>,
    // Clock reading of the last sweep for stale slots: sweeps are at most one per window, so a
    // flood of new keys into a full table costs no scan per key.
    last_sweep: u64,
}

/// The lease table of one limiter.
pub(crate) struct Leases {
    config: LeaseConfig,
    ttl_ns: u64,
    // A read lock per lookup; the write lock only to add or sweep keys.
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

impl Leases {
    /// A table for `config`, which the caller has validated.
    pub(crate) fn new(config: LeaseConfig) -> Self {
        let hasher = foldhash::fast::RandomState::default();
        Leases {
            config,
            ttl_ns: u64::try_from(config.ttl.as_nanos()).unwrap_or(u64::MAX),
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(RwLock::new(Shard {
                        slots: HashMap::with_hasher(hasher),
                        last_sweep: 0,
                    }))
                })
                .collect(),
            per_shard: config.max_keys.div_ceil(SHARDS).max(1),
            hasher,
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The time to live, in clock nanoseconds.
    pub(crate) fn ttl_ns(&self) -> u64 {
        self.ttl_ns
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        // The index is below SHARDS, the number of shards.
        &self.shards[index]
    }

    /// `key`'s slot, made if there is room; `None` when the table is full of live slots (the key
    /// then takes the exact path). Allocates only when a slot is made.
    pub(crate) fn slot(&self, key: &str, now: u64) -> Option<Arc<Slot>> {
        let shard = self.shard(key);
        {
            let read = shard.read();
            if let Some(slot) = read.slots.get(key) {
                return Some(slot.clone());
            }
            if read.slots.len() >= self.per_shard
                && now < read.last_sweep.saturating_add(self.ttl_ns)
            {
                return None;
            }
        }
        let mut write = shard.write();
        if let Some(slot) = write.slots.get(key) {
            return Some(slot.clone());
        }
        if write.slots.len() >= self.per_shard {
            if now < write.last_sweep.saturating_add(self.ttl_ns) {
                return None;
            }
            write.last_sweep = now;
            let ttl_ns = self.ttl_ns;
            write
                .slots
                .retain(|_, slot| !(slot.is_stale(now, ttl_ns) && slot.evict()));
            if write.slots.len() >= self.per_shard {
                return None;
            }
        }
        let slot = Arc::new(Slot::new(now));
        write.slots.insert(key.into(), slot.clone());
        Some(slot)
    }

    /// Forgets `key`'s lease (its bucket was reset). A fetch in flight is left to finish: its
    /// lease was taken before the reset.
    pub(crate) fn forget(&self, key: &str) {
        let mut write = self.shard(key).write();
        if write.slots.get(key).is_some_and(|slot| slot.evict()) {
            write.slots.remove(key);
        }
    }

    /// The lease to take for a key under `policy` whose estimated cost per time to live is
    /// `per_ttl`, on a limiter of `replicas`: `None` when it would be below `min_tokens` (the key
    /// stays on the exact path).
    pub(crate) fn lease_size(&self, per_ttl: u64, policy: &Policy, replicas: u32) -> Option<u32> {
        let replicas = replicas.max(1);
        let cap = (self.config.max_outstanding / replicas).min(policy.burst() / replicas);
        let wanted = u32::try_from(per_ttl / 2).unwrap_or(u32::MAX);
        let k = wanted.min(cap);
        (k >= self.config.min_tokens).then_some(k)
    }

    /// Slots held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().slots.len()).sum()
    }
}
