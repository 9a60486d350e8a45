//! Leased tokens: a replica takes `k` tokens of a busy key in one store operation and spends them
//! here, so a hot key costs one store round trip per `k` decisions instead of one per decision.
//!
//! # The bound
//! A lease is nothing but one [`Store::acquire`](crate::Store::acquire) of cost `k` on the key, so
//! the store counts every leased token when the lease is taken, exactly as it counts any request.
//! Unspent tokens are not given back: they expire with the lease, which can only under-admit.
//!
//! Over any window `[a, b]` of length `w`, the tokens spent in it come from leases the store granted
//! in `[a, b]` (at most `burst + rate × w` together with every exact decision, the store's own
//! bound) or from leases granted before `a`. A replica holds at most one lease per key with
//! spendable tokens: it zeroes what is left of the old one *before* it asks for the next (see
//! [`Slot::claim`]), and only one task per replica asks at a time. So before `a` at most one lease
//! per replica still has tokens to spend, each of at most `max_outstanding / replicas` tokens, and
//!
//! ```text
//! admitted over w  <=  burst + rate × w + max_outstanding
//! ```
//!
//! provided the replica count the limiters are configured with
//! ([`Limiter::with_replicas`](crate::Limiter::with_replicas)) is at least the real number of
//! replicas sharing the store. With fewer configured than running, each lease is larger than its
//! share and the slack is `real replicas × max_outstanding / configured replicas`.
//!
//! The lease's time to live plays no part in that bound; it keeps a replica from sitting on tokens
//! for long (which would move admissions in time and strand budget), and it sizes the lease.
//!
//! # Memory
//! At most `max_keys` slots (about 150 bytes each with the key), in 16 shards. A full shard first
//! forgets the slots that have been idle for two time-to-lives (their leases are expired); if it
//! is still full, a new key takes the exact per-decision path, and nothing is allocated for it.
//!
//! The configuration is in this file; one key's lease and the right to fetch the next one are in
//! `slot.rs`, and the sharded table of slots in `table.rs`.

use std::time::Duration;

mod slot;
mod table;

pub(crate) use slot::{Fetch, Slot, Spend};
pub(crate) use table::Leases;

/// Slots held at most unless set otherwise ([`LeaseConfig::max_keys`]): only busy keys hold a
/// lease, so a few thousand is plenty; about 600 KB.
pub const DEFAULT_LEASE_KEYS: usize = 4_096;

/// How a [`Limiter`](crate::Limiter) leases tokens of busy keys (off unless
/// [`Limiter::with_leases`](crate::Limiter::with_leases) is called).
///
/// The lease size adapts to each key: `k = clamp(observed rate × ttl / 2, min_tokens,
/// min(max_outstanding, burst) / replicas)`; a key whose `k` would be below `min_tokens` stays on
/// the exact per-decision path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The most tokens of one key that all replicas together may hold in leases at once: the slack
    /// the bound gains (`burst + rate × w + max_outstanding`). Each replica's leases are at most
    /// `max_outstanding / replicas` tokens.
    pub max_outstanding: u32,
    /// How long a lease may be spent. Half of it, at the key's observed rate, sizes the lease.
    pub ttl: Duration,
    /// The smallest lease worth taking: a key that would get fewer tokens stays on the exact path.
    pub min_tokens: u32,
    /// How many keys this limiter tracks for leasing at most (see [`DEFAULT_LEASE_KEYS`]).
    pub max_keys: usize,
}

impl LeaseConfig {
    /// Leases of up to `max_outstanding` tokens per key across replicas, living `ttl`, of at
    /// least 2 tokens, for up to [`DEFAULT_LEASE_KEYS`] keys.
    pub fn new(max_outstanding: u32, ttl: Duration) -> Self {
        LeaseConfig {
            max_outstanding,
            ttl,
            min_tokens: 2,
            max_keys: DEFAULT_LEASE_KEYS,
        }
    }

    /// Checks this configuration for a limiter of `replicas` replicas.
    pub fn validate(&self, replicas: u32) -> Result<(), LeaseConfigError> {
        if self.ttl.is_zero() {
            return Err(LeaseConfigError::ZeroTtl);
        }
        if self.min_tokens == 0 {
            return Err(LeaseConfigError::ZeroMinTokens);
        }
        if self.max_keys == 0 {
            return Err(LeaseConfigError::ZeroKeys);
        }
        let replicas = replicas.max(1);
        if self.max_outstanding < replicas {
            return Err(LeaseConfigError::OutstandingBelowReplicas {
                max_outstanding: self.max_outstanding,
                replicas,
            });
        }
        let share = self.max_outstanding / replicas;
        if self.min_tokens > share {
            return Err(LeaseConfigError::MinTokensAboveShare {
                min_tokens: self.min_tokens,
                share,
            });
        }
        Ok(())
    }
}

/// Why a [`LeaseConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseConfigError {
    /// A lease that lives no time can never be spent.
    #[error("a lease needs a time to live longer than zero")]
    ZeroTtl,
    /// A lease of zero tokens is no lease.
    #[error("the smallest lease must be at least 1 token")]
    ZeroMinTokens,
    /// Leasing needs at least one slot.
    #[error("leasing needs room for at least 1 key")]
    ZeroKeys,
    /// Every replica needs at least one token of the cap.
    #[error("max_outstanding {max_outstanding} leaves no token for each of {replicas} replicas")]
    OutstandingBelowReplicas {
        /// The configured cap.
        max_outstanding: u32,
        /// The configured replica count.
        replicas: u32,
    },
    /// The smallest lease is larger than any replica may hold: no key would ever be leased.
    #[error("min_tokens {min_tokens} is above each replica's share of {share} tokens")]
    MinTokensAboveShare {
        /// The configured smallest lease.
        min_tokens: u32,
        /// `max_outstanding / replicas`.
        share: u32,
    },
}

#[cfg(test)]
mod tests;
