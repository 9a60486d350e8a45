//! Rate limiting on integers: lock-free GCRA buckets, a bounded keyed limiter, and the async
//! [`Store`] contract that the Redis and DynamoDB backends of this workspace implement.
//!
//! ```
//! use ratelimit_core::{KeyedLimiter, Policy, TokenBucket};
//!
//! // One limit, shared across threads: 100 requests a second, bursts of 10.
//! let bucket = TokenBucket::new(Policy::per_second(100)?.with_burst(10)?);
//! let decision = bucket.acquire(1)?;
//! assert!(decision.is_allowed());
//! assert_eq!(decision.remaining(), 9);
//!
//! // One limit per client, in bounded memory.
//! let per_ip: KeyedLimiter<String> = KeyedLimiter::new(Policy::per_minute(2)?);
//! assert!(per_ip.acquire("203.0.113.7", 1)?.is_allowed());
//! assert!(per_ip.acquire("203.0.113.7", 1)?.is_allowed());
//! let denied = per_ip.acquire("203.0.113.7", 1)?;
//! assert!(!denied.is_allowed());
//! println!("retry in {:?}", denied.retry_after());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [guide](_guide) walks through choosing a policy, the bound, stores, failure policies and
//! clocks, with examples.
//!
//! # The pieces
//! - [`Policy`]: a rate and a burst, validated into integer nanoseconds.
//! - [`TokenBucket`]: one limit, one `AtomicU64`, one compare-and-swap per decision.
//! - [`KeyedLimiter`]: a bucket per key in a sharded table, with per-key policies that change at
//!   runtime and a hard cap on memory.
//! - [`Decision`]: admitted or not, limit, remaining, retry-after, reset-after.
//! - [`Clock`]: [`MonotonicClock`] by default, [`ManualClock`] for tests.
//! - [`Store`]: shared state, one atomic all-or-nothing decision per request; [`MemoryStore`] keeps
//!   it in this process. The `conformance` feature exports the tests every store must pass.
//! - [`Limiter`]: a store with a deadline per call and a [`FailurePolicy`] for when it is down;
//!   optionally [leased tokens](LeaseConfig) of busy keys, spent without a store call.
//!
//! # The bound
//! Every limiter here keeps the same promise: over any window of length `w`, a key admits at most
//! `burst + rate × w` cost ([`Policy::max_admitted`]). Shared stores keep it across every process
//! that shares them; see each backend for the slack its clock adds. With leases
//! ([`Limiter::with_leases`]) the bound is `burst + rate × w + max_outstanding`, when every
//! replica is configured with at least the real replica count.

pub mod _guide;
mod bucket;
mod clock;
mod decision;
mod error;
mod fast_clock;
pub mod gcra;
pub mod key;
mod keyed;
mod keyed_state;
mod lease;
mod limiter;
mod membership;
mod memory;
mod over_limit;
mod policy;
mod policy_cell;
mod store;
mod wait;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use bucket::TokenBucket;
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use decision::Decision;
pub use error::{PolicyError, RequestError, StoreError, StoreFailure};
pub use fast_clock::SLOW_BY as CLOCK_SLOW_BY;
pub use key::BucketKey;
pub use keyed::{DEFAULT_MAX_KEYS, KeyedLimiter, KeyedLimiterBuilder};
pub use lease::{DEFAULT_LEASE_KEYS, LeaseConfig, LeaseConfigError};
pub use limiter::{DEFAULT_COOLDOWN, DEFAULT_DEADLINE, FailurePolicy, Limiter, NODE_BREAKERS};
pub use membership::{MAX_MEMBERS, MIN_PERIOD, Membership, MembershipError};
pub use memory::MemoryStore;
pub use over_limit::DEFAULT_OVER_LIMIT_KEYS;
pub use policy::Policy;
pub use policy_cell::PolicyCell;
pub use store::{
    Limit, MAX_KEY_LEN, MAX_LIMITS, Store, Verdict, check_policy, validate, validate_key,
};
