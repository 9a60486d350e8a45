//! Leased tokens on the limiter's side: a request of one limit answered from this replica's lease,
//! and the fetch of the next lease.
//!
//! Apart because a lease changes when the store is asked, not how it decides: this path falls back
//! to the exact one whenever a lease cannot answer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::decision::Decision;
use crate::error::{RequestError, StoreFailure};
use crate::lease::{Fetch, Leases, Spend};
use crate::store::{Limit, Store, Verdict};

use super::{Limiter, duration_ns};

impl Limiter {
    /// The answer from `limit`'s lease on this replica, fetching the next lease when this task
    /// is the one to; `None` sends the request to the exact path (a key too slow for a lease, a
    /// cost above the lease, a full table, a fetch that did not arrive within the deadline).
    pub(super) async fn acquire_leased(
        &self,
        leases: &Leases,
        limit: &Limit<'_>,
    ) -> Result<Option<Verdict>, RequestError> {
        let mut now = self.clock.now();
        let Some(slot) = leases.slot(limit.key, now) else {
            return Ok(None);
        };
        let per_ttl = slot.observe(limit.cost, now, leases.ttl_ns());
        let size = leases
            .lease_size(per_ttl, &limit.policy, self.replicas())
            .filter(|k| limit.cost <= *k);
        // Twice at most: once now, once after waiting for another task's fetch.
        for _ in 0..2 {
            match slot.spend(limit.cost, &limit.policy, now) {
                Spend::Spent(left) => {
                    self.lease_hits.fetch_add(1, Ordering::Relaxed);
                    let expires_in = Duration::from_nanos(slot.expires_in(now));
                    return Ok(Some(leased(limit, left, expires_in)));
                }
                Spend::Denied(until) => {
                    self.lease_hits.fetch_add(1, Ordering::Relaxed);
                    let wait = Duration::from_nanos(until.saturating_sub(now));
                    let burst = limit.policy.burst();
                    return Ok(Some(Verdict::single(Decision::new(
                        false, burst, 0, wait, wait,
                    ))));
                }
                Spend::Empty => {}
            }
            let Some(k) = size else {
                return Ok(None);
            };
            if let Some(fetch) = slot.claim() {
                return self.fetch_lease(leases, fetch, limit, k).await.map(Some);
            }
            if slot.is_dead() {
                return Ok(None);
            }
            slot.wait_for_fetch(self.deadline).await;
            now = self.clock.now();
        }
        Ok(None)
    }

    /// Asks the store for a lease of `k` tokens of `limit`'s key, and answers `limit`'s request
    /// from it.
    async fn fetch_lease(
        &self,
        leases: &Leases,
        fetch: Fetch<'_>,
        limit: &Limit<'_>,
        k: u32,
    ) -> Result<Verdict, RequestError> {
        // Read before the store is asked: the lease expires a time to live after an instant no
        // later than the store's decision.
        let sent = self.clock.now();
        let one = std::slice::from_ref(limit);
        let nodes = self.nodes_of(one);
        if !self.nodes_admit(nodes, sent) {
            drop(fetch);
            return self.on_failure(one, StoreFailure::CircuitOpen);
        }
        self.lease_fetches.fetch_add(1, Ordering::Relaxed);
        let lease = [Limit { cost: k, ..*limit }];
        let outcome = tokio::time::timeout(self.deadline, self.store.acquire(&lease)).await;
        let verdict = match self.settle(nodes, outcome)? {
            Ok(verdict) => verdict,
            Err(failure) => {
                drop(fetch);
                return self.on_failure(one, failure);
            }
        };
        if verdict.is_allowed() {
            let left = u64::from(k - limit.cost);
            let expires_at = sent.saturating_add(leases.ttl_ns());
            fetch.install(left, &limit.policy, expires_at);
            let expires_in = expires_at.saturating_sub(self.clock.now());
            return Ok(leased(limit, left, Duration::from_nanos(expires_in)));
        }
        // Measured from now, after the reply, as the over-limit cache does: a little late, never
        // early. The request itself is denied with the lease's wait, which can only under-admit.
        let retry_after = verdict
            .decision()
            .map_or(self.cooldown, |d| d.retry_after());
        fetch.deny(self.clock.now().saturating_add(duration_ns(retry_after)));
        let burst = limit.policy.burst();
        Ok(Verdict::single(Decision::new(
            false,
            burst,
            0,
            retry_after,
            retry_after,
        )))
    }
}

/// The verdict of a request served from a lease: `remaining` is what is left of this replica's
/// lease (what it can admit without a store call), and the reset is when the lease expires.
fn leased(limit: &Limit<'_>, left: u64, expires_in: Duration) -> Verdict {
    let remaining = u32::try_from(left).unwrap_or(u32::MAX);
    Verdict::single(Decision::new(
        true,
        limit.policy.burst(),
        remaining,
        Duration::ZERO,
        expires_in,
    ))
}
