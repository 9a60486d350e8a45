//! A store with a failure policy: what to decide when the store is down, slow or talking nonsense.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::decision::Decision;
use crate::error::{RequestError, StoreError, StoreFailure};
use crate::lease::{Fetch, LeaseConfig, LeaseConfigError, Leases, Spend};
use crate::memory::MemoryStore;
use crate::over_limit::{DEFAULT_OVER_LIMIT_KEYS, OverLimitCache};
use crate::store::{Limit, Store, Verdict, validate};

/// What a [`Limiter`] decides while its store cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Admit every request: availability over protection.
    Open,
    /// Deny every request: protection over availability.
    Closed,
    /// Decide with buckets in this process's memory, each limit divided by the number of replicas
    /// ([`Limiter::with_replicas`], from what the deployment declares): every replica enforces its
    /// share alone ([`Policy::share`](crate::Policy::share)), so N replicas together keep
    /// `burst + rate × w` when the burst is at least N (else `N + rate × w`). A request whose cost
    /// is above its share's burst is denied while the store is away.
    #[default]
    LocalFallback,
}

/// The deadline of one store call unless set otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);

/// How long a failed store is left alone unless set otherwise.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);

/// How many circuit breakers a limiter keeps: store nodes ([`Store::node_of`]) share them modulo
/// this number.
pub const NODE_BREAKERS: usize = 16;

/// The front of a shared store: validates requests, gives every store call a deadline, and applies
/// a [`FailurePolicy`] when the store fails.
///
/// After a failure the store is skipped for a cooldown (a circuit breaker), so an outage costs at
/// most one deadline per cooldown instead of one per request; then a single call probes the store,
/// and decisions go back to it as soon as one succeeds.
///
/// ```
/// use ratelimit_core::{FailurePolicy, Limit, Limiter, MemoryStore, Policy};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let limiter = Limiter::new(MemoryStore::new())
///     .with_failure_policy(FailurePolicy::Closed)
///     .with_deadline(Duration::from_millis(20));
/// let verdict = limiter.acquire(&[Limit::new("ip:10.0.0.1", Policy::per_second(5)?)]).await?;
/// assert!(verdict.is_allowed());
/// assert_eq!(verdict.degraded_by(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # });
/// ```
pub struct Limiter {
    store: Arc<dyn Store>,
    failure_policy: FailurePolicy,
    deadline: Duration,
    cooldown: Duration,
    // One per store node: a failed node of a cluster sends only its own keys to the failure policy.
    breakers: [Breaker; NODE_BREAKERS],
    replicas: u32,
    // The live count of a `Membership`, if any: `replicas()` is the larger of it and `replicas`.
    // Relaxed loads: a count for sizing, at most one heartbeat period stale.
    members: Option<Arc<AtomicU32>>,
    fallback: MemoryStore,
    // Keys the store just denied, answered "no" here until it said they have room again.
    over_limit: Option<OverLimitCache>,
    // Relaxed: a statistic.
    over_limit_hits: AtomicU64,
    // Leased tokens of busy keys (off unless `with_leases`).
    leases: Option<Leases>,
    // Relaxed: statistics.
    lease_hits: AtomicU64,
    lease_fetches: AtomicU64,
    clock: LimiterClock,
}

/// The limiter's clock: the fast monotonic one, or one the caller injected (a simulation's).
#[derive(Clone)]
enum LimiterClock {
    Monotonic(MonotonicClock),
    // Behind a pointer only when injected, so the default costs no indirect call.
    Injected(Arc<dyn Clock>),
}

impl LimiterClock {
    #[inline]
    fn now(&self) -> u64 {
        match self {
            LimiterClock::Monotonic(clock) => clock.now(),
            LimiterClock::Injected(clock) => clock.now(),
        }
    }
}

