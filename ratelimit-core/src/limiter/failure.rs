//! The failure policy: what a request is answered while the store is down, slow or skipped.
//!
//! Apart because each policy (open, closed, the local share) answers for every path alike, and
//! a peek must debit nothing even here.

use std::time::Duration;

use crate::decision::Decision;
use crate::error::{RequestError, StoreFailure};
use crate::store::{Limit, Verdict};

use super::{FailurePolicy, Limiter};

impl Limiter {
    /// The failure policy's answer to `limits`, marked with `failure`.
    pub(super) fn on_failure(
        &self,
        limits: &[Limit<'_>],
        failure: StoreFailure,
    ) -> Result<Verdict, RequestError> {
        let verdict = match self.failure_policy {
            FailurePolicy::Open => Verdict::new(
                true,
                limits
                    .iter()
                    .map(|l| {
                        let burst = l.policy.burst();
                        Decision::new(true, burst, burst, Duration::ZERO, Duration::ZERO)
                    })
                    .collect(),
            ),
            FailurePolicy::Closed => self.deny_for_cooldown(limits),
            FailurePolicy::LocalFallback => self.local_share(limits),
        };
        Ok(verdict.degraded(failure))
    }

    /// What [`peek`](Self::peek) answers while the store fails: the failure policy's answer, with
    /// the local fallback peeked rather than debited.
    pub(super) fn peek_failure(
        &self,
        limits: &[Limit<'_>],
        failure: StoreFailure,
    ) -> Result<Verdict, RequestError> {
        if self.failure_policy != FailurePolicy::LocalFallback {
            return self.on_failure(limits, failure);
        }
        let Some(shares) = self.shares_of(limits) else {
            return Ok(self.deny_for_cooldown(limits).degraded(failure));
        };
        let verdict = self
            .fallback
            .peek_local(&shares)
            .unwrap_or_else(|_| self.deny_for_cooldown(limits));
        Ok(verdict.degraded(failure))
    }

    /// Every limit denied, with the breaker's cooldown as the wait.
    fn deny_for_cooldown(&self, limits: &[Limit<'_>]) -> Verdict {
        Verdict::new(
            false,
            limits
                .iter()
                .map(|l| Decision::new(false, l.policy.burst(), 0, self.cooldown, self.cooldown))
                .collect(),
        )
    }

    /// Decides `limits` on this replica's share of each, in local buckets.
    fn local_share(&self, limits: &[Limit<'_>]) -> Verdict {
        let Some(shares) = self.shares_of(limits) else {
            return self.deny_for_cooldown(limits);
        };
        // The memory store fails only on invalid requests, which `shares` is not; deny rather than
        // invent an answer if it ever does.
        self.fallback
            .acquire_local(&shares)
            .unwrap_or_else(|_| self.deny_for_cooldown(limits))
    }

    /// This replica's share of each limit, or `None` when a cost can never fit its share: that
    /// request is denied, not an error (it was valid; only the store is away).
    fn shares_of<'a>(&self, limits: &[Limit<'a>]) -> Option<smallvec::SmallVec<[Limit<'a>; 4]>> {
        limits
            .iter()
            .map(|limit| {
                let policy = limit.policy.share(self.replicas()).ok()?;
                (limit.cost <= policy.burst()).then_some(Limit { policy, ..*limit })
            })
            .collect()
    }
}
