//! The gateway system of the design, built on ratelimit's crates: the parts the example binaries
//! share.
//!
//! ```
//! use ratelimit_examples::envoy::config::{Config, Entry};
//!
//! let config = Config::parse("inline.yaml", r#"
//! domain: edge
//! descriptors:
//!   - key: remote_address
//!     rate_limit: { unit: second, requests_per_unit: 10 }
//! "#)?;
//! let limit = config.limit_for("edge", &[Entry::new("remote_address", "10.0.0.1")]).unwrap();
//! assert_eq!(limit.rate_limit.requests_per_unit, 10);
//! # Ok::<(), ratelimit_examples::envoy::config::ConfigError>(())
//! ```

pub mod egress;
pub mod envoy;
pub mod gateway;
pub mod loadgen;
pub mod logging;
pub mod mesh;
pub mod proxy;
pub mod rls_store;
pub mod status;
