//! Many buckets by key (client IPs, API keys, routes), with runtime policies and bounded memory.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::clock::{Clock, MonotonicClock};
use crate::decision::Decision;
use crate::error::RequestError;
use crate::gcra;
use crate::keyed_state::{KeyedItem, KeyedState};
use crate::policy::Policy;
use crate::policy_cell::PolicyCell;

/// The default most keys a limiter keeps buckets for.
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// A limiter with one bucket per key, for keys of type `K`.
///
/// Every key gets the default policy unless it has an override; both can change at runtime, and
/// the next decision for a key uses its new policy against the state its bucket already has, so a
/// tightened key never gets a fresh bucket. That state is a time, the instant the bucket is full
/// again: a change keeps that instant, so the tokens in use are counted again at the new rate (an
/// hour of use is one token of `per_hour(1)` and four of `per_hour(4)`). Whatever the change, the new
/// policy's bound holds from the moment it applies. Memory is bounded without help: buckets that are full
/// again are dropped as the limiter goes, and at most [`max_keys`](KeyedLimiterBuilder::max_keys)
/// are kept. When that many keys are all active, the least indebted buckets are evicted into a
/// fixed-size overflow sketch that remembers (over-estimating, never under) when each would have
/// been full again, so a key that comes back is charged at least what it owed and a newcomer is
/// still served (see [`evicted`](Self::evicted)). The sketch is allocated at the first eviction:
/// 32 bytes per key of `max_keys`, rounded up to a power of two.
///
/// ```
/// use ratelimit_core::{KeyedLimiter, Policy};
///
/// let limiter: KeyedLimiter<String> = KeyedLimiter::new(Policy::per_second(1)?);
/// limiter.set_policy("partner".to_string(), Policy::per_second(100)?);
/// assert!(limiter.acquire("10.0.0.1", 1)?.is_allowed());
/// assert!(!limiter.acquire("10.0.0.1", 1)?.is_allowed());
/// assert!(limiter.acquire("partner", 1)?.is_allowed());
/// assert!(limiter.acquire("partner", 1)?.is_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyedLimiter<K, C: Clock = MonotonicClock> {
    state: KeyedState<K>,
    // Read on every request, written rarely: a sequence lock costs a reader a few plain loads.
    default: PolicyCell,
    // Looked up only while some key has an override (`has_overrides`), so limiters without
    // overrides never touch this lock.
    overrides: RwLock<HashMap<K, Policy, foldhash::fast::RandomState>>,
    // Relaxed: a check that races a new override may use the previous policy once, the same as
    // if it had run a moment earlier.
    has_overrides: AtomicBool,
    clock: C,
}

/// Sets up a [`KeyedLimiter`].
#[derive(Debug, Clone)]
pub struct KeyedLimiterBuilder<C: Clock = MonotonicClock> {
    policy: Policy,
    max_keys: usize,
    shards: usize,
    clock: C,
}

impl KeyedLimiterBuilder<MonotonicClock> {
    /// A builder for a limiter whose default policy is `policy`, on the monotonic clock.
    pub fn new(policy: Policy) -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        KeyedLimiterBuilder {
            policy,
            max_keys: DEFAULT_MAX_KEYS,
            shards: cores.saturating_mul(8),
            clock: MonotonicClock::new(),
        }
    }
}

impl<C: Clock> KeyedLimiterBuilder<C> {
    /// The most keys to keep buckets for (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How many independently locked shards the table has (rounded up to a power of two; default
    /// eight per core). More shards mean less contention between threads on different keys.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Another clock, such as a [`ManualClock`](crate::ManualClock) in tests.
    pub fn clock<C2: Clock>(self, clock: C2) -> KeyedLimiterBuilder<C2> {
        KeyedLimiterBuilder {
            policy: self.policy,
            max_keys: self.max_keys,
            shards: self.shards,
            clock,
        }
    }

