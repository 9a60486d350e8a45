//! The circuit breakers, one per store node: which nodes a request involves, whether they may be
//! called, and what a call's outcome tells them.
//!
//! Apart because an outage must cost one deadline per cooldown, not one per request, and that is
//! decided here alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{RequestError, StoreError, StoreFailure};
use crate::store::{Limit, Store, Verdict};

use super::{Limiter, NODE_BREAKERS, duration_ns};

impl Limiter {
    /// The breakers of the nodes that hold `limits`' keys, as a bit set.
    pub(super) fn nodes_of(&self, limits: &[Limit<'_>]) -> u32 {
        limits.iter().fold(0, |set, limit| {
            set | 1 << (self.store.node_of(limit.key) % NODE_BREAKERS)
        })
    }

    /// Whether every node of the request may be called now (see [`Breaker::admits`]). Every
    /// breaker is looked at before any probe is claimed, so a request that another node's open
    /// breaker stops does not spend this node's probe.
    pub(super) fn nodes_admit(&self, nodes: u32, now: u64) -> bool {
        self.involved(nodes).all(|b| b.may_probe(now))
            && self.involved(nodes).all(|b| b.admits(now, self.cooldown))
    }

    /// The breakers of `nodes`, a bit set from [`nodes_of`](Self::nodes_of).
    fn involved(&self, nodes: u32) -> impl Iterator<Item = &Breaker> {
        self.breakers
            .iter()
            .enumerate()
            .filter(move |(i, _)| nodes & (1 << i) != 0)
            .map(|(_, breaker)| breaker)
    }

    /// The store's verdict, or the kind of its failure; either way the breakers of `nodes` learn
    /// of it. An invalid request is the caller's error.
    pub(super) fn settle(
        &self,
        nodes: u32,
        outcome: Result<Result<Verdict, StoreError>, tokio::time::error::Elapsed>,
    ) -> Result<Result<Verdict, StoreFailure>, RequestError> {
        let involved = self.involved(nodes);
        let error = match outcome {
            Ok(Ok(verdict)) => {
                involved.for_each(Breaker::close);
                return Ok(Ok(verdict));
            }
            Ok(Err(StoreError::Request(error))) => return Err(error),
            Ok(Err(error)) => error,
            Err(_) => StoreError::Timeout(self.deadline),
        };
        // Which of the request's nodes failed is not known: all of them wait out the cooldown.
        let until = self.clock.now().saturating_add(duration_ns(self.cooldown));
        involved.for_each(|breaker| breaker.open(until));
        Ok(Err(error.kind()))
    }
}

/// A circuit breaker in one word: zero when closed, else the clock reading until which the store is
/// skipped.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    // Relaxed: the breaker is advisory and publishes no other data; a caller that reads a stale
    // value merely makes (or skips) one store call more.
    open_until: AtomicU64,
}

impl Breaker {
    /// Whether a call may go to the store now. Once the cooldown has passed, exactly one caller wins
    /// the compare-and-swap and probes; the others keep using the failure policy meanwhile.
    pub(super) fn admits(&self, now: u64, cooldown: Duration) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        let next = now.saturating_add(duration_ns(cooldown)).max(1);
        self.open_until
            .compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether [`admits`](Self::admits) could say yes now, claiming nothing.
    pub(super) fn may_probe(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        until == 0 || now >= until
    }

    /// Skips the store until `until`.
    pub(super) fn open(&self, until: u64) {
        self.open_until.store(until.max(1), Ordering::Relaxed);
    }

    /// Goes back to the store.
    pub(super) fn close(&self) {
        self.open_until.store(0, Ordering::Relaxed);
    }

    /// Whether the store is being called.
    pub(super) fn is_closed(&self) -> bool {
        self.open_until.load(Ordering::Relaxed) == 0
    }
}
