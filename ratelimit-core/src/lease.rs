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

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use parking_lot::RwLock;
use tokio::sync::Notify;

use crate::policy::Policy;

/// Slots held at most unless set otherwise ([`LeaseConfig::max_keys`]): only busy keys hold a
/// lease, so a few thousand is plenty; about 600 KB.
pub const DEFAULT_LEASE_KEYS: usize = 4_096;

const SHARDS: usize = 16;

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

/// What [`Slot::spend`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Spent from the lease; this many tokens are left in it.
    Spent(u64),
    /// The store denied this slot's last lease: denied here until this clock reading.
    Denied(u64),
    /// No live lease with enough tokens under this policy.
    Empty,
}

const IDLE: u8 = 0;
const FETCHING: u8 = 1;
const DEAD: u8 = 2;

/// One key's lease on this replica.
pub(crate) struct Slot {
    /// Tokens left in the current lease.
    tokens: AtomicU64,
    /// Clock reading at which the current lease expires.
    expires_at: AtomicU64,
    /// The policy the lease was taken under (emission interval and burst): a request under
    /// another policy does not spend it.
    interval_ns: AtomicU64,
    burst: AtomicU32,
    /// Until when the store's denial of the last lease holds (0: none).
    denied_until: AtomicU64,
    /// IDLE, FETCHING (one task is asking the store for a lease) or DEAD (evicted).
    state: AtomicU8,
    /// The rate estimate: cost seen since `window_start`, and in the window before.
    window_start: AtomicU64,
    window_cost: AtomicU64,
    last_window_cost: AtomicU64,
    /// Wakes the tasks waiting for a fetch in flight.
    notify: Notify,
}

impl Slot {
    fn new(now: u64) -> Self {
        Slot {
            tokens: AtomicU64::new(0),
            expires_at: AtomicU64::new(0),
            interval_ns: AtomicU64::new(0),
            burst: AtomicU32::new(0),
            denied_until: AtomicU64::new(0),
            state: AtomicU8::new(IDLE),
            window_start: AtomicU64::new(now),
            window_cost: AtomicU64::new(0),
            last_window_cost: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    /// Counts a decision of `cost` at `now` and returns the key's estimated cost per window of
    /// `window_ns`: the larger of the last whole window and the current one so far, so a key that
    /// turns busy is leased within its first window, and an idle key never is.
    ///
    /// Relaxed throughout: an estimate, read by nothing that needs it exact; a lost update
    /// between two racing window rolls only misestimates one window.
    pub(crate) fn observe(&self, cost: u32, now: u64, window_ns: u64) -> u64 {
        let start = self.window_start.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(start);
        if elapsed >= window_ns
            && self
                .window_start
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let finished = self.window_cost.swap(0, Ordering::Relaxed);
            // A gap of a whole window with no decision means the key was idle.
            let last = if elapsed >= window_ns.saturating_mul(2) {
                0
            } else {
                finished
            };
            self.last_window_cost.store(last, Ordering::Relaxed);
        }
        let current = self
            .window_cost
            .fetch_add(u64::from(cost), Ordering::Relaxed)
            .saturating_add(u64::from(cost));
        current.max(self.last_window_cost.load(Ordering::Relaxed))
    }

    /// Spends `cost` tokens of the live lease taken under `policy`, if it has them.
    pub(crate) fn spend(&self, cost: u32, policy: &Policy, now: u64) -> Spend {
        let denied_until = self.denied_until.load(Ordering::Relaxed);
        if now < denied_until {
            return Spend::Denied(denied_until);
        }
        let cost = u64::from(cost);
        // Acquire on the load and on the compare-and-swap pairs with the Release store of
        // `install`: having seen a lease's tokens, this task also sees that lease's expiry and
        // policy, not an older lease's. The bound itself needs only the atomicity of the
        // compare-and-swap: every read-modify-write sees the latest value in the word's
        // modification order, so two tasks never spend the same token, and a lease replaced or
        // evicted meanwhile (the word set to the new lease's count or to zero) fails the exchange
        // and is decided again from what the word holds now.
        let mut tokens = self.tokens.load(Ordering::Acquire);
        loop {
            if tokens < cost
                || now >= self.expires_at.load(Ordering::Relaxed)
                || self.interval_ns.load(Ordering::Relaxed) != policy.emission_interval_ns()
                || self.burst.load(Ordering::Relaxed) != policy.burst()
            {
                return Spend::Empty;
            }
            match self.tokens.compare_exchange_weak(
                tokens,
                tokens - cost,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Spend::Spent(tokens - cost),
                Err(current) => tokens = current,
            }
        }
    }

    /// Claims the right to fetch the next lease, if no other task of this replica holds it; the
    /// tokens left of the current lease are dropped first, so that this replica never holds two
    /// leases with tokens to spend (the bound's premise).
    ///
    /// Acquire on success pairs with the Release of the previous fetch's end: this task sees
    /// what that fetch installed.
    pub(crate) fn claim(&self) -> Option<Fetch<'_>> {
        self.state
            .compare_exchange(IDLE, FETCHING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // Before the store is asked: a lease's tokens are all spent before the store grants
        // the next one.
        self.tokens.store(0, Ordering::Relaxed);
        Some(Fetch { slot: self })
    }

    /// Nanoseconds until the current lease expires (0 if it has).
    pub(crate) fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.load(Ordering::Relaxed).saturating_sub(now)
    }