    /// The limiter.
    pub fn build<K: Hash + Eq + Clone>(self) -> KeyedLimiter<K, C> {
        KeyedLimiter {
            state: KeyedState::new(self.max_keys, self.shards),
            default: PolicyCell::new(self.policy),
            overrides: RwLock::new(HashMap::default()),
            has_overrides: AtomicBool::new(false),
            clock: self.clock,
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K, MonotonicClock> {
    /// A limiter giving every key `policy`, with the default settings.
    pub fn new(policy: Policy) -> Self {
        KeyedLimiterBuilder::new(policy).build()
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedLimiter<K, C> {
    /// Admits and debits `cost` for `key` if its bucket holds it; a denial changes nothing.
    #[inline]
    pub fn acquire<Q>(&self, key: &Q, cost: u32) -> Result<Decision, RequestError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let policy = self.policy_for(key);
        gcra::validate_cost(&policy, cost)?;
        Ok(self.state.acquire(key, &policy, cost, self.clock.now()))
    }

    /// What [`acquire`](Self::acquire) would answer now, consuming nothing.
    pub fn peek<Q>(&self, key: &Q, cost: u32) -> Result<Decision, RequestError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let policy = self.policy_for(key);
        gcra::validate_cost(&policy, cost)?;
        Ok(self.state.peek(key, &policy, cost, self.clock.now()))
    }

    /// Checks one request against several keys (say a client, its route and a global key), each
    /// under its own policy: admitted and debited by all, or by none. Returns whether it was
    /// admitted and each key's decision, in order.
    pub fn acquire_all<Q>(
        &self,
        requests: &[(&Q, u32)],
    ) -> Result<(bool, Vec<Decision>), RequestError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        check_request_shape(requests.len())?;
        let mut items = Vec::with_capacity(requests.len());
        for (i, (key, cost)) in requests.iter().enumerate() {
            if requests.iter().take(i).any(|(other, _)| other == key) {
                return Err(RequestError::DuplicateKey { position: i });
            }
            let policy = self.policy_for(*key);
            gcra::validate_cost(&policy, *cost)?;
            items.push(KeyedItem {
                key: *key,
                policy,
                cost: *cost,
            });
        }
        let (allowed, decisions) = self.state.acquire_all(&items, self.clock.now());
        Ok((allowed, decisions.into_vec()))
    }

    /// Waits until `cost` is admitted for `key`, then returns its decision. Cancellation-safe:
    /// nothing is debited before the request is admitted. Sleeps are jittered so that many waiters
    /// on one key do not wake as a herd.
    pub async fn until_ready<Q>(&self, key: &Q, cost: u32) -> Result<Decision, RequestError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        loop {
            let decision = self.acquire(key, cost)?;
            if decision.is_allowed() {
                return Ok(decision);
            }
            let policy = self.policy_for(key);
            crate::wait::sleep_with_jitter(decision.retry_after(), &policy).await;
        }
    }

    /// Fills `key`'s bucket up again.
    pub fn reset<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.state.remove(key);
    }

    /// The policy `key` is limited by now.
    #[inline]
    pub fn policy_for<Q>(&self, key: &Q) -> Policy
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.has_overrides.load(Ordering::Relaxed) {
            if let Some(policy) = self.overrides.read().get(key) {
                return *policy;
            }
        }
        self.default.load()
    }

    /// The policy of every key without an override.
    pub fn default_policy(&self) -> Policy {
        self.default.load()
    }

    /// Changes the policy of every key without an override, from the next decision on.
    pub fn set_default_policy(&self, policy: Policy) {
        self.default.store(policy);
    }

    /// Gives `key` its own policy, from the next decision on.
    pub fn set_policy(&self, key: K, policy: Policy) {
        let mut overrides = self.overrides.write();
        overrides.insert(key, policy);
        self.has_overrides.store(true, Ordering::Relaxed);
    }

    /// Puts `key` back under the default policy.
    pub fn clear_policy<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut overrides = self.overrides.write();
        overrides.remove(key);
        self.has_overrides
            .store(!overrides.is_empty(), Ordering::Relaxed);
    }

    /// Buckets held now (keys with tokens in use, plus full ones not yet swept).
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most buckets this limiter holds.
    pub fn max_keys(&self) -> usize {
        self.state.max_keys()
    }

    /// How many requests were refused because the table was full of active keys that could not
    /// be evicted (a rare race between shards; eviction makes room otherwise).
    pub fn refused_when_full(&self) -> u64 {
        self.state.refused_when_full()
    }

    /// How many buckets still in debt were moved into the overflow sketch to make room.
    pub fn evicted(&self) -> u64 {
        self.state.evicted()
    }

    /// Drops every bucket that is full again. The limiter does this by itself as it goes; call it
    /// to give memory back at once, say after a flood.
    pub fn retain_recent(&self) {
        self.state.retain_recent(self.clock.now());
    }

    /// The limiter's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}

impl<K: Hash + Eq + Clone, C: Clock> std::fmt::Debug for KeyedLimiter<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("keys", &self.state.len())
            .field("max_keys", &self.state.max_keys())
            .field("default", &self.default.load())
            .finish_non_exhaustive()
    }
}

/// Checks the number of limits in one request.
pub(crate) fn check_request_shape(count: usize) -> Result<(), RequestError> {
    if count == 0 {
        return Err(RequestError::NoLimits);
    }
    if count > crate::MAX_LIMITS {
        return Err(RequestError::TooManyLimits {
            count,
            max: crate::MAX_LIMITS,
        });
    }
    Ok(())
}

// An `Arc<KeyedLimiter>` is how callers share one; make sure it can be.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Arc<KeyedLimiter<String>>>();
};
