//! A guide to this crate: choosing a policy, the bound it keeps, stores, what happens when a
//! store fails, and clocks. No code lives here, only documentation (every example runs as a test).
//!
//! # Choosing a policy
//!
//! A [`Policy`](crate::Policy) is a rate and a burst. The rate is how fast tokens come back: the constructors
//! [`Policy::per_second`](crate::Policy::per_second), [`per_minute`](crate::Policy::per_minute), [`per_hour`](crate::Policy::per_hour),
//! [`per_day`](crate::Policy::per_day), or [`Policy::new`](crate::Policy::new) for any count per any period. The burst is
//! the bucket's capacity, the most admitted at once after a quiet spell; it starts equal to the
//! count, and [`with_burst`](crate::Policy::with_burst) sets another. A request costs one token unless it
//! says otherwise: [`TokenBucket::acquire`](crate::TokenBucket::acquire) and [`KeyedLimiter::acquire`](crate::KeyedLimiter::acquire) take the cost, and a
//! [`Limit`](crate::Limit) has [`with_cost`](crate::Limit::with_cost). A cost above the burst can never be admitted
//! and is an error ([`RequestError::CostExceedsBurst`](crate::RequestError::CostExceedsBurst)), not a wait that would never end.
//!
//! ```
//! use std::time::Duration;
//!
//! use ratelimit_core::{Policy, RequestError, TokenBucket};
//!
//! // An API: 100 a second, absorbing bursts of 100.
//! let api = Policy::per_second(100)?;
//! // A login form: 10 a minute, but never more than 3 in a row.
//! let login = Policy::per_minute(10)?.with_burst(3)?;
//! // Five every 250 ms.
//! let custom = Policy::new(5, Duration::from_millis(250))?;
//! assert_eq!(api.burst(), 100);
//! assert_eq!(login.emission_interval(), Duration::from_secs(6));
//! assert_eq!(custom.emission_interval(), Duration::from_millis(50));
//!
//! // An export that costs 3 tokens out of the login's burst of 3: admitted once, then denied.
//! let bucket = TokenBucket::new(login);
//! assert!(bucket.acquire(3)?.is_allowed());
//! assert!(!bucket.acquire(3)?.is_allowed());
//! // A cost the bucket can never hold is refused outright.
//! assert!(matches!(bucket.acquire(4), Err(RequestError::CostExceedsBurst { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A policy that cannot be represented (a zero count, period or burst, more than one request a
//! nanosecond, a period or burst too large for the clock's range) is a [`PolicyError`](crate::PolicyError) when it is
//! made, never a surprise later. The rate
//! is kept as the time between tokens rounded up, so a policy never admits faster than it says.
//!
//! # The bound
//!
//! Every limiter here keeps one promise: over any window of length `w`, a key admits at most
//! `burst + rate × w` cost. [`Policy::max_admitted`](crate::Policy::max_admitted) computes it, and it is what the property and
//! stress tests of the workspace check.
//!
//! ```
//! use std::time::Duration;
//!
//! use ratelimit_core::Policy;
//!
//! let policy = Policy::per_second(10)?;
//! // A full bucket of 10, then one token every 100 ms: 20 in the first second at most.
//! assert_eq!(policy.max_admitted(Duration::from_secs(1)), 20);
//! assert_eq!(policy.max_admitted(Duration::ZERO), 10);
//! # Ok::<(), ratelimit_core::PolicyError>(())
//! ```
//!
//! Where a distributed mode cannot keep it exactly, the slack is documented and bounded, across
//! all replicas of a deployment:
//!
//! | mode | admitted at most over a window `w` |
//! | --- | --- |
//! | store healthy (memory, Redis, Redis Cluster) | `burst + rate × w` |
//! | store healthy, DynamoDB (time is each replica's clock, skew up to `s`) | `burst + rate × w + rate × s` |
//! | store down, [`FailurePolicy::Closed`](crate::FailurePolicy::Closed) | nothing |
//! | store down, [`FailurePolicy::LocalFallback`](crate::FailurePolicy::LocalFallback) with [`Limiter::with_replicas`](crate::Limiter::with_replicas)`(n)` | `burst + rate × w` when `burst >= n`, else `n + rate × w` |
//! | store down, `LocalFallback` declaring 1 replica while `N` run | `N × (burst + rate × w)` |
//! | store down, [`FailurePolicy::Open`](crate::FailurePolicy::Open) | unlimited |
//! | leases on ([`Limiter::with_leases`](crate::Limiter::with_leases), `with_replicas` at least the real count) | `burst + rate × w + max_outstanding` |
//!
//! The local fallback's buckets start full, so a window that spans the switch from the store to
//! the fallback (or back) can admit up to one burst more than its row. The
//! [`MonotonicClock`](crate::MonotonicClock) runs slow by design (see [Clocks](#clocks)), so on it a limiter can only
//! under-admit, by [`CLOCK_SLOW_BY`](crate::CLOCK_SLOW_BY) of its rate at most.
//!
//! # Stores
//!
//! A [`TokenBucket`](crate::TokenBucket) or a [`KeyedLimiter`](crate::KeyedLimiter) decides in this process. To share limits between
//! processes, a [`Store`](crate::Store) holds the buckets. Its one operation, [`Store::acquire`](crate::Store::acquire), checks a
//! request against all its [`Limit`](crate::Limit)s at one instant of the store's clock and debits every one
//! of them or none: concurrent callers, in one process or many, never exceed any limit's bound.
//! The stores of this workspace:
//!
//! - [`MemoryStore`](crate::MemoryStore): in this process, bounded memory; for one replica, tests, and the local
//!   fallback of a [`Limiter`](crate::Limiter).
//! - `RedisStore` (crate `ratelimit-redis`): one Lua script per decision on Redis' own `TIME`, on
//!   one server or a Redis Cluster (limits sharing a hash tag are decided by one script).
//! - `DynamoStore` (crate `ratelimit-dynamodb`): one conditional write per decision, on the
//!   replicas' clocks (hence the skew in the table above; `skew_slack` gives it in requests).
//!
//! A new backend proves it keeps the contract by passing the conformance suite (the
//! `conformance` feature). Put a [`Limiter`](crate::Limiter) in front of any store: it validates requests, gives
//! each store call a deadline, and applies the failure policy.
//!
//! ```
//! use ratelimit_core::{DEFAULT_MAX_KEYS, Limit, Limiter, ManualClock, MemoryStore, Policy};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
//! // On a manual clock, so that no token comes back between the calls and the counts are exact;
//! // `MemoryStore::new()` runs on the monotonic clock.
//! let limiter = Limiter::new(MemoryStore::with_clock(DEFAULT_MAX_KEYS, ManualClock::new()));
//! let per_client = Policy::per_second(2)?;
//! let global = Policy::per_second(1_000)?;
//! let request = [Limit::new("ip:10.0.0.1", per_client), Limit::new("global", global)];
//! assert!(limiter.acquire(&request).await?.is_allowed());
//! assert!(limiter.acquire(&request).await?.is_allowed());
//! // The client's limit denies the third; alone, the global limit would have admitted it.
//! let verdict = limiter.acquire(&request).await?;
//! assert!(!verdict.is_allowed());
//! assert!(!verdict.decisions()[0].is_allowed());
//! assert!(verdict.decisions()[1].is_allowed());
//! // Nothing was debited for it: another client's request leaves 1,000 - 3 in the global limit.
//! let other = limiter
//!     .acquire(&[Limit::new("ip:10.0.0.2", per_client), Limit::new("global", global)])
//!     .await?;
//! assert_eq!(other.decisions()[1].remaining(), 997);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # When the store fails
//!
//! A store that errs, or does not answer within the deadline ([`Limiter::with_deadline`](crate::Limiter::with_deadline), default
//! [`DEFAULT_DEADLINE`](crate::DEFAULT_DEADLINE)), is skipped for a cooldown ([`Limiter::with_cooldown`](crate::Limiter::with_cooldown), default
//! [`DEFAULT_COOLDOWN`](crate::DEFAULT_COOLDOWN); one circuit breaker per store node), so an outage costs at most one
//! deadline per cooldown. Meanwhile the [`FailurePolicy`](crate::FailurePolicy) decides:
//!
//! - [`FailurePolicy::Open`](crate::FailurePolicy::Open): admit everything (availability over protection).
//! - [`FailurePolicy::Closed`](crate::FailurePolicy::Closed): deny everything (protection over availability).
//! - [`FailurePolicy::LocalFallback`](crate::FailurePolicy::LocalFallback) (the default): decide with buckets in this process, each
//!   replica enforcing its share of every limit ([`Policy::share`](crate::Policy::share) of the count declared with
//!   [`Limiter::with_replicas`](crate::Limiter::with_replicas), or counted in the store with [`Membership`](crate::Membership)).
//!
//! A verdict decided this way says so ([`Verdict::degraded_by`](crate::Verdict::degraded_by) gives the [`StoreFailure`](crate::StoreFailure)), so
//! a caller can log or count it.
//!
//! ```
//! use async_trait::async_trait;
//! use ratelimit_core::{
//!     FailurePolicy, Limit, Limiter, Policy, Store, StoreError, StoreFailure, Verdict,
//! };
//!
//! /// A store whose server is gone.
//! struct Down;
//!
//! #[async_trait]
//! impl Store for Down {
//!     async fn acquire(&self, _: &[Limit<'_>]) -> Result<Verdict, StoreError> {
//!         Err(StoreError::unavailable("connection refused"))
//!     }
//!     async fn peek(&self, _: &[Limit<'_>]) -> Result<Verdict, StoreError> {
//!         Err(StoreError::unavailable("connection refused"))
//!     }
//!     async fn reset(&self, _: &str) -> Result<(), StoreError> {
//!         Err(StoreError::unavailable("connection refused"))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
//! let request = [Limit::new("ip:10.0.0.1", Policy::per_second(5)?)];
//!
//! let closed = Limiter::new(Down).with_failure_policy(FailurePolicy::Closed);
//! let verdict = closed.acquire(&request).await?;
//! assert!(!verdict.is_allowed());
//! assert_eq!(verdict.degraded_by(), Some(StoreFailure::Unavailable));
//!
//! // Three replicas share the store: this one admits its third of the limit alone.
//! let fallback = Limiter::new(Down)
//!     .with_failure_policy(FailurePolicy::LocalFallback)
//!     .with_replicas(3);
//! let verdict = fallback.acquire(&request).await?;
//! assert!(verdict.is_allowed());
//! // The breaker is open now: the store is not even called until the cooldown ends.
//! let verdict = fallback.acquire(&request).await?;
//! assert_eq!(verdict.degraded_by(), Some(StoreFailure::CircuitOpen));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Clocks
//!
//! Limiters read time from a [`Clock`](crate::Clock): nanoseconds since its own epoch, never going backwards.
//! The default, [`MonotonicClock`](crate::MonotonicClock), reads the CPU's time-stamp counter where it is invariant and
//! the kernel keeps time with it (Linux on x86-64 with `constant_tsc`, `nonstop_tsc` and the
//! `tsc` clock source), scaled by a frequency calibrated against the kernel's monotonic clock and
//! then lowered by [`CLOCK_SLOW_BY`](crate::CLOCK_SLOW_BY) (0.2%): no interval it measures is longer than the real one,
//! so a limiter on it can only under-admit. Elsewhere, or with `RATELIMIT_CLOCK=kernel` in the
//! environment, or made with [`MonotonicClock::kernel`](crate::MonotonicClock::kernel), it reads the operating system's
//! monotonic clock.
//!
//! Any clock can be injected: [`TokenBucket::with_clock`](crate::TokenBucket::with_clock), [`KeyedLimiterBuilder::clock`](crate::KeyedLimiterBuilder::clock),
//! [`MemoryStore::with_clock`](crate::MemoryStore::with_clock) and [`Limiter::with_clock`](crate::Limiter::with_clock) take one. In tests, a [`ManualClock`](crate::ManualClock)
//! moves only when told to, so time-dependent behaviour is exact and instant; its clones share
//! one time.
//!
//! ```
//! use std::time::Duration;
//!
//! use ratelimit_core::{KeyedLimiterBuilder, ManualClock, Policy, TokenBucket};
//!
//! let clock = ManualClock::new();
//! let bucket = TokenBucket::with_clock(Policy::per_second(1)?, clock.clone());
//! assert!(bucket.acquire(1)?.is_allowed());
//! let denied = bucket.acquire(1)?;
//! assert!(!denied.is_allowed());
//! assert_eq!(denied.retry_after(), Duration::from_secs(1));
//! clock.advance(Duration::from_secs(1));
//! assert!(bucket.acquire(1)?.is_allowed());
//!
//! // A keyed limiter on the same clock: one bucket per key.
//! let per_key = KeyedLimiterBuilder::new(Policy::per_minute(1)?)
//!     .clock(clock.clone())
//!     .build::<String>();
//! assert!(per_key.acquire("alice", 1)?.is_allowed());
//! assert!(per_key.acquire("bob", 1)?.is_allowed());
//! assert!(!per_key.acquire("alice", 1)?.is_allowed());
//! clock.advance(Duration::from_secs(60));
//! assert!(per_key.acquire("alice", 1)?.is_allowed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
