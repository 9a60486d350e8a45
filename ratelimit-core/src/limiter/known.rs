//! Answers the over-limit cache gives without asking the store: a key the store has just denied
//! stays denied until the store said.
//!
//! Apart because it is an optimisation with a promise of its own: it never admits, it only spares
//! the store a call whose answer is known.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::decision::Decision;
use crate::store::{Limit, Verdict};

use super::{Limiter, duration_ns};

impl Limiter {
    /// The answer for a request one of whose keys the store has just denied, if any: denied by
    /// that limit until the store said; the other limits were not consulted and are shown as
    /// admitting with nothing taken.
    pub(super) fn known_over_limit(&self, limits: &[Limit<'_>], now: u64) -> Option<Verdict> {
        let cache = self.over_limit.as_ref()?;
        let mut decisions = Vec::with_capacity(limits.len());
        let mut denied = false;
        for limit in limits {
            let burst = limit.policy.burst();
            decisions.push(
                match cache.denied_until(limit.key, &limit.policy, limit.cost, now) {
                    Some(until) => {
                        denied = true;
                        let wait = Duration::from_nanos(until - now);
                        Decision::new(false, burst, 0, wait, wait)
                    }
                    None => Decision::new(true, burst, burst, Duration::ZERO, Duration::ZERO),
                },
            );
        }
        if !denied {
            return None;
        }
        self.over_limit_hits.fetch_add(1, Ordering::Relaxed);
        Some(Verdict::new(false, decisions))
    }

    /// Remembers the limits that denied `verdict` until the store said they have room again.
    pub(super) fn remember_denial(&self, limits: &[Limit<'_>], verdict: &Verdict) {
        let Some(cache) = &self.over_limit else {
            return;
        };
        // Measured from now, after the reply: the store's instant is a round trip earlier, so
        // this waits a little longer than needed, never less.
        let now = self.clock.now();
        for (limit, decision) in limits.iter().zip(verdict.decisions()) {
            if !decision.is_allowed() {
                let until = now.saturating_add(duration_ns(decision.retry_after()));
                cache.insert(limit.key, limit.policy, limit.cost, until, now);
            }
        }
    }
}
