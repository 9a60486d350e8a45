//! How many replicas share a store, counted in the store itself: every replica holds a slot and
//! heartbeats it, and counts the slots that are held.
//!
//! ```
//! # async fn run() -> Result<(), ratelimit_core::MembershipError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ratelimit_core::{Limiter, Membership, MemoryStore, Store};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let members = Membership::join(store.clone(), "ratelimit-service", Duration::from_secs(1)).await?;
//! // The fallback share and the lease sizes follow the live count (never below the setting).
//! let limiter = Limiter::from_arc(store).with_replicas(1).with_membership(&members);
//! assert!(limiter.replicas() >= 1);
//! # Ok(()) }
//! ```
//!
//! Only the store's one operation is used, so every backend counts the same way. A slot is a
//! bucket of two tokens refilled one per `period`:
//! - **joining** takes both tokens at once (cost 2), which succeeds only on a slot nobody has
//!   heartbeated for about two periods;
//! - **heartbeating** takes one token every half period: the holder keeps the bucket below two
//!   tokens, so nobody else can take the slot while it lives (a heartbeat that finds the bucket
//!   empty is denied, which is as good: the bucket stays below two);
//! - **counting** peeks at each slot for a cost of two: a slot that would not admit it is held.
//!
//! A replica that stops (crash, partition) frees its slot two periods after its last heartbeat,
//! and the others count one fewer within a period more. The count never drops on a store error,
//! and a replica always counts itself: too high a count under-admits, too low a count would let
//! the local fallback and the leases admit more than their bound, so the count errs high. It
//! lags by up to a period when a replica joins; until every replica has seen it, the bound of a
//! mode that divides by the count is that of the old count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use thiserror::Error;

use crate::StoreError;
use crate::key::BucketKey;
use crate::policy::Policy;
use crate::store::{Limit, Store};

/// The most replicas one group counts.
pub const MAX_MEMBERS: u32 = 64;

/// The shortest heartbeat period: a store call must fit in half of it.
pub const MIN_PERIOD: Duration = Duration::from_millis(20);

/// Why a replica could not join.
#[derive(Debug, Error)]
pub enum MembershipError {
    /// Every slot is held by a live replica.
    #[error("all {MAX_MEMBERS} member slots of group {group:?} are held")]
    Full {
        /// The group.
        group: String,
    },
    /// The period is shorter than [`MIN_PERIOD`].
    #[error("the heartbeat period must be at least {MIN_PERIOD:?}, not {0:?}")]
    Period(Duration),
    /// The store could not be asked.
    #[error("the store: {0}")]
    Store(#[from] StoreError),
}

/// This replica's membership of a group: its slot, held by a background task until dropped, and
/// the live count of the group.
pub struct Membership {
    slot: u32,
    // Relaxed: a count read for sizing, not a synchronisation point; a stale read is one period
    // old at worst, which the bound's statement allows for.
    count: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("slot", &self.slot)
            .field("count", &self.count())
            .finish()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // The slot frees itself two periods after the last heartbeat.
        self.task.abort();
    }
}

/// The slot's bucket: two tokens, one more per period.
fn slot_policy(period: Duration) -> Result<Policy, MembershipError> {
    Policy::new(1, period)
        .and_then(|p| p.with_burst(2))
        .map_err(|_| MembershipError::Period(period))
}

fn slot_key(group: &str, slot: u32) -> String {
    let mut key = BucketKey::new("ratelimit-membership");
    key.push(group);
    key.push(&slot.to_string());
    key.finish()
}

impl Membership {
    /// Joins `group` on `store`: takes the lowest free slot, then heartbeats it and recounts the
    /// group every half `period`, in a task of the current Tokio runtime.
    pub async fn join(
        store: Arc<dyn Store>,
        group: &str,
        period: Duration,
    ) -> Result<Membership, MembershipError> {
        if period < MIN_PERIOD {
            return Err(MembershipError::Period(period));
        }
        let policy = slot_policy(period)?;
        let mut slot = None;
        for candidate in 0..MAX_MEMBERS {
            let key = slot_key(group, candidate);
            let claim = Limit::new(&key, policy).with_cost(2);
            if store.acquire(&[claim]).await?.is_allowed() {
                slot = Some(candidate);
                break;
            }
        }
        let Some(slot) = slot else {
            return Err(MembershipError::Full {
                group: group.to_string(),
            });
        };
        let count = Arc::new(AtomicU32::new(slot + 1));
        let first = count_held(store.as_ref(), group, policy, slot + 1).await;
        if let Some(held) = first {
            count.store(held.max(1), Ordering::Relaxed);
        }
        let task = tokio::spawn(heartbeat(
            store,
            group.to_string(),
            slot,
            policy,
            period,
            count.clone(),
        ));
        Ok(Membership { slot, count, task })
    }

    /// The replicas of the group, this one included: at least one.
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// This replica's slot, `0..MAX_MEMBERS`.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The live count, for a [`Limiter`](crate::Limiter) to read.
    pub(crate) fn counter(&self) -> Arc<AtomicU32> {
        self.count.clone()
    }
}

/// The slots held in `group`, looking at slot 0 up to a few past the highest held one (slots
/// are taken lowest first, so held slots are dense from 0); `None` when the store failed.
async fn count_held(store: &dyn Store, group: &str, policy: Policy, at_least: u32) -> Option<u32> {
    let mut held = 0;
    let mut highest = at_least;
    let mut slot = 0;
    while slot < MAX_MEMBERS && slot <= highest + 4 {
        let key = slot_key(group, slot);
        let probe = Limit::new(&key, policy).with_cost(2);
        match store.peek(&[probe]).await {
            Ok(verdict) if !verdict.is_allowed() => {
                held += 1;
                highest = highest.max(slot + 1);
            }
            Ok(_) => {}
            Err(_) => return None,
        }
        slot += 1;
    }
    Some(held)
}

async fn heartbeat(
    store: Arc<dyn Store>,
    group: String,
    slot: u32,
    policy: Policy,
    period: Duration,
    count: Arc<AtomicU32>,
) {
    let key = slot_key(&group, slot);
    let mut tick = tokio::time::interval(period / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Denied is fine (the bucket is already below two); an error is retried next tick.
        let _ = store.acquire(&[Limit::new(&key, policy)]).await;
        if let Some(held) = count_held(store.as_ref(), &group, policy, slot + 1).await {
            // This replica counts itself whatever the store said of its slot.
            count.store(held.max(1), Ordering::Relaxed);
        }
    }
}