impl Limiter {
    /// A limiter over `store`, falling back to local buckets, with the default deadline and cooldown.
    pub fn new<S: Store + 'static>(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A limiter over a store shared with others.
    pub fn from_arc(store: Arc<dyn Store>) -> Self {
        Limiter {
            store,
            failure_policy: FailurePolicy::default(),
            deadline: DEFAULT_DEADLINE,
            cooldown: DEFAULT_COOLDOWN,
            breakers: Default::default(),
            replicas: 1,
            members: None,
            fallback: MemoryStore::new(),
            over_limit: Some(OverLimitCache::new(DEFAULT_OVER_LIMIT_KEYS)),
            over_limit_hits: AtomicU64::new(0),
            leases: None,
            lease_hits: AtomicU64::new(0),
            lease_fetches: AtomicU64::new(0),
            clock: LimiterClock::Monotonic(MonotonicClock::new()),
        }
    }

    /// Reads time from `clock` instead of the monotonic clock: for simulations and tests on a
    /// manual clock. Breakers, the over-limit cache and leases all use it; the local fallback
    /// keeps its own monotonic clock.
    pub fn with_clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = LimiterClock::Injected(Arc::new(clock));
        self
    }

    /// Turns on leased tokens (off by default): a busy key's tokens are taken from the store
    /// `k` at a time, in one ordinary [`Store::acquire`] of cost `k`, and spent here without a
    /// store call. Call [`with_replicas`](Self::with_replicas) first: leases are sized from that
    /// count, which must be at least the number of replicas really sharing the store.
    ///
    /// Only requests of one limit whose cost fits the lease are served from it; requests of
    /// several limits take the exact path, so all-or-nothing holds. The bound becomes
    /// `burst + rate × w + max_outstanding` over any window `w` (see [`LeaseConfig`] for the
    /// sizing and the `lease` module's documentation for why). An invalid configuration is an
    /// error.
    pub fn with_leases(mut self, config: LeaseConfig) -> Result<Self, LeaseConfigError> {
        config.validate(self.replicas)?;
        self.leases = Some(Leases::new(config));
        Ok(self)
    }

    /// The lease configuration, if leases are on.
    pub fn lease_config(&self) -> Option<&LeaseConfig> {
        self.leases.as_ref().map(Leases::config)
    }

    /// How many requests were answered from a lease (admitted from its tokens, or denied
    /// because the store had just denied the lease), with no store call of their own.
    pub fn lease_hits(&self) -> u64 {
        self.lease_hits.load(Ordering::Relaxed)
    }

    /// How many leases this limiter has asked the store for.
    pub fn lease_fetches(&self) -> u64 {
        self.lease_fetches.load(Ordering::Relaxed)
    }

    /// Sets what to decide while the store fails.
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Sets how long one store call may take before the failure policy decides instead.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets how long a failed store is skipped before it is probed again.
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Sets how many replicas share the store, so that [`FailurePolicy::LocalFallback`] gives each
    /// its share of every limit, and leases are at most `max_outstanding / replicas` tokens
    /// (at least 1; default 1). A count changed after [`with_leases`](Self::with_leases) applies
    /// to leases too; when it leaves no replica a lease of `min_tokens`, every key takes the
    /// exact path.
    pub fn with_replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Sets how many denied keys the over-limit cache remembers (0 turns it off; on by default,
    /// for [`DEFAULT_OVER_LIMIT_KEYS`](crate::DEFAULT_OVER_LIMIT_KEYS) keys).
    ///
    /// A key the store denies is denied here, with no store call, until the store said it would
    /// have room again, for requests costing at least as much. The cache never admits, so the
    /// bound holds unchanged; a flood that is already over its limit costs no store round trip.
    /// Stores that decide in this process ([`Store::acquire_sync`]) never reach it.
    pub fn with_over_limit_cache(mut self, max_keys: usize) -> Self {
        self.over_limit = (max_keys > 0).then(|| OverLimitCache::new(max_keys));
        self
    }

    /// How many requests the over-limit cache has denied without asking the store.
    pub fn over_limit_hits(&self) -> u64 {
        self.over_limit_hits.load(Ordering::Relaxed)
    }

    /// The failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    /// Follows the live count of replicas of `membership` (counted in the store, see
    /// [`Membership`](crate::Membership)): the fallback share and the lease sizes use the larger
    /// of it and [`with_replicas`](Self::with_replicas)' count, so the setting is a floor.
    pub fn with_membership(mut self, membership: &crate::Membership) -> Self {
        self.members = Some(membership.counter());
        self
    }

    /// How many replicas this limiter assumes share its store: the setting, or the live count of
    /// its membership when that is larger.
    pub fn replicas(&self) -> u32 {
        let live = self
            .members
            .as_ref()
            .map_or(0, |count| count.load(Ordering::Relaxed));
        self.replicas.max(live)
    }

    /// The store this limiter fronts.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the last store call to every node succeeded (every breaker is closed).
    pub fn store_healthy(&self) -> bool {
        self.breakers.iter().all(Breaker::is_closed)
    }

    /// The breakers of the nodes that hold `limits`' keys, as a bit set.
    fn nodes_of(&self, limits: &[Limit<'_>]) -> u32 {
        limits.iter().fold(0, |set, limit| {
            set | 1 << (self.store.node_of(limit.key) % NODE_BREAKERS)
        })
    }

    /// Whether every node of the request may be called now (see [`Breaker::admits`]). Every
    /// breaker is looked at before any probe is claimed, so a request that another node's open
    /// breaker stops does not spend this node's probe.
    fn nodes_admit(&self, nodes: u32, now: u64) -> bool {
        let involved = || {
            self.breakers
                .iter()
                .enumerate()
                .filter(move |(i, _)| nodes & (1 << i) != 0)
                .map(|(_, breaker)| breaker)
        };
        involved().all(|b| b.may_probe(now)) && involved().all(|b| b.admits(now, self.cooldown))
    }

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

    /// The answer from `limit`'s lease on this replica, fetching the next lease when this task
    /// is the one to; `None` sends the request to the exact path (a key too slow for a lease, a
    /// cost above the lease, a full table, a fetch that did not arrive within the deadline).
    async fn acquire_leased(
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

    /// The store's verdict, or the kind of its failure; either way the breakers of `nodes` learn
    /// of it. An invalid request is the caller's error.
    fn settle(
        &self,
        nodes: u32,
        outcome: Result<Result<Verdict, StoreError>, tokio::time::error::Elapsed>,
    ) -> Result<Result<Verdict, StoreFailure>, RequestError> {
        let involved = self
            .breakers
            .iter()
            .enumerate()
            .filter(move |(i, _)| nodes & (1 << i) != 0)
            .map(|(_, breaker)| breaker);
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

    fn on_failure(
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
}

impl Limiter {
    /// The answer for a request one of whose keys the store has just denied, if any: denied by
    /// that limit until the store said; the other limits were not consulted and are shown as
    /// admitting with nothing taken.
    fn known_over_limit(&self, limits: &[Limit<'_>], now: u64) -> Option<Verdict> {
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
    fn remember_denial(&self, limits: &[Limit<'_>], verdict: &Verdict) {
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

    /// What [`peek`](Self::peek) answers while the store fails: the failure policy's answer, with
    /// the local fallback peeked rather than debited.
    fn peek_failure(
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
            .peek_now(&shares)
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
            .acquire_now(&shares)
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

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("failure_policy", &self.failure_policy)
            .field("deadline", &self.deadline)
            .field("cooldown", &self.cooldown)
            .field("replicas", &self.replicas())
            .field("store_healthy", &self.store_healthy())
            .finish_non_exhaustive()
    }
}

/// A circuit breaker in one word: zero when closed, else the clock reading until which the store is
/// skipped.
#[derive(Debug, Default)]
struct Breaker {
    // Relaxed: the breaker is advisory and publishes no other data; a caller that reads a stale
    // value merely makes (or skips) one store call more.
    open_until: AtomicU64,
}

impl Breaker {
    /// Whether a call may go to the store now. Once the cooldown has passed, exactly one caller wins
    /// the compare-and-swap and probes; the others keep using the failure policy meanwhile.
    fn admits(&self, now: u64, cooldown: Duration) -> bool {
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
    fn may_probe(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        until == 0 || now >= until
    }

    fn open(&self, until: u64) {
        self.open_until.store(until.max(1), Ordering::Relaxed);
    }

    fn close(&self) {
        self.open_until.store(0, Ordering::Relaxed);
    }

    fn is_closed(&self) -> bool {
        self.open_until.load(Ordering::Relaxed) == 0
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
