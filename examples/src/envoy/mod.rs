//! `ratelimit-service`, the drop-in replacement for envoyproxy/ratelimit: Envoy's rate limit
//! service on ratelimit's [`Limiter`](ratelimit_core::Limiter), one concept a module.
//!
//! - [`settings`]: envoyproxy/ratelimit's environment variables, and flags;
//! - [`backend`]: the store the settings name (memory, Redis, Cluster, Sentinel, DynamoDB);
//! - [`config`]: the descriptor YAML of envoyproxy/ratelimit, parsed and validated;
//! - [`http`]: `/healthcheck`, `/json`, the debug port's `/rlconfig` (`/status` is
//!   [`crate::status`]'s, shared with the gateway);
//! - [`json`]: the `/json` form of `ShouldRateLimit` on the HTTP port;
//! - [`matcher`]: wildcard values (`*` anywhere, any number of times);
//! - [`service`]: `ShouldRateLimit`, every descriptor of a request decided all-or-nothing;
//! - [`metrics`]: what the service answered;
//! - [`quota`]: the rate limit quota service (RLQS), token buckets handed to Envoy;
//! - [`reload`]: a changed configuration loaded while serving, a broken one refused;
//! - [`telemetry`]: logs, and OpenTelemetry traces where `TRACING_ENABLED` is set.

pub mod backend;
pub mod config;
pub mod http;
pub mod json;
pub mod matcher;
pub mod metrics;
pub mod quota;
pub mod reload;
pub mod service;
pub mod settings;
pub mod telemetry;
