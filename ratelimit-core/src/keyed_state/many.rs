//! A multi-limit check: the shards involved write-locked in order, every limit decided, all or
//! nothing written.
//!
//! Apart from one key's check because it takes write locks where that one takes a read lock, and
//! its exactness comes from holding them all.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLockWriteGuard;
use smallvec::SmallVec;

use crate::decision::Decision;
use crate::gcra;

use super::{Entry, KeyedItem, KeyedState, Shard};

impl<K: Hash + Eq> KeyedState<K> {
    /// Decides several limits as one: all are debited, or none. Keys must be distinct and costs
    /// valid. Returns whether the request was admitted and each limit's decision, in order.
    ///
    /// The working lists are inline for up to four limits (a client's, a route's and a global
    /// rule, say): a request of a few limits allocates nothing here but a new key.
    pub(crate) fn acquire_all<Q>(
        &self,
        items: &[KeyedItem<'_, Q>],
        now: u64,
    ) -> (bool, SmallVec<[Decision; 2]>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hashes: SmallVec<[u64; 4]> = items.iter().map(|item| self.hash(item.key)).collect();
        let mut shard_ids: SmallVec<[usize; 4]> =
            hashes.iter().map(|h| self.shard_index(*h)).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        // Which of the locked shards each item lives in.
        let slots: SmallVec<[usize; 4]> = hashes
            .iter()
            .map(|h| {
                let id = self.shard_index(*h);
                shard_ids.binary_search(&id).unwrap_or_default()
            })
            .collect();
        // Ascending shard order: every multi-limit check locks in the same order, so none can wait
        // on another in a cycle. Single-key paths hold at most one shard lock at a time.
        let mut guards: SmallVec<[RwLockWriteGuard<'_, Shard<K>>; 4]> = shard_ids
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
        let mut steps: SmallVec<[_; 4]> = SmallVec::with_capacity(items.len());
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
}
