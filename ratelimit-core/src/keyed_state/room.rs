//! Making room for a new key: sweeps of full buckets, eviction into the overflow sketch, and the
//! refusal when no shard can give up a bucket.
//!
//! Apart because this is where memory stays bounded, with its own amortised cost rule.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::Ordering;

use crate::decision::Decision;
use crate::gcra;
use crate::policy::Policy;

use super::{KeyedState, MIN_SWEEP_AT, Overflow, SWEEP_SHARE_DIVISOR, Shard};

impl<K: Hash + Eq> KeyedState<K> {
    /// Drops every bucket that is full at `now`, in every shard.
    pub(crate) fn retain_recent(&self, now: u64) {
        for shard in self.shards.iter() {
            self.sweep(&mut shard.write(), now);
        }
    }

    /// Finds room for one more bucket in the shard held by `guard`, sweeping it as needed and, when
    /// the table is full, one other shard too (round robin), so idle buckets anywhere get dropped.
    pub(super) fn reserve_slot(&self, guard: &mut Shard<K>, now: u64) -> bool {
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
    pub(super) fn evict(&self, shard: &mut Shard<K>, now: u64, keep: impl Fn(&K) -> bool) {
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
    pub(super) fn take_slots(&self, n: usize) -> bool {
        // Relaxed: the counter only has to be exact, which the RMW guarantees; it publishes nothing.
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |len| {
                len.checked_add(n).filter(|after| *after <= self.max_keys)
            })
            .is_ok()
    }

    pub(super) fn sweep(&self, shard: &mut Shard<K>, now: u64) {
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
    pub(super) fn refuse(&self, policy: &Policy) -> Decision {
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
