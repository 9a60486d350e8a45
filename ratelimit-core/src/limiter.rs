//! A store with a failure policy: what to decide when the store is down, slow or talking nonsense.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::decision::Decision;
use crate::error::{RequestError, StoreError, StoreFailure};
use crate::memory::MemoryStore;
use crate::store::{Limit, Store, Verdict, validate};

/// What a [`Limiter`] decides while its store cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Admit every request: availability over protection.
    Open,
    /// Deny every request: protection over availability.
    Closed,
    /// Decide with buckets in this process's memory, same policies. Each replica then enforces the
    /// limits on its own, so N replicas together admit up to N times a limit until the store is back.
    #[default]
    LocalFallback,
}

/// The deadline of one store call unless set otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);

/// How long a failed store is left alone unless set otherwise.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);

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
    breaker: Breaker,
    fallback: MemoryStore,
    clock: MonotonicClock,
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
            breaker: Breaker::default(),
            fallback: MemoryStore::new(),
            clock: MonotonicClock::new(),
        }
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

    /// The failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    /// The store this limiter fronts.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the last store call succeeded (the breaker is closed).
    pub fn store_healthy(&self) -> bool {
        self.breaker.is_closed()
    }

    /// Checks a request against all `limits`, all-or-nothing, within the deadline. Only an invalid
    /// request is an error; store trouble is answered by the failure policy, and the verdict says so
    /// ([`Verdict::degraded_by`]).
    pub async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, RequestError> {
        if let Some(answer) = self.acquire_sync(limits) {
            return answer;
        }
        validate(limits)?;
        let now = self.clock.now();
        if !self.breaker.admits(now, self.cooldown) {
            return self.on_failure(limits, StoreFailure::CircuitOpen);
        }
        let outcome = tokio::time::timeout(self.deadline, self.store.acquire(limits)).await;
        self.settle(limits, outcome)
    }

    /// [`acquire`](Self::acquire) without a future, when the store decides in this process
    /// ([`Store::acquire_sync`]); `None` for a store that must be asked over the network.
    pub fn acquire_sync(&self, limits: &[Limit<'_>]) -> Option<Result<Verdict, RequestError>> {
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
        let now = self.clock.now();
        if !self.breaker.admits(now, self.cooldown) {
            return self.on_failure(limits, StoreFailure::CircuitOpen);
        }
        let outcome = tokio::time::timeout(self.deadline, self.store.peek(limits)).await;
        self.settle(limits, outcome)
    }

    /// Fills `key`'s bucket up again, in the store and in the local fallback.
    pub async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.fallback.reset(key).await?;
        match tokio::time::timeout(self.deadline, self.store.reset(key)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.deadline)),
        }
    }

    fn settle(
        &self,
        limits: &[Limit<'_>],
        outcome: Result<Result<Verdict, StoreError>, tokio::time::error::Elapsed>,
    ) -> Result<Verdict, RequestError> {
        let error = match outcome {
            Ok(Ok(verdict)) => {
                self.breaker.close();
                return Ok(verdict);
            }
            Ok(Err(StoreError::Request(error))) => return Err(error),
            Ok(Err(error)) => error,
            Err(_) => StoreError::Timeout(self.deadline),
        };
        self.breaker
            .open(self.clock.now().saturating_add(duration_ns(self.cooldown)));
        self.on_failure(limits, error.kind())
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
            FailurePolicy::Closed => Verdict::new(
                false,
                limits
                    .iter()
                    .map(|l| {
                        Decision::new(false, l.policy.burst(), 0, self.cooldown, self.cooldown)
                    })
                    .collect(),
            ),
            FailurePolicy::LocalFallback => match self.fallback.acquire_now(limits) {
                Ok(verdict) => verdict,
                Err(StoreError::Request(error)) => return Err(error),
                // The memory store has no other failure; deny rather than invent an answer.
                Err(_) => Verdict::new(false, Vec::new()),
            },
        };
        Ok(verdict.degraded(failure))
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("failure_policy", &self.failure_policy)
            .field("deadline", &self.deadline)
            .field("cooldown", &self.cooldown)
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