    /// Whether a fetch is in flight (waiting for it is worth it).
    pub(crate) fn is_fetching(&self) -> bool {
        self.state.load(Ordering::Acquire) == FETCHING
    }

    /// Whether the slot was evicted (its key must take the exact path from here).
    pub(crate) fn is_dead(&self) -> bool {
        self.state.load(Ordering::Acquire) == DEAD
    }

    /// Waits until the fetch in flight ends, or `deadline` passes. Registers before it looks at
    /// the state, so a fetch that ends in between is not missed.
    pub(crate) async fn wait_for_fetch(&self, deadline: Duration) {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.is_fetching() {
            let _ = tokio::time::timeout(deadline, notified).await;
        }
    }

    /// Evicts the slot if no fetch is in flight: IDLE → DEAD, tokens zeroed, so a task still
    /// holding it spends nothing and takes the exact path.
    pub(crate) fn evict(&self) -> bool {
        if self
            .state
            .compare_exchange(IDLE, DEAD, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.tokens.store(0, Ordering::Release);
        self.notify.notify_waiters();
        true
    }

    /// Whether an idle slot has seen no decision for two windows: its lease, taken at some
    /// decision, has then expired, so forgetting it loses nothing.
    fn is_stale(&self, now: u64, window_ns: u64) -> bool {
        self.state.load(Ordering::Relaxed) == IDLE
            && now
                >= self
                    .window_start
                    .load(Ordering::Relaxed)
                    .saturating_add(window_ns.saturating_mul(2))
    }
}

/// The right to fetch a slot's next lease, held by one task; dropping it (the lease was installed
/// or denied, or the task was cancelled mid-fetch) lets the next task fetch.
pub(crate) struct Fetch<'a> {
    slot: &'a Slot,
}

impl Fetch<'_> {
    /// Installs a granted lease: `tokens` to spend under `policy` until `expires_at`.
    pub(crate) fn install(self, tokens: u64, policy: &Policy, expires_at: u64) {
        let slot = self.slot;
        slot.expires_at.store(expires_at, Ordering::Relaxed);
        slot.interval_ns
            .store(policy.emission_interval_ns(), Ordering::Relaxed);
        slot.burst.store(policy.burst(), Ordering::Relaxed);
        slot.denied_until.store(0, Ordering::Relaxed);
        // Release: publishes the expiry and policy above with the tokens (see `spend`).
        slot.tokens.store(tokens, Ordering::Release);
    }

    /// Records the store's denial of the lease: the key is denied here until `until`.
    pub(crate) fn deny(self, until: u64) {
        self.slot.denied_until.store(until, Ordering::Relaxed);
    }
}

