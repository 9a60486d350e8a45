//! The request paths: `acquire` (leased or exact), `acquire_sync`, `peek` and `reset`.
//!
//! Apart from the settings because these are what every request runs through, in the order that
//! keeps the bound: validate, the over-limit cache, the breakers, the store within its deadline.

use crate::error::{RequestError, StoreError, StoreFailure};
use crate::store::{Limit, Store, Verdict, validate};

use super::Limiter;

impl Limiter {
    /// Checks a request against all `limits`, all-or-nothing, within the deadline. Only an invalid
    /// request is an error; store trouble is answered by the failure policy, and the verdict says so
    /// ([`Verdict::degraded_by`]). With [leases](Self::with_leases), a request of one limit on a
    /// busy key is answered from this replica's lease when it can be.
    pub async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, RequestError> {
        if let (Some(leases), [limit]) = (&self.leases, limits) {
            validate(limits)?;
            if let Some(verdict) = self.acquire_leased(leases, limit).await? {
                return Ok(verdict);
            }
        }
        self.acquire_exact(limits).await
    }

    /// The per-decision path: one store call for this request.
    async fn acquire_exact(&self, limits: &[Limit<'_>]) -> Result<Verdict, RequestError> {
        if let Some(answer) = self.sync_answer(limits) {
            return answer;
        }
        validate(limits)?;
        let now = self.clock.now();
        if let Some(verdict) = self.known_over_limit(limits, now) {
            return Ok(verdict);
        }
        let nodes = self.nodes_of(limits);
        if !self.nodes_admit(nodes, now) {
            return self.on_failure(limits, StoreFailure::CircuitOpen);
        }
        let outcome = tokio::time::timeout(self.deadline, self.store.acquire(limits)).await;
        let verdict = match self.settle(nodes, outcome)? {
            Ok(verdict) => verdict,
            Err(failure) => return self.on_failure(limits, failure),
        };
        if !verdict.is_allowed() && verdict.degraded_by().is_none() {
            self.remember_denial(limits, &verdict);
        }
        Ok(verdict)
    }

    /// [`acquire`](Self::acquire) without a future, when the store decides in this process
    /// ([`Store::acquire_sync`]); `None` for a store that must be asked over the network, and
    /// for a request of one limit when leases are on (the lease path is `acquire`'s).
    pub fn acquire_sync(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, RequestError>> {
        if self.leases.is_some() && limits.len() == 1 {
            return None;
        }
        self.sync_answer(limits)
    }

    /// The store's own in-process answer, if it has one.
    fn sync_answer(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, RequestError>> {
        let answer = self.store.acquire_sync(limits)?;
        // Nothing to wait for and nothing to fail over from: no deadline, no breaker.
        Some(match answer {
            Ok(verdict) => Ok(verdict),
            Err(StoreError::Request(error)) => Err(error),
            Err(error) => self.on_failure(limits, error.kind()),
        })
    }

    /// What [`acquire`](Self::acquire) would answer now, debiting nothing; store trouble is answered
    /// by the failure policy as for `acquire`.
    pub async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, RequestError> {
        validate(limits)?;
        let nodes = self.nodes_of(limits);
        if !self.nodes_admit(nodes, self.clock.now()) {
            return self.peek_failure(limits, StoreFailure::CircuitOpen);
        }
        let outcome = tokio::time::timeout(self.deadline, self.store.peek(limits)).await;
        match self.settle(nodes, outcome)? {
            Ok(verdict) => Ok(verdict),
            // A peek must debit nothing, the fallback's buckets included.
            Err(failure) => self.peek_failure(limits, failure),
        }
    }

    /// Fills `key`'s bucket up again, in the store and in the local fallback.
    pub async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.fallback.reset(key).await?;
        if let Some(cache) = &self.over_limit {
            cache.remove(key);
        }
        if let Some(leases) = &self.leases {
            leases.forget(key);
        }
        match tokio::time::timeout(self.deadline, self.store.reset(key)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.deadline)),
        }
    }
}
