//! A tower layer that rate-limits axum, hyper and tonic services, over any ratelimit `Store`.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//!
//! use axum::{Router, routing::get};
//! use http::HeaderName;
//! use ratelimit_core::{Limiter, MemoryStore, Policy};
//! use ratelimit_tower::{KeyExtractor, Matcher, RateLimitLayer, Rule, TrustedProxies};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Arc::new(Limiter::new(MemoryStore::new()));
//! let behind_our_proxies = TrustedProxies::parse(["10.0.0.0/8"])?;
//! let layer = RateLimitLayer::builder(limiter)
//!     // 100/s per client IP on /api, 10/s per API key on /login, 10,000/s for everyone.
//!     .rule(Rule::new("api", KeyExtractor::ClientIp(behind_our_proxies), Policy::per_second(100)?)
//!         .matching(Matcher::path("/api/*")))
//!     .rule(Rule::new("login", KeyExtractor::header(HeaderName::from_static("x-api-key")), Policy::per_second(10)?)
//!         .matching(Matcher::path("/login")))
//!     .rule(Rule::new("global", KeyExtractor::Global, Policy::per_second(10_000)?))
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/api/hello", get(|| async { "hello" }))
//!     .layer(layer);
//! // Serve with the peer address, which the IP key extractors read:
//! let _service = app.into_make_service_with_connect_info::<SocketAddr>();
//! # Ok(())
//! # }
//! ```
//!
//! A tonic server takes the same layer; a denied call gets `RESOURCE_EXHAUSTED` with a
//! `google.rpc.RetryInfo` detail:
//!
//! ```
//! use std::sync::Arc;
//!
//! use ratelimit_core::{Limiter, MemoryStore, Policy};
//! use ratelimit_tower::{KeyExtractor, Matcher, RateLimitLayer, Rule};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = RateLimitLayer::builder(Arc::new(Limiter::new(MemoryStore::new())))
//!     .rule(Rule::new("health", KeyExtractor::PeerIp, Policy::per_second(5)?)
//!         .matching(Matcher::grpc_method("grpc.health.v1.Health/*")))
//!     .build()?;
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let _router = tonic::transport::Server::builder().layer(layer).add_service(health);
//! // _router.serve(address).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # How a request is decided
//! Every [`Rule`] whose [`Matcher`] matches the request contributes one limit, keyed by its
//! [`KeyExtractor`]; the limits are decided in one all-or-nothing call to the
//! [`Limiter`](ratelimit_core::Limiter), so a request denied by one rule is debited by none.
//! Rules in shadow mode are decided in a second call and only counted and logged. A denied request
//! gets a 429 with `Retry-After` (whole seconds, rounded up) and the `RateLimit-Policy` and
//! `RateLimit` fields, or for gRPC `RESOURCE_EXHAUSTED`; store trouble follows the limiter's failure
//! policy. Every decision goes to the [`DecisionObserver`]s, and a [`RateLimitHandle`] changes
//! policies and blocks keys while the layer runs.

mod body;
mod handle;
mod key;
mod layer;
mod metrics;
mod observer;
mod response;
mod rule;
mod service;
mod shared;

pub use body::RejectionBody;
pub use handle::{ControlError, RateLimitHandle};
pub use key::{
    CustomExtractor, ForwardedHeader, IpPrefixes, KeyError, KeyExtractor, PeerAddr, Principal,
    RequestView, TrustedProxies,
};
pub use layer::{ConfigError, RateLimitLayer, RateLimitLayerBuilder};
pub use metrics::{DECISIONS_METRIC, RuleCounters};
pub use observer::{DecisionEvent, DecisionObserver, Outcome, ResponseEvent};
pub use response::{HeaderOptions, Rejection, RejectionFn};
pub use rule::{Matcher, MissingKey, Rule};
pub use service::{RateLimit, ResponseFuture};
