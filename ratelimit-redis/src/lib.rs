//! The [`Store`](ratelimit_core::Store) of ratelimit-core over Redis and Redis Cluster.
//!
//! ```
//! use ratelimit_core::{Limit, Limiter, Policy};
//! use ratelimit_redis::RedisStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // The test services' Redis (scripts/services.sh), or REDIS_URL's.
//! # let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
//! let store = RedisStore::connect(&url).await?;
//! // Or: RedisStore::connect_cluster(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]).await?
//! let limiter = Limiter::new(store); // a deadline, and local buckets while Redis is down
//! # let client = format!("{{client:doc-{}}}:per-second", std::process::id());
//! let verdict = limiter
//!     .acquire(&[Limit::new(&client, Policy::per_second(10)?)])
//!     .await?;
//! assert!(verdict.is_allowed());
//! # Ok(())
//! # }
//! ```
//!
//! Every decision is one Lua script (cached by SHA1, loaded again by itself after a `NOSCRIPT`),
//! run on Redis' clock in integer microseconds, that checks every limit of a request and debits all
//! or none. Buckets expire once they are full again, so Redis holds only the active keys. See
//! [`RedisStore`] for cluster slots and what a lost reply does.

mod error;
mod script;
mod slot;
mod store;

/// The decision script's reply parser, for fuzzing (feature `fuzzing`): not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use ratelimit_core::{Limit, Policy, StoreError};

    /// Parses `reply` as the script's answer for one limit of `policy` per entry of `costs`;
    /// `Ok(allowed)` for a well-formed reply.
    pub fn parse_reply(reply: &[i64], policy: Policy, costs: &[u32]) -> Result<bool, StoreError> {
        let keys: Vec<String> = (0..costs.len()).map(|i| format!("k{i}")).collect();
        let limits: Vec<Limit<'_>> = keys
            .iter()
            .zip(costs)
            .map(|(key, cost)| Limit::new(key, policy).with_cost(*cost))
            .collect();
        crate::script::parse_reply(reply, &limits).map(|(allowed, _)| allowed)
    }
}

pub use store::{DEAD_AFTER, DEFAULT_PREFIX, DEFAULT_TIMEOUT, REPLACE_AT_MOST_EVERY, RedisStore};
