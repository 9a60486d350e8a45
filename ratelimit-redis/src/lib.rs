//! The [`Store`](ratelimit_core::Store) of ratelimit-core over Redis and Redis Cluster.
//!
//! ```no_run
//! use ratelimit_core::{Limit, Limiter, Policy};
//! use ratelimit_redis::RedisStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//! // Or: RedisStore::connect_cluster(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]).await?
//! let limiter = Limiter::new(store); // a deadline, and local buckets while Redis is down
//! let verdict = limiter
//!     .acquire(&[Limit::new("{client:42}:per-second", Policy::per_second(10)?)])
//!     .await?;
//! println!("admitted: {}", verdict.is_allowed());
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

pub use store::{DEAD_AFTER, DEFAULT_PREFIX, DEFAULT_TIMEOUT, REPLACE_AT_MOST_EVERY, RedisStore};