impl Drop for Fetch<'_> {
    fn drop(&mut self) {
        // Release: the next fetcher (Acquire in `claim`) and the waiters see what this one did.
        self.slot.state.store(IDLE, Ordering::Release);
        self.slot.notify.notify_waiters();
    }
}

struct Shard {
    slots: HashMap<Box<str>, Arc<Slot>, foldhash::fast::RandomState>,
    // Clock reading of the last sweep for stale slots: sweeps are at most one per window, so a
    // flood of new keys into a full table costs no scan per key.
    last_sweep: u64,
}

/// The lease table of one limiter.
pub(crate) struct Leases {
    config: LeaseConfig,
    ttl_ns: u64,
    // A read lock per lookup; the write lock only to add or sweep keys.
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

impl Leases {
    /// A table for `config`, which the caller has validated.
    pub(crate) fn new(config: LeaseConfig) -> Self {
        let hasher = foldhash::fast::RandomState::default();
        Leases {
            config,
            ttl_ns: u64::try_from(config.ttl.as_nanos()).unwrap_or(u64::MAX),
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(RwLock::new(Shard {
                        slots: HashMap::with_hasher(hasher),
                        last_sweep: 0,
                    }))
                })
                .collect(),
            per_shard: config.max_keys.div_ceil(SHARDS).max(1),
            hasher,
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The time to live, in clock nanoseconds.
    pub(crate) fn ttl_ns(&self) -> u64 {
        self.ttl_ns
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        // The index is below SHARDS, the number of shards.
        &self.shards[index]
    }

    /// `key`'s slot, made if there is room; `None` when the table is full of live slots (the key
    /// then takes the exact path). Allocates only when a slot is made.
    pub(crate) fn slot(&self, key: &str, now: u64) -> Option<Arc<Slot>> {
        let shard = self.shard(key);
        {
            let read = shard.read();
            if let Some(slot) = read.slots.get(key) {
                return Some(slot.clone());
            }
            if read.slots.len() >= self.per_shard
                && now < read.last_sweep.saturating_add(self.ttl_ns)
            {
                return None;
            }
        }
        let mut write = shard.write();
        if let Some(slot) = write.slots.get(key) {
            return Some(slot.clone());
        }
        if write.slots.len() >= self.per_shard {
            if now < write.last_sweep.saturating_add(self.ttl_ns) {
                return None;
            }
            write.last_sweep = now;
            let ttl_ns = self.ttl_ns;
            write
                .slots
                .retain(|_, slot| !(slot.is_stale(now, ttl_ns) && slot.evict()));
            if write.slots.len() >= self.per_shard {
                return None;
            }
        }
        let slot = Arc::new(Slot::new(now));
        write.slots.insert(key.into(), slot.clone());
        Some(slot)
    }

    /// Forgets `key`'s lease (its bucket was reset). A fetch in flight is left to finish: its
    /// lease was taken before the reset.
    pub(crate) fn forget(&self, key: &str) {
        let mut write = self.shard(key).write();
        if write.slots.get(key).is_some_and(|slot| slot.evict()) {
            write.slots.remove(key);
        }
    }

    /// The lease to take for a key under `policy` whose estimated cost per time to live is
    /// `per_ttl`, on a limiter of `replicas`: `None` when it would be below `min_tokens` (the key
    /// stays on the exact path).
    pub(crate) fn lease_size(&self, per_ttl: u64, policy: &Policy, replicas: u32) -> Option<u32> {
        let replicas = replicas.max(1);
        let cap = (self.config.max_outstanding / replicas).min(policy.burst() / replicas);
        let wanted = u32::try_from(per_ttl / 2).unwrap_or(u32::MAX);
        let k = wanted.min(cap);
        (k >= self.config.min_tokens).then_some(k)
    }

    /// Slots held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().slots.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy() -> Policy {
        Policy::per_second(100).unwrap()
    }

