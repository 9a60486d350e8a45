//! The store calls of a request: enforced limits in all-or-nothing calls, chunked by store and by
//! size, peeked first when there are several chunks.
//!
//! Apart because this is where the bound is kept when a request has more limits than one call
//! decides, or limits in two stores.

use ratelimit_core::{Limit, MAX_LIMITS};

use crate::envoy::config::Unit;
use crate::envoy::metrics;

use super::RateLimitServer;
use super::merged::Merged;

impl RateLimitServer {
    /// Decides the enforced limits `at` of `limits`; whether the request is admitted.
    ///
    /// Up to [`MAX_LIMITS`] limits are one all-or-nothing store call. More are decided in chunks
    /// of [`MAX_LIMITS`]: first every chunk is peeked, and a request that any chunk would deny is
    /// denied with nothing debited; then the chunks are debited in turn, and a chunk that denies
    /// after all (a race with another request between the peek and the debit) stops the request
    /// with the earlier chunks debited. That can only under-admit: no limit is ever debited past
    /// its bound, and a debited chunk only leaves less for later requests.
    pub(super) async fn enforce(&self, limits: &mut [Merged<'_>], at: &[usize]) -> bool {
        let chunks = self.chunks(limits, at);
        if chunks.len() > 1 {
            let mut all = true;
            for chunk in &chunks {
                all &= self.call(limits, chunk, Call::Peek).await;
            }
            if !all {
                return false;
            }
        }
        for chunk in &chunks {
            if !self.call(limits, chunk, Call::Acquire).await {
                return false;
            }
        }
        true
    }

    /// The limits `at` in groups that one store call decides: by store (the per-second one or
    /// the main one), then at most [`MAX_LIMITS`] a call.
    pub(super) fn chunks(&self, limits: &[Merged<'_>], at: &[usize]) -> Vec<Vec<usize>> {
        let (fast, main): (Vec<usize>, Vec<usize>) =
            at.iter().partition(|&&i| self.is_per_second(&limits[i]));
        [fast, main]
            .iter()
            .flat_map(|group| group.chunks(MAX_LIMITS).map(<[usize]>::to_vec))
            .collect()
    }

    /// Whether `limit` is counted in the per-second store.
    fn is_per_second(&self, limit: &Merged<'_>) -> bool {
        self.per_second.is_some() && limit.matched.rate_limit.unit == Unit::Second
    }

    /// One store call for the limits `chunk` of `limits`, all-or-nothing; whether it admitted.
    /// Each limit gets its decision; a limit the limiter refused as invalid becomes `never`.
    pub(super) async fn call(
        &self,
        limits: &mut [Merged<'_>],
        chunk: &[usize],
        call: Call,
    ) -> bool {
        let (asked_at, answer) = {
            // The keys borrow from `limits`: ask first, write the decisions afterwards.
            let (asked_at, asked): (Vec<usize>, Vec<Limit<'_>>) = chunk
                .iter()
                .filter_map(|&i| Some((i, limits[i].limit()?)))
                .unzip();
            // A chunk is of one store (see `chunks`).
            let limiter = match (&self.per_second, chunk.first()) {
                (Some(fast), Some(&i)) if self.is_per_second(&limits[i]) => fast,
                _ => &self.limiter,
            };
            let answer = match call {
                Call::Peek => limiter.peek(&asked).await,
                Call::Acquire | Call::Shadow => limiter.acquire(&asked).await,
            };
            (
                asked_at,
                answer.map(|v| (v.is_allowed(), v.decisions().to_vec(), v.degraded_by())),
            )
        };
        match answer {
            Ok((allowed, decisions, degraded_by)) => {
                if let Some(failure) = degraded_by {
                    // The store failed (or was skipped after failing): the failure policy
                    // decided this call.
                    metrics::record_store_error(failure);
                }
                for (&i, decision) in asked_at.iter().zip(decisions) {
                    limits[i].decision = Some(decision);
                }
                allowed && asked_at.len() == chunk.len()
            }
            Err(error) => {
                // An invalid request reached the limiter after all: over limit (fail closed),
                // never an error status that Envoy would admit.
                self.metrics.refused();
                tracing::warn!(%error, "an invalid request reached the limiter; answered OVER_LIMIT");
                for &i in chunk {
                    limits[i].never = true;
                }
                false
            }
        }
    }
}

/// What a store call is for.
#[derive(Clone, Copy)]
pub(super) enum Call {
    /// Would the limits admit? Debits nothing.
    Peek,
    /// Debit enforced limits.
    Acquire,
    /// Debit shadow limits (counted, never enforced).
    Shadow,
}
