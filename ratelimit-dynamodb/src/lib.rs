//! The [`Store`](ratelimit_core::Store) of ratelimit-core over DynamoDB conditional writes.
//!
//! ```no_run
//! use ratelimit_core::{Limit, Limiter, Policy};
//! use ratelimit_dynamodb::{DynamoStore, create_table};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Region, credentials and endpoint from where AWS tools look for them: AWS_REGION, profiles,
//! // instance roles, and AWS_ENDPOINT_URL_DYNAMODB for a local emulator.
//! let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let client = aws_sdk_dynamodb::Client::new(&config);
//! create_table(&client, "ratelimit").await?; // once; or make it in your infrastructure code
//! let store = DynamoStore::connect(client, "ratelimit").await?;
//! let limiter = Limiter::new(store); // a deadline, and local buckets while DynamoDB is away
//! let verdict = limiter
//!     .acquire(&[Limit::new("client:42", Policy::per_second(10)?)])
//!     .await?;
//! println!("admitted: {}", verdict.is_allowed());
//! # Ok(())
//! # }
//! ```
//!
//! This crate depends on the SDK without its default features, so it brings no TLS stack of its
//! own: build the client with the HTTP client your application already uses (enable
//! `default-https-client` on `aws-config`, or pass one with `http_client`).
//!
//! # How a decision is made
//!
//! A key's bucket is one item holding its GCRA state as an integer number of nanoseconds (see
//! [`table`] for the schema). A decision is one conditional `UpdateItem`, with no read first, that
//! DynamoDB applies only when the request is admitted; a failed condition returns the item, and a
//! denial is decided from it without a retry. Lost races are retried a bounded number of times
//! with jitter. See [`DynamoStore`] for requests with several keys.
//!
//! # Time and clock skew
//!
//! DynamoDB has no clock to read inside a condition, so time comes from each replica's own clock
//! (as wall-clock nanoseconds). Replicas whose clocks differ by up to `s` can together admit, over
//! any window `w`, up to `burst + rate × (w + s)`: a replica that runs ahead sees buckets refill
//! early. [`skew_slack`] gives that slack in requests for a policy. With clocks kept by NTP or
//! Amazon Time Sync (well under a millisecond apart), it is below one request for any policy slower
//! than a thousand a second. Replicas that share one clock, as in this crate's tests, have none.

mod error;
mod hint;
mod item;
mod store;

/// Item decoding, for fuzzing (feature `fuzzing`): not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::AttributeValue;
    use ratelimit_core::StoreError;

    /// The state an item read from the table holds (`None`: a full bucket).
    pub fn tat_of(item: &HashMap<String, AttributeValue>) -> Result<Option<u64>, StoreError> {
        crate::item::tat_of(Some(item), "fuzz")
    }
}
pub mod table;

pub use item::{KEY_ATTRIBUTE, OP_ATTRIBUTE, TAT_ATTRIBUTE, TTL_ATTRIBUTE};
pub use store::{DEFAULT_MAX_ATTEMPTS, DEFAULT_PREFIX, DynamoStore, skew_slack};
pub use table::{TableReport, TimeToLive, check_table, create_table};
