//! Keys a shared store has just denied, remembered in this process until the store said they
//! would have room again, so that a flood that is already over its limit costs no store call.
//!
//! The cache only ever denies: a request whose key is here is answered "no" without asking the
//! store; any other request goes to the store as before. So it cannot break the bound. What it
//! can cost is the other way: a request of a smaller cost than the one denied, which the store
//! might have admitted a little earlier, waits for the whole retry-after (entries remember their
//! cost, and only requests costing at least as much are denied from here).

use std::collections::HashMap;
use std::hash::BuildHasher;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::policy::Policy;

/// Keys remembered at most, unless set otherwise: about 100 bytes each, so 1.6 MB.
pub const DEFAULT_OVER_LIMIT_KEYS: usize = 16_384;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Clock reading until which the key is over its limit.
    until: u64,
    /// The cost that was denied: only requests at least this costly are denied from here.
    cost: u32,
    /// The policy it was denied under: after a change (an anomaly action relaxing, a reload
    /// raising the limit) the store is asked again.
    policy: Policy,
}

/// One shard: key to entry.
type Shard = Mutex<HashMap<Box<str>, Entry>>;

/// A bounded map from key to the instant it has room again.
pub(crate) struct OverLimitCache {
    // A lock per shard rather than lock-free slots: it is consulted only on the way to a network
    // store (microseconds away), and a lock keeps the entries exact (no torn key/instant pairs).
    shards: Box<[CachePadded<Shard>]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

impl OverLimitCache {
    pub(crate) fn new(max_keys: usize) -> Self {
        OverLimitCache {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
            per_shard: max_keys.div_ceil(SHARDS),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, key: &str) -> &Shard {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        // The index is below SHARDS, the number of shards.
        &self.shards[index]
    }

    /// Until when `key` is over its limit under `policy` for a request of `cost`, if it is at
    /// `now`.
    pub(crate) fn denied_until(
        &self,
        key: &str,
        policy: &Policy,
        cost: u32,
        now: u64,
    ) -> Option<u64> {
        let shard = self.shard(key).lock();
        let entry = shard.get(key)?;
        (entry.until > now && cost >= entry.cost && entry.policy == *policy).then_some(entry.until)
    }

    /// Remembers that `key` was denied a request of `cost` under `policy` until `until`.
    pub(crate) fn insert(&self, key: &str, policy: Policy, cost: u32, until: u64, now: u64) {
        let mut shard = self.shard(key).lock();
        if shard.len() >= self.per_shard && !shard.contains_key(key) {
            shard.retain(|_, e| e.until > now);
            if shard.len() >= self.per_shard {
                // Full of live entries: forgetting one only sends its key back to the store.
                let victim = shard
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| k.clone());
                if let Some(victim) = victim {
                    shard.remove(&victim);
                }
            }
        }
        let new = Entry {
            until,
            cost,
            policy,
        };
        let entry = shard.entry(key.into()).or_insert(new);
        // A denial of a cost until an instant implies the same for every higher cost, not for a
        // lower one: replace what is known only by what says at least as much, by anything once
        // it has run out, and by a denial under another policy (the newer one).
        if entry.until <= now
            || entry.policy != policy
            || (until >= entry.until && cost <= entry.cost)
        {
            *entry = new;
        }
    }

    /// Forgets `key` (its bucket was reset).
    pub(crate) fn remove(&self, key: &str) {
        self.shard(key).lock().remove(key);
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn remembers_until_the_instant_and_only_for_costs_as_high() {
        let cache = OverLimitCache::new(64);
        let p = Policy::per_hour(5).unwrap();
        cache.insert("k", p, 2, 1_000, 0);
        assert_eq!(cache.denied_until("k", &p, 2, 10), Some(1_000));
        assert_eq!(cache.denied_until("k", &p, 5, 10), Some(1_000));
        assert_eq!(
            cache.denied_until("k", &p, 1, 10),
            None,
            "a cheaper request may fit"
        );
        assert_eq!(cache.denied_until("k", &p, 2, 1_000), None, "room again");
        assert_eq!(cache.denied_until("other", &p, 1, 10), None);
    }

    #[test]
    fn a_changed_policy_asks_the_store_again() {
        let cache = OverLimitCache::new(64);
        let tight = Policy::per_hour(5).unwrap();
        let relaxed = tight.with_burst(50).unwrap();
        cache.insert("k", tight, 1, 1_000, 0);
        assert_eq!(cache.denied_until("k", &relaxed, 1, 10), None);
        assert_eq!(cache.denied_until("k", &tight, 1, 10), Some(1_000));
    }

    #[test]
    fn memory_is_bounded() {
        let cache = OverLimitCache::new(160);
        let p = Policy::per_hour(5).unwrap();
        for i in 0..10_000u64 {
            cache.insert(&format!("k{i}"), p, 1, 1_000_000 + i, 0);
        }
        assert!(cache.len() <= 160, "{}", cache.len());
    }
}
