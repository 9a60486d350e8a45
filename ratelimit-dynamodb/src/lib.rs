//! The [`Store`](ratelimit_core::Store) of ratelimit-core over DynamoDB conditional writes.
//!
//! ```
//! use ratelimit_core::{Limit, Limiter, Policy};
//! use ratelimit_dynamodb::{DynamoStore, create_table};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // The test services' dynalite (scripts/services.sh), with the HTTP client and the fixed
//! # // credentials an emulator takes; an application's come from its environment.
//! # let endpoint = std::env::var("DYNALITE_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8005".into());
//! # let http = aws_smithy_http_client::Builder::new()
//! #     .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
//! #         aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
//! #     ))
//! #     .build_https();
//! // Region, credentials and endpoint from where AWS tools look for them: AWS_REGION, profiles,
//! // instance roles, and AWS_ENDPOINT_URL_DYNAMODB for a local emulator.
//! let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
//! #   .region("us-east-1")
//! #   .endpoint_url(&endpoint)
//! #   .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("doc", "doc", None, None, "doc"))
//! #   .http_client(http)
//!     .load()
//!     .await;
//! let client = aws_sdk_dynamodb::Client::new(&config);
//! create_table(&client, "ratelimit-doc").await?; // once; or make it in your infrastructure code
//! let store = DynamoStore::connect(client, "ratelimit-doc").await?;
//! let limiter = Limiter::new(store); // a deadline, and local buckets while DynamoDB is away
//! # let client = format!("client:doc-{}", std::process::id());
//! let verdict = limiter
//!     .acquire(&[Limit::new(&client, Policy::per_second(10)?)])
//!     .await?;
//! assert!(verdict.is_allowed());
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