    #[test]
    fn spending_is_exact_under_contention() {
        let slot = Slot::new(0);
        let p = policy();
        slot.claim().unwrap().install(10_000, &p, u64::MAX);
        let spent = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while let Spend::Spent(_) = slot.spend(3, &p, 1) {
                        spent.fetch_add(3, Ordering::Relaxed);
                    }
                });
            }
        });
        // 3,333 spends of 3; the last token can never be spent by a request of 3.
        assert_eq!(spent.load(Ordering::Relaxed), 9_999);
        assert_eq!(slot.spend(1, &p, 1), Spend::Spent(0));
        assert_eq!(slot.spend(1, &p, 1), Spend::Empty);
    }

    #[test]
    fn a_lease_expires_and_belongs_to_its_policy() {
        let slot = Slot::new(0);
        let p = policy();
        slot.claim().unwrap().install(5, &p, 1_000);
        assert_eq!(slot.spend(1, &p, 999), Spend::Spent(4));
        let other = p.with_burst(50).unwrap();
        assert_eq!(slot.spend(1, &other, 999), Spend::Empty, "another policy");
        assert_eq!(slot.spend(1, &p, 1_000), Spend::Empty, "expired");
        assert_eq!(slot.spend(5, &p, 10), Spend::Empty, "more than is left");
    }

    #[test]
    fn only_one_fetch_at_a_time_and_it_drops_the_old_lease() {
        let slot = Slot::new(0);
        let p = policy();
        slot.claim().unwrap().install(5, &p, u64::MAX);
        let fetch = slot.claim().unwrap();
        assert!(slot.is_fetching());
        assert!(
            slot.claim().is_none(),
            "a second fetch while one is in flight"
        );
        assert_eq!(
            slot.spend(1, &p, 1),
            Spend::Empty,
            "the old lease's tokens are dropped before the next one is asked for"
        );
        assert!(!slot.evict(), "a slot being fetched is not evicted");
        fetch.install(3, &p, u64::MAX);
        assert!(!slot.is_fetching());
        assert_eq!(slot.spend(1, &p, 1), Spend::Spent(2));
        // A cancelled fetch (dropped guard) lets the next task fetch.
        drop(slot.claim().unwrap());
        assert!(slot.claim().is_some());
    }

    #[test]
    fn concurrent_claims_have_one_winner() {
        let slot = Slot::new(0);
        let winners = AtomicU64::new(0);
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    if let Some(fetch) = slot.claim() {
                        winners.fetch_add(1, Ordering::Relaxed);
                        // Held until every thread has tried.
                        barrier.wait();
                        drop(fetch);
                    } else {
                        barrier.wait();
                    }
                });
            }
        });
        assert_eq!(winners.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_when_the_fetch_ends() {
        let slot = Arc::new(Slot::new(0));
        let fetch_slot = slot.clone();
        let p = policy();
        let claimed = tokio::sync::oneshot::channel::<()>();
        let fetcher = tokio::spawn(async move {
            let fetch = fetch_slot.claim().unwrap();
            claimed.0.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            fetch.install(4, &p, u64::MAX);
        });
        claimed.1.await.unwrap();
        let started = tokio::time::Instant::now();
        slot.wait_for_fetch(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(10), "not woken");
        assert_eq!(slot.spend(1, &p, 1), Spend::Spent(3));
        fetcher.await.unwrap();
    }

    #[test]
    fn a_denied_lease_denies_until_its_retry_after() {
        let slot = Slot::new(0);
        let p = policy();
        slot.claim().unwrap().deny(500);
        assert_eq!(slot.spend(1, &p, 10), Spend::Denied(500));
        assert_eq!(slot.spend(1, &p, 500), Spend::Empty, "room again: fetch");
        let fetch = slot.claim().unwrap();
        fetch.install(2, &p, u64::MAX);
        assert_eq!(slot.spend(1, &p, 501), Spend::Spent(1));
    }

    #[test]
    fn eviction_kills_the_slot_and_its_tokens() {
        let slot = Slot::new(0);
        let p = policy();
        slot.claim().unwrap().install(5, &p, u64::MAX);
        assert!(slot.evict());
        assert!(slot.is_dead());
        assert_eq!(slot.spend(1, &p, 1), Spend::Empty);
        assert!(slot.claim().is_none(), "a dead slot is never fetched again");
    }

    #[test]
    fn the_rate_estimate_follows_the_key() {
        let slot = Slot::new(0);
        let window = 1_000;
        for i in 0..10 {
            slot.observe(1, i, window);
        }
        assert_eq!(slot.observe(1, 10, window), 11, "the current window so far");
        assert_eq!(slot.observe(1, 1_500, window), 11, "the last whole window");
        assert_eq!(slot.observe(1, 10_000, window), 1, "idle for a while");
    }

    #[test]
    fn lease_size_is_capped_by_share_and_burst_and_floored_by_min_tokens() {
        let mut config = LeaseConfig::new(30, Duration::from_secs(1));
        config.min_tokens = 3;
        let leases = Leases::new(config);
        let p = Policy::per_second(100).unwrap();
        assert_eq!(
            leases.lease_size(1_000, &p, 3),
            Some(10),
            "max_outstanding / replicas"
        );
        assert_eq!(
            leases.lease_size(8, &p, 3),
            Some(4),
            "half a ttl of traffic"
        );
        assert_eq!(
            leases.lease_size(5, &p, 3),
            None,
            "below min_tokens: exact path"
        );
        let small = p.with_burst(12).unwrap();
        assert_eq!(
            leases.lease_size(1_000, &small, 3),
            Some(4),
            "burst / replicas"
        );
        assert_eq!(
            leases.lease_size(1_000, &small, 5),
            None,
            "burst too small to share"
        );
    }

    #[test]
    fn a_full_table_sends_new_keys_to_the_exact_path_and_forgets_stale_ones() {
        let mut config = LeaseConfig::new(30, Duration::from_nanos(1_000));
        config.max_keys = 16; // one per shard
        let leases = Leases::new(config);
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..200 {
            match leases.slot(&format!("k{i}"), 0) {
                Some(slot) => held.push(slot),
                None => refused += 1,
            }
        }
        assert_eq!(leases.len(), 16);
        assert_eq!(held.len(), 16);
        assert_eq!(refused, 184);
        // A slot being fetched is never evicted, even when stale.
        let busy = held[0].claim().unwrap();
        // Two windows later every idle slot is stale, and room is made for new keys.
        for i in 200..400 {
            let _ = leases.slot(&format!("k{i}"), 2_000);
        }
        assert!(!held[0].is_dead());
        assert!(held[1..].iter().all(|s| s.is_dead()));
        assert_eq!(leases.len(), 16);
        drop(busy);
    }

    #[test]
    fn invalid_configurations_are_typed_errors() {
        let ok = LeaseConfig::new(30, Duration::from_secs(1));
        assert_eq!(ok.validate(3), Ok(()));
        let zero_ttl = LeaseConfig {
            ttl: Duration::ZERO,
            ..ok
        };
        assert_eq!(zero_ttl.validate(3), Err(LeaseConfigError::ZeroTtl));
        assert_eq!(
            ok.validate(31),
            Err(LeaseConfigError::OutstandingBelowReplicas {
                max_outstanding: 30,
                replicas: 31
            })
        );
        assert_eq!(
            LeaseConfig {
                min_tokens: 0,
                ..ok
            }
            .validate(3),
            Err(LeaseConfigError::ZeroMinTokens)
        );
        assert_eq!(
            LeaseConfig { max_keys: 0, ..ok }.validate(3),
            Err(LeaseConfigError::ZeroKeys)
        );
        assert_eq!(
            LeaseConfig {
                min_tokens: 11,
                ..ok
            }
            .validate(3),
            Err(LeaseConfigError::MinTokensAboveShare {
                min_tokens: 11,
                share: 10
            })
        );
    }
}
