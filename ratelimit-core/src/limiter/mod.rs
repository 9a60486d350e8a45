//! A store with a failure policy: what to decide when the store is down, slow or talking nonsense.
//!
//! The limiter and its settings are in this file; the decisions beside it, one part a file: the
//! request paths (`decide.rs`), leases (`leased.rs`), the breakers (`breaker.rs`), the failure
//! policy (`failure.rs`) and the answers the over-limit cache gives without the store (`known.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::lease::{LeaseConfig, LeaseConfigError, Leases};
use crate::memory::MemoryStore;
use crate::over_limit::{DEFAULT_OVER_LIMIT_KEYS, OverLimitCache};
use crate::store::Store;

mod breaker;
mod decide;
mod failure;
mod known;
mod leased;

use breaker::Breaker;

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

/// A duration in clock nanoseconds, saturating.
fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
